#include "engine/text/tokenizer.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <functional>
#include <limits>
#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/status.h"

namespace ferry::text {
namespace {

constexpr absl::string_view kSpaceMarker = "\xe2\x96\x81";  // U+2581, SentencePiece's word boundary
constexpr absl::string_view kReplacement = "\xef\xbf\xbd";  // U+FFFD

// Bytes in the UTF-8 sequence that starts with `c` (1 for invalid lead bytes).
size_t Utf8Len(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c & 0xe0) == 0xc0) return 2;
  if ((c & 0xf0) == 0xe0) return 3;
  if ((c & 0xf8) == 0xf0) return 4;
  return 1;
}

// Length of a valid sequence at s[i], 0 if invalid, -1 if valid so far but cut short.
int ValidSequence(absl::string_view s, size_t i) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  const size_t n = Utf8Len(c);
  if (n == 1) return c < 0x80 ? 1 : 0;
  uint32_t cp = c & (0xff >> (n + 1));
  for (size_t k = 1; k < n; ++k) {
    if (i + k >= s.size()) return -1;
    const unsigned char cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3f);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return static_cast<int>(n);
}

std::string Replace(absl::string_view s, absl::string_view from, absl::string_view to) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s.substr(i, from.size()) == from) {
      out.append(to.data(), to.size());
      i += from.size();
    } else {
      out += s[i++];
    }
  }
  return out;
}

}  // namespace

size_t CompleteUtf8Prefix(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const int n = ValidSequence(s, i);
    if (n < 0) break;  // an incomplete character at the end
    i += n == 0 ? 1 : n;
  }
  return i;
}

std::string SanitizeUtf8(absl::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    const int n = ValidSequence(s, i);
    if (n > 0) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      out.append(kReplacement.data(), kReplacement.size());
      ++i;
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const gguf::File& f) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  absl::StatusOr<absl::string_view> model = f.GetString("tokenizer.ggml.model");
  if (!model.ok()) return model.status();
  t->model_ = std::string(*model);
  if (t->model_ != "llama" && t->model_ != "gemma" && t->model_ != "gpt2") {
    return absl::UnimplementedError(absl::StrCat("tokenizer model '", t->model_,
                                                 "' is not supported (supported: llama, gemma, gpt2)"));
  }
  t->bpe_ = t->model_ == "gpt2";
  absl::StatusOr<std::vector<absl::string_view>> tokens = f.GetStringArray("tokenizer.ggml.tokens");
  if (!tokens.ok()) return tokens.status();
  const size_t n = tokens->size();
  if (n == 0 || n > (1u << 30)) return absl::InvalidArgumentError("tokenizer.ggml.tokens is empty or too large");
  if (f.Has("tokenizer.ggml.scores")) {
    FERRY_ASSIGN_OR_RETURN(t->scores_, f.GetFloatArray("tokenizer.ggml.scores"));
  } else {
    t->scores_.assign(n, 0.0f);  // BPE vocabularies have none
  }
  // A NaN score would break the merge queue's ordering: treat it as the lowest.
  for (float& score : t->scores_) {
    if (std::isnan(score)) score = -std::numeric_limits<float>::infinity();
  }
  std::vector<int64_t> kinds;
  if (f.Has("tokenizer.ggml.token_type")) FERRY_ASSIGN_OR_RETURN(kinds, f.GetIntArray("tokenizer.ggml.token_type"));
  if (t->scores_.size() != n || (!kinds.empty() && kinds.size() != n)) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer arrays disagree: ", n, " tokens, ",
                                                   t->scores_.size(), " scores, ", kinds.size(), " types"));
  }
  t->pieces_.reserve(n);
  t->kinds_.reserve(n);
  std::fill(std::begin(t->byte_ids_), std::end(t->byte_ids_), -1);
  std::fill(std::begin(t->byte_char_ids_), std::end(t->byte_char_ids_), -1);
  for (size_t i = 0; i < n; ++i) {
    t->pieces_.emplace_back((*tokens)[i]);
    const TokenKind kind = kinds.empty() ? TokenKind::kNormal : static_cast<TokenKind>(kinds[i]);
    t->kinds_.push_back(kind);
    t->ids_.emplace(t->pieces_.back(), static_cast<int32_t>(i));  // first id wins on duplicates
    unsigned int byte = 0;
    if (kind == TokenKind::kByte && t->pieces_.back().size() == 6 &&
        std::sscanf(t->pieces_.back().c_str(), "<0x%02X>", &byte) == 1) {
      t->byte_ids_[byte] = static_cast<int32_t>(i);
    }
  }
  auto id = [&](const char* key, int32_t fallback, int32_t* out) -> absl::Status {
    if (!f.Has(key)) {
      *out = fallback < static_cast<int64_t>(n) ? fallback : -1;  // a default the vocabulary lacks: none
      return absl::OkStatus();
    }
    absl::StatusOr<uint64_t> v = f.GetUint(key);
    if (!v.ok()) return v.status();
    if (*v >= n) return absl::InvalidArgumentError(absl::StrCat(key, " = ", *v, " is outside the vocabulary"));
    *out = static_cast<int32_t>(*v);
    return absl::OkStatus();
  };
  FERRY_RETURN_IF_ERROR(id("tokenizer.ggml.bos_token_id", 1, &t->bos_));
  FERRY_RETURN_IF_ERROR(id("tokenizer.ggml.eos_token_id", 2, &t->eos_));
  FERRY_RETURN_IF_ERROR(id("tokenizer.ggml.unknown_token_id", 0, &t->unk_));
  FERRY_RETURN_IF_ERROR(id("tokenizer.ggml.eot_token_id", -1, &t->eot_));
  if (t->bpe_) {
    t->add_space_prefix_ = false;
    t->add_bos_ = false;
    FERRY_RETURN_IF_ERROR(t->InitBpe(f));
  }
  if (f.Has("tokenizer.ggml.add_bos_token")) FERRY_ASSIGN_OR_RETURN(t->add_bos_, f.GetBool("tokenizer.ggml.add_bos_token"));
  if (f.Has("tokenizer.ggml.add_space_prefix")) {
    FERRY_ASSIGN_OR_RETURN(t->add_space_prefix_, f.GetBool("tokenizer.ggml.add_space_prefix"));
  }
  // Special tokens are matched verbatim in the text: control, user-defined
  // and unknown tokens, as llama.cpp's server tokenizes a prompt (with
  // parse_special): a chat template's <start_of_turn> or <|im_start|> is one
  // token in either kind of vocabulary.
  for (size_t i = 0; i < n; ++i) {
    const TokenKind k = t->kinds_[i];
    if ((k == TokenKind::kUserDefined || k == TokenKind::kControl || k == TokenKind::kUnknown) &&
        !t->pieces_[i].empty()) {
      t->specials_.Add(t->pieces_[i], static_cast<int32_t>(i));
    }
  }
  return t;
}

