#include "engine/model/config.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ferry::model {
namespace {

// Reads "<arch>.<key>" as a positive int that fits the engine's int sizes.
absl::Status ReadInt(const gguf::File& f, const std::string& key, int* out, bool required, int fallback) {
  if (!f.Has(key)) {
    if (required) return absl::InvalidArgumentError(absl::StrCat("model metadata lacks '", key, "'"));
    *out = fallback;
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> v = f.GetUint(key);
  if (!v.ok()) return v.status();
  if (*v == 0 || *v > (1u << 30)) {
    return absl::InvalidArgumentError(absl::StrCat("model metadata '", key, "' = ", *v, " is out of range"));
  }
  *out = static_cast<int>(*v);
  return absl::OkStatus();
}

absl::Status ReadFloat(const gguf::File& f, const std::string& key, float* out, float fallback) {
  if (!f.Has(key)) {
    *out = fallback;
    return absl::OkStatus();
  }
  absl::StatusOr<double> v = f.GetFloat(key);
  if (!v.ok()) return v.status();
  if (!std::isfinite(*v)) return absl::InvalidArgumentError(absl::StrCat("model metadata '", key, "' is not finite"));
  *out = static_cast<float>(*v);
  return absl::OkStatus();
}

}  // namespace

int LayerIndex(absl::string_view name) {
  if (name.substr(0, 4) != "blk.") return -1;
  const size_t dot = name.find('.', 4);
  int layer = -1;
  if (dot == absl::string_view::npos || !absl::SimpleAtoi(name.substr(4, dot - 4), &layer) || layer < 0) return -1;
  return layer;
}

namespace {
constexpr std::pair<Arch, absl::string_view> kArchNames[] = {
    {Arch::kLlama, "llama"}, {Arch::kQwen2, "qwen2"}, {Arch::kQwen3, "qwen3"},
    {Arch::kGemma2, "gemma2"}, {Arch::kGemma3, "gemma3"}};

// Gemma 2 and 3 scale queries by 1/sqrt(query_pre_attn_scalar): the head
// size, except for the 27B models (46 layers in Gemma 2, 62 in Gemma 3),
// where it is n_embd / n_head. GGUF has no key for it unless a converter
// wrote attention.scale, so llama.cpp decides by the layer count too.
absl::Status GemmaQueryScale(const gguf::File& f, const std::string& p, int n_layer_27b, ModelConfig* c) {
  float scale = 0.0f;
  if (absl::Status s = ReadFloat(f, p + "attention.scale", &scale, 0.0f); !s.ok()) return s;
  c->query_scale = scale > 0.0f ? scale
                   : c->n_layer == n_layer_27b ? 1.0f / std::sqrt(static_cast<float>(c->n_embd / c->n_head))
                                               : 1.0f / std::sqrt(static_cast<float>(c->head_dim));
  return absl::OkStatus();
}
}  // namespace

absl::string_view ArchName(Arch arch) {
  for (const auto& [a, name] : kArchNames) {
    if (a == arch) return name;
  }
  return "unknown";
}

absl::StatusOr<ModelConfig> LoadConfig(const gguf::File& f) {
  ModelConfig c;
  absl::StatusOr<absl::string_view> arch = f.GetString("general.architecture");
  if (!arch.ok()) return arch.status();
  c.arch_name = std::string(*arch);
  const auto* known = std::find_if(std::begin(kArchNames), std::end(kArchNames),
                                   [&](const auto& entry) { return entry.second == *arch; });
  if (known == std::end(kArchNames)) {
    std::vector<absl::string_view> names;
    for (const auto& entry : kArchNames) names.push_back(entry.second);
    return absl::UnimplementedError(absl::StrCat("architecture '", *arch, "' is not supported (supported: ",
                                                 absl::StrJoin(names, ", "), ")"));
  }
  c.arch = known->first;
  const std::string p = c.arch_name + ".";
  for (absl::Status s : {ReadInt(f, p + "block_count", &c.n_layer, true, 0),
                         ReadInt(f, p + "embedding_length", &c.n_embd, true, 0),
                         ReadInt(f, p + "feed_forward_length", &c.n_ff, true, 0),
                         ReadInt(f, p + "attention.head_count", &c.n_head, true, 0),
                         ReadInt(f, p + "context_length", &c.n_ctx_train, true, 0)}) {
    if (!s.ok()) return s;
  }
  for (absl::Status s : {ReadInt(f, p + "attention.head_count_kv", &c.n_head_kv, false, c.n_head),
                         ReadInt(f, p + "attention.key_length", &c.head_dim, false, c.n_embd / c.n_head)}) {
    if (!s.ok()) return s;
  }
  if (absl::Status s = ReadInt(f, p + "attention.value_length", &c.head_dim_v, false, c.head_dim); !s.ok()) return s;
  if (absl::Status s = ReadInt(f, p + "rope.dimension_count", &c.rope_dims, false, c.head_dim); !s.ok()) return s;
  if (absl::Status s = ReadFloat(f, p + "rope.freq_base", &c.rope_base, 10000.0f); !s.ok()) return s;
  if (absl::Status s = ReadFloat(f, p + "attention.layer_norm_rms_epsilon", &c.norm_eps, 1e-5f); !s.ok()) return s;

  if (c.n_head % c.n_head_kv != 0) {
    return absl::InvalidArgumentError(absl::StrCat("head_count ", c.n_head, " is not a multiple of head_count_kv ",
                                                   c.n_head_kv));
  }
  if (c.rope_dims > c.head_dim || c.rope_dims % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(p, "rope.dimension_count ", c.rope_dims, " must be even and <= the head size ", c.head_dim));
  }
  if (c.head_dim_v != c.head_dim) {
    return absl::UnimplementedError(absl::StrCat("key length ", c.head_dim, " != value length ", c.head_dim_v,
                                                 " is not supported"));
  }

