// exec::MeasureHost: the model's layers sorted into kinds, each kind run
// whole on the host's kernels, and the planner pricing a layer by its kind's
// curve. Timings are compared only with timings of the same run.
#include "engine/exec/measure_host.h"

#include <cmath>
#include <map>
#include <set>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "engine/backend/device_spec.h"
#include "engine/model/synth.h"
#include "engine/model/unit_tensors.h"
#include "engine/plan/planner.h"
#include "tests/synth_header.h"

namespace ferry::exec {
namespace {

using testing::MakeSynthHeader;
using testing::SynthHeader;

// A small llama in llama.cpp's Q4_K_M mix, which gives some layers q6_K
// for attn_v and ffn_down.
model::SynthOptions SmallQ4KMix() {
  model::SynthOptions o;
  o.n_layer = 8;
  o.n_ff = 768;  // k-quants' blocks are 256 wide
  o.mix = model::Mix::kQ4_K_M;
  o.type = quant::TensorType::kQ4_K;
  return o;
}

// Layer l's matrices' types, from the file's own tensor list.
std::vector<quant::TensorType> TypesOf(const SynthHeader& h, int l) {
  std::vector<quant::TensorType> out;
  for (const gguf::TensorInfo& t : h.file->tensors()) {
    if (t.n_dims == 2 && t.name.rfind(absl::StrCat("blk.", l, "."), 0) == 0) out.push_back(t.type);
  }
  return out;
}

void ExpectSane(const plan::HostLayerCurve& c) {
  for (double s : c.seconds) EXPECT_TRUE(s > 0 && std::isfinite(s)) << s;
  // A step of 64 tokens reads each weight once for all of them.
  EXPECT_LT(c.Seconds(64), 64 * c.Seconds(1));
}

// The Q4_K_M mix's two kinds of layer, each measured once, every layer
// pointed at its own.
TEST(MeasureHost, LayersOfOneKindShareACurve) {
  const SynthHeader h = MakeSynthHeader(SmallQ4KMix());
  const plan::HostSpec host = MeasureHost(*h.file, h.config, 2, 0, false, 64);
  ASSERT_EQ(host.layer_kind.size(), 8u);
  std::set<int> kinds;
  for (int a = 0; a < 8; ++a) {
    ASSERT_GE(host.layer_kind[a], 0) << "layer " << a;
    kinds.insert(host.layer_kind[a]);
    for (int b = 0; b < 8; ++b) {
      EXPECT_EQ(host.layer_kind[a] == host.layer_kind[b], TypesOf(h, a) == TypesOf(h, b)) << a << " " << b;
    }
  }
  EXPECT_EQ(kinds.size(), 2u) << "the mix's two kinds of layer";
  ASSERT_EQ(host.layer_curves.size(), kinds.size()) << "one curve a kind, in the grouped layout only";
  for (int l = 0; l < 8; ++l) {
    const plan::HostLayerCurve* c = host.LayerCurve(l, plan::HostLayout::kGrouped);
    ASSERT_NE(c, nullptr);
    EXPECT_EQ(c->kind, host.layer_kind[l]);
    EXPECT_EQ(host.LayerCurve(l, plan::HostLayout::kFile), nullptr);
    ExpectSane(*c);
  }
  EXPECT_EQ(host.LayerCurve(8, plan::HostLayout::kGrouped), nullptr) << "the head is priced by its type";
}

// Gemma 2's sliding layers read at most their window: past it they are a
// kind of their own; within it they cost what a global layer does.
TEST(MeasureHost, SlidingLayersAreAKindPastTheirWindow) {
  model::SynthOptions o;
  o.arch = "gemma2";
  o.n_layer = 4;
  o.sliding_window = 32;
  const SynthHeader h = MakeSynthHeader(o);
  ASSERT_TRUE(h.config.LayerIsSliding(0));
  ASSERT_FALSE(h.config.LayerIsSliding(1));
  const plan::HostSpec past = MeasureHost(*h.file, h.config, 2, 0, false, 256);
  EXPECT_NE(past.layer_kind[0], past.layer_kind[1]);
  EXPECT_EQ(past.layer_kind[0], past.layer_kind[2]);
  EXPECT_EQ(past.layer_curves.size(), 2u);
  const plan::HostSpec within = MeasureHost(*h.file, h.config, 2, 0, false, 16);
  EXPECT_EQ(within.layer_kind, std::vector<int>(4, 0));
  EXPECT_EQ(within.layer_curves.size(), 1u);
}

// The sim device computes on the file's layout: measured too when asked,
// and dearer than the grouped layout at many tokens (it has no many-token
// kernel).
TEST(MeasureHost, TheFilesLayoutWhenAsked) {
  model::SynthOptions o;
  o.n_layer = 2;
  const SynthHeader h = MakeSynthHeader(o);
  const plan::HostSpec host = MeasureHost(*h.file, h.config, 2, 0, true, 64);
  const plan::HostLayerCurve* grouped = host.LayerCurve(0, plan::HostLayout::kGrouped);
  const plan::HostLayerCurve* file = host.LayerCurve(0, plan::HostLayout::kFile);
  ASSERT_NE(grouped, nullptr);
  ASSERT_NE(file, nullptr);
  ExpectSane(*file);
  EXPECT_GT(file->Seconds(64), grouped->Seconds(64));
}

// The planner prices a layer on the CPU by its kind's curve: doubling one
// kind's curve adds that curve once for each layer of the kind to a step
// with every layer on the CPU.
TEST(MeasureHost, ThePlannerPricesALayerByItsKind) {
  const SynthHeader h = MakeSynthHeader(SmallQ4KMix());
  plan::PlanRequest r;
  r.policy = plan::Policy::kLayers;
  r.gpu_layers = 0;
  r.strategy = plan::Strategy::kCpu;
  r.n_ctx = 128;
  r.host = MeasureHost(*h.file, h.config, 2, 0, false, 64);
  ASSERT_FALSE(r.host.layer_curves.empty());
  const absl::StatusOr<backend::DeviceSpec> device = backend::FindGpuProfile("rtx4060-8g");
  ASSERT_TRUE(device.ok());
  const absl::StatusOr<plan::Plan> p = plan::MakePlan(*h.file, h.config, r, *device);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_EQ(p->placement.layers(plan::Home::kCpu), 8);
  plan::HostSpec doubled = r.host;
  for (double& s : doubled.layer_curves[0].seconds) s *= 2;
  int of_kind = 0;
  for (int k : r.host.layer_kind) of_kind += k == doubled.layer_curves[0].kind;
  for (int batch : {1, 8, 20}) {
    const double before = plan::Predict(*p, *device, r.host, batch).step_s;
    const double after = plan::Predict(*p, *device, doubled, batch).step_s;
    EXPECT_NEAR(after - before, of_kind * r.host.layer_curves[0].Seconds(batch), 1e-9 * after) << "batch " << batch;
  }
}

// A header may claim any width: a layer that would not fit is not
// measured (priced by its parts), and nothing is allocated for it.
TEST(MeasureHost, AnAbsurdLayerIsNotMeasured) {
  model::SynthOptions o;
  o.n_layer = 2;
  const SynthHeader h = MakeSynthHeader(o);
  model::ModelConfig huge = h.config;
  huge.n_ff = 1 << 30;
  const plan::HostSpec host = MeasureHost(*h.file, huge, 2, 0, false, 64);
  EXPECT_TRUE(host.layer_curves.empty());
  EXPECT_EQ(host.LayerCurve(0, plan::HostLayout::kGrouped), nullptr);
}

}  // namespace
}  // namespace ferry::exec
