#include "engine/gguf/writer.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <future>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace ferry::gguf {
namespace {

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

void PutString(std::string* out, absl::string_view s) {
  Put<uint64_t>(out, s.size());
  out->append(s.data(), s.size());
}

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

MetaValue MetaValue::Scalar(ValueType type, const void* bits, size_t size) {
  MetaValue v;
  v.type_ = type;
  v.payload_.assign(static_cast<const char*>(bits), size);
  return v;
}

MetaValue MetaValue::Str(absl::string_view s) {
  MetaValue v;
  v.type_ = ValueType::kString;
  PutString(&v.payload_, s);
  return v;
}

MetaValue MetaValue::FixedArray(ValueType elem, const void* data, size_t count, size_t size) {
  MetaValue v;
  v.type_ = ValueType::kArray;
  Put<uint32_t>(&v.payload_, static_cast<uint32_t>(elem));
  Put<uint64_t>(&v.payload_, count);
  v.payload_.append(static_cast<const char*>(data), count * size);
  return v;
}

MetaValue MetaValue::StringArray(std::span<const std::string> items) {
  MetaValue v;
  v.type_ = ValueType::kArray;
  Put<uint32_t>(&v.payload_, static_cast<uint32_t>(ValueType::kString));
  Put<uint64_t>(&v.payload_, items.size());
  for (const std::string& s : items) PutString(&v.payload_, s);
  return v;
}

absl::StatusOr<MetaValue> MetaValue::ArrayOf(ValueType elem, std::span<const MetaValue> items) {
  MetaValue v;
  v.type_ = ValueType::kArray;
  Put<uint32_t>(&v.payload_, static_cast<uint32_t>(elem));
  Put<uint64_t>(&v.payload_, items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    if (items[i].type_ != elem) {
      return absl::InvalidArgumentError(absl::StrCat("array of ", TypeName(elem), ": item ", i, " is ",
                                                     TypeName(items[i].type_)));
    }
    v.payload_ += items[i].payload_;
  }
  return v;
}

MetaValue MetaValue::From(const Value& value) {
  MetaValue v;
  v.type_ = value.type;
  switch (value.type) {
    case ValueType::kString:
      PutString(&v.payload_, value.str);
      break;
    case ValueType::kArray:
      Put<uint32_t>(&v.payload_, static_cast<uint32_t>(value.elem_type));
      Put<uint64_t>(&v.payload_, value.count);
      v.payload_.append(value.raw.data(), value.raw.size());  // elements are stored encoded already
      break;
    default:
      v.payload_.assign(reinterpret_cast<const char*>(&value.bits), FixedSize(value.type));
      break;
  }
  return v;
}

absl::Status Writer::Set(absl::string_view key, MetaValue value) {
  if (key.empty()) return absl::InvalidArgumentError("metadata key is empty");
  if (keys_.contains(key)) return absl::AlreadyExistsError(absl::StrCat("metadata key '", key, "' set twice"));
  if (key == "general.alignment") {
    uint32_t a = 0;
    if (value.type() == ValueType::kU32) std::memcpy(&a, value.payload().data(), 4);
    if (value.type() != ValueType::kU32 || a == 0 || (a & (a - 1)) != 0) {
      return absl::InvalidArgumentError("general.alignment must be a u32 power of two");
    }
    if (!tensors_.empty()) return absl::FailedPreconditionError("set general.alignment before adding tensors");
    alignment_ = a;
  }
  keys_.emplace(key);
  metadata_.emplace_back(std::string(key), std::move(value));
  return absl::OkStatus();
}

absl::Status Writer::AddTensorInfo(absl::string_view name, quant::TensorType type, std::span<const uint64_t> dims) {
  if (name.empty() || name.size() > kMaxTensorNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor name '", name, "' must be 1..", kMaxTensorNameBytes,
                                                   " bytes"));
  }
  if (tensor_names_.contains(name)) return absl::AlreadyExistsError(absl::StrCat("tensor '", name, "' added twice"));
  if (dims.empty() || dims.size() > static_cast<size_t>(kMaxDims)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has ", dims.size(), " dims, must be 1..4"));
  }
  uint64_t elements = 1;
  for (uint64_t d : dims) {
    if (d == 0 || __builtin_mul_overflow(elements, d, &elements)) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has a zero or overflowing dimension"));
    }
  }
  const quant::TypeInfo& info = quant::Info(type);
  if (dims[0] % info.block_elems != 0) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' (", info.name, "): first dimension ", dims[0],
                                                   " is not a multiple of the block size ", info.block_elems));
  }
  Tensor t;
  t.name = std::string(name);
  t.type = type;
  t.dims.assign(dims.begin(), dims.end());
  t.bytes = elements / info.block_elems * info.block_bytes;
  t.offset = tensors_.empty() ? 0 : AlignUp(tensors_.back().offset + tensors_.back().bytes, alignment_);
  tensor_names_.emplace(t.name);
  tensors_.push_back(std::move(t));
  return absl::OkStatus();
}

absl::Status Writer::AddTensor(absl::string_view name, quant::TensorType type, std::span<const uint64_t> dims,
                               std::span<const uint8_t> data) {
  if (absl::Status s = AddTensorInfo(name, type, dims); !s.ok()) return s;
  if (data.size() != tensors_.back().bytes) {
    const uint64_t want = tensors_.back().bytes;
    tensor_names_.erase(tensors_.back().name);
    tensors_.pop_back();
    return absl::InvalidArgumentError(
        absl::StrCat("tensor '", name, "' needs ", want, " bytes of data, got ", data.size()));
  }
  tensors_.back().data = data;
  return absl::OkStatus();
}

