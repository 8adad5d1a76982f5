#include "engine/quant/quantize.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/quant/blocks.h"
#include "engine/quant/half.h"

namespace ferry::quant {
namespace {

// ---- plain types ----

void QuantF32(const float* x, int64_t n, uint8_t* out) { std::memcpy(out, x, n * sizeof(float)); }
void DequantF32(const uint8_t* in, int64_t n, float* y) { std::memcpy(y, in, n * sizeof(float)); }

// 16-bit formats (f16, bf16): one conversion per element.
template <uint16_t (*kEncode)(float)>
void Quant16(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t h = kEncode(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

template <float (*kDecode)(uint16_t)>
void Dequant16(const uint8_t* in, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, in + 2 * i, 2);
    y[i] = kDecode(h);
  }
}

// ---- block types: quantize one block, decode with blocks.h ----

// The element of largest magnitude, with its sign.
float SignedAbsMax(const float* x, int n) {
  float best = 0.0f;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > std::fabs(best)) best = x[i];
  }
  return best;
}

int RoundClamp(float v, int lo, int hi) { return std::clamp(static_cast<int>(std::nearbyint(v)), lo, hi); }

// Symmetric formats: the signed extreme maps to the most negative level
// (-8 of 4 bits, -16 of 5 bits), which uses the full asymmetric range.
void QuantBlock(const float* x, BlockQ4_0* b) {
  b->d = FloatToHalf(SignedAbsMax(x, kQK) / -8.0f);
  const float d = HalfToFloat(b->d), id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = RoundClamp(x[j] * id + 8.0f, 0, 15), q1 = RoundClamp(x[j + kQK / 2] * id + 8.0f, 0, 15);
    b->qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
  }
}

void QuantBlock(const float* x, BlockQ5_0* b) {
  b->d = FloatToHalf(SignedAbsMax(x, kQK) / -16.0f);
  const float d = HalfToFloat(b->d), id = d != 0.0f ? 1.0f / d : 0.0f;
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = RoundClamp(x[j] * id + 16.0f, 0, 31), q1 = RoundClamp(x[j + kQK / 2] * id + 16.0f, 0, 31);
    b->qs[j] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
    qh |= static_cast<uint32_t>(q0 >> 4) << j;
    qh |= static_cast<uint32_t>(q1 >> 4) << (j + 16);
  }
  std::memcpy(b->qh, &qh, 4);
}

// Affine formats: x = d * q + m with m the block minimum.
template <typename Block, int kLevels>
void QuantAffine(const float* x, Block* b, uint32_t* qh_out) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < kQK; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  b->d = FloatToHalf((hi - lo) / kLevels);
  b->m = FloatToHalf(lo);
  const float d = HalfToFloat(b->d), m = HalfToFloat(b->m), id = d != 0.0f ? 1.0f / d : 0.0f;
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = RoundClamp((x[j] - m) * id, 0, kLevels), q1 = RoundClamp((x[j + kQK / 2] - m) * id, 0, kLevels);
    b->qs[j] = static_cast<uint8_t>((q0 & 0x0f) | ((q1 & 0x0f) << 4));
    qh |= static_cast<uint32_t>(q0 >> 4) << j;
    qh |= static_cast<uint32_t>(q1 >> 4) << (j + 16);
  }
  *qh_out = qh;
}
void QuantBlock(const float* x, BlockQ4_1* b) {
  uint32_t unused;
  QuantAffine<BlockQ4_1, 15>(x, b, &unused);
}
void QuantBlock(const float* x, BlockQ5_1* b) {
  uint32_t qh;
  QuantAffine<BlockQ5_1, 31>(x, b, &qh);
  std::memcpy(b->qh, &qh, 4);
}

void QuantBlock(const float* x, BlockQ8_0* b) {
  float amax = 0.0f;
  for (int i = 0; i < kQK; ++i) amax = std::max(amax, std::fabs(x[i]));
  b->d = FloatToHalf(amax / 127.0f);
  // Scale by the stored (rounded) d so decoding reproduces q * d exactly.
  const float d = HalfToFloat(b->d), id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < kQK; ++i) b->qs[i] = static_cast<int8_t>(RoundClamp(x[i] * id, -127, 127));
}

