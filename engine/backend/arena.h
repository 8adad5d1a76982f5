// Byte ranges of a fixed-capacity region handed out first-fit, 256-byte
// aligned (the alignment cudaMalloc guarantees and the planner assumes).
// The sim device allocates from one over reserved address space; the cuda
// device sub-allocates one cudaMalloc the same way, so "out of memory"
// happens at the same byte on both.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ferry::backend {

constexpr uint64_t kDeviceAlign = 256;
constexpr uint64_t AlignDevice(uint64_t bytes) { return (bytes + kDeviceAlign - 1) / kDeviceAlign * kDeviceAlign; }

class Arena {
 public:
  explicit Arena(uint64_t capacity);

  // The offset of a new range of AlignDevice(bytes), or nothing when no free
  // range is large enough. Zero bytes take one alignment unit.
  std::optional<uint64_t> Allocate(uint64_t bytes);
  // Returns the range at `offset`; false when nothing was allocated there.
  bool Free(uint64_t offset);

  uint64_t capacity() const { return capacity_; }
  uint64_t used() const { return used_; }
  uint64_t peak() const { return peak_; }
  uint64_t largest_free() const;
  // RESOURCE_EXHAUSTED "device out of memory: <what> needs X, Y of Z free
  // (largest free block W)": what a failed Allocate means on every device.
  absl::Status OutOfMemory(absl::string_view what, uint64_t bytes) const;

 private:
  uint64_t capacity_;
  uint64_t used_ = 0;
  uint64_t peak_ = 0;
  std::map<uint64_t, uint64_t> free_;       // offset -> size, coalesced
  std::map<uint64_t, uint64_t> allocated_;  // offset -> size
};

}  // namespace ferry::backend
