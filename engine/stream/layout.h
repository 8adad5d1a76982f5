// How a unit's weights sit in device memory (the planner's rule,
// plan::UnitDeviceBytes): its matrices as one span of the file when they lie
// together in it, else each 256-byte aligned; then its vectors as f32, each
// 256-byte aligned. One image serves a resident unit's buffer, a staging
// slot and the packed page-locked copy a streamed unit crosses from.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "engine/backend/device.h"
#include "engine/model/unit_tensors.h"

namespace ferry::stream {

// A copy that fills part of an image: `bytes` from `src` at `offset`.
struct Piece {
  const void* src;
  uint64_t bytes;
  uint64_t offset;
};

struct UnitImage {
  model::UnitView view;       // where the kernels read the tensors, from `base`
  std::vector<Piece> pieces;  // the copies that fill the image
  uint64_t bytes = 0;
};

// Unit `unit` (a layer, or n_layer: the head) laid out from `base`.
UnitImage LayOut(const model::Model& model, int unit, uintptr_t base);
inline uint64_t UnitBytes(const model::Model& model, int unit) { return LayOut(model, unit, 0).bytes; }

// The unit's tensors where they are: matrices in the mapped file, vectors
// in the loader's f32 copies (a device that computes on host memory).
model::UnitView InPlace(const model::Model& model, int unit);

// The matrices of a view, for code that treats them alike.
std::vector<model::Matrix*> MatricesOf(model::UnitView& view);

// Host-to-device copies of resident weights through two page-locked
// staging buffers: the host fills one while the other crosses, so uploads
// run at the pinned rate whatever the source (a file mapping is pageable
// memory, which a GPU driver would bounce through its own small buffers).
class StagedUpload {
 public:
  static constexpr uint64_t kBufferBytes = uint64_t{64} << 20;

  absl::Status Init(backend::Device& d, uint64_t total);
  void Add(uint8_t* dst, const void* src, uint64_t bytes);
  // Returns when every copy has landed.
  void Finish();
  // Also on an early return (a failed allocation): no copy may still read
  // the buffers when they go.
  ~StagedUpload() { WaitPending(); }

 private:
  struct Copy {
    uint8_t* dst;
    uint64_t offset, bytes;
  };
  void WaitPending();
  void Flush();
  backend::Device* d_ = nullptr;
  uint64_t size_ = 0, fill_ = 0;
  int cur_ = 0;
  backend::HostBuffer buffer_[2];
  backend::Event done_[2] = {0, 0};
  bool pending_[2] = {false, false};
  std::vector<Copy> copies_;
};

}  // namespace ferry::stream
