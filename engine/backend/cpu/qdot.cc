#include "engine/backend/cpu/qdot.h"

#include "engine/backend/cpu/fdot.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <type_traits>

#include "engine/quant/blocks.h"

namespace ferry::cpu {
namespace {

using namespace ferry::quant;

template <typename Block>
Block Load(const uint8_t* p) {
  Block b;
  std::memcpy(&b, p, sizeof(Block));
  return b;
}

// ---------------- scalar, file layout ----------------
// The reference order of float operations (see qdot.h); the SIMD kernels
// reproduce it lane by lane.

float DotQ8_0Scalar(const uint8_t* row, const BlockQ8* x, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const BlockQ8_0 w = Load<BlockQ8_0>(row + i * sizeof(BlockQ8_0));
    int32_t s = 0;
    for (int j = 0; j < kQK; ++j) s += w.qs[j] * x[i].qs[j];
    const float p = HalfToFloat(w.d) * x[i].d;
    acc = std::fma(static_cast<float>(s), p, acc);
  }
  return acc;
}

// sum(q * qx) over a q4_0/q4_1 (kFive false) or q5_0/q5_1 block: element
// j < 16 in the low nibble of qs[j], element j + 16 in its high nibble, and
// with kFive element j's fifth bit is bit j of qh.
template <bool kFive, class Block>
int32_t NibbleDot(const Block& w, const BlockQ8& x) {
  uint32_t qh = 0;
  if constexpr (kFive) qh = LoadQh(w.qh);
  int32_t s = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const int lo = (w.qs[j] & 0x0f) | ((qh >> j) & 1) << 4, hi = (w.qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4;
    s += lo * x.qs[j] + hi * x.qs[j + 16];
  }
  return s;
}

// q4_0 (kFive false) and q5_0 (true): w = d * (q - 8) or d * (q - 16), so
// dot = d * dx * (sum(q * qx) - 8 or 16 * isum). q5_0's fifth bit of
// element j is bit j of qh.
template <bool kFive>
float DotQx0Scalar(const uint8_t* row, const BlockQ8* x, int64_t n) {
  using Block = std::conditional_t<kFive, BlockQ5_0, BlockQ4_0>;
  float acc = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const Block w = Load<Block>(row + i * sizeof(Block));
    const int32_t s = NibbleDot<kFive>(w, x[i]) - (kFive ? 16 : 8) * x[i].isum();
    const float p = HalfToFloat(w.d) * x[i].d;
    acc = std::fma(static_cast<float>(s), p, acc);
  }
  return acc;
}

// q4_1 (kFive false) and q5_1 (true): w = d * q + m, so dot = d * dx *
// sum(q * qx) + m * sum(x); the offsets' terms go to a second sum.
template <bool kFive>
float DotQx1Scalar(const uint8_t* row, const BlockQ8* x, int64_t n) {
  using Block = std::conditional_t<kFive, BlockQ5_1, BlockQ4_1>;
  float acc = 0.0f, offs = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const Block w = Load<Block>(row + i * sizeof(Block));
    const int32_t s = NibbleDot<kFive>(w, x[i]);
    const float p = HalfToFloat(w.d) * x[i].d;
    acc = std::fma(static_cast<float>(s), p, acc);
    offs = std::fma(HalfToFloat(w.m), x[i].sum(), offs);
  }
  return acc + offs;
}

// Q4_K (kQ5 false): sub-block j of 32 has w = d*sc_j*q - dmin*m_j, so
// dot = d*sc_j*dx*sum(q*qx) - dmin*m_j*sum(x). Q5_K (true): the same with a
// fifth bit, bit j of qh[l] for element l of sub-block j.
template <bool kQ5>
float DotK45Scalar(const uint8_t* row, const BlockQ8* x, int64_t n) {
  using Block = std::conditional_t<kQ5, BlockQ5_K, BlockQ4_K>;
  float acc = 0.0f, mins = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, x += 8) {
    const Block w = Load<Block>(row + i * sizeof(Block));
    const float d = HalfToFloat(w.d), dmin = HalfToFloat(w.dmin);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      ScaleMinK4(j, w.scales, &sc, &m);
      const uint8_t* q = w.qs + 32 * (j / 2);
      int32_t s = 0;
      for (int l = 0; l < 32; ++l) {
        int v = (j % 2 == 0) ? (q[l] & 0x0f) : (q[l] >> 4);
        if constexpr (kQ5) v += 16 * ((w.qh[l] >> j) & 1);
        s += v * x[j].qs[l];
      }
      const float p = (d * static_cast<float>(sc)) * x[j].d;
      acc = std::fma(static_cast<float>(s), p, acc);
      mins = std::fma(dmin * static_cast<float>(m), x[j].sum(), mins);
    }
  }
  return acc - mins;
}

