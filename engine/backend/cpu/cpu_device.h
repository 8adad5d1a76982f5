// The cpu backend behind the Device interface: kernels on a thread pool,
// "device memory" is host memory (no cap), the queues run synchronously on
// the calling thread, so every event has completed by the time it is
// recorded. The sim backend derives from it and replaces memory and queues.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>

#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/thread_pool.h"
#include "engine/backend/device.h"

namespace ferry::backend {

// Commits the pages under [p, p + bytes) now, as a GPU's allocation is,
// so that no kernel meets a page fault (a KV cache's pages would otherwise
// fault one by one as decode steps reach new positions). Best effort: an
// older kernel lacks the advice.
void CommitPages(void* p, uint64_t bytes);

class CpuDevice : public Device {
 public:
  explicit CpuDevice(int threads);
  ~CpuDevice() override;

  std::string Describe() const override;
  DeviceSpec spec() const override;
  int threads() const { return pool_.size(); }

  // Matrices of the types with a grouped layout (cpu/qdot.h) and 8 rows or
  // more are copied into it (the mapping is read-only and may be shared),
  // when the copies fit in the memory the system has available (the file's
  // pages count as available: they can be dropped); otherwise the kernels
  // read the file as it is, which also works for a model larger than RAM.
  absl::StatusOr<AdoptedWeights> AdoptInPlace(
      std::span<model::Matrix* const> matrices,
      const std::function<void(const model::Matrix& was)>& copied) override;
  uint64_t capacity() const override;
  uint64_t used() const override { return used_; }
  uint64_t peak() const override { return peak_; }
  absl::StatusOr<void*> Allocate(uint64_t bytes, absl::string_view what) override;
  void Free(void* p) override;
  absl::StatusOr<void*> AllocateHost(uint64_t bytes, absl::string_view what) override;
  void FreeHost(void* p, uint64_t bytes) override;
  absl::Status RegisterHost(const void*, uint64_t) override { return absl::OkStatus(); }
  void UnregisterHost(const void*) override {}

  absl::StatusOr<Event> CreateEvent() override { return next_event_++; }
  void Record(Event, Queue) override {}
  void Wait(Queue, Event) override {}
  bool Query(Event) override { return true; }
  void Synchronize(Event) override {}
  void SynchronizeAll() override {}
  void CopyToDevice(Queue q, void* dst, const void* src, uint64_t bytes) override;
  void CopyToHost(void* dst, const void* src, uint64_t bytes) override;
  bool poison() const override { return false; }
  void PoisonOnReuse(void*, uint64_t) override {}
  DeviceStats stats() const override;

  absl::Status ReserveKernelScratch(int64_t max_rows, int64_t max_width, int max_tokens) override;
  uint64_t AttentionScratchFloats(int tokens, int n_head, int n_ctx) const override;
  void MatMul(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* y,
              int64_t y_stride) override;
  void RmsNorm(const float* x, int n_rows, int64_t width, const float* weight, float eps, float* out) override;
  void Add(float* x, const float* y, int64_t n) override;
  void AddRowBias(float* x, int n_rows, int64_t width, const float* bias) override;
  void Rope(float* x, int n_rows, int n_heads, std::span<const TokenPos> tokens, const RopeParams& rope) override;
  void StoreKv(const KvLayer& kv, const float* k, const float* v, std::span<const TokenPos> tokens) override;
  void Attention(const float* q, const KvLayer& kv, std::span<const TokenPos> tokens, const AttentionShape& shape,
                 float* scratch, float* out) override;
  void GatedActivation(float* gate, const float* up, int64_t n, model::Activation act) override;
  void SoftCap(float* x, int64_t n, float cap) override;
  void GatherRows(const float* src, std::span<const int32_t> rows, int64_t width, float* dst) override;

 protected:
  // Attention scratch: one row of n_ctx scores per query (a GPU's layout,
  // what the planner counts) or one per thread (the cpu backend's).
  virtual bool scratch_per_query() const { return false; }
  // Adds the wall time of one kernel to compute_s.
  class KernelTimer {
   public:
    explicit KernelTimer(CpuDevice* d) : d_(d), start_(std::chrono::steady_clock::now()) {}
    ~KernelTimer() {
      d_->compute_ns_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                    std::chrono::steady_clock::now() - start_).count(),
                                std::memory_order_relaxed);
    }

   private:
    CpuDevice* d_;
    std::chrono::steady_clock::time_point start_;
  };
  std::atomic<int64_t> compute_ns_{0};
  cpu::ThreadPool pool_;

 private:
  // `m` in the grouped layout, written to `dst` (GroupedBytes(m) bytes).
  model::Matrix Grouped(const model::Matrix& m, uint8_t* dst);
  std::unique_ptr<cpu::MatMulScratch> scratch_;
  std::mutex mu_;
  std::unordered_map<void*, uint64_t> sizes_;
  uint64_t used_ = 0, peak_ = 0;
  Event next_event_ = 0;
};

}  // namespace ferry::backend
