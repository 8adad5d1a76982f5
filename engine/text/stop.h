// Stop sequences over streamed text: text that could still turn into a stop
// sequence is held back until it is decided, so the stop text itself is
// never emitted.
#pragma once

#include <string>
#include <vector>

namespace ferry::text {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Adds generated text; returns what can be emitted now. Sets *stopped when
  // a stop sequence completed (the text before it is returned, the rest dropped).
  std::string Push(const std::string& text, bool* stopped);
  // At the end of generation: whatever was held back.
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string held_;
};

}  // namespace ferry::text
