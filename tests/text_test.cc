// Sampler, stop sequences and streaming detokenization.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
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
