// A model as data: the hyper-parameters of one architecture, read once from
// GGUF metadata and normalized into ferry's own terms. Architecture quirks
// are decided here and nowhere else.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "engine/gguf/gguf.h"

namespace ferry::model {

enum class Arch { kLlama, kQwen2, kQwen3, kGemma2, kGemma3 };
enum class RopeLayout {
  kNormal,  // rotate consecutive pairs (x[2i], x[2i+1]): llama
  kNeox,    // rotate halves (x[i], x[i + d/2]): qwen2, qwen3, gemma2, gemma3
};
enum class Activation { kSilu, kGeluTanh };

struct ModelConfig {
  Arch arch = Arch::kLlama;
  std::string arch_name;   // the GGUF general.architecture string
  int n_layer = 0;
  int n_embd = 0;          // residual stream width
  int n_head = 0;
  int n_head_kv = 0;       // grouped-query attention when < n_head
  int head_dim = 0;        // per-head width of q and k
  int head_dim_v = 0;      // per-head width of v
  int n_ff = 0;
  int n_vocab = 0;
  int n_ctx_train = 0;
  float norm_eps = 1e-5f;

  RopeLayout rope_layout = RopeLayout::kNormal;
  int rope_dims = 0;          // leading dims of each head that rotate
  float rope_base = 10000.0f;
  float rope_freq_scale = 1.0f;  // linear scaling: positions multiplied by this
  bool rope_freq_factors = false;  // llama3 scaling: per-frequency divisors in rope_freqs.weight
  // gemma3: sliding layers rotate with a base of their own and no scaling;
  // 0 = they rotate like the global layers.
  float rope_base_local = 0.0f;

  Activation activation = Activation::kSilu;
  bool qkv_bias = false;          // qwen2
  bool qk_norm = false;           // qwen3, gemma3: RMSNorm of each head of q and k, weights (head_dim)
  bool post_norms = false;        // gemma2, gemma3: norms after attention and after the FFN
  float embed_scale = 1.0f;       // gemma2, gemma3: sqrt(n_embd)
  float query_scale = 0.0f;       // multiplies q before q.k
  float attn_softcap = 0.0f;      // gemma2: cap * tanh(score / cap); 0 = none
  float final_softcap = 0.0f;     // gemma2, on the logits
  int sliding_window = 0;         // gemma2, gemma3: window of the sliding layers; 0 = none
  // Of every `swa_pattern` layers the last attends to the whole context and
  // the others within the window: gemma2 alternates (2), gemma3 has one
  // global layer in 6 (llama.cpp's pattern for both).
  int swa_pattern = 2;
  bool tied_output = false;       // no output.weight: the head is token_embd

  bool LayerIsSliding(int layer) const {
    return sliding_window > 0 && layer % swa_pattern < swa_pattern - 1;
  }
  // Which rope table a layer rotates with: 0 the model's, 1 the sliding layers' own.
  int LayerRopeSet(int layer) const { return rope_base_local > 0.0f && LayerIsSliding(layer) ? 1 : 0; }
  int rope_sets() const { return rope_base_local > 0.0f ? 2 : 1; }
  // Positions per sequence when none are asked for: the training context,
  // at most 4096 (a 128k-context model's KV cache would not fit most cards).
  int default_context() const { return n_ctx_train < 4096 ? n_ctx_train : 4096; }
  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
  int v_dim() const { return n_head_kv * head_dim_v; }
};

// Reads and checks the hyper-parameters. An unsupported architecture or an
// inconsistent value is refused with an error naming the key.
absl::StatusOr<ModelConfig> LoadConfig(const gguf::File& file);

absl::string_view ArchName(Arch arch);

// GGUF names a layer's tensors "blk.<layer>.<name>": the layer, or -1 for
// tensors outside the layers (token_embd, output, output_norm, ...).
int LayerIndex(absl::string_view tensor_name);

}  // namespace ferry::model
