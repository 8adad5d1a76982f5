#include "engine/backend/cuda/matmul.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "engine/backend/cuda/warp.cuh"
#include "engine/quant/blocks.h"

namespace ferry::backend::cuda {
namespace {

using backend::kMatVecMaxTokens;

using quant::TensorType;


constexpr int kChunk = 8;  // consecutive values a lane decodes at a time

// A block format: its struct, 32-value sub-blocks per block, and the decoder
// both the CPU tests and these kernels use. Blocks are 2-byte aligned
// structs at even offsets of 256-byte aligned buffers, so they are read in place.
template <typename B, int kSubsPerBlock>
struct Blocks {
  static constexpr int kSubs = kSubsPerBlock;
  static constexpr int kBytes = sizeof(B);
  // Values [8c, 8c + 8) of a row.
  __device__ static void DecodeChunk(const uint8_t* row, int64_t c, float* y) {
    const int64_t sub = c / (32 / kChunk);
    quant::DecodeRange(*reinterpret_cast<const B*>(row + (sub / kSubs) * kBytes), static_cast<int>(sub % kSubs),
                       static_cast<int>(c % (32 / kChunk)) * kChunk, kChunk, y);
  }
};
using Q4_0 = Blocks<quant::BlockQ4_0, 1>;
using Q4_1 = Blocks<quant::BlockQ4_1, 1>;
using Q5_0 = Blocks<quant::BlockQ5_0, 1>;
using Q5_1 = Blocks<quant::BlockQ5_1, 1>;
using Q8_0 = Blocks<quant::BlockQ8_0, 1>;
using Q4_K = Blocks<quant::BlockQ4_K, 8>;
using Q5_K = Blocks<quant::BlockQ5_K, 8>;
using Q6_K = Blocks<quant::BlockQ6_K, 8>;

// Plain floats, one value at a time.
struct F32 {
  __device__ static float Load(const uint8_t* row, int64_t i) { return __ldg(reinterpret_cast<const float*>(row) + i); }
};
struct F16 {
  __device__ static float Load(const uint8_t* row, int64_t i) {
    return __half2float(reinterpret_cast<const __half*>(row)[i]);
  }
};
struct BF16 {
  __device__ static float Load(const uint8_t* row, int64_t i) {
    return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(row)[i]);
  }
};

// One warp per row: lane l takes the 8-value chunks l, l+32, ... of the row,
// so at each step the warp reads a contiguous run of the row's blocks and a
// contiguous 1 KiB of each token's activations (two float4 loads a lane when
// they are 16-byte aligned: `x_vec`); NT >= n tokens.
template <class F, int NT>
__global__ void MatVecBlocks(const uint8_t* __restrict__ w, int64_t rows, int64_t cols, int64_t row_bytes,
                             const float* __restrict__ x, int64_t xs, int n, float* __restrict__ y, int64_t ys,
                             bool x_vec) {
  const int lane = threadIdx.x & 31;
  const int64_t row = WarpRow();
  if (row >= rows) return;
  const uint8_t* wr = w + row * row_bytes;
  float acc[NT];
  Zero(acc);
  const int64_t n_chunks = cols / kChunk;
#pragma unroll 2
  for (int64_t c = lane; c < n_chunks; c += 32) {
    float v[kChunk];
    F::DecodeChunk(wr, c, v);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      if (t < n) {
        const float* xt = x + t * xs + c * kChunk;
        float xv[kChunk];
        if (x_vec) {
          const float4 a = __ldg(reinterpret_cast<const float4*>(xt));
          const float4 b = __ldg(reinterpret_cast<const float4*>(xt) + 1);
          xv[0] = a.x, xv[1] = a.y, xv[2] = a.z, xv[3] = a.w, xv[4] = b.x, xv[5] = b.y, xv[6] = b.z, xv[7] = b.w;
        } else {
#pragma unroll
          for (int j = 0; j < kChunk; ++j) xv[j] = __ldg(xt + j);
        }
#pragma unroll
        for (int j = 0; j < kChunk; ++j) acc[t] = fmaf(v[j], xv[j], acc[t]);
      }
    }
  }
  StoreWarpSums<NT>(acc, n, lane, y + row, ys);
}

