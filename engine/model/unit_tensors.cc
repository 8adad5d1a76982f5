#include "engine/model/unit_tensors.h"

#include "absl/strings/str_cat.h"

namespace ferry::model {
namespace {

int64_t Embd(const ModelConfig& c) { return c.n_embd; }
int64_t One(const ModelConfig&) { return 1; }
int64_t QDim(const ModelConfig& c) { return c.q_dim(); }
int64_t KvDim(const ModelConfig& c) { return c.kv_dim(); }
int64_t VDim(const ModelConfig& c) { return c.v_dim(); }
int64_t Ff(const ModelConfig& c) { return c.n_ff; }
int64_t HeadDim(const ModelConfig& c) { return c.head_dim; }
int64_t Vocab(const ModelConfig& c) { return c.n_vocab; }
bool Always(const ModelConfig&) { return true; }
bool QkvBias(const ModelConfig& c) { return c.qkv_bias; }
bool QkNorm(const ModelConfig& c) { return c.qk_norm; }
bool PostNorms(const ModelConfig& c) { return c.post_norms; }

#define FERRY_MATRIX(field) &UnitWeights::field, &UnitView::field, nullptr, nullptr
#define FERRY_VECTOR(field) nullptr, nullptr, &UnitWeights::field, &UnitView::field

// Shapes in GGUF order (the contiguous dimension first): a weight that maps
// n_in to n_out is [n_in, n_out]. Matrices first, in the order they lie in a
// llama.cpp file's layer, then the vectors.
const UnitTensor kTensors[] = {
    {"attn_q.weight", false, Embd, QDim, Always, FERRY_MATRIX(wq)},            // (q_dim, n_embd)
    {"attn_k.weight", false, Embd, KvDim, Always, FERRY_MATRIX(wk)},           // (kv_dim, n_embd)
    {"attn_v.weight", false, Embd, VDim, Always, FERRY_MATRIX(wv)},            // (v_dim, n_embd)
    {"attn_output.weight", false, QDim, Embd, Always, FERRY_MATRIX(wo)},       // (n_embd, q_dim)
    {"ffn_gate.weight", false, Embd, Ff, Always, FERRY_MATRIX(w_gate)},        // (n_ff, n_embd)
    {"ffn_up.weight", false, Embd, Ff, Always, FERRY_MATRIX(w_up)},            // (n_ff, n_embd)
    {"ffn_down.weight", false, Ff, Embd, Always, FERRY_MATRIX(w_down)},        // (n_embd, n_ff)
    {"attn_norm.weight", false, Embd, One, Always, FERRY_VECTOR(attn_norm)},
    {"attn_q.bias", false, QDim, One, QkvBias, FERRY_VECTOR(bq)},
    {"attn_k.bias", false, KvDim, One, QkvBias, FERRY_VECTOR(bk)},
    {"attn_v.bias", false, VDim, One, QkvBias, FERRY_VECTOR(bv)},
    {"post_attention_norm.weight", false, Embd, One, PostNorms, FERRY_VECTOR(post_attn_norm)},
    {"ffn_norm.weight", false, Embd, One, Always, FERRY_VECTOR(ffn_norm)},
    {"post_ffw_norm.weight", false, Embd, One, PostNorms, FERRY_VECTOR(post_ffn_norm)},
    {"attn_q_norm.weight", false, HeadDim, One, QkNorm, FERRY_VECTOR(q_norm)},
    {"attn_k_norm.weight", false, HeadDim, One, QkNorm, FERRY_VECTOR(k_norm)},
    // The head; a tied one computes with token_embd (TensorName).
    {"output.weight", true, Embd, Vocab, Always, FERRY_MATRIX(output)},        // (n_vocab, n_embd)
    {"output_norm.weight", true, Embd, One, Always, FERRY_VECTOR(output_norm)},
};

#undef FERRY_MATRIX
#undef FERRY_VECTOR

}  // namespace

std::span<const UnitTensor> UnitTensors() { return kTensors; }

std::string TensorName(const ModelConfig& c, const UnitTensor& t, int unit) {
  if (t.matrix == &UnitWeights::output && c.tied_output) return "token_embd.weight";
  return t.head ? std::string(t.name) : absl::StrCat("blk.", unit, ".", t.name);
}

std::vector<const UnitTensor*> TensorsOf(const ModelConfig& c, int unit) {
  std::vector<const UnitTensor*> out;
  const bool head = unit == c.n_layer;
  for (const UnitTensor& t : kTensors) {
    if (t.head == head && t.present(c)) out.push_back(&t);
  }
  return out;
}

}  // namespace ferry::model
