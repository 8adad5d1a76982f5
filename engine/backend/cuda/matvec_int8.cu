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
using Q5_0 = quant::Int8Q5_0;
template <bool kFive>
using Qx1 = quant::Int8Qx1<kFive>;


// One warp per 32 activations (QuantizeBlock32).
__global__ void QuantizeKernel(const float* __restrict__ x, int64_t xs, int64_t cols, int64_t n_blocks,
                               int8_t* __restrict__ q, float* __restrict__ d, int32_t* __restrict__ isum) {
  const int lane = threadIdx.x & 31;
  const int64_t b = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int64_t per_row = cols / 32;
  if (b >= n_blocks) return;  // whole warps
  const int64_t t = b / per_row, k = b % per_row;
  QuantizeBlock32(x[t * xs + k * 32 + lane], lane, q + t * cols + k * 32, d + b, isum + b);
}

// One warp per row: lane l takes sub-blocks l, l+32, ...; each token's 32
// quantized activations are two 16-byte loads. The rows are those of the
// parts one after the other (q, k, v in one launch). Gated: a warp takes
// row r of part 0 (gate) and of part 1 (up) and writes Gate(g, u) to part
// 0's output: the sums are the ones separate launches give, bit for bit.
template <class F, int NT, bool kGated>
__global__ void MatVecInt8Kernel(Int8Rows m, int64_t cols, const int8_t* __restrict__ q, const float* __restrict__ d,
                                 const int32_t* __restrict__ isum, int n, bool gelu) {
  const int lane = threadIdx.x & 31;
  int64_t row = WarpRow();
  // This warp's part, with constant indices only (a computed index would
  // copy the parameters to local memory).
  Int8Part part = m.part[0];
  if (!kGated && row >= part.rows && m.count > 1) {
    row -= part.rows;
    part = m.part[1];
    if (row >= part.rows && m.count > 2) {
      row -= part.rows;
      part = m.part[2];
    }
  }
  if (row >= part.rows) return;
  const uint8_t* wr = part.w + row * part.row_bytes;
  const uint8_t* ur = kGated ? m.part[1].w + row * m.part[1].row_bytes : nullptr;
  float acc[NT], acc_up[kGated ? NT : 1];
  Zero(acc);
  Zero(acc_up);
  const int64_t n_sub = cols / 32;
  for (int64_t s = lane; s < n_sub; s += 32) {
    typename F::W wt, ut;
    F::Load(wr, s, wt);
    if constexpr (kGated) F::Load(ur, s, ut);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      if (t < n) {
        const int4* xq = reinterpret_cast<const int4*>(q + t * cols + s * 32);
        const int4 a = __ldg(xq), b = __ldg(xq + 1);
        const int32_t x[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        const int64_t k = t * n_sub + s;
        const float dk = __ldg(d + k);
        const int32_t sk = __ldg(isum + k);
        acc[t] += F::Dot(wt, x, dk, sk);
        if constexpr (kGated) acc_up[t] += F::Dot(ut, x, dk, sk);
      }
    }
  }
  if constexpr (kGated) {
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const float g = WarpSum(acc[t]), u = WarpSum(acc_up[t]);
      if (lane == 0 && t < n) part.y[t * part.ys + row] = Gate(g, u, gelu);
    }
  } else {
    StoreWarpSums<NT>(acc, n, lane, part.y + row, part.ys, m.accumulate);
  }
}

template <class F, bool kGated>
void Launch(const Int8Rows& m, int64_t cols, int n, const Int8Activations& act, bool gelu, cudaStream_t stream) {
  int64_t rows = 0;
  for (int p = 0; p < (kGated ? 1 : m.count); ++p) rows += m.part[p].rows;
  if (rows == 0) return;  // a zero-size grid is a launch error
  const dim3 grid = WarpRowGrid(rows), block(32 * kWarpsPerBlock);
  auto launch = [&](auto kernel) { kernel<<<grid, block, 0, stream>>>(m, cols, act.q, act.d, act.isum, n, gelu); };
  if (n <= 1) launch(MatVecInt8Kernel<F, 1, kGated>);
  else if (n <= 2) launch(MatVecInt8Kernel<F, 2, kGated>);
  else if (n <= 4) launch(MatVecInt8Kernel<F, 4, kGated>);
  else launch(MatVecInt8Kernel<F, 8, kGated>);
}

template <bool kGated>
cudaError_t LaunchFor(quant::TensorType type, const Int8Rows& m, int64_t cols, int n, const Int8Activations& act,
                      bool gelu, cudaStream_t stream) {
  switch (type) {
    case TensorType::kQ8_0: Launch<Q8_0, kGated>(m, cols, n, act, gelu, stream); break;
    case TensorType::kQ4_0: Launch<Q4_0, kGated>(m, cols, n, act, gelu, stream); break;
    case TensorType::kQ4_K: Launch<K45<false>, kGated>(m, cols, n, act, gelu, stream); break;
    case TensorType::kQ5_K: Launch<K45<true>, kGated>(m, cols, n, act, gelu, stream); break;
    case TensorType::kQ6_K: Launch<Q6_K, kGated>(m, cols, n, act, gelu, stream); break;
    case TensorType::kQ4_1: Launch<Qx1<false>, kGated>(m, cols, n, act, gelu, stream); break;
    case TensorType::kQ5_0: Launch<Q5_0, kGated>(m, cols, n, act, gelu, stream); break;
    case TensorType::kQ5_1: Launch<Qx1<true>, kGated>(m, cols, n, act, gelu, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

void Quantize(const float* x, int64_t x_stride, int64_t cols, int n, const Int8Activations& act, cudaStream_t stream) {
  const int64_t n_blocks = static_cast<int64_t>(n) * (cols / 32);
  const int warps = 8;
  QuantizeKernel<<<static_cast<unsigned>((n_blocks + warps - 1) / warps), 32 * warps, 0, stream>>>(
      x, x_stride, cols, n_blocks, act.q, act.d, act.isum);
}

}  // namespace

bool MatVecInt8Supports(TensorType type, bool more) {
  if (type == TensorType::kQ4_1 || type == TensorType::kQ5_0 || type == TensorType::kQ5_1) return more;
  return type == TensorType::kQ8_0 || type == TensorType::kQ4_0 || type == TensorType::kQ4_K ||
         type == TensorType::kQ5_K || type == TensorType::kQ6_K;
}

cudaError_t LaunchMatVecInt8Rows(quant::TensorType type, const Int8Rows& m, const float* x, int64_t x_stride,
                                 int64_t cols, int n, const Int8Activations& act, bool quantized, int gated,
                                 cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (!MatVecInt8Supports(type, true) || n > kMatVecMaxTokens || cols % 32 != 0 || m.count < 1 || m.count > 3 ||
      (gated >= 0 && (m.count != 2 || m.part[0].rows != m.part[1].rows))) {
    return cudaErrorInvalidValue;
  }
  if (!quantized) Quantize(x, x_stride, cols, n, act, stream);
  return gated >= 0 ? LaunchFor<true>(type, m, cols, n, act, gated == 1, stream)
                    : LaunchFor<false>(type, m, cols, n, act, false, stream);
}

}  // namespace ferry::backend::cuda
