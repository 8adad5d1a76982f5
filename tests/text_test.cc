// Sampler, stop sequences and streaming detokenization.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <time.h>

#include <cmath>
#include <functional>
#include <map>

#include "engine/gguf/writer.h"
#include "engine/text/sampler.h"
#include "engine/text/stop.h"
#include "engine/text/tokenizer.h"
#include "tests/shared_models.h"

namespace ferry::text {
namespace {

using ::testing::HasSubstr;

std::vector<float> Logits() { return {1.0f, 3.0f, 2.0f, -1.0f, 0.5f}; }

SamplingParams Plain(float temperature) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  return p;
}

TEST(Sampler, GreedyAndLogprobs) {
  SamplingParams p = Plain(0.0f);
  p.top_logprobs = 3;
  Sampler s(p, 5);
  std::vector<float> l = Logits();
  const Sampled out = s.Sample(l, {});
  EXPECT_EQ(out.token, 1);
  double z = 0;
  for (float v : Logits()) z += std::exp(v);
  EXPECT_NEAR(out.logprob, 3.0 - std::log(z), 1e-5);
  ASSERT_EQ(out.top.size(), 3u);
  EXPECT_EQ(out.top[0].token, 1);
  EXPECT_EQ(out.top[1].token, 2);
  EXPECT_EQ(out.top[2].token, 0);
  EXPECT_NEAR(out.top[1].logprob, 2.0 - std::log(z), 1e-5);
}

TEST(Sampler, FrequenciesFollowTheTemperatureSoftmax) {
  for (float temp : {0.5f, 1.0f, 2.0f}) {
    Sampler s(Plain(temp), 5);
    std::map<int, int> counts;
    const int n = 200000;
    for (int i = 0; i < n; ++i) {
      std::vector<float> l = Logits();
      ++counts[s.Sample(l, {}).token];
    }
    double z = 0;
    for (float v : Logits()) z += std::exp(v / temp);
    for (int t = 0; t < 5; ++t) {
      const double want = std::exp(Logits()[t] / temp) / z;
      // 5 standard deviations of a binomial proportion.
      EXPECT_NEAR(counts[t] / double(n), want, 5 * std::sqrt(want * (1 - want) / n) + 1e-4) << temp << " " << t;
    }
  }
}

TEST(Sampler, SameSeedSameDraws) {
  SamplingParams p = Plain(1.0f);
  p.seed = 42;
  Sampler a(p, 5), b(p, 5);
  for (int i = 0; i < 100; ++i) {
    std::vector<float> la = Logits(), lb = Logits();
    ASSERT_EQ(a.Sample(la, {}).token, b.Sample(lb, {}).token);
  }
}

TEST(Sampler, TruncationsKeepOnlyTheirSets) {
  auto draws = [](SamplingParams p) {
    Sampler s(p, 5);
    std::set<int> seen;
    for (int i = 0; i < 2000; ++i) {
      std::vector<float> l = Logits();
      seen.insert(s.Sample(l, {}).token);
    }
    return seen;
  };
  SamplingParams k = Plain(1.0f);
  k.top_k = 2;
  EXPECT_EQ(draws(k), (std::set<int>{1, 2}));
  // Probabilities: 0.61, 0.22, 0.08, 0.05, 0.01 -> top_p 0.8 keeps the first two.
  SamplingParams tp = Plain(1.0f);
  tp.top_p = 0.8f;
  EXPECT_EQ(draws(tp), (std::set<int>{1, 2}));
  // min_p 0.3: keep p >= 0.3 x 0.61 = 0.18.
  SamplingParams mp = Plain(1.0f);
  mp.min_p = 0.3f;
  EXPECT_EQ(draws(mp), (std::set<int>{1, 2}));
  SamplingParams typ = Plain(1.0f);
  typ.typical_p = 0.2f;
  EXPECT_EQ(draws(typ).size(), 1u);
}

TEST(Sampler, PenaltiesAndBias) {
  SamplingParams p = Plain(0.0f);
  p.repetition_penalty = 4.0f;  // 3 / 4 = 0.75 < 2: token 2 wins once 1 was seen
  Sampler s(p, 5);
  std::vector<float> l = Logits();
  const std::vector<int32_t> history = {1};
  EXPECT_EQ(s.Sample(l, history).token, 2);
  SamplingParams f = Plain(0.0f);
  f.frequency_penalty = 0.6f;  // token 1 seen twice: 3 - 1.2 = 1.8 < 2
  Sampler sf(f, 5);
  l = Logits();
  const std::vector<int32_t> twice = {1, 1};
  EXPECT_EQ(sf.Sample(l, twice).token, 2);
  SamplingParams b = Plain(0.0f);
  b.logit_bias = {{3, 10.0f}};
  Sampler sb(b, 5);
  l = Logits();
  EXPECT_EQ(sb.Sample(l, {}).token, 3);
}

TEST(Sampler, ValidateNamesTheField) {
  SamplingParams p;
  p.temperature = -1;
  EXPECT_THAT(std::string(Validate(p, 100).message()), HasSubstr("temperature = -1 is outside [0, 100]"));
  p = {};
  p.top_p = std::nanf("");
  EXPECT_THAT(std::string(Validate(p, 100).message()), HasSubstr("top_p"));
  p = {};
  p.top_k = 101;
  EXPECT_THAT(std::string(Validate(p, 100).message()), HasSubstr("top_k = 101 is outside [0, 100]"));
  p = {};
  p.logit_bias = {{100, 1.0f}};
  EXPECT_THAT(std::string(Validate(p, 100).message()), HasSubstr("logit_bias token 100"));
  EXPECT_TRUE(Validate(SamplingParams{}, 100).ok());
}

// Issue 17, item 4: +-inf and 3.4e38 were accepted (only NaN was refused)
// and gave NaN log-probabilities.
TEST(Sampler, LogitBiasBeyondHundredIsRefusedAndTheBoundGivesFiniteLogprobs) {
  for (float bias : {INFINITY, -INFINITY, 3.4e38f, -3.4e38f, 100.5f}) {
    SamplingParams p = Plain(1.0f);
    p.logit_bias = {{3, bias}};
    const absl::Status s = Validate(p, 5);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bias;
    EXPECT_THAT(std::string(s.message()), HasSubstr("is outside [-100, 100]")) << bias;
  }
  for (float temperature : {0.0f, 1.0f}) {
    SamplingParams p = Plain(temperature);
    p.logprobs = true;
    p.top_logprobs = 5;
    p.logit_bias = {{0, 100.0f}, {1, -100.0f}, {2, -100.0f}, {3, -100.0f}, {4, -100.0f}};
    ASSERT_TRUE(Validate(p, 5).ok());
    Sampler s(p, 5);
    std::vector<float> l = Logits();
    const Sampled t = s.Sample(l, {});
    EXPECT_EQ(t.token, 0);
    EXPECT_TRUE(std::isfinite(t.logprob)) << t.logprob;
    for (const TokenLogprob& alt : t.top) EXPECT_TRUE(std::isfinite(alt.logprob)) << alt.token;
  }
}

TEST(StopMatcher, HoldsBackPossibleStopsAndCutsAtTheFirst) {
  StopMatcher m({"o w", "END"});
  bool stopped = false;
  EXPECT_EQ(m.Push("Hel", &stopped), "Hel");
  EXPECT_EQ(m.Push("lo", &stopped), "l");  // "o" might start "o w"
  EXPECT_FALSE(stopped);
  EXPECT_EQ(m.Push(" wor", &stopped), "");  // "l" went out already; the stop text never does
  EXPECT_TRUE(stopped);
  StopMatcher e({"END"});
  EXPECT_EQ(e.Push("abcE", &stopped), "abc");
  EXPECT_EQ(e.Push("N", &stopped), "");
  EXPECT_EQ(e.Push("x", &stopped), "ENx");
  EXPECT_EQ(e.Push("E", &stopped), "");
  EXPECT_EQ(e.Flush(), "E");
}

// A tiny SentencePiece-style vocabulary ("▁hi" reachable through "▁h") with byte tokens.
std::unique_ptr<Tokenizer> ByteTokenizer(std::string* storage) {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "\xe2\x96\x81hi", "\xe2\x96\x81h", "\xe2\x96\x81"};
  std::vector<int32_t> types = {2, 3, 3, 1, 1, 1};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    tokens.push_back(buf);
    types.push_back(6);
  }
  gguf::Writer w;
  EXPECT_TRUE(w.Set("tokenizer.ggml.model", gguf::MetaValue::Str("llama")).ok());
  EXPECT_TRUE(w.Set("tokenizer.ggml.tokens", gguf::MetaValue::StringArray(tokens)).ok());
  EXPECT_TRUE(w.Set("tokenizer.ggml.token_type", gguf::MetaValue::Array(types)).ok());
  *storage = *w.WriteToString();
  static std::unique_ptr<gguf::File> file;
  file = std::move(*gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(storage->data()), storage->size())));
  return std::move(*Tokenizer::FromGguf(*file));
}

