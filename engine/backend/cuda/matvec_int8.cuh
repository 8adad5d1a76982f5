// Integer matvec (the default; --device cuda:...,int8=0 turns it off): activations quantized
// to int8 per 32 values (d = max|x| / 127, q = x / d rounded half to even:
// the cpu backend's cpu::QuantizeActivations, byte for byte), weights taken
// as their integer quants, four products per __dp4a, one float multiply per
// 32 values. For q8_0, q4_0, q4_K, q5_K and q6_K at up to kMatVecMaxTokens
// tokens, and q4_1, q5_0, q5_1 where asked (`more`: not yet run on a GPU);
// the float matvec (matmul.cuh) does everything else. Its result is
// the exact product of the weights with the quantized activations, up to
// float rounding (tests/cuda_test.cc checks that against a host emulation).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/backend/cuda/matmul.cuh"
#include "engine/quant/type_ids.h"

namespace ferry::backend::cuda {

bool MatVecInt8Supports(quant::TensorType type, bool more);

// Room for the quantized activations of `tokens` rows of `width` values:
// q (tokens x width int8), then d (float) and isum (int32) per 32 values.
struct Int8Activations {
  int8_t* q = nullptr;
  float* d = nullptr;
  int32_t* isum = nullptr;
};

// (Any type MatVecInt8Supports(type, true) takes.) Quantizes x (n rows of
// `cols` values, x_stride apart; n <= kMatVecMaxTokens)
// into `act`, unless `quantized` says `act` holds exactly that already (the
// last product read the same activations), then, on the integers, up to
// three matrices of one type and width in one launch:
// y_p[t * ys_p + r] = dot(row r of w_p, x_t). With gated >= 0
// (two parts of equal rows: gate, up), part 0's output gets
// Gate(gate row, up row) instead (gated 1: GELU-tanh, 0: SiLU), and part 1's
// output is not written.
struct Int8Part {
  const uint8_t* w;
  int64_t rows, row_bytes;
  float* y;
  int64_t ys;
};
struct Int8Rows {
  Int8Part part[3];
  int count = 0;
  bool accumulate = false;  // y += the product (not gated): the residual add in the same launch
};
cudaError_t LaunchMatVecInt8Rows(quant::TensorType type, const Int8Rows& m, const float* x, int64_t x_stride,
                                 int64_t cols, int n, const Int8Activations& act, bool quantized, int gated,
                                 cudaStream_t stream);

}  // namespace ferry::backend::cuda
