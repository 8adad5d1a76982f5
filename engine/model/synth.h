// Synthetic models: deterministic random weights in a real architecture's
// tensor naming and metadata, so that every part of ferry can run on a model
// of any shape without downloading one. The demo model is made this way.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "engine/gguf/writer.h"
#include "engine/quant/types.h"

namespace ferry::model {

struct SynthOptions {
  std::string arch = "llama";  // llama, qwen2 (q/k/v biases) or gemma2
  int n_layer = 4;
  int n_embd = 256;
  int n_head = 8;
  int n_head_kv = 4;
  int n_ff = 704;
  int n_vocab = 1024;
  int n_ctx = 2048;
  float rope_base = 10000.0f;
  float rms_eps = 1e-5f;
  quant::TensorType type = quant::TensorType::kQ8_0;  // of the 2-D weights; norms stay f32
  bool tied_output = false;  // no output.weight: the head reuses token_embd (always for gemma2)
  int sliding_window = 4096;  // gemma2: window of its even (sliding) layers
  uint64_t seed = 1;
  std::string name = "ferry demo (random weights)";
};

// Checks the shape is consistent and the type can be produced.
absl::Status Validate(const SynthOptions& options);

// Parameter count and bytes of tensor data the options produce.
uint64_t ParameterCount(const SynthOptions& options);

// Writes the model to `path` (atomically). `progress` is forwarded to the writer.
absl::Status WriteSyntheticModel(const std::string& path, const SynthOptions& options,
                                 const gguf::Writer::Progress& progress = nullptr);

// The same model as a Writer ready to be written (tests use WriteToString).
absl::Status BuildSyntheticModel(const SynthOptions& options, gguf::Writer* writer);

}  // namespace ferry::model
