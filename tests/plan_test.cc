// The planner on header-only files with the shapes of popular models: the
// byte accounting adds up, every plan fits its budget, and what cannot fit
// is refused with the amount missing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/model/config.h"
#include "engine/model/synth.h"
#include "engine/plan/planner.h"
#include "tests/synth_header.h"

namespace ferry::plan {
namespace {

using ::testing::HasSubstr;
constexpr uint64_t kGiB = 1ull << 30;

using Header = testing::SynthHeader;

Header Make(const std::string& preset, model::Mix mix, quant::TensorType type = quant::TensorType::kQ4_K) {
  absl::StatusOr<model::SynthOptions> o = model::Preset(preset);
  EXPECT_TRUE(o.ok()) << o.status();
  o->mix = mix;
  o->type = type;
  return testing::MakeSynthHeader(*o);
}

struct Case {
  const char* preset;
  model::Mix mix;
  quant::TensorType type;
};

class PopularModels : public ::testing::TestWithParam<Case> {};

TEST_P(PopularModels, AccountingAddsUpAndEveryPlanFitsItsBudget) {
  const Header h = Make(GetParam().preset, GetParam().mix, GetParam().type);
  uint64_t sum = 0;
  for (const gguf::TensorInfo& t : h.file->tensors()) sum += t.bytes;
  int previous_layers = -1;
  for (uint64_t gib : {6, 8, 12, 16, 24, 48, 80}) {
    const DeviceSpec d{absl::StrCat(gib, " GiB"), gib * kGiB, 500ull << 20};
    PlanRequest r;
    r.policy = Policy::kBudget;
    r.gpu_memory = gib * kGiB;
    absl::StatusOr<Plan> p = MakePlan(*h.file, h.config, r, d);
    if (!p.ok()) {
      EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted);
      continue;
    }
    EXPECT_EQ(p->model_bytes, sum);
    EXPECT_EQ(p->layer_bytes_total + p->head_bytes + (h.config.tied_output ? 0 : p->embedding_bytes), sum);
    EXPECT_LE(p->total, gib * kGiB);
    EXPECT_EQ(p->total, p->weights_resident + p->staging + p->kv_cache + p->workspace + p->overhead + p->margin);
    // Resident and pinned weights together are the layers and the head, each
    // once, plus what a unit's span copies between its matrices (norms the
    // file keeps among them, alignment padding): at most 1/8 more.
    const uint64_t weights = p->layer_bytes_total + p->head_bytes;
    const uint64_t pinned_weights = p->host_pinned - p->host_step_buffers;
    EXPECT_GE(p->weights_resident + pinned_weights, weights);
    EXPECT_LE(p->weights_resident + pinned_weights, weights + weights / 8);
    EXPECT_EQ(p->host_step_buffers, HostStepBufferBytes(h.config, r.max_batch, r.n_slots));
    EXPECT_GE(p->resident_layers, previous_layers) << "a bigger budget never holds fewer layers";
    previous_layers = p->resident_layers;
    if (p->resident_layers < p->n_layers) {
      // One more layer would not have fitted.
      PlanRequest more = r;
      more.policy = Policy::kLayers;
      more.gpu_layers = p->resident_layers + 1;
      EXPECT_EQ(MakePlan(*h.file, h.config, more, d).status().code(), absl::StatusCode::kResourceExhausted);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Presets, PopularModels,
    ::testing::Values(Case{"llama3.1-8b", model::Mix::kQ4_K_M, quant::TensorType::kQ4_K},
                      Case{"llama3.1-8b", model::Mix::kUniform, quant::TensorType::kQ8_0},
                      Case{"llama3.1-8b", model::Mix::kUniform, quant::TensorType::kF16},
                      Case{"llama3.1-70b", model::Mix::kQ4_K_M, quant::TensorType::kQ4_K},
                      Case{"qwen2.5-7b", model::Mix::kQ4_K_M, quant::TensorType::kQ4_K},
                      Case{"qwen2.5-7b", model::Mix::kUniform, quant::TensorType::kQ8_0},
                      Case{"gemma2-27b", model::Mix::kQ4_K_M, quant::TensorType::kQ4_K},
                      Case{"gemma2-9b", model::Mix::kUniform, quant::TensorType::kF16}),
    [](const auto& info) {
      std::string name = absl::StrCat(info.param.preset, "_",
                                      info.param.mix == model::Mix::kQ4_K_M ? std::string("q4_k_m")
                                                                            : std::string(quant::Info(info.param.type).name));
      for (char& c : name) {
        if (c == '.' || c == '-') c = '_';
      }
      return name;
    });

// Exactly `resident` layers stay, and the streamed ones are spread evenly:
// the gaps between consecutive streamed layers differ by at most one.
TEST(Planner, StreamedLayersAreSpreadEvenly) {
  for (int n = 1; n <= 80; ++n) {
    for (int resident = 0; resident <= n; ++resident) {
      std::vector<int> streamed;
      for (int l = 0; l < n; ++l) {
        if (!LayerResident(l, n, resident)) streamed.push_back(l);
      }
      ASSERT_EQ(static_cast<int>(streamed.size()), n - resident) << n << " layers, " << resident << " resident";
      int lo = n, hi = 0;
      for (size_t i = 1; i < streamed.size(); ++i) {
        lo = std::min(lo, streamed[i] - streamed[i - 1]);
        hi = std::max(hi, streamed[i] - streamed[i - 1]);
      }
      if (streamed.size() > 1) {
        EXPECT_LE(hi - lo, 1) << n << " layers, " << resident << " resident";
      }
    }
  }
  // 4 of 32 streamed: one every 8 layers, the last one last.
  std::vector<int> streamed;
  for (int l = 0; l < 32; ++l) {
    if (!LayerResident(l, 32, 28)) streamed.push_back(l);
  }
  EXPECT_EQ(streamed, (std::vector<int>{7, 15, 23, 31}));
}

// Resident decode is predicted at the measured kernel efficiency of each
// weight type, not at the copy bandwidth: the same model in q8_0 and f16,
// all resident, memory-bound at batch 1, differ by the ratio of their
// bytes over KernelEfficiency (norms, in f32 either way, move it < 1 %),
// each unit plus the fixed kUnitOverheadS.
TEST(Planner, ResidentDecodeAtTheKernelsMeasuredEfficiency) {
  const Header q8 = Make("llama3.1-8b", model::Mix::kUniform, quant::TensorType::kQ8_0);
  const Header f16 = Make("llama3.1-8b", model::Mix::kUniform, quant::TensorType::kF16);
  const DeviceSpec card{"big card", 80 * kGiB, 0, 50.0, 10.0, 1000.0, 1e6};
  PlanRequest r;
  r.n_ctx = 256;
  absl::StatusOr<Plan> a = MakePlan(*q8.file, q8.config, r, card), b = MakePlan(*f16.file, f16.config, r, card);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->resident_layers, 32);
  ASSERT_EQ(b->resident_layers, 32);
  const Prediction pa = Predict(*a, card, {}, 1), pb = Predict(*b, card, {}, 1);
  EXPECT_EQ(pa.copy_s, 0.0);
  const double bytes_a = a->weights_resident, bytes_b = b->weights_resident;
  const double want = (bytes_a / KernelEfficiency(quant::TensorType::kQ8_0)) /
                      (bytes_b / KernelEfficiency(quant::TensorType::kF16));
  const double overhead = 33 * kUnitOverheadS;  // 32 layers and the head, each
  EXPECT_NEAR((pa.compute_s - overhead) / (pb.compute_s - overhead), want, 0.01 * want);
  EXPECT_NEAR(pa.compute_s, bytes_a / 0.79 / 1000e9 + 33 * kUnitOverheadS, 0.01 * pa.compute_s);
}

// Prefill in steps of 64 tokens takes the GEMM path: every parameter costs
// its stored bytes plus the f32 tile's traffic at the full bandwidth (not
// the decode kernels' share), against the TF32 rate (half the profile's);
// steps of up to kMatVecMaxTokens are decode products. The CPU side is the
// same roofline at 64 tokens a step. Decode steps of many tokens meet the
// decode kernels' operation rate instead.
TEST(Planner, PrefillRooflineThroughTheTile) {
  const Header q8 = Make("llama3.1-8b", model::Mix::kUniform, quant::TensorType::kQ8_0);
  const DeviceSpec card{"big card", 80 * kGiB, 0, 50.0, 10.0, 1000.0, 100.0};
  PlanRequest r;
  r.n_ctx = 256;
  absl::StatusOr<Plan> a = MakePlan(*q8.file, q8.config, r, card);
  ASSERT_TRUE(a.ok());
  uint64_t params = a->head_params;
  for (uint64_t n : a->layer_params) params += n;
  const Prediction pf = PredictPrefill(*a, card, {}, 64);
  const double overhead = 33 * kUnitOverheadS;
  const double bytes = (a->weights_resident + kTileBytesPerParam * params) / 1000e9;
  const double flops = 2.0 * params * 64 / 50e12;  // 100 TFLOPS bf16, TF32 at half
  EXPECT_NEAR(pf.compute_s, std::max(bytes, flops) + overhead, 0.02 * pf.compute_s);
  EXPECT_NEAR(pf.tokens_per_s, 64 / pf.step_s, 1e-6 * pf.tokens_per_s);
  EXPECT_GT(pf.tokens_per_s, Predict(*a, card, {}, 1).tokens_per_s);
  // At most kMatVecMaxTokens tokens a step: the decode products.
  EXPECT_DOUBLE_EQ(PredictPrefill(*a, card, {}, 8).compute_s, Predict(*a, card, {}, 8).compute_s);
  // Decode products of many tokens are bound by the kernels' integer
  // rate, not the bytes (32 tokens: 2 x params x 32 / kDecodeOpsPerS).
  const Prediction d32 = Predict(*a, card, {}, 32);
  EXPECT_NEAR(d32.compute_s, 2.0 * params * 32 / kDecodeOpsPerS + overhead, 0.02 * d32.compute_s);
}

TEST(Planner, KvCacheOfLlama31_8B) {
  // Llama 3.1 8B keeps 32 layers x 8 KV heads x 128 x (k and v) x 2 bytes =
  // 128 KiB per token in an f16 cache.
  const Header h = Make("llama3.1-8b", model::Mix::kQ4_K_M);
  PlanRequest r;
  r.n_ctx = 4096;
  r.n_slots = 2;
  absl::StatusOr<Plan> p = MakePlan(*h.file, h.config, r, {"80 GiB", 80 * kGiB, 0});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->kv_cache, 4096ull * 2 * 128 * 1024);
  EXPECT_EQ(p->resident_layers, 32);
  EXPECT_EQ(p->staging, 0u) << "nothing streamed, no ring";
}

TEST(Planner, ExactLayersAndClearRefusals) {
  const Header h = Make("gemma2-27b", model::Mix::kQ4_K_M);
  const DeviceSpec card{"8 GiB card", 8 * kGiB, 400ull << 20};
  PlanRequest r;
  r.policy = Policy::kLayers;
  r.gpu_layers = 10;
  absl::StatusOr<Plan> p = MakePlan(*h.file, h.config, r, card);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->resident_layers, 10);
  EXPECT_TRUE(p->head_resident);
  uint64_t largest_streamed = 0;
  for (int l = 10; l < 46; ++l) largest_streamed = std::max(largest_streamed, p->layer_device_bytes[l]);
  EXPECT_EQ(p->staging, 2 * largest_streamed);

