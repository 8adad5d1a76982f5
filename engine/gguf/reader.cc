#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/gguf/gguf.h"

namespace ferry::gguf {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;
// Smallest possible encodings, used to refuse counts the file cannot hold
// before anything is allocated for them.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;             // key len, 1-byte key, type, u8
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;  // name, n_dims, 1 dim, type, offset

absl::Status Invalid(uint64_t at, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("at byte ", at, ": ", what));
}

// Bounds-checked little-endian reader over the file's bytes.
class Cursor {
 public:
  Cursor(std::span<const uint8_t> bytes, uint64_t pos) : bytes_(bytes), pos_(pos) {}

  uint64_t pos() const { return pos_; }
  absl::string_view View(uint64_t begin, uint64_t end) const {
    return absl::string_view(reinterpret_cast<const char*>(bytes_.data() + begin), end - begin);
  }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  template <typename T>
  absl::Status Read(T* out, absl::string_view what) {
    if (remaining() < sizeof(T)) return Truncated(sizeof(T), what);
    std::memcpy(out, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  absl::Status Skip(uint64_t n, absl::string_view what) {
    if (remaining() < n) return Truncated(n, what);
    pos_ += n;
    return absl::OkStatus();
  }

  // A u64-length-prefixed string. `allow_empty` is false for keys and names.
  absl::Status ReadString(absl::string_view* out, absl::string_view what, bool allow_empty) {
    const uint64_t at = pos_;
    uint64_t len = 0;
    if (absl::Status s = Read(&len, what); !s.ok()) return s;
    if (len == 0 && !allow_empty) return Invalid(at, absl::StrCat(what, " has length 0"));
    if (len > remaining()) {
      return Invalid(at, absl::StrCat(what, " length ", len, " runs past the end of the file (",
                                      remaining(), " bytes left)"));
    }
    *out = absl::string_view(reinterpret_cast<const char*>(bytes_.data() + pos_), len);
    pos_ += len;
    return absl::OkStatus();
  }

 private:
  absl::Status Truncated(uint64_t need, absl::string_view what) const {
    return Invalid(pos_, absl::StrCat("file truncated: ", what, " needs ", need, " bytes, ",
                                      remaining(), " left"));
  }

  std::span<const uint8_t> bytes_;
  uint64_t pos_;
};

absl::Status ParseValue(Cursor& c, ValueType type, int depth, Value* out);

// Reads the array header and walks every element so that a stored array is
// known to be well-formed; elements are decoded again only when asked for.
absl::Status ParseArray(Cursor& c, int depth, Value* out) {
  const uint64_t at = c.pos();
  if (depth >= kMaxArrayNesting) {
    return Invalid(at, absl::StrCat("arrays nested deeper than ", kMaxArrayNesting, " levels"));
  }
  uint32_t raw_elem = 0;
  if (absl::Status s = c.Read(&raw_elem, "array element type"); !s.ok()) return s;
  if (!IsKnownValueType(raw_elem)) {
    return Invalid(at, absl::StrCat("unknown array element type ", raw_elem));
  }
  out->elem_type = static_cast<ValueType>(raw_elem);
  if (absl::Status s = c.Read(&out->count, "array count"); !s.ok()) return s;
  const uint64_t begin = c.pos();
  if (const size_t size = FixedSize(out->elem_type); size != 0) {
    if (out->count > c.remaining() / size) {
      return Invalid(at, absl::StrCat("array of ", out->count, " ", TypeName(out->elem_type),
                                      " needs more bytes than the ", c.remaining(), " left in the file"));
    }
    if (absl::Status s = c.Skip(out->count * size, "array"); !s.ok()) return s;
  } else {
    // Each string or nested array takes at least 8 bytes (its length/count).
    const uint64_t min_size = out->elem_type == ValueType::kString ? 8 : 12;
    if (out->count > c.remaining() / min_size) {
      return Invalid(at, absl::StrCat("array of ", out->count, " ", TypeName(out->elem_type),
                                      " cannot fit in the ", c.remaining(), " bytes left in the file"));
    }
    Value element;
    for (uint64_t i = 0; i < out->count; ++i) {
      if (absl::Status s = ParseValue(c, out->elem_type, depth + 1, &element); !s.ok()) return s;
    }
  }
  out->raw = c.View(begin, c.pos());
  return absl::OkStatus();
}

absl::Status ParseValue(Cursor& c, ValueType type, int depth, Value* out) {
  *out = Value{};
  out->type = type;
  switch (type) {
    case ValueType::kString:
      return c.ReadString(&out->str, "string value", /*allow_empty=*/true);
    case ValueType::kArray:
      return ParseArray(c, depth, out);
    case ValueType::kBool: {
      const uint64_t at = c.pos();
      uint8_t b = 0;
      if (absl::Status s = c.Read(&b, "bool"); !s.ok()) return s;
      if (b > 1) return Invalid(at, absl::StrCat("bool value ", static_cast<int>(b), " is neither 0 nor 1"));
      out->bits = b;
      return absl::OkStatus();
    }
    default: {
      // Fixed-size scalar: keep its little-endian bits zero-extended (the
      // hosts ferry targets, x86-64 and aarch64, are little-endian).
      const size_t size = FixedSize(type);
      const uint64_t at = c.pos();
      if (absl::Status s = c.Skip(size, TypeName(type)); !s.ok()) return s;
      std::memcpy(&out->bits, c.View(at, at + size).data(), size);
      return absl::OkStatus();
    }
  }
}

bool IsPowerOfTwo(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

}  // namespace
}  // namespace ferry::gguf

namespace ferry::gguf {
namespace {

absl::Status WithContext(const absl::Status& s, absl::string_view context) {
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat(context, ": ", s.message()));
}

std::string Escaped(absl::string_view s, size_t max_len) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_len; ++i) {
    const unsigned char ch = static_cast<unsigned char>(s[i]);
    if (ch == '\\' || ch == '"') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20 || ch == 0x7f) {
      out += absl::StrFormat("\\x%02x", ch);
    } else {
      out += static_cast<char>(ch);
    }
  }
  if (s.size() > max_len) out += "...";
  return out;
}

}  // namespace

