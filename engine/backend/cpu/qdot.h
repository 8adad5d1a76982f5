// Integer dot products of quantized weight rows with activations quantized
// to 8 bits in blocks of 32 (the Q8 activation format), for the weight types
// whose blocks allow it. Each kernel has a scalar version, always available
// and tested, and AVX2 / AVX-512 VNNI versions chosen at start-up.
//
// Two layouts of a weight matrix:
// - the file's: row after row (what the sim and CUDA devices upload);
// - grouped (every type here; made by GroupRows for the cpu device, which
//   reads its weights in place): 8 rows interleaved in 4-byte runs, so one
//   256-bit register holds 4 consecutive weights of each of 8 rows and one
//   multiply-add against 4 broadcast activations advances 8 rows at once,
//   with no horizontal sums.
// Every kernel of a type, in either layout and at any SIMD level, forms a
// row's result with the same float operations in the same order (integer
// block sums are exact), so they agree bit for bit: the cpu device and the
// sim device give identical logits, and a token's result does not depend on
// what else is in the step.
//
// Per row and token, with dot_b the exact integer product of block b:
//   q8_0, q4_0, q5_0: acc = fma(float(dot_b), dw_b * dx_b, acc) over blocks b
//   q4_1, q5_1: the same, and offs = fma(m_b, dx_b * isum_b, offs) over
//               blocks b (the offset's share, m_b times the block's sum of
//               x); result acc + offs
//   q4_K, q5_K: acc = fma(float(dot_j), (d * sc_j) * dx_j, acc) and
//               mins = fma(dmin * m_j, dx_j * isum_j, mins) over sub-blocks
//               j of 32; result acc - mins
//   q6_K:       acc = fma(float(sc_a * dot_a + sc_b * dot_b), d * dx_c, acc)
//               over chunks c of 32 (halves a, b of 16 with their scales)
// (q4_0 / q5_0 dots use the unsigned 4- / 5-bit values and subtract 8 / 16
// * isum, q6_K ones the unsigned 6-bit values and 32 * the half's sum.)
#pragma once

#include <cstdint>

#include "engine/quant/types.h"

