#include "engine/plan/planner.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/units.h"

namespace ferry::plan {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

struct Profile {
  const char* name;
  uint64_t memory;
  uint64_t overhead;  // typical CUDA context + cuBLAS workspace before ferry allocates
};

// Memory as the cards report it; the context overhead is a typical value
// until the CUDA backend measures it (cudaMemGetInfo before/after).
constexpr Profile kProfiles[] = {
    {"rtx3060-12g", 12 * kGiB, 400ull << 20},  {"rtx4060-8g", 8 * kGiB, 400ull << 20},
    {"rtx4070-12g", 12 * kGiB, 400ull << 20},  {"rtx4080-16g", 16 * kGiB, 450ull << 20},
    {"rtx4090-24g", 24 * kGiB, 500ull << 20},  {"a100-40g", 40 * kGiB, 500ull << 20},
    {"a100-80g", 80 * kGiB, 500ull << 20},     {"h100-80g", 80 * kGiB, 550ull << 20},
};

}  // namespace

absl::StatusOr<DeviceSpec> DeviceProfile(const std::string& name) {
  for (const Profile& p : kProfiles) {
    if (name == p.name) return DeviceSpec{p.name, p.memory, p.overhead};
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown GPU profile '", name, "' (profiles: ", DeviceProfileNames(), ")"));
}

std::string DeviceProfileNames() {
  std::string out;
  for (const Profile& p : kProfiles) absl::StrAppend(&out, out.empty() ? "" : ", ", p.name);
  return out;
}

double Plan::gpu_fraction() const {
  const uint64_t all = layer_bytes_total + head_bytes;
  return all == 0 ? 0.0 : static_cast<double>(weights_resident) / static_cast<double>(all);
}

absl::StatusOr<Plan> MakePlan(const gguf::File& file, const model::ModelConfig& c, const PlanRequest& r,
                              const DeviceSpec& device) {
  if (r.n_ctx <= 0 || r.n_slots <= 0 || r.max_batch <= 0 || r.ring_depth <= 0 || r.kv_bytes_per_elem <= 0) {
    return absl::InvalidArgumentError("plan: context, slots, batch, ring depth and KV element size must be positive");
  }
  Plan p;
  p.n_layers = c.n_layer;
  p.layer_bytes.assign(c.n_layer, 0);
  // Every tensor's bytes, by where it belongs.
  for (const gguf::TensorInfo& t : file.tensors()) {
    p.model_bytes += t.bytes;
    const absl::string_view name = t.name;
    if (const int layer = model::LayerIndex(name); layer >= 0) {
      if (layer >= c.n_layer) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' names a layer outside 0..", c.n_layer - 1));
      }
      p.layer_bytes[layer] += t.bytes;
    } else if (name == "token_embd.weight") {
      p.embedding_bytes += t.bytes;
    } else {
      p.head_bytes += t.bytes;  // output_norm, output, rope_freqs: used on the device every step
    }
  }
  // A tied head computes with the embedding matrix: it must be on the device.
  if (c.tied_output) p.head_bytes += p.embedding_bytes;
  for (uint64_t b : p.layer_bytes) p.layer_bytes_total += b;

  // Fixed costs, whatever the placement.
  p.kv_cache = 2ull * c.n_layer * static_cast<uint64_t>(r.n_ctx) * r.n_slots * c.kv_dim() * r.kv_bytes_per_elem;
  const uint64_t B = r.max_batch;
  // Activations of the largest step (the same buffers the executor sizes):
  // residual, normed and output rows, q, attention output, k, v, two FFN
  // halves, logits for every token, and attention scores.
  p.workspace = 4 * B * (3ull * c.n_embd + 2ull * c.q_dim() + 2ull * c.kv_dim() + 2ull * c.n_ff + c.n_vocab) +
                4 * B * static_cast<uint64_t>(c.n_head) * r.n_ctx;
  p.overhead = device.overhead_bytes;
  p.margin = static_cast<uint64_t>(r.margin_fraction * static_cast<double>(device.memory_bytes));
  p.budget = r.policy == Policy::kBudget ? std::min(r.gpu_memory, device.memory_bytes) : device.memory_bytes;

  // The device bytes if the first n layers are resident (with the head).
  auto fill = [&](int n) {
    uint64_t resident = p.head_bytes, streamed_max = 0, pinned = 0;
    for (int l = 0; l < c.n_layer; ++l) {
      if (l < n) {
        resident += p.layer_bytes[l];
      } else {
        streamed_max = std::max(streamed_max, p.layer_bytes[l]);
        pinned += p.layer_bytes[l];
      }
    }
    p.resident_layers = n;
    p.head_resident = true;
    p.weights_resident = resident;
    p.staging = r.ring_depth * streamed_max;
    p.host_pinned = pinned;
    p.total = p.weights_resident + p.staging + p.kv_cache + p.workspace + p.overhead + p.margin;
  };

  if (r.policy == Policy::kLayers) {
    if (r.gpu_layers < 0 || r.gpu_layers > c.n_layer) {
      return absl::InvalidArgumentError(absl::StrCat("--gpu_layers ", r.gpu_layers, ": the model has ", c.n_layer,
                                                     " layers"));
    }
    fill(r.gpu_layers);
    if (p.total > p.budget) {
      int fits = -1;
      for (int n = r.gpu_layers - 1; n >= 0 && fits < 0; --n) {
        fill(n);
        if (p.total <= p.budget) fits = n;
      }
      fill(r.gpu_layers);
      return absl::ResourceExhaustedError(absl::StrCat(
          r.gpu_layers, " resident layers need ", HumanBytes(p.total), " on ", device.name, " (", HumanBytes(p.budget),
          "): ", HumanBytes(p.total - p.budget), " missing. ",
          fits >= 0 ? absl::StrCat("At most ", fits, " layers fit at this context; ")
                    : std::string("Not even the head, KV cache and workspace fit; "),
          "use fewer --gpu_layers, a smaller --ctx (KV cache ", HumanBytes(p.kv_cache), ") or fewer --slots"));
    }
    return p;
  }
  // Auto and budget: the most layers that fit, the head first.
  for (int n = c.n_layer; n >= 0; --n) {
    fill(n);
    if (p.total <= p.budget) return p;
  }
  fill(0);
  return absl::ResourceExhaustedError(absl::StrCat(
      "the output head, KV cache and workspace alone need ", HumanBytes(p.total), " on ", device.name, " (",
      HumanBytes(p.budget), "): ", HumanBytes(p.total - p.budget), " missing; use a smaller --ctx (KV cache ",
      HumanBytes(p.kv_cache), "), fewer --slots or a smaller batch (workspace ", HumanBytes(p.workspace), ")"));
}

}  // namespace ferry::plan
