#include "service/inspect.h"

#include <algorithm>

#include <cmath>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/units.h"

namespace ferry::service {
namespace {

std::string HumanCount(uint64_t n) {
  if (n >= 1000000000ull) return absl::StrFormat("%.2fB", n / 1e9);
  if (n >= 1000000ull) return absl::StrFormat("%.2fM", n / 1e6);
  if (n >= 1000ull) return absl::StrFormat("%.1fK", n / 1e3);
  return absl::StrCat(n);
}

// A JSON string literal; bytes that are not valid UTF-8 become U+FFFD.
std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (const char ch : text::SanitizeUtf8(s)) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20 || c == 0x7f) out += absl::StrFormat("\\u%04x", c);
    else out += ch;  // ASCII and the bytes of valid multi-byte characters
  }
  return out + "\"";
}

std::string JsonValue(const gguf::Value& v) {
  using gguf::ValueType;
  switch (v.type) {
    case ValueType::kString: return JsonString(v.str);
    case ValueType::kBool: return v.bits ? "true" : "false";
    case ValueType::kF32:
    case ValueType::kF64: {
      const double d = v.AsDouble();
      if (!std::isfinite(d)) return "null";
      return absl::StrFormat(v.type == ValueType::kF32 ? "%.9g" : "%.17g", d);
    }
    case ValueType::kU64: return absl::StrCat(v.bits);
    case ValueType::kArray: {
      std::string out = "[";
      bool first = true;
      for (const gguf::Value& item : v.Items()) {
        absl::StrAppend(&out, first ? "" : ",", JsonValue(item));
        first = false;
      }
      return out + "]";
    }
    default: return absl::StrCat(v.AsInt());
  }
}


struct TensorSummary {
  uint64_t params = 0, bytes = 0, outside_layers = 0;
  std::map<std::string, std::pair<int, uint64_t>> by_type;  // type name -> (tensors, bytes)
  std::map<int, uint64_t> by_layer;                         // layer -> bytes
};

TensorSummary Summarize(const gguf::File& file) {
  TensorSummary s;
  for (const gguf::TensorInfo& t : file.tensors()) {
    s.params += t.elements;
    s.bytes += t.bytes;
    auto& [count, type_bytes] = s.by_type[std::string(quant::Info(t.type).name)];
    ++count;
    type_bytes += t.bytes;
    const int layer = model::LayerIndex(t.name);
    if (layer >= 0) {
      s.by_layer[layer] += t.bytes;
    } else {
      s.outside_layers += t.bytes;
    }
  }
  return s;
}

void AppendByType(const TensorSummary& sum, std::string* out) {
  for (const auto& [type, cb] : sum.by_type) {
    absl::StrAppend(out, absl::StrFormat("  %-8s %5d tensors  %12s\n", type, cb.first, HumanBytes(cb.second)));
  }
}

}  // namespace

std::string InfoText(const model::Model& m, const text::Tokenizer* tokenizer) {
  const model::ModelConfig& c = m.config;
  const TensorSummary sum = Summarize(*m.file);
  std::string out;
  absl::StrAppend(&out, m.file->path(), "\n");
  absl::StrAppend(&out, "architecture: ", c.arch_name);
  if (auto name = m.file->GetString("general.name"); name.ok()) absl::StrAppend(&out, "  (", *name, ")");
  absl::StrAppend(&out, "\nparameters: ", HumanCount(sum.params), ", ", HumanBytes(sum.bytes), " of weights\n");
  absl::StrAppend(&out, "context: ", c.n_ctx_train, " tokens (training)\n");
  absl::StrAppend(&out, "shape: ", c.n_layer, " layers, embd ", c.n_embd, ", ff ", c.n_ff, ", heads ", c.n_head,
                  " (kv ", c.n_head_kv, ", size ", c.head_dim, "), vocab ", c.n_vocab,
                  c.tied_output ? ", output tied to the embedding" : "", "\n");
  if (tokenizer != nullptr) {
    absl::StrAppend(&out, "tokenizer: ", tokenizer->model(),
                    tokenizer->is_bpe() ? " (byte-level BPE), " : " (SentencePiece-style), ", tokenizer->n_vocab(),
                    " tokens, bos ", tokenizer->bos(), ", eos ", tokenizer->eos(), "\n");
  }
  absl::StrAppend(&out, "bytes by type:\n");
  AppendByType(sum, &out);
  absl::StrAppend(&out, "bytes per layer:\n");
  for (const auto& [layer, b] : sum.by_layer) absl::StrAppend(&out, absl::StrFormat("  blk.%-4d %12s\n", layer, HumanBytes(b)));
  absl::StrAppend(&out, absl::StrFormat("  %-8s %12s  (embedding, output head, final norm)\n", "other",
                                        HumanBytes(sum.outside_layers)));
  return out;
}

