#include "engine/backend/cpu/qdot.h"

#include <algorithm>
#include <cmath>
#include <limits>
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
      acc += d * sc * x[j].d * static_cast<float>(s) - dmin * m * x[j].sum();
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

// Scalar kernels one token at a time.
template <float (*kDot)(const uint8_t*, const BlockQ8*, int64_t)>
void Tile(const uint8_t* row, const BlockQ8* const* xs, int nt, int64_t n, float* out) {
  for (int t = 0; t < nt; ++t) out[t] = kDot(row, xs[t], n);
}

}  // namespace

void QuantizeActivations(const float* x, int64_t n, BlockQ8* out) {
  for (int64_t b = 0; b < n / 32; ++b, x += 32) {
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
    int32_t sum = 0;
    for (int i = 0; i < 32; ++i) {
      const int q = finite ? static_cast<int>(std::nearbyint(x[i] * id)) : 0;
      out[b].qs[i] = static_cast<int8_t>(q);
      sum += q;
    }
    out[b].d = d;
    out[b].isum = sum;
  }
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

QDotRowsFn GetQDotRows(TensorType type, bool simd) {
  if (!simd) return nullptr;
  if (CpuHasVnni()) return GetQDotRowsVnni(type);
  if (CpuHasAvx2()) return GetQDotRowsAvx2(type);
  return nullptr;
}

QDotFn GetQDot(TensorType type, bool simd) {
  if (simd) {
    if (CpuHasVnni()) return GetQDotVnni(type);
    if (CpuHasAvx2()) return GetQDotAvx2(type);
  }
  switch (type) {
    case TensorType::kQ8_0: return Tile<DotQ8_0Scalar>;
    case TensorType::kQ4_0: return Tile<DotQ4_0Scalar>;
    case TensorType::kQ4_K: return Tile<DotQ4_KScalar>;
    case TensorType::kQ6_K: return Tile<DotQ6_KScalar>;
    default: return nullptr;
  }
}

}  // namespace ferry::cpu
