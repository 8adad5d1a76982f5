#include "engine/quant/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/quant/half.h"

namespace ferry::quant {
namespace {

// Q8_0 block: one f16 scale then 32 signed bytes; x = d * q.
constexpr int kQ8_0Block = 32;
constexpr int kQ8_0Bytes = 34;

void QuantizeQ8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / kQ8_0Block; ++b, x += kQ8_0Block, out += kQ8_0Bytes) {
    float amax = 0.0f;
    for (int i = 0; i < kQ8_0Block; ++i) amax = std::max(amax, std::fabs(x[i]));
    const uint16_t d_half = FloatToHalf(amax / 127.0f);
    // Scale by the stored (rounded) d so decoding reproduces q * d exactly.
    const float d = HalfToFloat(d_half);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    std::memcpy(out, &d_half, 2);
    for (int i = 0; i < kQ8_0Block; ++i) {
      const float q = std::clamp(std::nearbyint(x[i] * id), -127.0f, 127.0f);
      out[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(q));
    }
  }
}

void DequantizeQ8_0(const uint8_t* in, int64_t n, float* y) {
  for (int64_t b = 0; b < n / kQ8_0Block; ++b, in += kQ8_0Bytes, y += kQ8_0Block) {
    uint16_t d_half;
    std::memcpy(&d_half, in, 2);
    const float d = HalfToFloat(d_half);
    for (int i = 0; i < kQ8_0Block; ++i) y[i] = d * static_cast<float>(static_cast<int8_t>(in[2 + i]));
  }
}

absl::Status CheckSizes(TensorType type, size_t elems, size_t bytes) {
  const auto want = RowBytes(type, elems);
  if (!want) {
    return absl::InvalidArgumentError(absl::StrCat("row of ", elems, " elements is not a multiple of the ",
                                                   Info(type).name, " block size ",
                                                   Info(type).block_elems));
  }
  if (*want != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(Info(type).name, " row of ", elems, " elements needs ",
                                                   *want, " bytes, buffer has ", bytes));
  }
  return absl::OkStatus();
}

}  // namespace

bool CanConvert(TensorType type) {
  return type == TensorType::kF32 || type == TensorType::kF16 || type == TensorType::kBF16 ||
         type == TensorType::kQ8_0;
}

absl::Status QuantizeRow(TensorType type, std::span<const float> src, std::span<uint8_t> dst) {
  if (!CanConvert(type)) {
    return absl::UnimplementedError(absl::StrCat("no quantizer for type ", Info(type).name));
  }
  if (absl::Status s = CheckSizes(type, src.size(), dst.size()); !s.ok()) return s;
  const int64_t n = static_cast<int64_t>(src.size());
  switch (type) {
    case TensorType::kF32:
      std::memcpy(dst.data(), src.data(), dst.size());
      break;
    case TensorType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = FloatToHalf(src[i]);
        std::memcpy(dst.data() + 2 * i, &h, 2);
      }
      break;
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = FloatToBf16(src[i]);
        std::memcpy(dst.data() + 2 * i, &h, 2);
      }
      break;
    case TensorType::kQ8_0:
      QuantizeQ8_0(src.data(), n, dst.data());
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

absl::Status DequantizeRow(TensorType type, std::span<const uint8_t> src, std::span<float> dst) {
  if (!CanConvert(type)) {
    return absl::UnimplementedError(absl::StrCat("no dequantizer for type ", Info(type).name));
  }
  if (absl::Status s = CheckSizes(type, dst.size(), src.size()); !s.ok()) return s;
  const int64_t n = static_cast<int64_t>(dst.size());
  switch (type) {
    case TensorType::kF32:
      std::memcpy(dst.data(), src.data(), src.size());
      break;
    case TensorType::kF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src.data() + 2 * i, 2);
        dst[i] = HalfToFloat(h);
      }
      break;
    case TensorType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src.data() + 2 * i, 2);
        dst[i] = Bf16ToFloat(h);
      }
      break;
    case TensorType::kQ8_0:
      DequantizeQ8_0(src.data(), n, dst.data());
      break;
    default:
      break;
  }
  return absl::OkStatus();
}

}  // namespace ferry::quant
