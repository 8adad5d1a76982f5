#include "engine/model/weights.h"

#include "absl/strings/str_cat.h"
#include "engine/quant/quantize.h"
#include "engine/status.h"

namespace ferry::model {
namespace {

std::string Shape(int64_t cols, int64_t rows) {
  return rows == 1 ? absl::StrCat("[", cols, "]") : absl::StrCat("[", cols, ", ", rows, "]");
}

class Loader {
 public:
  Loader(const gguf::File& file) : file_(file) {}

  // A matrix of GGUF shape [cols, rows] in a type the kernels handle.
  absl::StatusOr<Matrix> Mat(const std::string& name, int64_t cols, int64_t rows) {
    const gguf::TensorInfo* t = file_.FindTensor(name);
    if (t == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is missing (expected shape ",
                                                     Shape(cols, rows), ")"));
    }
    const bool shape_ok = (rows == 1 && t->n_dims == 1 && static_cast<int64_t>(t->dims[0]) == cols) ||
                          (t->n_dims == 2 && static_cast<int64_t>(t->dims[0]) == cols &&
                           static_cast<int64_t>(t->dims[1]) == rows);
    if (!shape_ok) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has shape ", t->ShapeString(),
                                                     ", expected ", Shape(cols, rows)));
    }
    if (!quant::CanConvert(t->type)) {
      return absl::UnimplementedError(absl::StrCat("tensor '", name, "' has type ", quant::Info(t->type).name,
                                                   ", which ferry cannot compute with (supported: ",
                                                   quant::ConvertibleTypeNames(), ")"));
    }
    bytes_ += t->bytes;
    return Matrix{t->data, t->type, cols, rows, t->bytes, name};
  }

  // A vector decoded to f32.
  absl::Status Vec(const std::string& name, int64_t n, std::vector<float>* out) {
    absl::StatusOr<Matrix> m = Mat(name, n, 1);
    if (!m.ok()) return m.status();
    out->resize(n);
    return quant::DequantizeRow(m->type, std::span(m->data, m->bytes), *out);
  }

  uint64_t bytes() const { return bytes_; }

 private:
  const gguf::File& file_;
  uint64_t bytes_ = 0;
};

}  // namespace

absl::StatusOr<ModelWeights> LoadWeights(const gguf::File& file, const ModelConfig& c) {
  // A file whose layers of tensors disagree with its block_count would run
  // fewer layers than it holds and answer with different text: refused.
  for (const gguf::TensorInfo& t : file.tensors()) {
    if (const int layer = LayerIndex(t.name); layer >= c.n_layer) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", t.name, "' belongs to layer ", layer, ", but ",
                                                     c.arch_name, ".block_count says the model has ", c.n_layer,
                                                     " layers"));
    }
  }
  Loader l(file);
  ModelWeights w;
  FERRY_ASSIGN_OR_RETURN(w.token_embd, l.Mat("token_embd.weight", c.n_embd, c.n_vocab));
  FERRY_RETURN_IF_ERROR(l.Vec("output_norm.weight", c.n_embd, &w.output_norm));
  if (c.tied_output) {
    w.output = w.token_embd;
  } else {
    FERRY_ASSIGN_OR_RETURN(w.output, l.Mat("output.weight", c.n_embd, c.n_vocab));
  }
  if (c.rope_freq_factors) FERRY_RETURN_IF_ERROR(l.Vec("rope_freqs.weight", c.rope_dims / 2, &w.rope_freq_factors));
  w.layers.resize(c.n_layer);
  for (int i = 0; i < c.n_layer; ++i) {
    LayerWeights& L = w.layers[i];
    const std::string p = absl::StrCat("blk.", i, ".");
    FERRY_RETURN_IF_ERROR(l.Vec(p + "attn_norm.weight", c.n_embd, &L.attn_norm));
    FERRY_ASSIGN_OR_RETURN(L.wq, l.Mat(p + "attn_q.weight", c.n_embd, c.q_dim()));
    FERRY_ASSIGN_OR_RETURN(L.wk, l.Mat(p + "attn_k.weight", c.n_embd, c.kv_dim()));
    FERRY_ASSIGN_OR_RETURN(L.wv, l.Mat(p + "attn_v.weight", c.n_embd, c.v_dim()));
    FERRY_ASSIGN_OR_RETURN(L.wo, l.Mat(p + "attn_output.weight", c.q_dim(), c.n_embd));
    if (c.qkv_bias) {
      FERRY_RETURN_IF_ERROR(l.Vec(p + "attn_q.bias", c.q_dim(), &L.bq));
      FERRY_RETURN_IF_ERROR(l.Vec(p + "attn_k.bias", c.kv_dim(), &L.bk));
      FERRY_RETURN_IF_ERROR(l.Vec(p + "attn_v.bias", c.v_dim(), &L.bv));
    }
    if (c.qk_norm) {
      FERRY_RETURN_IF_ERROR(l.Vec(p + "attn_q_norm.weight", c.head_dim, &L.q_norm));
      FERRY_RETURN_IF_ERROR(l.Vec(p + "attn_k_norm.weight", c.head_dim, &L.k_norm));
    }
    if (c.post_norms) {
      FERRY_RETURN_IF_ERROR(l.Vec(p + "post_attention_norm.weight", c.n_embd, &L.post_attn_norm));
      FERRY_RETURN_IF_ERROR(l.Vec(p + "post_ffw_norm.weight", c.n_embd, &L.post_ffn_norm));
    }
    FERRY_RETURN_IF_ERROR(l.Vec(p + "ffn_norm.weight", c.n_embd, &L.ffn_norm));
    FERRY_ASSIGN_OR_RETURN(L.w_gate, l.Mat(p + "ffn_gate.weight", c.n_embd, c.n_ff));
    FERRY_ASSIGN_OR_RETURN(L.w_up, l.Mat(p + "ffn_up.weight", c.n_embd, c.n_ff));
    FERRY_ASSIGN_OR_RETURN(L.w_down, l.Mat(p + "ffn_down.weight", c.n_ff, c.n_embd));
  }
  w.bytes = l.bytes();
  return w;
}

absl::StatusOr<std::unique_ptr<Model>> LoadModel(std::unique_ptr<gguf::File> file) {
  auto model = std::make_unique<Model>();
  model->file = std::move(file);
  FERRY_ASSIGN_OR_RETURN(model->config, LoadConfig(*model->file));
  FERRY_ASSIGN_OR_RETURN(model->weights, LoadWeights(*model->file, model->config));
  return model;
}

absl::StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path) {
  absl::StatusOr<std::unique_ptr<gguf::File>> file = gguf::File::Open(path);
  if (!file.ok()) return file.status();
  absl::StatusOr<std::unique_ptr<Model>> model = LoadModel(std::move(*file));
  if (!model.ok()) return absl::Status(model.status().code(), absl::StrCat(path, ": ", model.status().message()));
  return model;
}

}  // namespace ferry::model
