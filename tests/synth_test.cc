// Synthetic models: the llama tensor table and metadata, determinism, and
// weights that decode to the intended distribution.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/gguf/gguf.h"
#include "engine/model/synth.h"
#include "engine/model/weights.h"
#include "engine/quant/quantize.h"

namespace ferry::model {
namespace {

using ::testing::HasSubstr;

std::string Build(const SynthOptions& o) {
  gguf::Writer w;
  const absl::Status s = BuildSyntheticModel(o, &w);
  EXPECT_TRUE(s.ok()) << s;
  return *w.WriteToString();
}

std::unique_ptr<gguf::File> Read(const std::string& bytes) {
  auto f = gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  EXPECT_TRUE(f.ok()) << f.status();
  return std::move(*f);
}

SynthOptions Small() {
  SynthOptions o;
  o.n_layer = 2;
  o.n_embd = 64;
  o.n_head = 4;
  o.n_head_kv = 2;
  o.n_ff = 96;
  o.n_vocab = 300;
  return o;
}

TEST(Synth, LlamaTensorTableAndMetadata) {
  const std::string bytes = Build(Small());
  std::unique_ptr<gguf::File> f = Read(bytes);
  EXPECT_EQ(*f->GetString("general.architecture"), "llama");
  EXPECT_EQ(*f->GetUint("llama.block_count"), 2u);
  EXPECT_EQ(*f->GetUint("llama.embedding_length"), 64u);
  EXPECT_EQ(*f->GetUint("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(*f->GetUint("llama.rope.dimension_count"), 16u);
  EXPECT_EQ(*f->GetUint("general.file_type"), 7u);  // mostly q8_0
  EXPECT_THAT(std::string(*f->GetString("general.description")), HasSubstr("noise"));
  const auto tokens = *f->GetStringArray("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 300u);
  EXPECT_EQ(tokens[1], "<s>");
  EXPECT_EQ(tokens[3 + 0x41], "<0x41>");
  EXPECT_EQ(f->GetFloatArray("tokenizer.ggml.scores")->size(), 300u);
  EXPECT_EQ(f->GetIntArray("tokenizer.ggml.token_type")->size(), 300u);
  std::set<absl::string_view> unique(tokens.begin(), tokens.end());
  EXPECT_EQ(unique.size(), tokens.size()) << "token pieces must be distinct";

  EXPECT_EQ(f->tensors().size(), 2u * 9u + 3u);
  struct Want {
    const char* name;
    const char* shape;
    quant::TensorType type;
  };
  for (const Want& w : {Want{"token_embd.weight", "[64, 300]", quant::TensorType::kQ8_0},
                        Want{"blk.0.attn_norm.weight", "[64]", quant::TensorType::kF32},
                        Want{"blk.1.attn_q.weight", "[64, 64]", quant::TensorType::kQ8_0},
                        Want{"blk.1.attn_k.weight", "[64, 32]", quant::TensorType::kQ8_0},
                        Want{"blk.1.attn_v.weight", "[64, 32]", quant::TensorType::kQ8_0},
                        Want{"blk.1.attn_output.weight", "[64, 64]", quant::TensorType::kQ8_0},
                        Want{"blk.1.ffn_norm.weight", "[64]", quant::TensorType::kF32},
                        Want{"blk.1.ffn_gate.weight", "[64, 96]", quant::TensorType::kQ8_0},
                        Want{"blk.1.ffn_up.weight", "[64, 96]", quant::TensorType::kQ8_0},
                        Want{"blk.1.ffn_down.weight", "[96, 64]", quant::TensorType::kQ8_0},
                        Want{"output_norm.weight", "[64]", quant::TensorType::kF32},
                        Want{"output.weight", "[64, 300]", quant::TensorType::kQ8_0}}) {
    const gguf::TensorInfo* t = f->FindTensor(w.name);
    ASSERT_NE(t, nullptr) << w.name;
    EXPECT_EQ(t->ShapeString(), w.shape) << w.name;
    EXPECT_EQ(t->type, w.type) << w.name;
  }
  uint64_t params = 0;
  for (const gguf::TensorInfo& t : f->tensors()) params += t.elements;
  EXPECT_EQ(params, ParameterCount(Small()));
}

TEST(Synth, VocabularyPiecesAreDistinctAtEverySize) {
  for (int n : {260, 1024, 32000}) {
    SynthOptions o = Small();
    o.n_vocab = n;
    o.n_layer = 1;
    gguf::Writer w;
    ASSERT_TRUE(BuildSyntheticModel(o, &w).ok());
    // Only the metadata matters here; the header is enough to read it back.
    const std::string bytes = *w.WriteToString();
    std::unique_ptr<gguf::File> f = Read(bytes);
    const auto tokens = *f->GetStringArray("tokenizer.ggml.tokens");
    ASSERT_EQ(tokens.size(), static_cast<size_t>(n));
    EXPECT_EQ(std::set<absl::string_view>(tokens.begin(), tokens.end()).size(), tokens.size()) << n;
  }
}

TEST(Synth, DeterministicPerSeedAndTiedOutput) {
  EXPECT_EQ(Build(Small()), Build(Small()));
  SynthOptions other = Small();
  other.seed = 2;
  EXPECT_NE(Build(Small()), Build(other));
  SynthOptions tied = Small();
  tied.tied_output = true;
  std::unique_ptr<gguf::File> f = Read(Build(tied));
  EXPECT_EQ(f->FindTensor("output.weight"), nullptr);
  EXPECT_EQ(f->tensors().size(), 2u * 9u + 2u);
}

TEST(Synth, WeightsDecodeToTheIntendedScale) {
  for (quant::TensorType type : {quant::TensorType::kF32, quant::TensorType::kF16, quant::TensorType::kBF16,
                                 quant::TensorType::kQ8_0}) {
    SynthOptions o = Small();
    o.type = type;
    const std::string bytes = Build(o);
    std::unique_ptr<gguf::File> f = Read(bytes);
    const gguf::TensorInfo* t = f->FindTensor("blk.0.ffn_up.weight");
    ASSERT_EQ(t->type, type);
    std::vector<float> x(t->elements);
    ASSERT_TRUE(quant::DequantizeRow(type, std::span(t->data, t->bytes), x).ok());
    // Uniform in [-sqrt(3/64), sqrt(3/64)]: variance 1/64.
    double sum = 0, sq = 0, amax = 0;
    for (float v : x) {
      sum += v;
      sq += v * v;
      amax = std::max(amax, std::fabs(static_cast<double>(v)));
    }
    const double mean = sum / x.size(), var = sq / x.size() - mean * mean;
    EXPECT_NEAR(mean, 0.0, 0.01) << quant::Info(type).name;
    EXPECT_NEAR(var, 1.0 / 64.0, 0.1 / 64.0) << quant::Info(type).name;
    EXPECT_LE(amax, std::sqrt(3.0 / 64.0) * 1.01);
    const gguf::TensorInfo* norm = f->FindTensor("output_norm.weight");
    float g;
    std::memcpy(&g, norm->data, 4);
    EXPECT_NEAR(g, 1.0f, 0.1f);
  }
}

TEST(Synth, RefusesInconsistentShapes) {
  auto error = [](auto edit) {
    SynthOptions o = Small();
    edit(o);
    return std::string(Validate(o).message());
  };
  EXPECT_THAT(error([](SynthOptions& o) { o.n_head = 5; }), HasSubstr("not divisible by heads 5"));
  EXPECT_THAT(error([](SynthOptions& o) { o.n_head_kv = 3; }), HasSubstr("not a multiple of kv-heads 3"));
  EXPECT_THAT(error([](SynthOptions& o) { o.n_embd = 48, o.n_head = 16; }), HasSubstr("head size 3 must be even"));
  EXPECT_THAT(error([](SynthOptions& o) { o.n_ff = 100; }), HasSubstr("ff 100 is not a multiple of the q8_0 block size 32"));
  EXPECT_THAT(error([](SynthOptions& o) { o.n_vocab = 100; }), HasSubstr("vocab 100 is below 260"));
  EXPECT_THAT(error([](SynthOptions& o) { o.n_layer = 0; }), HasSubstr("layers must be positive"));
  EXPECT_THAT(error([](SynthOptions& o) { o.type = quant::TensorType::kQ2_K; }), HasSubstr("cannot produce type q2_K"));
  EXPECT_THAT(error([](SynthOptions& o) { o.arch = "mamba"; }), HasSubstr("'mamba' is not available"));
}

// qwen3 and gemma3 carry per-head q/k norms; gemma3 has one global layer
// in six (the others sliding, at their own rope base) and, at 62 layers,
// the 27B's query scale.
TEST(Synth, Qwen3AndGemma3ConfigsAsLlamaCppRunsThem) {
  for (const char* arch : {"qwen3", "gemma3"}) {
    SynthOptions o = Small();
    o.arch = arch;
    o.n_layer = 12;
    o.sliding_window = 16;
    const std::string bytes = Build(o);
    auto m = LoadModel(Read(bytes));
    ASSERT_TRUE(m.ok()) << m.status();
    const ModelConfig& c = (*m)->config;
    EXPECT_TRUE(c.qk_norm) << arch;
    EXPECT_EQ((*m)->weights.layers[3].q_norm.size(), 16u) << arch;
    EXPECT_EQ((*m)->weights.layers[3].k_norm.size(), 16u) << arch;
    EXPECT_TRUE((*m)->weights.layers[3].bq.empty()) << arch;
    if (std::string(arch) == "qwen3") {
      EXPECT_EQ(c.sliding_window, 0);
      EXPECT_EQ(c.rope_sets(), 1);
      continue;
    }
    EXPECT_TRUE(c.tied_output);
    EXPECT_TRUE(c.post_norms);
    EXPECT_EQ(c.final_softcap, 0.0f);
    EXPECT_EQ(c.attn_softcap, 0.0f);
    std::string global;
    for (int l = 0; l < c.n_layer; ++l) {
      if (!c.LayerIsSliding(l)) absl::StrAppend(&global, l, " ");
      EXPECT_EQ(c.LayerRopeSet(l), c.LayerIsSliding(l) ? 1 : 0);
    }
    EXPECT_EQ(global, "5 11 ");
    EXPECT_EQ(c.rope_base, 1e6f);
    EXPECT_EQ(c.rope_base_local, 1e4f);
    EXPECT_FLOAT_EQ(c.query_scale, 1.0f / std::sqrt(16.0f));
  }
  SynthOptions big = *Preset("gemma3-27b");
  gguf::Writer w;
  ASSERT_TRUE(BuildSyntheticModel(big, &w).ok());
  const std::string header = w.HeaderBytes();
  auto hf = gguf::File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(header.data()), header.size()),
                                   {.header_only = true});
  ASSERT_TRUE(hf.ok());
  auto c = LoadConfig(**hf);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FLOAT_EQ(c->query_scale, 1.0f / std::sqrt(5376.0f / 32.0f));  // n_embd / n_head, not the head size
  EXPECT_FLOAT_EQ(c->rope_freq_scale, 1.0f / 8.0f);                    // linear scaling of the global layers
  EXPECT_EQ(c->sliding_window, 1024);
}

// A file whose tensors name more layers than its block_count would run the
// first block_count layers only, and answer with other text: refused.
TEST(Synth, TensorsOfLayersPastTheBlockCountAreRefused) {
  SynthOptions o = Small();
  o.n_layer = 5;
  std::string bytes = Build(o);
  const std::string key = "llama.block_count";
  const size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  const uint32_t four = 4;  // after the key: its value type (u32), then the value
  std::memcpy(bytes.data() + at + key.size() + 4, &four, 4);
  auto m = LoadModel(Read(bytes));
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(),
              HasSubstr("tensor 'blk.4.attn_norm.weight' belongs to layer 4, but llama.block_count says the model "
                        "has 4 layers"));
}

}  // namespace
}  // namespace ferry::model
