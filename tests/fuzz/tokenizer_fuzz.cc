// libFuzzer target: the input describes a vocabulary (byte-level BPE with a
// pre-tokenizer picked from the known names, or SentencePiece; normal,
// control, user-defined, unknown and unused tokens, merges, scores, byte
// tokens, some of them missing) and a text. The vocabulary goes through a
// GGUF file to Tokenizer::FromGguf, which must load it or refuse it; a
// loaded tokenizer encodes the text and decodes the ids.
// Checked: every id is inside the vocabulary, and where the vocabulary makes
// it exact (byte-level BPE with every byte, user-defined specials only),
// decoding gives back the text and the ids equal those of a slow reference
// (specials by trying every one at every position, merges by rescanning
// every pair after each merge). Any input also runs under libFuzzer's
// timeout, which catches costs that grow with the square of the text.
#include <fuzzer/FuzzedDataProvider.h>

#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "engine/gguf/gguf.h"
#include "engine/gguf/writer.h"
#include "engine/text/pretokenize.h"
#include "engine/text/tokenizer.h"

namespace {

using ferry::gguf::MetaValue;

std::string ByteChar(int b) {  // GPT-2's printable stand-in for a byte
  int next = 256;
  for (int x = 0; x < 256; ++x) {
    const bool printable = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
    const int cp = printable ? x : next++;
    if (x != b) continue;
    if (cp < 0x80) return std::string(1, static_cast<char>(cp));
    return {static_cast<char>(0xc0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3f))};
  }
  return "";
}

[[noreturn]] void Fail(const char* what) {
  std::fprintf(stderr, "tokenizer_fuzz: %s\n", what);
  std::abort();
}

// The slow reference for byte-level BPE: the first id of each text, merges
// that apply (both sides and the result in the vocabulary, lowest rank of a
// repeated pair), the lowest-ranked leftmost pair merged until none is left.
struct SlowBpe {
  std::map<std::string, int32_t> ids;
  std::map<std::pair<std::string, std::string>, int32_t> ranks;
  std::vector<std::pair<std::string, int32_t>> specials;
  std::unique_ptr<ferry::text::PreTokenizer> pre;
  bool ignore_merges = false;

  void Chunk(absl::string_view chunk, std::vector<int32_t>* out) const {
    std::vector<std::string> syms;
    std::string whole;
    for (unsigned char c : chunk) syms.push_back(ByteChar(c)), whole += syms.back();
    if (ignore_merges && ids.count(whole)) {
      out->push_back(ids.at(whole));
      return;
    }
    for (;;) {
      int32_t best = INT32_MAX;
      size_t at = 0;
      for (size_t i = 0; i + 1 < syms.size(); ++i) {
        auto it = ranks.find({syms[i], syms[i + 1]});
        if (it != ranks.end() && it->second < best) best = it->second, at = i;
      }
      if (best == INT32_MAX) break;
      syms[at] += syms[at + 1];
      syms.erase(syms.begin() + at + 1);
    }
    for (const std::string& s : syms) out->push_back(ids.at(s));
  }

  std::vector<int32_t> Encode(absl::string_view text) const {
    std::vector<int32_t> out;
    auto plain = [&](absl::string_view part) {
      const std::string clean = ferry::text::SanitizeUtf8(part);
      std::vector<absl::string_view> chunks;
      pre->Split(clean, &chunks);
      for (absl::string_view c : chunks) Chunk(c, &out);
    };
    size_t done = 0, i = 0;
    while (i < text.size()) {
      const std::pair<std::string, int32_t>* hit = nullptr;
      for (const auto& s : specials) {
        if (text.substr(i, s.first.size()) == s.first && (hit == nullptr || s.first.size() > hit->first.size())) {
          hit = &s;
        }
      }
      if (hit == nullptr) {
        ++i;
        continue;
      }
      if (i > done) plain(text.substr(done, i - done));
      out.push_back(hit->second);
      i += hit->first.size();
      done = i;
    }
    if (done < text.size()) plain(text.substr(done));
    return out;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider fdp(data, size);
  const bool bpe = fdp.ConsumeBool();
  const bool all_bytes = fdp.ConsumeBool();
  // Exact mode: every byte, specials user-defined and valid UTF-8, no
  // unknown or unused tokens: the properties above must then hold.
  const bool exact = bpe && all_bytes && fdp.ConsumeBool();
  const std::vector<std::string> names = ferry::text::KnownPreTokenizers();
  const size_t pick = fdp.ConsumeIntegralInRange<size_t>(0, names.size() + 1);
  const std::string pre = pick < names.size() ? names[pick] : pick == names.size() ? "" : "no-such-split";

  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::vector<float> scores;
  auto add = [&](std::string piece, int32_t type, float score) {
    tokens.push_back(std::move(piece));
    types.push_back(type);
    scores.push_back(score);
  };
  if (bpe) {
    for (int b = 0; b < 256; ++b) {
      if (all_bytes || fdp.ConsumeBool()) add(ByteChar(b), 1, 0);
    }
  } else {
    add("<unk>", 2, 0), add("<s>", 3, 0), add("</s>", 3, 0);
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
      if (all_bytes || fdp.ConsumeBool()) add(buf, 6, 0);
    }
  }
  const int n_pieces = fdp.ConsumeIntegralInRange(0, 48);
  for (int i = 0; i < n_pieces; ++i) {
    std::string piece = fdp.ConsumeRandomLengthString(24);
    int32_t type = fdp.PickValueInArray({1, 1, 1, 2, 3, 4, 5, 6, 99});
    if (exact && type != 1) {
      type = 4;
      piece = ferry::text::SanitizeUtf8(piece);
    }
    add(piece, type, static_cast<float>(fdp.ConsumeIntegralInRange(-64, 0)));
  }
  std::vector<std::string> merges;
  if (bpe) {
    const int n_merges = fdp.ConsumeIntegralInRange(0, 96);
    for (int i = 0; i < n_merges && !tokens.empty(); ++i) {
      const std::string& l = tokens[fdp.ConsumeIntegralInRange<size_t>(0, tokens.size() - 1)];
      const std::string& r = tokens[fdp.ConsumeIntegralInRange<size_t>(0, tokens.size() - 1)];
      if (l.empty() || r.empty() || l.find(' ') != std::string::npos) continue;
      merges.push_back(l + " " + r);
      if (fdp.ConsumeIntegralInRange(0, 7) != 0) add(l + r, 1, 0);  // mostly with its result in the vocabulary
    }
  }
  const std::string text = fdp.ConsumeRemainingBytesAsString();

