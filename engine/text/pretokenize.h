// Unicode pre-tokenization for byte-level BPE: regular expressions (PCRE2,
// UTF + Unicode properties) split text into the chunks that BPE merges never
// cross. Each model family names its split in `tokenizer.ggml.pre`; the
// names, and the splits they stand for, are the ones llama.cpp recognises.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::text {

// How one `tokenizer.ggml.pre` value splits text.
struct PreTokenizerSpec {
  // Applied in order: each pattern splits every chunk the previous produced
  // (matches and the text between them both become chunks), so a pattern
  // sees one chunk at a time and its look-arounds stop at the chunk's ends.
  std::vector<std::string> patterns;
  // A chunk that is itself a vocabulary token becomes that token without
  // merging (Hugging Face's `ignore_merges`, set by Llama 3 and Tekken).
  bool ignore_merges = false;
};

// The split for a `tokenizer.ggml.pre` value ("" is llama.cpp's default, as
// for a file without the key); NotFound, listing the known names, otherwise.
absl::StatusOr<PreTokenizerSpec> FindPreTokenizer(absl::string_view pre);
// Every name FindPreTokenizer knows, in table order.
std::vector<std::string> KnownPreTokenizers();

class PreTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Create(const std::vector<std::string>& patterns);
  ~PreTokenizer();
  // Appends the chunks of `text` to `out`; every byte lands in exactly one
  // chunk. Text that is not valid UTF-8 is one chunk (callers sanitize first).
  void Split(absl::string_view text, std::vector<absl::string_view>* out) const;

 private:
  PreTokenizer() = default;
  std::vector<void*> codes_;  // pcre2_code_8, one per pattern
};

}  // namespace ferry::text