TEST(Detokenizer, HoldsSplitCharactersAndReplacesInvalidBytes) {
  std::string storage;
  std::unique_ptr<Tokenizer> t = ByteTokenizer(&storage);
  const std::vector<int32_t> ids = t->Encode("hi \xc3\xa9", true);
  // <s>, "▁hi", then "▁" and "é" by byte fallback.
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(ids[1], 3);
  EXPECT_EQ(ids[2], 5);
  EXPECT_EQ(ids[3], 6 + 0xc3);
  Detokenizer d(*t);
  EXPECT_EQ(d.Push(ids[0]), "");
  EXPECT_EQ(d.Push(ids[1]), "hi");  // the leading space the encoder added is dropped
  EXPECT_EQ(d.Push(ids[2]), " ");
  EXPECT_EQ(d.Push(ids[3]), "");    // first byte of é held back
  EXPECT_EQ(d.Push(ids[4]), "\xc3\xa9");
  EXPECT_EQ(d.Push(6 + 0xff), "\xef\xbf\xbd");  // a byte that starts nothing
  EXPECT_EQ(d.Push(6 + 0xe2), "");
  EXPECT_EQ(d.Flush(), "\xef\xbf\xbd");  // incomplete at the end
  EXPECT_EQ(t->Decode(ids), "hi \xc3\xa9");
}

