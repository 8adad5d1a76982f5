// Tensor element types as GGUF files number them (the ggml type ids), with
// the block geometry the reader needs to validate sizes. The ids are part of
// the file format: they never change, and retired ids stay unused.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include "absl/strings/string_view.h"

namespace ferry::quant {

enum class TensorType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
  kNVFP4 = 40,
  kQ1_0 = 41,
};

struct TypeInfo {
  TensorType type;
  absl::string_view name;   // as llama.cpp prints it: "q4_K", "f16", ...
  uint32_t block_elems;    // elements per block (1 for plain types)
  uint32_t block_bytes;    // bytes per block
};

// Looks up a raw id read from a file; nullopt for ids no known format uses.
std::optional<TypeInfo> FindType(uint32_t raw_id);

// Info for a known enum value (always present).
const TypeInfo& Info(TensorType type);

// Looks up a type by its name ("q8_0", "F16", case-insensitive).
std::optional<TypeInfo> FindTypeByName(absl::string_view name);

// Every known type, in id order.
std::span<const TypeInfo> AllTypes();

// Bytes of a row of `elems` elements; nullopt if elems is not a multiple
// of the block size.
std::optional<uint64_t> RowBytes(TensorType type, uint64_t elems);

}  // namespace ferry::quant
