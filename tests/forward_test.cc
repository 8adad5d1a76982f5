// The CPU forward pass end to end on the real stories260K model: greedy
// decoding from BOS must reproduce the text the model's author documents
// (../shared/models/README.md), for both KV cache types and both the SIMD
// and the scalar kernels.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/exec/forward.h"
#include "engine/model/weights.h"
#include "engine/text/tokenizer.h"
#include "tests/shared_models.h"

namespace ferry {
namespace {

constexpr char kStoriesGolden[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw "
    "a big, red ball. She wanted to play with it, but it was too high.\nLily's mom said,";

std::string GreedyFromBos(const model::Model& m, exec::KvType kv, int n_tokens) {
  auto fwd = exec::Executor::Create(m, nullptr, {.max_batch = 1, .n_seq = 1, .n_ctx = 512, .kv_type = kv});
  EXPECT_TRUE(fwd.ok()) << fwd.status();
  auto tok = text::Tokenizer::FromGguf(*m.file);
  EXPECT_TRUE(tok.ok()) << tok.status();
  std::vector<float> logits(m.config.n_vocab);
  text::Detokenizer detok(**tok);
  std::string out;
  int32_t token = (*tok)->bos();
  for (int pos = 0; pos < n_tokens; ++pos) {
    const exec::BatchToken t{token, 0, pos, true};
    EXPECT_TRUE((*fwd)->Forward({&t, 1}, logits).ok());
    token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out += detok.Push(token);
  }
  return out + detok.Flush();
}

class StoriesGolden : public ::testing::TestWithParam<std::tuple<exec::KvType, cpu::Isa>> {};

TEST_P(StoriesGolden, GreedyFromBosMatchesTheDocumentedText) {
  const std::string path = testing::SharedModel("stories260K-f32.gguf");
  FERRY_REQUIRE_SHARED_MODEL(path);
  auto m = model::LoadModel(path);
  ASSERT_TRUE(m.ok()) << m.status();
  const cpu::Isa before = cpu::ActiveIsa();
  cpu::SetIsa(std::get<1>(GetParam()));
  const std::string text = GreedyFromBos(**m, std::get<0>(GetParam()), 90);
  cpu::SetIsa(before);
  EXPECT_THAT(text, ::testing::StartsWith(kStoriesGolden)) << text;
}

INSTANTIATE_TEST_SUITE_P(KvAndIsa, StoriesGolden,
                         ::testing::Combine(::testing::Values(exec::KvType::kF16, exec::KvType::kF32),
                                            ::testing::Values(cpu::Isa::kScalar, cpu::BestIsa())),
                         [](const auto& info) {
                           return absl::StrCat(std::get<0>(info.param) == exec::KvType::kF16 ? "kv_f16" : "kv_f32",
                                               "_", cpu::IsaName(std::get<1>(info.param)));
                         });

}  // namespace
}  // namespace ferry
