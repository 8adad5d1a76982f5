#include "engine/backend/cpu/qdot.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

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

// ---------------- scalar ----------------

float DotQ8_0Scalar(const uint8_t* row, const BlockQ8* x, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const BlockQ8_0 w = Load<BlockQ8_0>(row + i * sizeof(BlockQ8_0));
    int32_t s = 0;
    for (int j = 0; j < kQK; ++j) s += w.qs[j] * x[i].qs[j];
    acc += HalfToFloat(w.d) * x[i].d * static_cast<float>(s);
  }
  return acc;
}

float DotQ4_0Scalar(const uint8_t* row, const BlockQ8* x, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n / kQK; ++i) {
    const BlockQ4_0 w = Load<BlockQ4_0>(row + i * sizeof(BlockQ4_0));
    int32_t s = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      s += ((w.qs[j] & 0x0f) - 8) * x[i].qs[j];
      s += ((w.qs[j] >> 4) - 8) * x[i].qs[j + 16];
    }
    acc += HalfToFloat(w.d) * x[i].d * static_cast<float>(s);
  }
  return acc;
}

// Q4_K: sub-block j of 32 has w = d*sc_j*q - dmin*m_j, so
// dot = d*sc_j*dx*sum(q*qx) - dmin*m_j*sum(x).
float DotQ4_KScalar(const uint8_t* row, const BlockQ8* x, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n / kQK_K; ++i, x += 8) {
    const BlockQ4_K w = Load<BlockQ4_K>(row + i * sizeof(BlockQ4_K));
    const float d = HalfToFloat(w.d), dmin = HalfToFloat(w.dmin);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      ScaleMinK4(j, w.scales, &sc, &m);
      const uint8_t* q = w.qs + 32 * (j / 2);
      int32_t s = 0;
      for (int l = 0; l < 32; ++l) s += ((j % 2 == 0) ? (q[l] & 0x0f) : (q[l] >> 4)) * x[j].qs[l];
      acc += d * sc * x[j].d * static_cast<float>(s) - dmin * m * x[j].sum;
    }
  }
  return acc;
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
        acc += d * xb.d * static_cast<float>(w.scales[sub] * s[0] + w.scales[sub + 1] * s[1]);
      }
    }
  }
  return acc;
}

// ---------------- AVX2 ----------------
// Each kernel walks the row's blocks once; per block it unpacks the weights
// to signed (or, for q4_K, unsigned) bytes, then for each token multiplies
// them with the token's 8-bit activations (maddubs: unsigned x signed byte
// pairs into int16, madd: pairs into int32) and accumulates in float.

#define FERRY_AVX2 __attribute__((target("avx2,fma,f16c")))

FERRY_AVX2 inline float HorizontalSum(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

FERRY_AVX2 inline float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// Signed w times signed x: maddubs needs an unsigned operand, so |w| times
// x carrying w's sign; 8 int32 lanes of 4 products each.
FERRY_AVX2 inline __m256i DotI8(__m256i w_abs, __m256i w, __m256i x) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x, w)), _mm256_set1_epi16(1));
}

FERRY_AVX2 inline __m256i LoadX(const BlockQ8& b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }

FERRY_AVX2 void DotQ8_0Avx2(const uint8_t* row, const BlockQ8* const* xs, int nt, int64_t n, float* out) {
  __m256 acc[kQDotTile];
  for (int t = 0; t < nt; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / kQK; ++i) {
    const uint8_t* b = row + i * sizeof(BlockQ8_0);
    const float dw = Half(b);
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
    const __m256i w_abs = _mm256_sign_epi8(w, w);
    for (int t = 0; t < nt; ++t) {
      const BlockQ8& x = xs[t][i];
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d), _mm256_cvtepi32_ps(DotI8(w_abs, w, LoadX(x))), acc[t]);
    }
  }
  for (int t = 0; t < nt; ++t) out[t] = HorizontalSum(acc[t]);
}

FERRY_AVX2 void DotQ4_0Avx2(const uint8_t* row, const BlockQ8* const* xs, int nt, int64_t n, float* out) {
  __m256 acc[kQDotTile];
  for (int t = 0; t < nt; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0f), eight = _mm256_set1_epi8(8);
  for (int64_t i = 0; i < n / kQK; ++i) {
    const uint8_t* b = row + i * sizeof(BlockQ4_0);
    const float dw = Half(b);
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2));
    // Elements 0..15 are the low nibbles, 16..31 the high ones.
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
    const __m256i w = _mm256_sub_epi8(_mm256_and_si256(both, low4), eight);
    const __m256i w_abs = _mm256_sign_epi8(w, w);
    for (int t = 0; t < nt; ++t) {
      const BlockQ8& x = xs[t][i];
      acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dw * x.d), _mm256_cvtepi32_ps(DotI8(w_abs, w, LoadX(x))), acc[t]);
    }
  }
  for (int t = 0; t < nt; ++t) out[t] = HorizontalSum(acc[t]);
}

