#include "engine/model/weights.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "engine/model/unit_tensors.h"
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
    if (counted_.insert(name).second) bytes_ += t->bytes;  // a tied head reads token_embd again
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
  absl::flat_hash_set<std::string> counted_;
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
  if (c.rope_freq_factors) FERRY_RETURN_IF_ERROR(l.Vec("rope_freqs.weight", c.rope_dims / 2, &w.rope_freq_factors));
  w.layers.resize(c.n_layer);
  for (int u = 0; u <= c.n_layer; ++u) {
    UnitWeights& unit = u == c.n_layer ? w.head : w.layers[u];
    for (const UnitTensor* t : TensorsOf(c, u)) {
      const std::string name = TensorName(c, *t, u);
      if (t->is_matrix()) {
        FERRY_ASSIGN_OR_RETURN(unit.*(t->matrix), l.Mat(name, t->cols(c), t->rows(c)));
      } else {
        FERRY_RETURN_IF_ERROR(l.Vec(name, t->cols(c), &(unit.*(t->vector))));
      }
    }
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
