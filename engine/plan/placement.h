// Where each unit of a step lives: the layers 0..n_layer-1 and the output
// head (unit n_layer, computed last). One placement, made once (by the
// planner from the flags and the device, or by a test) and taken as is by
// the executor; the rules that spread streamed and CPU layers over the step
// and clamp the staging ring are here and nowhere else.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ferry::plan {

enum class Home {
  kResident,  // in device memory, uploaded once
  kStreamed,  // in page-locked host memory, copied to a staging slot every step
  kCpu,       // in host memory, computed there by the CPU backend
};
const char* HomeName(Home home);

class Placement {
 public:
  // Everything resident (on the cpu device: everything computed in place).
  Placement() = default;
  // `resident_layers` of the layers resident (-1: all), spread by
  // LayerResident, the head resident unless !head_resident (then no layer
  // may be); the other units streamed through `ring_depth` slots.
  Placement(bool head_resident, int resident_layers, int ring_depth);
  // A home for every unit: n_layer layers, then the head.
  Placement(std::vector<Home> homes, int ring_depth);

  // The placement for a model of `n_layer` layers: every unit's home, the
  // ring clamped to [1, streamed units] (0 when nothing streams). Refused:
  // more resident layers than the model has, a streamed head with resident
  // layers, homes for another layer count, a ring of no slots.
  absl::StatusOr<Placement> Resolve(int n_layer) const;

  // Of a resolved placement.
  int n_layer() const { return static_cast<int>(homes_.size()) - 1; }
  Home home(int unit) const { return homes_[unit]; }
  Home head() const { return homes_.back(); }
  const std::vector<Home>& homes() const { return homes_; }
  int ring_depth() const { return ring_depth_; }
  int count(Home home) const;         // units (the head included) with this home
  int layers(Home home) const;        // layers with this home
  // "layers 7, 15, 23 streamed; 3, 11 on the CPU" (the first few of each).
  std::string Describe() const;

 private:
  bool legacy_ = true;     // built from (head_resident, resident_layers)
  bool head_resident_ = true;
  int resident_layers_ = -1;
  int requested_ring_ = 2;
  std::vector<Home> homes_;
  int ring_depth_ = 0;
};

// Which layers stay on the device when `resident_layers` of `n_layer` do:
// the streamed ones are spread evenly over the step (Bresenham: layer l is
// streamed when floor((l+1) S / n) > floor(l S / n), S = n - resident), so
// the copy queue refills a slot while the resident layers between two
// streamed ones compute, instead of idling through a resident block and
// then holding compute up at a streamed tail. The planner, the executor and
// the speed model all use this one rule.
bool LayerResident(int layer, int n_layer, int resident_layers);

// The same rule over a subset: which `k` of `n` items are picked, spread evenly.
bool Spread(int item, int n, int k);

}  // namespace ferry::plan
