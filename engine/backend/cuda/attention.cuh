// The KV cache and attention over it. StoreKv writes each token's K and V
// rows at (slot, position), rounded to f16 (or kept f32). Attention is
// split over the sequence (flash-decoding): each thread block takes one
// (token, head) and one range of positions, keeps a running max and sum
// (online softmax) over tiles of positions, and either writes the result
// (one range) or a partial (max, sum, weighted values) that a second kernel
// combines. Heads share K/V heads in groups (GQA); gemma2's logit
// soft-capping and sliding window are applied per score.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ferry::backend::cuda {

inline constexpr int kMaxHeadDim = 256;
inline constexpr int kAttentionSplitPositions = 256;  // positions per split, at least
inline constexpr int kMaxAttentionSplits = 32;

struct KvArgs {
  void* k;
  void* v;
  bool f16;
  int n_ctx;
  int kv_dim;
};

cudaError_t LaunchStoreKv(const KvArgs& kv, const float* k, const float* v, const int2* tokens, int n_tokens,
                          cudaStream_t stream);

struct AttentionArgs {
  const float* q;         // (n_tokens, n_head * head_dim)
  KvArgs kv;
  const int2* tokens;     // (seq, pos) per token, device memory
  int n_tokens;
  int max_span;           // the most positions any token of the step could attend to: its largest position + 1,
                          // the window aside (so a step's recorded graph holds for every layer)
  int n_head, n_head_kv, head_dim;
  float query_scale, softcap;
  int window;
  float* scratch;         // (n_tokens, n_head, n_ctx) floats: partials when split
  float* out;             // (n_tokens, n_head * head_dim)
};

// Number of position ranges each token's span is split into, from the
// step's `max_span` (partials must fit the scratch row of n_ctx floats:
// splits * (head_dim + 2) <= n_ctx). A token splits its own span evenly.
int AttentionSplits(int max_span, int head_dim, int n_ctx);

cudaError_t LaunchAttention(const AttentionArgs& a, cudaStream_t stream);

}  // namespace ferry::backend::cuda