// Q6_K: chunk k (0..3) of half h holds elements 128h + 32k + l; its 6-bit
// values come from ql (low nibbles of bytes l or l+32) and qh (bits 2k..2k+1).
float DotQ6_KScalar(const uint8_t* row, const BlockQ8* x, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const BlockQ6_K w = Load<BlockQ6_K>(row + i * sizeof(BlockQ6_K));
    const float d = HalfToFloat(w.d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = w.ql + 64 * h;
      const uint8_t* qh = w.qh + 32 * h;
      for (int k = 0; k < 4; ++k) {
        const BlockQ8& xb = x[8 * i + 4 * h + k];
        int32_t s[2] = {0, 0};
        for (int l = 0; l < 32; ++l) {
          const uint8_t lo = k % 2 == 0 ? ql[l] : ql[l + 32];
          const int q = (((k < 2) ? (lo & 0x0f) : (lo >> 4)) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
          s[l / 16] += q * xb.qs[l];
        }
        const int sub = 8 * h + 2 * k;
        const int32_t si = w.scales[sub] * s[0] + w.scales[sub + 1] * s[1];
        const float p = d * xb.d;
        acc = std::fma(static_cast<float>(si), p, acc);
      }
    }
  }
  return acc;
}

// Scalar kernels one token at a time.
template <float (*kDot)(const uint8_t*, const BlockQ8*, int64_t)>
void Tile(const uint8_t* row, const BlockQ8* const* xs, int nt, int64_t n, float* out) {
  for (int t = 0; t < nt; ++t) out[t] = kDot(row, xs[t], n);
}

// ---------------- grouped layout ----------------
// A group of a 32-element type, per block of 32 columns: the 8 rows' d
// (f16), q4_1 / q5_1 then their m (f16), q5_0 / q5_1 then their fifth bits
// (4 bytes a row, see GroupQh), then the rows' weight bytes in runs of 4:
// run k holds bytes 4k..4k+3 of row 0, then of row 1, ..., row 7. The
// 4-bit types keep their nibbles (low nibble of byte j = element j, high =
// element j + 16); q8_0 stores w + 128 (w ^ 0x80) so the bytes are the
// unsigned operand of VNNI's multiply-add. Exactly the 8 rows' bytes.
constexpr uint64_t kGroupHeadK = 16 + 16 + 64 + 64;
constexpr uint64_t kGroupQhK = 8 * 32;
constexpr uint64_t kGroupQlAt6 = 16 + 128, kGroupQhAt6 = kGroupQlAt6 + 1024;

// Where the parts of a 32-element type's group block lie (qdot_simd.inc
// spells the same offsets).
struct BlockGroup {
  int m, qh, qs, bytes;  // offsets of the m, qh and qs parts; bytes of the block
  bool offset, five;     // w = d * q + m (q4_1, q5_1); a fifth bit (q5_0, q5_1)
};
constexpr BlockGroup BlockGroupOf(TensorType type) {
  const bool offset = type == TensorType::kQ4_1 || type == TensorType::kQ5_1;
  const bool five = type == TensorType::kQ5_0 || type == TensorType::kQ5_1;
  const int qh = 16 + (offset ? 16 : 0), qs = qh + (five ? 32 : 0);
  return {16, qh, qs, qs + (type == TensorType::kQ8_0 ? 256 : 128), offset, five};
}

// q5_0 / q5_1 fifth bits as the grouped kernels read them: bit k of byte b
// is element 4k + b's, bit 4 + k element 16 + 4k + b's (the low and high
// nibble of byte b of run k), so one shift and a mask put a run's fifth bits
// at bit 4 of their bytes, in every row's lane at once.
uint32_t GroupQh(uint32_t qh) {
  uint32_t out = 0;
  for (int b = 0; b < 4; ++b) {
    for (int k = 0; k < 4; ++k) {
      out |= ((qh >> (4 * k + b)) & 1) << (8 * b + k);
      out |= ((qh >> (16 + 4 * k + b)) & 1) << (8 * b + 4 + k);
    }
  }
  return out;
}

