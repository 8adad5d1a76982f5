// Integer matvec (the default; --device cuda:...,int8=0 turns it off): activations quantized
// to int8 per 32 values (d = max|x| / 127, q = x / d rounded half to even:
// the cpu backend's cpu::QuantizeActivations, byte for byte), weights taken
// as their integer quants, four products per __dp4a, one float multiply per
// 32 values. For q8_0, q4_0, q4_K, q5_K and q6_K at up to kMatVecMaxTokens
// tokens; the float matvec (matmul.cuh) does everything else. Its result is
// the exact product of the weights with the quantized activations, up to
// float rounding (tests/cuda_test.cc checks that against a host emulation).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "engine/backend/cuda/matmul.cuh"
#include "engine/quant/type_ids.h"

namespace ferry::backend::cuda {

bool MatVecInt8Supports(quant::TensorType type);

// Room for the quantized activations of `tokens` rows of `width` values:
// q (tokens x width int8), then d (float) and isum (int32) per 32 values.
struct Int8Activations {
  int8_t* q = nullptr;
  float* d = nullptr;
  int32_t* isum = nullptr;
};

// Quantizes a.x (a.n_tokens rows, a.cols values, a.x_stride apart) into
// `act`, unless `quantized` says `act` holds exactly that already (the
// last product read the same activations), then y = w x on the integers.
// a.n_tokens <= kMatVecMaxTokens.
cudaError_t LaunchMatVecInt8(const MatMulArgs& a, const Int8Activations& act, bool quantized, cudaStream_t stream);

}  // namespace ferry::backend::cuda