void Tokenizer::SpecialTrie::Add(absl::string_view text, int32_t id) {
  int32_t node = 0;
  for (unsigned char c : text) {
    auto [it, inserted] = child.try_emplace((static_cast<uint64_t>(node) << 8) | c, static_cast<int32_t>(token.size()));
    if (inserted) token.push_back(-1);
    node = it->second;
  }
  if (token[node] < 0) token[node] = id;  // the first of duplicate texts wins
  starts[static_cast<unsigned char>(text[0])] = true;
}

std::pair<size_t, int32_t> Tokenizer::SpecialTrie::LongestAt(absl::string_view text, size_t at) const {
  std::pair<size_t, int32_t> best = {0, -1};
  int32_t node = 0;
  for (size_t i = at; i < text.size(); ++i) {
    auto it = child.find((static_cast<uint64_t>(node) << 8) | static_cast<unsigned char>(text[i]));
    if (it == child.end()) break;
    node = it->second;
    if (token[node] >= 0) best = {i - at + 1, token[node]};
  }
  return best;
}

// GPT-2's byte <-> character map: printable bytes stand for themselves, the
// other 68 get the code points from 256 up, in byte order.
absl::Status Tokenizer::InitBpe(const gguf::File& f) {
  uint32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    const uint32_t cp = printable ? b : next++;
    char buf[4];
    size_t len = 0;
    if (cp < 0x80) {
      buf[len++] = static_cast<char>(cp);
    } else {
      buf[len++] = static_cast<char>(0xc0 | (cp >> 6));
      buf[len++] = static_cast<char>(0x80 | (cp & 0x3f));
    }
    byte_chars_[b].assign(buf, len);
    char_bytes_[cp] = static_cast<uint8_t>(b);
    auto it = ids_.find(byte_chars_[b]);
    byte_char_ids_[b] = it != ids_.end() ? it->second : -1;
  }
  std::vector<absl::string_view> merges;
  FERRY_ASSIGN_OR_RETURN(merges, f.GetStringArray("tokenizer.ggml.merges"));
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const absl::string_view m = merges[rank];
    const size_t space = m.find(' ', 1);
    if (space == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.ggml.merges[", rank, "] = '", m, "' is not 'a b'"));
    }
    const std::string left(m.substr(0, space)), right(m.substr(space + 1));
    auto l = ids_.find(left), r = ids_.find(right), joined = ids_.find(left + right);
    if (l == ids_.end() || r == ids_.end() || joined == ids_.end()) continue;  // unreachable merge: never applies
    const uint64_t key = (static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second);
    merges_.emplace(key, std::make_pair(static_cast<int32_t>(rank), joined->second));
  }
  std::string pre;
  if (f.Has("tokenizer.ggml.pre")) {
    absl::string_view p;
    FERRY_ASSIGN_OR_RETURN(p, f.GetString("tokenizer.ggml.pre"));
    pre = std::string(p);
  }
  PreTokenizerSpec spec;
  FERRY_ASSIGN_OR_RETURN(spec, FindPreTokenizer(pre));
  FERRY_ASSIGN_OR_RETURN(pre_, PreTokenizer::Create(spec.patterns));
  ignore_merges_ = spec.ignore_merges;
  return absl::OkStatus();
}