namespace ferry::cpu {

// 32 activations: x_i ~= d * qs[i]; hsum = the sums of qs[0..15] and
// qs[16..31], for formats with a per-block or per-16 offset (their dot
// products need sum(x) = d * isum()).
struct BlockQ8 {
  float d;
  int16_t hsum[2];
  int8_t qs[32];
  int32_t isum() const { return hsum[0] + hsum[1]; }
  float sum() const { return d * static_cast<float>(isum()); }
};
static_assert(sizeof(BlockQ8) == 40);

// Quantizes n activations (a multiple of 32) to n / 32 blocks: d = max|x| /
// 127, q = x * (1 / d) rounded half to even. AVX2 where the CPU has it;
// the scalar version gives the same bytes.
void QuantizeActivations(const float* x, int64_t n, BlockQ8* out);
void QuantizeActivationsScalar(const float* x, int64_t n, BlockQ8* out);

// Up to this many tokens share one pass over a weight row or group.
inline constexpr int kQDotTile = 8;

// File layout, one row: out[t] = dot(row, xs[t]) for t < n_tokens (<=
// kQDotTile), for a weight row of n elements stored as the kernel's type.
using QDotFn = void (*)(const uint8_t* row, const BlockQ8* const* xs, int n_tokens, int64_t n, float* out);

// The kernel for `type` at the given SIMD level (false: scalar); nullptr
// when the type has no integer kernel (the float path is used).
QDotFn GetQDot(quant::TensorType type, bool simd);

// Grouped layout.
inline constexpr int kGroupRows = 8;
// True for the types that have it (q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K,
// q6_K: those with an integer kernel; and f32, f16, bf16, whose groups are
// fdot.h's).
bool HasGroupedLayout(quant::TensorType type);
// Bytes of one group of 8 rows of n elements (n a multiple of the type's
// block, and even for the float types; else 0); groups of the 32-element
// types, of q6_K and of the float types are exactly 8 rows, q4_K and q5_K
// ones 32 bytes more per super-block (scales and mins unpacked to one byte
// each).
uint64_t GroupBytes(quant::TensorType type, int64_t n);
// Bytes of a matrix of `rows` rows of n elements in the grouped layout (its
// groups of 8 rows, then the rows past the last full group as in the file);
// 0 when the type has none or the matrix is too small or oddly shaped.
uint64_t GroupedMatrixBytes(quant::TensorType type, int64_t rows, int64_t n);
// Interleaves 8 rows of n elements (file layout, row_bytes apart) into one
// group of GroupBytes(type, n) bytes.
void GroupRows(quant::TensorType type, const uint8_t* rows, uint64_t row_bytes, int64_t n, uint8_t* group);
// out[t * kGroupRows + r] = dot(row r of the group, xs[t]) for t < n_tokens
// (<= kQDotTile).
using GroupDotFn = void (*)(const uint8_t* group, const BlockQ8* const* xs, int n_tokens, int64_t n, float* out);
GroupDotFn GetGroupDot(quant::TensorType type, bool simd);

// Two adjacent groups at once (16 rows, the second group_bytes after the
// first) for up to kPairMaxTokens tokens, in 512-bit registers (AVX-512
// VNNI), for the 32-element types: out[t * 16 + r]. Where the unpacking of
// the weights is shared by few tokens this halves the instructions a row;
// the same float operations per row as the group kernels. nullptr where
// the type or the CPU has none.
inline constexpr int kPairMaxTokens = 2;
using GroupPairDotFn = void (*)(const uint8_t* pair, uint64_t group_bytes, const BlockQ8* const* xs, int n_tokens,
                                int64_t n, float* out);
GroupPairDotFn GetGroupPairDot(quant::TensorType type);
GroupPairDotFn GetGroupPairDotVnni(quant::TensorType type);

// AMX (qdot_amx.cc): a step of many tokens against two groups at a time
// (16 rows; the second group_bytes after the first), y[t * y_stride + r]
// for t < n_tokens and r < 16. The tokens as PackAmxTokens lays them out;
// `panel` holds AmxPanelBytes(n) bytes of the calling thread's own. The
// same float operations per row and token as every other kernel.
inline constexpr int kAmxTokens = 16;
// Per tile of 16 tokens and block of 32 values: their 16 x 32 quantized
// values (AMX's A operand), their 16 scales d and 16 sums of x.
inline constexpr int kAmxTokenEntry = 512 + 64 + 64;
inline uint64_t AmxTokenBytes(int n_tokens, int64_t n) {
  return static_cast<uint64_t>((n_tokens + kAmxTokens - 1) / kAmxTokens) * (n / 32) * kAmxTokenEntry;
}
void PackAmxTokens(const BlockQ8* act, int n_tokens, int64_t n, uint8_t* out);
inline uint64_t AmxPanelBytes(int64_t n) { return static_cast<uint64_t>(n / 32) * 704; }
using AmxPairDotFn = void (*)(const uint8_t* pair, uint64_t group_bytes, const uint8_t* tokens, int n_tokens,
                              int64_t n, uint8_t* panel, float* y, int64_t y_stride);
// True where the CPU has AMX-INT8 and the kernel lets this process use it.
bool CpuHasAmx();
AmxPairDotFn GetAmxPairDot(quant::TensorType type);  // nullptr: no AMX kernel for the type

// The SIMD kernel sets, each in its own translation unit compiled for its
// instruction set (qdot_avx2.cc, qdot_vnni.cc); callers use GetQDot and
// GetGroupDot, tests compare every set.
QDotFn GetQDotAvx2(quant::TensorType type);
QDotFn GetQDotVnni(quant::TensorType type);
GroupDotFn GetGroupDotAvx2(quant::TensorType type);
GroupDotFn GetGroupDotVnni(quant::TensorType type);
bool CpuHasAvx2();
bool CpuHasVnni();

}  // namespace ferry::cpu
