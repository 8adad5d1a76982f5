// ferry's forward pass on the cpu device, one thread, f32 KV cache, for
// the checks against llama.cpp:
//   logits_dump MODEL TOKEN...             the logits of every position (binary
//                                          f32, little-endian), one prefill batch
//   logits_dump --greedy N MODEL TOKEN...  prefill, then N greedy decode steps:
//                                          a line "id margin" per generated token
//                                          (margin: its logit minus the runner-up's)
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/exec/forward.h"
#include "engine/model/weights.h"

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  int greedy = -1, arg = 1;
  if (argc > 2 && std::strcmp(argv[1], "--greedy") == 0) {
    greedy = std::atoi(argv[2]);
    arg = 3;
  }
  if (argc - arg < 2 || (arg == 3 && greedy < 0)) {
    std::fprintf(stderr, "usage: logits_dump [--greedy N] MODEL.gguf TOKEN...\n");
    return 2;
  }
  auto model = ferry::model::LoadModel(argv[arg]);
  if (!model.ok()) return Fail(model.status());
  std::vector<ferry::exec::BatchToken> batch;
  for (int i = arg + 1; i < argc; ++i) {
    batch.push_back({std::atoi(argv[i]), 0, static_cast<int32_t>(batch.size()), greedy < 0});
  }
  const int n_prompt = static_cast<int>(batch.size());
  const int V = (*model)->config.n_vocab;
  auto fwd = ferry::exec::Executor::Create(**model, nullptr,
                                           {.max_batch = n_prompt,
                                            .n_seq = 1,
                                            .n_ctx = std::max(64, n_prompt + std::max(greedy, 0)),
                                            .kv_type = ferry::exec::KvType::kF32,
                                            .threads = 1});
  if (!fwd.ok()) return Fail(fwd.status());
  if (greedy < 0) {
    std::vector<float> logits(batch.size() * V);
    if (absl::Status s = (*fwd)->Forward(batch, logits); !s.ok()) return Fail(s);
    std::fwrite(logits.data(), sizeof(float), logits.size(), stdout);
    return 0;
  }
  batch.back().logits = true;
  std::vector<float> logits(V);
  for (int step = 0; step < greedy; ++step) {
    if (absl::Status s = (*fwd)->Forward(batch, logits); !s.ok()) return Fail(s);
    const int best = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    float second = -INFINITY;
    for (int i = 0; i < V; ++i) {
      if (i != best) second = std::max(second, logits[i]);
    }
    std::printf("%d %.6f\n", best, logits[best] - second);
    batch = {{best, 0, n_prompt + step, true}};
  }
  return 0;
}
