// The quantized formats as the int8 matvec reads them (backend/cuda/
// matvec_int8.cu): for sub-block s (32 values) of a row, Load() gives its
// quants as 8 words of 4 signed bytes (element 4i + j in byte j of q[i])
// and its scales; Dot() its share of the row's dot product with 32 int8
// activations (8 words, scale dx, sum of quants isum). Host and device
// code (FERRY_HD), so the CPU tests check every format's bit handling
// against DecodeBlock (quant_test: Int8Blocks.*).
#pragma once

#include <cstdint>
#include <cstring>

#include "engine/quant/blocks.h"
#include "engine/quant/half.h"

namespace ferry::quant {

#ifdef __CUDA_ARCH__  // the device pass only: the host compiler would warn
#define FERRY_UNROLL _Pragma("unroll")
#else
#define FERRY_UNROLL
#endif

// A little-endian load of T: one instruction on the device (the address
// aligned to T), memcpy on the host.
template <typename T>
FERRY_HD inline T LoadLE(const uint8_t* p) {
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const T*>(p);
#else
  T v;
  std::memcpy(&v, p, sizeof(v));
  return v;
#endif
}
FERRY_HD inline uint16_t Load16(const uint8_t* p) { return LoadLE<uint16_t>(p); }
FERRY_HD inline uint32_t Load32Aligned(const uint8_t* p) { return LoadLE<uint32_t>(p); }
// 4 bytes from a 2-byte aligned address (blocks of 34, 18 and 210 bytes).
FERRY_HD inline uint32_t Load32(const uint8_t* p) {
  return static_cast<uint32_t>(Load16(p)) | (static_cast<uint32_t>(Load16(p + 2)) << 16);
}

// Per-byte signed saturating subtraction and the signed 4-byte dot
// product with accumulate: the device's __vsubss4 and __dp4a, spelled out
// for the host so the CPU tests run the same formats' code.
FERRY_HD inline uint32_t Vsubss4(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
  return __vsubss4(a, b);
#else
  uint32_t out = 0;
  for (int i = 0; i < 4; ++i) {
    int v = static_cast<int8_t>(a >> (8 * i)) - static_cast<int8_t>(b >> (8 * i));
    v = v < -128 ? -128 : v > 127 ? 127 : v;
    out |= static_cast<uint32_t>(static_cast<uint8_t>(v)) << (8 * i);
  }
  return out;
#endif
}

FERRY_HD inline int Dp4a(int32_t a, int32_t b, int c) {
#ifdef __CUDA_ARCH__
  return __dp4a(a, b, c);
#else
  for (int i = 0; i < 4; ++i) c += static_cast<int8_t>(a >> (8 * i)) * static_cast<int8_t>(b >> (8 * i));
  return c;
#endif
}

FERRY_HD inline int Dp4a8(const int32_t (&w)[8], const int32_t (&x)[8], int from, int to) {
  int s = 0;
FERRY_UNROLL
  for (int i = from; i < to; ++i) s = Dp4a(w[i], x[i], s);
  return s;
}

// Each format: Load() gives the 32 quants of sub-block s of a row as 8
// words of 4 signed bytes (element 4i + j in byte j of q[i]) and the
// scales; Dot() the sub-block's share of the row's dot product, given the
// activations' 8 words, their scale dx and their sum of quants.
// Formats with one scale a block of 32 (q8_0, q4_0): x = d * q, the dot
// the integer dot of the quants times both scales.
struct Int8OneScale {
  struct W {
    int32_t q[8];
    float d;
  };
  FERRY_HD static float Dot(const W& w, const int32_t (&x)[8], float dx, int32_t) {
    return static_cast<float>(Dp4a8(w.q, x, 0, 8)) * (w.d * dx);
  }
};

struct Int8Q8_0 : Int8OneScale {
  FERRY_HD static void Load(const uint8_t* row, int64_t s, W& w) {
    const uint8_t* b = row + s * 34;
    w.d = HalfToFloat(Load16(b));
FERRY_UNROLL
    for (int i = 0; i < 8; ++i) w.q[i] = static_cast<int32_t>(Load32(b + 2 + 4 * i));
  }
};

struct Int8Q4_0 : Int8OneScale {  // x = d * (q - 8); element j in the low nibble of qs[j], j + 16 in the high one
  FERRY_HD static void Load(const uint8_t* row, int64_t s, W& w) {
    const uint8_t* b = row + s * 18;
    w.d = HalfToFloat(Load16(b));
FERRY_UNROLL
    for (int i = 0; i < 4; ++i) {
      const uint32_t p = Load32(b + 2 + 4 * i);
      w.q[i] = static_cast<int32_t>(Vsubss4(p & 0x0F0F0F0Fu, 0x08080808u));
      w.q[4 + i] = static_cast<int32_t>(Vsubss4((p >> 4) & 0x0F0F0F0Fu, 0x08080808u));
    }
  }
};

// The fifth bits of elements 4i..4i+3 of a q5_0 / q5_1 block (bits 4i..4i+3
// of qh) at bit 4 of bytes 0..3: the multiply spreads 4 bits 7 apart with
// no carries (bytes 0..3 take bits 0, 8, 16, 24).
FERRY_HD inline uint32_t FifthBits4(uint32_t qh, int i) {
  return ((((qh >> (4 * i)) & 0xFu) * 0x00204081u) & 0x01010101u) << 4;
}

// q5_0: x = d * (q - 16), q's fifth bit of element e is bit e of qh.
// 22-byte blocks: 2-byte loads.
struct Int8Q5_0 : Int8OneScale {
  FERRY_HD static void Load(const uint8_t* row, int64_t s, W& w) {
    const uint8_t* b = row + s * 22;
    w.d = HalfToFloat(Load16(b));
    const uint32_t qh = Load32(b + 2);
FERRY_UNROLL
    for (int i = 0; i < 4; ++i) {
      const uint32_t p = Load32(b + 6 + 4 * i);
      w.q[i] = static_cast<int32_t>(Vsubss4((p & 0x0F0F0F0Fu) | FifthBits4(qh, i), 0x10101010u));
      w.q[4 + i] = static_cast<int32_t>(Vsubss4(((p >> 4) & 0x0F0F0F0Fu) | FifthBits4(qh, 4 + i), 0x10101010u));
    }
  }
};

// q4_1 and q5_1 (kFive): x = d * q + m, so the block's share is d * dx *
// dot(q, x) + m * dx * isum. 20- and 24-byte blocks: 4-byte aligned.
template <bool kFive>
struct Int8Qx1 {
  struct W {
    int32_t q[8];
    float d, m;
  };
  FERRY_HD static void Load(const uint8_t* row, int64_t s, W& w) {
    const uint8_t* b = row + s * (kFive ? 24 : 20);
    w.d = HalfToFloat(Load16(b));
    w.m = HalfToFloat(Load16(b + 2));
    const uint32_t qh = kFive ? Load32Aligned(b + 4) : 0;
    const uint8_t* qs = b + (kFive ? 8 : 4);
FERRY_UNROLL
    for (int i = 0; i < 4; ++i) {
      const uint32_t p = Load32Aligned(qs + 4 * i);
      w.q[i] = static_cast<int32_t>((p & 0x0F0F0F0Fu) | (kFive ? FifthBits4(qh, i) : 0));
      w.q[4 + i] = static_cast<int32_t>(((p >> 4) & 0x0F0F0F0Fu) | (kFive ? FifthBits4(qh, 4 + i) : 0));
    }
  }
  FERRY_HD static float Dot(const W& w, const int32_t (&x)[8], float dx, int32_t isum) {
    return static_cast<float>(Dp4a8(w.q, x, 0, 8)) * (w.d * dx) + w.m * (dx * static_cast<float>(isum));
  }
};

// Q4_K and Q5_K: x = d * sc * q - dmin * m per sub-block; sub-block j of a
// super-block is byte run j/2 of qs, low nibbles when j is even; Q5_K adds
// bit j of qh[l] as the fifth bit. Super-blocks are 144 and 176 bytes, so
// 4-byte loads are aligned.
template <bool kFive>
struct Int8K45 {
  struct W {
    int32_t q[8];
    float dsc, dmin_m;
  };
  FERRY_HD static void Load(const uint8_t* row, int64_t s, W& w) {
    const int j = static_cast<int>(s % 8);
    const uint8_t* b = row + (s / 8) * (kFive ? 176 : 144);
    uint8_t sc, m;
    ScaleMinK4(j, b + 4, &sc, &m);
    w.dsc = HalfToFloat(Load16(b)) * sc;
    w.dmin_m = HalfToFloat(Load16(b + 2)) * m;
    const uint8_t* qs = b + (kFive ? 48 : 16) + 32 * (j / 2);
    const int shift = 4 * (j & 1);
FERRY_UNROLL
    for (int i = 0; i < 8; ++i) {
      uint32_t v = (Load32Aligned(qs + 4 * i) >> shift) & 0x0F0F0F0Fu;
      if constexpr (kFive) v |= ((Load32Aligned(b + 16 + 4 * i) >> j) & 0x01010101u) << 4;
      w.q[i] = static_cast<int32_t>(v);
    }
  }
  FERRY_HD static float Dot(const W& w, const int32_t (&x)[8], float dx, int32_t isum) {
    return static_cast<float>(Dp4a8(w.q, x, 0, 8)) * (w.dsc * dx) - w.dmin_m * (dx * static_cast<float>(isum));
  }
};

// Q6_K: x = d * sc * (q - 32) with a scale per 16; sub-block j: half j/4,
// group k = j%4 (see quant::DecodeRange). 210-byte blocks: 2-byte loads.
struct Int8Q6_K {
  struct W {
    int32_t q[8];
    float d;
    int sc_a, sc_b;
  };
  FERRY_HD static void Load(const uint8_t* row, int64_t s, W& w) {
    const int j = static_cast<int>(s % 8), half = j / 4, k = j % 4;
    const uint8_t* b = row + (s / 8) * 210;
    const uint8_t* ql = b + 64 * half + 32 * (k % 2);
    const uint8_t* qh = b + 128 + 32 * half;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192) + 8 * half + 2 * k;
    w.d = HalfToFloat(Load16(b + 208));
    w.sc_a = sc[0];
    w.sc_b = sc[1];
    const int shift = 4 * (k / 2);
FERRY_UNROLL
    for (int i = 0; i < 8; ++i) {
      const uint32_t lo = (Load32(ql + 4 * i) >> shift) & 0x0F0F0F0Fu;
      const uint32_t hi = ((Load32(qh + 4 * i) >> (2 * k)) & 0x03030303u) << 4;
      w.q[i] = static_cast<int32_t>(Vsubss4(lo | hi, 0x20202020u));
    }
  }
  FERRY_HD static float Dot(const W& w, const int32_t (&x)[8], float dx, int32_t) {
    return static_cast<float>(w.sc_a * Dp4a8(w.q, x, 0, 4) + w.sc_b * Dp4a8(w.q, x, 4, 8)) * (w.d * dx);
  }
};

}  // namespace ferry::quant
