// Integer dot products of quantized weight rows with activations quantized
// to 8 bits in blocks of 32 (the Q8 activation format), for the weight types
// whose blocks allow it. Each kernel has a scalar version, always available
// and tested, and an AVX2 version chosen at start-up.
#pragma once

#include <cstdint>

#include "engine/quant/types.h"

namespace ferry::cpu {

// 32 activations: x_i ~= d * qs[i]; isum = sum(qs), for formats with a
// per-block offset (their dot products need sum(x) = d * isum).
struct BlockQ8 {
  float d;
  int32_t isum;
  int8_t qs[32];
  float sum() const { return d * static_cast<float>(isum); }
};
static_assert(sizeof(BlockQ8) == 40);

// Quantizes n activations (a multiple of 32) to n / 32 blocks.
void QuantizeActivations(const float* x, int64_t n, BlockQ8* out);

// Up to this many tokens share one pass over a weight row: the row's blocks
// are unpacked once and multiplied into each token's accumulator.
inline constexpr int kQDotTile = 8;

// out[t] = dot(row, xs[t]) for t < n_tokens (<= kQDotTile), for a weight row
// of n elements stored as the kernel's type.
using QDotFn = void (*)(const uint8_t* row, const BlockQ8* const* xs, int n_tokens, int64_t n, float* out);

// The kernel for `type` at the given SIMD level (false: scalar); nullptr
// when the type has no integer kernel (the float path is used).
QDotFn GetQDot(quant::TensorType type, bool simd);

// A register-blocked variant: kQDotRowsTile consecutive rows (row_bytes
// apart) x n_tokens (<= kQDotRowsTile) tokens; out[r * kQDotRowsTile + t].
inline constexpr int kQDotRowsTile = 4;
using QDotRowsFn = void (*)(const uint8_t* rows, uint64_t row_bytes, const BlockQ8* const* xs, int n_tokens,
                            int64_t n, float* out);
// nullptr when `type` has none at this SIMD level (scalar has none).
QDotRowsFn GetQDotRows(quant::TensorType type, bool simd);

// The SIMD kernel sets, each in its own translation unit compiled for its
// instruction set (qdot_avx2.cc, qdot_vnni.cc); callers use GetQDot.
QDotFn GetQDotAvx2(quant::TensorType type);
QDotFn GetQDotVnni(quant::TensorType type);
QDotRowsFn GetQDotRowsAvx2(quant::TensorType type);
QDotRowsFn GetQDotRowsVnni(quant::TensorType type);

}  // namespace ferry::cpu
