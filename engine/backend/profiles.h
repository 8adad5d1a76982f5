// Named GPU profiles: what a card has and how fast it moves bytes. The sim
// device takes its defaults from one; the planner's performance model
// predicts from one until the cuda backend measures the real card.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::backend {

struct GpuProfile {
  std::string name;
  uint64_t memory_bytes = 0;    // as the card reports it
  uint64_t overhead_bytes = 0;  // CUDA context + library workspaces before ferry allocates (typical)
  double h2d_gbps = 0;          // pinned host-to-device copies, GB/s (achievable, not the link's peak)
  double copy_latency_us = 0;   // per copy
  double memory_gbps = 0;       // device memory bandwidth, GB/s (spec sheet)
  double tflops = 0;            // dense fp16 tensor throughput with fp32 accumulation (spec sheet)
};

// "rtx4060-8g", "rtx4090-24g", "h100-80g", ...
absl::StatusOr<GpuProfile> FindGpuProfile(absl::string_view name);
std::string GpuProfileNames();

}  // namespace ferry::backend
