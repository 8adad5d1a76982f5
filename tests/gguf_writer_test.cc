// Writer -> reader round trips: every value type, every tensor type,
// alignment honoured, and the writer's own input checks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/gguf/gguf.h"
#include "engine/gguf/writer.h"
#include "tests/sample_gguf.h"

namespace ferry::gguf {
namespace {

using ::testing::HasSubstr;

std::unique_ptr<File> ReadBack(const std::string& bytes) {
  auto file = File::FromBuffer(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? std::move(*file) : nullptr;
}

class SampleRoundTrip : public ::testing::TestWithParam<uint32_t> {};

TEST_P(SampleRoundTrip, MetadataAndTensorsSurvive) {
  Writer w;
  std::vector<std::vector<uint8_t>> storage;
  ASSERT_TRUE(testing::BuildSample({.alignment = GetParam()}, &w, &storage).ok());
  absl::StatusOr<std::string> bytes = w.WriteToString();
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  std::unique_ptr<File> f = ReadBack(*bytes);
  ASSERT_NE(f, nullptr);

  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), GetParam());
  EXPECT_EQ(f->data_offset() % GetParam(), 0u);
  EXPECT_EQ(*f->GetUint("sample.u8"), 250u);
  EXPECT_EQ(*f->GetInt("sample.i8"), -120);
  EXPECT_EQ(*f->GetUint("sample.u16"), 65000u);
  EXPECT_EQ(*f->GetInt("sample.i16"), -32000);
  EXPECT_EQ(*f->GetUint("sample.u32"), 4000000000u);
  EXPECT_EQ(*f->GetInt("sample.i32"), -2000000000);
  EXPECT_EQ(*f->GetFloat("sample.f32"), 3.25);
  EXPECT_EQ(*f->GetBool("sample.bool"), true);
  EXPECT_EQ(*f->GetString("sample.string"), "h\xc3\xa9llo \xf0\x9f\x98\x80 \"quoted\"\n");
  EXPECT_EQ(*f->GetString("sample.empty_string"), "");
  EXPECT_EQ(*f->GetUint("sample.u64"), std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(*f->GetInt("sample.i64"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(*f->GetFloat("sample.f64"), -1.0e-300);
  EXPECT_EQ(*f->GetIntArray("sample.array_u8"), (std::vector<int64_t>{0, 1, 255}));
  EXPECT_EQ(*f->GetIntArray("sample.array_i8"), (std::vector<int64_t>{-128, 0, 127}));
  EXPECT_EQ(*f->GetIntArray("sample.array_u16"), (std::vector<int64_t>{1, 65535}));
  EXPECT_EQ(*f->GetIntArray("sample.array_i16"), (std::vector<int64_t>{-32768, 32767}));
  EXPECT_EQ(*f->GetIntArray("sample.array_u32"), (std::vector<int64_t>{7, 4294967295}));
  EXPECT_EQ(*f->GetIntArray("sample.array_i32"), (std::vector<int64_t>{-7, 2147483647}));
  EXPECT_EQ(*f->GetFloatArray("sample.array_f32"), (std::vector<float>{0.5f, -1.5f, 1e-30f}));
  EXPECT_EQ(f->Find("sample.array_u64")->Items()[1].AsUint(), 1ull << 63);
  EXPECT_EQ(*f->GetIntArray("sample.array_i64"), (std::vector<int64_t>{-(1ll << 62), 5}));
  EXPECT_EQ(f->Find("sample.array_f64")->Items()[0].AsDouble(), 1e300);
  EXPECT_EQ(f->Find("sample.array_f64")->TypeString(), "[f64 x 2]");
  EXPECT_TRUE(f->GetFloatArray("sample.array_empty")->empty());
  EXPECT_EQ(*f->GetStringArray("sample.array_string"),
            (std::vector<absl::string_view>{"<s>", "\xe2\x96\x81the", "", "\t"}));
  const Value* bools = f->Find("sample.array_bool");
  ASSERT_NE(bools, nullptr);
  EXPECT_EQ(bools->elem_type, ValueType::kBool);
  EXPECT_EQ(bools->ToDisplayString(), "[true, false]");

  const Value* nested = f->Find("sample.array_nested");
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->ToDisplayString(), "[[1, -2], [3]]");
  std::vector<Value> outer = nested->Items();
  ASSERT_EQ(outer.size(), 2u);
  EXPECT_EQ(outer[0].elem_type, ValueType::kI32);
  EXPECT_EQ(outer[0].Items()[1].AsInt(), -2);
  const Value* nested_strings = f->Find("sample.array_nested_strings");
  ASSERT_NE(nested_strings, nullptr);
  EXPECT_EQ(nested_strings->Items()[1].Strings(), (std::vector<absl::string_view>{"\xe2\x96\x81y"}));

  // Every tensor: name, type, shape and bytes as written, offsets aligned.
  size_t k = 0;
  for (const quant::TypeInfo& info : quant::AllTypes()) {
    const TensorInfo* t = f->FindTensor(absl::StrCat("tensor.", info.name));
    ASSERT_NE(t, nullptr) << info.name;
    EXPECT_EQ(t->type, info.type);
    EXPECT_EQ(t->n_dims, 2);
    EXPECT_EQ(t->dims[0], uint64_t{info.block_elems} * 2);
    EXPECT_EQ(t->dims[1], 3u);
    EXPECT_EQ(t->offset % GetParam(), 0u);
    ASSERT_EQ(t->bytes, storage[k].size());
    EXPECT_EQ(std::memcmp(t->data, storage[k].data(), t->bytes), 0) << info.name;
    ++k;
  }
  EXPECT_EQ(f->FindTensor("rank.four")->ShapeString(), "[2, 3, 4, 5]");
  EXPECT_EQ(f->FindTensor("rank.one")->n_dims, 1);
}

INSTANTIATE_TEST_SUITE_P(Alignments, SampleRoundTrip, ::testing::Values(32u, 64u, 1u, 4096u));

// Version 2 has the same layout as 3 (64-bit counts): a v3 file relabelled
// as v2 reads the same.
TEST(GgufReaderVersions, ReadsVersion2) {
  Writer w;
  std::vector<std::vector<uint8_t>> storage;
  ASSERT_TRUE(testing::BuildSample({}, &w, &storage).ok());
  std::string bytes = *w.WriteToString();
  const uint32_t v2 = 2;
  std::memcpy(&bytes[4], &v2, 4);
  std::unique_ptr<File> f = ReadBack(bytes);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(*f->GetString("general.architecture"), "sample");
  EXPECT_EQ(f->tensors().size(), storage.size());
}

TEST(GgufWriter, CopyingEveryValueThroughMetaValueFromIsExact) {
  Writer w;
  std::vector<std::vector<uint8_t>> storage;
  ASSERT_TRUE(testing::BuildSample({}, &w, &storage).ok());
  const std::string bytes = *w.WriteToString();  // the File views these bytes
  std::unique_ptr<File> f = ReadBack(bytes);
  ASSERT_NE(f, nullptr);
  Writer copy;
  for (const auto& [key, value] : f->metadata()) ASSERT_TRUE(copy.Set(key, MetaValue::From(value)).ok());
  const std::string copied = *copy.WriteToString();
  std::unique_ptr<File> g = ReadBack(copied);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(g->metadata().size(), f->metadata().size());
  for (size_t i = 0; i < f->metadata().size(); ++i) {
    EXPECT_EQ(g->metadata()[i].first, f->metadata()[i].first);
    EXPECT_EQ(g->metadata()[i].second.ToDisplayString(1000), f->metadata()[i].second.ToDisplayString(1000));
  }
}

TEST(GgufWriter, FileAndStringOutputsAreIdenticalAndFillIsUsed) {
  Writer w;
  const std::array<uint64_t, 2> dims = {32, 4};
  ASSERT_TRUE(w.AddTensor("filled", quant::TensorType::kQ8_0, dims, [](std::span<uint8_t> out) {
                 for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(i * 7);
                 return absl::OkStatus();
               }).ok());
  const std::string path = (std::filesystem::temp_directory_path() / "ferry_writer_test.gguf").string();
  ASSERT_TRUE(w.WriteFile(path).ok());
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), *w.WriteToString());
  absl::StatusOr<std::unique_ptr<File>> f = File::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  const TensorInfo* t = (*f)->FindTensor("filled");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->bytes, 4u * 34u);
  EXPECT_EQ(t->data[5], static_cast<uint8_t>(35));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(GgufWriter, FailedFillLeavesNoFile) {
  Writer w;
  const std::array<uint64_t, 1> dims = {4};
  ASSERT_TRUE(w.AddTensor("bad", quant::TensorType::kF32, dims, [](std::span<uint8_t>) {
                 return absl::InternalError("producer broke");
               }).ok());
  const std::string path = (std::filesystem::temp_directory_path() / "ferry_writer_fail.gguf").string();
  std::filesystem::remove(path);
  const absl::Status s = w.WriteFile(path);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor 'bad': producer broke"));
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(GgufWriter, RefusesInvalidInput) {
  Writer w;
  EXPECT_THAT(std::string(w.Set("", MetaValue::U8(1)).message()), HasSubstr("empty"));
  ASSERT_TRUE(w.Set("k", MetaValue::U8(1)).ok());
  EXPECT_EQ(w.Set("k", MetaValue::U8(2)).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(w.Set("general.alignment", MetaValue::U32(48)).ok());
  EXPECT_FALSE(w.Set("general.alignment", MetaValue::U64(64)).ok());
  const std::vector<uint8_t> data(34);
  const std::array<uint64_t, 1> ok_dims = {32};
  const std::array<uint64_t, 1> bad_dims = {31};
  const std::array<uint64_t, 5> five = {32, 1, 1, 1, 1};
  EXPECT_THAT(std::string(w.AddTensor("q", quant::TensorType::kQ8_0, bad_dims, data).message()),
              HasSubstr("not a multiple of the block size 32"));
  EXPECT_FALSE(w.AddTensor("q", quant::TensorType::kQ8_0, five, data).ok());
  EXPECT_FALSE(w.AddTensor(std::string(64, 'x'), quant::TensorType::kQ8_0, ok_dims, data).ok());
  EXPECT_THAT(std::string(w.AddTensor("q", quant::TensorType::kF32, ok_dims, data).message()),
              HasSubstr("needs 128 bytes of data, got 34"));
  ASSERT_TRUE(w.AddTensor("q", quant::TensorType::kQ8_0, ok_dims, data).ok());
  EXPECT_EQ(w.AddTensor("q", quant::TensorType::kQ8_0, ok_dims, data).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(MetaValue::ArrayOf(ValueType::kU8, std::vector{MetaValue::U16(1)}).ok());
}

}  // namespace
}  // namespace ferry::gguf