// k-quants with 8 sub-blocks of 32: per sub-block an affine range
// [-min, max] (min clamped to <= 0 as the format subtracts it), scales and
// mins quantized to 6 bits against the super-block's d and dmin.
template <int kLevels>
void ScalesMinsK(const float* x, uint16_t* d_out, uint16_t* dmin_out, uint8_t* packed, float* eff_d, float* eff_m) {
  float scale[8], min[8], max_scale = 0.0f, max_min = 0.0f;
  for (int s = 0; s < 8; ++s) {
    float lo = std::min(0.0f, x[32 * s]), hi = x[32 * s];
    for (int l = 0; l < 32; ++l) lo = std::min(lo, x[32 * s + l]), hi = std::max(hi, x[32 * s + l]);
    scale[s] = (hi - lo) / kLevels;
    min[s] = -lo;
    max_scale = std::max(max_scale, scale[s]);
    max_min = std::max(max_min, min[s]);
  }
  *d_out = FloatToHalf(max_scale / 63.0f);
  *dmin_out = FloatToHalf(max_min / 63.0f);
  const float d = HalfToFloat(*d_out), dmin = HalfToFloat(*dmin_out);
  uint8_t sc[8], m[8];
  for (int s = 0; s < 8; ++s) {
    // Round the scale up so the range still covers the sub-block.
    sc[s] = d != 0.0f ? static_cast<uint8_t>(std::clamp(static_cast<int>(std::ceil(scale[s] / d)), 0, 63)) : 0;
    m[s] = dmin != 0.0f ? static_cast<uint8_t>(RoundClamp(min[s] / dmin, 0, 63)) : 0;
    eff_d[s] = d * sc[s];
    eff_m[s] = dmin * m[s];
  }
  std::memset(packed, 0, kScaleBytesK);
  for (int j = 0; j < 8; ++j) {  // the inverse of ScaleMinK4
    if (j < 4) {
      packed[j] |= sc[j] & 63;
      packed[j + 4] |= m[j] & 63;
    } else {
      packed[j + 4] = static_cast<uint8_t>((sc[j] & 0x0f) | ((m[j] & 0x0f) << 4));
      packed[j - 4] |= static_cast<uint8_t>((sc[j] >> 4) << 6);
      packed[j] |= static_cast<uint8_t>((m[j] >> 4) << 6);
    }
  }
}

template <int kLevels>
void QuantValuesK(const float* x, const float* eff_d, const float* eff_m, uint8_t* q) {
  for (int i = 0; i < kQK_K; ++i) {
    const int s = i / 32;
    q[i] = eff_d[s] != 0.0f ? static_cast<uint8_t>(RoundClamp((x[i] + eff_m[s]) / eff_d[s], 0, kLevels)) : 0;
  }
}

void QuantBlock(const float* x, BlockQ4_K* b) {
  float eff_d[8], eff_m[8];
  uint8_t q[kQK_K];
  ScalesMinsK<15>(x, &b->d, &b->dmin, b->scales, eff_d, eff_m);
  QuantValuesK<15>(x, eff_d, eff_m, q);
  for (int pair = 0; pair < 4; ++pair) {
    for (int l = 0; l < 32; ++l) b->qs[32 * pair + l] = static_cast<uint8_t>(q[64 * pair + l] | (q[64 * pair + 32 + l] << 4));
  }
}

void QuantBlock(const float* x, BlockQ5_K* b) {
  float eff_d[8], eff_m[8];
  uint8_t q[kQK_K];
  ScalesMinsK<31>(x, &b->d, &b->dmin, b->scales, eff_d, eff_m);
  QuantValuesK<31>(x, eff_d, eff_m, q);
  std::memset(b->qh, 0, sizeof(b->qh));
  for (int pair = 0; pair < 4; ++pair) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = q[64 * pair + l], hi = q[64 * pair + 32 + l];
      b->qs[32 * pair + l] = static_cast<uint8_t>((lo & 0x0f) | ((hi & 0x0f) << 4));
      b->qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * pair)) | ((hi >> 4) << (2 * pair + 1)));
    }
  }
}

// Q6_K: 16 sub-blocks of 16 with signed 8-bit scales; the signed extreme of
// each sub-block maps to level -32.
void QuantBlock(const float* x, BlockQ6_K* b) {
  float scale[16], max_abs_scale = 0.0f;
  for (int s = 0; s < 16; ++s) {
    scale[s] = SignedAbsMax(x + 16 * s, 16) / -32.0f;
    max_abs_scale = std::max(max_abs_scale, std::fabs(scale[s]));
  }
  b->d = FloatToHalf(max_abs_scale / 127.0f);
  const float d = HalfToFloat(b->d);
  uint8_t q[kQK_K];
  for (int s = 0; s < 16; ++s) {
    b->scales[s] = d != 0.0f ? static_cast<int8_t>(RoundClamp(scale[s] / d, -127, 127)) : 0;
    const float eff = d * b->scales[s];
    for (int l = 0; l < 16; ++l) q[16 * s + l] = eff != 0.0f ? static_cast<uint8_t>(RoundClamp(x[16 * s + l] / eff + 32.0f, 0, 63)) : 32;
  }
  for (int half = 0; half < 2; ++half) {
    const uint8_t* qq = q + 128 * half;
    uint8_t* ql = b->ql + 64 * half;
    uint8_t* qh = b->qh + 32 * half;
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = qq[l], q2 = qq[l + 32], q3 = qq[l + 64], q4 = qq[l + 96];
      ql[l] = static_cast<uint8_t>((q1 & 0x0f) | ((q3 & 0x0f) << 4));
      ql[l + 32] = static_cast<uint8_t>((q2 & 0x0f) | ((q4 & 0x0f) << 4));
      qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
  }
}

