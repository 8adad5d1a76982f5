// Tensor element types as GGUF files number them (the ggml type ids), with
// the block geometry the reader needs to validate sizes. The ids are part of
// the file format: they never change, and retired ids stay unused.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "engine/quant/type_ids.h"
#include "absl/strings/string_view.h"

namespace ferry::quant {

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
