#include "engine/stream/layout.h"

#include <algorithm>
#include <cstring>

#include "engine/backend/arena.h"
#include "engine/plan/planner.h"
#include "engine/status.h"

namespace ferry::stream {

using backend::AlignDevice;

UnitImage LayOut(const model::Model& model, int unit, uintptr_t base) {
  const model::ModelConfig& c = model.config;
  const model::UnitWeights& w = model.weights.unit(unit);
  std::vector<const model::UnitTensor*> mats, vecs;
  for (const model::UnitTensor* t : model::TensorsOf(c, unit)) (t->is_matrix() ? mats : vecs).push_back(t);

  const uint8_t* file = model.file->bytes().data();
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const model::UnitTensor* t : mats) {
    const model::Matrix& m = w.*(t->matrix);
    ranges.push_back({static_cast<uint64_t>(m.data - file), m.bytes});
  }
  const plan::UnitSpan span = plan::SpanOf(ranges);

  UnitImage img;
  uint64_t offset = 0;
  if (span.contiguous) img.pieces.push_back({file + span.begin, span.bytes, 0});
  for (size_t i = 0; i < mats.size(); ++i) {
    const model::Matrix& m = w.*(mats[i]->matrix);
    uint64_t at = 0;
    if (span.contiguous) {
      at = ranges[i].first - span.begin;
    } else {
      img.pieces.push_back({m.data, m.bytes, offset});
      at = offset;
      offset += AlignDevice(m.bytes);
    }
    model::Matrix d = m;
    d.data = reinterpret_cast<const uint8_t*>(base + at);
    img.view.*(mats[i]->view_matrix) = d;
  }
  if (span.contiguous) offset = AlignDevice(span.bytes);
  for (const model::UnitTensor* t : vecs) {
    const std::vector<float>& v = w.*(t->vector);
    const uint64_t bytes = v.size() * sizeof(float);
    img.pieces.push_back({v.data(), bytes, offset});
    img.view.*(t->view_vector) = reinterpret_cast<const float*>(base + offset);
    offset += AlignDevice(bytes);
  }
  img.bytes = offset;
  return img;
}

model::UnitView InPlace(const model::Model& model, int unit) {
  const model::UnitWeights& w = model.weights.unit(unit);
  model::UnitView v;
  for (const model::UnitTensor* t : model::TensorsOf(model.config, unit)) {
    if (t->is_matrix()) {
      v.*(t->view_matrix) = w.*(t->matrix);
    } else {
      v.*(t->view_vector) = (w.*(t->vector)).data();
    }
  }
  return v;
}

std::vector<model::Matrix*> MatricesOf(model::UnitView& view) {
  std::vector<model::Matrix*> out;
  for (const model::UnitTensor& t : model::UnitTensors()) {
    if (t.is_matrix() && (view.*(t.view_matrix)).present()) out.push_back(&(view.*(t.view_matrix)));
  }
  return out;
}

absl::Status StagedUpload::Init(backend::Device& d, uint64_t total) {
  d_ = &d;
  size_ = std::min(kBufferBytes, std::max<uint64_t>(total, 1));
  for (int b = 0; b < 2; ++b) {
    FERRY_ASSIGN_OR_RETURN(buffer_[b], backend::HostBuffer::Make(d, size_, "upload staging"));
    FERRY_ASSIGN_OR_RETURN(done_[b], d.CreateEvent());
  }
  return absl::OkStatus();
}

void StagedUpload::Add(uint8_t* dst, const void* src, uint64_t bytes) {
  const auto* from = static_cast<const uint8_t*>(src);
  while (bytes > 0) {
    const uint64_t take = std::min(bytes, size_ - fill_);
    std::memcpy(buffer_[cur_].bytes() + fill_, from, take);
    copies_.push_back({dst, fill_, take});
    fill_ += take, dst += take, from += take, bytes -= take;
    if (fill_ == size_) Flush();
  }
}

void StagedUpload::Finish() {
  if (fill_ > 0) Flush();
  WaitPending();
}

void StagedUpload::WaitPending() {
  for (int b = 0; b < 2; ++b) {
    if (pending_[b]) d_->Synchronize(done_[b]);
    pending_[b] = false;
  }
}

void StagedUpload::Flush() {
  for (const Copy& c : copies_) {
    d_->CopyToDevice(backend::Queue::kCompute, c.dst, buffer_[cur_].bytes() + c.offset, c.bytes);
  }
  d_->Record(done_[cur_], backend::Queue::kCompute);
  pending_[cur_] = true;
  copies_.clear();
  fill_ = 0;
  cur_ ^= 1;
  if (pending_[cur_]) d_->Synchronize(done_[cur_]);  // its last copies read it
}

}  // namespace ferry::stream