template <typename Block, int kElems>
void QuantBlocks(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n / kElems; ++i) {
    Block b;
    QuantBlock(x + i * kElems, &b);
    std::memcpy(out + i * sizeof(Block), &b, sizeof(Block));
  }
}

template <typename Block, int kElems>
void DequantBlocks(const uint8_t* in, int64_t n, float* y) {
  for (int64_t i = 0; i < n / kElems; ++i) {
    Block b;
    std::memcpy(&b, in + i * sizeof(Block), sizeof(Block));
    DecodeBlock(b, y + i * kElems);
  }
}

struct Converters {
  TensorType type;
  void (*quantize)(const float*, int64_t, uint8_t*);
  void (*dequantize)(const uint8_t*, int64_t, float*);
};

constexpr std::array kConverters = {
    Converters{TensorType::kF32, QuantF32, DequantF32},
    Converters{TensorType::kF16, Quant16<FloatToHalf>, Dequant16<HalfToFloat>},
    Converters{TensorType::kBF16, Quant16<FloatToBf16>, Dequant16<Bf16ToFloat>},
    Converters{TensorType::kQ4_0, QuantBlocks<BlockQ4_0, kQK>, DequantBlocks<BlockQ4_0, kQK>},
    Converters{TensorType::kQ4_1, QuantBlocks<BlockQ4_1, kQK>, DequantBlocks<BlockQ4_1, kQK>},
    Converters{TensorType::kQ5_0, QuantBlocks<BlockQ5_0, kQK>, DequantBlocks<BlockQ5_0, kQK>},
    Converters{TensorType::kQ5_1, QuantBlocks<BlockQ5_1, kQK>, DequantBlocks<BlockQ5_1, kQK>},
    Converters{TensorType::kQ8_0, QuantBlocks<BlockQ8_0, kQK>, DequantBlocks<BlockQ8_0, kQK>},
    Converters{TensorType::kQ4_K, QuantBlocks<BlockQ4_K, kQK_K>, DequantBlocks<BlockQ4_K, kQK_K>},
    Converters{TensorType::kQ5_K, QuantBlocks<BlockQ5_K, kQK_K>, DequantBlocks<BlockQ5_K, kQK_K>},
    Converters{TensorType::kQ6_K, QuantBlocks<BlockQ6_K, kQK_K>, DequantBlocks<BlockQ6_K, kQK_K>},
};

const Converters* Find(TensorType type) {
  for (const Converters& c : kConverters) {
    if (c.type == type) return &c;
  }
  return nullptr;
}

absl::Status CheckSizes(TensorType type, size_t elems, size_t bytes) {
  const auto want = RowBytes(type, elems);
  if (!want) {
    return absl::InvalidArgumentError(absl::StrCat("row of ", elems, " elements is not a multiple of the ",
                                                   Info(type).name, " block size ", Info(type).block_elems));
  }
  if (*want != bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(Info(type).name, " row of ", elems, " elements needs ", *want, " bytes, buffer has ", bytes));
  }
  return absl::OkStatus();
}

}  // namespace

bool CanConvert(TensorType type) { return Find(type) != nullptr; }

DequantizeFn GetDequantizer(TensorType type) {
  const Converters* c = Find(type);
  return c ? c->dequantize : nullptr;
}

std::string ConvertibleTypeNames() {
  std::string out;
  for (const Converters& c : kConverters) absl::StrAppend(&out, out.empty() ? "" : ", ", Info(c.type).name);
  return out;
}

absl::Status QuantizeRow(TensorType type, std::span<const float> src, std::span<uint8_t> dst) {
  const Converters* c = Find(type);
  if (c == nullptr) return absl::UnimplementedError(absl::StrCat("no quantizer for type ", Info(type).name));
  if (absl::Status s = CheckSizes(type, src.size(), dst.size()); !s.ok()) return s;
  c->quantize(src.data(), static_cast<int64_t>(src.size()), dst.data());
  return absl::OkStatus();
}

absl::Status DequantizeRow(TensorType type, std::span<const uint8_t> src, std::span<float> dst) {
  const Converters* c = Find(type);
  if (c == nullptr) return absl::UnimplementedError(absl::StrCat("no dequantizer for type ", Info(type).name));
  if (absl::Status s = CheckSizes(type, dst.size(), src.size()); !s.ok()) return s;
  c->dequantize(src.data(), static_cast<int64_t>(dst.size()), dst.data());
  return absl::OkStatus();
}

}  // namespace ferry::quant
