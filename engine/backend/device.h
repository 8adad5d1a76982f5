// The Device interface: what the forward pass needs from a backend. Memory
// comes from a fixed arena with a hard capacity, work runs on two queues
// (compute and copy) ordered by events with CUDA's semantics, and kernels
// have the same signatures on every backend. The cpu backend computes on
// host memory in place; sim puts CPU kernels behind a capped arena and a
// copy engine thread; cuda maps these one to one onto streams.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <vector>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/backend/device_spec.h"
#include "engine/model/config.h"
#include "engine/model/weights.h"

namespace ferry::backend {

enum class Queue { kCompute, kCopy };

// An event is an index into the device's event table (CreateEvent).
using Event = int;

// Where one token of a step writes and reads its sequence's KV cache.
struct TokenPos {
  int32_t seq = 0;
  int32_t pos = 0;
};

// One layer's KV cache on the device: [n_seq][n_ctx][kv_dim], f16 or f32.
struct KvLayer {
  void* k = nullptr;
  void* v = nullptr;
  bool f16 = true;
  int n_ctx = 0;
  int kv_dim = 0;
};

// One product of MatMulShared: y[t * y_stride + r] = dot(row r of *w, x_t).
struct MatMulOut {
  const model::Matrix* w = nullptr;
  float* y = nullptr;
  int64_t y_stride = 0;
};

struct AttentionShape {
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;
  float query_scale = 1.0f;
  float softcap = 0.0f;  // 0: off
  int window = 0;        // sliding window in positions; 0: full causal
};

// Rotary embedding: one inverse frequency per rotated pair, in `sets`
// tables of dims / 2 (host memory; a GPU backend keeps its own copy of all
// of them, set by BeginStep). A layer rotates with table `set`: models
// whose sliding layers have a rope base of their own (gemma3) have two.
struct RopeParams {
  const float* inv_freq = nullptr;  // (sets, dims / 2)
  int dims = 0;
  bool neox = false;                // pairs (i, i + dims/2) instead of (2i, 2i+1)
  int head_dim = 0;
  int sets = 1;
  int set = 0;
  const float* freqs() const { return inv_freq + static_cast<ptrdiff_t>(set) * (dims / 2); }
  RopeParams WithSet(int s) const {
    RopeParams r = *this;
    r.set = s;
    return r;
  }
};

// What the device did since it was created. copy_busy_s: time the copy
// engine spent moving bytes; compute_s: time in kernels; compute_wait_s:
// time the compute queue stood waiting on events of the copy queue.
struct DeviceStats {
  uint64_t bytes_to_device = 0;    // on the copy queue
  uint64_t copies = 0;
  double copy_busy_s = 0;
  double compute_s = 0;
  double compute_wait_s = 0;
  uint64_t replays = 0;            // recorded work replayed (CUDA graph launches)
};

struct AdoptedWeights;

class Device {
 public:
  virtual ~Device() = default;

  // "cpu (2 threads)", "sim: 8.00 GiB, 25.0 GB/s host-to-device, 10 us", ...
  virtual std::string Describe() const = 0;