TEST(Tokenizer, HostileMetadataIsRefusedOrTamed) {
  auto load = [](const std::vector<std::pair<std::string, gguf::MetaValue>>& meta, std::string* storage) {
    gguf::Writer w;
    for (const auto& [k, v] : meta) EXPECT_TRUE(w.Set(k, v).ok());
    *storage = *w.WriteToString();
    static std::unique_ptr<gguf::File> file;
    file = std::move(*gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(storage->data()), storage->size())));
    return Tokenizer::FromGguf(*file);
  };
  const std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "a", "b", "ab"};
  std::string bytes;
  auto mismatch = load({{"tokenizer.ggml.model", gguf::MetaValue::Str("llama")},
                        {"tokenizer.ggml.tokens", gguf::MetaValue::StringArray(tokens)},
                        {"tokenizer.ggml.scores", gguf::MetaValue::Array(std::vector<float>{0, 0, 0})}},
                       &bytes);
  EXPECT_THAT(std::string(mismatch.status().message()), HasSubstr("6 tokens, 3 scores"));
  auto bad_bos = load({{"tokenizer.ggml.model", gguf::MetaValue::Str("llama")},
                       {"tokenizer.ggml.tokens", gguf::MetaValue::StringArray(tokens)},
                       {"tokenizer.ggml.bos_token_id", gguf::MetaValue::U32(99)}},
                      &bytes);
  EXPECT_THAT(std::string(bad_bos.status().message()), HasSubstr("bos_token_id = 99 is outside the vocabulary"));
  auto unknown = load({{"tokenizer.ggml.model", gguf::MetaValue::Str("rwkv")},
                       {"tokenizer.ggml.tokens", gguf::MetaValue::StringArray(tokens)}},
                      &bytes);
  EXPECT_THAT(std::string(unknown.status().message()), HasSubstr("tokenizer model 'rwkv' is not supported"));
  // NaN scores and out-of-range token types still tokenize.
  const float nan = std::nanf("");
  auto odd = load({{"tokenizer.ggml.model", gguf::MetaValue::Str("llama")},
                   {"tokenizer.ggml.tokens", gguf::MetaValue::StringArray(tokens)},
                   {"tokenizer.ggml.scores", gguf::MetaValue::Array(std::vector<float>{0, 0, 0, nan, nan, nan})},
                   {"tokenizer.ggml.token_type", gguf::MetaValue::Array(std::vector<int32_t>{2, 3, 3, 99, -7, 1})}},
                  &bytes);
  ASSERT_TRUE(odd.ok()) << odd.status();
  EXPECT_FALSE((*odd)->Encode("ab ab abba", true).empty());
  auto bpe_without_merges = load({{"tokenizer.ggml.model", gguf::MetaValue::Str("gpt2")},
                                  {"tokenizer.ggml.tokens", gguf::MetaValue::StringArray(tokens)}},
                                 &bytes);
  EXPECT_THAT(std::string(bpe_without_merges.status().message()), HasSubstr("tokenizer.ggml.merges' not found"));
}