template <class F, int NT>
__global__ void MatVecFloats(const uint8_t* __restrict__ w, int64_t rows, int64_t cols, int64_t row_bytes,
                             const float* __restrict__ x, int64_t xs, int n, float* __restrict__ y, int64_t ys) {
  const int lane = threadIdx.x & 31;
  const int64_t row = WarpRow();
  if (row >= rows) return;
  const uint8_t* wr = w + row * row_bytes;
  float acc[NT];
  Zero(acc);
  for (int64_t i = lane; i < cols; i += 32) {
    const float v = F::Load(wr, i);
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      if (t < n) acc[t] = fmaf(v, __ldg(x + t * xs + i), acc[t]);
    }
  }
  StoreWarpSums<NT>(acc, n, lane, y + row, ys);
}

// Rows [0, rows) of w decoded to f32, packed (rows, cols): the GEMM tile.
// A thread per 8-value chunk, so a warp's stores are one contiguous 1 KiB.
template <class F>
__global__ void DecodeBlocksToFloat(const uint8_t* __restrict__ w, int64_t rows, int64_t cols, int64_t row_bytes,
                                    float* __restrict__ out) {
  const int64_t n_chunks = cols / kChunk;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * n_chunks) return;
  const int64_t r = i / n_chunks, c = i % n_chunks;
  float v[kChunk];
  F::DecodeChunk(w + r * row_bytes, c, v);
  float4* o = reinterpret_cast<float4*>(out + r * cols + c * kChunk);
  o[0] = make_float4(v[0], v[1], v[2], v[3]);
  o[1] = make_float4(v[4], v[5], v[6], v[7]);
}

template <class F>
__global__ void DecodeFloatsToFloat(const uint8_t* __restrict__ w, int64_t rows, int64_t cols, int64_t row_bytes,
                                    float* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  out[i] = F::Load(w + r * row_bytes, c);
}

template <class F, bool kBlocks>
void LaunchMatVec(const MatMulArgs& a, cudaStream_t stream) {
  const dim3 grid = WarpRowGrid(a.rows), block(32 * kWarpsPerBlock);
  if constexpr (kBlocks) {
    const bool x_vec = reinterpret_cast<uintptr_t>(a.x) % 16 == 0 && a.x_stride % 4 == 0;
    auto launch = [&](auto kernel) {
      kernel<<<grid, block, 0, stream>>>(a.w, a.rows, a.cols, a.row_bytes, a.x, a.x_stride, a.n_tokens, a.y, a.y_stride,
                                         x_vec);
    };
    if (a.n_tokens <= 1) launch(MatVecBlocks<F, 1>);
    else if (a.n_tokens <= 2) launch(MatVecBlocks<F, 2>);
    else if (a.n_tokens <= 4) launch(MatVecBlocks<F, 4>);
    else launch(MatVecBlocks<F, 8>);
  } else {
    auto launch = [&](auto kernel) {
      kernel<<<grid, block, 0, stream>>>(a.w, a.rows, a.cols, a.row_bytes, a.x, a.x_stride, a.n_tokens, a.y, a.y_stride);
    };
    if (a.n_tokens <= 1) launch(MatVecFloats<F, 1>);
    else if (a.n_tokens <= 2) launch(MatVecFloats<F, 2>);
    else if (a.n_tokens <= 4) launch(MatVecFloats<F, 4>);
    else launch(MatVecFloats<F, 8>);
  }
}

template <class F, bool kBlocks>
void LaunchDecode(const uint8_t* w, int64_t rows, int64_t cols, int64_t row_bytes, float* out, cudaStream_t stream) {
  const int64_t items = kBlocks ? rows * (cols / kChunk) : rows * cols;
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>((items + threads - 1) / threads);
  if constexpr (kBlocks) {
    DecodeBlocksToFloat<F><<<blocks, threads, 0, stream>>>(w, rows, cols, row_bytes, out);
  } else {
    DecodeFloatsToFloat<F><<<blocks, threads, 0, stream>>>(w, rows, cols, row_bytes, out);
  }
}

