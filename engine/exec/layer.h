// The arithmetic of one unit of a step, top to bottom, on one device: a
// transformer layer over the step's n tokens, or the head over the m tokens
// that want logits. The buffers are the lane's; the weights the unit's view
// wherever they sit (resident, a staging slot, host memory).
#pragma once

#include <span>
#include <vector>

#include "engine/backend/device.h"
#include "engine/model/config.h"
#include "engine/model/unit_tensors.h"

namespace ferry::exec {

// The activations of the largest step, in the lane's device memory
// (plan::Workspace sizes each).
struct Activations {
  float* x = nullptr;       // residual stream (batch, n_embd)
  float* xn = nullptr;      // normed input of a product (batch, n_embd)
  float* out = nullptr;     // a product's output (batch, n_embd)
  float* q = nullptr;       // (batch, q_dim)
  float* attn = nullptr;    // attention output (batch, q_dim)
  float* k = nullptr;       // (batch, kv_dim)
  float* v = nullptr;       // (batch, v_dim)
  float* gate = nullptr;    // (batch, n_ff)
  float* up = nullptr;      // (batch, n_ff)
  float* logits = nullptr;  // (batch, n_vocab)
  float* scores = nullptr;  // attention scratch (Device::AttentionScratchFloats)
};

// Where a unit's kernels run and what they read and write.
struct Lane {
  backend::Device* device = nullptr;
  Activations act;
  std::vector<backend::KvLayer> kv;  // per layer; only the lane's layers' are set
};

// What every unit of a step shares: the tokens (seq, pos) in batch order,
// the rows whose logits are wanted, and the rope tables.
struct StepShape {
  std::span<const backend::TokenPos> tokens;
  std::span<const int32_t> logit_rows;
  const backend::RopeParams* rope = nullptr;
};

// Layer l over the step's tokens: x += attention(norm(x)), then x += ffn(norm(x)).
void RunLayer(const model::ModelConfig& c, int l, const model::UnitView& w, const StepShape& step, Lane& lane);
// The head: logits (rows of n_vocab) for the tokens in logit_rows, packed in batch order.
void RunHead(const model::ModelConfig& c, const model::UnitView& w, const StepShape& step, Lane& lane);
// Unit u of a step: layer u, or the head (u == n_layer).
void RunUnit(const model::ModelConfig& c, int u, const model::UnitView& w, const StepShape& step, Lane& lane);

}  // namespace ferry::exec