// One pre-token: its bytes as stand-in characters, then the lowest-ranked
// adjacent pair merged (leftmost first) until no pair has a merge. Pairs wait
// in a priority queue ordered by (rank, position), as in Hugging Face's and
// llama.cpp's BPE: an entry whose sides changed since it was queued is
// skipped when it comes up, so a chunk of n bytes costs O(n log n).
void Tokenizer::EncodeBpeChunk(absl::string_view chunk, std::vector<int32_t>* out) const {
  if (ignore_merges_) {
    std::string mapped;
    for (unsigned char c : chunk) mapped += byte_chars_[c];
    if (auto it = ids_.find(mapped); it != ids_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id;          // -1: a byte whose stand-in is not in the vocabulary (dropped, never merged)
    int32_t prev, next;  // neighbours in the chain, -1 at the ends
  };
  const int32_t n = static_cast<int32_t>(chunk.size());
  std::vector<Symbol> sym(n);
  for (int32_t i = 0; i < n; ++i) sym[i] = {byte_char_ids_[static_cast<unsigned char>(chunk[i])], i - 1, i + 1};
  if (n > 0) sym[n - 1].next = -1;
  struct Pair {
    int32_t rank, left, right;
    int32_t left_id, right_id;  // the sides when queued: the entry is stale once either changed
    bool operator>(const Pair& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Pair, std::vector<Pair>, std::greater<Pair>> queue;
  auto push = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0 || sym[left].id < 0 || sym[right].id < 0) return;
    const uint64_t key = (static_cast<uint64_t>(sym[left].id) << 32) | static_cast<uint32_t>(sym[right].id);
    auto it = merges_.find(key);
    if (it != merges_.end()) queue.push({it->second.first, left, right, sym[left].id, sym[right].id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i, i + 1);
  while (!queue.empty()) {
    const Pair p = queue.top();
    queue.pop();
    Symbol& l = sym[p.left];
    Symbol& r = sym[p.right];
    if (l.next != p.right || l.id != p.left_id || r.id != p.right_id) continue;  // stale
    l.id = merges_.find((static_cast<uint64_t>(p.left_id) << 32) | static_cast<uint32_t>(p.right_id))->second.second;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = p.left;
    r.id = -1;
    r.prev = r.next = -1;
    push(l.prev, p.left);
    push(p.left, l.next);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = sym[i].next) {
    if (sym[i].id >= 0) out->push_back(sym[i].id);
  }
}

void Tokenizer::EncodeBpe(absl::string_view text, std::vector<int32_t>* out) const {
  // The regex needs valid UTF-8: invalid bytes become U+FFFD first.
  const std::string clean = SanitizeUtf8(text);
  std::vector<absl::string_view> chunks;
  pre_->Split(clean, &chunks);
  for (absl::string_view chunk : chunks) EncodeBpeChunk(chunk, out);
}

// SentencePiece BPE: start from characters and repeatedly merge the
// adjacent pair whose joined text is the highest-scoring vocabulary piece
// (leftmost first on ties); pieces left unknown fall back to byte tokens.
void Tokenizer::EncodeSpm(absl::string_view raw, std::vector<int32_t>* out) const {
  std::string text = Replace(raw, " ", kSpaceMarker);
  if (add_space_prefix_) text = std::string(kSpaceMarker) + text;
  struct Symbol {
    int prev, next;
    size_t begin, len;
  };
  std::vector<Symbol> sym;
  sym.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t len = std::min(Utf8Len(static_cast<unsigned char>(text[i])), text.size() - i);
    sym.push_back({static_cast<int>(sym.size()) - 1, static_cast<int>(sym.size()) + 1, i, len});
    i += len;
  }
  if (sym.empty()) return;
  sym.back().next = -1;
  struct Bigram {
    int left, right;
    float score;
    size_t len;
  };
  auto worse = [](const Bigram& a, const Bigram& b) { return a.score < b.score || (a.score == b.score && a.left > b.left); };
  std::vector<Bigram> storage;
  storage.reserve(2 * sym.size());
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse, std::move(storage));
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const size_t len = sym[left].len + sym[right].len;
    auto it = ids_.find(absl::string_view(text.data() + sym[left].begin, len));
    if (it == ids_.end()) return;
    queue.push({left, right, scores_[it->second], len});
  };
  for (size_t i = 1; i < sym.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& l = sym[b.left];
    Symbol& r = sym[b.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.len) continue;  // stale: a side was merged since
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  for (int i = 0; i >= 0; i = sym[i].next) {
    const absl::string_view piece(text.data() + sym[i].begin, sym[i].len);
    if (auto it = ids_.find(piece); it != ids_.end()) {
      out->push_back(it->second);
      continue;
    }
    for (unsigned char c : piece) out->push_back(byte_ids_[c] >= 0 ? byte_ids_[c] : unk_);
  }
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && bos_ >= 0) out.push_back(bos_);
  auto encode_text = [&](absl::string_view part) {
    if (part.empty()) return;
    if (bpe_) {
      EncodeBpe(part, &out);
    } else {
      EncodeSpm(part, &out);
    }
  };
  // Split out special tokens (the longest at the leftmost position where
  // one starts), then encode the text between them: one pass over the text.
  size_t done = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (!specials_.starts[static_cast<unsigned char>(text[i])]) continue;
    const auto [len, id] = specials_.LongestAt(text, i);
    if (len == 0) continue;
    encode_text(text.substr(done, i - done));
    out.push_back(id);
    done = i + len;
    i = done - 1;
  }
  encode_text(text.substr(done));
  return out;
}

