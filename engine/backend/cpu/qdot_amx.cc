// AMX kernels (Intel Sapphire Rapids and later; built with -mamx-tile
// -mamx-int8 -mavx512f ...; chosen at run time): steps of many tokens against
// the grouped layout, two groups (16 rows) at a time.
//
// The grouped layout's runs are AMX's B operand as they stand: a B row holds
// 4 consecutive values of each of 16 columns, and a run holds 4 consecutive
// weights of each of a group's 8 rows. So a pair of groups is unpacked once
// into a panel of signed bytes (per block of 32: 8 B rows of 64 bytes, the
// two groups' runs side by side) with its scales as floats, and every tile of
// 16 tokens then takes, per block, one TDPBSSD of its activations (the A
// operand: 16 tokens' 32 quantized values, read where QuantizeActivations
// put them) with the block's B rows: the exact integer dots of 16 tokens x 16
// rows. Those go through the float operations of qdot.h's reference order,
// lane by lane (a lane is a row, a register a token), so the results are the
// other kernels' bit for bit.
#pragma GCC diagnostic ignored "-Wuninitialized"  // gcc 12's AVX-512 intrinsics (see fdot_avx512.cc)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "engine/backend/cpu/qdot.h"
#include "engine/quant/blocks.h"

namespace ferry::cpu {
namespace {

using quant::TensorType;
using quant::kQK_K;

// Asks Linux for the AMX tile state (off by default for a process: its
// 8 KiB make every context switch larger).
bool RequestAmx() {
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

// A panel entry per block of 32 values: the B rows, then three vectors of
// 16 floats: the scale (d, or d * sc for the k-quants), the offset (m, or
// dmin * m) or, for q6_K, the two half scales.
constexpr int kEntryB = 512, kEntryBytes = kEntryB + 3 * 64;

// The epilogue a type needs.
enum class Kind { kPlain, kOffsetAdd, kOffsetSub, kSixK };

constexpr Kind KindOf(TensorType t) {
  switch (t) {
    case TensorType::kQ4_1:
    case TensorType::kQ5_1: return Kind::kOffsetAdd;
    case TensorType::kQ4_K:
    case TensorType::kQ5_K: return Kind::kOffsetSub;
    case TensorType::kQ6_K: return Kind::kSixK;
    default: return Kind::kPlain;
  }
}

inline __m256 Halves(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline __m256 Bytes(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline __m256 SignedBytes(const uint8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline __m256i Load256(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// Writes one group's half of a panel entry: its 8 runs u[k] (signed bytes,
// elements 4k..4k+3 of each row) and its 8 rows' lanes of the vectors.
inline void Put(uint8_t* entry, int half, const __m256i* u, __m256 v0, __m256 v1, __m256 v2) {
  for (int k = 0; k < 8; ++k) _mm256_storeu_si256(reinterpret_cast<__m256i*>(entry + 64 * k + 32 * half), u[k]);
  float* f = reinterpret_cast<float*>(entry + kEntryB) + 8 * half;
  _mm256_storeu_ps(f, v0);
  _mm256_storeu_ps(f + 16, v1);
  _mm256_storeu_ps(f + 32, v2);
}

// One group (`half` 0 or 1 of the pair) of a 32-element type into the panel,
// qdot.cc's block layout: d, m (kOffset), the fifth bits (kFive), the runs.
template <TensorType kType>
void UnpackSimple(const uint8_t* g, int64_t blocks, int half, uint8_t* panel) {
  constexpr bool kOffset = kType == TensorType::kQ4_1 || kType == TensorType::kQ5_1;
  constexpr bool kFive = kType == TensorType::kQ5_0 || kType == TensorType::kQ5_1;
  constexpr bool kEight = kType == TensorType::kQ8_0;
  constexpr int kQhAt = kOffset ? 32 : 16, kQsAt = kQhAt + (kFive ? 32 : 0), kBytes = kQsAt + (kEight ? 256 : 128);
  // q4_0 and q5_0 quants enter signed (q - 8, q - 16): the same integer dots.
  const __m256i low4 = _mm256_set1_epi8(0x0f), bit4 = _mm256_set1_epi8(0x10);
  const __m256i bias = _mm256_set1_epi8(kType == TensorType::kQ4_0 ? 8 : kType == TensorType::kQ5_0 ? 16 : 0);
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b, g += kBytes) {
    __m256i u[8];
    if constexpr (kEight) {
      for (int k = 0; k < 8; ++k) u[k] = _mm256_xor_si256(Load256(g + kQsAt + 32 * k), _mm256_set1_epi8(-128));
    } else {
      const __m256i qh = kFive ? Load256(g + kQhAt) : _mm256_setzero_si256();
      auto run = [&]<int k>() {
        const __m256i r = Load256(g + kQsAt + 32 * k);
        u[k] = _mm256_and_si256(r, low4);
        u[4 + k] = _mm256_and_si256(_mm256_srli_epi16(r, 4), low4);
        if constexpr (kFive) {
          u[k] = _mm256_or_si256(u[k], _mm256_and_si256(_mm256_slli_epi32(qh, 4 - k), bit4));
          u[4 + k] = _mm256_or_si256(u[4 + k], _mm256_and_si256(_mm256_srli_epi32(qh, k), bit4));
        }
        u[k] = _mm256_sub_epi8(u[k], bias);
        u[4 + k] = _mm256_sub_epi8(u[4 + k], bias);
      };
      run.template operator()<0>();
      run.template operator()<1>();
      run.template operator()<2>();
      run.template operator()<3>();
    }
    Put(panel + b * kEntryBytes, half, u, Halves(g), kOffset ? Halves(g + 16) : zero, zero);
  }
}

// q4_K and q5_K groups (qdot.cc): per super-block d, dmin, scales and mins
// by sub-block, the q5_K fifth bits, the nibble runs.
template <bool kQ5>
void UnpackK45(const uint8_t* g, int64_t n, int half, uint8_t* panel) {
  constexpr uint64_t kGroup = 160 + (kQ5 ? 256 : 0) + 1024;
  const __m256i low4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK_K; ++i, g += kGroup) {
    const __m256 d = Halves(g), dmin = Halves(g + 16);
    const uint8_t* qh = g + 160;
    const uint8_t* qs = g + 160 + (kQ5 ? 256 : 0);
    for (int j = 0; j < 8; ++j) {
      __m256i u[8];
      for (int k = 0; k < 8; ++k) {
        const __m256i run = Load256(qs + 256 * (j / 2) + 32 * k);
        u[k] = _mm256_and_si256(j % 2 == 0 ? run : _mm256_srli_epi16(run, 4), low4);
        if constexpr (kQ5) {
          const __m256i bit = _mm256_and_si256(_mm256_srl_epi16(Load256(qh + 32 * k), _mm_cvtsi32_si128(j)), one);
          u[k] = _mm256_or_si256(u[k], _mm256_slli_epi16(bit, 4));
        }
      }
      // d * sc and dmin * m: the products the other kernels form.
      Put(panel + (8 * i + j) * kEntryBytes, half, u, _mm256_mul_ps(d, Bytes(g + 32 + 8 * j)),
          _mm256_mul_ps(dmin, Bytes(g + 96 + 8 * j)), zero);
    }
  }
}

// q6_K groups (qdot.cc): d, the 16 scales by sub-block, ql runs, qh runs;
// quants enter signed (q - 32).
void UnpackQ6K(const uint8_t* g, int64_t n, int half, uint8_t* panel) {
  constexpr uint64_t kGroup = 8 * sizeof(quant::BlockQ6_K);
  const __m256i low4 = _mm256_set1_epi8(0x0f), high2 = _mm256_set1_epi8(0x30), bias = _mm256_set1_epi8(32);
  for (int64_t i = 0; i < n / kQK_K; ++i, g += kGroup) {
    const __m256 d = Halves(g);
    const uint8_t* sc = g + 16;
    const uint8_t* ql = g + 144;
    const uint8_t* qhs = ql + 1024;
    for (int h = 0; h < 2; ++h) {
      for (int k = 0; k < 4; ++k) {
        __m256i u[8];
        for (int m = 0; m < 8; ++m) {
          const __m256i lo = Load256(ql + 32 * (16 * h + 8 * (k % 2) + m));
          const __m256i nib = _mm256_and_si256(k < 2 ? lo : _mm256_srli_epi16(lo, 4), low4);
          // Bits 2k, 2k + 1 of each qh byte to bits 4, 5 (16-bit shifts; the
          // mask drops what crossed from the neighbouring byte).
          const __m256i qh = Load256(qhs + 32 * (8 * h + m));
          const __m256i hi = _mm256_and_si256(k < 2 ? _mm256_sll_epi16(qh, _mm_cvtsi32_si128(4 - 2 * k))
                                                    : _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k - 4)),
                                              high2);
          u[m] = _mm256_sub_epi8(_mm256_or_si256(nib, hi), bias);
        }
        const int sub = 8 * h + 2 * k;
        Put(panel + (8 * i + 4 * h + k) * kEntryBytes, half, u, d, SignedBytes(sc + 8 * sub),
            SignedBytes(sc + 8 * (sub + 1)));
      }
    }
  }
}

template <TensorType kType>
void Unpack(const uint8_t* g, int64_t n, int half, uint8_t* panel) {
  if constexpr (kType == TensorType::kQ4_K || kType == TensorType::kQ5_K) {
    UnpackK45<kType == TensorType::kQ5_K>(g, n, half, panel);
  } else if constexpr (kType == TensorType::kQ6_K) {
    UnpackQ6K(g, n, half, panel);
  } else {
    UnpackSimple<kType>(g, n / 32, half, panel);
  }
}

struct TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles 0, 1: C (16 tokens x 16 rows of int32); 2, 3: A (16 tokens x 32
// bytes, q6_K 16: a half); 4, 5: B (8 rows of 64 bytes, q6_K 4).
void Configure(bool halves) {
  TileConfig c;
  for (int t = 0; t < 2; ++t) c.rows[t] = 16, c.colsb[t] = 64;
  for (int t = 2; t < 4; ++t) c.rows[t] = 16, c.colsb[t] = halves ? 16 : 32;
  for (int t = 4; t < 6; ++t) c.rows[t] = halves ? 4 : 8, c.colsb[t] = 64;
  _tile_loadconfig(&c);
}

// One block's product into C tile `kC` and on to `c`: kC and its A and B
// tiles are 0, 2, 4 or 1, 3, 5 (gcc's tile intrinsics paste the tile number
// into the instruction: it must be a literal). A: 16 tokens' values, 32 (or
// `a_stride`) bytes apart.
template <int kC>
__attribute__((always_inline)) inline void Product(const uint8_t* a, int a_stride, const uint8_t* b_rows, int32_t* c) {
  if constexpr (kC == 0) {
    _tile_loadd(2, a, a_stride);
    _tile_loadd(4, b_rows, 64);
    _tile_zero(0);
    _tile_dpbssd(0, 2, 4);
    _tile_stored(0, c, 64);
  } else {
    _tile_loadd(3, a, a_stride);
    _tile_loadd(5, b_rows, 64);
    _tile_zero(1);
    _tile_dpbssd(1, 3, 5);
    _tile_stored(1, c, 64);
  }
}

// acc[t] = fma(float(c[t]), scale * dx[t], acc[t]) for the 16 tokens.
__attribute__((always_inline)) inline void Accumulate(const int32_t* c, const float* scale, const float* dx,
                                                      __m512 (&acc)[16]) {
  const __m512 s = _mm512_loadu_ps(scale);
  for (int t = 0; t < 16; ++t) {
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(c + 16 * t)), _mm512_mul_ps(s, _mm512_set1_ps(dx[t])),
                             acc[t]);
  }
}

// One tile of 16 tokens (`tokens`: its entries, PackAmxTokens) against the
// panel: out[t * 16 + r], t < 16.
template <Kind kKind>
void Tile(const uint8_t* panel, const uint8_t* tokens, int64_t blocks, float* out) {
  __m512 acc[16];
  for (__m512& v : acc) v = _mm512_setzero_ps();
  auto dx = [&](int64_t b) { return reinterpret_cast<const float*>(tokens + b * kAmxTokenEntry + 512); };
  auto scale = [&](int64_t b) { return reinterpret_cast<const float*>(panel + b * kEntryBytes + kEntryB); };
  if constexpr (kKind == Kind::kSixK) {
    // Halves a and b of each chunk: sc_a * dot_a + sc_b * dot_b is an
    // integer below 2^24, so the float products and their sum are exact:
    // float(si) as the other kernels form it.
    // As below, the products of a chunk's halves run two chunks ahead of
    // the float operations, through a ring of stored C tiles.
    alignas(64) int32_t c[4][2][16 * 16];
    auto products = [&](int64_t b) {
      const uint8_t* e = panel + b * kEntryBytes;
      const uint8_t* a = tokens + b * kAmxTokenEntry;
      Product<0>(a, 32, e, c[b % 4][0]);
      Product<1>(a + 16, 32, e + 256, c[b % 4][1]);
    };
    products(0);
    if (blocks > 1) products(1);
    for (int64_t b = 0; b < blocks; ++b) {
      if (b + 2 < blocks) products(b + 2);
      const float* f = scale(b);
      const float* x = dx(b);
      const int32_t* c0 = c[b % 4][0];
      const int32_t* c1 = c[b % 4][1];
      const __m512 d = _mm512_loadu_ps(f), sc_a = _mm512_loadu_ps(f + 16), sc_b = _mm512_loadu_ps(f + 32);
      for (int t = 0; t < 16; ++t) {
        const __m512 si = _mm512_fmadd_ps(sc_a, _mm512_cvtepi32_ps(_mm512_load_si512(c0 + 16 * t)),
                                          _mm512_mul_ps(sc_b, _mm512_cvtepi32_ps(_mm512_load_si512(c1 + 16 * t))));
        acc[t] = _mm512_fmadd_ps(si, _mm512_mul_ps(d, _mm512_set1_ps(x[t])), acc[t]);
      }
    }
  } else {
    // The products run two blocks ahead of the float operations that read
    // them (a ring of 4 stored C tiles), so neither waits on the other.
    alignas(64) int32_t c[4][16 * 16];
    Product<0>(tokens, 32, panel, c[0]);
    if (blocks > 1) Product<1>(tokens + kAmxTokenEntry, 32, panel + kEntryBytes, c[1]);
    for (int64_t b = 0; b < blocks; b += 2) {
      if (b + 2 < blocks) Product<0>(tokens + (b + 2) * kAmxTokenEntry, 32, panel + (b + 2) * kEntryBytes, c[(b + 2) % 4]);
      if (b + 3 < blocks) Product<1>(tokens + (b + 3) * kAmxTokenEntry, 32, panel + (b + 3) * kEntryBytes, c[(b + 3) % 4]);
      Accumulate(c[b % 4], scale(b), dx(b), acc);
      if (b + 1 < blocks) Accumulate(c[(b + 1) % 4], scale(b + 1), dx(b + 1), acc);
    }
  }
  if constexpr (kKind == Kind::kOffsetAdd || kKind == Kind::kOffsetSub) {
    // The offsets' chain: offs = fma(m, sum(x), offs) over blocks, on its own.
    __m512 offs[16];
    for (__m512& v : offs) v = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      const __m512 m = _mm512_loadu_ps(scale(b) + 16);
      const float* sums = dx(b) + 16;
      for (int t = 0; t < 16; ++t) offs[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(sums[t]), offs[t]);
    }
    for (int t = 0; t < 16; ++t) {
      acc[t] = kKind == Kind::kOffsetAdd ? _mm512_add_ps(acc[t], offs[t]) : _mm512_sub_ps(acc[t], offs[t]);
    }
  }
  for (int t = 0; t < 16; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

template <TensorType kType>
void PairDot(const uint8_t* pair, uint64_t group_bytes, const uint8_t* tokens, int n_tokens, int64_t n,
             uint8_t* panel, float* y, int64_t y_stride) {
  Unpack<kType>(pair, n, 0, panel);
  Unpack<kType>(pair + group_bytes, n, 1, panel);
  const int64_t blocks = n / 32;
  Configure(kType == TensorType::kQ6_K);
  alignas(64) float out[16 * 16];
  for (int t0 = 0; t0 < n_tokens; t0 += 16) {
    Tile<KindOf(kType)>(panel, tokens + (t0 / 16) * blocks * kAmxTokenEntry, blocks, out);
    for (int t = 0; t < 16 && t0 + t < n_tokens; ++t) std::memcpy(y + (t0 + t) * y_stride, out + 16 * t, 64);
  }
  _tile_release();
}

}  // namespace

void PackAmxTokens(const BlockQ8* act, int n_tokens, int64_t n, uint8_t* out) {
  const int64_t blocks = n / 32;
  for (int t0 = 0; t0 < n_tokens; t0 += kAmxTokens) {
    for (int64_t b = 0; b < blocks; ++b, out += kAmxTokenEntry) {
      float* d = reinterpret_cast<float*>(out + 512);
      for (int t = 0; t < kAmxTokens; ++t) {
        if (t0 + t < n_tokens) {
          const BlockQ8& x = act[(t0 + t) * blocks + b];
          std::memcpy(out + 32 * t, x.qs, 32);
          d[t] = x.d;
          d[16 + t] = x.sum();
        } else {  // past the last token: zeros, computed and dropped
          std::memset(out + 32 * t, 0, 32);
          d[t] = d[16 + t] = 0.0f;
        }
      }
    }
  }
}

bool CpuHasAmx() {
  static const bool amx = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-int8") &&
                          __builtin_cpu_supports("avx512f") && CpuHasAvx2() && RequestAmx();
  return amx;
}

AmxPairDotFn GetAmxPairDot(TensorType type) {
  switch (type) {
    case TensorType::kQ8_0: return PairDot<TensorType::kQ8_0>;
    case TensorType::kQ4_0: return PairDot<TensorType::kQ4_0>;
    case TensorType::kQ4_1: return PairDot<TensorType::kQ4_1>;
    case TensorType::kQ5_0: return PairDot<TensorType::kQ5_0>;
    case TensorType::kQ5_1: return PairDot<TensorType::kQ5_1>;
    case TensorType::kQ4_K: return PairDot<TensorType::kQ4_K>;
    case TensorType::kQ5_K: return PairDot<TensorType::kQ5_K>;
    case TensorType::kQ6_K: return PairDot<TensorType::kQ6_K>;
    default: return nullptr;
  }
}

}  // namespace ferry::cpu
