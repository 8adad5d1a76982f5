// `ferry generate`: text from a prompt on a device (cpu, sim), streamed as
// it is made, ending with a line of figures.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/exec/forward.h"
#include "engine/text/sampler.h"
#include "service/placement.h"

namespace ferry::service {

struct GenerateOptions {
  std::string model_path;
  std::string prompt;
  // Instead of `prompt`: a user message (and an optional system message,
  // else the template's default), rendered with the model's chat template;
  // only the answer is printed.
  std::string chat;
  std::string system;
  bool enable_thinking = true;  // qwen3 templates
  int max_tokens = 128;
  std::vector<std::string> stops;
  std::vector<int32_t> stop_ids;  // tokens that end generation, besides end-of-generation
  bool ignore_eos = false;
  text::SamplingParams sampling;
  exec::ForwardOptions forward;  // threads, context, KV type, prefill batch
  DeviceFlags device;            // --device and the placement flags
};

struct GenerateStats {
  int prompt_tokens = 0;
  int generated_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  std::string finish_reason;  // "stop" (end of generation token), "stop_sequence", "length"
};

// Streams the generated text to `out` as it is produced; the placement
// summary goes to `log` before the first token.
absl::StatusOr<GenerateStats> Generate(const GenerateOptions& options, std::FILE* out, std::FILE* log);

}  // namespace ferry::service
