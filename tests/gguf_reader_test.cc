// The reader on real files: the stories260K model converted by llama.cpp's
// own tooling (facts from ../shared/models/README.md) and its GGUF v1 twin.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "engine/gguf/gguf.h"
#include "tests/shared_models.h"

namespace ferry::gguf {
namespace {

using ::testing::HasSubstr;

TEST(GgufReader, ReadsStories260K) {
  const std::string path = testing::SharedModel("stories260K-f32.gguf");
  FERRY_REQUIRE_SHARED_MODEL(path);
  absl::StatusOr<std::unique_ptr<File>> file = File::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const File& f = **file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.file_size(), 1185376u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(*f.GetString("general.architecture"), "llama");
  EXPECT_EQ(*f.GetUint("llama.block_count"), 5u);
  EXPECT_EQ(*f.GetUint("llama.embedding_length"), 64u);
  EXPECT_EQ(*f.GetUint("llama.feed_forward_length"), 172u);
  EXPECT_EQ(*f.GetUint("llama.attention.head_count"), 8u);
  EXPECT_EQ(*f.GetUint("llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(*f.GetUint("llama.context_length"), 2048u);
  EXPECT_NEAR(*f.GetFloat("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-12);
  EXPECT_FALSE(f.Has("llama.rope.freq_base"));
  EXPECT_EQ(*f.GetString("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(*f.GetUint("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(*f.GetUint("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(*f.GetUint("tokenizer.ggml.unknown_token_id"), 0u);

  absl::StatusOr<std::vector<absl::string_view>> tokens = f.GetStringArray("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok());
  ASSERT_EQ(tokens->size(), 512u);
  EXPECT_EQ((*tokens)[0], "<unk>");
  EXPECT_EQ((*tokens)[3], "<0x00>");
  EXPECT_EQ((*tokens)[258], "<0xFF>");
  EXPECT_EQ(f.GetFloatArray("tokenizer.ggml.scores")->size(), 512u);
  EXPECT_EQ(f.GetIntArray("tokenizer.ggml.token_type")->at(3), 6);  // byte token

  // 5 layers x 9 tensors + token_embd, output_norm, output.
  EXPECT_EQ(f.tensors().size(), 48u);
  const TensorInfo* embd = f.FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->ShapeString(), "[64, 512]");
  EXPECT_EQ(embd->bytes, 64u * 512u * 4u);
  const TensorInfo* k = f.FindTensor("blk.4.attn_k.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->ShapeString(), "[64, 32]");  // 4 kv heads x head size 8
  ASSERT_NE(f.FindTensor("output.weight"), nullptr);
  for (const TensorInfo& t : f.tensors()) {
    EXPECT_EQ(t.type, quant::TensorType::kF32) << t.name;
    EXPECT_GE(t.data, f.bytes().data() + f.data_offset());
    EXPECT_LE(t.data + t.bytes, f.bytes().data() + f.file_size());
  }
  // The norms of a trained model are not all zero: data really is mapped.
  const TensorInfo* norm = f.FindTensor("blk.0.attn_norm.weight");
  float first;
  std::memcpy(&first, norm->data, 4);
  EXPECT_NE(first, 0.0f);
}

TEST(GgufReader, RefusesVersion1File) {
  const std::string path = testing::SharedModel("stories260K-gguf-v1.gguf");
  FERRY_REQUIRE_SHARED_MODEL(path);
  absl::StatusOr<std::unique_ptr<File>> file = File::Open(path);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(file.status().message()), HasSubstr("unsupported GGUF version 1"));
}

TEST(GgufReader, TypedAccessorsNameKeyExpectedAndFound) {
  const std::string path = testing::SharedModel("stories260K-f32.gguf");
  FERRY_REQUIRE_SHARED_MODEL(path);
  absl::StatusOr<std::unique_ptr<File>> file = File::Open(path);
  ASSERT_TRUE(file.ok());
  const File& f = **file;
  EXPECT_EQ(f.GetString("llama.block_count").status().message(),
            "metadata key 'llama.block_count': expected string, found u32");
  EXPECT_EQ(f.GetFloat("general.architecture").status().message(),
            "metadata key 'general.architecture': expected f32 or f64, found string");
  EXPECT_EQ(f.GetUint("tokenizer.ggml.tokens").status().message(),
            "metadata key 'tokenizer.ggml.tokens': expected an integer, found [string x 512]");
  EXPECT_EQ(f.GetStringArray("tokenizer.ggml.scores").status().message(),
            "metadata key 'tokenizer.ggml.scores': expected [string], found [f32 x 512]");
  EXPECT_EQ(f.GetBool("llama.nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(f.GetBool("llama.nope").status().message(), "metadata key 'llama.nope' not found");
}

}  // namespace
}  // namespace ferry::gguf