  r.gpu_layers = 40;
  absl::Status s = MakePlan(*h.file, h.config, r, card).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("missing. At most"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("smaller --ctx"));
  r.gpu_layers = 47;
  EXPECT_THAT(std::string(MakePlan(*h.file, h.config, r, card).status().message()), HasSubstr("the model has 46 layers"));

  // A context too large for anything: the KV cache alone exceeds the card.
  r.policy = Policy::kAuto;
  r.n_ctx = 1 << 20;
  s = MakePlan(*h.file, h.config, r, card).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("even with every layer streamed, the staging ring, KV cache and workspace need"));
}

// A device whose memory is the host's (cpu) reads every unit where it lies:
// every unit resident whatever the policy, strategy or memory, nothing
// streamed; the same figures without host_memory (a card) stream.
TEST(Planner, HostMemoryDeviceKeepsEveryUnitResident) {
  const Header h = Make("gemma2-27b", model::Mix::kQ4_K_M);
  DeviceSpec host{"host", 8 * kGiB, 0};
  host.host_memory = true;
  for (Policy policy : {Policy::kAuto, Policy::kLayers, Policy::kBudget}) {
    for (Strategy strategy : {Strategy::kStream, Strategy::kCpu, Strategy::kMixed}) {
      PlanRequest r;
      r.policy = policy;
      r.gpu_layers = 3;
      r.gpu_memory = kGiB;
      r.strategy = strategy;
      absl::StatusOr<Plan> p = MakePlan(*h.file, h.config, r, host);
      ASSERT_TRUE(p.ok()) << p.status();
      EXPECT_EQ(p->placement.count(Home::kResident), 47);
      EXPECT_EQ(p->resident_layers, 46);
      EXPECT_TRUE(p->head_resident);
      EXPECT_EQ(p->ring_depth, 0);
      EXPECT_EQ(p->staging, 0u);
    }
  }
  host.host_memory = false;
  absl::StatusOr<Plan> card = MakePlan(*h.file, h.config, PlanRequest(), host);
  ASSERT_TRUE(card.ok()) << card.status();
  EXPECT_LT(card->resident_layers, 46) << "15 GiB of weights do not fit a card of 8 GiB";
}

