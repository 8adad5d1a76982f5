// `ferry generate`: text from a prompt (or a chat message) on a device,
// streamed as it is made, ending with a line of figures. A one-request
// client of the engine's runtime: the same decode loop as `ferry serve`.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "engine/engine/engine.h"
#include "engine/text/sampler.h"

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
  engine::PlacementArgs placement;
  engine::RuntimeArgs runtime;   // threads, context, KV type, prompt tokens per step (slots: 1)
  std::function<void(const std::string&)> progress;
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
