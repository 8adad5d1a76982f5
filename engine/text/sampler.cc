#include "engine/text/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace ferry::text {
namespace {

absl::Status Range(const char* field, double v, double lo, double hi, bool lo_open = false) {
  if (std::isnan(v) || v < lo || v > hi || (lo_open && v == lo)) {
    return absl::InvalidArgumentError(absl::StrCat(field, " = ", v, " is outside ", lo_open ? "(" : "[", lo, ", ",
                                                   hi, "]"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Validate(const SamplingParams& p, int n_vocab) {
  for (absl::Status s : {Range("temperature", p.temperature, 0, 100), Range("top_k", p.top_k, 0, n_vocab),
                         Range("top_p", p.top_p, 0, 1, true), Range("min_p", p.min_p, 0, 1),
                         Range("typical_p", p.typical_p, 0, 1, true),
                         Range("repetition_penalty", p.repetition_penalty, 0, 100, true),
                         Range("presence_penalty", p.presence_penalty, -100, 100),
                         Range("frequency_penalty", p.frequency_penalty, -100, 100),
                         Range("penalty_last_n", p.penalty_last_n, 0, 1 << 20), Range("top_logprobs", p.top_logprobs, 0, 20)}) {
    if (!s.ok()) return s;
  }
  for (const auto& [token, bias] : p.logit_bias) {
    if (token < 0 || token >= n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias token ", token, " is outside the vocabulary [0, ",
                                                     n_vocab, ")"));
    }
    if (std::isnan(bias)) return absl::InvalidArgumentError(absl::StrCat("logit_bias for token ", token, " is NaN"));
    // OpenAI's bound: +-100 already forces or bans a token (logits are tens
    // at most), and keeps every biased logit finite, so the log-normalizer
    // and the draw never see inf - inf.
    if (!(std::fabs(bias) <= kMaxLogitBias)) {
      return absl::InvalidArgumentError(absl::StrCat("logit_bias for token ", token, " = ", bias, " is outside [-",
                                                     kMaxLogitBias, ", ", kMaxLogitBias, "]"));
    }
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingParams& params, int n_vocab) : p_(params), rng_(params.seed) {
  cand_.reserve(n_vocab);
  kept_.reserve(n_vocab);
  probs_.reserve(n_vocab);
  order_.reserve(n_vocab);
  counts_.assign(n_vocab, 0);
}

void Sampler::Reset(const SamplingParams& params) {
  p_ = params;
  rng_.seed(params.seed);
  // counts_ is all zeros between calls (Sample clears what it counted).
}

Sampled Sampler::Sample(std::span<float> logits, std::span<const int32_t> history) {
  const int n = static_cast<int>(logits.size());
  // Penalties over the recent window.
  const size_t first = history.size() > static_cast<size_t>(p_.penalty_last_n) ? history.size() - p_.penalty_last_n : 0;
  const std::span<const int32_t> recent = history.subspan(first);
  if (p_.repetition_penalty != 1.0f || p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f) {
    for (int32_t t : recent) {
      if (t >= 0 && t < n) ++counts_[t];
    }
    for (int32_t t : recent) {
      if (t < 0 || t >= n || counts_[t] == 0) continue;
      float& l = logits[t];
      l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
      l -= p_.frequency_penalty * counts_[t] + p_.presence_penalty;
      counts_[t] = 0;  // each distinct token once
    }
  }
  for (const auto& [t, bias] : p_.logit_bias) logits[t] += bias;

  // Log-probabilities of the (penalized) model distribution, when asked for.
  float log_z = 0.0f;
  if (p_.logprobs || p_.top_logprobs > 0) {
    float max = -INFINITY;
    for (float l : logits) max = std::max(max, l);
    double sum = 0;
    for (float l : logits) sum += std::exp(static_cast<double>(l - max));
    log_z = max + static_cast<float>(std::log(sum));
  }
  Sampled out;
  if (p_.top_logprobs > 0) {
    cand_.clear();
    for (int i = 0; i < n; ++i) cand_.emplace_back(logits[i], i);
    const int k = std::min(p_.top_logprobs, n);
    std::partial_sort(cand_.begin(), cand_.begin() + k, cand_.end(), std::greater<>());
    for (int i = 0; i < k; ++i) out.top.push_back({cand_[i].second, cand_[i].first - log_z});
  }

  if (p_.temperature <= 0.0f) {
    out.token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.logprob = logits[out.token] - log_z;
    return out;
  }

  cand_.clear();
  for (int i = 0; i < n; ++i) cand_.emplace_back(logits[i], i);
  size_t keep = cand_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < keep) {
    // Only the best k can be drawn: select and order just those, the same
    // prefix a full sort gives ((logit, id) pairs have no ties), in O(n)
    // instead of O(n log n) per token (32000 pairs per sequence per step).
    keep = p_.top_k;
    std::nth_element(cand_.begin(), cand_.begin() + (keep - 1), cand_.end(), std::greater<>());
    std::sort(cand_.begin(), cand_.begin() + keep, std::greater<>());
  } else {
    std::sort(cand_.begin(), cand_.end(), std::greater<>());
  }
  // Probabilities of the kept candidates at temperature 1, best first.
  auto probs = [&](size_t k, std::vector<double>* pr) {
    pr->resize(k);
    double s = 0;
    for (size_t i = 0; i < k; ++i) s += (*pr)[i] = std::exp(static_cast<double>(cand_[i].first - cand_[0].first));
    for (double& v : *pr) v /= s;
  };
  std::vector<double>& pr = probs_;
  if (p_.typical_p < 1.0f) {
    // Keep the tokens whose surprise is closest to the entropy, up to mass typical_p.
    probs(keep, &pr);
    double entropy = 0;
    for (double v : pr) entropy -= v > 0 ? v * std::log(v) : 0;
    std::vector<size_t>& order = order_;
    order.resize(keep);
    for (size_t i = 0; i < keep; ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return std::fabs(-std::log(pr[a]) - entropy) < std::fabs(-std::log(pr[b]) - entropy);
    });
    double mass = 0;
    size_t k = 0;
    while (k < keep && mass < p_.typical_p) mass += pr[order[k++]];
    std::vector<std::pair<float, int32_t>>& kept = kept_;
    kept.clear();
    for (size_t i = 0; i < k; ++i) kept.push_back(cand_[order[i]]);
    std::sort(kept.begin(), kept.end(), std::greater<>());
    std::copy(kept.begin(), kept.end(), cand_.begin());
    keep = k;
  }
  if (p_.top_p < 1.0f) {
    probs(keep, &pr);
    double mass = 0;
    size_t k = 0;
    while (k < keep && mass < p_.top_p) mass += pr[k++];
    keep = std::max<size_t>(k, 1);
  }
  if (p_.min_p > 0.0f) {
    const float cut = cand_[0].first + std::log(p_.min_p);  // p_i >= min_p * p_max
    size_t k = 1;
    while (k < keep && cand_[k].first >= cut) ++k;
    keep = k;
  }
  // Temperature, then a draw.
  pr.resize(keep);
  double s = 0;
  for (size_t i = 0; i < keep; ++i) {
    s += pr[i] = std::exp(static_cast<double>(cand_[i].first - cand_[0].first) / p_.temperature);
  }
  std::uniform_real_distribution<double> uniform(0.0, s);
  double r = uniform(rng_);
  size_t pick = 0;
  while (pick + 1 < keep && r >= pr[pick]) r -= pr[pick++];
  out.token = cand_[pick].second;
  out.logprob = logits[out.token] - log_z;
  return out;
}

}  // namespace ferry::text
