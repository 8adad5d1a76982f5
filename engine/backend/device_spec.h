// What a device has and how fast it moves bytes, in one struct: a named
// profile (a card's spec sheet: "rtx4060-8g"), what an opened device
// reports (Device::spec(): configured on sim, measured at start-up on
// cuda), and what the planner plans and predicts from. The sim device takes
// its defaults from a profile; the planner predicts from one until the cuda
// backend measures the real card.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::backend {

// A figure of 0 is not known; the planner's speed model then assumes a
// typical card's (plan/planner.h, Assumed).
struct DeviceSpec {
  std::string name;
  uint64_t memory_bytes = 0;    // what plans may fill, context overhead included (a card: as it reports it)
  uint64_t overhead_bytes = 0;  // of which taken before ferry allocates (CUDA context + library workspaces)
  double h2d_gbps = 0;          // pinned host-to-device copies, GB/s (achievable, not the link's peak)
  double latency_us = 0;        // per copy
  double memory_gbps = 0;       // device memory bandwidth, GB/s
  double tflops = 0;            // dense fp16 matrix throughput with fp32 accumulation
  // Its memory is the host's (cpu): its kernels read weights where they lie
  // in host memory, so nothing is uploaded or page-locked and there is no
  // device memory to fit a placement into: the planner keeps every unit
  // resident and the executor adopts resident units in place.
  bool host_memory = false;
  // Its kernels are the host CPU's (cpu, sim): what it computes takes what
  // the CPU takes, whatever the figures above (which, on sim, are the
  // card's it imitates).
  bool host_kernels = false;
  int threads = 0;              // the CPU threads its kernels use (cpu, sim)
};

// "rtx4060-8g", "rtx4090-24g", "h100-80g", ...
absl::StatusOr<DeviceSpec> FindGpuProfile(absl::string_view name);
std::string GpuProfileNames();

}  // namespace ferry::backend
