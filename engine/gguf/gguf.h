// GGUF reader. The file is memory-mapped; metadata values and tensor data are
// views into the mapping and live as long as the File. Everything is checked
// before it is used or allocated for, so a hostile file yields an error
// naming what was wrong and where, never a crash or a huge allocation.
//
// Layout (v2/v3, little-endian):
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv,
//   n_kv x { string key, u32 value_type, value },
//   n_tensors x { string name, u32 n_dims, u64 dims[n_dims], u32 type, u64 offset },
//   padding to general.alignment (default 32), tensor data.
// A string is u64 length + bytes; an array is u32 element type + u64 count +
// elements.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/quant/types.h"

namespace ferry::gguf {

inline constexpr uint32_t kDefaultAlignment = 32;
inline constexpr size_t kMaxTensorNameBytes = 63;  // ggml's name field is 64 bytes with the NUL
inline constexpr int kMaxDims = 4;
inline constexpr int kMaxArrayNesting = 8;

enum class ValueType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6,
  kBool = 7, kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

absl::string_view TypeName(ValueType type);
bool IsKnownValueType(uint32_t raw);
// Bytes of one element of a fixed-size type; 0 for string and array.
size_t FixedSize(ValueType type);

// One metadata value, a view into the file.
struct Value {
  ValueType type = ValueType::kU8;
  uint64_t bits = 0;          // scalars: the raw little-endian bits, zero-extended
  absl::string_view str;       // kString
  ValueType elem_type = ValueType::kU8;  // kArray
  uint64_t count = 0;         // kArray: number of elements
  absl::string_view raw;       // kArray: the encoded elements

  bool IsInteger() const;
  bool IsFloat() const { return type == ValueType::kF32 || type == ValueType::kF64; }
  // Scalar readings; callers check the type first (File's Get* do).
  uint64_t AsUint() const { return bits; }
  int64_t AsInt() const;
  double AsDouble() const;

  // Array elements decoded on demand (the file was validated when opened).
  std::vector<Value> Items(size_t limit = SIZE_MAX) const;  // at most `limit` elements
  std::vector<absl::string_view> Strings() const;  // kArray of kString

  // "u32", "string", "[f32 x 512]", "[[i32 x 3] x 2]".
  std::string TypeString() const;
  // The value in a short human form (long arrays and strings elided).
  std::string ToDisplayString(size_t max_items = 8) const;
};

struct TensorInfo {
  absl::string_view name;
  quant::TensorType type = quant::TensorType::kF32;
  int n_dims = 0;
  std::array<uint64_t, kMaxDims> dims{1, 1, 1, 1};  // ne[0] is the contiguous (row) dimension
  uint64_t elements = 0;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t bytes = 0;
  const uint8_t* data = nullptr;

  std::string ShapeString() const;  // "[64, 512]"
};

struct OpenOptions {
  // Read the header only: tensor data may lie past the end of the file (a
  // header-only or truncated file), TensorInfo::data is null, and every
  // other check still applies. For planning, which never touches weights.
  bool header_only = false;
};

class File {
 public:
  // Maps and validates a file.
  static absl::StatusOr<std::unique_ptr<File>> Open(const std::string& path, const OpenOptions& options = {});
  // Validates a buffer the caller keeps alive (fuzzing, tests).
  static absl::StatusOr<std::unique_ptr<File>> FromBuffer(std::span<const uint8_t> bytes,
                                                          const OpenOptions& options = {});

  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return bytes_.size(); }
  const std::string& path() const { return path_; }
  std::span<const uint8_t> bytes() const { return bytes_; }
  // Lets the kernel drop the mapped pages wholly inside [p, p + n) from this
  // process (they are read from the file again if touched): for data that
  // was copied elsewhere. Nothing for a caller's buffer (FromBuffer).
  void DropPages(const void* p, uint64_t n) const;

  // Metadata in file order.
  const std::vector<std::pair<absl::string_view, Value>>& metadata() const { return metadata_; }
  const Value* Find(absl::string_view key) const;
  bool Has(absl::string_view key) const { return Find(key) != nullptr; }

  // Typed accessors. Errors name the key, the expected and the found type.
  absl::StatusOr<absl::string_view> GetString(absl::string_view key) const;
  absl::StatusOr<bool> GetBool(absl::string_view key) const;
  absl::StatusOr<uint64_t> GetUint(absl::string_view key) const;  // any integer type, >= 0
  absl::StatusOr<int64_t> GetInt(absl::string_view key) const;    // any integer type that fits
  absl::StatusOr<double> GetFloat(absl::string_view key) const;   // f32 or f64
  absl::StatusOr<std::vector<absl::string_view>> GetStringArray(absl::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(absl::string_view key) const;  // f32 elements
  absl::StatusOr<std::vector<int64_t>> GetIntArray(absl::string_view key) const;  // integer elements

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  bool header_only() const { return header_only_; }
  const TensorInfo* FindTensor(absl::string_view name) const;

 private:
  File() = default;
  absl::Status Parse();
  bool header_only_ = false;
  absl::StatusOr<const Value*> FindTyped(absl::string_view key, absl::string_view expected,
                                          bool (*ok)(const Value&)) const;

  std::string path_;
  void* map_ = nullptr;  // owned mapping, if any
  size_t map_size_ = 0;
  std::span<const uint8_t> bytes_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<absl::string_view, Value>> metadata_;
  absl::flat_hash_map<absl::string_view, size_t> key_index_;
  std::vector<TensorInfo> tensors_;
  absl::flat_hash_map<absl::string_view, size_t> tensor_index_;
};

}  // namespace ferry::gguf
