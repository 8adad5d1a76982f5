// `ferry inspect`: what a GGUF file holds, from its header alone.
#pragma once

#include <string>

#include "engine/gguf/gguf.h"

namespace ferry::service {

// A human summary: format, architecture and shape, bytes by type and by
// layer, and the metadata (long arrays elided). `all_tensors` lists every tensor.
std::string InspectText(const gguf::File& file, bool all_tensors);

// Everything the header says as JSON (arrays in full), for tools and tests.
std::string InspectJson(const gguf::File& file);

}  // namespace ferry::service
