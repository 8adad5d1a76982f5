#include "engine/model/synth.h"

#include <array>
#include <cmath>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/quant/quantize.h"

namespace ferry::model {
namespace {

using quant::TensorType;

// SentencePiece token types as GGUF stores them.
constexpr int32_t kTokenNormal = 1;
constexpr int32_t kTokenUnknown = 2;
constexpr int32_t kTokenControl = 3;
constexpr int32_t kTokenByte = 6;
constexpr int kSpecialTokens = 3;  // <unk>, <s>, </s>
constexpr int kMinVocab = kSpecialTokens + 256 + 1;

// General.file_type values (llama.cpp's LLAMA_FTYPE_*).
uint32_t FileType(TensorType t) {
  switch (t) {
    case TensorType::kF32: return 0;
    case TensorType::kF16: return 1;
    case TensorType::kQ4_0: return 2;
    case TensorType::kQ4_1: return 3;
    case TensorType::kQ8_0: return 7;
    case TensorType::kQ5_0: return 8;
    case TensorType::kQ5_1: return 9;
    case TensorType::kQ4_K: return 14;  // "Q4_K_S": every weight q4_K
    case TensorType::kQ5_K: return 16;  // "Q5_K_S"
    case TensorType::kQ6_K: return 18;
    case TensorType::kBF16: return 32;
    default: return 0;
  }
}

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Each tensor gets its own stream, derived from the seed and its name, so the
// bytes of one tensor do not depend on the order tensors are produced in.
uint64_t TensorSeed(uint64_t seed, absl::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (char c : name) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  return h;
}

// A SentencePiece-style vocabulary: specials, the 256 byte-fallback tokens,
// then "▁"-prefixed words and letter pieces with descending scores.
void BuildVocab(int n_vocab, std::vector<std::string>* tokens, std::vector<float>* scores,
                std::vector<int32_t>* types) {
  const std::string kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's word boundary
  static constexpr std::array<absl::string_view, 48> kWords = {
      "the", "and", "a", "to", "was", "he", "she", "it", "of", "in", "they", "said", "his", "her", "with", "you",
      "that", "on", "for", "day", "one", "time", "upon", "once", "there", "little", "big", "happy", "play", "friend",
      "saw", "had", "went", "mom", "dog", "cat", "ball", "tree", "park", "sun", "very", "wanted", "loved", "named",
      "girl", "boy", "so", "but"};
  tokens->clear();
  scores->clear();
  types->clear();
  absl::flat_hash_set<std::string> seen;  // a vocabulary's pieces are distinct
  auto add = [&](std::string piece, int32_t type) {
    if (static_cast<int>(tokens->size()) >= n_vocab || !seen.insert(piece).second) return;
    tokens->push_back(std::move(piece));
    scores->push_back(type == kTokenNormal ? -static_cast<float>(tokens->size()) : 0.0f);
    types->push_back(type);
  };
  add("<unk>", kTokenUnknown);
  add("<s>", kTokenControl);
  add("</s>", kTokenControl);
  for (int b = 0; b < 256; ++b) add(absl::StrFormat("<0x%02X>", b), kTokenByte);
  add(kSpace, kTokenNormal);
  for (absl::string_view w : kWords) add(kSpace + std::string(w), kTokenNormal);
  for (char c = 'a'; c <= 'z'; ++c) add(kSpace + std::string(1, c), kTokenNormal);
  for (char c = 'a'; c <= 'z'; ++c) add(std::string(1, c), kTokenNormal);
  for (char c : absl::string_view(".,!?'\"-:;()0123456789")) add(std::string(1, c), kTokenNormal);
  // Fill the rest with letter pairs, then triples, which never repeat.
  for (int len = 2; static_cast<int>(tokens->size()) < n_vocab; ++len) {
    std::vector<int> idx(len, 0);
    while (static_cast<int>(tokens->size()) < n_vocab) {
      std::string piece;
      for (int i : idx) piece += static_cast<char>('a' + i);
      add(piece, kTokenNormal);
      int k = len - 1;
      while (k >= 0 && ++idx[k] == 26) idx[k--] = 0;
      if (k < 0) break;
    }
  }
}

// Fills a tensor of `rows` rows of `cols` values, uniform in [-scale, scale]
// around `center`, quantized to `type` row by row.
gguf::Writer::Fill RandomFill(TensorType type, uint64_t cols, uint64_t rows, float center, float scale,
                              uint64_t seed) {
  return [=](std::span<uint8_t> out) -> absl::Status {
    uint64_t state = seed;
    std::vector<float> row(cols);
    const uint64_t row_bytes = *quant::RowBytes(type, cols);
    for (uint64_t r = 0; r < rows; ++r) {
      for (float& x : row) {
        const double u = static_cast<double>(SplitMix64(&state) >> 11) * 0x1.0p-53;  // [0, 1)
        x = center + scale * static_cast<float>(2.0 * u - 1.0);
      }
      if (absl::Status s = quant::QuantizeRow(type, row, out.subspan(r * row_bytes, row_bytes)); !s.ok()) return s;
    }
    return absl::OkStatus();
  };
}

}  // namespace

namespace {
int HeadDim(const SynthOptions& o) { return o.head_dim > 0 ? o.head_dim : o.n_embd / std::max(o.n_head, 1); }
bool IsGemma(const SynthOptions& o) { return o.arch == "gemma2" || o.arch == "gemma3"; }
bool HasQkNorm(const SynthOptions& o) { return o.arch == "qwen3" || o.arch == "gemma3"; }
// gemma3's sliding layers rotate at base 1e4 whatever the file says: its
// usual 1e6 keeps the global layers' rotation apart from theirs.
float RopeBase(const SynthOptions& o) {
  if (o.rope_base > 0.0f) return o.rope_base;
  return o.arch == "qwen3" || o.arch == "gemma3" ? 1000000.0f : 10000.0f;
}
}  // namespace

quant::TensorType WeightType(const SynthOptions& o, absl::string_view tensor, int layer) {
  if (o.mix == Mix::kUniform) return o.type;
  const TensorType base = o.mix == Mix::kQ4_K_M ? TensorType::kQ4_K : TensorType::kQ5_K;
  // llama.cpp's *_K_M files spend more bits on the head, and on attn_v and
  // ffn_down in the first and last eighth of the layers and every third
  // layer between.
  const int n = o.n_layer;
  const bool more_bits = layer >= 0 && (layer < n / 8 || layer >= 7 * n / 8 || (layer - n / 8) % 3 == 2);
  if (tensor == "output.weight") return TensorType::kQ6_K;
  if ((tensor == "attn_v.weight" || tensor == "ffn_down.weight") && more_bits) return TensorType::kQ6_K;
  return base;
}

absl::StatusOr<SynthOptions> Preset(absl::string_view name) {
  SynthOptions o;
  o.mix = Mix::kQ4_K_M;
  o.type = TensorType::kQ4_K;
  auto shape = [&](const char* arch, int layers, int embd, int heads, int kv, int ff, int vocab, int ctx, int hd) {
    o.arch = arch;
    o.n_layer = layers;
    o.n_embd = embd;
    o.n_head = heads;
    o.n_head_kv = kv;
    o.n_ff = ff;
    o.n_vocab = vocab;
    o.n_ctx = ctx;
    o.head_dim = hd;
    o.name = absl::StrCat(name, " shape (random weights)");
  };
  if (name == "llama3.1-8b") {
    shape("llama", 32, 4096, 32, 8, 14336, 128256, 131072, 0);
  } else if (name == "llama3.1-70b") {
    shape("llama", 80, 8192, 64, 8, 28672, 128256, 131072, 0);
  } else if (name == "qwen2.5-7b") {
    shape("qwen2", 28, 3584, 28, 4, 18944, 152064, 32768, 0);
  } else if (name == "gemma2-9b") {
    shape("gemma2", 42, 3584, 16, 8, 14336, 256000, 8192, 256);
  } else if (name == "gemma2-27b") {
    shape("gemma2", 46, 4608, 32, 16, 36864, 256000, 8192, 128);
  } else if (name == "qwen3-8b") {
    shape("qwen3", 36, 4096, 32, 8, 12288, 151936, 40960, 128);
  } else if (name == "gemma3-27b") {
    shape("gemma3", 62, 5376, 32, 16, 21504, 262208, 131072, 128);
    o.sliding_window = 1024;
    o.rope_scale_factor = 8.0f;  // linear, global layers only
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown preset '", name, "' (presets: ", PresetNames(), ")"));
  }
  o.rope_base = o.arch == "llama" ? 500000.0f : o.arch == "gemma2" ? 10000.0f : 1000000.0f;
  return o;
}

std::string PresetNames() {
  return "llama3.1-8b, llama3.1-70b, qwen2.5-7b, qwen3-8b, gemma2-9b, gemma2-27b, gemma3-27b";
}

absl::Status Validate(const SynthOptions& o) {
  if (o.arch != "llama" && o.arch != "qwen2" && o.arch != "qwen3" && o.arch != "gemma2" && o.arch != "gemma3") {
    return absl::InvalidArgumentError(absl::StrCat("make-model: architecture '", o.arch,
                                                   "' is not available (available: llama, qwen2, qwen3, gemma2, "
                                                   "gemma3)"));
  }
  if (o.rope_scale_factor <= 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat("make-model: rope scale factor must be positive, got ", o.rope_scale_factor));
  }
  auto positive = [](absl::string_view what, int v) -> absl::Status {
    if (v <= 0) return absl::InvalidArgumentError(absl::StrCat("make-model: ", what, " must be positive, got ", v));
    return absl::OkStatus();
  };
  for (auto [what, v] : {std::pair<absl::string_view, int>{"layers", o.n_layer}, {"embd", o.n_embd},
                         {"heads", o.n_head}, {"kv-heads", o.n_head_kv}, {"ff", o.n_ff}, {"vocab", o.n_vocab},
                         {"context", o.n_ctx}}) {
    if (absl::Status s = positive(what, v); !s.ok()) return s;
  }
  if (o.head_dim == 0 && o.n_embd % o.n_head != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("make-model: embd ", o.n_embd, " is not divisible by heads ", o.n_head));
  }
  if (o.head_dim < 0 || HeadDim(o) % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("make-model: head size ", HeadDim(o),
                                                   " must be even (rotary embedding rotates pairs)"));
  }
  if (o.n_head % o.n_head_kv != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("make-model: heads ", o.n_head, " is not a multiple of kv-heads ", o.n_head_kv));
  }
  if (o.n_vocab < kMinVocab) {
    return absl::InvalidArgumentError(absl::StrCat("make-model: vocab ", o.n_vocab, " is below ", kMinVocab,
                                                   " (3 specials + 256 byte tokens + 1)"));
  }
  if (!quant::CanConvert(o.type)) {
    return absl::InvalidArgumentError(absl::StrCat("make-model: cannot produce type ", quant::Info(o.type).name,
                                                   " yet (available: ", quant::ConvertibleTypeNames(), ")"));
  }
  const uint32_t block = o.mix == Mix::kUniform ? quant::Info(o.type).block_elems : 256;
  for (auto [what, v] : {std::pair<absl::string_view, int>{"embd", o.n_embd}, {"ff", o.n_ff},
                         {"heads x head size", o.n_head * HeadDim(o)}}) {
    if (v % block != 0) {
      return absl::InvalidArgumentError(absl::StrCat("make-model: ", what, " ", v, " is not a multiple of the ",
                                                     quant::Info(o.type).name, " block size ", block));
    }
  }
  return absl::OkStatus();
}

