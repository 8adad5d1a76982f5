// The weight table: every tensor a forward pass reads, found by its GGUF
// name and checked for shape and type once, at load.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/gguf/gguf.h"
#include "engine/model/config.h"
#include "engine/quant/types.h"

namespace ferry::model {

// A matrix in the file: `rows` rows of `cols` contiguous elements, stored
// as `type` (GGUF shape [cols, rows]). A 1-D tensor has rows == 1.
struct Matrix {
  const uint8_t* data = nullptr;
  quant::TensorType type = quant::TensorType::kF32;
  int64_t cols = 0;
  int64_t rows = 0;
  uint64_t bytes = 0;                 // in the file
  std::string name;
  // 0: `data` holds the rows as the file does. Otherwise the rows are in
  // groups of 8 of this many bytes each (the cpu device's layout for its
  // kernels, engine/backend/cpu/qdot.h), then the rows past the last full
  // group as in the file; row() does not apply.
  uint64_t group_bytes = 0;

  bool present() const { return data != nullptr; }
  uint64_t row_bytes() const { return rows ? bytes / rows : 0; }
  const uint8_t* row(int64_t r) const { return data + r * row_bytes(); }
};

// One unit of a step: a layer (the fields down to post_ffn_norm) or the
// head (output_norm, output). unit_tensors.h has the table of them all.
struct UnitWeights {
  std::vector<float> attn_norm;       // (n_embd)
  Matrix wq;                          // (n_head * head_dim, n_embd)
  Matrix wk;                          // (n_head_kv * head_dim, n_embd)
  Matrix wv;                          // (n_head_kv * head_dim, n_embd)
  Matrix wo;                          // (n_embd, n_head * head_dim)
  std::vector<float> bq, bk, bv;      // qwen2: (q_dim), (kv_dim), (kv_dim)
  std::vector<float> q_norm, k_norm;  // qwen3, gemma3: (head_dim), each head of q / k
  std::vector<float> post_attn_norm;  // gemma2, gemma3: (n_embd)
  std::vector<float> ffn_norm;        // (n_embd)
  Matrix w_gate;                      // (n_ff, n_embd)
  Matrix w_up;                        // (n_ff, n_embd)
  Matrix w_down;                      // (n_embd, n_ff)
  std::vector<float> post_ffn_norm;   // gemma2, gemma3: (n_embd)
  std::vector<float> output_norm;     // the head: (n_embd)
  Matrix output;                      // the head: (n_vocab, n_embd); token_embd when tied
};
using LayerWeights = UnitWeights;

struct ModelWeights {
  Matrix token_embd;                  // (n_vocab, n_embd)
  std::vector<float> rope_freq_factors;  // llama3: (rope_dims / 2), empty if none
  std::vector<UnitWeights> layers;
  UnitWeights head;
  uint64_t bytes = 0;                 // all tensor bytes the forward pass reads
  // Unit u of a step: layer u, or the head (u == layers.size()).
  const UnitWeights& unit(int u) const { return u == static_cast<int>(layers.size()) ? head : layers[u]; }
};

// Finds and checks every tensor `config` needs. Small 1-D tensors (norms,
// biases) are decoded to f32 here; matrices stay in the mapped file.
absl::StatusOr<ModelWeights> LoadWeights(const gguf::File& file, const ModelConfig& config);

// A loaded model: the mapped file, its configuration and weight table.
struct Model {
  std::unique_ptr<gguf::File> file;
  ModelConfig config;
  ModelWeights weights;
};

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path);
// The same for a file already opened (tests build models in memory).
absl::StatusOr<std::unique_ptr<Model>> LoadModel(std::unique_ptr<gguf::File> file);

}  // namespace ferry::model