// GPT-2's printable stand-in for a byte (the map byte-level BPE vocabularies are written in).
std::string ByteChar(int b) {
  int next = 256;
  for (int x = 0; x < 256; ++x) {
    const bool printable = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255);
    const int cp = printable ? x : next++;
    if (x != b) continue;
    std::string out;
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
    return out;
  }
  return "";
}

// Loads a tokenizer from metadata alone; `file` keeps the parsed file alive.
std::unique_ptr<Tokenizer> FromMeta(const std::vector<std::pair<std::string, gguf::MetaValue>>& meta,
                                    std::string* storage, std::unique_ptr<gguf::File>* file) {
  gguf::Writer w;
  for (const auto& [k, v] : meta) EXPECT_TRUE(w.Set(k, v).ok());
  *storage = *w.WriteToString();
  *file = std::move(*gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(storage->data()), storage->size())));
  auto t = Tokenizer::FromGguf(**file);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

// Byte-level BPE: the 256 byte stand-ins, merges that build runs of 'a' up
// to 16 and "he"/"hehe", a control token <|a|> and a user-defined one <|b|>.
std::unique_ptr<Tokenizer> CostBpe(std::string* storage, std::unique_ptr<gguf::File>* file) {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int b = 0; b < 256; ++b) tokens.push_back(ByteChar(b)), types.push_back(1);
  const std::vector<std::string> merges = {"a a", "aa aa", "aaaa aaaa", "aaaaaaaa aaaaaaaa", "h e", "he he"};
  for (const std::string& m : merges) {
    const size_t sp = m.find(' ');
    tokens.push_back(m.substr(0, sp) + m.substr(sp + 1));
    types.push_back(1);
  }
  tokens.push_back("<|a|>"), types.push_back(3);
  tokens.push_back("<|b|>"), types.push_back(4);
  return FromMeta({{"tokenizer.ggml.model", gguf::MetaValue::Str("gpt2")},
                   {"tokenizer.ggml.pre", gguf::MetaValue::Str("gpt-2")},
                   {"tokenizer.ggml.tokens", gguf::MetaValue::StringArray(tokens)},
                   {"tokenizer.ggml.token_type", gguf::MetaValue::Array(types)},
                   {"tokenizer.ggml.merges", gguf::MetaValue::StringArray(merges)}},
                  storage, file);
}

// SentencePiece: "▁", "h", "e", "he", "hehe", "hehehehe" scored so that
// longer pieces win, byte tokens, a control token <|a|> and user-defined
// <|b|> and <|c|>.
std::unique_ptr<Tokenizer> CostSpm(std::string* storage, std::unique_ptr<gguf::File>* file) {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>", "<|a|>", "<|b|>", "<|c|>", "\xe2\x96\x81", "h", "e",
                                     "he", "hehe", "hehehehe", "\xe2\x96\x81he"};
  std::vector<int32_t> types = {2, 3, 3, 3, 4, 4, 1, 1, 1, 1, 1, 1, 1};
  std::vector<float> scores = {0, 0, 0, 0, 0, 0, -10, -9, -9, -3, -2, -1, -4};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
    tokens.push_back(buf), types.push_back(6), scores.push_back(0);
  }
  return FromMeta({{"tokenizer.ggml.model", gguf::MetaValue::Str("llama")},
                   {"tokenizer.ggml.tokens", gguf::MetaValue::StringArray(tokens)},
                   {"tokenizer.ggml.scores", gguf::MetaValue::Array(scores)},
                   {"tokenizer.ggml.token_type", gguf::MetaValue::Array(types)}},
                  storage, file);
}

std::string Repeat(absl::string_view s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out.append(s.data(), s.size());
  return out;
}