uint64_t ParameterCount(const SynthOptions& o) {
  const uint64_t e = o.n_embd, f = o.n_ff, v = o.n_vocab;
  const uint64_t q = static_cast<uint64_t>(HeadDim(o)) * o.n_head, kv = static_cast<uint64_t>(HeadDim(o)) * o.n_head_kv;
  uint64_t per_layer = 2 * e + e * q * 2 + e * kv * 2 + 3 * e * f;
  if (o.arch == "qwen2") per_layer += q + 2 * kv;  // q, k, v biases
  if (IsGemma(o)) per_layer += 2 * e;               // post-attention and post-FFN norms
  if (HasQkNorm(o)) per_layer += 2 * HeadDim(o);    // q and k norms
  const bool tied = o.tied_output || IsGemma(o);
  return e * v + (tied ? 0 : e * v) + e + per_layer * o.n_layer;
}

absl::Status BuildSyntheticModel(const SynthOptions& o, gguf::Writer* w) {
  if (absl::Status s = Validate(o); !s.ok()) return s;
  using gguf::MetaValue;
  const std::string a = o.arch;
  const uint32_t head_dim = HeadDim(o);
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  BuildVocab(o.n_vocab, &tokens, &scores, &types);

  const std::vector<std::pair<std::string, MetaValue>> meta = {
      {"general.architecture", MetaValue::Str(a)},
      {"general.name", MetaValue::Str(o.name)},
      {"general.description",
       MetaValue::Str("Random weights written by `ferry make-model`: the shapes and formats of a real model, "
                      "but its text is noise.")},
      {"general.file_type", MetaValue::U32(o.mix == Mix::kQ4_K_M   ? 15u    // llama.cpp's MOSTLY_Q4_K_M
                                           : o.mix == Mix::kQ5_K_M ? 17u    // MOSTLY_Q5_K_M
                                                                   : FileType(o.type))},
      {"general.quantization_version", MetaValue::U32(2)},
      {a + ".vocab_size", MetaValue::U32(o.n_vocab)},
      {a + ".context_length", MetaValue::U32(o.n_ctx)},
      {a + ".embedding_length", MetaValue::U32(o.n_embd)},
      {a + ".block_count", MetaValue::U32(o.n_layer)},
      {a + ".feed_forward_length", MetaValue::U32(o.n_ff)},
      {a + ".rope.dimension_count", MetaValue::U32(head_dim)},
      {a + ".rope.freq_base", MetaValue::F32(RopeBase(o))},
      {a + ".attention.head_count", MetaValue::U32(o.n_head)},
      {a + ".attention.head_count_kv", MetaValue::U32(o.n_head_kv)},
      {a + ".attention.layer_norm_rms_epsilon", MetaValue::F32(o.rms_eps)},
      {"tokenizer.ggml.model", MetaValue::Str("llama")},
      {"tokenizer.ggml.tokens", MetaValue::StringArray(tokens)},
      {"tokenizer.ggml.scores", MetaValue::Array(scores)},
      {"tokenizer.ggml.token_type", MetaValue::Array(types)},
      {"tokenizer.ggml.unknown_token_id", MetaValue::U32(0)},
      {"tokenizer.ggml.bos_token_id", MetaValue::U32(1)},
      {"tokenizer.ggml.eos_token_id", MetaValue::U32(2)},
      {"tokenizer.ggml.add_bos_token", MetaValue::Bool(true)},
      {"tokenizer.ggml.add_eos_token", MetaValue::Bool(false)},
  };
  for (const auto& [key, value] : meta) {
    if (absl::Status s = w->Set(key, value); !s.ok()) return s;
  }
  const bool gemma2 = a == "gemma2", gemma = IsGemma(o), qwen2 = a == "qwen2", qk_norm = HasQkNorm(o);
  if (gemma || o.head_dim > 0) {
    for (const auto& [key, value] : std::vector<std::pair<std::string, MetaValue>>{
             {a + ".attention.key_length", MetaValue::U32(head_dim)},
             {a + ".attention.value_length", MetaValue::U32(head_dim)}}) {
      if (absl::Status s = w->Set(key, value); !s.ok()) return s;
    }
  }
  if (gemma2) {
    // Gemma 2's attention details, with its published defaults.
    for (const auto& [key, value] : std::vector<std::pair<std::string, MetaValue>>{
             {a + ".attention.sliding_window", MetaValue::U32(o.sliding_window)},
             {a + ".attn_logit_softcapping", MetaValue::F32(50.0f)},
             {a + ".final_logit_softcapping", MetaValue::F32(30.0f)}}) {
      if (absl::Status s = w->Set(key, value); !s.ok()) return s;
    }
  }
  if (a == "gemma3" && o.sliding_window > 0) {  // 0: a Gemma 3 without sliding layers
    if (absl::Status s = w->Set(a + ".attention.sliding_window", MetaValue::U32(o.sliding_window)); !s.ok()) return s;
  }
  if (o.rope_scale_factor != 1.0f) {
    for (const auto& [key, value] : std::vector<std::pair<std::string, MetaValue>>{
             {a + ".rope.scaling.type", MetaValue::Str("linear")},
             {a + ".rope.scaling.factor", MetaValue::F32(o.rope_scale_factor)}}) {
      if (absl::Status s = w->Set(key, value); !s.ok()) return s;
    }
  }

  const uint64_t e = o.n_embd, f = o.n_ff, v = o.n_vocab, kv = static_cast<uint64_t>(head_dim) * o.n_head_kv;
  const uint64_t q = static_cast<uint64_t>(head_dim) * o.n_head;
  int layer = -1;  // the layer the tensors being added belong to
  auto matrix = [&](const std::string& name, uint64_t cols, uint64_t rows) {
    const std::array<uint64_t, 2> dims = {cols, rows};
    // "blk.N.attn_v.weight" -> "attn_v.weight" for layer tensors.
    const absl::string_view base =
        layer >= 0 ? absl::string_view(name).substr(name.find('.', 4) + 1) : absl::string_view(name);
    const TensorType type = WeightType(o, base, layer);
    // Uniform with variance 1/cols keeps activations near unit scale.
    const float scale = std::sqrt(3.0f / static_cast<float>(cols));
    return w->AddTensor(name, type, dims, RandomFill(type, cols, rows, 0.0f, scale, TensorSeed(o.seed, name)));
  };
  auto vec = [&](const std::string& name, uint64_t n, float center, float spread) {
    const std::array<uint64_t, 1> dims = {n};
    return w->AddTensor(name, TensorType::kF32, dims,
                        RandomFill(TensorType::kF32, n, 1, center, spread, TensorSeed(o.seed, name)));
  };
  auto norm = [&](const std::string& name) { return vec(name, e, 1.0f, 0.1f); };
  // Shapes in GGUF order (contiguous dimension first): a weight that maps
  // n_in to n_out is [n_in, n_out].
  if (absl::Status s = matrix("token_embd.weight", e, v); !s.ok()) return s;  // (vocab, embd)
  for (int l = 0; l < o.n_layer; ++l) {
    layer = l;
    const std::string p = absl::StrCat("blk.", l, ".");
    for (absl::Status s : {norm(p + "attn_norm.weight"),             // (embd)
                           matrix(p + "attn_q.weight", e, q),         // (n_head * head_dim, embd)
                           matrix(p + "attn_k.weight", e, kv),        // (n_head_kv * head_dim, embd)
                           matrix(p + "attn_v.weight", e, kv),        // (n_head_kv * head_dim, embd)
                           matrix(p + "attn_output.weight", q, e),    // (embd, n_head * head_dim)
                           norm(p + "ffn_norm.weight"),               // (embd)
                           qwen2 ? vec(p + "attn_q.bias", q, 0.0f, 0.5f) : absl::OkStatus(),    // (q_dim)
                           qwen2 ? vec(p + "attn_k.bias", kv, 0.0f, 0.5f) : absl::OkStatus(),   // (kv_dim)
                           qwen2 ? vec(p + "attn_v.bias", kv, 0.0f, 0.5f) : absl::OkStatus(),   // (kv_dim)
                           qk_norm ? vec(p + "attn_q_norm.weight", head_dim, 1.0f, 0.1f) : absl::OkStatus(),
                           qk_norm ? vec(p + "attn_k_norm.weight", head_dim, 1.0f, 0.1f) : absl::OkStatus(),
                           gemma ? norm(p + "post_attention_norm.weight") : absl::OkStatus(),  // (embd)
                           gemma ? norm(p + "post_ffw_norm.weight") : absl::OkStatus(),        // (embd)
                           matrix(p + "ffn_gate.weight", e, f),       // (ff, embd)
                           matrix(p + "ffn_up.weight", e, f),         // (ff, embd)
                           matrix(p + "ffn_down.weight", f, e)}) {    // (embd, ff)
      if (!s.ok()) return s;
    }
  }
  layer = -1;
  if (absl::Status s = norm("output_norm.weight"); !s.ok()) return s;
  if (!o.tied_output && !gemma) {  // Gemma always ties its head to the embedding
    if (absl::Status s = matrix("output.weight", e, v); !s.ok()) return s;  // (vocab, embd)
  }
  return absl::OkStatus();
}

absl::Status WriteSyntheticModel(const std::string& path, const SynthOptions& options,
                                 const gguf::Writer::Progress& progress, bool header_only) {
  gguf::Writer writer;
  if (absl::Status s = BuildSyntheticModel(options, &writer); !s.ok()) return s;
  return header_only ? writer.WriteHeaderFile(path) : writer.WriteFile(path, progress);
}

}  // namespace ferry::model
