// Prints (binary f32, little-endian) ferry's logits for every position of
// the given token ids, computed as one prefill batch with an f32 KV cache.
#include <cstdio>
#include <cstdlib>

#include "engine/exec/forward.h"
#include "engine/model/weights.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: logits_dump MODEL.gguf TOKEN...\n");
    return 2;
  }
  auto model = ferry::model::LoadModel(argv[1]);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  std::vector<ferry::exec::BatchToken> batch;
  for (int i = 2; i < argc; ++i) batch.push_back({std::atoi(argv[i]), 0, i - 2, true});
  auto fwd = ferry::exec::Executor::Create(
      **model, nullptr, {.max_batch = static_cast<int>(batch.size()), .n_seq = 1, .n_ctx = 64, .kv_type = ferry::exec::KvType::kF32, .threads = 1});
  std::vector<float> logits(batch.size() * (*model)->config.n_vocab);
  if (absl::Status s = (*fwd)->Forward(batch, logits); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::fwrite(logits.data(), sizeof(float), logits.size(), stdout);
  return 0;
}