absl::Status Writer::AddTensor(absl::string_view name, quant::TensorType type, std::span<const uint64_t> dims,
                               Fill fill) {
  if (absl::Status s = AddTensorInfo(name, type, dims); !s.ok()) return s;
  tensors_.back().fill = std::move(fill);
  return absl::OkStatus();
}

uint64_t Writer::tensor_data_bytes() const {
  return tensors_.empty() ? 0 : tensors_.back().offset + tensors_.back().bytes;
}

std::string Writer::EncodeHeader() const {
  std::string out;
  out.append("GGUF", 4);
  Put<uint32_t>(&out, 3);
  Put<uint64_t>(&out, tensors_.size());
  Put<uint64_t>(&out, metadata_.size());
  for (const auto& [key, value] : metadata_) {
    PutString(&out, key);
    Put<uint32_t>(&out, static_cast<uint32_t>(value.type()));
    out += value.payload();
  }
  for (const Tensor& t : tensors_) {
    PutString(&out, t.name);
    Put<uint32_t>(&out, static_cast<uint32_t>(t.dims.size()));
    for (uint64_t d : t.dims) Put<uint64_t>(&out, d);
    Put<uint32_t>(&out, static_cast<uint32_t>(t.type));
    Put<uint64_t>(&out, t.offset);
  }
  out.resize(AlignUp(out.size(), alignment_), '\0');
  return out;
}

absl::Status Writer::Emit(const std::function<absl::Status(absl::string_view)>& sink, const Progress& progress) const {
  if (absl::Status s = sink(EncodeHeader()); !s.ok()) return s;
  const uint64_t total = tensor_data_bytes();
  // Fills (random weights quantized row by row: CPU-bound) run on up to one
  // thread per core, ahead of the writer, which still writes the tensors in
  // order: the same bytes as filling them one after the other, in a fraction
  // of the time (an 8B-shaped model is 8.5 GB of q8_0). At most `ahead`
  // filled tensors wait in memory.
  using Filled = absl::StatusOr<std::vector<uint8_t>>;
  const size_t ahead = std::max(1u, std::thread::hardware_concurrency());
  std::deque<std::future<Filled>> pending;
  size_t next_fill = 0;
  auto launch_fills = [&] {
    while (next_fill < tensors_.size() && pending.size() < ahead) {
      const Tensor& t = tensors_[next_fill++];
      if (!t.fill) continue;
      pending.push_back(std::async(std::launch::async, [&t]() -> Filled {
        std::vector<uint8_t> buffer(t.bytes, 0);
        if (absl::Status s = t.fill(std::span(buffer)); !s.ok()) {
          return absl::Status(s.code(), absl::StrCat("tensor '", t.name, "': ", s.message()));
        }
        return buffer;
      }));
    }
  };
  uint64_t pos = 0;
  const std::string zeros(alignment_, '\0');
  absl::Status status;
  for (size_t i = 0; i < tensors_.size() && status.ok(); ++i) {
    const Tensor& t = tensors_[i];
    launch_fills();
    if (status = sink(absl::string_view(zeros.data(), t.offset - pos)); !status.ok()) break;
    std::span<const uint8_t> bytes = t.data;
    Filled filled;
    if (t.fill) {
      filled = pending.front().get();
      pending.pop_front();
      if (!filled.ok()) {
        status = filled.status();
        break;
      }
      bytes = *filled;
    }
    status = sink(absl::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    pos = t.offset + t.bytes;
    if (status.ok() && progress) progress(i + 1, tensors_.size(), pos, total);
  }
  for (auto& f : pending) f.wait();  // no fill outlives the writer's tensors
  return status;
}

absl::Status Writer::WriteFile(const std::string& path, const Progress& progress) const {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  }
  absl::Status status = Emit(
      [&](absl::string_view piece) {
        if (!piece.empty() && std::fwrite(piece.data(), 1, piece.size(), f) != piece.size()) {
          return absl::DataLossError(absl::StrCat(tmp, ": write failed: ", std::strerror(errno)));
        }
        return absl::OkStatus();
      },
      progress);
  if (std::fclose(f) != 0 && status.ok()) {
    status = absl::DataLossError(absl::StrCat(tmp, ": close failed: ", std::strerror(errno)));
  }
  if (status.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    status = absl::PermissionDeniedError(absl::StrCat(path, ": cannot rename into place: ", std::strerror(errno)));
  }
  if (!status.ok()) std::remove(tmp.c_str());
  return status;
}

absl::Status Writer::WriteHeaderFile(const std::string& path) const {
  const std::string header = EncodeHeader();
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) return absl::PermissionDeniedError(absl::StrCat(tmp, ": cannot create: ", std::strerror(errno)));
  const bool written = std::fwrite(header.data(), 1, header.size(), f) == header.size();
  if (std::fclose(f) != 0 || !written || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::DataLossError(absl::StrCat(path, ": write failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Writer::WriteToString() const {
  std::string out;
  absl::Status s = Emit(
      [&](absl::string_view piece) {
        out.append(piece.data(), piece.size());
        return absl::OkStatus();
      },
      nullptr);
  if (!s.ok()) return s;
  return out;
}

}  // namespace ferry::gguf
