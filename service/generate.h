// `ferry generate`: text from a prompt on the CPU, streamed as it is made,
// ending with a line of figures.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/exec/cpu_forward.h"
#include "engine/text/sampler.h"

namespace ferry::service {

struct GenerateOptions {
  std::string model_path;
  std::string prompt;
  int max_tokens = 128;
  std::vector<std::string> stops;
  std::vector<int32_t> stop_ids;  // tokens that end generation, besides end-of-generation
  bool ignore_eos = false;
  text::SamplingParams sampling;
  exec::ForwardOptions forward;  // threads, context, KV type, prefill batch
};

struct GenerateStats {
  int prompt_tokens = 0;
  int generated_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  std::string finish_reason;  // "stop" (end of generation token), "stop_sequence", "length"
};

// Streams the generated text to `out` as it is produced.
absl::StatusOr<GenerateStats> Generate(const GenerateOptions& options, std::FILE* out);

}  // namespace ferry::service
