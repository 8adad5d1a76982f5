// Copies and compute overlap on the sim device: a step takes about the
// longer of the two, not their sum. The copy bandwidth is set from a
// calibration run on this machine (copies at 0.5x and 2x the measured
// compute time), so the check is a ratio of times measured in one run, not
// a wall-clock threshold; without overlap the step would take 1.5x the
// longer and the check fails. Run alone (RUN_SERIAL): it measures time.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/backend/sim/sim_device.h"
#include "engine/exec/forward.h"
#include "engine/model/synth.h"
#include "tests/in_memory_model.h"

namespace ferry {
namespace {

using Built = testing::InMemoryModel;

Built Build() {
  model::SynthOptions o;
  o.n_layer = 12;
  o.n_embd = 512;
  o.n_head = 8;
  o.n_head_kv = 4;
  o.n_ff = 1024;
  o.n_vocab = 512;
  o.type = quant::TensorType::kQ8_0;
  return testing::BuildInMemory(o);
}

struct Measured {
  double step_s = 0, copy_s = 0, compute_s = 0;  // means per step
  uint64_t bytes = 0;
  // Per step: step / max(copy, compute) and step / (copy + compute). The
  // medians are checked: a burst of another process on this shared
  // machine stretches a step or two, not the schedule.
  double longer_ratio = 0, sum_ratio = 0;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Steps of 16 tokens of one sequence, `resident` layers resident (the head
// too) and the others streamed, ring depth 2; the first step (the ring's
// start) is left out.
Measured Steps(const model::Model& m, double h2d_gbps, int resident) {
  auto sim = backend::SimDevice::Create({.memory_bytes = 256 << 20, .h2d_gbps = h2d_gbps, .latency_us = 0}, 1);
  EXPECT_TRUE(sim.ok());
  exec::ForwardOptions o{.max_batch = 16, .n_seq = 1, .n_ctx = 256, .threads = 1};
  o.placement = {true, resident, 2};
  auto fwd = exec::Executor::Create(m, sim->get(), o);
  EXPECT_TRUE(fwd.ok()) << fwd.status();
  std::vector<float> logits(m.config.n_vocab);
  std::vector<exec::BatchToken> batch;
  std::mt19937 rng(5);
  exec::StreamStats first, previous;
  std::vector<double> longer, sum;
  constexpr int kSteps = 11;
  for (int s = 0; s < kSteps; ++s) {
    batch.clear();
    for (int t = 0; t < 16; ++t) batch.push_back({static_cast<int32_t>(rng() % 512), 0, s * 16 + t, t == 15});
    EXPECT_TRUE((*fwd)->Forward(batch, logits).ok());
    const exec::StreamStats& now = (*fwd)->stats();
    if (s == 0) {
      first = now;
    } else {
      const double step = now.step_s - previous.step_s, copy = now.copy_busy_s - previous.copy_busy_s,
                   compute = now.compute_s - previous.compute_s;
      longer.push_back(step / std::max(copy, compute));
      sum.push_back(step / (copy + compute));
    }
    previous = now;
  }
  const exec::StreamStats& all = (*fwd)->stats();
  Measured r;
  r.step_s = (all.step_s - first.step_s) / (kSteps - 1);
  r.copy_s = (all.copy_busy_s - first.copy_busy_s) / (kSteps - 1);
  r.compute_s = (all.compute_s - first.compute_s) / (kSteps - 1);
  r.bytes = (all.bytes_streamed - first.bytes_streamed) / (kSteps - 1);
  r.longer_ratio = Median(longer);
  r.sum_ratio = Median(sum);
  return r;
}

struct Regime {
  double copy_over_compute;  // the step's copy time over its compute time
  int resident;              // of the 12 layers
};

class Overlap : public ::testing::TestWithParam<Regime> {};

TEST_P(Overlap, StepTakesTheLongerOfCopyAndComputeNotTheirSum) {
  const Built b = Build();
  const Regime regime = GetParam();
  // The copy/compute ratio asked for is reached when compute runs as fast as
  // in the calibration; on a shared machine (or under a sanitizer) it may
  // not, and then the regime is measured again, up to three times. Only
  // the regime is retried: the ratios below are checked on the run that
  // reached it.
  Measured m;
  double gbps = 0;
  bool reached = false;
  for (int attempt = 0; attempt < 3 && !reached; ++attempt) {
    // Calibration: copies effectively free, compute as fast as this machine
    // (the second run: the first one also pays for faulting pages in).
    Steps(*b.model, 1000.0, regime.resident);
    const Measured cal = Steps(*b.model, 1000.0, regime.resident);
    ASSERT_GT(cal.compute_s, 0.0);
    ASSERT_GT(cal.bytes, 0u);
    gbps = cal.bytes / (regime.copy_over_compute * cal.compute_s) / 1e9;
    m = Steps(*b.model, gbps, regime.resident);
    reached = regime.copy_over_compute > 1 ? m.copy_s > 1.3 * m.compute_s : m.compute_s > 1.3 * m.copy_s;
  }
  SCOPED_TRACE(absl::StrCat("copy ", m.copy_s * 1e3, " ms, compute ", m.compute_s * 1e3, " ms, step ", m.step_s * 1e3,
                            " ms per step at ", gbps, " GB/s; median ratios ", m.longer_ratio, ", ",
                            m.sum_ratio));
  EXPECT_TRUE(reached) << "copy / compute " << regime.copy_over_compute << " was not reached in three tries";
  EXPECT_LE(m.longer_ratio, 1.1) << "median step / max(copy, compute)";
  EXPECT_LT(m.sum_ratio, 0.8) << "median step / (copy + compute): copies and compute ran one after the other";
}

// Every layer streamed, copy slower and faster than compute; and 9 of 12
// resident with copy the longer (the common case: a model a little too
// large), where the copies must run under the resident layers' compute.
INSTANTIATE_TEST_SUITE_P(CopyOverCompute, Overlap,
                         ::testing::Values(Regime{0.5, 0}, Regime{2.0, 0}, Regime{1.6, 9}), [](const auto& info) {
                           const Regime r = info.param;
                           return absl::StrCat(r.copy_over_compute > 1 ? "CopySlowerThanCompute"
                                                                        : "ComputeSlowerThanCopy",
                                               r.resident > 0 ? "With9Of12Resident" : "");
                         });

}  // namespace
}  // namespace ferry