absl::string_view TypeName(ValueType type) {
  switch (type) {
    case ValueType::kU8: return "u8";
    case ValueType::kI8: return "i8";
    case ValueType::kU16: return "u16";
    case ValueType::kI16: return "i16";
    case ValueType::kU32: return "u32";
    case ValueType::kI32: return "i32";
    case ValueType::kF32: return "f32";
    case ValueType::kBool: return "bool";
    case ValueType::kString: return "string";
    case ValueType::kArray: return "array";
    case ValueType::kU64: return "u64";
    case ValueType::kI64: return "i64";
    case ValueType::kF64: return "f64";
  }
  return "unknown";
}

bool IsKnownValueType(uint32_t raw) { return raw <= static_cast<uint32_t>(ValueType::kF64); }

size_t FixedSize(ValueType type) {
  switch (type) {
    case ValueType::kU8: case ValueType::kI8: case ValueType::kBool: return 1;
    case ValueType::kU16: case ValueType::kI16: return 2;
    case ValueType::kU32: case ValueType::kI32: case ValueType::kF32: return 4;
    case ValueType::kU64: case ValueType::kI64: case ValueType::kF64: return 8;
    case ValueType::kString: case ValueType::kArray: return 0;
  }
  return 0;
}

bool Value::IsInteger() const {
  switch (type) {
    case ValueType::kU8: case ValueType::kI8: case ValueType::kU16: case ValueType::kI16:
    case ValueType::kU32: case ValueType::kI32: case ValueType::kU64: case ValueType::kI64:
      return true;
    default:
      return false;
  }
}

int64_t Value::AsInt() const {
  switch (type) {
    case ValueType::kI8: return static_cast<int8_t>(bits);
    case ValueType::kI16: return static_cast<int16_t>(bits);
    case ValueType::kI32: return static_cast<int32_t>(bits);
    default: return static_cast<int64_t>(bits);
  }
}

double Value::AsDouble() const {
  switch (type) {
    case ValueType::kF32: {
      float f;
      const uint32_t b = static_cast<uint32_t>(bits);
      std::memcpy(&f, &b, 4);
      return f;
    }
    case ValueType::kF64: {
      double d;
      std::memcpy(&d, &bits, 8);
      return d;
    }
    case ValueType::kU64: return static_cast<double>(bits);
    default: return static_cast<double>(AsInt());
  }
}