// CPU seconds this thread has used: unlike wall time, not counting while
// other work on the machine holds the core.
double ThreadCpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// The least CPU time of encoding `short_text` and of encoding `long_text`
// over seven alternating runs (alternating, so that a busy spell on the
// machine, through caches and clock speed, falls on both alike).
std::pair<double, double> EncodeSeconds(const Tokenizer& t, const std::string& short_text,
                                        const std::string& long_text, size_t* short_tokens, size_t* long_tokens) {
  double best_short = 1e30, best_long = 1e30;
  for (int rep = 0; rep < 7; ++rep) {
    double start = ThreadCpuSeconds();
    *short_tokens = t.Encode(short_text, false).size();
    best_short = std::min(best_short, ThreadCpuSeconds() - start);
    start = ThreadCpuSeconds();
    *long_tokens = t.Encode(long_text, false).size();
    best_long = std::min(best_long, ThreadCpuSeconds() - start);
  }
  return {best_short, best_long};
}

// Tokenizing 4x the text must cost about 4x, not 16x: each case is timed at
// n and 4n in this run and the ratio of the two is checked (linear: 4,
// n log n: a little more, quadratic: 16). The texts are the adversarial
// shapes of issue 17: one long pre-token chunk, many special tokens with one
// more at the very end, many short words.
TEST(TokenizerCost, GrowsNearLinearlyWithTheText) {
  std::string bpe_bytes, spm_bytes;
  std::unique_ptr<gguf::File> bpe_file, spm_file;
  std::unique_ptr<Tokenizer> bpe = CostBpe(&bpe_bytes, &bpe_file);
  std::unique_ptr<Tokenizer> spm = CostSpm(&spm_bytes, &spm_file);
  ASSERT_TRUE(bpe && spm);
  struct Case {
    const char* name;
    const Tokenizer* tok;
    size_t n;                                 // bytes: the time at n should be a millisecond or more
    std::function<std::string(size_t)> text;  // of about n bytes
  };
  const std::vector<Case> cases = {
      {"bpe: one chunk of 'a' x n", bpe.get(), 1 << 14, [](size_t k) { return std::string(k, 'a'); }},
      {"bpe: 'he<|a|>' x n/7 then <|b|>", bpe.get(), 1 << 16,
       [](size_t k) { return Repeat("he<|a|>", k / 7) + "<|b|>"; }},
      {"bpe: 'he ' x n/3", bpe.get(), 1 << 16, [](size_t k) { return Repeat("he ", k / 3); }},
      {"spm: 'he' x n/2", spm.get(), 1 << 14, [](size_t k) { return Repeat("he", k / 2); }},
      {"spm: 'he<|b|>' x n/7 then <|c|>", spm.get(), 1 << 16,
       [](size_t k) { return Repeat("he<|b|>", k / 7) + "<|c|>"; }},
  };
  for (const Case& c : cases) {
    size_t tokens_n = 0, tokens_4n = 0;
    const auto [t_n, t_4n] = EncodeSeconds(*c.tok, c.text(c.n), c.text(4 * c.n), &tokens_n, &tokens_4n);
    std::printf("%-34s n=%zu: %.3f ms (%zu tokens), 4n: %.3f ms (%zu tokens), ratio %.2f\n", c.name, c.n, t_n * 1e3,
                tokens_n, t_4n * 1e3, tokens_4n, t_4n / t_n);
    EXPECT_GT(tokens_4n, 3 * tokens_n) << c.name;
    EXPECT_LT(t_4n / t_n, 8.0) << c.name << ": " << t_n * 1e3 << " ms at n, " << t_4n * 1e3 << " ms at 4n";
  }
}

TEST(Tokenizer, StoriesRoundTrip) {
  const std::string path = testing::SharedModel("stories260K-f32.gguf");
  FERRY_REQUIRE_SHARED_MODEL(path);
  auto file = gguf::File::Open(path);
  ASSERT_TRUE(file.ok());
  auto t = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(t.ok()) << t.status();
  for (const std::string s : {"Once upon a time, there was a little girl named Lily.", "  two  spaces\nand a line",
                              "caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x98\x80 naïve", ""}) {
    EXPECT_EQ((*t)->Decode((*t)->Encode(s, true)), s);
  }
}

}  // namespace
}  // namespace ferry::text
