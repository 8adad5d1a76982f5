// Warp-level helpers shared by the matvec kernels, and the gated activation.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace ferry::backend::cuda {

// The warp-per-row kernels: rows per thread block, and this warp's row.
constexpr int kWarpsPerBlock = 4;
__device__ inline int64_t WarpRow() { return static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; }
inline dim3 WarpRowGrid(int64_t rows) { return dim3(static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock)); }

template <int NT>
__device__ inline void Zero(float (&acc)[NT]) {
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
}

__device__ inline float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The end of a warp-per-row kernel: each token's partial sums over the
// warp, written by lane 0 to y[t * ys] (y points at the row's output).
template <int NT>
__device__ inline void StoreWarpSums(const float (&acc)[NT], int n, int lane, float* y, int64_t ys) {
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float sum = WarpSum(acc[t]);
    if (lane == 0 && t < n) y[t * ys] = sum;
  }
}

// The gated activations: act(g) * u, SiLU or (gelu) GELU with the tanh
// approximation. The elementwise kernel and the gated int8 matvec share it.
__device__ inline float Gate(float g, float u, bool gelu) {
  float a;
  if (gelu) {
    constexpr float kSqrt2OverPi = 0.7978845608028654f;
    a = 0.5f * g * (1.0f + tanhf(kSqrt2OverPi * (g + 0.044715f * g * g * g)));
  } else {
    a = g / (1.0f + expf(-g));
  }
  return a * u;
}

}  // namespace ferry::backend::cuda