  // --- memory ---
  // For a device whose memory is the host's (DeviceSpec::host_memory): the
  // matrices it will read in place, rewritten to read a layout of its own
  // where it has one (the cpu device groups rows for its kernels) and the
  // copies fit in the memory the system has available; the result holds
  // those copies. `copied(was)` is told of each matrix as
  // soon as its copy is made (the caller may then drop the original's pages,
  // so the two are not both resident for long). Default: read as they are.
  virtual absl::StatusOr<AdoptedWeights> AdoptInPlace(
      std::span<model::Matrix* const> matrices, const std::function<void(const model::Matrix& was)>& copied);
  virtual uint64_t capacity() const = 0;  // bytes the arena holds (after any context overhead)
  virtual uint64_t used() const = 0;
  virtual uint64_t peak() const = 0;
  // Fails with RESOURCE_EXHAUSTED, naming `what`, the request and what is
  // free, exactly where a GPU would run out of memory. 256-byte aligned.
  virtual absl::StatusOr<void*> Allocate(uint64_t bytes, absl::string_view what) = 0;
  virtual void Free(void* p) = 0;
  // Page-aligned host memory that copies read at full speed: allocated
  // page-locked by the driver on a GPU (cudaHostAlloc), plain anonymous
  // pages elsewhere. RESOURCE_EXHAUSTED, naming `what`, when the system will
  // not give it. Freed with FreeHost(p, bytes).
  virtual absl::StatusOr<void*> AllocateHost(uint64_t bytes, absl::string_view what) = 0;
  virtual void FreeHost(void* p, uint64_t bytes) = 0;
  // Makes host memory a source for asynchronous copies (page-locks it on a
  // GPU). The range stays registered until UnregisterHost.
  virtual absl::Status RegisterHost(const void* p, uint64_t bytes) = 0;
  virtual void UnregisterHost(const void* p) = 0;

  // --- queues and events (CUDA stream/event semantics) ---
  virtual absl::StatusOr<Event> CreateEvent() = 0;
  // Marks the point in `q` after everything enqueued so far.
  virtual void Record(Event e, Queue q) = 0;
  // `q` runs nothing enqueued after this call until the event's most recent
  // Record (at the time of this call) has completed. Waiting on an event
  // never recorded is a no-op, as in CUDA.
  virtual void Wait(Queue q, Event e) = 0;
  virtual bool Query(Event e) = 0;      // completed?
  virtual void Synchronize(Event e) = 0;  // the host waits
  virtual void SynchronizeAll() = 0;
  // Host-to-device copy on `q`; `src` must stay valid until it completes
  // (registered host memory for the copy queue).
  virtual void CopyToDevice(Queue q, void* dst, const void* src, uint64_t bytes) = 0;
  // Device-to-host copy on the compute queue; returns when it is done.
  virtual void CopyToHost(void* dst, const void* src, uint64_t bytes) = 0;
  // Debug aid: when on, a staging slot's bytes are overwritten with NaNs
  // (PoisonOnReuse) as the copy queue starts refilling it.
  virtual bool poison() const = 0;
  virtual void PoisonOnReuse(void* dst, uint64_t bytes) = 0;  // on the copy queue

  virtual DeviceStats stats() const = 0;
  // Its figures for the planner: configured (sim) or measured at start-up
  // (cuda). Default: the name and the arena's capacity.
  virtual DeviceSpec spec() const;
  // OK, or the fault that left the device unusable. A fault latches: once
  // set it stays (a CUDA context after an illegal address), and the
  // executor fails every step from then on. The cpu device never faults.
  virtual absl::Status health() const { return absl::OkStatus(); }

  // --- recorded work (CUDA graphs) ---
  // The step's per-token tables, set before its first kernel: positions,
  // the rows whose logits are wanted, the rope frequencies. Kernels given
  // the same spans later in the step read the device's copy, so work
  // recorded on one step replays on the next with the new values.
  virtual void BeginStep(std::span<const TokenPos> /*tokens*/, std::span<const int32_t> /*logit_rows*/,
                         const RopeParams& /*rope*/) {}
  // Runs `enqueue`, which puts kernels and nothing else (no copy, event or
  // wait) on the compute queue. The work under one `key` must be the same
  // kernels on the same buffers whenever the step has the same shape (its
  // token and logit-row counts): the cuda device records it into a CUDA
  // graph the first time and then replays the graph, one launch for many
  // kernels; the sim device checks that it is (a fault names the first
  // kernel that differs from the first run); the cpu device just runs it.
  virtual void RunRecorded(uint64_t /*key*/, const std::function<void()>& enqueue) { enqueue(); }