std::string InspectText(const gguf::File& file, bool all_tensors) {
  std::string out;
  absl::StrAppend(&out, file.path(), ": GGUF v", file.version(), ", ", HumanBytes(file.file_size()),
                  ", alignment ", file.alignment(), ", data at byte ", file.data_offset(), "\n");
  const auto arch = file.GetString("general.architecture");
  if (arch.ok()) {
    absl::StrAppend(&out, "architecture: ", *arch);
    if (auto name = file.GetString("general.name"); name.ok()) absl::StrAppend(&out, "  name: ", *name);
    absl::StrAppend(&out, "\n");
    // The hyper-parameters llama.cpp writes under the architecture's prefix.
    const std::pair<const char*, const char*> keys[] = {
        {"block_count", "layers"},          {"embedding_length", "embd"},
        {"feed_forward_length", "ff"},      {"attention.head_count", "heads"},
        {"attention.head_count_kv", "kv heads"}, {"context_length", "context"}};
    std::string shape;
    for (const auto& [key, label] : keys) {
      if (auto v = file.GetUint(absl::StrCat(*arch, ".", key)); v.ok()) {
        absl::StrAppend(&shape, shape.empty() ? "" : ", ", label, " ", *v);
      }
    }
    if (auto tokens = file.Find("tokenizer.ggml.tokens"); tokens != nullptr) {
      absl::StrAppend(&shape, shape.empty() ? "" : ", ", "vocab ", tokens->count);
    }
    if (!shape.empty()) absl::StrAppend(&out, "shape: ", shape, "\n");
  }

  const TensorSummary sum = Summarize(file);
  absl::StrAppend(&out, "tensors: ", file.tensors().size(), ", parameters ", HumanCount(sum.params), ", data ",
                  HumanBytes(sum.bytes), "\n");
  AppendByType(sum, &out);
  if (!sum.by_layer.empty()) {
    uint64_t largest = 0;
    for (const auto& [layer, b] : sum.by_layer) largest = std::max(largest, b);
    absl::StrAppend(&out, "layers: ", sum.by_layer.size(), ", largest layer ", HumanBytes(largest),
                    ", outside layers ", HumanBytes(sum.outside_layers), "\n");
  }
  if (all_tensors) {
    for (const gguf::TensorInfo& t : file.tensors()) {
      absl::StrAppend(&out, absl::StrFormat("  %-40s %-8s %-22s %12s @ %d\n", t.name, quant::Info(t.type).name,
                                            t.ShapeString(), HumanBytes(t.bytes), t.offset));
    }
  }
  absl::StrAppend(&out, "metadata: ", file.metadata().size(), " keys\n");
  for (const auto& [key, value] : file.metadata()) {
    absl::StrAppend(&out, "  ", key, " (", value.TypeString(), ") = ", value.ToDisplayString(), "\n");
  }
  return out;
}

std::string InspectJson(const gguf::File& file) {
  std::string out = absl::StrCat("{\"version\":", file.version(), ",\"alignment\":", file.alignment(),
                                 ",\"data_offset\":", file.data_offset(), ",\"metadata\":{");
  bool first = true;
  for (const auto& [key, value] : file.metadata()) {
    absl::StrAppend(&out, first ? "" : ",", JsonString(key), ":{\"type\":", JsonString(gguf::TypeName(value.type)));
    if (value.type == gguf::ValueType::kArray) {
      absl::StrAppend(&out, ",\"elem_type\":", JsonString(gguf::TypeName(value.elem_type)));
    }
    absl::StrAppend(&out, ",\"value\":", JsonValue(value), "}");
    first = false;
  }
  absl::StrAppend(&out, "},\"tensors\":[");
  first = true;
  for (const gguf::TensorInfo& t : file.tensors()) {
    absl::StrAppend(&out, first ? "" : ",", "{\"name\":", JsonString(t.name), ",\"type\":",
                    JsonString(quant::Info(t.type).name), ",\"type_id\":", static_cast<uint32_t>(t.type),
                    ",\"shape\":[");
    for (int d = 0; d < t.n_dims; ++d) absl::StrAppend(&out, d ? "," : "", t.dims[d]);
    absl::StrAppend(&out, "],\"offset\":", t.offset, ",\"bytes\":", t.bytes, "}");
    first = false;
  }
  return out + "]}\n";
}

}  // namespace ferry::service
