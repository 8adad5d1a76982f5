// Byte sizes as people write them, both ways.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry {

// "512 B", "3.5 KiB", "1.2 MiB", "15.21 GiB".
std::string HumanBytes(uint64_t bytes);

// "8GiB", "8 GB", "8G", "512MiB", "1073741824" -> bytes. GB and G mean GiB,
// as GPU memory is quoted.
absl::StatusOr<uint64_t> ParseBytes(absl::string_view text);

}  // namespace ferry
