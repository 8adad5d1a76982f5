// Tokenizers as GGUF describes them (tokenizer.ggml.*), behind one
// interface: SentencePiece-style ("llama", "gemma": score-driven merges with
// byte fallback) and byte-level BPE ("gpt2": ranked merges over bytes mapped
// to printable characters, after a Unicode pre-tokenizer regex chosen by
// tokenizer.ggml.pre). Special tokens in the text are kept whole. Every
// step costs about linearly in the text (merges through a priority queue),
// so a long or hostile prompt cannot hold a thread for its length squared.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/gguf/gguf.h"
#include "engine/text/pretokenize.h"

namespace ferry::text {

enum class TokenKind : int32_t {  // tokenizer.ggml.token_type values
  kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6,
};

class Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const gguf::File& file);

  // Token ids for `text`, with BOS in front when add_bos.
  std::vector<int32_t> Encode(absl::string_view text, bool add_bos) const;
  // The bytes a token stands for: "▁" becomes a space, <0xNN> the byte,
  // control tokens nothing.
  std::string TokenBytes(int32_t id) const;
  // Whole-sequence decoding (the leading space the encoder added is removed).
  std::string Decode(const std::vector<int32_t>& ids) const;

  int32_t bos() const { return bos_; }
  int32_t eos() const { return eos_; }
  bool add_bos() const { return add_bos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  int n_vocab() const { return static_cast<int>(pieces_.size()); }
  const std::string& piece(int32_t id) const { return pieces_[id]; }
  TokenKind kind(int32_t id) const { return kinds_[id]; }
  absl::string_view model() const { return model_; }
  bool IsEndOfGeneration(int32_t id) const { return id == eos_ || id == eot_; }
  bool is_bpe() const { return bpe_; }

 private:
  Tokenizer() = default;
  absl::Status InitBpe(const gguf::File& file);
  void EncodeSpm(absl::string_view text, std::vector<int32_t>* out) const;
  void EncodeBpe(absl::string_view text, std::vector<int32_t>* out) const;
  void EncodeBpeChunk(absl::string_view chunk, std::vector<int32_t>* out) const;

  // Special tokens (control, user-defined, unknown) are matched verbatim in
  // the text before anything else, leftmost first, then longest, as Hugging
  // Face's added-token matcher does: a byte trie walked from each position.
  struct SpecialTrie {
    absl::flat_hash_map<uint64_t, int32_t> child;  // (node << 8 | byte) -> node; node 0 is the root
    std::vector<int32_t> token = {-1};             // node -> the special that ends there, or -1
    bool starts[256] = {};                         // the first bytes of specials
    void Add(absl::string_view text, int32_t id);
    // The longest special that starts at text[at]: its length (0 if none) and id.
    std::pair<size_t, int32_t> LongestAt(absl::string_view text, size_t at) const;
  };

  bool bpe_ = false;
  // BPE: merge rank and result of each mergeable pair of ids.
  absl::flat_hash_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  std::string byte_chars_[256];              // byte -> its printable stand-in (UTF-8)
  int32_t byte_char_ids_[256];               // byte -> the token of its stand-in, or -1
  absl::flat_hash_map<uint32_t, uint8_t> char_bytes_;  // stand-in code point -> byte
  std::unique_ptr<PreTokenizer> pre_;
  bool ignore_merges_ = false;               // a chunk that is a whole token stays whole (Llama 3, Tekken)
  SpecialTrie specials_;

  std::string model_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<TokenKind> kinds_;
  absl::flat_hash_map<std::string, int32_t> ids_;
  int32_t byte_ids_[256];
  int32_t bos_ = -1, eos_ = -1, eot_ = -1, unk_ = -1;
  bool add_bos_ = true;
  bool add_space_prefix_ = true;
};

// Turns a stream of token ids into text that is always valid UTF-8: bytes of
// a character split across tokens are held back until it is complete.
class Detokenizer {
 public:
  explicit Detokenizer(const Tokenizer& tokenizer, bool at_start = true)
      : tokenizer_(tokenizer), strip_space_(at_start && tokenizer.add_space_prefix()) {}
  // The text that became complete with this token.
  std::string Push(int32_t id);
  // What is left at the end (incomplete bytes as U+FFFD).
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  bool strip_space_;
  std::string pending_;
};

// Length of the longest prefix of `s` made of complete UTF-8 sequences,
// treating invalid bytes as complete (they are replaced by U+FFFD).
size_t CompleteUtf8Prefix(absl::string_view s);
// `s` with every invalid byte sequence replaced by U+FFFD.
std::string SanitizeUtf8(absl::string_view s);

}  // namespace ferry::text