float GroupHalf(const uint8_t* p, int r) { return HalfToFloat(static_cast<uint16_t>(p[2 * r] | p[2 * r + 1] << 8)); }

void Interleave4(const uint8_t* const* rows, int bytes, uint8_t xor_mask, uint8_t* out) {
  for (int k = 0; k < bytes / 4; ++k) {
    for (int r = 0; r < kGroupRows; ++r) {
      for (int b = 0; b < 4; ++b) *out++ = rows[r][4 * k + b] ^ xor_mask;
    }
  }
}

// out[t * 8 + r] for the scalar grouped kernels: the group's rows are read
// back from the interleaved bytes and go through the scalar row arithmetic.
void GroupDotScalar(TensorType type, const uint8_t* g, const BlockQ8* const* xs, int nt, int64_t n, float* out) {
  for (int r = 0; r < kGroupRows; ++r) {
    for (int t = 0; t < nt; ++t) {
      float acc = 0.0f, mins = 0.0f;
      const BlockQ8* x = xs[t];
      if (type == TensorType::kQ6_K) {
        for (int64_t i = 0; i < n / kQK_K; ++i) {
          const uint8_t* b = g + i * GroupBytes(type, kQK_K);
          const float d = HalfToFloat(static_cast<uint16_t>(b[2 * r] | b[2 * r + 1] << 8));
          for (int h = 0; h < 2; ++h) {
            for (int k = 0; k < 4; ++k) {
              const BlockQ8& xb = x[8 * i + 4 * h + k];
              int32_t s[2] = {0, 0};
              for (int l = 0; l < 32; ++l) {
                const int ql_byte = 64 * h + 32 * (k % 2) + l, qh_byte = 32 * h + l;
                const uint8_t lo = b[kGroupQlAt6 + 32 * (ql_byte / 4) + 4 * r + ql_byte % 4];
                const uint8_t hi = b[kGroupQhAt6 + 32 * (qh_byte / 4) + 4 * r + qh_byte % 4];
                const int q = ((k < 2 ? (lo & 0x0f) : (lo >> 4)) | (((hi >> (2 * k)) & 3) << 4)) - 32;
                s[l / 16] += q * xb.qs[l];
              }
              const int sub = 8 * h + 2 * k;
              const int32_t si = static_cast<int8_t>(b[16 + 8 * sub + r]) * s[0] +
                                 static_cast<int8_t>(b[16 + 8 * (sub + 1) + r]) * s[1];
              const float p = d * xb.d;
              acc = std::fma(static_cast<float>(si), p, acc);
            }
          }
        }
        out[t * kGroupRows + r] = acc;
        continue;
      }
      if (type == TensorType::kQ4_K || type == TensorType::kQ5_K) {
        const bool q5 = type == TensorType::kQ5_K;
        for (int64_t i = 0; i < n / kQK_K; ++i) {
          const uint8_t* b = g + i * GroupBytes(type, kQK_K);
          const float d = HalfToFloat(static_cast<uint16_t>(b[2 * r] | b[2 * r + 1] << 8));
          const float dmin = HalfToFloat(static_cast<uint16_t>(b[16 + 2 * r] | b[16 + 2 * r + 1] << 8));
          for (int j = 0; j < 8; ++j) {
            const uint8_t sc = b[32 + 8 * j + r], m = b[96 + 8 * j + r];
            const BlockQ8& xb = x[8 * i + j];
            const uint8_t* run = b + kGroupHeadK + (q5 ? kGroupQhK : 0) + 256 * (j / 2);
            int32_t s = 0;
            for (int l = 0; l < 32; ++l) {
              const int at = 32 * (l / 4) + 4 * r + l % 4;
              const int fifth = q5 ? 16 * ((b[kGroupHeadK + at] >> j) & 1) : 0;
              s += ((j % 2 == 0 ? (run[at] & 0x0f) : (run[at] >> 4)) + fifth) * xb.qs[l];
            }
            const float p = (d * static_cast<float>(sc)) * xb.d;
            acc = std::fma(static_cast<float>(s), p, acc);
            mins = std::fma(dmin * static_cast<float>(m), xb.sum(), mins);
          }
        }
        out[t * kGroupRows + r] = acc - mins;
        continue;
      }
      // 32-element blocks: the arithmetic of DotQ8_0Scalar, DotQx0Scalar and
      // DotQx1Scalar.
      const bool q8 = type == TensorType::kQ8_0;
      const BlockGroup L = BlockGroupOf(type);
      float offs = 0.0f;
      for (int64_t i = 0; i < n / kQK; ++i) {
        const uint8_t* b = g + i * L.bytes;
        const uint8_t* qs = b + L.qs;
        int32_t s = 0;
        if (q8) {
          for (int l = 0; l < kQK; ++l) {
            s += static_cast<int8_t>(qs[32 * (l / 4) + 4 * r + l % 4] ^ 0x80) * x[i].qs[l];
          }
        } else {
          for (int l = 0; l < kQK / 2; ++l) {
            const uint8_t byte = qs[32 * (l / 4) + 4 * r + l % 4];
            int lo = byte & 0x0f, hi = byte >> 4;
            if (L.five) {
              const uint8_t h = b[L.qh + 4 * r + l % 4];
              lo |= ((h >> (l / 4)) & 1) << 4;
              hi |= ((h >> (4 + l / 4)) & 1) << 4;
            }
            s += lo * x[i].qs[l] + hi * x[i].qs[l + 16];
          }
          if (!L.offset) s -= (L.five ? 16 : 8) * x[i].isum();
        }
        const float p = GroupHalf(b, r) * x[i].d;
        acc = std::fma(static_cast<float>(s), p, acc);
        if (L.offset) offs = std::fma(GroupHalf(b + L.m, r), x[i].sum(), offs);
      }
      out[t * kGroupRows + r] = L.offset ? acc + offs : acc;
    }
  }
}