std::vector<Value> Value::Items(size_t limit) const {
  std::vector<Value> items;
  if (type != ValueType::kArray) return items;
  Cursor c(std::span(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()), 0);
  items.resize(std::min<uint64_t>(count, limit));
  for (Value& item : items) {
    if (!ParseValue(c, elem_type, 0, &item).ok()) break;  // cannot happen: validated at open
  }
  return items;
}

std::vector<absl::string_view> Value::Strings() const {
  std::vector<absl::string_view> out;
  if (type != ValueType::kArray || elem_type != ValueType::kString) return out;
  Cursor c(std::span(reinterpret_cast<const uint8_t*>(raw.data()), raw.size()), 0);
  out.resize(count);
  for (absl::string_view& s : out) {
    if (!c.ReadString(&s, "string", true).ok()) break;  // cannot happen: validated at open
  }
  return out;
}

std::string Value::TypeString() const {
  if (type != ValueType::kArray) return std::string(TypeName(type));
  return absl::StrCat("[", TypeName(elem_type), " x ", count, "]");
}

std::string Value::ToDisplayString(size_t max_items) const {
  switch (type) {
    case ValueType::kString: return absl::StrCat("\"", Escaped(str, 60), "\"");
    case ValueType::kBool: return bits ? "true" : "false";
    case ValueType::kF32: case ValueType::kF64: return absl::StrFormat("%g", AsDouble());
    case ValueType::kU64: return absl::StrCat(bits);
    case ValueType::kArray: {
      std::string out = "[";
      std::vector<Value> items = Items(max_items);
      for (size_t i = 0; i < items.size() && i < max_items; ++i) {
        absl::StrAppend(&out, i ? ", " : "", items[i].ToDisplayString(max_items));
      }
      if (count > max_items) absl::StrAppend(&out, ", ... (", count, " items)");
      return out + "]";
    }
    default: return absl::StrCat(AsInt());
  }
}

std::string TensorInfo::ShapeString() const {
  std::string out = "[";
  for (int i = 0; i < n_dims; ++i) absl::StrAppend(&out, i ? ", " : "", dims[i]);
  return out + "]";
}

absl::StatusOr<std::unique_ptr<File>> File::Open(const std::string& path, const OpenOptions& options) {
  // O_NONBLOCK: opening a FIFO for reading blocks until a writer comes, and
  // the regular-file check below needs the descriptor first. It changes
  // nothing for a regular file, which is only mapped.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    const std::string msg = absl::StrCat(path, ": cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  std::unique_ptr<File> file(new File());
  file->path_ = path;
  file->header_only_ = options.header_only;
  const size_t size = static_cast<size_t>(st.st_size);
  if (size > 0) {
    void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat(path, ": mmap of ", size, " bytes failed: ", std::strerror(err)));
    }
    file->map_ = map;
    file->map_size_ = size;
    file->bytes_ = std::span(static_cast<const uint8_t*>(map), size);
  }
  ::close(fd);  // the mapping keeps the file's pages reachable
  if (absl::Status s = file->Parse(); !s.ok()) return WithContext(s, path);
  return file;
}

absl::StatusOr<std::unique_ptr<File>> File::FromBuffer(std::span<const uint8_t> bytes, const OpenOptions& options) {
  std::unique_ptr<File> file(new File());
  file->path_ = "<buffer>";
  file->header_only_ = options.header_only;
  file->bytes_ = bytes;
  if (absl::Status s = file->Parse(); !s.ok()) return s;
  return file;
}

