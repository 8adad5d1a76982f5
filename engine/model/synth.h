// Synthetic models: deterministic random weights in a real architecture's
// tensor naming and metadata, so that every part of ferry can run on a model
// of any shape without downloading one. The demo model is made this way.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/gguf/writer.h"
#include "engine/quant/types.h"

namespace ferry::model {

// How weight types vary across tensors, like llama.cpp's file types.
enum class Mix {
  kUniform,  // every 2-D weight has `type`
  kQ4_K_M,   // q4_K, with q6_K for the head and for attn_v / ffn_down in some layers
  kQ5_K_M,   // the same with q5_K
};

struct SynthOptions {
  std::string arch = "llama";  // llama, qwen2 (q/k/v biases), qwen3 (q/k norms), gemma2 or gemma3
  int n_layer = 4;
  int n_embd = 256;
  int n_head = 8;
  int n_head_kv = 4;
  int n_ff = 704;
  int head_dim = 0;  // 0: n_embd / n_head (Gemma 2 uses other sizes)
  int n_vocab = 1024;
  int n_ctx = 2048;
  float rope_base = 0.0f;  // 0: the family's usual base (qwen3, gemma3: 1e6; llama, qwen2, gemma2: 1e4)
  float rms_eps = 1e-5f;
  quant::TensorType type = quant::TensorType::kQ8_0;  // of the 2-D weights; norms stay f32
  Mix mix = Mix::kUniform;
  float rope_scale_factor = 1.0f;  // != 1: linear rope scaling (gemma3: of its global layers)
  bool tied_output = false;  // no output.weight: the head reuses token_embd (always for gemma2, gemma3)
  int sliding_window = 4096;  // gemma2, gemma3: window of the sliding layers (gemma3: 0 = none)
  uint64_t seed = 1;
  std::string name = "ferry demo (random weights)";
};

// Checks the shape is consistent and the type can be produced.
absl::Status Validate(const SynthOptions& options);

// The shapes of popular models (PresetNames()), for planning with
// header-only files.
absl::StatusOr<SynthOptions> Preset(absl::string_view name);
std::string PresetNames();

// The weight type of a 2-D tensor under the options' mix.
quant::TensorType WeightType(const SynthOptions& options, absl::string_view tensor, int layer);

// Parameter count and bytes of tensor data the options produce.
uint64_t ParameterCount(const SynthOptions& options);

// Writes the model to `path` (atomically). `progress` is forwarded to the
// writer. header_only writes the header alone: real shapes and types, no
// weights (seconds for a 70B shape; ferry plan reads such files).
absl::Status WriteSyntheticModel(const std::string& path, const SynthOptions& options,
                                 const gguf::Writer::Progress& progress = nullptr, bool header_only = false);

// The same model as a Writer ready to be written (tests use WriteToString).
absl::Status BuildSyntheticModel(const SynthOptions& options, gguf::Writer* writer);

}  // namespace ferry::model
