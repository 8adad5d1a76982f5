#include "engine/text/stop.h"

#include <algorithm>

namespace ferry::text {

std::string StopMatcher::Push(const std::string& text, bool* stopped) {
  *stopped = false;
  held_ += text;
  size_t first = std::string::npos;
  for (const std::string& s : stops_) {
    if (!s.empty()) first = std::min(first, held_.find(s));
  }
  if (first != std::string::npos) {
    *stopped = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  // Keep the longest tail that is a proper prefix of some stop sequence.
  size_t keep = 0;
  for (const std::string& s : stops_) {
    for (size_t n = std::min(s.size() - (s.empty() ? 0 : 1), held_.size()); n > keep; --n) {
      if (held_.compare(held_.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::Flush() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace ferry::text