void File::DropPages(const void* p, uint64_t n) const {
  if (map_ == nullptr || n == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
  const auto base = reinterpret_cast<uintptr_t>(map_);
  if (hi <= lo || lo < base || hi > base + map_size_) return;
  ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

File::~File() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

absl::Status File::Parse() {
  const uint64_t size = bytes_.size();
  if (size < 4) {
    return Invalid(0, absl::StrCat("file truncated: ", size, " bytes cannot hold a GGUF header (",
                                   kHeaderBytes, " bytes)"));
  }
  Cursor c(bytes_, 0);
  uint32_t magic = 0;
  if (absl::Status s = c.Read(&magic, "magic"); !s.ok()) return s;
  if (magic != kMagic) {
    return Invalid(0, absl::StrCat("not a GGUF file: it starts with \"",
                                   Escaped(absl::string_view(reinterpret_cast<const char*>(bytes_.data()), 4), 4),
                                   "\", expected \"GGUF\""));
  }
  if (absl::Status s = c.Read(&version_, "version"); !s.ok()) return s;
  if (version_ != 2 && version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(version_);
    if (swapped == 2 || swapped == 3) {
      return Invalid(4, absl::StrCat("unsupported GGUF version ", version_, ": this is a big-endian file (version ",
                                     swapped, "); ferry reads little-endian GGUF"));
    }
    return Invalid(4, absl::StrCat("unsupported GGUF version ", version_,
                                   " (ferry reads versions 2 and 3; re-convert the model with current tools)"));
  }
  uint64_t n_tensors = 0, n_kv = 0;
  if (absl::Status s = c.Read(&n_tensors, "tensor count"); !s.ok()) return s;
  if (absl::Status s = c.Read(&n_kv, "metadata count"); !s.ok()) return s;
  if (n_kv > c.remaining() / kMinKvBytes) {
    return Invalid(16, absl::StrCat("metadata count ", n_kv, " cannot fit in the ", c.remaining(),
                                    " bytes after the header (each entry takes at least ", kMinKvBytes, ")"));
  }
  if (n_tensors > c.remaining() / kMinTensorInfoBytes ||
      n_kv * kMinKvBytes + n_tensors * kMinTensorInfoBytes > c.remaining()) {
    return Invalid(8, absl::StrCat("tensor count ", n_tensors, " cannot fit in the ", c.remaining(),
                                   " bytes after the header (each tensor info takes at least ",
                                   kMinTensorInfoBytes, ")"));
  }

  metadata_.reserve(n_kv);
  key_index_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    const uint64_t at = c.pos();
    absl::string_view key;
    if (absl::Status s = c.ReadString(&key, absl::StrCat("metadata key #", i), false); !s.ok()) return s;
    if (auto it = key_index_.find(key); it != key_index_.end()) {
      return Invalid(at, absl::StrCat("duplicate metadata key '", Escaped(key, 80), "'"));
    }
    uint32_t raw_type = 0;
    if (absl::Status s = c.Read(&raw_type, "value type"); !s.ok()) {
      return WithContext(s, absl::StrCat("metadata key '", Escaped(key, 80), "'"));
    }
    if (!IsKnownValueType(raw_type)) {
      return Invalid(at, absl::StrCat("metadata key '", Escaped(key, 80), "' has unknown value type ", raw_type));
    }
    Value value;
    if (absl::Status s = ParseValue(c, static_cast<ValueType>(raw_type), 0, &value); !s.ok()) {
      return WithContext(s, absl::StrCat("metadata key '", Escaped(key, 80), "'"));
    }
    key_index_.emplace(key, metadata_.size());
    metadata_.emplace_back(key, value);
  }

  if (const Value* align = Find("general.alignment"); align != nullptr) {
    if (align->type != ValueType::kU32) {
      return absl::InvalidArgumentError(
          absl::StrCat("general.alignment must be u32, found ", align->TypeString()));
    }
    if (!IsPowerOfTwo(align->bits)) {
      return absl::InvalidArgumentError(
          absl::StrCat("general.alignment ", align->bits, " is not a power of two"));
    }
    alignment_ = align->bits;
  }

  tensors_.reserve(n_tensors);
  tensor_index_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    const uint64_t at = c.pos();
    TensorInfo t;
    if (absl::Status s = c.ReadString(&t.name, absl::StrCat("tensor name #", i), false); !s.ok()) return s;
    const std::string where = absl::StrCat("tensor '", Escaped(t.name, 80), "'");
    if (t.name.size() > kMaxTensorNameBytes) {
      return Invalid(at, absl::StrCat(where, ": name is ", t.name.size(), " bytes, the limit is ",
                                      kMaxTensorNameBytes));
    }
    if (tensor_index_.contains(t.name)) return Invalid(at, absl::StrCat("duplicate ", where));
    uint32_t n_dims = 0;
    if (absl::Status s = c.Read(&n_dims, "n_dims"); !s.ok()) return WithContext(s, where);
    if (n_dims == 0 || n_dims > kMaxDims) {
      return Invalid(at, absl::StrCat(where, ": n_dims is ", n_dims, ", must be 1..", kMaxDims));
    }
    t.n_dims = static_cast<int>(n_dims);
    uint64_t elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      if (absl::Status s = c.Read(&t.dims[d], "dimension"); !s.ok()) return WithContext(s, where);
      if (t.dims[d] == 0) return Invalid(at, absl::StrCat(where, ": dimension ", d, " is 0"));
      if (t.dims[d] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Invalid(at, absl::StrCat(where, ": dimension ", d, " is negative (",
                                        static_cast<int64_t>(t.dims[d]), ")"));
      }
      if (__builtin_mul_overflow(elements, t.dims[d], &elements) ||
          elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Invalid(at, absl::StrCat(where, ": element count of shape overflows 63 bits"));
      }
    }
    t.elements = elements;
    uint32_t raw_type = 0;
    if (absl::Status s = c.Read(&raw_type, "tensor type"); !s.ok()) return WithContext(s, where);
    const std::optional<quant::TypeInfo> info = quant::FindType(raw_type);
    if (!info) return Invalid(at, absl::StrCat(where, ": unknown tensor type id ", raw_type));
    t.type = info->type;
    if (t.dims[0] % info->block_elems != 0) {
      return Invalid(at, absl::StrCat(where, " (", info->name, "): first dimension ", t.dims[0],
                                      " is not a multiple of the block size ", info->block_elems));
    }
    if (__builtin_mul_overflow(elements / info->block_elems, uint64_t{info->block_bytes}, &t.bytes)) {
      return Invalid(at, absl::StrCat(where, ": byte size overflows 64 bits"));
    }
    if (absl::Status s = c.Read(&t.offset, "tensor offset"); !s.ok()) return WithContext(s, where);
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(t);
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t end_of_infos = c.pos();
  data_offset_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;  // end_of_infos < 2^63: no overflow
  if (!tensors_.empty() && data_offset_ > size && !header_only_) {
    return Invalid(end_of_infos, absl::StrCat("file truncated: data section would start at byte ", data_offset_,
                                              " but the file has ", size, " bytes"));
  }
  const uint64_t data_bytes = data_offset_ <= size ? size - data_offset_ : 0;
  for (TensorInfo& t : tensors_) {
    const std::string where = absl::StrCat("tensor '", Escaped(t.name, 80), "'");
    if (t.offset % alignment_ != 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": data offset ", t.offset,
                                                     " is not a multiple of the alignment ", alignment_));
    }
    uint64_t end = 0;
    if (__builtin_add_overflow(t.offset, t.bytes, &end)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": offset ", t.offset, " + size ", t.bytes, " overflows 64 bits"));
    }
    if (header_only_) continue;  // data is neither checked against the file nor mapped
    if (end > data_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": data [", t.offset, ", ", end, ") runs past the end of the data section (", data_bytes,
          " bytes): file truncated or offset wrong"));
    }
    t.data = bytes_.data() + data_offset_ + t.offset;
  }
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  // The tensors tile the data section: each starts where the one before
  // ends, rounded up to the alignment (the layout every GGUF writer
  // produces, and which llama.cpp's reader requires). A gap means the
  // header's types or shapes do not describe the bytes there: a tensor's
  // type changed from f32 to q8_0 leaves most of its old bytes unread.
  if (!by_offset.empty() && by_offset[0]->offset != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", Escaped(by_offset[0]->name, 80),
                                                   "' is the first in the data section but starts at offset ",
                                                   by_offset[0]->offset, ", not 0"));
  }
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& a = *by_offset[i - 1];
    const TensorInfo& b = *by_offset[i];
    if (a.offset + a.bytes > b.offset) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensors '", Escaped(a.name, 80), "' [", a.offset, ", ", a.offset + a.bytes, ") and '",
          Escaped(b.name, 80), "' [", b.offset, ", ", b.offset + b.bytes, ") overlap"));
    }
    const uint64_t next = (a.offset + a.bytes + alignment_ - 1) / alignment_ * alignment_;  // <= b.offset: no overflow
    if (b.offset != next) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", Escaped(b.name, 80), "' starts at offset ", b.offset, " but '", Escaped(a.name, 80), "' (",
          quant::Info(a.type).name, ", ", a.bytes, " bytes) ends at ", next, ": ", b.offset - next,
          " bytes between them belong to no tensor (a type or shape in the header does not match the data)"));
    }
  }
  return absl::OkStatus();
}

