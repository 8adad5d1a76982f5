// The double-precision reference forward pass (tests/reference_forward) on a
// model file: the logits of every position of the given token ids, as
// binary f32, little-endian (the layout of logits_dump).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/gguf/gguf.h"
#include "tests/reference_forward.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: reference_dump MODEL.gguf TOKEN...\n");
    return 2;
  }
  auto file = ferry::gguf::File::Open(argv[1]);
  if (!file.ok()) {
    std::fprintf(stderr, "%s\n", std::string(file.status().message()).c_str());
    return 1;
  }
  auto ref = ferry::testing::ReferenceModel::Load(**file);
  if (!ref.ok()) {
    std::fprintf(stderr, "%s\n", std::string(ref.status().message()).c_str());
    return 1;
  }
  std::vector<int32_t> tokens;
  for (int i = 2; i < argc; ++i) tokens.push_back(std::atoi(argv[i]));
  for (const std::vector<double>& row : ref->Logits(tokens)) {
    std::vector<float> f(row.begin(), row.end());
    std::fwrite(f.data(), sizeof(float), f.size(), stdout);
  }
  return 0;
}
