// `ferry inspect`: what a GGUF file holds, from its header alone.
#pragma once

#include <string>

#include "engine/gguf/gguf.h"
#include "engine/model/weights.h"
#include "engine/text/tokenizer.h"

namespace ferry::service {

// `ferry info`: a loaded model's architecture, size, shape, tokenizer and
// bytes by type and by layer.
std::string InfoText(const model::Model& model, const text::Tokenizer* tokenizer);

// A human summary: format, architecture and shape, bytes by type and by
// layer, and the metadata (long arrays elided). `all_tensors` lists every tensor.
std::string InspectText(const gguf::File& file, bool all_tensors);

// Everything the header says as JSON (arrays in full), for tools and tests.
std::string InspectJson(const gguf::File& file);

}  // namespace ferry::service
