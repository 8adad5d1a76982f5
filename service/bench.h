// `ferry bench`: prefill and decode throughput of the CPU engine at given
// batch sizes, on synthetic token ids (the weights' values do not change
// the speed).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/exec/cpu_forward.h"

namespace ferry::service {

struct BenchOptions {
  std::string model_path;
  std::vector<int> batches = {1, 8};  // sequences decoded together
  int prompt_tokens = 128;            // per sequence
  int gen_tokens = 32;                // decode steps
  int repetitions = 2;                // best of
  exec::ForwardOptions forward;       // threads, KV type
};

struct BenchRow {
  int batch = 0;
  double prefill_tokens_per_s = 0;  // prompt tokens of all sequences / prefill time
  double decode_tokens_per_s = 0;   // batch x steps / decode time
};

struct BenchResult {
  std::string model;
  uint64_t weight_bytes = 0;
  int threads = 0;
  std::string isa;
  std::vector<BenchRow> rows;
};

absl::StatusOr<BenchResult> RunBench(const BenchOptions& options);
std::string BenchTable(const BenchResult& result);
std::string BenchJson(const BenchResult& result);

}  // namespace ferry::service
