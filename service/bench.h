// `ferry bench`: prefill and decode throughput at given batch sizes on a
// device (cpu, or sim with a placement), on synthetic token ids (the
// weights' values do not change the speed). --sweep runs the same model at
// resident fractions 0, 25, 50, 75 and 100 % under one budget, the rest
// streamed, on the CPU, and split between the two (stream / cpu / mixed
// rows): what offloading buys, with the bytes streamed, how well copies
// overlapped and what the speed model predicted.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/exec/forward.h"
#include "engine/engine/engine.h"

namespace ferry::service {

struct BenchOptions {
  std::string model_path;
  std::vector<int> batches = {1, 8};  // sequences decoded together
  int prompt_tokens = 128;            // per sequence
  int gen_tokens = 32;                // decode steps
  int repetitions = 2;                // best of
  exec::ForwardOptions forward;       // threads, KV type
  engine::PlacementArgs placement;
  bool sweep = false;
};

struct BenchRow {
  int batch = 0;
  std::string placement;            // the strategy for what is not resident: stream, cpu, mixed
  int resident_layers = 0;
  int cpu_layers = 0;
  bool head_resident = true;
  double gpu_fraction = 1.0;        // of the layers' and head's bytes
  double prefill_tokens_per_s = 0;  // prompt tokens of all sequences / prefill time
  double decode_tokens_per_s = 0;   // batch x steps / decode time
  // Decode steps of the best repetition (streaming devices).
  double streamed_gbps = 0;         // bytes copied to staging slots / step time
  double copy_utilization = 0;      // streamed_gbps / the device's copy bandwidth
  double overlap = 0;               // of the shorter of copy and compute, the part hidden under the other
  // The speed model's decode tokens/s for this placement and batch (plan::Predict;
  // on the sim device with its kernels costed as the host CPU's, as it runs them).
  double predicted_tokens_per_s = 0;
  std::string fits;                 // empty, or why this placement does not fit
};

struct BenchResult {
  std::string model;
  std::string device;
  uint64_t weight_bytes = 0;
  int threads = 0;
  std::string isa;
  double h2d_gbps = 0;              // the copy bandwidth (sim), 0 on the cpu
  std::vector<BenchRow> rows;
};

absl::StatusOr<BenchResult> RunBench(const BenchOptions& options);
std::string BenchTable(const BenchResult& result);
std::string BenchJson(const BenchResult& result);

// Overlap of a step: 1 when it took max(copy, compute), 0 when their sum.
double Overlap(double step_s, double copy_s, double compute_s);

}  // namespace ferry::service
