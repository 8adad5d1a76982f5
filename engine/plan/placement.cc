#include "engine/plan/placement.h"

#include <algorithm>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ferry::plan {

const char* HomeName(Home home) {
  switch (home) {
    case Home::kResident: return "resident";
    case Home::kStreamed: return "streamed";
    case Home::kCpu: return "cpu";
  }
  return "?";
}

bool Spread(int item, int n, int k) {
  if (k >= n) return true;
  if (k <= 0) return false;
  return (static_cast<int64_t>(item) + 1) * k / n > static_cast<int64_t>(item) * k / n;
}

bool LayerResident(int layer, int n_layer, int resident_layers) {
  if (resident_layers >= n_layer) return true;
  if (resident_layers <= 0) return false;
  return !Spread(layer, n_layer, n_layer - resident_layers);
}

Placement::Placement(bool head_resident, int resident_layers, int ring_depth)
    : head_resident_(head_resident), resident_layers_(resident_layers), requested_ring_(ring_depth) {}

Placement::Placement(std::vector<Home> homes, int ring_depth)
    : legacy_(false), requested_ring_(ring_depth), homes_(std::move(homes)) {}

absl::StatusOr<Placement> Placement::Resolve(int n_layer) const {
  if (requested_ring_ <= 0) return absl::InvalidArgumentError("the staging ring needs at least one slot");
  Placement p = *this;
  if (legacy_) {
    if (resident_layers_ > n_layer) {
      return absl::InvalidArgumentError(
          absl::StrCat(resident_layers_, " resident layers: the model has ", n_layer));
    }
    if (!head_resident_ && resident_layers_ != 0) {
      return absl::InvalidArgumentError(
          "the output head becomes resident before any layer: a streamed head needs 0 resident layers");
    }
    const int resident = resident_layers_ < 0 ? n_layer : resident_layers_;
    p.homes_.assign(n_layer + 1, Home::kStreamed);
    for (int l = 0; l < n_layer; ++l) {
      if (LayerResident(l, n_layer, resident)) p.homes_[l] = Home::kResident;
    }
    p.homes_[n_layer] = head_resident_ ? Home::kResident : Home::kStreamed;
  } else if (static_cast<int>(homes_.size()) != n_layer + 1) {
    return absl::InvalidArgumentError(absl::StrCat("a placement of ", homes_.size(), " units for a model of ", n_layer,
                                                   " layers and the head"));
  }
  p.legacy_ = false;
  p.ring_depth_ = std::min(requested_ring_, p.count(Home::kStreamed));
  return p;
}

int Placement::count(Home home) const { return static_cast<int>(std::count(homes_.begin(), homes_.end(), home)); }

int Placement::layers(Home home) const { return count(home) - (homes_.empty() || head() != home ? 0 : 1); }

std::string Placement::Describe() const {
  std::vector<std::string> parts;
  for (Home h : {Home::kStreamed, Home::kCpu}) {
    std::vector<std::string> names;
    for (int l = 0; l < n_layer(); ++l) {
      if (homes_[l] == h) names.push_back(absl::StrCat(l));
    }
    if (names.empty()) continue;
    if (names.size() > 12) names.resize(12), names.push_back("...");
    parts.push_back(absl::StrCat(absl::StrJoin(names, ", "), h == Home::kCpu ? " on the CPU" : " streamed"));
  }
  return parts.empty() ? std::string() : absl::StrCat("layers ", absl::StrJoin(parts, "; layers "));
}

}  // namespace ferry::plan
