#include "engine/backend/cuda/matvec_int8.cuh"

#include "engine/backend/cuda/warp.cuh"
#include "engine/quant/int8_blocks.h"

namespace ferry::backend::cuda {
namespace {

using quant::TensorType;
using Q8_0 = quant::Int8Q8_0;
using Q4_0 = quant::Int8Q4_0;
template <bool kFive>
using K45 = quant::Int8K45<kFive>;
using Q6_K = quant::Int8Q6_K;


// One warp per 32 activations: the block's max |x|, its scale, each lane's
// quant and the block's sum of quants, exactly as cpu::QuantizeActivations
// computes them (IEEE division, products rounded half to even); a block
// with a NaN or infinity gets a NaN scale and zero quants.
__global__ void QuantizeKernel(const float* __restrict__ x, int64_t xs, int64_t cols, int64_t n_blocks,
                               int8_t* __restrict__ q, float* __restrict__ d, int32_t* __restrict__ isum) {
  const int lane = threadIdx.x & 31;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int64_t per_row = cols / 32;
  if (b >= n_blocks) return;  // whole warps
  const int64_t t = b / per_row, k = b % per_row;
  const float v = x[t * xs + k * 32 + lane];
  float amax = fabsf(v);
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const bool finite = __all_sync(0xffffffffu, isfinite(v));
  const float scale = finite ? amax / 127.0f : __int_as_float(0x7fc00000);
  const float inv = finite && scale != 0.0f ? 1.0f / scale : 0.0f;
  const int qi = finite ? __float2int_rn(v * inv) : 0;
  q[t * cols + k * 32 + lane] = static_cast<int8_t>(qi);
  int sum = qi;
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) {
    d[b] = scale;
    isum[b] = sum;
  }
}

// One warp per row: lane l takes sub-blocks l, l+32, ...; each token's 32
// quantized activations are two 16-byte loads.
template <class F, int NT>
__global__ void MatVecInt8Kernel(const uint8_t* __restrict__ w, int64_t rows, int64_t cols, int64_t row_bytes,
                                 const int8_t* __restrict__ q, const float* __restrict__ d,
                                 const int32_t* __restrict__ isum, int n, float* __restrict__ y, int64_t ys) {
  const int lane = threadIdx.x & 31;
  const int64_t row = WarpRow();
  if (row >= rows) return;
  const uint8_t* wr = w + row * row_bytes;
  float acc[NT];
  Zero(acc);
  const int64_t n_sub = cols / 32;
  for (int64_t s = lane; s < n_sub; s += 32) {
    typename F::W wt;
    F::Load(wr, s, wt);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      if (t < n) {
        const int4* xq = reinterpret_cast<const int4*>(q + t * cols + s * 32);
        const int4 a = __ldg(xq), b = __ldg(xq + 1);
        const int32_t x[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        const int64_t k = t * n_sub + s;
        acc[t] += F::Dot(wt, x, __ldg(d + k), __ldg(isum + k));
      }
    }
  }
  StoreWarpSums<NT>(acc, n, lane, y + row, ys);
}

template <class F>
void Launch(const MatMulArgs& a, const Int8Activations& act, cudaStream_t stream) {
  const dim3 grid = WarpRowGrid(a.rows), block(32 * kWarpsPerBlock);
  auto launch = [&](auto kernel) {
    kernel<<<grid, block, 0, stream>>>(a.w, a.rows, a.cols, a.row_bytes, act.q, act.d, act.isum, a.n_tokens, a.y,
                                       a.y_stride);
  };
  if (a.n_tokens <= 1) launch(MatVecInt8Kernel<F, 1>);
  else if (a.n_tokens <= 2) launch(MatVecInt8Kernel<F, 2>);
  else if (a.n_tokens <= 4) launch(MatVecInt8Kernel<F, 4>);
  else launch(MatVecInt8Kernel<F, 8>);
}

}  // namespace

bool MatVecInt8Supports(TensorType type) {
  return type == TensorType::kQ8_0 || type == TensorType::kQ4_0 || type == TensorType::kQ4_K ||
         type == TensorType::kQ5_K || type == TensorType::kQ6_K;
}

cudaError_t LaunchMatVecInt8(const MatMulArgs& a, const Int8Activations& act, bool quantized, cudaStream_t stream) {
  if (a.rows == 0 || a.n_tokens == 0) return cudaSuccess;
  if (!MatVecInt8Supports(a.type) || a.n_tokens > kMatVecMaxTokens || a.cols % 32 != 0) return cudaErrorInvalidValue;
  const int64_t n_blocks = static_cast<int64_t>(a.n_tokens) * (a.cols / 32);
  const int warps = 8;
  if (!quantized) {
    QuantizeKernel<<<static_cast<unsigned>((n_blocks + warps - 1) / warps), 32 * warps, 0, stream>>>(
        a.x, a.x_stride, a.cols, n_blocks, act.q, act.d, act.isum);
  }
  switch (a.type) {
    case TensorType::kQ8_0: Launch<Q8_0>(a, act, stream); break;
    case TensorType::kQ4_0: Launch<Q4_0>(a, act, stream); break;
    case TensorType::kQ4_K: Launch<K45<false>>(a, act, stream); break;
    case TensorType::kQ5_K: Launch<K45<true>>(a, act, stream); break;
    case TensorType::kQ6_K: Launch<Q6_K>(a, act, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace ferry::backend::cuda
