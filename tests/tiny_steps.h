// Tiny seeded models and a fixed sequence of steps over them, for the
// tests that compare backends and placements (stream_test, cuda_test).
#pragma once

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/backend/device.h"
#include "engine/exec/forward.h"
#include "engine/model/synth.h"
#include "engine/quant/types.h"

namespace ferry::testing {

// layers = 0: 4, or 6 for gemma3 (whose sixth layer is its first global one).
inline model::SynthOptions Tiny(const std::string& arch, quant::TensorType type, int layers = 0) {
  model::SynthOptions o;
  o.arch = arch;
  o.n_layer = layers > 0 ? layers : arch == "gemma3" ? 6 : 4;
  o.n_embd = 256;
  o.n_head = 4;
  o.n_head_kv = 2;
  o.n_ff = 512;
  o.n_vocab = 300;
  o.type = type;
  o.sliding_window = 4;
  o.seed = 11;
  return o;
}

// The tokens of RunSteps: two sequences, a prefill of `first` tokens of
// sequence 0 and 3 of sequence 1 in one step, then 3 decode steps of both.
struct StepTokens {
  std::vector<int32_t> seq[2];
};
inline StepTokens MakeStepTokens(int n_vocab, int first) {
  std::mt19937 rng(3);
  StepTokens t;
  for (int p = 0; p < first; ++p) t.seq[0].push_back(static_cast<int32_t>(rng() % n_vocab));
  for (int p = 0; p < 3; ++p) t.seq[1].push_back(static_cast<int32_t>(rng() % n_vocab));
  for (int step = 0; step < 3; ++step) {
    t.seq[0].push_back(static_cast<int32_t>(rng() % n_vocab));
    t.seq[1].push_back(static_cast<int32_t>(rng() % n_vocab));
  }
  return t;
}

// Runs those steps; the logits of every step (sequence 0's row, then
// sequence 1's), concatenated.
inline std::vector<float> RunSteps(const model::Model& m, backend::Device* device, const exec::ForwardOptions& options,
                                   int first = 5, stream::ScheduleFaults faults = {}) {
  auto fwd = exec::Executor::Create(m, device, options, faults);
  EXPECT_TRUE(fwd.ok()) << fwd.status();
  if (!fwd.ok()) return {};
  const int V = m.config.n_vocab;
  const StepTokens t = MakeStepTokens(V, first);
  std::vector<float> all, logits(2 * V);
  std::vector<exec::BatchToken> batch;
  for (int p = 0; p < first; ++p) batch.push_back({t.seq[0][p], 0, p, p == first - 1});
  for (int p = 0; p < 3; ++p) batch.push_back({t.seq[1][p], 1, p, p == 2});
  EXPECT_TRUE((*fwd)->Forward(batch, logits).ok());
  all.insert(all.end(), logits.begin(), logits.end());
  for (int step = 0; step < 3; ++step) {
    batch = {{t.seq[0][first + step], 0, first + step, true}, {t.seq[1][3 + step], 1, 3 + step, true}};
    EXPECT_TRUE((*fwd)->Forward(batch, logits).ok());
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

}  // namespace ferry::testing