const Value* File::Find(absl::string_view key) const {
  auto it = key_index_.find(key);
  return it == key_index_.end() ? nullptr : &metadata_[it->second].second;
}

const TensorInfo* File::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<const Value*> File::FindTyped(absl::string_view key, absl::string_view expected,
                                              bool (*ok)(const Value&)) const {
  const Value* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("metadata key '", key, "' not found"));
  if (!ok(*v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata key '", key, "': expected ", expected, ", found ", v->TypeString()));
  }
  return v;
}

absl::StatusOr<absl::string_view> File::GetString(absl::string_view key) const {
  auto v = FindTyped(key, "string", [](const Value& v) { return v.type == ValueType::kString; });
  if (!v.ok()) return v.status();
  return (*v)->str;
}

absl::StatusOr<bool> File::GetBool(absl::string_view key) const {
  auto v = FindTyped(key, "bool", [](const Value& v) { return v.type == ValueType::kBool; });
  if (!v.ok()) return v.status();
  return (*v)->bits != 0;
}

absl::StatusOr<uint64_t> File::GetUint(absl::string_view key) const {
  auto v = FindTyped(key, "an integer", [](const Value& v) { return v.IsInteger(); });
  if (!v.ok()) return v.status();
  if ((*v)->type != ValueType::kU64 && (*v)->AsInt() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("metadata key '", key, "': expected a non-negative integer, found ",
                                                   (*v)->TypeString(), " ", (*v)->AsInt()));
  }
  return (*v)->type == ValueType::kU64 ? (*v)->bits : static_cast<uint64_t>((*v)->AsInt());
}

