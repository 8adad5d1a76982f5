// Writes, for each quantized type ferry decodes, a tensor "q.<type>" of
// seeded random blocks (scales kept finite) and "deq.<type>" with ferry's
// decoding of it as f32, so another implementation can check the decoding.
#include <cmath>
#include <cstdio>
#include <random>

#include "absl/strings/str_cat.h"
#include "engine/gguf/writer.h"
#include "engine/quant/half.h"
#include "engine/quant/quantize.h"

namespace {

using ferry::quant::TensorType;

// Random block bytes, with every f16 scale field replaced by a finite value.
std::vector<uint8_t> RandomBlocks(TensorType type, int blocks, std::mt19937* rng) {
  const ferry::quant::TypeInfo& info = ferry::quant::Info(type);
  std::vector<uint8_t> bytes(static_cast<size_t>(blocks) * info.block_bytes);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>((*rng)());
  std::vector<int> half_fields;  // byte offsets of f16 fields in one block
  switch (type) {
    case TensorType::kQ4_0: case TensorType::kQ5_0: case TensorType::kQ8_0: half_fields = {0}; break;
    case TensorType::kQ4_1: case TensorType::kQ5_1: case TensorType::kQ4_K: case TensorType::kQ5_K:
      half_fields = {0, 2};
      break;
    case TensorType::kQ6_K: half_fields = {208}; break;
    default: break;
  }
  std::normal_distribution<float> scale(0.0f, 0.05f);
  for (int b = 0; b < blocks; ++b) {
    for (int off : half_fields) {
      const uint16_t h = ferry::quant::FloatToHalf(scale(*rng));
      std::memcpy(&bytes[b * info.block_bytes + off], &h, 2);
    }
  }
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: quant_sample OUT.gguf\n");
    return 2;
  }
  std::mt19937 rng(1234);
  ferry::gguf::Writer w;
  std::vector<std::vector<uint8_t>> storage;
  storage.reserve(32);  // references into it stay valid below
  for (TensorType type : {TensorType::kQ4_0, TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1,
                          TensorType::kQ8_0, TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K,
                          TensorType::kF16, TensorType::kBF16}) {
    const ferry::quant::TypeInfo& info = ferry::quant::Info(type);
    const int blocks = 64;
    const uint64_t elems = static_cast<uint64_t>(blocks) * info.block_elems;
    std::vector<uint8_t>& q = storage.emplace_back(RandomBlocks(type, blocks, &rng));
    if (type == TensorType::kF16 || type == TensorType::kBF16) {  // finite values only
      std::normal_distribution<float> v(0.0f, 3.0f);
      std::vector<float> src(elems);
      for (float& x : src) x = v(rng);
      (void)ferry::quant::QuantizeRow(type, src, q);
    }
    std::vector<float> deq(elems);
    if (absl::Status s = ferry::quant::DequantizeRow(type, q, deq); !s.ok()) {
      std::fprintf(stderr, "quant_sample: %s\n", std::string(s.message()).c_str());
      return 1;
    }
    std::vector<uint8_t>& d = storage.emplace_back(elems * 4);
    std::memcpy(d.data(), deq.data(), d.size());
    const std::array<uint64_t, 1> dims = {elems};
    for (const absl::Status& s : {w.AddTensor(absl::StrCat("q.", info.name), type, dims, q),
                                  w.AddTensor(absl::StrCat("deq.", info.name), TensorType::kF32, dims, d)}) {
      if (!s.ok()) {
        std::fprintf(stderr, "quant_sample: %s\n", std::string(s.message()).c_str());
        return 1;
      }
    }
  }
  const absl::Status s = w.WriteFile(argv[1]);
  if (!s.ok()) {
    std::fprintf(stderr, "quant_sample: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