  ferry::gguf::Writer w;
  if (!w.Set("tokenizer.ggml.model", MetaValue::Str(bpe ? "gpt2" : "llama")).ok()) return 0;
  if (!w.Set("tokenizer.ggml.tokens", MetaValue::StringArray(tokens)).ok()) return 0;
  if (!w.Set("tokenizer.ggml.token_type", MetaValue::Array(types)).ok()) return 0;
  if (!bpe && !w.Set("tokenizer.ggml.scores", MetaValue::Array(scores)).ok()) return 0;
  if (bpe && !w.Set("tokenizer.ggml.merges", MetaValue::StringArray(merges)).ok()) return 0;
  if (bpe && !pre.empty() && !w.Set("tokenizer.ggml.pre", MetaValue::Str(pre)).ok()) return 0;
  absl::StatusOr<std::string> bytes = w.WriteToString();
  if (!bytes.ok()) return 0;
  auto file = ferry::gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(bytes->data()), bytes->size()));
  if (!file.ok()) return 0;
  auto tok = ferry::text::Tokenizer::FromGguf(**file);
  if (!tok.ok()) {
    if (pre != "no-such-split" && !tokens.empty()) Fail("a well-formed vocabulary was refused");
    return 0;
  }
  if (pre == "no-such-split" && bpe) Fail("an unknown pre-tokenizer was accepted");
  const ferry::text::Tokenizer& t = **tok;

  for (bool add_bos : {false, true}) {
    for (int32_t id : t.Encode(text, add_bos)) {
      if (id < 0 || id >= t.n_vocab()) Fail("an id outside the vocabulary");
    }
  }
  const std::vector<int32_t> ids = t.Encode(text, false);
  const std::string decoded = t.Decode(ids);

  if (exact) {
    if (decoded != ferry::text::SanitizeUtf8(text)) Fail("decoding did not give back the text");
    if (text.size() <= 2048) {  // the reference is slow by design
      SlowBpe ref;
      for (size_t i = 0; i < tokens.size(); ++i) {
        ref.ids.emplace(tokens[i], static_cast<int32_t>(i));
        if (types[i] == 4 && !tokens[i].empty()) {
          bool seen = false;
          for (const auto& s : ref.specials) seen |= s.first == tokens[i];
          if (!seen) ref.specials.emplace_back(tokens[i], static_cast<int32_t>(i));
        }
      }
      for (size_t rank = 0; rank < merges.size(); ++rank) {
        const size_t sp = merges[rank].find(' ', 1);
        const std::string l = merges[rank].substr(0, sp), r = merges[rank].substr(sp + 1);
        if (ref.ids.count(l) && ref.ids.count(r) && ref.ids.count(l + r)) {
          ref.ranks.emplace(std::make_pair(l, r), static_cast<int32_t>(rank));
        }
      }
      auto spec = ferry::text::FindPreTokenizer(pre);
      if (!spec.ok()) Fail("a known pre-tokenizer was not found");
      auto split = ferry::text::PreTokenizer::Create(spec->patterns);
      if (!split.ok()) Fail("a known pre-tokenizer does not compile");
      ref.pre = std::move(*split);
      ref.ignore_merges = spec->ignore_merges;
      if (ref.Encode(text) != ids) Fail("ids differ from the slow reference");
    }
  }
  return 0;
}
