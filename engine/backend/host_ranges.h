// Host memory ranges a device has been given (allocated page-locked or
// registered), by start address, each with a value of the device's; the
// lookup answers "does one range hold all of [p, p + bytes)?".
#pragma once

#include <cstdint>
#include <iterator>
#include <map>
#include <optional>

namespace ferry::backend {

template <typename T = bool>
class HostRanges {
 public:
  struct Hit {
    const uint8_t* start;
    const T& value;
  };

  void Add(const void* p, uint64_t bytes, T value = T{}) { ranges_[Key(p)] = {bytes, value}; }
  bool Remove(const void* p) { return ranges_.erase(Key(p)) > 0; }
  std::optional<Hit> Find(const void* p, uint64_t bytes) const {
    auto it = ranges_.upper_bound(Key(p));
    if (it == ranges_.begin()) return std::nullopt;
    it = std::prev(it);
    if (Key(p) + bytes > it->first + it->second.bytes) return std::nullopt;
    return Hit{reinterpret_cast<const uint8_t*>(it->first), it->second.value};
  }
  uint64_t TotalBytes() const {
    uint64_t sum = 0;
    for (const auto& [start, range] : ranges_) sum += range.bytes;
    return sum;
  }
  template <typename F>
  void ForEachStart(F f) const {
    for (const auto& [start, range] : ranges_) f(reinterpret_cast<void*>(start));
  }

 private:
  struct Range {
    uint64_t bytes;
    T value;
  };
  static uintptr_t Key(const void* p) { return reinterpret_cast<uintptr_t>(p); }
  std::map<uintptr_t, Range> ranges_;
};

}  // namespace ferry::backend
