// The forward pass against the double-precision reference, on every backend
// (cpu, sim, and cuda where a GPU is: one suite, the device a parameter), for
// every architecture x weight type on seeded random models from make-model;
// greedy agreement; and batching that does not change any sequence's result.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/qdot.h"
#include "engine/backend/device.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/exec/forward.h"
#include "tests/in_memory_model.h"
#include "engine/gguf/writer.h"
#include "engine/model/synth.h"
#include "engine/model/weights.h"
#include "tests/reference_forward.h"

namespace ferry {
namespace {

using quant::TensorType;

using Built = testing::InMemoryModel;

Built Build(const std::string& arch, TensorType type) {
  model::SynthOptions o;
  o.arch = arch;
  o.n_layer = arch == "gemma3" ? 6 : 2;  // gemma3's sixth layer is its first global one
  if (arch == "gemma3") o.rope_scale_factor = 8.0f;  // linear scaling of its global layers only
  o.n_embd = 256;  // k-quant blocks are 256 wide
  o.n_head = 4;
  o.n_head_kv = 2;
  o.n_ff = 512;
  o.n_vocab = 320;
  o.type = type;
  o.sliding_window = 4;  // short, so the test's sequences cross it
  o.seed = 7;
  return testing::BuildInMemory(o);
}

std::vector<int32_t> Prompt(int n, int vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> out(n);
  for (int32_t& t : out) t = static_cast<int32_t>(rng() % vocab);
  return out;
}

// Logits after each token, computed as one prefill batch on `device`
// (nullptr: a cpu device of the executor's own), every unit resident.
std::vector<float> Prefill(const model::Model& m, exec::KvType kv, const std::vector<int32_t>& prompt,
                           backend::Device* device = nullptr) {
  auto fwd = exec::Executor::Create(m, device, {.max_batch = 64, .n_seq = 1, .n_ctx = 64, .kv_type = kv});
  EXPECT_TRUE(fwd.ok()) << fwd.status();
  if (!fwd.ok()) return {};
  std::vector<exec::BatchToken> batch;
  for (size_t i = 0; i < prompt.size(); ++i) batch.push_back({prompt[i], 0, static_cast<int32_t>(i), true});
  std::vector<float> logits(prompt.size() * m.config.n_vocab);
  EXPECT_TRUE((*fwd)->Forward(batch, logits).ok());
  return logits;
}

struct Errors {
  double max_normalized = 0;  // max |ferry - reference| / rms(reference), over every position
  double nmse = 0;            // sum (ferry - reference)^2 / sum reference^2
};

Errors Compare(const std::vector<float>& ours, const std::vector<std::vector<double>>& ref) {
  Errors e;
  double err2 = 0, ref2 = 0;
  for (size_t t = 0; t < ref.size(); ++t) {
    double ss = 0, worst = 0;
    for (size_t i = 0; i < ref[t].size(); ++i) {
      const double d = ours[t * ref[t].size() + i] - ref[t][i];
      ss += ref[t][i] * ref[t][i];
      worst = std::max(worst, std::fabs(d));
      err2 += d * d;
    }
    ref2 += ss;
    e.max_normalized = std::max(e.max_normalized, worst / std::sqrt(ss / ref[t].size()));
  }
  e.nmse = err2 / ref2;
  return e;
}

struct Case {
  const char* arch;
  TensorType type;
  const char* device = "cpu";  // OpenDevice's spec
};
void PrintTo(const Case& c, std::ostream* os) {
  *os << c.device << " " << c.arch << " " << quant::Info(c.type).name;
}

// Tolerances. Both sides decode the same weights, so the error is the
// engine's arithmetic against double precision.
// - Float path (the types without an integer kernel, cpu::GetQDot): float rounding,
//   ~1e-6 relative per operation, ~1e-5 of the logits' scale through two
//   layers with an f32 cache. An f16 cache rounds k and v to 11 bits
//   (2^-12 = 2.4e-4 relative): ~1e-3 on the logits. Bounds: 5e-5 and 5e-3.
// - Integer path (the quantized types with cpu::GetQDot): activations are rounded to 8 bits
//   per block of 32 (step amax/127, about 0.5% of a normal block's rms),
//   so each product is off by ~0.5% and the logits by a few percent at the
//   worst entry (NMSE ~1e-4). Bounds: max 0.15, NMSE 1e-3, for either cache.
struct Bound {
  double max_f32_cache, max_f16_cache, nmse;
};
// - cuda: a 10-token prefill runs the cuBLAS TF32 GEMM on every type (10-bit
//   mantissas, ~5e-4 relative a product): ~1e-3 of the logits' scale;
//   bounds 2e-2 and 1e-4 (cuda_test's), far below what a wrong kernel gives.
Bound BoundFor(TensorType type, absl::string_view device = "cpu") {
  if (absl::StartsWith(device, "cuda")) return {2e-2, 2e-2, 1e-4};
  if (cpu::GetQDot(type, cpu::ActiveIsa() != cpu::Isa::kScalar) != nullptr) return {0.15, 0.15, 1e-3};
  return {5e-5, 5e-3, 1e-6};
}

class VersusReference : public ::testing::TestWithParam<Case> {};

TEST_P(VersusReference, LogitsWithinTolerance) {
  const Case c = GetParam();
  absl::StatusOr<std::unique_ptr<backend::Device>> device = backend::OpenDevice(c.device, 2);
  if (!device.ok() && absl::StartsWith(c.device, "cuda")) GTEST_SKIP() << "no GPU: " << device.status().message();
  ASSERT_TRUE(device.ok()) << device.status();
  Built b = Build(c.arch, c.type);
  auto gguf_ref = testing::ReferenceModel::Load(*b.model->file);
  ASSERT_TRUE(gguf_ref.ok()) << gguf_ref.status();
  const std::vector<int32_t> prompt = Prompt(10, b.model->config.n_vocab, 3);
  const auto ref = gguf_ref->Logits(prompt);
  const std::vector<float> f32 = Prefill(*b.model, exec::KvType::kF32, prompt, device->get());
  const std::vector<float> f16 = Prefill(*b.model, exec::KvType::kF16, prompt, device->get());
  ASSERT_FALSE(f32.empty() || f16.empty());
  const Errors e32 = Compare(f32, ref), e16 = Compare(f16, ref);
  std::printf("%s %s on %s: max normalized logit error %.2e / NMSE %.1e (f32 cache), %.2e / %.1e (f16 cache)\n",
              c.arch, std::string(quant::Info(c.type).name).c_str(), c.device, e32.max_normalized, e32.nmse,
              e16.max_normalized, e16.nmse);
  const Bound bound = BoundFor(c.type, c.device);
  EXPECT_LT(e32.max_normalized, bound.max_f32_cache);
  EXPECT_LT(e16.max_normalized, bound.max_f16_cache);
  EXPECT_LT(e32.nmse, bound.nmse);
  EXPECT_LT(e16.nmse, std::max(bound.nmse, 1e-5));
}

// Every architecture x type on each backend: the cpu device; the sim (the
// cpu kernels on device memory in the file's layout, all resident); cuda
// where a GPU is (tests/gpu/run.sh runs this suite there).
std::vector<Case> AllCases() {
  std::vector<Case> out;
  for (const char* device : {"cpu", "sim:mem=256MiB,overhead=0", "cuda:0,mem=1GiB"}) {
    for (const char* arch : {"llama", "qwen2", "gemma2", "qwen3", "gemma3"}) {
      for (TensorType t : {TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0, TensorType::kQ4_0,
                           TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kQ4_K,
                           TensorType::kQ5_K, TensorType::kQ6_K}) {
        out.push_back({arch, t, device});
      }
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(ArchByType, VersusReference, ::testing::ValuesIn(AllCases()), [](const auto& info) {
  const absl::string_view device = info.param.device;
  return absl::StrCat(device.substr(0, device.find(':')), "_", info.param.arch, "_",
                      quant::Info(info.param.type).name);
});

// Rope scaling as llama.cpp's converters write it: linear (a position
// multiplier from rope.scaling.*) and Llama 3's per-frequency divisors in a
// rope_freqs.weight tensor. The model is the synthetic llama with those
// added; the reference applies them its own way.
TEST(RopeScaling, LinearAndFrequencyFactorsMatchTheReference) {
  Built base = Build("llama", TensorType::kF32);
  const gguf::File& src = *base.model->file;
  const int half = base.model->config.rope_dims / 2;
  std::vector<float> factors(half);
  for (int i = 0; i < half; ++i) factors[i] = 1.0f + 0.25f * i;  // distinct divisors
  for (bool linear : {true, false}) {
    gguf::Writer w;
    for (const auto& [key, value] : src.metadata()) ASSERT_TRUE(w.Set(key, gguf::MetaValue::From(value)).ok());
    if (linear) {
      ASSERT_TRUE(w.Set("llama.rope.scaling.type", gguf::MetaValue::Str("linear")).ok());
      ASSERT_TRUE(w.Set("llama.rope.scaling.factor", gguf::MetaValue::F32(4.0f)).ok());
    }
    for (const gguf::TensorInfo& t : src.tensors()) {
      ASSERT_TRUE(w.AddTensor(t.name, t.type, std::span(t.dims.data(), t.n_dims), std::span(t.data, t.bytes)).ok());
    }
    const std::array<uint64_t, 1> dims = {static_cast<uint64_t>(half)};
    if (!linear) {
      ASSERT_TRUE(w.AddTensor("rope_freqs.weight", TensorType::kF32, dims,
                              std::span(reinterpret_cast<const uint8_t*>(factors.data()), factors.size() * 4))
                      .ok());
    }
    const std::string bytes = *w.WriteToString();
    auto file = gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    ASSERT_TRUE(file.ok());
    auto ref = testing::ReferenceModel::Load(**file);
    auto m = model::LoadModel(std::move(*file));
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)->config.rope_freq_scale, linear ? 0.25f : 1.0f);
    EXPECT_EQ((*m)->config.rope_freq_factors, !linear);
    const std::vector<int32_t> prompt = Prompt(12, (*m)->config.n_vocab, 5);
    const Errors e = Compare(Prefill(**m, exec::KvType::kF32, prompt), ref->Logits(prompt));
    EXPECT_LT(e.max_normalized, 5e-5) << (linear ? "linear" : "frequency factors");
    // And the scaling changes the result: it is not silently ignored.
    const Errors unscaled = Compare(Prefill(*base.model, exec::KvType::kF32, prompt), ref->Logits(prompt));
    EXPECT_GT(unscaled.max_normalized, 1e-3) << (linear ? "linear" : "frequency factors");
  }
}

TEST(RopeScaling, UnsupportedKindsAreRefused) {
  Built base = Build("llama", TensorType::kF32);
  gguf::Writer w;
  for (const auto& [key, value] : base.model->file->metadata()) ASSERT_TRUE(w.Set(key, gguf::MetaValue::From(value)).ok());
  ASSERT_TRUE(w.Set("llama.rope.scaling.type", gguf::MetaValue::Str("yarn")).ok());
  const std::string bytes = *w.WriteToString();
  auto file = gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  ASSERT_TRUE(file.ok());
  EXPECT_THAT(std::string(model::LoadConfig(**file).status().message()),
              ::testing::HasSubstr("rope scaling 'yarn' is not supported (linear, none)"));
}

class Greedy : public ::testing::TestWithParam<Case> {};

TEST_P(Greedy, SameTokensAsReference) {
  const Case c = GetParam();
  Built b = Build(c.arch, c.type);
  auto ref = testing::ReferenceModel::Load(*b.model->file);
  ASSERT_TRUE(ref.ok());
  auto fwd = exec::Executor::Create(*b.model, nullptr, {.max_batch = 16, .n_seq = 1, .n_ctx = 64, .kv_type = exec::KvType::kF32});
  std::vector<int32_t> seq = Prompt(4, b.model->config.n_vocab, 9);
  std::vector<float> logits(b.model->config.n_vocab);
  for (size_t i = 0; i + 1 < seq.size(); ++i) {
    const exec::BatchToken t{seq[i], 0, static_cast<int32_t>(i), false};
    ASSERT_TRUE((*fwd)->Forward({&t, 1}, {}).ok());
  }
  std::vector<int32_t> ours = seq, theirs = seq;
  for (int step = 0; step < 12; ++step) {
    const exec::BatchToken t{ours.back(), 0, static_cast<int32_t>(ours.size() - 1), true};
    ASSERT_TRUE((*fwd)->Forward({&t, 1}, logits).ok());
    ours.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    const std::vector<double> last = ref->Logits(theirs).back();
    theirs.push_back(static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin()));
  }
  EXPECT_EQ(ours, theirs);
}

INSTANTIATE_TEST_SUITE_P(F32AndF16, Greedy,
                         ::testing::Values(Case{"llama", TensorType::kF32}, Case{"llama", TensorType::kF16},
                                           Case{"qwen2", TensorType::kF32}, Case{"qwen2", TensorType::kF16},
                                           Case{"gemma2", TensorType::kF32}, Case{"gemma2", TensorType::kF16},
                                           Case{"qwen3", TensorType::kF32}, Case{"gemma3", TensorType::kF32}),
                         [](const auto& info) {
                           return absl::StrCat(info.param.arch, "_", quant::Info(info.param.type).name);
                         });

// Three prompts decoded together (prefill mixed with decode) give exactly
// the logits each gives alone, for every weight type: a token's arithmetic
// must not depend on how many tokens share the step (the service's
// determinism under continuous batching rests on it).
class Batching : public ::testing::TestWithParam<TensorType> {};

TEST_P(Batching, DoesNotChangeAnySequence) {
  Built b = Build("llama", GetParam());
  const model::Model& m = *b.model;
  const int V = m.config.n_vocab;
  const std::vector<std::vector<int32_t>> prompts = {Prompt(3, V, 1), Prompt(7, V, 2), Prompt(5, V, 3)};
  const int steps = 6;

  // Alone: each prompt in its own executor, then greedy steps.
  std::vector<std::vector<float>> alone_logits(3);
  std::vector<std::vector<int32_t>> alone_tokens(3);
  for (int s = 0; s < 3; ++s) {
    auto fwd = exec::Executor::Create(m, nullptr, {.max_batch = 16, .n_seq = 1, .n_ctx = 32});
    std::vector<int32_t> seq = prompts[s];
    std::vector<float> logits(V);
    for (size_t i = 0; i + 1 < seq.size(); ++i) {
      const exec::BatchToken t{seq[i], 0, static_cast<int32_t>(i), false};
      ASSERT_TRUE((*fwd)->Forward({&t, 1}, {}).ok());
    }
    for (int step = 0; step < steps; ++step) {
      const exec::BatchToken t{seq.back(), 0, static_cast<int32_t>(seq.size() - 1), true};
      ASSERT_TRUE((*fwd)->Forward({&t, 1}, logits).ok());
      alone_logits[s].insert(alone_logits[s].end(), logits.begin(), logits.end());
      seq.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    }
    alone_tokens[s] = seq;
  }

  // Together: one executor with three slots; each step carries every
  // sequence's next token, and the first step carries whole prompts.
  auto fwd = exec::Executor::Create(m, nullptr, {.max_batch = 32, .n_seq = 3, .n_ctx = 32});
  std::vector<std::vector<int32_t>> seqs = prompts;
  std::vector<std::vector<float>> together_logits(3);
  std::vector<float> logits(3 * V);
  for (int step = 0; step < steps; ++step) {
    std::vector<exec::BatchToken> batch;
    for (int s = 0; s < 3; ++s) {
      const size_t from = step == 0 ? 0 : seqs[s].size() - 1;
      for (size_t i = from; i < seqs[s].size(); ++i) {
        batch.push_back({seqs[s][i], s, static_cast<int32_t>(i), i + 1 == seqs[s].size()});
      }
    }
    ASSERT_TRUE((*fwd)->Forward(batch, logits).ok());
    for (int s = 0; s < 3; ++s) {
      const float* l = logits.data() + s * V;
      together_logits[s].insert(together_logits[s].end(), l, l + V);
      seqs[s].push_back(static_cast<int32_t>(std::max_element(l, l + V) - l));
    }
  }
  for (int s = 0; s < 3; ++s) {
    EXPECT_EQ(seqs[s], alone_tokens[s]) << "sequence " << s;
    EXPECT_EQ(together_logits[s], alone_logits[s]) << "sequence " << s << ": logits not bit-identical";
  }
}

INSTANTIATE_TEST_SUITE_P(EveryType, Batching,
                         ::testing::Values(TensorType::kF32, TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0,
                                           TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1,
                                           TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K),
                         [](const auto& info) { return std::string(quant::Info(info.param).name); });

TEST(Forward, RefusesBadTokens) {
  Built b = Build("llama", TensorType::kF32);
  auto fwd = exec::Executor::Create(*b.model, nullptr, {.max_batch = 2, .n_seq = 1, .n_ctx = 8});
  std::vector<float> logits(b.model->config.n_vocab * 3);
  const exec::BatchToken bad_id{-1, 0, 0, true}, bad_seq{1, 1, 0, true}, bad_pos{1, 0, 8, true};
  EXPECT_THAT(std::string((*fwd)->Forward({&bad_id, 1}, logits).message()), ::testing::HasSubstr("outside the vocabulary"));
  EXPECT_THAT(std::string((*fwd)->Forward({&bad_seq, 1}, logits).message()), ::testing::HasSubstr("sequence 1"));
  EXPECT_THAT(std::string((*fwd)->Forward({&bad_pos, 1}, logits).message()), ::testing::HasSubstr("position 8"));
  const std::vector<exec::BatchToken> three(3, exec::BatchToken{1, 0, 0, false});
  EXPECT_THAT(std::string((*fwd)->Forward(three, logits).message()), ::testing::HasSubstr("exceeds max_batch 2"));
}

}  // namespace
}  // namespace ferry