  // --- kernels: on the compute queue, all pointers in device memory ---
  // Sizes the kernels' own scratch once, for matrices of up to `max_rows`
  // rows of up to `max_width` values and steps of up to `max_tokens` tokens.
  // A GPU-like device takes backend::KernelScratchFor(...) from its memory
  // (scratch.h); kernel_scratch_bytes() says how much.
  virtual absl::Status ReserveKernelScratch(int64_t max_rows, int64_t max_width, int max_tokens) = 0;
  virtual uint64_t kernel_scratch_bytes() const { return 0; }
  // Gives the device memory of ReserveKernelScratch back (the executor's end).
  virtual void ReleaseKernelScratch() {}
  // Floats of attention scratch for `tokens` x `n_head` queries over n_ctx.
  virtual uint64_t AttentionScratchFloats(int tokens, int n_head, int n_ctx) const = 0;
  // y[t * y_stride + r] = dot(row r of w, x + t * x_stride), t < n_tokens.
  virtual void MatMul(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* y,
                      int64_t y_stride) = 0;
  // Products of matrices that read the same activations (q, k and v): one
  // pass over x where a device can (the cuda int8 matvec: one launch).
  // Default: a MatMul each.
  virtual void MatMulShared(std::span<const MatMulOut> outs, const float* x, int64_t x_stride, int n_tokens);
  // gate = act(w_gate x) * (w_up x), `stride` floats a token, where a device
  // may compute both products and the gating in one pass (then `up` is not
  // written). Default: two MatMuls into gate and up, then GatedActivation.
  virtual void GatedMatMul(const model::Matrix& w_gate, const model::Matrix& w_up, const float* x, int64_t x_stride,
                           int n_tokens, float* gate, float* up, int64_t stride, model::Activation act);
  // acc += w x for n_tokens rows of `stride` floats (the residual add),
  // where a device may add in the product's own launch. Default: MatMul
  // into `scratch` (same shape), then Add.
  virtual void MatMulAdd(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* scratch,
                         float* acc, int64_t stride);
  // Rope of q (n_head heads a row) and k (n_head_kv) in one pass where a
  // device can. Default: a Rope each.
  virtual void RopeQK(float* q, int n_head, float* k, int n_head_kv, int n_rows, std::span<const TokenPos> tokens,
                      const RopeParams& rope);
  // out[r] = x[r] / rms(x[r]) * weight for n_rows rows of `width` (in place allowed).
  virtual void RmsNorm(const float* x, int n_rows, int64_t width, const float* weight, float eps, float* out) = 0;
  // RmsNorm whose output the next op reads as the input of a product with
  // `next` (MatMul, MatMulShared or GatedMatMul, `next` the first matrix):
  // a device may prepare that product's input in the same pass (the cuda
  // device quantizes it when the product takes int8 input). Default: RmsNorm.
  virtual void RmsNormBefore(const model::Matrix& next, const float* x, int n_rows, int64_t width,
                             const float* weight, float eps, float* out) {
    (void)next;
    RmsNorm(x, n_rows, width, weight, eps, out);
  }
  virtual void Add(float* x, const float* y, int64_t n) = 0;  // x += y
  virtual void AddRowBias(float* x, int n_rows, int64_t width, const float* bias) = 0;
  // Rotates `n_heads` heads of each of n_rows rows (row stride n_heads * head_dim) by its token's position.
  virtual void Rope(float* x, int n_rows, int n_heads, std::span<const TokenPos> tokens, const RopeParams& rope) = 0;
  virtual void StoreKv(const KvLayer& kv, const float* k, const float* v, std::span<const TokenPos> tokens) = 0;
  // Causal attention of each token over its sequence's cached positions
  // 0..pos (the last `window` of them when window > 0).
  virtual void Attention(const float* q, const KvLayer& kv, std::span<const TokenPos> tokens,
                         const AttentionShape& shape, float* scratch, float* out) = 0;
  // gate = act(gate) * up over n values.
  virtual void GatedActivation(float* gate, const float* up, int64_t n, model::Activation act) = 0;
  virtual void SoftCap(float* x, int64_t n, float cap) = 0;  // x = cap * tanh(x / cap)
  // dst[i] = src[rows[i]] for rows of `width` floats.
  virtual void GatherRows(const float* src, std::span<const int32_t> rows, int64_t width, float* dst) = 0;
};

// Host memory on whole pages of its own, for buffers a backend registers
// (page-locks): CUDA cannot register a page twice, so two registered
// buffers must never share one.
template <typename T>
struct PageAllocator {
  using value_type = T;
  static constexpr size_t kPage = 4096;
  PageAllocator() = default;
  template <typename U>
  PageAllocator(const PageAllocator<U>&) {}
  T* allocate(size_t n) {
    const size_t bytes = (n * sizeof(T) + kPage - 1) / kPage * kPage;
    void* p = std::aligned_alloc(kPage, bytes == 0 ? kPage : bytes);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const PageAllocator<U>&) const { return true; }
};
template <typename T>
using PageVector = std::vector<T, PageAllocator<T>>;

// MemAvailable of /proc/meminfo in bytes (what the system can give without
// swapping, the page cache's reclaimable pages included); 0 when unknown.
uint64_t AvailableHostMemory();

// Opens "cpu", "sim[:key=value,...]" or "cuda[:N]". `threads` sizes the CPU
// kernels' pool (0: one per hardware thread).
absl::StatusOr<std::unique_ptr<Device>> OpenDevice(absl::string_view spec, int threads);

// Memory from a Device, given back when the owner goes: device memory
// (Allocate/Free) or, with kHost, host memory (AllocateHost/FreeHost).
template <bool kHost>
class OwnedBuffer {
 public:
  OwnedBuffer() = default;
  OwnedBuffer(OwnedBuffer&& o) noexcept { *this = std::move(o); }
  OwnedBuffer& operator=(OwnedBuffer&& o) noexcept {
    Reset();
    device_ = o.device_, p_ = o.p_, bytes_ = o.bytes_;
    o.device_ = nullptr, o.p_ = nullptr, o.bytes_ = 0;
    return *this;
  }
  ~OwnedBuffer() { Reset(); }
  static absl::StatusOr<OwnedBuffer> Make(Device& device, uint64_t bytes, absl::string_view what) {
    absl::StatusOr<void*> p = kHost ? device.AllocateHost(bytes, what) : device.Allocate(bytes, what);
    if (!p.ok()) return p.status();
    OwnedBuffer b;
    b.device_ = &device, b.p_ = *p, b.bytes_ = bytes;
    return b;
  }
  uint8_t* bytes() const { return static_cast<uint8_t*>(p_); }
  float* floats() const { return static_cast<float*>(p_); }
  uint64_t size() const { return bytes_; }

 private:
  void Reset() {
    if (device_ != nullptr && p_ != nullptr) {
      if constexpr (kHost) {
        device_->FreeHost(p_, bytes_);
      } else {
        device_->Free(p_);
      }
    }
    device_ = nullptr, p_ = nullptr, bytes_ = 0;
  }
  Device* device_ = nullptr;
  void* p_ = nullptr;
  uint64_t bytes_ = 0;
};
using DeviceBuffer = OwnedBuffer<false>;
using HostBuffer = OwnedBuffer<true>;

// What Device::AdoptInPlace made: copies of matrices in the device's own
// layout (0 bytes: none), or why none were made.
struct AdoptedWeights {
  std::vector<DeviceBuffer> buffers;
  uint64_t bytes = 0;       // the copies' bytes
  uint64_t needed = 0;      // what the copies would take (0: the device has no layout of its own for these)
  std::string Describe() const;  // " (1.2 GiB of matrices regrouped for the kernels)", "" or why not
};

}  // namespace ferry::backend
