// The sim backend: the cpu kernels behind the full Device interface, with
// what makes a GPU hard to schedule for. "Device memory" is an arena with a
// hard cap (an allocation past it fails like cudaMalloc); the copy queue is
// its own thread whose transfers take latency + bytes / bandwidth; events
// order the two queues as CUDA events order streams. The compute queue runs
// on the calling thread, so a host that enqueues compute is the compute
// engine: a Wait on the compute queue blocks the caller until the copy
// engine gets there, which is exactly the stall a GPU would have.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "engine/backend/arena.h"
#include "engine/backend/host_ranges.h"
#include "engine/backend/cpu/cpu_device.h"

namespace ferry::backend {

struct SimOptions {
  std::string profile = "rtx4060-8g";  // defaults for the fields below
  uint64_t memory_bytes = 0;           // the card's memory
  uint64_t overhead_bytes = 0;         // taken at start-up, like a CUDA context
  double h2d_gbps = 0;                 // copy engine bandwidth, GB/s (1e9 bytes)
  double latency_us = 0;               // per copy
  bool poison = false;                 // NaN-fill staging slots as they are refilled
  int64_t fault_after_copies = -1;     // latch a device fault after this many copies on the copy queue (tests)
};

// "mem=8GiB,h2d=25GB/s,lat=10us,overhead=400MiB,profile=rtx4090-24g,poison=1,fault=100"
// (every key optional; the profile gives the defaults).
absl::StatusOr<SimOptions> ParseSimOptions(absl::string_view spec);

class SimDevice : public CpuDevice {
 public:
  static absl::StatusOr<std::unique_ptr<SimDevice>> Create(const SimOptions& options, int threads);
  ~SimDevice() override;

  const SimOptions& options() const { return options_; }
  std::string Describe() const override;

  uint64_t capacity() const override { return arena_.capacity(); }
  uint64_t used() const override;
  uint64_t peak() const override;
  absl::StatusOr<void*> Allocate(uint64_t bytes, absl::string_view what) override;
  void Free(void* p) override;
  // Host memory the copy queue may read, as on a GPU: from AllocateHost or
  // registered. A copy-queue copy from anything else latches a fault (a GPU
  // would make the host wait for such a copy, breaking the overlap).
  absl::StatusOr<void*> AllocateHost(uint64_t bytes, absl::string_view what) override;
  void FreeHost(void* p, uint64_t bytes) override;
  absl::Status RegisterHost(const void* p, uint64_t bytes) override;
  void UnregisterHost(const void* p) override;
  // Bytes of host memory allocated page-locked or registered now.
  uint64_t page_locked_bytes() const;

  absl::StatusOr<Event> CreateEvent() override;
  void Record(Event e, Queue q) override;
  void Wait(Queue q, Event e) override;
  bool Query(Event e) override;
  void Synchronize(Event e) override;
  void SynchronizeAll() override;
  void CopyToDevice(Queue q, void* dst, const void* src, uint64_t bytes) override;
  bool poison() const override { return options_.poison; }
  void PoisonOnReuse(void* dst, uint64_t bytes) override;
  DeviceStats stats() const override;
  DeviceSpec spec() const override;
  absl::Status health() const override;
  // The cpu kernels' host scratch, plus the device bytes a GPU's kernels
  // would take (backend/scratch.h), so memory runs out where it would on one.
  absl::Status ReserveKernelScratch(int64_t max_rows, int64_t max_width, int max_tokens) override;
  uint64_t kernel_scratch_bytes() const override { return gpu_scratch_bytes_; }
  void ReleaseKernelScratch() override;

  // Recorded work, checked: the first run under a key (and step shape)
  // leaves a trace of its kernels and their buffers and sizes; every later
  // run must leave the same trace, else a fault names the first kernel
  // that differs. So CI catches what would make a CUDA graph replay the
  // wrong work. A copy, wait or record inside recorded work faults too.
  void BeginStep(std::span<const TokenPos> tokens, std::span<const int32_t> logit_rows,
                 const RopeParams& rope) override;
  void RunRecorded(uint64_t key, const std::function<void()>& enqueue) override;
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
  bool scratch_per_query() const override { return true; }

 private:
  SimDevice(const SimOptions& options, int threads, uint8_t* base);
  struct Op {
    enum Kind { kCopy, kRecord, kWait, kPoison } kind;
    void* dst = nullptr;
    const void* src = nullptr;
    uint64_t bytes = 0;
    Event event = 0;
    uint64_t generation = 0;
  };
  void Push(const Op& op);
  void CopyEngine();
  void WaitFor(Event e, uint64_t generation);  // blocks until the event reaches it
  void Trace(std::string kernel);              // inside recorded work: one kernel, as a replay would see it
  void NotInRecorded(const char* what);        // a copy, wait or record: faults inside recorded work
  void Latch(absl::Status fault);

  const SimOptions options_;
  uint8_t* const base_;
  mutable std::mutex mu_;  // everything below
  std::condition_variable cv_;
  Arena arena_;
  std::deque<Op> ops_;
  bool engine_busy_ = false;
  bool stop_ = false;
  // Per event: the generation last recorded (host side, under mu_) and the
  // one completed. Completion is also read without the lock: the compute
  // side polls it (see Wait).
  static constexpr int kMaxEvents = 4096;
  int n_events_ = 0;
  std::vector<uint64_t> recorded_ = std::vector<uint64_t>(kMaxEvents);
  std::unique_ptr<std::atomic<uint64_t>[]> completed_{new std::atomic<uint64_t>[kMaxEvents]()};
  DeviceStats copy_stats_;
  double wait_s_ = 0;
  int64_t copies_enqueued_ = 0;
  absl::Status fault_;  // latched
  HostRanges<> page_locked_;  // host ranges copy-queue copies may read
  // Recorded work (the compute queue's thread only): the trace being
  // written, the first trace under each (key, tokens, logit rows).
  std::vector<std::string>* trace_ = nullptr;
  std::map<std::tuple<uint64_t, size_t, size_t>, std::vector<std::string>> recordings_;
  size_t step_tokens_ = 0, step_rows_ = 0;
  void* gpu_scratch_ = nullptr;
  uint64_t gpu_scratch_bytes_ = 0;
  std::thread engine_;
};

}  // namespace ferry::backend
