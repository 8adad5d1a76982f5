#include "engine/backend/cuda/attention.cuh"

#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>

namespace ferry::backend::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 128;                          // positions scored per round
constexpr int kDimsPerThread = kMaxHeadDim / kThreads;

template <bool kF16>
__device__ inline float Load(const void* base, int64_t i) {
  if constexpr (kF16) {
    return __half2float(static_cast<const __half*>(base)[i]);
  } else {
    return static_cast<const float*>(base)[i];
  }
}

__global__ void StoreKvKernel(KvArgs kv, const float* k, const float* v, const int2* tokens) {
  const int t = blockIdx.x;
  const int64_t at = (static_cast<int64_t>(tokens[t].x) * kv.n_ctx + tokens[t].y) * kv.kv_dim;
  const float* kr = k + static_cast<int64_t>(t) * kv.kv_dim;
  const float* vr = v + static_cast<int64_t>(t) * kv.kv_dim;
  for (int i = threadIdx.x; i < kv.kv_dim; i += blockDim.x) {
    if (kv.f16) {
      static_cast<__half*>(kv.k)[at + i] = __float2half_rn(kr[i]);
      static_cast<__half*>(kv.v)[at + i] = __float2half_rn(vr[i]);
    } else {
      static_cast<float*>(kv.k)[at + i] = kr[i];
      static_cast<float*>(kv.v)[at + i] = vr[i];
    }
  }
}

// grid (n_tokens * n_head, splits); one block per (query head, range).
template <bool kF16>
__global__ void AttentionKernel(AttentionArgs a) {
  __shared__ float q_sh[kMaxHeadDim];
  __shared__ float s_sh[kTile];
  const int item = blockIdx.x, split = blockIdx.y;
  const int t = item / a.n_head, h = item % a.n_head, kvh = h / (a.n_head / a.n_head_kv);
  const int seq = a.tokens[t].x, pos = a.tokens[t].y;
  const int hd = a.head_dim, kv_dim = a.kv.kv_dim;
  const int lo = a.window > 0 ? max(0, pos - a.window + 1) : 0;  // the query's own position included
  const int split_len = (pos + 1 - lo + gridDim.y - 1) / gridDim.y;  // this token's span, evenly
  const int begin = lo + split * split_len;
  const int end = min(pos + 1, begin + split_len);
  const float* q = a.q + static_cast<int64_t>(t) * a.n_head * hd + h * hd;
  for (int d = threadIdx.x; d < hd; d += kThreads) q_sh[d] = q[d];
  __syncthreads();

  const int64_t seq_base = static_cast<int64_t>(seq) * a.kv.n_ctx * kv_dim + kvh * hd;
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  float m = -INFINITY, l = 0.0f;
  float acc[kDimsPerThread];
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) acc[i] = 0.0f;

  for (int j0 = begin; j0 < end; j0 += kTile) {
    const int jn = min(kTile, end - j0);
    // Scores: a warp per position, lanes across the head's dimensions.
    for (int jj = warp; jj < jn; jj += kWarps) {
      const int64_t at = seq_base + static_cast<int64_t>(j0 + jj) * kv_dim;
      float dot = 0.0f;
      for (int d = lane; d < hd; d += 32) dot = fmaf(q_sh[d], Load<kF16>(a.kv.k, at + d), dot);
      for (int off = 16; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
      if (lane == 0) {
        float s = dot * a.query_scale;
        if (a.softcap > 0.0f) s = a.softcap * tanhf(s / a.softcap);
        s_sh[jj] = s;
      }
    }
    __syncthreads();
    float tile_max = -INFINITY;
    for (int jj = 0; jj < jn; ++jj) tile_max = fmaxf(tile_max, s_sh[jj]);
    const float m_new = fmaxf(m, tile_max);
    const float correction = m == -INFINITY ? 0.0f : expf(m - m_new);
    __syncthreads();  // everyone has read the raw scores
    for (int jj = threadIdx.x; jj < jn; jj += kThreads) s_sh[jj] = expf(s_sh[jj] - m_new);
    __syncthreads();
    float tile_sum = 0.0f;
    for (int jj = 0; jj < jn; ++jj) tile_sum += s_sh[jj];
#pragma unroll
    for (int i = 0; i < kDimsPerThread; ++i) {
      const int d = threadIdx.x + i * kThreads;
      if (d >= hd) break;
      float sum = 0.0f;
      for (int jj = 0; jj < jn; ++jj) {
        sum = fmaf(s_sh[jj], Load<kF16>(a.kv.v, seq_base + static_cast<int64_t>(j0 + jj) * kv_dim + d), sum);
      }
      acc[i] = acc[i] * correction + sum;
    }
    l = l * correction + tile_sum;
    m = m_new;
    __syncthreads();  // s_sh is rewritten by the next tile
  }

  if (gridDim.y == 1) {
    float* out = a.out + static_cast<int64_t>(t) * a.n_head * hd + h * hd;
#pragma unroll
    for (int i = 0; i < kDimsPerThread; ++i) {
      const int d = threadIdx.x + i * kThreads;
      if (d < hd) out[d] = acc[i] / l;
    }
    return;
  }
  // Partial of this range: (max, sum, hd weighted values) in the query's scratch row.
  float* p = a.scratch + static_cast<int64_t>(item) * a.kv.n_ctx + split * (hd + 2);
  if (threadIdx.x == 0) p[0] = m, p[1] = l;
#pragma unroll
  for (int i = 0; i < kDimsPerThread; ++i) {
    const int d = threadIdx.x + i * kThreads;
    if (d < hd) p[2 + d] = acc[i];
  }
}

