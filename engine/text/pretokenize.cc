#include "engine/text/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"

namespace ferry::text {
namespace {

// GPT-2's split: contractions, letters, numbers, other symbols, spaces.
constexpr char kGpt2[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3: case-insensitive contractions, numbers in runs of up to 3 digits,
// newlines kept with the symbols before them.
constexpr char kLlama3[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2: as Llama 3 but every digit on its own.
constexpr char kQwen2[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace

absl::StatusOr<std::string> PreTokenizerPattern(absl::string_view pre) {
  if (pre == "llama-bpe" || pre == "llama3" || pre == "smaug-bpe") return std::string(kLlama3);
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") return std::string(kQwen2);
  if (pre == "gpt-2" || pre == "gpt2" || pre == "default" || pre.empty()) return std::string(kGpt2);
  return absl::NotFoundError(absl::StrCat("pre-tokenizer '", pre,
                                          "' is not supported (supported: llama-bpe, qwen2, gpt-2, default)"));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(const std::string& pattern) {
  int err = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    return absl::InvalidArgumentError(absl::StrCat("pre-tokenizer pattern does not compile at offset ", offset, ": ",
                                                   reinterpret_cast<const char*>(msg)));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: the interpreter is used if JIT is unavailable
  std::unique_ptr<PreTokenizer> p(new PreTokenizer());
  p->code_ = code;
  return p;
}

PreTokenizer::~PreTokenizer() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void PreTokenizer::Split(absl::string_view text, std::vector<absl::string_view>* out) const {
  pcre2_code* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  size_t pos = 0, emitted = 0;
  // Invalid UTF-8 is matched as-is (NO_UTF_CHECK would be unsafe): callers
  // pass text they validated; on a match error the rest becomes one chunk.
  while (pos < text.size()) {
    const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos, 0, md, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t begin = ov[0], end = ov[1];
    if (begin > emitted) out->push_back(text.substr(emitted, begin - emitted));
    if (end == begin) {  // empty match: step one character to make progress
      pos = end + 1;
      while (pos < text.size() && (static_cast<unsigned char>(text[pos]) & 0xc0) == 0x80) ++pos;
      continue;
    }
    out->push_back(text.substr(begin, end - begin));
    emitted = pos = end;
  }
  if (emitted < text.size()) out->push_back(text.substr(emitted));
  pcre2_match_data_free(md);
}

}  // namespace ferry::text
