// --device and the placement flags, shared by generate and bench: opens the
// device, plans what is resident with the planner (the same byte rules the
// executor allocates by) and says what it chose before any weight moves.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend/device.h"
#include "engine/exec/forward.h"
#include "engine/model/weights.h"
#include "engine/plan/planner.h"

namespace ferry::service {

struct DeviceFlags {
  std::string device = "cpu";          // cpu | sim[:key=value,...] | cuda[:N]
  int gpu_layers = -1;                 // exactly N layers resident (+ the head); -1: as many as fit
  bool stream_head = false;            // with gpu_layers 0: stream the head too
  std::optional<uint64_t> gpu_memory;  // budget; unset: the device's memory
  int ring_depth = 2;
  // Where the layers that are not resident go: stream, cpu, mixed (the
  // fastest split, or exactly cpu_layers of them on the CPU) or auto (mixed,
  // the fastest split).
  std::string placement = "auto";
  int cpu_layers = -1;
};

// The planner's view of an opened device (memory, overhead, bandwidths).
plan::DeviceSpec SpecOf(const backend::Device& device);

// Plans `forward` (n_ctx already resolved) on `device`; the plan's
// placement goes into forward->placement. The cpu device needs no plan. A
// plan that may put units on the CPU is made for a step of forward->n_seq
// tokens (the slots a server keeps busy) with this host's CPU speed,
// measured here (plan::MeasureHost, a quarter of a second), and must fit the
// host memory the system has available.
absl::StatusOr<std::optional<plan::Plan>> PlanPlacement(const model::Model& model, const backend::Device& device,
                                                        const DeviceFlags& flags, exec::ForwardOptions* forward);

// The model's context length when --ctx is 0 (at most 4096).
int DefaultContext(const model::Model& model);

}  // namespace ferry::service
