#include "engine/text/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ferry::text {
namespace {

// The splits, in PCRE2 syntax. Where llama.cpp rewrote a tokenizer.json
// pattern for std::regex (case-insensitive groups spelled out, \p{Lu} and
// friends emulated with look-aheads over ASCII), the tokenizer.json original
// is used: PCRE2 has both features, and the original is what the vocabulary
// was trained with. Non-ASCII characters are written as \x{...} so that no
// editor's normalization can change a range.

// GPT-2: contractions, letters, numbers, other symbols, whitespace (a run
// before a word leaves its last space to the word).
constexpr char kGpt2[] = R"re('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)re";
// Llama 3: case-insensitive contractions, numbers in runs of up to 3
// digits, newlines kept with the symbols before them.
constexpr char kLlama3[] =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)re"
    R"re( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
// Qwen2: as Llama 3 but every digit on its own.
constexpr char kQwen2[] =
    R"re((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|)re"
    R"re( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
// Tekken (Mistral Nemo): words split at lower-to-upper case changes,
// single digits, symbols keep a trailing slash or newlines.
constexpr char kTekken[] =
    R"re([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|)re"
    R"re([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|)re"
    R"re(\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
// GPT-4o (o200k): as Tekken with contractions after words and numbers in
// runs of up to 3.
constexpr char kGpt4o[] =
    R"re([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)re"
    R"re([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|)re"
    R"re(\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
// DeepSeek V3: digit triples, then runs of CJK ideographs and kana, then
// words (an ASCII punctuation mark may lead an ASCII word).
constexpr char kDeepseek3Cjk[] = R"re([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)re";
constexpr char kDeepseek3Words[] =
    R"re([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|)re"
    R"re( ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";
// DeepSeek LLM and Coder: newlines alone, then (LLM) cased letters of the
// Latin, Greek, Cyrillic, Armenian, Georgian... scripts, ASCII and
// full-width punctuation, trailing whitespace, CJK and Hangul, numbers.
constexpr char kDeepseekLetters[] =
    R"re(\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293})re"
    R"re(\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C})re"
    R"re(\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5})re"
    R"re(\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B})re"
    R"re(\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45})re"
    R"re(\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4})re"
    R"re(\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB})re"
    R"re(\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115})re"
    R"re(\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139})re"
    R"re(\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4})re"
    R"re(\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F})re"
    R"re(\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17})re"
    R"re(\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB})re"
    R"re(\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)re";
constexpr char kDeepseekPunct[] =
    R"re(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)re";
constexpr char kDeepseekCjk[] = R"re([\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+)re";

struct Family {
  // The tokenizer.ggml.pre values llama.cpp maps to this split.
  std::vector<const char*> names;
  std::vector<const char*> patterns;
  bool ignore_merges;
};

const std::vector<Family>& Families() {
  static const std::vector<Family>* families = new std::vector<Family>{
      // llama.cpp's split for "default" and for files without the key:
      // punctuation runs first, then GPT-2's, then numbers and digit triples.
      {{"default", ""}, {R"re([\p{P}\$\+<=>\^~\|]+)re", kGpt2, R"re(\p{N}+)re", "[0-9][0-9][0-9]"}, false},
      {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano",
        "glm4", "glm5"},
       {kLlama3},
       true},
      {{"dbrx", "smaug-bpe", "chatglm-bpe"}, {kLlama3}, false},
      {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open", "grok-2"},
       {kQwen2},
       false},
      {{"gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum",
        "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "exaone4", "mpt", "olmo", "jais", "trillion",
        "granite-docling"},
       {kGpt2},
       false},
      // StarCoder's split: every digit alone, then GPT-2's.
      {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"},
       {R"re(\p{N})re", kGpt2},
       false},
      // Falcon: as the default without the numbers step. Its tokenizer.json
      // splits numbers after the byte mapping; a vocabulary trained so has
      // no merge across those boundaries, so leaving the step out (as
      // llama.cpp does) gives the same tokens.
      {{"falcon"}, {R"re([\p{P}\$\+<=>\^~\|`]+)re", kGpt2, "[0-9][0-9][0-9]"}, false},
      {{"deepseek-llm"},
       {R"re([\r\n])re", kDeepseekLetters, kDeepseekPunct, R"re(\s+$)re", kDeepseekCjk, R"re(\p{N}+)re"},
       false},
      {{"deepseek-coder"},
       {R"re([\r\n])re", R"re(\s?\p{L}+)re", R"re(\s?\p{P}+)re", kDeepseekCjk, R"re(\p{N})re"},
       false},
      // DeepSeek V3: digit triples, then CJK and kana runs, then words.
      {{"deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"},
       {R"re(\p{N}{1,3})re", kDeepseek3Cjk, kDeepseek3Words},
       false},
      {{"tekken"}, {kTekken}, true},
      {{"gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"}, {kGpt4o}, false},
  };
  return *families;
}

}  // namespace

