// Row conversion between float and the stored formats. The quantizers
// produce valid blocks with the usual absmax scaling; they are used by
// `ferry make-model` and by tests, not on any hot path.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/status.h"
#include "engine/quant/types.h"

namespace ferry::quant {

// True when QuantizeRow / DequantizeRow handle `type`: f32, f16, bf16,
// q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K.
bool CanConvert(TensorType type);
std::string ConvertibleTypeNames();  // "f32, f16, ..."

// Decodes n elements (a multiple of the block size) of a row; nullptr for
// types CanConvert rejects. For kernels that decode row after row.
using DequantizeFn = void (*)(const uint8_t* src, int64_t n, float* dst);
DequantizeFn GetDequantizer(TensorType type);

// Writes `src` (length a multiple of the block size) as `type` into `dst`,
// which must hold exactly RowBytes(type, src.size()) bytes.
absl::Status QuantizeRow(TensorType type, std::span<const float> src, std::span<uint8_t> dst);

// The inverse: `src` holds RowBytes(type, dst.size()) bytes.
absl::Status DequantizeRow(TensorType type, std::span<const uint8_t> src, std::span<float> dst);

}  // namespace ferry::quant