template <TensorType kType>
void GroupDotScalarOf(const uint8_t* g, const BlockQ8* const* xs, int nt, int64_t n, float* out) {
  GroupDotScalar(kType, g, xs, nt, n, out);
}

}  // namespace

bool HasGroupedLayout(TensorType type) { return GroupBytes(type, kQK_K) != 0; }

uint64_t GroupBytes(TensorType type, int64_t n) {
  switch (type) {
    case TensorType::kQ4_0:
    case TensorType::kQ4_1:
    case TensorType::kQ5_0:
    case TensorType::kQ5_1:
    case TensorType::kQ8_0: return static_cast<uint64_t>(n / kQK) * BlockGroupOf(type).bytes;
    case TensorType::kQ4_K: return static_cast<uint64_t>(n / kQK_K) * (kGroupHeadK + kGroupRows * kQK_K / 2);
    case TensorType::kQ5_K:
      return static_cast<uint64_t>(n / kQK_K) * (kGroupHeadK + kGroupQhK + kGroupRows * kQK_K / 2);
    case TensorType::kQ6_K: return static_cast<uint64_t>(n / kQK_K) * kGroupRows * sizeof(BlockQ6_K);
    default: return FloatGroupBytes(type, n);
  }
}

uint64_t GroupedMatrixBytes(TensorType type, int64_t rows, int64_t n) {
  if (!HasGroupedLayout(type) || rows < kGroupRows || n % quant::Info(type).block_elems != 0 ||
      GroupBytes(type, n) == 0) {
    return 0;
  }
  const int64_t groups = rows / kGroupRows;
  return groups * GroupBytes(type, n) + (rows - groups * kGroupRows) * *quant::RowBytes(type, n);
}

