// `ferry plan`: what fits on a GPU, from the model's header alone.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/plan/planner.h"

namespace ferry::service {

struct PlanOptions {
  std::string model_path;
  std::string gpu = "rtx4060-8g";     // profile for the context overhead (and memory when no budget is given)
  std::vector<uint64_t> budgets;      // empty: one plan on the profile's memory
  int gpu_layers = -1;                // >= 0: exactly this many layers resident
  plan::PlanRequest request;
  bool json = false;
  int threads = 0;                    // for measuring this host's CPU kernels (the CPU-only prediction)
};

// The plan(s) as a table or JSON.
absl::StatusOr<std::string> RunPlan(const PlanOptions& options);

}  // namespace ferry::service
