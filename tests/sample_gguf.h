// A GGUF file that uses every metadata value type (nested arrays included)
// and every tensor type ferry knows, for round-trip and interop tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/gguf/writer.h"

namespace ferry::testing {

struct SampleOptions {
  uint32_t alignment = 32;
  // gguf-py's size table disagrees with ggml on q8_1 (40 vs 36 bytes); the
  // interop test leaves it out.
  bool include_q8_1 = true;
};

// Adds the sample's metadata and tensors to `writer`. Tensor bytes are
// seeded pseudo-random and owned by `storage`, which must outlive the writer.
absl::Status BuildSample(const SampleOptions& options, gguf::Writer* writer,
                         std::vector<std::vector<uint8_t>>* storage);

}  // namespace ferry::testing