std::vector<std::string> KnownPreTokenizers() {
  std::vector<std::string> names;
  for (const Family& f : Families()) {
    for (const char* name : f.names) {
      if (*name != '\0') names.emplace_back(name);
    }
  }
  return names;
}

absl::StatusOr<PreTokenizerSpec> FindPreTokenizer(absl::string_view pre) {
  for (const Family& f : Families()) {
    for (const char* name : f.names) {
      if (pre != name) continue;
      PreTokenizerSpec spec;
      spec.patterns.assign(f.patterns.begin(), f.patterns.end());
      spec.ignore_merges = f.ignore_merges;
      return spec;
    }
  }
  return absl::NotFoundError(absl::StrCat("pre-tokenizer '", pre, "' is not supported (supported: ",
                                          absl::StrJoin(KnownPreTokenizers(), ", "), ")"));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(const std::vector<std::string>& patterns) {
  std::unique_ptr<PreTokenizer> p(new PreTokenizer());
  for (const std::string& pattern : patterns) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof(msg));
      return absl::InvalidArgumentError(absl::StrCat("pre-tokenizer pattern '", pattern, "' does not compile at ",
                                                     "offset ", offset, ": ", reinterpret_cast<const char*>(msg)));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort: the interpreter is used if JIT is unavailable
    p->codes_.push_back(code);
  }
  return p;
}

PreTokenizer::~PreTokenizer() {
  for (void* code : codes_) pcre2_code_free(static_cast<pcre2_code*>(code));
}

namespace {

// One pattern over one chunk: matches and the stretches between them.
// `options` carries PCRE2_NO_UTF_CHECK once the text is known to be valid:
// without it PCRE2 re-validates the subject from the start offset on every
// call, which made a chunk with many matches cost its length squared.
// Returns false when the subject is not valid UTF-8 (nothing appended).
bool SplitOne(pcre2_code* code, pcre2_match_data* md, absl::string_view text, uint32_t options,
              std::vector<absl::string_view>* out) {
  size_t pos = 0, emitted = 0;
  while (pos < text.size()) {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    int rc = pcre2_match(code, subject, text.size(), pos, options, md, nullptr);
    if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21) return false;
    // The JIT's stack can run out on a very long match: the interpreter,
    // which keeps its backtracking state on the heap, then does that one.
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      rc = pcre2_match(code, subject, text.size(), pos, options | PCRE2_NO_JIT, md, nullptr);
    }
    options |= PCRE2_NO_UTF_CHECK;
    if (rc < 0) break;  // no further match (or a resource limit): the rest is one chunk
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
  return true;
}

}  // namespace

void PreTokenizer::Split(absl::string_view text, std::vector<absl::string_view>* out) const {
  if (text.empty()) return;
  if (codes_.empty()) {
    out->push_back(text);
    return;
  }
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(static_cast<pcre2_code*>(codes_[0]), nullptr);
  std::vector<absl::string_view> current, next;
  for (size_t k = 0; k < codes_.size(); ++k) {
    pcre2_code* code = static_cast<pcre2_code*>(codes_[k]);
    if (k > 0) {  // a later pattern may have more capture groups than the first
      pcre2_match_data_free(md);
      md = pcre2_match_data_create_from_pattern(code, nullptr);
    }
    std::vector<absl::string_view>& dst = k + 1 == codes_.size() ? *out : next;
    if (k == 0) {
      // The first call validates the whole text once; every chunk after it
      // is a slice of that text on character boundaries.
      if (!SplitOne(code, md, text, 0, &dst)) {
        out->push_back(text);
        break;
      }
    } else {
      for (absl::string_view chunk : current) SplitOne(code, md, chunk, PCRE2_NO_UTF_CHECK, &dst);
    }
    current.swap(next);
    next.clear();
  }
  pcre2_match_data_free(md);
}

}  // namespace ferry::text
