#include "engine/stream/ring.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/backend/arena.h"
#include "engine/status.h"
#include "engine/units.h"

namespace ferry::stream {

using backend::AlignDevice;
using backend::Queue;

StagingRing::~StagingRing() {
  // Copies in flight read host_ and write the slots.
  if (d_ != nullptr) d_->SynchronizeAll();
}

absl::Status StagingRing::Init(backend::Device& d, const model::Model& model, std::vector<int> units, int depth,
                               ScheduleFaults faults, const std::function<void(const std::string&)>& progress) {
  d_ = &d;
  units_ = std::move(units);
  faults_ = faults;
  const int n = static_cast<int>(units_.size());
  depth_ = std::min(depth, n);
  if (n == 0) return absl::OkStatus();
  if (depth_ <= 0) return absl::InvalidArgumentError("the staging ring needs at least one slot");
  for (int unit : units_) slot_bytes_ = std::max(slot_bytes_, UnitBytes(model, unit));
  for (int s = 0; s < depth_; ++s) {
    backend::DeviceBuffer buf;
    FERRY_ASSIGN_OR_RETURN(buf, backend::DeviceBuffer::Make(d, slot_bytes_, absl::StrCat("staging slot ", s)));
    slots_.push_back(std::move(buf));
    backend::Event ready = 0, free = 0;
    FERRY_ASSIGN_OR_RETURN(ready, d.CreateEvent());
    FERRY_ASSIGN_OR_RETURN(free, d.CreateEvent());
    ready_.push_back(ready);
    free_.push_back(free);
  }

  // Why copies into the device's own page-locked allocation and not
  // cudaHostRegister on the mapped file: registering a file mapping needs
  // read-only registration support and its cost depends on the system,
  // while the driver's own allocation is the documented fast path; the copy
  // costs one pass over the streamed bytes at load.
  const auto start = std::chrono::steady_clock::now();
  std::vector<uint64_t> offset(n), bytes(n);
  uint64_t packed = 0;
  for (int i = 0; i < n; ++i) {
    bytes[i] = UnitBytes(model, units_[i]);
    offset[i] = packed;
    packed += AlignDevice(bytes[i]);
  }
  if (progress) progress(absl::StrCat("copying ", HumanBytes(packed), " of streamed weights to page-locked host memory"));
  FERRY_ASSIGN_OR_RETURN(host_, backend::HostBuffer::Make(d, packed, "the streamed layers' weights"));
  const std::span<const uint8_t> file = model.file->bytes();
  views_.assign(n, std::vector<model::UnitView>(depth_));
  for (int i = 0; i < n; ++i) {
    for (int s = 0; s < depth_; ++s) {
      views_[i][s] = LayOut(model, units_[i], reinterpret_cast<uintptr_t>(slots_[s].bytes())).view;
    }
    uint8_t* image = host_.bytes() + offset[i];
    for (const Piece& piece : LayOut(model, units_[i], 0).pieces) {
      std::memcpy(image + piece.offset, piece.src, piece.bytes);
      const auto* src = static_cast<const uint8_t*>(piece.src);
      if (src >= file.data() && src < file.data() + file.size()) model.file->DropPages(src, piece.bytes);
    }
    images_.emplace_back(image, bytes[i]);
  }
  pack_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  for (int u = 0; u < depth_; ++u) EnqueueUpload(u);
  return absl::OkStatus();
}

uint64_t StagingRing::staging_bytes() const { return static_cast<uint64_t>(depth_) * AlignDevice(slot_bytes_); }

void StagingRing::EnqueueUpload(uint64_t u) {
  const int slot = static_cast<int>(u % depth_);
  const std::span<const uint8_t> image = images_[u % units_.size()];
  uint8_t* base = slots_[slot].bytes();
  // The slot is reused only after the unit that read it has run.
  d_->Wait(Queue::kCopy, free_[slot]);
  d_->PoisonOnReuse(base, slot_bytes_);
  d_->CopyToDevice(Queue::kCopy, base, image.data(), image.size());
  d_->Record(ready_[slot], Queue::kCopy);
}

const model::UnitView& StagingRing::Acquire(int* slot) {
  *slot = static_cast<int>(cursor_ % depth_);
  const model::UnitView& view = views_[cursor_ % units_.size()][*slot];
  if (!faults_.skip_ready_wait) d_->Wait(Queue::kCompute, ready_[*slot]);
  if (faults_.release_slot_early) {
    Release(*slot);
    *slot = -1;
  }
  return view;
}

void StagingRing::Release(int slot) {
  if (slot < 0) return;
  // After the unit's last kernel: the copy queue may refill the slot with
  // the unit `depth` ahead (in this step or, wrapping, the next).
  d_->Record(free_[slot], Queue::kCompute);
  EnqueueUpload(cursor_ + depth_);
  ++cursor_;
}

}  // namespace ferry::stream
