#include "engine/quant/types.h"

#include <array>
#include <cctype>

namespace ferry::quant {
namespace {

using T = TensorType;

// Block geometry of each format (elements per block, bytes per block), from
// the block struct layouts: e.g. Q8_0 = f16 scale + 32 int8 = 34 bytes per 32,
// Q4_K = f16 d + f16 dmin + 12 scale bytes + 128 nibble bytes = 144 per 256.
// Q8_1 is ggml's 36-byte block (two f16 then 32 int8); gguf-py's table says
// 40, from an older layout. It is an activation format that files never hold.
constexpr std::array kTypes = {
    TypeInfo{T::kF32, "f32", 1, 4},          TypeInfo{T::kF16, "f16", 1, 2},
    TypeInfo{T::kQ4_0, "q4_0", 32, 18},      TypeInfo{T::kQ4_1, "q4_1", 32, 20},
    TypeInfo{T::kQ5_0, "q5_0", 32, 22},      TypeInfo{T::kQ5_1, "q5_1", 32, 24},
    TypeInfo{T::kQ8_0, "q8_0", 32, 34},      TypeInfo{T::kQ8_1, "q8_1", 32, 36},
    TypeInfo{T::kQ2_K, "q2_K", 256, 84},     TypeInfo{T::kQ3_K, "q3_K", 256, 110},
    TypeInfo{T::kQ4_K, "q4_K", 256, 144},    TypeInfo{T::kQ5_K, "q5_K", 256, 176},
    TypeInfo{T::kQ6_K, "q6_K", 256, 210},    TypeInfo{T::kQ8_K, "q8_K", 256, 292},
    TypeInfo{T::kIQ2_XXS, "iq2_xxs", 256, 66}, TypeInfo{T::kIQ2_XS, "iq2_xs", 256, 74},
    TypeInfo{T::kIQ3_XXS, "iq3_xxs", 256, 98}, TypeInfo{T::kIQ1_S, "iq1_s", 256, 50},
    TypeInfo{T::kIQ4_NL, "iq4_nl", 32, 18},  TypeInfo{T::kIQ3_S, "iq3_s", 256, 110},
    TypeInfo{T::kIQ2_S, "iq2_s", 256, 82},   TypeInfo{T::kIQ4_XS, "iq4_xs", 256, 136},
    TypeInfo{T::kI8, "i8", 1, 1},            TypeInfo{T::kI16, "i16", 1, 2},
    TypeInfo{T::kI32, "i32", 1, 4},          TypeInfo{T::kI64, "i64", 1, 8},
    TypeInfo{T::kF64, "f64", 1, 8},          TypeInfo{T::kIQ1_M, "iq1_m", 256, 56},
    TypeInfo{T::kBF16, "bf16", 1, 2},        TypeInfo{T::kTQ1_0, "tq1_0", 256, 54},
    TypeInfo{T::kTQ2_0, "tq2_0", 256, 66},   TypeInfo{T::kMXFP4, "mxfp4", 32, 17},
    TypeInfo{T::kNVFP4, "nvfp4", 64, 36},    TypeInfo{T::kQ1_0, "q1_0", 128, 18},
};

bool EqualsIgnoreCase(absl::string_view a, absl::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  }
  return true;
}

}  // namespace

std::optional<TypeInfo> FindType(uint32_t raw_id) {
  for (const TypeInfo& info : kTypes) {
    if (static_cast<uint32_t>(info.type) == raw_id) return info;
  }
  return std::nullopt;
}

const TypeInfo& Info(TensorType type) {
  for (const TypeInfo& info : kTypes) {
    if (info.type == type) return info;
  }
  return kTypes[0];  // unreachable for valid enum values
}

std::optional<TypeInfo> FindTypeByName(absl::string_view name) {
  for (const TypeInfo& info : kTypes) {
    if (EqualsIgnoreCase(info.name, name)) return info;
  }
  return std::nullopt;
}

std::span<const TypeInfo> AllTypes() { return kTypes; }

std::optional<uint64_t> RowBytes(TensorType type, uint64_t elems) {
  const TypeInfo& info = Info(type);
  if (elems % info.block_elems != 0) return std::nullopt;
  return elems / info.block_elems * info.block_bytes;
}

}  // namespace ferry::quant