// q4_K: sub-block j of 32 has w = d*sc_j*q - dmin*m_j with q unsigned, so
// maddubs takes q directly and the mins use the activations' block sums.
FERRY_AVX2 void DotQ4_KAvx2(const uint8_t* row, const BlockQ8* const* xs, int nt, int64_t n, float* out) {
  __m256 acc[kQDotTile];
  float mins[kQDotTile];
  for (int t = 0; t < nt; ++t) acc[t] = _mm256_setzero_ps(), mins[t] = 0.0f;
  const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const uint8_t* b = row + i * sizeof(BlockQ4_K);
    const float d = Half(b), dmin = Half(b + 2);
    const uint8_t* scales = b + 4;
    for (int pair = 0; pair < 4; ++pair) {
      const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + 32 * pair));
      for (int half = 0; half < 2; ++half) {
        const int j = 2 * pair + half;
        uint8_t sc, m;
        ScaleMinK4(j, scales, &sc, &m);
        const __m256i q = half == 0 ? _mm256_and_si256(packed, low4)
                                    : _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
        const float dsc = d * sc, dm = dmin * m;
        for (int t = 0; t < nt; ++t) {
          const BlockQ8& x = xs[t][8 * i + j];
          const __m256i s32 = _mm256_madd_epi16(_mm256_maddubs_epi16(q, LoadX(x)), ones);
          acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dsc * x.d), _mm256_cvtepi32_ps(s32), acc[t]);
          mins[t] += dm * x.sum;
        }
      }
    }
  }
  for (int t = 0; t < nt; ++t) out[t] = HorizontalSum(acc[t]) - mins[t];
}

FERRY_AVX2 void DotQ6_KAvx2(const uint8_t* row, const BlockQ8* const* xs, int nt, int64_t n, float* out) {
  __m256 acc[kQDotTile];
  for (int t = 0; t < nt; ++t) acc[t] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0f), low2 = _mm256_set1_epi8(0x03), bias = _mm256_set1_epi8(32);
  for (int64_t i = 0; i < n / kQK_K; ++i) {
    const uint8_t* b = row + i * sizeof(BlockQ6_K);
    const float d = Half(b + 208);
    const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h));
      for (int k = 0; k < 4; ++k) {
        const __m256i lo = k % 2 == 0 ? ql0 : ql1;
        const __m256i nib = k < 2 ? _mm256_and_si256(lo, low4) : _mm256_and_si256(_mm256_srli_epi16(lo, 4), low4);
        const __m256i hi2 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), low2);
        const __m256i w = _mm256_sub_epi8(_mm256_or_si256(nib, _mm256_slli_epi16(hi2, 4)), bias);
        const __m256i w_abs = _mm256_sign_epi8(w, w);
        // Elements 0..15 use one scale, 16..31 the next.
        const int sub = 8 * h + 2 * k;
        const __m256i sc = _mm256_set_m128i(_mm_set1_epi16(scales[sub + 1]), _mm_set1_epi16(scales[sub]));
        for (int t = 0; t < nt; ++t) {
          const BlockQ8& x = xs[t][8 * i + 4 * h + k];
          const __m256i p16 = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(LoadX(x), w));
          const __m256i s32 = _mm256_madd_epi16(p16, sc);
          acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x.d), _mm256_cvtepi32_ps(s32), acc[t]);
        }
      }
    }
  }
  for (int t = 0; t < nt; ++t) out[t] = HorizontalSum(acc[t]);
}

// Scalar kernels one token at a time.
template <float (*kDot)(const uint8_t*, const BlockQ8*, int64_t)>
void Tile(const uint8_t* row, const BlockQ8* const* xs, int nt, int64_t n, float* out) {
  for (int t = 0; t < nt; ++t) out[t] = kDot(row, xs[t], n);
}

}  // namespace

void QuantizeActivations(const float* x, int64_t n, BlockQ8* out) {
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int32_t sum = 0;
    for (int i = 0; i < 32; ++i) {
      const int q = static_cast<int>(std::nearbyint(x[i] * id));
      out[b].qs[i] = static_cast<int8_t>(q);
      sum += q;
    }
    out[b].d = d;
    out[b].sum = d * static_cast<float>(sum);
  }
}

QDotFn GetQDot(TensorType type, bool simd) {
  switch (type) {
    case TensorType::kQ8_0: return simd ? DotQ8_0Avx2 : Tile<DotQ8_0Scalar>;
    case TensorType::kQ4_0: return simd ? DotQ4_0Avx2 : Tile<DotQ4_0Scalar>;
    case TensorType::kQ4_K: return simd ? DotQ4_KAvx2 : Tile<DotQ4_KScalar>;
    case TensorType::kQ6_K: return simd ? DotQ6_KAvx2 : Tile<DotQ6_KScalar>;
    default: return nullptr;
  }
}

}  // namespace ferry::cpu
