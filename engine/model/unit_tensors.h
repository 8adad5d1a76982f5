// One table of the tensors a unit of a step reads: a layer's (GGUF
// "blk.<l>.<name>") and the head's. The loader, the executor's device
// layout and the planner's byte counts all walk it, so a tensor an
// architecture adds is one row here (and its member in UnitWeights and
// UnitView).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/model/config.h"
#include "engine/model/weights.h"

namespace ferry::model {

// One unit's tensors where the kernels read them (the file, host memory or
// device memory): matrices, and the 1-D tensors as f32 (nullptr: absent).
struct UnitView {
  const float* attn_norm = nullptr;       // (n_embd)
  Matrix wq, wk, wv, wo;
  const float *bq = nullptr, *bk = nullptr, *bv = nullptr;  // qwen2
  const float *q_norm = nullptr, *k_norm = nullptr;         // qwen3, gemma3: (head_dim)
  const float* post_attn_norm = nullptr;  // gemma2, gemma3
  const float* ffn_norm = nullptr;
  Matrix w_gate, w_up, w_down;
  const float* post_ffn_norm = nullptr;   // gemma2, gemma3
  const float* output_norm = nullptr;     // the head
  Matrix output;
};

struct UnitTensor {
  const char* name;  // a layer's name after "blk.<l>.", or the head's whole name
  bool head;         // the head's tensor, not a layer's
  // GGUF shape [cols, rows] (rows = 1: a vector).
  int64_t (*cols)(const ModelConfig&);
  int64_t (*rows)(const ModelConfig&);
  bool (*present)(const ModelConfig&);  // whether the architecture has it
  // Where it goes: a matrix, or a vector (decoded to f32 at load).
  Matrix UnitWeights::*matrix = nullptr;
  Matrix UnitView::*view_matrix = nullptr;
  std::vector<float> UnitWeights::*vector = nullptr;
  const float* UnitView::*view_vector = nullptr;
  bool is_matrix() const { return matrix != nullptr; }
};

// In the order a unit lays its matrices, then its vectors, out on a device.
std::span<const UnitTensor> UnitTensors();

// The file's name of a tensor of unit `unit` (n_layer: the head); a tied
// head's output matrix is token_embd.weight.
std::string TensorName(const ModelConfig& c, const UnitTensor& t, int unit);

// The tensors of unit `unit` that this model has.
std::vector<const UnitTensor*> TensorsOf(const ModelConfig& c, int unit);

}  // namespace ferry::model