// The (op, type) -> kernel table: one switch at the top, none inside kernels.
template <template <class, bool> class Fn, typename... Args>
bool Dispatch(TensorType type, Args&&... args) {
  switch (type) {
    case TensorType::kF32: Fn<F32, false>::Run(args...); return true;
    case TensorType::kF16: Fn<F16, false>::Run(args...); return true;
    case TensorType::kBF16: Fn<BF16, false>::Run(args...); return true;
    case TensorType::kQ4_0: Fn<Q4_0, true>::Run(args...); return true;
    case TensorType::kQ4_1: Fn<Q4_1, true>::Run(args...); return true;
    case TensorType::kQ5_0: Fn<Q5_0, true>::Run(args...); return true;
    case TensorType::kQ5_1: Fn<Q5_1, true>::Run(args...); return true;
    case TensorType::kQ8_0: Fn<Q8_0, true>::Run(args...); return true;
    case TensorType::kQ4_K: Fn<Q4_K, true>::Run(args...); return true;
    case TensorType::kQ5_K: Fn<Q5_K, true>::Run(args...); return true;
    case TensorType::kQ6_K: Fn<Q6_K, true>::Run(args...); return true;
    default: return false;
  }
}

template <class F, bool kBlocks>
struct MatVecOp {
  static void Run(const MatMulArgs& a, cudaStream_t stream) { LaunchMatVec<F, kBlocks>(a, stream); }
};
template <class F, bool kBlocks>
struct DecodeOp {
  static void Run(const uint8_t* w, int64_t rows, int64_t cols, int64_t row_bytes, float* out, cudaStream_t stream) {
    LaunchDecode<F, kBlocks>(w, rows, cols, row_bytes, out, stream);
  }
};

}  // namespace

bool MatMulSupports(TensorType type) {
  switch (type) {
    case TensorType::kF32: case TensorType::kF16: case TensorType::kBF16: case TensorType::kQ4_0:
    case TensorType::kQ4_1: case TensorType::kQ5_0: case TensorType::kQ5_1: case TensorType::kQ8_0:
    case TensorType::kQ4_K: case TensorType::kQ5_K: case TensorType::kQ6_K:
      return true;
    default:
      return false;
  }
}

cudaError_t LaunchMatMul(const MatMulArgs& a, const GemmScratch& scratch, cudaStream_t stream,
                         cublasStatus_t* blas_status) {
  *blas_status = CUBLAS_STATUS_SUCCESS;
  if (a.rows == 0 || a.n_tokens == 0) return cudaSuccess;
  if (!MatMulSupports(a.type)) return cudaErrorInvalidValue;
  if (a.n_tokens <= kMatVecMaxTokens || scratch.tile == nullptr || scratch.blas == nullptr) {
    for (int t0 = 0; t0 < a.n_tokens; t0 += kMatVecMaxTokens) {
      MatMulArgs part = a;
      part.x = a.x + t0 * a.x_stride;
      part.y = a.y + t0 * a.y_stride;
      part.n_tokens = std::min(kMatVecMaxTokens, a.n_tokens - t0);
      Dispatch<MatVecOp>(a.type, part, stream);
      if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    }
    return cudaSuccess;
  }
  // y^T (n, rows) in column-major is W (rows, cols) x^T: with cuBLAS's
  // column-major view, C(rows_chunk x n) = A^T B where A is the tile seen
  // as (cols x rows_chunk) and B the activations as (cols x n).
  // TF32 tensor cores: f32 range (activations of gemma-sized models overflow
  // f16), 10-bit mantissa inputs, f32 accumulation.
  const float one = 1.0f, zero = 0.0f;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(a.rows, scratch.tile_values / a.cols));
  for (int64_t r0 = 0; r0 < a.rows; r0 += chunk) {
    const int64_t rc = std::min(chunk, a.rows - r0);
    const void* tile;
    int64_t lda;
    if (a.type == TensorType::kF32) {
      tile = a.w + r0 * a.row_bytes;
      lda = a.row_bytes / static_cast<int64_t>(sizeof(float));
    } else {
      Dispatch<DecodeOp>(a.type, a.w + r0 * a.row_bytes, rc, a.cols, a.row_bytes, scratch.tile,
                         stream);
      if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
      tile = scratch.tile;
      lda = a.cols;
    }
    *blas_status = scratch.blas->gemm_ex(scratch.handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rc), a.n_tokens,
                                static_cast<int>(a.cols), &one, tile, CUDA_R_32F, static_cast<int>(lda), a.x,
                                CUDA_R_32F, static_cast<int>(a.x_stride), &zero, a.y + r0, CUDA_R_32F,
                                static_cast<int>(a.y_stride), CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
    if (*blas_status != CUBLAS_STATUS_SUCCESS) return cudaSuccess;
  }
  return cudaGetLastError();
}

}  // namespace ferry::backend::cuda
