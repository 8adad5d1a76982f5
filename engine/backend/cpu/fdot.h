// Products of f32, f16 and bf16 weight rows with f32 activations (the
// float types have no integer kernel: their activations are not rounded).
//
// One order of float operations for every kernel, layout and SIMD level,
// as the integer kernels have (qdot.h): per row and token, two fma chains,
// one over the even columns and one over the odd ones, each in column order
// from 0, then even + odd:
//   e = fma(w[2p], x[2p], e), o = fma(w[2p + 1], x[2p + 1], o) over p; e + o
// The weights' values are exact in f32 (f16 and bf16 widen without
// rounding), so scalar, AVX2 and AVX-512 agree bit for bit, the cpu and sim
// devices give identical logits, and a token's result does not depend on
// what else is in the step.
//
// Grouped layout (the cpu device's copy, as for the integer types; n even):
// 8 rows a group, per pair p of columns the 8 rows' values of columns 2p and
// 2p + 1 in the type's own encoding: row 0 column 2p, row 0 column 2p + 1,
// row 1 column 2p, ... So one 16-float vector holds a column pair of all 8
// rows, and one multiply-add with a token's two activations broadcast
// advances 8 rows by two columns, with no horizontal sums.
#pragma once

#include <cstdint>

#include "engine/quant/types.h"

namespace ferry::cpu {

// f32, f16, bf16.
bool IsFloatType(quant::TensorType type);

// Bytes of a group of 8 rows of n elements (0 when n is odd).
uint64_t FloatGroupBytes(quant::TensorType type, int64_t n);
// Interleaves 8 rows of n elements (file layout, row_bytes apart) into one
// group of FloatGroupBytes(type, n) bytes.
void GroupFloatRows(quant::TensorType type, const uint8_t* rows, uint64_t row_bytes, int64_t n, uint8_t* group);
// The same 8 rows widened to an f32 group (rows past `n_rows` zero): how the
// kernels take rows in the file's layout.
void GroupFloatRowsAsF32(quant::TensorType type, const uint8_t* rows, uint64_t row_bytes, int n_rows, int64_t n,
                         float* group);

// Tokens come in tiles of up to this many.
inline constexpr int kFloatTile = 16;
// Up to this many tokens (tiles one after another) share one call.
inline constexpr int kFloatSpan = 4 * kFloatTile;

// The kernels read a tile's activations by column pair: pair p of token t
// (columns 2p and 2p + 1) at xt + 2 * (p * kFloatTile + t), so the tile's
// activations for one pair are 128 contiguous bytes. PairTokens writes that
// for nt <= kFloatTile tokens of n (even) columns.
void PairTokens(const float* x, int64_t x_stride, int nt, int64_t n, float* xt);

// out[(g * nt + t) * 8 + r] = dot(row r of group g, token t) for groups g <
// n_groups (1 or 2, group_stride bytes apart) and t < nt (<= kFloatSpan),
// the tokens as PairTokens lays them out, tile i (tokens 16i ..) at
// xt + i * kFloatTile * n, n even.
using FloatGroupDotFn = void (*)(const uint8_t* group, uint64_t group_stride, int n_groups, const float* xt, int nt,
                                 int64_t n, float* out);
// The kernel for groups of `type` at the given SIMD level (false: scalar).
FloatGroupDotFn GetFloatGroupDot(quant::TensorType type, bool simd);

// The SIMD sets, each in its own translation unit (fdot_avx2.cc,
// fdot_avx512.cc); GetFloatGroupDot picks one, tests compare every set.
FloatGroupDotFn GetFloatGroupDotAvx2(quant::TensorType type);
FloatGroupDotFn GetFloatGroupDotAvx512(quant::TensorType type);
bool CpuHasAvx512();

}  // namespace ferry::cpu
