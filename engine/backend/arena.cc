#include "engine/backend/arena.h"

#include <algorithm>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "engine/units.h"

namespace ferry::backend {

Arena::Arena(uint64_t capacity) : capacity_(capacity / kDeviceAlign * kDeviceAlign) {
  if (capacity_ > 0) free_[0] = capacity_;
}

std::optional<uint64_t> Arena::Allocate(uint64_t bytes) {
  const uint64_t size = AlignDevice(std::max<uint64_t>(bytes, 1));
  if (size < bytes) return std::nullopt;  // overflow
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < size) continue;
    const uint64_t offset = it->first, rest = it->second - size;
    free_.erase(it);
    if (rest > 0) free_[offset + size] = rest;
    allocated_[offset] = size;
    used_ += size;
    peak_ = std::max(peak_, used_);
    return offset;
  }
  return std::nullopt;
}

bool Arena::Free(uint64_t offset) {
  auto a = allocated_.find(offset);
  if (a == allocated_.end()) return false;
  uint64_t begin = offset, size = a->second;
  allocated_.erase(a);
  used_ -= size;
  // Coalesce with the free neighbours.
  auto next = free_.lower_bound(begin);
  if (next != free_.end() && begin + size == next->first) {
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == begin) {
      begin = prev->first;
      size += prev->second;
      free_.erase(prev);
    }
  }
  free_[begin] = size;
  return true;
}

uint64_t Arena::largest_free() const {
  uint64_t best = 0;
  for (const auto& [offset, size] : free_) best = std::max(best, size);
  return best;
}

absl::Status Arena::OutOfMemory(absl::string_view what, uint64_t bytes) const {
  return absl::ResourceExhaustedError(absl::StrCat("device out of memory: ", what, " needs ",
                                                   HumanBytes(AlignDevice(bytes)), ", ", HumanBytes(capacity_ - used_),
                                                   " of ", HumanBytes(capacity_), " free (largest free block ",
                                                   HumanBytes(largest_free()), ")"));
}

}  // namespace ferry::backend