__global__ void CombineKernel(AttentionArgs a, int splits) {
  const int item = blockIdx.x;
  const int t = item / a.n_head, h = item % a.n_head, hd = a.head_dim;
  const float* row = a.scratch + static_cast<int64_t>(item) * a.kv.n_ctx;
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) {
    if (row[s * (hd + 2) + 1] > 0.0f) m = fmaxf(m, row[s * (hd + 2)]);
  }
  float l = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float* p = row + s * (hd + 2);
    if (p[1] > 0.0f) l += p[1] * expf(p[0] - m);
  }
  float* out = a.out + static_cast<int64_t>(t) * a.n_head * hd + h * hd;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float* p = row + s * (hd + 2);
      if (p[1] > 0.0f) sum += p[2 + d] * expf(p[0] - m);
    }
    out[d] = sum / l;
  }
}

}  // namespace

cudaError_t LaunchStoreKv(const KvArgs& kv, const float* k, const float* v, const int2* tokens, int n_tokens,
                          cudaStream_t stream) {
  if (n_tokens == 0) return cudaSuccess;
  StoreKvKernel<<<n_tokens, 128, 0, stream>>>(kv, k, v, tokens);
  return cudaGetLastError();
}

int AttentionSplits(int max_span, int head_dim, int n_ctx) {
  const int wanted = (max_span + kAttentionSplitPositions - 1) / kAttentionSplitPositions;
  const int room = n_ctx / (head_dim + 2);
  return std::max(1, std::min({wanted, room, kMaxAttentionSplits}));
}

cudaError_t LaunchAttention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.n_tokens == 0) return cudaSuccess;
  if (a.head_dim > kMaxHeadDim || a.n_head_kv <= 0 || a.n_head % a.n_head_kv != 0) return cudaErrorInvalidValue;
  const int splits = AttentionSplits(a.max_span, a.head_dim, a.kv.n_ctx);
  const dim3 grid(static_cast<unsigned>(a.n_tokens * a.n_head), static_cast<unsigned>(splits));
  if (a.kv.f16) {
    AttentionKernel<true><<<grid, kThreads, 0, stream>>>(a);
  } else {
    AttentionKernel<false><<<grid, kThreads, 0, stream>>>(a);
  }
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess || splits == 1) return e;
  CombineKernel<<<a.n_tokens * a.n_head, kThreads, 0, stream>>>(a, splits);
  return cudaGetLastError();
}

}  // namespace ferry::backend::cuda
