// Writes the sample GGUF file (every value and tensor type) to argv[1].
#include <cstdio>

#include "tests/sample_gguf.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gguf_sample OUT.gguf\n");
    return 2;
  }
  ferry::gguf::Writer writer;
  std::vector<std::vector<uint8_t>> storage;
  absl::Status s = ferry::testing::BuildSample({.alignment = 64, .include_q8_1 = false}, &writer, &storage);
  if (s.ok()) s = writer.WriteFile(argv[1]);
  if (!s.ok()) {
    std::fprintf(stderr, "gguf_sample: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
