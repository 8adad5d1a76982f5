#include "tests/sample_gguf.h"

#include <array>
#include <limits>

#include "absl/strings/str_cat.h"

namespace ferry::testing {

using gguf::MetaValue;
using gguf::ValueType;

absl::Status BuildSample(const SampleOptions& options, gguf::Writer* w, std::vector<std::vector<uint8_t>>* storage) {
  if (options.alignment != gguf::kDefaultAlignment) {
    if (absl::Status s = w->Set("general.alignment", MetaValue::U32(options.alignment)); !s.ok()) return s;
  }
  absl::StatusOr<MetaValue> inner1 = MetaValue::ArrayOf(ValueType::kI32, std::vector{MetaValue::I32(1), MetaValue::I32(-2)});
  absl::StatusOr<MetaValue> inner2 = MetaValue::ArrayOf(ValueType::kI32, std::vector{MetaValue::I32(3)});
  if (!inner1.ok() || !inner2.ok()) return absl::InternalError("nested array");
  absl::StatusOr<MetaValue> nested = MetaValue::ArrayOf(ValueType::kArray, std::vector{*inner1, *inner2});
  absl::StatusOr<MetaValue> nested_strings = MetaValue::ArrayOf(
      ValueType::kArray, std::vector{MetaValue::StringArray(std::vector<std::string>{"x", ""}),
                                     MetaValue::StringArray(std::vector<std::string>{"\xe2\x96\x81y"})});
  if (!nested.ok() || !nested_strings.ok()) return absl::InternalError("nested array");

  const std::vector<std::pair<std::string, MetaValue>> meta = {
      {"general.architecture", MetaValue::Str("sample")},
      {"sample.u8", MetaValue::U8(250)},
      {"sample.i8", MetaValue::I8(-120)},
      {"sample.u16", MetaValue::U16(65000)},
      {"sample.i16", MetaValue::I16(-32000)},
      {"sample.u32", MetaValue::U32(4000000000u)},
      {"sample.i32", MetaValue::I32(-2000000000)},
      {"sample.f32", MetaValue::F32(3.25f)},
      {"sample.bool", MetaValue::Bool(true)},
      {"sample.string", MetaValue::Str("h\xc3\xa9llo \xf0\x9f\x98\x80 \"quoted\"\n")},
      {"sample.empty_string", MetaValue::Str("")},
      {"sample.u64", MetaValue::U64(std::numeric_limits<uint64_t>::max())},
      {"sample.i64", MetaValue::I64(std::numeric_limits<int64_t>::min())},
      {"sample.f64", MetaValue::F64(-1.0e-300)},
      {"sample.array_u8", MetaValue::Array(std::vector<uint8_t>{0, 1, 255})},
      {"sample.array_i8", MetaValue::Array(std::vector<int8_t>{-128, 0, 127})},
      {"sample.array_u16", MetaValue::Array(std::vector<uint16_t>{1, 65535})},
      {"sample.array_i16", MetaValue::Array(std::vector<int16_t>{-32768, 32767})},
      {"sample.array_u32", MetaValue::Array(std::vector<uint32_t>{7, 4294967295u})},
      {"sample.array_i32", MetaValue::Array(std::vector<int32_t>{-7, 2147483647})},
      {"sample.array_f32", MetaValue::Array(std::vector<float>{0.5f, -1.5f, 1e-30f})},
      {"sample.array_u64", MetaValue::Array(std::vector<uint64_t>{0, 1ull << 63})},
      {"sample.array_i64", MetaValue::Array(std::vector<int64_t>{-(1ll << 62), 5})},
      {"sample.array_f64", MetaValue::Array(std::vector<double>{1e300, -0.25})},
      {"sample.array_empty", MetaValue::Array(std::vector<float>{})},
      {"sample.array_string", MetaValue::StringArray(std::vector<std::string>{"<s>", "\xe2\x96\x81the", "", "\t"})},
      {"sample.array_nested", *nested},
      {"sample.array_nested_strings", *nested_strings},
  };
  for (const auto& [key, value] : meta) {
    if (absl::Status s = w->Set(key, value); !s.ok()) return s;
  }
  // Bool arrays have no C++ element type helper: build them from values.
  absl::StatusOr<MetaValue> bools =
      MetaValue::ArrayOf(ValueType::kBool, std::vector{MetaValue::Bool(true), MetaValue::Bool(false)});
  if (!bools.ok()) return bools.status();
  if (absl::Status s = w->Set("sample.array_bool", *bools); !s.ok()) return s;

  uint64_t state = 0x5eed;
  for (const quant::TypeInfo& info : quant::AllTypes()) {
    if (info.type == quant::TensorType::kQ8_1 && !options.include_q8_1) continue;
    const std::array<uint64_t, 2> dims = {uint64_t{info.block_elems} * 2, 3};
    std::vector<uint8_t>& bytes = storage->emplace_back(*quant::RowBytes(info.type, dims[0]) * dims[1]);
    for (uint8_t& b : bytes) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      b = static_cast<uint8_t>(state >> 56);
    }
    if (absl::Status s = w->AddTensor(absl::StrCat("tensor.", info.name), info.type, dims, bytes); !s.ok()) return s;
  }
  // A 1-D and a 4-D tensor, so every rank appears.
  std::vector<uint8_t>& one_d = storage->emplace_back(4 * 5, 0x11);
  std::vector<uint8_t>& four_d = storage->emplace_back(4 * 2 * 3 * 4 * 5, 0x22);
  const std::array<uint64_t, 1> d1 = {5};
  const std::array<uint64_t, 4> d4 = {2, 3, 4, 5};
  if (absl::Status s = w->AddTensor("rank.one", quant::TensorType::kF32, d1, one_d); !s.ok()) return s;
  return w->AddTensor("rank.four", quant::TensorType::kF32, d4, four_d);
}

}  // namespace ferry::testing
