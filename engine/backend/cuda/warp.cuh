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
// warp, written by lane 0 to y[t * ys] (y points at the row's output), or
// added to what is there (add: y[t * ys] + sum, as the Add kernel rounds).
template <int NT>
__device__ inline void StoreWarpSums(const float (&acc)[NT], int n, int lane, float* y, int64_t ys, bool add = false) {
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    const float sum = WarpSum(acc[t]);
    if (lane == 0 && t < n) y[t * ys] = add ? y[t * ys] + sum : sum;
  }
}

// One block of 32 activations to int8, a value a lane: the block's max |x|,
// its scale d = max / 127, each lane's quant q = x / d rounded half to even
// and the block's sum of quants, exactly as cpu::QuantizeActivations
// computes them; a block with a NaN or infinity gets a NaN scale and zero
// quants. The int8 matvec's quantize kernel and the fused RMSNorm share it.
__device__ inline void QuantizeBlock32(float v, int lane, int8_t* q, float* d, int32_t* isum) {
  float amax = fabsf(v);
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const bool finite = __all_sync(0xffffffffu, isfinite(v));
  const float scale = finite ? amax / 127.0f : __int_as_float(0x7fc00000);
  const float inv = finite && scale != 0.0f ? 1.0f / scale : 0.0f;
  const int qi = finite ? __float2int_rn(v * inv) : 0;
  q[lane] = static_cast<int8_t>(qi);
  int sum = qi;
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) {
    *d = scale;
    *isum = sum;
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
