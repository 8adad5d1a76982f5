// Small tokenizers of both kinds as GGUF metadata, for tests and fuzz
// targets that need a real text::Tokenizer without a model file: a
// SentencePiece-style vocabulary (byte fallback, a user-defined special, a
// 43-byte piece) and a byte-level BPE one (GPT-2's byte stand-ins, a few
// ranked merges, two control specials).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "engine/gguf/gguf.h"
#include "engine/gguf/writer.h"
#include "engine/text/tokenizer.h"

namespace ferry::testing {

// The GGUF bytes (kept alive here: the file and the tokenizer view them).
struct TinyTokenizer {
  std::string bytes;
  std::unique_ptr<gguf::File> file;
  std::unique_ptr<text::Tokenizer> tokenizer;
};

inline absl::StatusOr<TinyTokenizer> LoadTiny(gguf::Writer& w) {
  TinyTokenizer t;
  absl::StatusOr<std::string> bytes = w.WriteToString();
  if (!bytes.ok()) return bytes.status();
  t.bytes = std::move(*bytes);
  auto file = gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(t.bytes.data()), t.bytes.size()));
  if (!file.ok()) return file.status();
  t.file = std::move(*file);
  auto tok = text::Tokenizer::FromGguf(*t.file);
  if (!tok.ok()) return tok.status();
  t.tokenizer = std::move(*tok);
  return t;
}

inline absl::StatusOr<TinyTokenizer> TinySpm() {
  const std::string sp = "\xe2\x96\x81";  // U+2581
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0, 0, 0};
  std::vector<int32_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(absl::StrFormat("<0x%02X>", b));
    scores.push_back(0);
    types.push_back(6);
  }
  const std::vector<std::string> pieces = {sp,        "a",     "b",         "e",          "h",      "l",  "o",
                                           "t",       "he",    "ll",        "hell",       "hello",  sp + "h",
                                           sp + "he", sp + "hello", sp + "the", sp + std::string(40, 'x'), "x",
                                           "xx",      "xxxx"};
  for (size_t i = 0; i < pieces.size(); ++i) {
    tokens.push_back(pieces[i]);
    scores.push_back(-static_cast<float>(i));
    types.push_back(1);
  }
  tokens.push_back("<|user|>");
  scores.push_back(0);
  types.push_back(4);
  gguf::Writer w;
  (void)w.Set("tokenizer.ggml.model", gguf::MetaValue::Str("llama"));
  (void)w.Set("tokenizer.ggml.tokens", gguf::MetaValue::StringArray(tokens));
  (void)w.Set("tokenizer.ggml.scores", gguf::MetaValue::Array(scores));
  (void)w.Set("tokenizer.ggml.token_type", gguf::MetaValue::Array(types));
  return LoadTiny(w);
}

inline absl::StatusOr<TinyTokenizer> TinyBpe() {
  // GPT-2's byte -> stand-in character map.
  std::vector<std::string> chars(256);
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const uint32_t cp = printable ? b : next++;
    chars[b] = cp < 0x80 ? std::string(1, static_cast<char>(cp))
                         : std::string{static_cast<char>(0xc0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3f))};
  }
  std::vector<std::string> tokens(chars);
  std::vector<int32_t> types(256, 1);
  const std::string G = chars[' '];
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"a", "a"}, {"aa", "aa"}, {"aaaa", "aaaa"}, {"h", "e"}, {G, "t"}, {G + "t", "he"}, {"l", "l"}, {"he", "ll"},
      {"hell", "o"}, {G, "hello"}};
  std::vector<std::string> merge_text;
  for (const auto& [l, r] : merges) {
    tokens.push_back(l + r);
    types.push_back(1);
    merge_text.push_back(l + " " + r);
  }
  for (const char* special : {"<|im_start|>", "<|im_end|>"}) {
    tokens.push_back(special);
    types.push_back(3);
  }
  gguf::Writer w;
  (void)w.Set("tokenizer.ggml.model", gguf::MetaValue::Str("gpt2"));
  (void)w.Set("tokenizer.ggml.pre", gguf::MetaValue::Str("gpt-2"));
  (void)w.Set("tokenizer.ggml.tokens", gguf::MetaValue::StringArray(tokens));
  (void)w.Set("tokenizer.ggml.token_type", gguf::MetaValue::Array(types));
  (void)w.Set("tokenizer.ggml.merges", gguf::MetaValue::StringArray(merge_text));
  (void)w.Set("tokenizer.ggml.bos_token_id", gguf::MetaValue::U32(static_cast<uint32_t>(tokens.size() - 2)));
  (void)w.Set("tokenizer.ggml.eos_token_id", gguf::MetaValue::U32(static_cast<uint32_t>(tokens.size() - 1)));
  (void)w.Set("tokenizer.ggml.unknown_token_id", gguf::MetaValue::U32(0));
  return LoadTiny(w);
}

}  // namespace ferry::testing
