// GGUF v3 writer. Metadata is encoded when it is set; tensor data is either
// borrowed from the caller or produced tensor by tensor while the file is
// written, so a multi-gigabyte model never has to sit in memory at once.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include "absl/strings/string_view.h"
#include <type_traits>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/gguf/gguf.h"
#include "engine/quant/types.h"

namespace ferry::gguf {

// An owning metadata value, held in its encoded form (without the type tag).
class MetaValue {
 public:
  static MetaValue U8(uint8_t v) { return Scalar(ValueType::kU8, &v, 1); }
  static MetaValue I8(int8_t v) { return Scalar(ValueType::kI8, &v, 1); }
  static MetaValue U16(uint16_t v) { return Scalar(ValueType::kU16, &v, 2); }
  static MetaValue I16(int16_t v) { return Scalar(ValueType::kI16, &v, 2); }
  static MetaValue U32(uint32_t v) { return Scalar(ValueType::kU32, &v, 4); }
  static MetaValue I32(int32_t v) { return Scalar(ValueType::kI32, &v, 4); }
  static MetaValue F32(float v) { return Scalar(ValueType::kF32, &v, 4); }
  static MetaValue U64(uint64_t v) { return Scalar(ValueType::kU64, &v, 8); }
  static MetaValue I64(int64_t v) { return Scalar(ValueType::kI64, &v, 8); }
  static MetaValue F64(double v) { return Scalar(ValueType::kF64, &v, 8); }
  static MetaValue Bool(bool v) {
    const uint8_t b = v ? 1 : 0;
    return Scalar(ValueType::kBool, &b, 1);
  }
  static MetaValue Str(absl::string_view s);

  // Array of a fixed-size C++ type; the element type follows from T.
  template <typename T>
  static MetaValue Array(std::span<const T> items) {
    return FixedArray(ElementType<T>(), items.data(), items.size(), sizeof(T));
  }
  template <typename T>
  static MetaValue Array(const std::vector<T>& items) {
    return Array(std::span<const T>(items));
  }
  static MetaValue StringArray(std::span<const std::string> items);
  // Array of already-built values, all of type `elem` (nested arrays too).
  static absl::StatusOr<MetaValue> ArrayOf(ValueType elem, std::span<const MetaValue> items);
  // A copy of a value read from another file.
  static MetaValue From(const Value& value);

  ValueType type() const { return type_; }
  const std::string& payload() const { return payload_; }

 private:
  static MetaValue Scalar(ValueType type, const void* bits, size_t size);
  static MetaValue FixedArray(ValueType elem, const void* data, size_t count, size_t size);
  template <typename T>
  static constexpr ValueType ElementType() {
    if constexpr (std::is_same_v<T, uint8_t>) return ValueType::kU8;
    else if constexpr (std::is_same_v<T, int8_t>) return ValueType::kI8;
    else if constexpr (std::is_same_v<T, uint16_t>) return ValueType::kU16;
    else if constexpr (std::is_same_v<T, int16_t>) return ValueType::kI16;
    else if constexpr (std::is_same_v<T, uint32_t>) return ValueType::kU32;
    else if constexpr (std::is_same_v<T, int32_t>) return ValueType::kI32;
    else if constexpr (std::is_same_v<T, float>) return ValueType::kF32;
    else if constexpr (std::is_same_v<T, uint64_t>) return ValueType::kU64;
    else if constexpr (std::is_same_v<T, int64_t>) return ValueType::kI64;
    else if constexpr (std::is_same_v<T, double>) return ValueType::kF64;
    else static_assert(sizeof(T) == 0, "no GGUF element type for this C++ type");
  }

  ValueType type_ = ValueType::kU8;
  std::string payload_;
};

class Writer {
 public:
  // Fills a tensor's bytes (exactly its size) while the file is written.
  using Fill = std::function<absl::Status(std::span<uint8_t> out)>;
  // Called after each tensor: (tensors written, total tensors, bytes written, total bytes).
  using Progress = std::function<void(size_t, size_t, uint64_t, uint64_t)>;

  // Sets a metadata key (once). `general.alignment` must be a u32 power of
  // two and also sets the data alignment.
  absl::Status Set(absl::string_view key, MetaValue value);

  // Adds a tensor; dims[0] is the contiguous dimension. The borrowed data
  // must stay valid until the file is written.
  absl::Status AddTensor(absl::string_view name, quant::TensorType type, std::span<const uint64_t> dims,
                         std::span<const uint8_t> data);
  absl::Status AddTensor(absl::string_view name, quant::TensorType type, std::span<const uint64_t> dims, Fill fill);

  uint32_t alignment() const { return alignment_; }
  uint64_t tensor_data_bytes() const;

  // Writes PATH.tmp then renames it to PATH, so a failed write leaves no
  // half-written model behind.
  absl::Status WriteFile(const std::string& path, const Progress& progress = nullptr) const;
  // The whole file in memory (tests, small files).
  absl::StatusOr<std::string> WriteToString() const;
  // Only the header (metadata, tensor infos, padding): what planning reads.
  // Tensors need no data. Readers open it with OpenOptions::header_only.
  std::string HeaderBytes() const { return EncodeHeader(); }
  absl::Status WriteHeaderFile(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    quant::TensorType type;
    std::vector<uint64_t> dims;
    uint64_t bytes = 0;
    uint64_t offset = 0;
    std::span<const uint8_t> data;
    Fill fill;
  };
  absl::Status AddTensorInfo(absl::string_view name, quant::TensorType type, std::span<const uint64_t> dims);
  std::string EncodeHeader() const;
  // Calls `sink` with consecutive pieces of the file.
  absl::Status Emit(const std::function<absl::Status(absl::string_view)>& sink, const Progress& progress) const;

  uint32_t alignment_ = kDefaultAlignment;
  std::vector<std::pair<std::string, MetaValue>> metadata_;
  absl::flat_hash_set<std::string> keys_;
  std::vector<Tensor> tensors_;
  absl::flat_hash_set<std::string> tensor_names_;
};

}  // namespace ferry::gguf
