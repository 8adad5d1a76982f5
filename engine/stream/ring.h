// The ferry itself: streamed units cross to the device every step through a
// ring of staging slots in device memory. Each streamed unit is packed once
// at load, exactly as it sits in a slot (exec/layout.h), into one page-locked
// host buffer from the device's AllocateHost (cudaHostAlloc on a GPU), so it
// crosses in one copy at the pinned rate; the file mapping's pages of the
// copied matrices are then dropped, so host memory for streaming is the
// packed copy. The copy queue runs `depth` units ahead of compute: slot s is
// refilled with the unit `depth` further on (in this step or, wrapping, the
// next) once the compute queue has recorded that the unit in it is done.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend/device.h"
#include "engine/stream/layout.h"
#include "engine/model/weights.h"

namespace ferry::stream {

// Deliberately broken schedules, for the tests that prove the sim device's
// poisoning catches them: compute on a slot without waiting for its "ready"
// event; release a slot (record "free", start its refill) before the unit
// that reads it has run.
struct ScheduleFaults {
  bool skip_ready_wait = false;
  bool release_slot_early = false;
};

class StagingRing {
 public:
  StagingRing() = default;
  ~StagingRing();
  StagingRing(const StagingRing&) = delete;
  StagingRing& operator=(const StagingRing&) = delete;

  // `units`: the streamed units in the order a step computes them; `depth`
  // slots (at most units.size()). Allocates the slots and events, packs the
  // units into page-locked host memory (`progress` is told first) and
  // starts the copy queue `depth` units ahead.
  absl::Status Init(backend::Device& device, const model::Model& model, std::vector<int> units, int depth,
                    ScheduleFaults faults, const std::function<void(const std::string&)>& progress);

  bool empty() const { return units_.empty(); }
  int depth() const { return depth_; }
  uint64_t slot_bytes() const { return slot_bytes_; }
  uint64_t staging_bytes() const;   // device memory of the slots
  uint64_t packed_bytes() const { return host_.size(); }  // page-locked host memory
  double pack_seconds() const { return pack_s_; }
  const std::vector<int>& units() const { return units_; }
  // The slot the next Acquire hands out (for keys of recorded work).
  int next_slot() const { return static_cast<int>(cursor_ % depth_); }

  // The next streamed unit's view in its slot; the compute queue waits for
  // the slot's copy first. `slot` is what Release takes (-1: already released).
  const model::UnitView& Acquire(int* slot);
  // After the unit's last kernel: the slot may be refilled.
  void Release(int slot);

 private:
  void EnqueueUpload(uint64_t u);  // streamed unit u (counted over all steps) into slot u % depth

  backend::Device* d_ = nullptr;
  std::vector<int> units_;
  int depth_ = 0;
  uint64_t slot_bytes_ = 0;
  ScheduleFaults faults_;
  std::vector<backend::DeviceBuffer> slots_;
  std::vector<backend::Event> ready_, free_;
  std::vector<std::vector<model::UnitView>> views_;  // [unit][slot]
  std::vector<std::span<const uint8_t>> images_;     // each unit's packed image in host_
  backend::HostBuffer host_;
  uint64_t cursor_ = 0;  // streamed units computed so far, over all steps
  double pack_s_ = 0;
};

}  // namespace ferry::stream
