// The forward pass on the CPU: one step over a batch of tokens from many
// sequences, each at its own position, with a KV cache per sequence slot.
// Every buffer is sized at creation; a step allocates nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/model/weights.h"

namespace ferry::exec {

enum class KvType { kF16, kF32 };

struct ForwardOptions {
  int max_batch = 64;   // tokens per step
  int n_seq = 1;        // sequence slots, each with its own KV cache
  int n_ctx = 0;        // positions per slot; 0 = the model's training context, at most 4096
  KvType kv_type = KvType::kF16;
  int threads = 0;      // 0 = one per hardware thread
};

struct BatchToken {
  int32_t token = 0;
  int32_t seq = 0;   // slot whose cache this token extends
  int32_t pos = 0;   // its position; attends to positions 0..pos of its slot
  bool logits = false;
};

class CpuForward {
 public:
  static absl::StatusOr<std::unique_ptr<CpuForward>> Create(const model::Model& model, const ForwardOptions& options);

  // Runs one step. `logits` receives n_vocab floats for each token with
  // logits = true, in batch order. Tokens of one sequence must come in
  // position order, and a token's earlier positions must already be cached.
  absl::Status Forward(std::span<const BatchToken> batch, std::span<float> logits);

  const model::ModelConfig& config() const { return config_; }
  int n_ctx() const { return n_ctx_; }
  int n_seq() const { return options_.n_seq; }
  int max_batch() const { return options_.max_batch; }
  uint64_t kv_cache_bytes() const { return kv_bytes_; }
  int threads() const { return pool_.size(); }

 private:
  CpuForward(const model::Model& model, const ForwardOptions& options, int n_ctx);
  void Attention(int layer, std::span<const BatchToken> batch);
  void Rope(float* v, int n_heads, int pos) const;
  void StoreKv(int layer, const BatchToken& t, const float* k, const float* v);

  const model::Model& model_;
  const model::ModelConfig& config_;
  const ForwardOptions options_;
  const int n_ctx_;
  cpu::ThreadPool pool_;
  cpu::MatMulScratch scratch_;
  std::vector<float> inv_freq_;  // rope: one frequency per rotated pair
  // Activations, [max_batch][width].
  std::vector<float> x_, xn_, q_, k_, v_, attn_, gate_, up_, out_;
  std::vector<float> scores_;    // [threads][n_ctx]
  // KV cache per layer: [n_seq][n_ctx][kv_dim], f16 bits or f32.
  std::vector<std::vector<uint16_t>> k16_, v16_;
  std::vector<std::vector<float>> k32_, v32_;
  uint64_t kv_bytes_ = 0;
};

}  // namespace ferry::exec
