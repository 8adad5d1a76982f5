// "--device cuda[:N][,mem=SIZE][,poison=1][,int8=0][,int8_more=1][,graphs=0][,fuse=0]": which GPU and how much of its
// memory ferry may take. Parsed without the CUDA runtime, so every build
// (and CI without a GPU) checks the syntax.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::backend {

struct CudaOptions {
  int index = 0;              // the device ordinal
  uint64_t memory_bytes = 0;  // at most this much device memory, context included; 0: all that is free
  bool poison = false;        // NaN-fill staging slots as they are refilled (debug)
  // Decode matvec on int8-quantized activations (matvec_int8.cuh) where the
  // type has one; int8=0: the float matvec everywhere. On by default: it
  // reads a third of the float matvec's activation bytes and decodes 1.5-3x
  // faster on the GPU suite's runs (docs/measurements.md), at the cpu
  // backend's 8-bit error.
  bool int8 = true;
  // The int8 matvec also for q4_1, q5_0 and q5_1 (int8_more=1). Off until
  // the GPU suite has passed with them: they are compiled and tested
  // against the same formats' host code, but have not run on a GPU.
  bool int8_more = false;
  // Decode steps' kernels recorded into CUDA graphs and replayed
  // (Device::RunRecorded); graphs=0: every kernel launched on its own.
  bool graphs = true;
  // Fused launches: q/k/v in one, gate/up with the gating, the residual add
  // in the wo and down products, rope of q and k together, RMSNorm that
  // also quantizes for the next int8 product. fuse=0: one launch per op.
  bool fuse = true;
};

// `spec` is what follows "cuda:" ("" for plain "cuda"): "1", "mem=8GiB",
// "0,mem=8GiB,poison=1".
absl::StatusOr<CudaOptions> ParseCudaOptions(absl::string_view spec);

}  // namespace ferry::backend