void GroupRows(TensorType type, const uint8_t* rows, uint64_t row_bytes, int64_t n, uint8_t* group) {
  if (IsFloatType(type)) return GroupFloatRows(type, rows, row_bytes, n, group);
  const uint8_t* row[kGroupRows];
  if (type == TensorType::kQ6_K) {
    const uint8_t* qh[kGroupRows];
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      uint8_t* out = group + i * GroupBytes(type, kQK_K);
      for (int r = 0; r < kGroupRows; ++r) {
        const uint8_t* b = rows + r * row_bytes + i * sizeof(BlockQ6_K);
        std::memcpy(out + 2 * r, b + offsetof(BlockQ6_K, d), 2);
        for (int sub = 0; sub < 16; ++sub) out[16 + 8 * sub + r] = b[offsetof(BlockQ6_K, scales) + sub];
        row[r] = b + offsetof(BlockQ6_K, ql);
        qh[r] = b + offsetof(BlockQ6_K, qh);
      }
      Interleave4(row, kQK_K / 2, 0, out + kGroupQlAt6);
      Interleave4(qh, kQK_K / 4, 0, out + kGroupQhAt6);
    }
    return;
  }
  if (type == TensorType::kQ4_K || type == TensorType::kQ5_K) {
    const bool q5 = type == TensorType::kQ5_K;
    const uint64_t block_bytes = q5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
    const uint8_t* qh[kGroupRows];
    for (int64_t i = 0; i < n / kQK_K; ++i) {
      uint8_t* out = group + i * GroupBytes(type, kQK_K);
      for (int r = 0; r < kGroupRows; ++r) {
        const uint8_t* b = rows + r * row_bytes + i * block_bytes;
        std::memcpy(out + 2 * r, b, 2);
        std::memcpy(out + 16 + 2 * r, b + 2, 2);
        for (int j = 0; j < 8; ++j) ScaleMinK4(j, b + 4, &out[32 + 8 * j + r], &out[96 + 8 * j + r]);
        qh[r] = b + 4 + kScaleBytesK;
        row[r] = b + 4 + kScaleBytesK + (q5 ? kQK_K / 8 : 0);
      }
      if (q5) Interleave4(qh, kQK_K / 8, 0, out + kGroupHeadK);
      Interleave4(row, kQK_K / 2, 0, out + kGroupHeadK + (q5 ? kGroupQhK : 0));
    }
    return;
  }
  // 32-element blocks: d at 0, m at 2 (q4_1, q5_1), qh next (q5_0, q5_1), qs last.
  const BlockGroup L = BlockGroupOf(type);
  const uint64_t block_bytes = Info(type).block_bytes;
  const int m_at = 2, qh_at = L.offset ? 4 : 2, qs_at = qh_at + (L.five ? 4 : 0);
  for (int64_t i = 0; i < n / kQK; ++i) {
    uint8_t* out = group + i * L.bytes;
    for (int r = 0; r < kGroupRows; ++r) {
      const uint8_t* b = rows + r * row_bytes + i * block_bytes;
      std::memcpy(out + 2 * r, b, 2);
      if (L.offset) std::memcpy(out + L.m + 2 * r, b + m_at, 2);
      if (L.five) {
        const uint32_t qh = GroupQh(LoadQh(b + qh_at));
        for (int k = 0; k < 4; ++k) out[L.qh + 4 * r + k] = static_cast<uint8_t>(qh >> (8 * k));
      }
      row[r] = b + qs_at;
    }
    Interleave4(row, static_cast<int>(block_bytes) - qs_at, type == TensorType::kQ8_0 ? 0x80 : 0, out + L.qs);
  }
}

namespace {

void QuantizeBlockScalar(const float* x, BlockQ8* out) {
  float amax = 0.0f;
  bool finite = true;
  for (int i = 0; i < 32; ++i) {
    amax = std::max(amax, std::fabs(x[i]));
    finite = finite && std::isfinite(x[i]);
  }
  // A NaN or infinity (a hostile file's weights, a poisoned slot) must
  // reach the output as NaN, not as undefined float-to-int conversions.
  const float d = finite ? amax / 127.0f : std::numeric_limits<float>::quiet_NaN();
  const float id = finite && d != 0.0f ? 1.0f / d : 0.0f;
  int32_t sum[2] = {0, 0};
  for (int i = 0; i < 32; ++i) {
    const int q = finite ? static_cast<int>(std::nearbyint(x[i] * id)) : 0;
    out->qs[i] = static_cast<int8_t>(q);
    sum[i / 16] += q;
  }
  out->d = d;
  out->hsum[0] = static_cast<int16_t>(sum[0]);
  out->hsum[1] = static_cast<int16_t>(sum[1]);
}

// The same numbers as QuantizeBlockScalar (max is exact, the products are
// the same float multiplications, cvtps rounds half to even like nearbyint
// in the default rounding mode); blocks with a NaN or infinity go to the
// scalar code.
__attribute__((target("avx2"))) inline int32_t SumLanes(__m256i v) {
  __m128i r = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0x4e));
  r = _mm_add_epi32(r, _mm_shuffle_epi32(r, 0xb1));
  return _mm_cvtsi128_si32(r);
}