  // Rope scaling: linear is a position multiplier; llama3's per-frequency
  // factors arrive as the rope_freqs.weight tensor; others are refused.
  if (f.Has(p + "rope.scaling.type")) {
    absl::StatusOr<absl::string_view> type = f.GetString(p + "rope.scaling.type");
    if (!type.ok()) return type.status();
    float factor = 1.0f;
    if (absl::Status s = ReadFloat(f, p + "rope.scaling.factor", &factor, 1.0f); !s.ok()) return s;
    if (*type == "linear") {
      if (factor <= 0.0f) return absl::InvalidArgumentError("rope.scaling.factor must be positive");
      c.rope_freq_scale = 1.0f / factor;
    } else if (*type != "none") {
      return absl::UnimplementedError(absl::StrCat("rope scaling '", *type, "' is not supported (linear, none)"));
    }
  }
  c.rope_freq_factors = f.FindTensor("rope_freqs.weight") != nullptr;

  switch (c.arch) {
    case Arch::kLlama:
      c.rope_layout = RopeLayout::kNormal;
      break;
    case Arch::kQwen2:
      c.rope_layout = RopeLayout::kNeox;
      c.qkv_bias = true;
      break;
    case Arch::kQwen3:  // qwen2 without the biases, with q/k norms
      c.rope_layout = RopeLayout::kNeox;
      c.qk_norm = true;
      break;
    case Arch::kGemma2: {
      c.rope_layout = RopeLayout::kNeox;
      c.activation = Activation::kGeluTanh;
      c.post_norms = true;
      c.embed_scale = std::sqrt(static_cast<float>(c.n_embd));
      for (absl::Status s : {ReadFloat(f, p + "attn_logit_softcapping", &c.attn_softcap, 50.0f),
                             ReadFloat(f, p + "final_logit_softcapping", &c.final_softcap, 30.0f)}) {
        if (!s.ok()) return s;
      }
      if (absl::Status s = ReadInt(f, p + "attention.sliding_window", &c.sliding_window, false, 4096); !s.ok()) {
        return s;
      }
      c.swa_pattern = 2;
      if (absl::Status s = GemmaQueryScale(f, p, 46, &c); !s.ok()) return s;
      break;
    }
    case Arch::kGemma3: {
      // Gemma 2's layer without soft-capping, plus q/k norms; five sliding
      // layers (rope base 10000, unscaled) to one global layer (the file's
      // rope base and scaling), as llama.cpp runs it.
      c.rope_layout = RopeLayout::kNeox;
      c.activation = Activation::kGeluTanh;
      c.post_norms = true;
      c.qk_norm = true;
      c.embed_scale = std::sqrt(static_cast<float>(c.n_embd));
      if (f.Has(p + "attention.sliding_window")) {
        if (absl::Status s = ReadInt(f, p + "attention.sliding_window", &c.sliding_window, true, 0); !s.ok()) {
          return s;
        }
        c.swa_pattern = 6;
        c.rope_base_local = 10000.0f;
      } else if (absl::Status s = ReadFloat(f, p + "final_logit_softcapping", &c.final_softcap, 0.0f); !s.ok()) {
        return s;  // llama.cpp caps the logits only of a Gemma 3 without sliding layers
      }
      if (absl::Status s = GemmaQueryScale(f, p, 62, &c); !s.ok()) return s;
      break;
    }
  }
  if (c.query_scale == 0.0f) c.query_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));

  absl::StatusOr<std::vector<absl::string_view>> tokens = f.GetStringArray("tokenizer.ggml.tokens");
  if (tokens.ok()) {
    c.n_vocab = static_cast<int>(tokens->size());
  } else if (const gguf::TensorInfo* embd = f.FindTensor("token_embd.weight"); embd != nullptr) {
    c.n_vocab = static_cast<int>(embd->dims[1]);
  }
  // A vocabulary size in the metadata must be the one the tokenizer and the
  // embedding have (llama.cpp converters write it; it is not otherwise read).
  if (const std::string key = p + "vocab_size"; f.Has(key)) {
    int declared = 0;
    if (absl::Status s = ReadInt(f, key, &declared, true, 0); !s.ok()) return s;
    if (declared != c.n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("model metadata '", key, "' = ", declared, ", but the ",
                                                     tokens.ok() ? "tokenizer has " : "token embedding has ",
                                                     c.n_vocab, " tokens"));
    }
  }
  c.tied_output = f.FindTensor("output.weight") == nullptr;
  return c;
}

}  // namespace ferry::model
