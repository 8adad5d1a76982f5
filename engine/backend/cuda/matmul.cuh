// Matrix products on weights as they are stored (every ferry quant type).
// Few tokens (decode): one warp per output row reads each weight byte once,
// decoding 32-value sub-blocks (quant/blocks.h, shared with the CPU tests)
// and dotting them with every token's activations. More tokens (prefill):
// rows are decoded to an f32 tile and multiplied on tensor cores by cuBLAS
// (cublasGemmEx in TF32 with f32 accumulation: f16 activations would
// overflow on gemma-sized models); f32 weights go to cuBLAS as they are.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/backend/cuda/blas.h"
#include "engine/backend/scratch.h"
#include "engine/quant/type_ids.h"

namespace ferry::backend::cuda {

bool MatMulSupports(quant::TensorType type);

// The GEMM path's tile (backend/scratch.h) and cuBLAS; when either is
// missing (a device sized for steps of at most kMatVecMaxTokens tokens, or
// no libcublas) the matvec kernel runs on chunks of that many tokens.
struct GemmScratch {
  float* tile = nullptr;  // kGemmTileValues or fewer
  int64_t tile_values = 0;
  const Blas* blas = nullptr;
  cublasHandle_t handle = nullptr;
};

// y[t * y_stride + r] = dot(row r of w, x + t * x_stride) for t < n_tokens.
// `w` points at `rows` rows of `cols` values of `type`, `row_bytes` apart.
// Returns the first error of a launch or of cuBLAS (as a cudaError_t or a
// cublasStatus_t, whichever failed; the other is success).
struct MatMulArgs {
  const uint8_t* w;
  quant::TensorType type;
  int64_t rows, cols, row_bytes;
  const float* x;
  int64_t x_stride;
  int n_tokens;
  float* y;
  int64_t y_stride;
};
cudaError_t LaunchMatMul(const MatMulArgs& a, const GemmScratch& scratch, cudaStream_t stream,
                         cublasStatus_t* blas_status);

}  // namespace ferry::backend::cuda