TEST(Planner, ReadsAHeaderOnlyFileOnDisk) {
  absl::StatusOr<model::SynthOptions> o = model::Preset("qwen2.5-7b");
  ASSERT_TRUE(o.ok());
  const std::string path = (std::filesystem::temp_directory_path() / "ferry_plan_header.gguf").string();
  ASSERT_TRUE(model::WriteSyntheticModel(path, *o, nullptr, /*header_only=*/true).ok());
  EXPECT_LT(std::filesystem::file_size(path), 8u << 20) << "no weights in a header-only file";
  // A normal open refuses it (the data is missing); a header-only open plans it.
  EXPECT_FALSE(gguf::File::Open(path).ok());
  auto f = gguf::File::Open(path, {.header_only = true});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->tensors().front().data, nullptr);
  auto c = model::LoadConfig(**f);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(c->qkv_bias);
  EXPECT_TRUE(MakePlan(**f, *c, {}, {"8 GiB", 8 * kGiB, 400ull << 20}).ok());
}

// Issue 17, item 6: KvLayerBytes multiplied four ints in 64 bits; a huge
// context x slots wrapped around to a small KV cache that planned as if it
// fit. Sizes past 2^60 bytes are refused with what was asked for.
TEST(Planner, SizesBeyond64BitsAreRefusedNotWrapped) {
  const Header h = Make("llama3.1-70b", model::Mix::kQ4_K_M);
  const DeviceSpec d{"80 GiB", 80 * kGiB, 500ull << 20};
  PlanRequest r;
  r.n_ctx = 1 << 30;
  r.n_slots = 1 << 30;  // 2^60 positions x 1024 values x 2 bytes: 2^71 bytes a layer
  absl::StatusOr<Plan> p = MakePlan(*h.file, h.config, r, d);
  ASSERT_FALSE(p.ok()) << "planned a KV cache of " << p->kv_cache << " bytes";
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("the KV cache of 80 layers x 1073741824 positions"));
  EXPECT_EQ(KvLayerBytes(1 << 30, 1 << 30, 1024, 2), kUnplannableBytes);
  EXPECT_EQ(KvLayerBytes(4096, 8, 1024, 2), 4096ull * 8 * 1024 * 2);
  // The attention scores of one step: batch x heads x context.
  r.n_ctx = 1 << 30;
  r.n_slots = 1;
  r.max_batch = 1 << 30;
  p = MakePlan(*h.file, h.config, r, d);
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("beyond any device"));
  // At the largest sizes the Plan RPC takes, the plan is exact and refused for want of memory.
  r.n_ctx = 1 << 20;
  r.n_slots = 4096;
  r.max_batch = 65536;
  r.kv_bytes_per_elem = 4;
  p = MakePlan(*h.file, h.config, r, d);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kResourceExhausted) << p.status();
}
}  // namespace
}  // namespace ferry::plan

