// A naive reference forward pass for tests: plain loops in double precision,
// written apart from the engine (it reads the GGUF metadata keys itself and
// shares only the file reader and the block decoding, which are checked
// against gguf-py). It recomputes the whole sequence on every call.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/gguf/gguf.h"

namespace ferry::testing {

class ReferenceModel {
 public:
  static absl::StatusOr<ReferenceModel> Load(const gguf::File& file);
  // Logits (n_vocab) after each position of `tokens`.
  std::vector<std::vector<double>> Logits(const std::vector<int32_t>& tokens) const;
  int n_vocab() const { return n_vocab_; }

 private:
  using Mat = std::vector<double>;  // row-major [rows][cols]
  struct Layer {
    std::vector<double> attn_norm, ffn_norm, post_attn_norm, post_ffn_norm, bq, bk, bv, q_norm, k_norm;
    Mat wq, wk, wv, wo, gate, up, down;
  };
  std::string arch_;
  int n_embd_ = 0, n_head_ = 0, n_kv_ = 0, head_dim_ = 0, n_ff_ = 0, n_vocab_ = 0, n_layer_ = 0;
  double eps_ = 1e-5, base_ = 10000, attn_cap_ = 0, final_cap_ = 0, q_scale_ = 0, emb_scale_ = 1;
  double pos_scale_ = 1;               // linear rope scaling: 1 / factor
  std::vector<double> freq_factors_;  // llama3 rope scaling: divisor per frequency
  int window_ = 0;
  int window_every_ = 2;   // of each this many layers, all but the last use the window
  double local_base_ = 0;  // gemma3: rope base of the windowed layers (unscaled); 0 = base_
  Mat embd_, out_;
  std::vector<double> out_norm_;
  std::vector<Layer> layers_;
};

}  // namespace ferry::testing
