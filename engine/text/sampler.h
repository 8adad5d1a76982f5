// Turning logits into the next token: penalties, logit bias, top-k,
// typical-p, top-p, min-p and temperature, in that order, then a draw from a
// per-request generator (same seed -> same tokens), or argmax at
// temperature 0. Log-probabilities are those of the model's distribution
// after penalties and bias, before truncation and temperature.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace ferry::text {

struct SamplingParams {
  float temperature = 0.8f;       // 0 = greedy
  int top_k = 40;                 // 0 = off
  float top_p = 0.95f;            // 1 = off
  float min_p = 0.05f;            // 0 = off
  float typical_p = 1.0f;         // 1 = off
  float repetition_penalty = 1.0f;  // 1 = off; > 1 discourages seen tokens
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int penalty_last_n = 64;        // how many recent tokens the penalties look at
  std::vector<std::pair<int32_t, float>> logit_bias;
  uint64_t seed = 0;
  int top_logprobs = 0;           // alternatives reported per token, 0..20
  // Compute Sampled::logprob. The log-normalizer costs an exp per
  // vocabulary entry per token, so it is computed only when asked for (or
  // when top_logprobs > 0).
  bool logprobs = false;
};

// The largest |logit_bias| accepted.
constexpr float kMaxLogitBias = 100.0f;

// Checks every field; the error names the field and its allowed range.
absl::Status Validate(const SamplingParams& p, int n_vocab);

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct Sampled {
  int32_t token = -1;
  float logprob = 0.0f;  // computed with SamplingParams::logprobs or top_logprobs > 0
  std::vector<TokenLogprob> top;  // the top_logprobs most likely, best first
};

class Sampler {
 public:
  Sampler(const SamplingParams& params, int n_vocab);
  // Starts another request on the same scratch (its parameters, its seed):
  // the runtime keeps one sampler per slot, so a request holds no
  // vocabulary-sized memory until it is given a slot.
  void Reset(const SamplingParams& params);
  // Picks the next token. `logits` (n_vocab) is used as scratch and changed;
  // `history` holds the tokens so far (prompt and generated).
  Sampled Sample(std::span<float> logits, std::span<const int32_t> history);

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  // Scratch, sized once for the vocabulary: sampling allocates nothing per token.
  std::vector<std::pair<float, int32_t>> cand_, kept_;  // (logit, token)
  std::vector<double> probs_;
  std::vector<size_t> order_;
  std::vector<int32_t> counts_;
};

}  // namespace ferry::text