namespace ferry::plan {
namespace {

// The mixed plan against a brute-force search over every placement (each
// unit resident, streamed or on the CPU: 3^(n+1) of them) with the same
// byte accounting (Plan::Place) and speed model (Predict): what the
// planner picks fits, and is within 5 % of the fastest that fits when the
// layers are alike, within 15 % in a Q4_K_M mix. The planner weighs how
// many layers go where and spreads the resident and CPU layers evenly; the
// speed model, which follows the staging ring step by step, also rewards
// some orders over others (streamed layers bunched before the resident
// ones, in this small model: up to 3.5 % and 12 % faster), and in the mix
// the larger layers (those with q6_K tensors) kept resident.
TEST(Planner, MixedSplitAgainstEveryPlacement) {
  for (model::Mix mix : {model::Mix::kUniform, model::Mix::kQ4_K_M}) {
    model::SynthOptions o;
    o.arch = "llama";
    o.n_layer = 6;
    o.n_embd = 1024;
    o.n_head = 8;
    o.n_head_kv = 4;
    o.n_ff = 2816;
    o.n_vocab = 8192;
    o.mix = mix;
    o.type = mix == model::Mix::kUniform ? quant::TensorType::kQ8_0 : quant::TensorType::kQ4_K;
    const Header h = testing::MakeSynthHeader(o);
    ASSERT_NE(h.file, nullptr);
    const model::ModelConfig& c = h.config;
    DeviceSpec card = *backend::FindGpuProfile("rtx4060-8g");
    card.overhead_bytes = 0;
    // Priced by one roofline, and by per-type curves as MeasureHost makes
    // them (made up here: a cost per byte that grows with the tokens).
    HostSpec curved{.memory_gbps = 30, .gflops = 300, .kernel_s = 5e-6};
    for (quant::TensorType t : {quant::TensorType::kQ8_0, quant::TensorType::kQ4_K, quant::TensorType::kQ6_K}) {
      HostCurve curve{.type = t, .layout = HostLayout::kGrouped, .seconds_per_byte = {}};
      for (size_t i = 0; i < kHostTokens.size(); ++i) curve.seconds_per_byte[i] = 2.5e-11 * (1 + 0.6 * kHostTokens[i]);
      curved.curves.push_back(curve);
    }
    for (const HostSpec& host : {HostSpec{.memory_gbps = 30, .gflops = 300}, curved}) {
      for (uint64_t budget_mib : {110, 130, 150}) {
        for (int batch : {1, 8, 32}) {
          SCOPED_TRACE(absl::StrCat(mix == model::Mix::kUniform ? "q8_0" : "q4_K_M", ", ", budget_mib, " MiB, batch ",
                                    batch, host.curves.empty() ? ", roofline" : ", curves"));
          card.memory_bytes = budget_mib << 20;
          PlanRequest r{.n_ctx = 256, .n_slots = 1, .max_batch = 32, .strategy = Strategy::kMixed, .batch = batch,
                        .host = host};
          absl::StatusOr<Plan> chosen = MakePlan(*h.file, c, r, card);
          ASSERT_TRUE(chosen.ok()) << chosen.status();
          const double chosen_s = Predict(*chosen, card, host, batch).step_s;
          Plan trial = *chosen;
          double best = 1e30;
          std::string best_homes;
          const int units = c.n_layer + 1;
          int count = 1;
          for (int i = 0; i < units; ++i) count *= 3;
          for (int code = 0; code < count; ++code) {
            std::vector<Home> homes;
            for (int u = 0, x = code; u < units; ++u, x /= 3) homes.push_back(static_cast<Home>(x % 3));
            trial.Place(*Placement(homes, r.ring_depth).Resolve(c.n_layer));
            if (trial.total > trial.budget) continue;
            const double t = Predict(trial, card, host, batch).step_s;
            if (t < best) {
              best = t;
              best_homes.clear();
              for (Home h : homes) best_homes += HomeName(h)[0];
            }
          }
          EXPECT_LE(chosen->total, chosen->budget);
          EXPECT_LE(chosen_s, best * (mix == model::Mix::kUniform ? 1.05 : 1.15)) << "the planner's " << chosen->placement.Describe() << " ("
                                           << chosen->resident_layers << " resident) vs the best of every placement, "
                                           << best_homes;
          std::printf("%s %llu MiB batch %d: planner %.3f ms (%d resident, %d on the CPU), best of all %.3f ms\n",
                      mix == model::Mix::kUniform ? "q8_0" : "q4_K_M", static_cast<unsigned long long>(budget_mib),
                      batch, chosen_s * 1e3, chosen->resident_layers, chosen->cpu_layers, best * 1e3);
        }
      }
    }
  }
}

// The ring's pipeline, worked by hand: two streamed layers (copies of 2)
// and a head of 10 computed last. With one slot a layer's copy waits for
// the layer before it to be computed, and the next step's first copy for
// the last streamed layer: 14 a step, more than max(copy 4, compute 12).
// With two slots the next step's copies hide under the head: 12.
TEST(Planner, TheRingsPipelineWorkedByHand) {
  EXPECT_DOUBLE_EQ(PipelinedStep({1, 1, 10}, {2, 2, 0}, 1), 14);
  EXPECT_DOUBLE_EQ(PipelinedStep({1, 1, 10}, {2, 2, 0}, 2), 12);
  EXPECT_DOUBLE_EQ(PipelinedStep({1, 1, 10}, {0, 0, 0}, 2), 12) << "nothing streamed: the sum";
  EXPECT_DOUBLE_EQ(PipelinedStep({0.5, 0.5, 0.5}, {5, 5, 0}, 2), 10) << "copy-bound: the copies back to back";
}

TEST(HostSpec, ACurveIsLinearBetweenItsTokenCountsAndProportionalPastThem) {
  HostCurve c;
  for (size_t i = 0; i < kHostTokens.size(); ++i) c.seconds_per_byte[i] = 1.0 + i;  // 1 at 1 token ... 7 at 64
  EXPECT_DOUBLE_EQ(c.SecondsPerByte(1), 1.0);
  EXPECT_DOUBLE_EQ(c.SecondsPerByte(8), 4.0);
  EXPECT_DOUBLE_EQ(c.SecondsPerByte(12), 4.5);   // halfway from 8 (4) to 16 (5)
  EXPECT_DOUBLE_EQ(c.SecondsPerByte(3), 2.5);    // halfway from 2 (2) to 4 (3)
  EXPECT_DOUBLE_EQ(c.SecondsPerByte(64), 7.0);
  EXPECT_DOUBLE_EQ(c.SecondsPerByte(128), 14.0);  // compute-bound: in proportion
}

TEST(HostSpec, AProductIsItsCurveOrTheSlowerOfReadingAndArithmetic) {
  HostSpec h{.memory_gbps = 10, .gflops = 100};
  HostCurve c{.type = quant::TensorType::kQ8_0, .layout = HostLayout::kGrouped, .seconds_per_byte = {}};
  c.seconds_per_byte.fill(0.05e-9);  // 20 GB/s up to 32 tokens, 5 GB/s at 64
  c.seconds_per_byte.back() = 0.2e-9;
  h.curves.push_back(c);
  const uint64_t bytes = 1'000'000'000, params = 941'176'470;
  EXPECT_DOUBLE_EQ(h.ProductSeconds(quant::TensorType::kQ8_0, HostLayout::kGrouped, bytes, params, 1), 0.05)
      << "the curve holds the memory's part: memory_gbps is for types without one";
  EXPECT_DOUBLE_EQ(h.ProductSeconds(quant::TensorType::kQ8_0, HostLayout::kGrouped, bytes, params, 64), 0.2);
  EXPECT_DOUBLE_EQ(h.ProductSeconds(quant::TensorType::kQ4_K, HostLayout::kGrouped, bytes, params, 1), 0.1)
      << "no curve, one token: 1 GB at 10 GB/s";
  EXPECT_DOUBLE_EQ(h.ProductSeconds(quant::TensorType::kQ4_K, HostLayout::kGrouped, bytes, params, 64),
                   2.0 * params * 64 / 100e9)
      << "no curve for the type: the arithmetic rate";
  EXPECT_DOUBLE_EQ(h.ProductSeconds(quant::TensorType::kQ8_0, HostLayout::kFile, bytes, params, 64),
                   2.0 * params * 64 / 100e9)
      << "no curve for the layout either";
}

TEST(HostSpec, ProbesAreEachTypesWidestMatrix) {
  const Header h = Make("llama3.1-8b", model::Mix::kQ4_K_M);
  std::map<quant::TensorType, int64_t> widest;  // from the file's own tensor list, not the unit table
  for (const gguf::TensorInfo& t : h.file->tensors()) {
    if (t.n_dims == 2 && t.name != "token_embd.weight") widest[t.type] = std::max<int64_t>(widest[t.type], t.dims[0]);
  }
  const std::vector<HostProbe> probes = HostProbesFor(*h.file, h.config);
  ASSERT_EQ(probes.size(), widest.size());
  for (const HostProbe& p : probes) EXPECT_EQ(p.cols, widest[p.type]) << quant::Info(p.type).name;
}

// The kernels measured as they run: in the grouped layout a step of 64
// tokens costs far less than 64 steps of one (each weight is read once for
// all of them; about 8 on this project's VM), and the file's layout is
// measured apart from it. Ratios of timings in one run only.
// A header may claim any width: one no layer has is priced by the q8_0
// figures, not measured (a buffer of 2^30-wide rows would not fit).
TEST(HostSpec, AnAbsurdWidthIsNotMeasured) {
  const HostSpec h = MeasureHost(2, {{quant::TensorType::kQ4_K, int64_t{1} << 30}}, 0, false, HostLayer{});
  EXPECT_TRUE(h.curves.empty());
  EXPECT_GT(h.memory_gbps, 0);
}

TEST(HostSpec, MeasuredOnFerrysKernels) {
  const std::vector<HostProbe> probes = {{quant::TensorType::kQ8_0, 2048}, {quant::TensorType::kQ4_K, 2048}};
  const HostLayer layer{.n_embd = 1024, .n_ff = 2816, .n_head = 8, .n_head_kv = 4, .head_dim = 128, .rope_dims = 128,
                        .activation = model::Activation::kSilu, .position = 64};
  const HostSpec h = MeasureHost(2, probes, 0, true, layer);
  EXPECT_GT(h.layer_rest_s[0], 0);
  EXPECT_GT(h.layer_rest_s[1], h.layer_rest_s[0]) << "16 tokens do more than one";
  EXPECT_GT(h.memory_gbps, 0);
  EXPECT_GT(h.gflops, 0);
  EXPECT_GT(h.kernel_s, 0);
  ASSERT_EQ(h.curves.size(), 4u);
  for (const HostCurve& c : h.curves) {
    SCOPED_TRACE(absl::StrCat(quant::Info(c.type).name, c.layout == HostLayout::kFile ? " file" : " grouped"));
    for (double s : c.seconds_per_byte) EXPECT_TRUE(s > 0 && std::isfinite(s)) << s;
    // (The file's layout has no many-token kernel: 64 tokens cost it about
    // 80 one-token steps on this project's VM.)
    if (c.layout == HostLayout::kGrouped) {
      EXPECT_LT(c.SecondsPerByte(64), 32 * c.SecondsPerByte(1));
    }
  }
}

}  // namespace
}  // namespace ferry::plan
