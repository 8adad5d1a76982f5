// Block layouts of the GGUF quantized formats and the decoding of one block,
// exactly as each format defines it. Host and device code share these
// (FERRY_HD), so the CPU tests cover the arithmetic the GPU kernels use.
#pragma once

#include <cstdint>
#include <type_traits>

#include "engine/quant/half.h"

namespace ferry::quant {

inline constexpr int kQK = 32;    // elements per block of the simple formats
inline constexpr int kQK_K = 256; // elements per super-block of the k-quants
inline constexpr int kScaleBytesK = 12;

struct BlockQ4_0 {  // x = d * (q - 8), q in 0..15
  uint16_t d;
  uint8_t qs[kQK / 2];  // element j in the low nibble of qs[j], element j+16 in the high nibble
};
struct BlockQ4_1 {  // x = d * q + m
  uint16_t d, m;
  uint8_t qs[kQK / 2];
};
struct BlockQ5_0 {  // x = d * (q - 16), q in 0..31; bit 4 of element j is bit j of qh
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
struct BlockQ5_1 {  // x = d * q + m
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
struct BlockQ8_0 {  // x = d * q
  uint16_t d;
  int8_t qs[kQK];
};
// k-quants: 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes.
struct BlockQ4_K {  // x = d * sc * q - dmin * m
  uint16_t d, dmin;
  uint8_t scales[kScaleBytesK];
  uint8_t qs[kQK_K / 2];
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[kScaleBytesK];
  uint8_t qh[kQK_K / 8];
  uint8_t qs[kQK_K / 2];
};
// 16 sub-blocks of 16 with int8 scales; q is 6 bits split into ql (low 4) and qh (high 2).
struct BlockQ6_K {  // x = d * sc * (q - 32)
  uint8_t ql[kQK_K / 2];
  uint8_t qh[kQK_K / 4];
  int8_t scales[kQK_K / 16];
  uint16_t d;
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

// Scale and min of sub-block j (0..7) from the 12 packed bytes: sub-blocks
// 0..3 use the low 6 bits of bytes j and j+4; 4..7 combine a nibble of byte
// j+4 with the top 2 bits of bytes j-4 and j.
FERRY_HD inline void ScaleMinK4(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

FERRY_HD inline void DecodeBlock(const BlockQ4_0& b, float* y) {
  const float d = HalfToFloat(b.d);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>((b.qs[j] & 0x0f) - 8);
    y[j + kQK / 2] = d * static_cast<float>((b.qs[j] >> 4) - 8);
  }
}

FERRY_HD inline void DecodeBlock(const BlockQ4_1& b, float* y) {
  const float d = HalfToFloat(b.d), m = HalfToFloat(b.m);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * static_cast<float>(b.qs[j] & 0x0f) + m;
    y[j + kQK / 2] = d * static_cast<float>(b.qs[j] >> 4) + m;
  }
}

FERRY_HD inline uint32_t LoadQh(const uint8_t* qh) {
  return static_cast<uint32_t>(qh[0]) | (static_cast<uint32_t>(qh[1]) << 8) | (static_cast<uint32_t>(qh[2]) << 16) |
         (static_cast<uint32_t>(qh[3]) << 24);
}

FERRY_HD inline void DecodeBlock(const BlockQ5_0& b, float* y) {
  const float d = HalfToFloat(b.d);
  const uint32_t qh = LoadQh(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const int h0 = ((qh >> j) & 1) << 4, h1 = ((qh >> (j + 16)) & 1) << 4;
    y[j] = d * static_cast<float>(((b.qs[j] & 0x0f) | h0) - 16);
    y[j + kQK / 2] = d * static_cast<float>(((b.qs[j] >> 4) | h1) - 16);
  }
}

FERRY_HD inline void DecodeBlock(const BlockQ5_1& b, float* y) {
  const float d = HalfToFloat(b.d), m = HalfToFloat(b.m);
  const uint32_t qh = LoadQh(b.qh);
  for (int j = 0; j < kQK / 2; ++j) {
    const int h0 = ((qh >> j) & 1) << 4, h1 = ((qh >> (j + 16)) & 1) << 4;
    y[j] = d * static_cast<float>((b.qs[j] & 0x0f) | h0) + m;
    y[j + kQK / 2] = d * static_cast<float>((b.qs[j] >> 4) | h1) + m;
  }
}

FERRY_HD inline void DecodeBlock(const BlockQ8_0& b, float* y) {
  const float d = HalfToFloat(b.d);
  for (int j = 0; j < kQK; ++j) y[j] = d * static_cast<float>(b.qs[j]);
}

// Q4_K: each 32-byte run of qs holds two sub-blocks, the first in the low
// nibbles and the second in the high nibbles.
FERRY_HD inline void DecodeBlock(const BlockQ4_K& b, float* y) {
  const float d = HalfToFloat(b.d), dmin = HalfToFloat(b.dmin);
  const uint8_t* q = b.qs;
  for (int j = 0; j < kQK_K; j += 64, q += 32) {
    uint8_t sc, m;
    ScaleMinK4(j / 32, b.scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    ScaleMinK4(j / 32 + 1, b.scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) y[j + l] = d1 * static_cast<float>(q[l] & 0x0f) - m1;
    for (int l = 0; l < 32; ++l) y[j + 32 + l] = d2 * static_cast<float>(q[l] >> 4) - m2;
  }
}

// Q5_K: as Q4_K plus a fifth bit per element: bit (2*pair) of qh[l] for the
// low-nibble sub-block of pair `pair`, bit (2*pair+1) for the high one.
FERRY_HD inline void DecodeBlock(const BlockQ5_K& b, float* y) {
  const float d = HalfToFloat(b.d), dmin = HalfToFloat(b.dmin);
  const uint8_t* ql = b.qs;
  uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < kQK_K; j += 64, ql += 32, u1 <<= 2, u2 <<= 2) {
    uint8_t sc, m;
    ScaleMinK4(j / 32, b.scales, &sc, &m);
    const float d1 = d * sc, m1 = dmin * m;
    ScaleMinK4(j / 32 + 1, b.scales, &sc, &m);
    const float d2 = d * sc, m2 = dmin * m;
    for (int l = 0; l < 32; ++l) y[j + l] = d1 * static_cast<float>((ql[l] & 0x0f) + (b.qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l) y[j + 32 + l] = d2 * static_cast<float>((ql[l] >> 4) + (b.qh[l] & u2 ? 16 : 0)) - m2;
  }
}

// Q6_K: each half (128 elements) uses 64 bytes of ql, 32 of qh and 8 scales;
// element l + 32*k of the half takes nibble (k/2) of ql[l + 32*(k%2)] and
// bits 2k..2k+1 of qh[l].
FERRY_HD inline void DecodeBlock(const BlockQ6_K& b, float* y) {
  const float d = HalfToFloat(b.d);
  const uint8_t* ql = b.ql;
  const uint8_t* qh = b.qh;
  const int8_t* sc = b.scales;
  for (int n = 0; n < kQK_K; n += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[n + l] = d * sc[is] * static_cast<float>(q1);
      y[n + l + 32] = d * sc[is + 2] * static_cast<float>(q2);
      y[n + l + 64] = d * sc[is + 4] * static_cast<float>(q3);
      y[n + l + 96] = d * sc[is + 6] * static_cast<float>(q4);
    }
  }
}

// Elements [l0, l0 + n) of 32-element sub-block `s` of a block: what a GPU
// thread decodes at a time (the matvec kernels take 8 consecutive values a
// lane, so a warp's activation loads are contiguous; a whole k-quant
// super-block is 256 values, too many for registers). For the 32-element
// formats `s` is 0. Same arithmetic, in the same order, as DecodeBlock:
// tests check every range equal to it bit for bit.
FERRY_HD inline void DecodeRange(const BlockQ4_0& b, int, int l0, int n, float* y) {
  const float d = HalfToFloat(b.d);
  for (int i = 0; i < n; ++i) {
    const int l = l0 + i;
    const int q = l < kQK / 2 ? (b.qs[l] & 0x0f) : (b.qs[l - kQK / 2] >> 4);
    y[i] = d * static_cast<float>(q - 8);
  }
}

FERRY_HD inline void DecodeRange(const BlockQ4_1& b, int, int l0, int n, float* y) {
  const float d = HalfToFloat(b.d), m = HalfToFloat(b.m);
  for (int i = 0; i < n; ++i) {
    const int l = l0 + i;
    const int q = l < kQK / 2 ? (b.qs[l] & 0x0f) : (b.qs[l - kQK / 2] >> 4);
    y[i] = d * static_cast<float>(q) + m;
  }
}

FERRY_HD inline void DecodeRange(const BlockQ5_0& b, int, int l0, int n, float* y) {
  const float d = HalfToFloat(b.d);
  const uint32_t qh = LoadQh(b.qh);
  for (int i = 0; i < n; ++i) {
    const int l = l0 + i;
    const int q = (l < kQK / 2 ? (b.qs[l] & 0x0f) : (b.qs[l - kQK / 2] >> 4)) | (((qh >> l) & 1) << 4);
    y[i] = d * static_cast<float>(q - 16);
  }
}

FERRY_HD inline void DecodeRange(const BlockQ5_1& b, int, int l0, int n, float* y) {
  const float d = HalfToFloat(b.d), m = HalfToFloat(b.m);
  const uint32_t qh = LoadQh(b.qh);
  for (int i = 0; i < n; ++i) {
    const int l = l0 + i;
    const int q = (l < kQK / 2 ? (b.qs[l] & 0x0f) : (b.qs[l - kQK / 2] >> 4)) | (((qh >> l) & 1) << 4);
    y[i] = d * static_cast<float>(q) + m;
  }
}

FERRY_HD inline void DecodeRange(const BlockQ8_0& b, int, int l0, int n, float* y) {
  const float d = HalfToFloat(b.d);
  for (int i = 0; i < n; ++i) y[i] = d * static_cast<float>(b.qs[l0 + i]);
}

// Sub-block s of Q4_K and Q5_K: byte run s/2 of qs, low nibbles when s is
// even; Q5_K's fifth bit is bit s of qh[l].
template <typename Block>
FERRY_HD inline void DecodeRangeK45(const Block& b, int s, int l0, int n, float* y) {
  const float d = HalfToFloat(b.d), dmin = HalfToFloat(b.dmin);
  uint8_t sc, m;
  ScaleMinK4(s, b.scales, &sc, &m);
  const float d1 = d * sc, m1 = dmin * m;
  const uint8_t* q = b.qs + 32 * (s / 2);
  const int shift = (s & 1) * 4;
  for (int i = 0; i < n; ++i) {
    const int l = l0 + i;
    int v = (q[l] >> shift) & 0x0f;
    if constexpr (std::is_same_v<Block, BlockQ5_K>) v += (b.qh[l] >> s) & 1 ? 16 : 0;
    y[i] = d1 * static_cast<float>(v) - m1;
  }
}
FERRY_HD inline void DecodeRange(const BlockQ4_K& b, int s, int l0, int n, float* y) { DecodeRangeK45(b, s, l0, n, y); }
FERRY_HD inline void DecodeRange(const BlockQ5_K& b, int s, int l0, int n, float* y) { DecodeRangeK45(b, s, l0, n, y); }

// Sub-block s of Q6_K: half s/4, group k = s%4 of that half (see DecodeBlock).
FERRY_HD inline void DecodeRange(const BlockQ6_K& b, int s, int l0, int n, float* y) {
  const float d = HalfToFloat(b.d);
  const int half = s / 4, k = s % 4;
  const uint8_t* ql = b.ql + 64 * half + 32 * (k % 2);
  const uint8_t* qh = b.qh + 32 * half;
  const int8_t* sc = b.scales + 8 * half + 2 * k;
  const int shift = 4 * (k / 2);
  for (int i = 0; i < n; ++i) {
    const int l = l0 + i;
    const int q = (((ql[l] >> shift) & 0x0f) | (((qh[l] >> (2 * k)) & 3) << 4)) - 32;
    y[i] = d * sc[l / 16] * static_cast<float>(q);
  }
}

// A whole 32-element sub-block.
template <typename Block>
FERRY_HD inline void DecodeSub(const Block& b, int s, float* y) {
  DecodeRange(b, s, 0, 32, y);
}

}  // namespace ferry::quant
