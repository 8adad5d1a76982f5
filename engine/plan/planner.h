// The memory planner: which layers live in GPU memory, byte-exact, from the
// GGUF header alone. Every byte the device will hold is named here by
// category; nothing reads tensor data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/gguf/gguf.h"
#include "engine/model/config.h"

namespace ferry::plan {

struct DeviceSpec {
  std::string name;
  uint64_t memory_bytes = 0;      // what the device has
  uint64_t overhead_bytes = 0;    // taken before ferry allocates (CUDA context: measured; sim: configured)
};

// A named device profile: "rtx4060-8g", "rtx4090-24g", "a100-80g", ...
absl::StatusOr<DeviceSpec> DeviceProfile(const std::string& name);
std::string DeviceProfileNames();

enum class Policy {
  kAuto,     // the most layers that fit the device's memory
  kLayers,   // exactly gpu_layers layers resident
  kBudget,   // the most layers that fit gpu_memory bytes
};

struct PlanRequest {
  Policy policy = Policy::kAuto;
  int gpu_layers = 0;            // kLayers
  uint64_t gpu_memory = 0;       // kBudget
  int n_ctx = 4096;              // positions per slot
  int n_slots = 1;               // concurrent sequences
  int kv_bytes_per_elem = 2;     // f16 cache
  int max_batch = 512;           // tokens per step (sizes the activation workspace)
  int ring_depth = 2;            // staging slots for streamed layers
  double margin_fraction = 0.02; // safety margin, of the device memory
};

struct Plan {
  int n_layers = 0;
  int resident_layers = 0;       // the first resident_layers layers stay on the device
  bool head_resident = false;    // output norm + output matrix
  // Device bytes by category; total = their sum.
  uint64_t weights_resident = 0; // resident layers + head
  uint64_t staging = 0;          // ring_depth x the largest streamed layer
  uint64_t kv_cache = 0;
  uint64_t workspace = 0;
  uint64_t overhead = 0;
  uint64_t margin = 0;
  uint64_t total = 0;
  uint64_t budget = 0;           // what the plan had to fit in
  uint64_t host_pinned = 0;      // streamed layers' bytes, pinned on the host
  // Model bytes.
  uint64_t model_bytes = 0;      // every tensor in the file
  uint64_t layer_bytes_total = 0;
  uint64_t head_bytes = 0;
  uint64_t embedding_bytes = 0;  // stays on the host: only the rows a step needs are copied
  std::vector<uint64_t> layer_bytes;

  double gpu_fraction() const;   // share of the layers' and head's bytes on the device
};

// Plans `request` on `device` from the model's header. kLayers with more
// than fits fails with an error that says how much is missing and what to
// change; kAuto/kBudget choose the most layers that fit (possibly none).
absl::StatusOr<Plan> MakePlan(const gguf::File& file, const model::ModelConfig& config, const PlanRequest& request,
                              const DeviceSpec& device);

}  // namespace ferry::plan