absl::StatusOr<int64_t> File::GetInt(absl::string_view key) const {
  auto v = FindTyped(key, "an integer", [](const Value& v) { return v.IsInteger(); });
  if (!v.ok()) return v.status();
  if ((*v)->type == ValueType::kU64 && (*v)->bits > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("metadata key '", key, "': u64 value ", (*v)->bits, " does not fit a signed 64-bit integer"));
  }
  return (*v)->AsInt();
}

absl::StatusOr<double> File::GetFloat(absl::string_view key) const {
  auto v = FindTyped(key, "f32 or f64", [](const Value& v) { return v.IsFloat(); });
  if (!v.ok()) return v.status();
  return (*v)->AsDouble();
}

absl::StatusOr<std::vector<absl::string_view>> File::GetStringArray(absl::string_view key) const {
  auto v = FindTyped(key, "[string]", [](const Value& v) {
    return v.type == ValueType::kArray && v.elem_type == ValueType::kString;
  });
  if (!v.ok()) return v.status();
  return (*v)->Strings();
}

absl::StatusOr<std::vector<float>> File::GetFloatArray(absl::string_view key) const {
  auto v = FindTyped(key, "[f32]", [](const Value& v) {
    return v.type == ValueType::kArray && v.elem_type == ValueType::kF32;
  });
  if (!v.ok()) return v.status();
  std::vector<float> out((*v)->count);
  if (!out.empty()) std::memcpy(out.data(), (*v)->raw.data(), out.size() * sizeof(float));
  return out;
}

absl::StatusOr<std::vector<int64_t>> File::GetIntArray(absl::string_view key) const {
  auto v = FindTyped(key, "an integer array", [](const Value& v) {
    if (v.type != ValueType::kArray) return false;
    Value probe;
    probe.type = v.elem_type;
    return probe.IsInteger();
  });
  if (!v.ok()) return v.status();
  std::vector<int64_t> out;
  out.reserve((*v)->count);
  for (const Value& item : (*v)->Items()) out.push_back(item.AsInt());
  return out;
}

}  // namespace ferry::gguf