__attribute__((target("avx2,fma"))) void QuantizeActivationsAvx2(const float* x, int64_t n, BlockQ8* out) {
  const __m256 sign = _mm256_set1_ps(-0.0f), zero = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    __m256 v[4];
    for (int k = 0; k < 4; ++k) v[k] = _mm256_loadu_ps(x + 8 * k);
    // x * 0 is NaN exactly when x is NaN or infinite.
    const __m256 probe = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(v[0], zero), _mm256_mul_ps(v[1], zero)),
                                       _mm256_add_ps(_mm256_mul_ps(v[2], zero), _mm256_mul_ps(v[3], zero)));
    if (_mm256_movemask_ps(_mm256_cmp_ps(probe, probe, _CMP_UNORD_Q)) != 0) {
      QuantizeBlockScalar(x, out + b);
      continue;
    }
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                             _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], idv));
    // The two halves' sums: elements 0..15 are q[0], q[1], 16..31 q[2], q[3].
    const int32_t lo = SumLanes(_mm256_add_epi32(q[0], q[1])), hi = SumLanes(_mm256_add_epi32(q[2], q[3]));
    // int32 -> int8 (no saturation: |q| <= 127); packs interleave 128-bit
    // lanes, the permutation puts the elements back in order.
    const __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    const __m256i ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs), ordered);
    out[b].d = d;
    out[b].hsum[0] = static_cast<int16_t>(lo);
    out[b].hsum[1] = static_cast<int16_t>(hi);
  }
}

}  // namespace

void QuantizeActivations(const float* x, int64_t n, BlockQ8* out) {
  if (CpuHasAvx2()) return QuantizeActivationsAvx2(x, n, out);
  QuantizeActivationsScalar(x, n, out);
}

void QuantizeActivationsScalar(const float* x, int64_t n, BlockQ8* out) {
  for (int64_t b = 0; b < n / 32; ++b) QuantizeBlockScalar(x + 32 * b, out + b);
}

bool CpuHasVnni() {
  static const bool vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
  return vnni;
}

bool CpuHasAvx2() {
  static const bool avx2 =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  return avx2;
}

QDotFn GetQDot(TensorType type, bool simd) {
  if (simd) {
    if (CpuHasVnni()) return GetQDotVnni(type);
    if (CpuHasAvx2()) return GetQDotAvx2(type);
  }
  switch (type) {
    case TensorType::kQ8_0: return Tile<DotQ8_0Scalar>;
    case TensorType::kQ4_0: return Tile<DotQx0Scalar<false>>;
    case TensorType::kQ5_0: return Tile<DotQx0Scalar<true>>;
    case TensorType::kQ4_1: return Tile<DotQx1Scalar<false>>;
    case TensorType::kQ5_1: return Tile<DotQx1Scalar<true>>;
    case TensorType::kQ4_K: return Tile<DotK45Scalar<false>>;
    case TensorType::kQ5_K: return Tile<DotK45Scalar<true>>;
    case TensorType::kQ6_K: return Tile<DotQ6_KScalar>;
    default: return nullptr;
  }
}

GroupPairDotFn GetGroupPairDot(TensorType type) {
  static const bool avx512bw = __builtin_cpu_supports("avx512bw");
  return CpuHasVnni() && avx512bw ? GetGroupPairDotVnni(type) : nullptr;
}

GroupDotFn GetGroupDot(TensorType type, bool simd) {
  if (simd) {
    if (CpuHasVnni()) return GetGroupDotVnni(type);
    if (CpuHasAvx2()) return GetGroupDotAvx2(type);
  }
  switch (type) {
    case TensorType::kQ8_0: return GroupDotScalarOf<TensorType::kQ8_0>;
    case TensorType::kQ4_0: return GroupDotScalarOf<TensorType::kQ4_0>;
    case TensorType::kQ4_1: return GroupDotScalarOf<TensorType::kQ4_1>;
    case TensorType::kQ5_0: return GroupDotScalarOf<TensorType::kQ5_0>;
    case TensorType::kQ5_1: return GroupDotScalarOf<TensorType::kQ5_1>;
    case TensorType::kQ4_K: return GroupDotScalarOf<TensorType::kQ4_K>;
    case TensorType::kQ5_K: return GroupDotScalarOf<TensorType::kQ5_K>;
    case TensorType::kQ6_K: return GroupDotScalarOf<TensorType::kQ6_K>;
    default: return nullptr;
  }
}

}  // namespace ferry::cpu