std::string Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= n_vocab()) return "";
  if (bpe_) {
    if (kinds_[id] == TokenKind::kControl || kinds_[id] == TokenKind::kUnused) return "";
    if (kinds_[id] == TokenKind::kUserDefined) return pieces_[id];
    // Map each stand-in character back to its byte.
    std::string out;
    const std::string& p = pieces_[id];
    for (size_t i = 0; i < p.size();) {
      const unsigned char c = static_cast<unsigned char>(p[i]);
      uint32_t cp = c;
      size_t len = 1;
      if ((c & 0xe0) == 0xc0 && i + 1 < p.size()) cp = ((c & 0x1f) << 6) | (p[i + 1] & 0x3f), len = 2;
      auto it = char_bytes_.find(cp);
      if (it != char_bytes_.end()) {
        out += static_cast<char>(it->second);
      } else {
        out.append(p, i, len);
      }
      i += len;
    }
    return out;
  }
  switch (kinds_[id]) {
    case TokenKind::kControl:
    case TokenKind::kUnused:
      return "";
    case TokenKind::kByte:
      for (int b = 0; b < 256; ++b) {
        if (byte_ids_[b] == id) return std::string(1, static_cast<char>(b));
      }
      return pieces_[id];
    default:
      return Replace(pieces_[id], kSpaceMarker, " ");
  }
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  Detokenizer d(*this);
  std::string out;
  for (int32_t id : ids) out += d.Push(id);
  return out + d.Flush();
}

std::string Detokenizer::Push(int32_t id) {
  pending_ += tokenizer_.TokenBytes(id);
  if (strip_space_ && !pending_.empty()) {
    if (pending_[0] == ' ') pending_.erase(0, 1);
    strip_space_ = false;
  }
  const size_t done = CompleteUtf8Prefix(pending_);
  std::string out = SanitizeUtf8(absl::string_view(pending_).substr(0, done));
  pending_.erase(0, done);
  return out;
}

std::string Detokenizer::Flush() {
  std::string out = SanitizeUtf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace ferry::text
