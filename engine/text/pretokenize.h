// Unicode pre-tokenization for byte-level BPE: a regular expression (PCRE2,
// UTF + Unicode properties) splits text into the chunks that BPE merges
// never cross. The patterns are the ones each model family was trained with.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::text {

// The pattern for a `tokenizer.ggml.pre` name ("llama-bpe", "qwen2", "gpt-2",
// ...); NotFound for names ferry does not know.
absl::StatusOr<std::string> PreTokenizerPattern(absl::string_view pre);

class PreTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(const std::string& pattern);
  ~PreTokenizer();
  // Appends the chunks of `text` to `out` (every byte lands in one chunk:
  // text between matches becomes its own chunk).
  void Split(absl::string_view text, std::vector<absl::string_view>* out) const;

 private:
  PreTokenizer() = default;
  void* code_ = nullptr;  // pcre2_code_8
};

}  // namespace ferry::text
