#include "engine/backend/cuda/cuda_device.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/backend/cuda/attention.cuh"
#include "engine/backend/cuda/check.h"
#include "engine/backend/cuda/elementwise.cuh"
#include "engine/backend/cuda/matmul.cuh"
#include "engine/backend/cuda/matvec_int8.cuh"
#include "engine/backend/scratch.h"
#include "engine/units.h"

namespace ferry::backend {

namespace cuda {
std::string DescribeCudaError(cudaError_t e) { return absl::StrCat(cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"); }
std::string ErrorText(absl::string_view what, cudaError_t e) { return absl::StrCat(what, ": ", DescribeCudaError(e)); }
absl::Status ErrorStatus(absl::StatusCode code, absl::string_view what, cudaError_t e, absl::string_view more) {
  return absl::Status(code, absl::StrCat(ErrorText(what, e), more));
}
}  // namespace cuda

namespace {

// Whether [a, a + a_len) and [b, b + b_len) share a float.
bool Overlap(const float* a, int64_t a_len, const float* b, int64_t b_len) { return a < b + b_len && b < a + a_len; }

// One matrix of an int8 launch, writing y (rows ys apart).
cuda::Int8Part PartOf(const model::Matrix& w, float* y, int64_t ys) {
  return {w.data, w.rows, static_cast<int64_t>(w.row_bytes()), y, ys};
}

// Left free for what the driver allocates after start-up: lazily loaded
// kernel modules, launch resources.
constexpr uint64_t kDriverReserve = uint64_t{256} << 20;

using cuda::BlasStatusName;

}  // namespace

absl::StatusOr<std::unique_ptr<CudaDevice>> CudaDevice::Create(const CudaOptions& options) {
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess) {
    return cuda::ErrorStatus(absl::StatusCode::kFailedPrecondition, "no CUDA device", e);
  }
  if (count == 0) return absl::FailedPreconditionError("no CUDA device: the driver reports none");
  if (options.index >= count) {
    return absl::InvalidArgumentError(
        absl::StrCat("cuda:", options.index, ": this machine has ", count, " CUDA device(s), numbered from 0"));
  }
  std::unique_ptr<CudaDevice> d(new CudaDevice(options));
  absl::Status s = d->Init();
  if (!s.ok()) return s;
  return d;
}

CudaDevice::CudaDevice(const CudaOptions& options) : options_(options) {}

absl::Status CudaDevice::Init() {
  auto fail = [](const char* what, cudaError_t e) {
    return cuda::ErrorStatus(absl::StatusCode::kFailedPrecondition, absl::StrCat("CUDA start-up: ", what), e);
  };
  if (cudaError_t e = cudaSetDevice(options_.index); e != cudaSuccess) return fail("cudaSetDevice", e);
  if (cudaError_t e = cudaGetDeviceProperties(&prop_, options_.index); e != cudaSuccess) {
    return fail("cudaGetDeviceProperties", e);
  }
  if (cudaError_t e = cudaFree(nullptr); e != cudaSuccess) return fail("context creation", e);
  if (cudaError_t e = cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking); e != cudaSuccess) {
    return fail("cudaStreamCreateWithFlags(compute)", e);
  }
  if (cudaError_t e = cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking); e != cudaSuccess) {
    return fail("cudaStreamCreateWithFlags(copy)", e);
  }
  // cuBLAS before measuring: its handle's memory counts as overhead.
  lib_ = cuda::LoadBlas(&blas_missing_);
  if (lib_ != nullptr) {
    if (cublasStatus_t b = lib_->create(&blas_); b != CUBLAS_STATUS_SUCCESS) {
      return absl::FailedPreconditionError(absl::StrCat("CUDA start-up: cublasCreate: ", BlasStatusName(b)));
    }
    lib_->set_stream(blas_, compute_);
  }
  // The context overhead, measured: what is gone before ferry allocates
  // (this context, cuBLAS's handle, and anything other processes hold).
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaError_t e = cudaMemGetInfo(&free_bytes, &total_bytes); e != cudaSuccess) return fail("cudaMemGetInfo", e);
  total_ = total_bytes;
  overhead_ = total_bytes - free_bytes;
  uint64_t arena = free_bytes > kDriverReserve ? free_bytes - kDriverReserve : 0;
  if (options_.memory_bytes > 0) {
    if (options_.memory_bytes <= overhead_) {
      return absl::InvalidArgumentError(absl::StrCat("cuda: mem=", HumanBytes(options_.memory_bytes),
                                                     " is not more than the context overhead (",
                                                     HumanBytes(overhead_), ")"));
    }
    arena = std::min(arena, options_.memory_bytes - overhead_);
  }
  arena = arena / kDeviceAlign * kDeviceAlign;
  if (arena == 0) return absl::ResourceExhaustedError("cuda: no device memory is free");
  void* base = nullptr;
  if (cudaError_t e = cudaMalloc(&base, arena); e != cudaSuccess) {
    return cuda::ErrorStatus(absl::StatusCode::kResourceExhausted,
                             absl::StrCat("cuda: cudaMalloc of ", HumanBytes(arena), " at start-up failed"), e);
  }
  base_ = static_cast<uint8_t*>(base);
  arena_ = Arena(arena);
  MeasureBandwidths();
  return absl::OkStatus();
}

// Pinned host-to-device and device-to-device bandwidth on 64 MiB copies
// (best of 3), for the planner's speed model; the arena is still empty.
void CudaDevice::MeasureBandwidths() {
  constexpr uint64_t kBytes = uint64_t{64} << 20;
  if (arena_.capacity() < 2 * kBytes) return;
  void* host = nullptr;
  if (cudaHostAlloc(&host, kBytes, cudaHostAllocDefault) != cudaSuccess) return;
  std::memset(host, 1, kBytes);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  auto best = [&](auto copy) {
    float best_ms = 1e30f;
    for (int i = 0; i < 3; ++i) {
      cudaEventRecord(a, copy_);
      copy();
      cudaEventRecord(b, copy_);
      cudaEventSynchronize(b);
      float ms = 0;
      cudaEventElapsedTime(&ms, a, b);
      best_ms = std::min(best_ms, ms);
    }
    return best_ms;
  };
  const float h2d_ms = best([&] { cudaMemcpyAsync(base_, host, kBytes, cudaMemcpyHostToDevice, copy_); });
  const float d2d_ms = best([&] { cudaMemcpyAsync(base_ + kBytes, base_, kBytes, cudaMemcpyDeviceToDevice, copy_); });
  h2d_gbps_ = h2d_ms > 0 ? kBytes / (h2d_ms * 1e-3) / 1e9 : 0;
  d2d_gbps_ = d2d_ms > 0 ? 2.0 * kBytes / (d2d_ms * 1e-3) / 1e9 : 0;  // read + write
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaFreeHost(host);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) Fail(cuda::ErrorText("bandwidth probe", e));
}

CudaDevice::~CudaDevice() {
  if (compute_) cudaStreamSynchronize(compute_);
  if (copy_) cudaStreamSynchronize(copy_);
  registered_.ForEachStart([](void* p) { cudaHostUnregister(p); });
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
  for (cudaEvent_t e : timing_pool_) cudaEventDestroy(e);
  for (const Timed& t : pending_) cudaEventDestroy(t.begin), cudaEventDestroy(t.end);
  if (step_begin_) cudaEventDestroy(step_begin_);
  ClearGraphs();
  if (bounce_) cudaFreeHost(bounce_);
  if (blas_) lib_->destroy(blas_);
  if (base_) cudaFree(base_);
  if (compute_) cudaStreamDestroy(compute_);
  if (copy_) cudaStreamDestroy(copy_);
}

std::string CudaDevice::Describe() const {
  return absl::StrFormat(
      "cuda:%d %s (sm_%d%d, %s; %s for ferry, context %s; %.1f GB/s host-to-device, %.0f GB/s on the device%s%s)",
      options_.index, prop_.name, prop_.major, prop_.minor, HumanBytes(total_), HumanBytes(arena_.capacity()),
      HumanBytes(overhead_), h2d_gbps_, d2d_gbps_,
      absl::StrCat(options_.int8 ? (options_.int8_more ? "; int8 matvec (q4_1, q5_0, q5_1 too)" : "; int8 matvec")
                                 : "; float matvec",
                   options_.graphs ? "" : "; no CUDA graphs"),
      lib_ ? "" : absl::StrCat("; no cuBLAS, prefill runs the matvec kernel: ", blas_missing_));
}

DeviceSpec CudaDevice::spec() const {
  DeviceSpec f;
  f.name = absl::StrFormat("cuda:%d %s", options_.index, prop_.name);
  f.memory_bytes = arena_.capacity();  // the overhead is outside the arena already
  f.h2d_gbps = h2d_gbps_;
  f.memory_gbps = d2d_gbps_;
  return f;
}

void CudaDevice::Fail(const std::string& what) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!fault_.empty()) return;
  fault_ = what;
  std::fprintf(stderr, "ferry: CUDA fault: %s\n", what.c_str());
}

bool CudaDevice::Faulted() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !fault_.empty();
}

absl::Status CudaDevice::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (fault_.empty()) return absl::OkStatus();
  return absl::InternalError(fault_);
}

uint64_t CudaDevice::used() const {
  std::lock_guard<std::mutex> lock(mu_);
  return arena_.used();
}

uint64_t CudaDevice::peak() const {
  std::lock_guard<std::mutex> lock(mu_);
  return arena_.peak();
}

absl::StatusOr<void*> CudaDevice::Allocate(uint64_t bytes, absl::string_view what) {
  std::lock_guard<std::mutex> lock(mu_);
  std::optional<uint64_t> offset = arena_.Allocate(bytes);
  if (!offset) {
    return arena_.OutOfMemory(what, bytes);
  }
  return base_ + *offset;
}

void CudaDevice::Free(void* p) {
  if (p == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  arena_.Free(static_cast<uint8_t*>(p) - base_);
}

absl::StatusOr<void*> CudaDevice::AllocateHost(uint64_t bytes, absl::string_view what) {
  void* p = nullptr;
  if (cudaError_t e = cudaHostAlloc(&p, std::max<uint64_t>(bytes, 1), cudaHostAllocPortable); e != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it
    return cuda::ErrorStatus(absl::StatusCode::kResourceExhausted,
                             absl::StrCat("cudaHostAlloc of ", HumanBytes(bytes), " of page-locked host memory for ",
                                          what, " failed"),
                             e);
  }
  std::lock_guard<std::mutex> lock(mu_);
  allocated_host_.Add(p, std::max<uint64_t>(bytes, 1));
  return p;
}

void CudaDevice::FreeHost(void* p, uint64_t) {
  if (p == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    allocated_host_.Remove(p);
  }
  FERRY_CUDA_CHECK(cudaFreeHost(p));
}

absl::Status CudaDevice::RegisterHost(const void* p, uint64_t bytes) {
  if (p == nullptr || bytes == 0) return absl::OkStatus();
  int read_only = 0;
  cudaDeviceGetAttribute(&read_only, cudaDevAttrHostRegisterReadOnlySupported, options_.index);
  // The device only reads these ranges (read-only registration, which a
  // PROT_READ mapping needs); mapped, so small copies can be read by the
  // SMs without the copy engine (CopyToDevice).
  const unsigned flags =
      cudaHostRegisterPortable | cudaHostRegisterMapped | (read_only ? cudaHostRegisterReadOnly : 0u);
  if (cudaError_t e = cudaHostRegister(const_cast<void*>(p), bytes, flags); e != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it
    return cuda::ErrorStatus(
        absl::StatusCode::kFailedPrecondition, absl::StrCat("cudaHostRegister of ", HumanBytes(bytes), " of host memory failed"),
        e,
        absl::StrCat(read_only ? "" : " (this GPU cannot register read-only memory, which a read-only file mapping needs)",
                     "; check the locked-memory limit (ulimit -l)"));
  }
  void* device = nullptr;
  if (cudaHostGetDevicePointer(&device, const_cast<void*>(p), 0) != cudaSuccess) {
    cudaGetLastError();
    device = nullptr;  // copies from it take the copy engine
  }
  registered_.Add(p, bytes, device);
  return absl::OkStatus();
}

const void* CudaDevice::MappedSource(const void* src, uint64_t bytes) const {
  const auto hit = registered_.Find(src, bytes);
  if (!hit || hit->value == nullptr) return nullptr;
  return static_cast<const uint8_t*>(hit->value) + (static_cast<const uint8_t*>(src) - hit->start);
}

void CudaDevice::UnregisterHost(const void* p) {
  if (!registered_.Remove(p)) return;  // never registered (Init failed first)
  FERRY_CUDA_CHECK(cudaHostUnregister(const_cast<void*>(p)));
}

absl::StatusOr<Event> CudaDevice::CreateEvent() {
  cudaEvent_t e;
  if (cudaError_t err = cudaEventCreateWithFlags(&e, cudaEventDisableTiming); err != cudaSuccess) {
    return cuda::ErrorStatus(absl::StatusCode::kInternal, "cudaEventCreateWithFlags", err);
  }
  events_.push_back(e);
  return static_cast<Event>(events_.size() - 1);
}

void CudaDevice::Record(Event e, Queue q) {
  if (q == Queue::kCompute) BeginCompute();
  FERRY_CUDA_CHECK(cudaEventRecord(events_[e], StreamOf(q)));
}

void CudaDevice::Wait(Queue q, Event e) {
  if (q == Queue::kCompute) {
    BeginCompute();
    cudaEvent_t begin = TimingEvent(), end = TimingEvent();
    FERRY_CUDA_CHECK(cudaEventRecord(begin, compute_));
    FERRY_CUDA_CHECK(cudaStreamWaitEvent(compute_, events_[e], 0));
    FERRY_CUDA_CHECK(cudaEventRecord(end, compute_));
    pending_.push_back({begin, end, false});
    return;
  }
  FERRY_CUDA_CHECK(cudaStreamWaitEvent(StreamOf(q), events_[e], 0));
}

bool CudaDevice::Query(Event e) {
  const cudaError_t r = cudaEventQuery(events_[e]);
  if (r == cudaSuccess) return true;
  if (r != cudaErrorNotReady) FERRY_CUDA_CHECK(r);
  return false;
}

void CudaDevice::Synchronize(Event e) { FERRY_CUDA_CHECK(cudaEventSynchronize(events_[e])); }

void CudaDevice::SynchronizeAll() {
  FERRY_CUDA_CHECK(cudaStreamSynchronize(compute_));
  FERRY_CUDA_CHECK(cudaStreamSynchronize(copy_));
  Harvest(true);
}

void CudaDevice::CopyToDevice(Queue q, void* dst, const void* src, uint64_t bytes) {
  if (bytes == 0) return;
  if (q == Queue::kCompute) {
    BeginCompute();
    // A small copy from registered memory (the step's embedding rows) is
    // read by the SMs: a DMA would queue behind a slot's upload on the
    // host-to-device engine and hold up the whole compute stream.
    constexpr uint64_t kMappedCopyMax = uint64_t{1} << 20;
    if (const void* mapped = bytes <= kMappedCopyMax ? MappedSource(src, bytes) : nullptr) {
      Launched(cuda::LaunchCopyFromMappedHost(mapped, bytes, dst, compute_), "copy from mapped host memory");
      return;
    }
    FERRY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, compute_));
    return;
  }
  cudaEvent_t begin = TimingEvent(), end = TimingEvent();
  FERRY_CUDA_CHECK(cudaEventRecord(begin, copy_));
  FERRY_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, copy_));
  FERRY_CUDA_CHECK(cudaEventRecord(end, copy_));
  pending_.push_back({begin, end, true});
  stats_.bytes_to_device += bytes;
  ++stats_.copies;
}

void CudaDevice::CopyToHost(void* dst, const void* src, uint64_t bytes) {
  BeginCompute();
  // Into page-locked memory of AllocateHost (the executor's logits buffer)
  // the copy lands as it is; anywhere else it goes through the bounce
  // buffer and a host memcpy (16 MB of logits at batch 32: ~2 ms).
  bool pinned = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    pinned = allocated_host_.Find(dst, bytes).has_value();
  }
  if (!pinned && bytes > bounce_bytes_) {
    if (bounce_) cudaFreeHost(bounce_);
    bounce_ = nullptr;
    bounce_bytes_ = 0;
    if (cudaHostAlloc(&bounce_, bytes, cudaHostAllocDefault) == cudaSuccess) {
      bounce_bytes_ = bytes;
    } else {
      cudaGetLastError();  // pinned memory is short: copy to pageable memory instead
      bounce_ = nullptr;
    }
  }
  void* target = pinned || bounce_ == nullptr ? dst : bounce_;
  if (bytes > 0) FERRY_CUDA_CHECK(cudaMemcpyAsync(target, src, bytes, cudaMemcpyDeviceToHost, compute_));
  cudaEvent_t end = TimingEvent();
  FERRY_CUDA_CHECK(cudaEventRecord(end, compute_));
  FERRY_CUDA_CHECK(cudaStreamSynchronize(compute_));
  if (target != dst && bytes > 0) std::memcpy(dst, bounce_, bytes);
  // The step's compute span ends here.
  float ms = 0;
  const bool timed = step_begin_ && cudaEventElapsedTime(&ms, step_begin_, end) == cudaSuccess;
  Harvest(true);  // the step's waits, subtracted from its span
  if (timed) stats_.compute_s += std::max(0.0, ms * 1e-3 - waits_in_step_s_);
  waits_in_step_s_ = 0;
  compute_running_ = false;
  timing_pool_.push_back(end);
}

void CudaDevice::PoisonOnReuse(void* dst, uint64_t bytes) {
  // 0xff bytes are NaNs as f32 (and as f16): a read of a released slot shows.
  if (options_.poison) FERRY_CUDA_CHECK(cudaMemsetAsync(dst, 0xff, bytes, copy_));
}

DeviceStats CudaDevice::stats() const { return stats_; }

cudaEvent_t CudaDevice::TimingEvent() {
  if (!timing_pool_.empty()) {
    cudaEvent_t e = timing_pool_.back();
    timing_pool_.pop_back();
    return e;
  }
  cudaEvent_t e = nullptr;
  FERRY_CUDA_CHECK(cudaEventCreate(&e));
  return e;
}

void CudaDevice::BeginCompute() {
  int8_input_ = {};  // whatever comes next may write the activations
  if (compute_running_) return;
  compute_running_ = true;
  if (step_begin_ == nullptr) FERRY_CUDA_CHECK(cudaEventCreate(&step_begin_));
  FERRY_CUDA_CHECK(cudaEventRecord(step_begin_, compute_));
}

// Folds completed timing pairs into the stats, oldest first; stops at the
// first pair still in flight (a copy for the next step) unless the compute
// stream is idle, in which case compute-side pairs are all complete.
void CudaDevice::Harvest(bool compute_idle) {
  while (!pending_.empty()) {
    const Timed t = pending_.front();
    const cudaError_t r = cudaEventQuery(t.end);
    if (r == cudaErrorNotReady) {
      if (!compute_idle || t.copy) break;
    } else if (r != cudaSuccess) {
      FERRY_CUDA_CHECK(r);
      break;
    }
    float ms = 0;
    if (cudaEventElapsedTime(&ms, t.begin, t.end) != cudaSuccess) {
      cudaGetLastError();
      ms = 0;
    }
    if (t.copy) {
      stats_.copy_busy_s += ms * 1e-3;
    } else {
      stats_.compute_wait_s += ms * 1e-3;
      waits_in_step_s_ += ms * 1e-3;
    }
    timing_pool_.push_back(t.begin);
    timing_pool_.push_back(t.end);
    pending_.pop_front();
  }
}

void CudaDevice::Launched(cudaError_t e, const char* what) {
  if (e != cudaSuccess) LaunchFailed(cuda::ErrorText(what, e));
}

void CudaDevice::LaunchFailed(const std::string& what) {
  if (capturing_) {  // nothing ran: the capture fails and the work runs uncaptured (RunRecorded)
    capture_broken_ = true;
    return;
  }
  Fail(what);
}

void CudaDevice::BeginStep(std::span<const TokenPos> tokens, std::span<const int32_t> logit_rows,
                           const RopeParams& rope) {
  if (Faulted()) return;
  BeginCompute();
  UploadTokens(tokens);
  UploadRows(logit_rows);
  if (rope.dims > 0) UploadRope(rope);
  step_tokens_ = tokens.size();
  step_rows_ = logit_rows.size();
  int max_span = 1;
  for (const TokenPos& t : tokens) max_span = std::max(max_span, t.pos + 1);
  // The attention's split count follows the span in steps of
  // kAttentionSplitPositions (AttentionSplits): a graph per step of it.
  step_span_bucket_ =
      std::min(cuda::kMaxAttentionSplits, (max_span + cuda::kAttentionSplitPositions - 1) / cuda::kAttentionSplitPositions);
}

void CudaDevice::RunRecorded(uint64_t key, const std::function<void()>& enqueue_kernels) {
  // A recorded piece must not lean on what came before it (a replay's
  // predecessor may differ) nor leave anything to what follows.
  auto enqueue = [&] {
    int8_input_ = {};
    enqueue_kernels();
    int8_input_ = {};
  };
  if (!options_.graphs || capturing_ || Faulted() || step_tokens_ == 0) {
    enqueue();
    return;
  }
  BeginCompute();
  const auto k = std::make_tuple(key, step_tokens_, step_rows_, step_span_bucket_);
  if (graphs_.size() >= kMaxGraphs && !graphs_.contains(k)) ClearGraphs();
  Recorded& r = graphs_[k];
  // Captured the second time a shape comes: a one-off step (a prompt of
  // its own length) is not worth a capture.
  if (r.failed || (r.exec == nullptr && ++r.seen < 2)) {
    enqueue();
    return;
  }
  if (r.exec == nullptr) {
    r.exec = Capture(enqueue);
    if (r.exec == nullptr) {
      r.failed = true;
      enqueue();
      return;
    }
  }
  ++stats_.replays;
  Launched(cudaGraphLaunch(r.exec, compute_), "cudaGraphLaunch");
}

template <typename F>
cudaGraphExec_t CudaDevice::Capture(const F& enqueue) {
  // Thread-local mode: only this thread's calls are checked for what a
  // capture forbids (a synchronization, say); the host does none here.
  cudaError_t e = cudaStreamBeginCapture(compute_, cudaStreamCaptureModeThreadLocal);
  const char* step = "cudaStreamBeginCapture";
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  if (e == cudaSuccess) {
    capturing_ = true;
    capture_broken_ = false;
    enqueue();
    capturing_ = false;
    step = "cudaStreamEndCapture";
    e = cudaStreamEndCapture(compute_, &graph);
    if (e == cudaSuccess && capture_broken_) e = cudaErrorStreamCaptureInvalidated;
    if (e == cudaSuccess) {
      step = "cudaGraphInstantiate";
      e = cudaGraphInstantiate(&exec, graph, 0);
    }
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
  if (e == cudaSuccess) {
    ++graphs_captured_;
    return exec;
  }
  cudaGetLastError();  // capture errors are not sticky: the work runs kernel by kernel
  if (exec != nullptr) cudaGraphExecDestroy(exec);
  if (!capture_failure_told_) {
    capture_failure_told_ = true;
    std::fprintf(stderr, "ferry: CUDA graph capture failed (%s: %s); those kernels are launched one by one\n", step,
                 cuda::DescribeCudaError(e).c_str());
  }
  return nullptr;
}

void CudaDevice::ClearGraphs() {
  for (auto& [key, r] : graphs_) {
    if (r.exec != nullptr) cudaGraphExecDestroy(r.exec);
  }
  graphs_.clear();
}

absl::Status CudaDevice::ReserveKernelScratch(int64_t max_rows, int64_t max_width, int max_tokens) {
  if (max_rows <= 0 || max_width <= 0 || max_tokens <= 0) {
    return absl::InvalidArgumentError("kernel scratch: sizes must be positive");
  }
  ReleaseKernelScratch();
  const KernelScratch layout = KernelScratchFor(max_rows, max_width, max_tokens);
  void* p = nullptr;
  {
    absl::StatusOr<void*> got = Allocate(layout.bytes(), "kernel scratch");
    if (!got.ok()) return got.status();
    p = *got;
  }
  scratch_ = p;
  scratch_bytes_ = AlignDevice(layout.bytes());
  uint8_t* at = static_cast<uint8_t*>(p);
  tokens_dev_ = reinterpret_cast<int2*>(at);
  at += KernelScratch::Align(layout.tokens * 8);
  rows_dev_ = reinterpret_cast<int32_t*>(at);
  at += KernelScratch::Align(layout.rows * 4);
  rope_dev_ = reinterpret_cast<float*>(at);
  at += KernelScratch::Align(layout.rope * 4);
  tile_ = nullptr;
  tile_values_ = 0;
  if (layout.tile > 0) {
    tile_ = reinterpret_cast<float*>(at);
    tile_values_ = static_cast<int64_t>(layout.tile);
    at += KernelScratch::Align(layout.tile * 4);
    if (cublasStatus_t b = lib_ ? lib_->set_workspace(blas_, at, layout.workspace) : CUBLAS_STATUS_SUCCESS;
        b != CUBLAS_STATUS_SUCCESS) {
      return absl::InternalError(absl::StrCat("cublasSetWorkspace: ", BlasStatusName(b)));
    }
  }
  at += KernelScratch::Align(layout.workspace);
  int8_ = {};
  if (layout.int8 > 0) {
    int8_.q = reinterpret_cast<int8_t*>(at);
    at += KernelScratch::Align(layout.int8);
    int8_.d = reinterpret_cast<float*>(at);
    at += KernelScratch::Align(layout.int8 / 32 * 4);
    int8_.isum = reinterpret_cast<int32_t*>(at);
    int8_values_ = static_cast<int64_t>(layout.int8);
  }
  max_tokens_ = max_tokens;
  tokens_host_.clear();
  rows_host_.clear();
  rope_host_.clear();
  return absl::OkStatus();
}

void CudaDevice::ReleaseKernelScratch() {
  if (scratch_ == nullptr) return;
  FERRY_CUDA_CHECK(cudaStreamSynchronize(compute_));
  ClearGraphs();  // they name the executor's buffers, which go with it
  step_tokens_ = step_rows_ = 0;
  if (tile_ != nullptr && lib_) lib_->set_workspace(blas_, nullptr, 0);
  Free(scratch_);
  scratch_ = nullptr;
  scratch_bytes_ = 0;
  tokens_dev_ = nullptr, rows_dev_ = nullptr, rope_dev_ = nullptr, tile_ = nullptr;
  int8_ = {};
  int8_values_ = 0;
}

uint64_t CudaDevice::AttentionScratchFloats(int tokens, int n_head, int n_ctx) const {
  return static_cast<uint64_t>(tokens) * n_head * n_ctx;  // a row per query: flash-decoding partials
}

// The step's tables (tokens, logit rows, rope frequencies) go up in kernel
// parameters (LaunchWriteWords), copied at launch: the host vectors may
// change right after, and no DMA queues behind a slot's upload.
void CudaDevice::WriteTable(const void* host, uint64_t bytes, void* dev, const char* what) {
  Launched(cuda::LaunchWriteWords(static_cast<const uint32_t*>(host), static_cast<int64_t>(bytes / sizeof(uint32_t)),
                                  static_cast<uint32_t*>(dev), compute_),
           what);
}

const void* CudaDevice::UploadTokens(std::span<const TokenPos> tokens) {
  if (tokens.size() > static_cast<size_t>(max_tokens_)) {
    Fail(absl::StrCat("a step of ", tokens.size(), " tokens exceeds the ", max_tokens_, " the kernel scratch holds"));
    return nullptr;
  }
  static_assert(sizeof(TokenPos) == sizeof(int2));
  if (tokens.size() != tokens_host_.size() ||
      !std::equal(tokens.begin(), tokens.end(), tokens_host_.begin(),
                  [](const TokenPos& a, const TokenPos& b) { return a.seq == b.seq && a.pos == b.pos; })) {
    if (capturing_) return BreakCapture(tokens_dev_);
    tokens_host_.assign(tokens.begin(), tokens.end());
    WriteTable(tokens_host_.data(), tokens_host_.size() * sizeof(TokenPos), tokens_dev_, "token table");
  }
  return tokens_dev_;
}

const int32_t* CudaDevice::UploadRows(std::span<const int32_t> rows) {
  if (rows.size() > static_cast<size_t>(max_tokens_)) {
    Fail(absl::StrCat("a gather of ", rows.size(), " rows exceeds the ", max_tokens_, " the kernel scratch holds"));
    return nullptr;
  }
  if (rows.size() != rows_host_.size() || !std::equal(rows.begin(), rows.end(), rows_host_.begin())) {
    if (capturing_) return BreakCapture(rows_dev_);
    rows_host_.assign(rows.begin(), rows.end());
    WriteTable(rows_host_.data(), rows_host_.size() * sizeof(int32_t), rows_dev_, "row table");
  }
  return rows_dev_;
}

// Every table of the model goes up at once (BeginStep does it before the
// step's first kernel), so layers rotating with different tables (gemma3's
// sliding and global layers) do not rewrite it between them.
const float* CudaDevice::UploadRope(const RopeParams& rope) {
  const size_t pairs = static_cast<size_t>(rope.dims / 2), floats = pairs * std::max(rope.sets, 1);
  if (floats > static_cast<size_t>(kMaxRopePairs) || rope.set < 0 || rope.set >= std::max(rope.sets, 1)) {
    Fail(absl::StrCat("rope over ", rope.dims, " dimensions in ", rope.sets, " table(s) (table ", rope.set,
                      "): the kernels take at most ", kMaxRopePairs, " frequencies"));
    return nullptr;
  }
  if (floats != rope_host_.size() || !std::equal(rope_host_.begin(), rope_host_.end(), rope.inv_freq)) {
    if (capturing_) return BreakCapture(rope_dev_);
    rope_host_.assign(rope.inv_freq, rope.inv_freq + floats);
    WriteTable(rope_host_.data(), rope_host_.size() * sizeof(float), rope_dev_, "rope frequencies");
  }
  return rope_dev_ + pairs * rope.set;
}

void CudaDevice::MatMul(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* y,
                        int64_t y_stride) {
  if (Faulted()) return;
  const model::Matrix* ws[1] = {&w};
  if (Int8Takes(ws, n_tokens)) {
    cuda::Int8Rows rows;
    rows.part[rows.count++] = PartOf(w, y, y_stride);
    LaunchInt8Rows(rows, w.type, x, x_stride, w.cols, n_tokens, -1, "int8 matvec");
    return;
  }
  cublasStatus_t blas = CUBLAS_STATUS_SUCCESS;
  Launch("matmul", [&] {
    if (!cuda::MatMulSupports(w.type)) {
      Fail(absl::StrCat("matmul: no CUDA kernel for the type of ", w.name));
      return kNothingLaunched;
    }
    const cuda::MatMulArgs a{w.data, w.type, w.rows, w.cols, static_cast<int64_t>(w.row_bytes()), x, x_stride,
                             n_tokens, y, y_stride};
    return cuda::LaunchMatMul(a, {tile_, tile_values_, lib_, blas_}, compute_, &blas);
  });
  if (blas != CUBLAS_STATUS_SUCCESS) LaunchFailed(absl::StrCat("cublasGemmEx for ", w.name, ": ", BlasStatusName(blas)));
}

bool CudaDevice::Int8Fits(int n_rows, int64_t width) const {
  return options_.int8 && int8_.q != nullptr && n_rows > 0 && n_rows <= kMatVecMaxTokens && width % 32 == 0 &&
         static_cast<int64_t>(n_rows) * width <= int8_values_;
}

bool CudaDevice::Int8Takes(std::span<const model::Matrix* const> ws, int n_tokens) const {
  if (ws.empty() || !Int8Fits(n_tokens, ws[0]->cols)) return false;
  const model::Matrix& a = *ws[0];
  if (!cuda::MatVecInt8Supports(a.type, options_.int8_more)) return false;
  for (const model::Matrix* w : ws) {
    if (w->type != a.type || w->cols != a.cols || w->data == nullptr) return false;
  }
  return true;
}

void CudaDevice::LaunchInt8Rows(const cuda::Int8Rows& rows, quant::TensorType type, const float* x, int64_t x_stride,
                                int64_t cols, int n_tokens, int gated, const char* what) {
  const Int8Input held = int8_input_;  // before BeginCompute forgets it
  const Int8Input input{x, x_stride, cols, n_tokens};
  Launch(what, [&] {
    return cuda::LaunchMatVecInt8Rows(type, rows, x, x_stride, cols, n_tokens, int8_, held == input, gated, compute_);
  });
  const int64_t x_len = (n_tokens - 1) * x_stride + cols;
  for (int p = 0; p < (gated >= 0 ? 1 : rows.count); ++p) {
    if (Overlap(x, x_len, rows.part[p].y, (n_tokens - 1) * rows.part[p].ys + rows.part[p].rows)) return;
  }
  int8_input_ = input;
}

void CudaDevice::MatMulShared(std::span<const MatMulOut> outs, const float* x, int64_t x_stride, int n_tokens) {
  if (Faulted()) return;
  const model::Matrix* ws[3] = {};
  for (size_t i = 0; i < outs.size() && i < 3; ++i) ws[i] = outs[i].w;
  if (!options_.fuse || outs.size() < 2 || outs.size() > 3 || !Int8Takes({ws, outs.size()}, n_tokens)) {
    Device::MatMulShared(outs, x, x_stride, n_tokens);
    return;
  }
  cuda::Int8Rows rows;
  for (const MatMulOut& o : outs) rows.part[rows.count++] = PartOf(*o.w, o.y, o.y_stride);
  LaunchInt8Rows(rows, ws[0]->type, x, x_stride, ws[0]->cols, n_tokens, -1, "int8 matvec (shared activations)");
}

void CudaDevice::GatedMatMul(const model::Matrix& w_gate, const model::Matrix& w_up, const float* x, int64_t x_stride,
                             int n_tokens, float* gate, float* up, int64_t stride, model::Activation act) {
  if (Faulted()) return;
  const model::Matrix* ws[2] = {&w_gate, &w_up};
  if (!options_.fuse || w_gate.rows != w_up.rows || !Int8Takes(ws, n_tokens)) {
    Device::GatedMatMul(w_gate, w_up, x, x_stride, n_tokens, gate, up, stride, act);
    return;
  }
  cuda::Int8Rows rows;
  rows.part[rows.count++] = PartOf(w_gate, gate, stride);
  rows.part[rows.count++] = PartOf(w_up, up, stride);
  LaunchInt8Rows(rows, w_gate.type, x, x_stride, w_gate.cols, n_tokens, act == model::Activation::kGeluTanh ? 1 : 0,
                 "int8 gated matvec");
}

void CudaDevice::MatMulAdd(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* scratch,
                           float* acc, int64_t stride) {
  if (Faulted()) return;
  const model::Matrix* ws[1] = {&w};
  if (!options_.fuse || w.rows > stride || !Int8Takes(ws, n_tokens) ||
      Overlap(x, (n_tokens - 1) * x_stride + w.cols, acc, (n_tokens - 1) * stride + w.rows)) {
    Device::MatMulAdd(w, x, x_stride, n_tokens, scratch, acc, stride);
    return;
  }
  cuda::Int8Rows rows;
  rows.part[rows.count++] = PartOf(w, acc, stride);
  rows.accumulate = true;
  LaunchInt8Rows(rows, w.type, x, x_stride, w.cols, n_tokens, -1, "int8 matvec (residual add)");
}

void CudaDevice::RopeQK(float* q, int n_head, float* k, int n_head_kv, int n_rows, std::span<const TokenPos> tokens,
                        const RopeParams& rope) {
  if (Faulted()) return;
  if (!options_.fuse) {
    Device::RopeQK(q, n_head, k, n_head_kv, n_rows, tokens, rope);
    return;
  }
  Launch("rope (q and k)", [&] {
    const void* t = UploadTokens(tokens.first(n_rows));
    const float* f = UploadRope(rope);
    if (t == nullptr || f == nullptr) return kNothingLaunched;
    return cuda::LaunchRopePair(q, n_head, k, n_head_kv, n_rows, rope.head_dim, static_cast<const int2*>(t), f,
                                rope.dims, rope.neox, compute_);
  });
}

void CudaDevice::RmsNorm(const float* x, int n_rows, int64_t width, const float* weight, float eps, float* out) {
  NormAndQuantize(x, n_rows, width, weight, eps, out, false);
}

void CudaDevice::RmsNormBefore(const model::Matrix& next, const float* x, int n_rows, int64_t width,
                               const float* weight, float eps, float* out) {
  // Quantized only where the next product takes int8 input (a q4_1 model
  // without int8_more=1, an f16 head, a prefill step do not).
  const model::Matrix* ws[1] = {&next};
  NormAndQuantize(x, n_rows, width, weight, eps, out, options_.fuse && next.cols == width && Int8Takes(ws, n_rows));
}

void CudaDevice::NormAndQuantize(const float* x, int n_rows, int64_t width, const float* weight, float eps, float* out,
                                 bool quantize) {
  if (Faulted()) return;
  // With `quantize` the output also goes to the int8 buffer, which the next
  // int8 product of `out` then reads as it is (int8_input_).
  Launch("rmsnorm", [&] {
    return cuda::LaunchRmsNorm(x, n_rows, width, weight, eps, out, compute_, quantize ? int8_.q : nullptr,
                               quantize ? int8_.d : nullptr, quantize ? int8_.isum : nullptr);
  });
  if (quantize) int8_input_ = {out, width, width, n_rows};
}

void CudaDevice::Add(float* x, const float* y, int64_t n) {
  Kernel("add", [&] { return cuda::LaunchAdd(x, y, n, compute_); });
}

void CudaDevice::AddRowBias(float* x, int n_rows, int64_t width, const float* bias) {
  Kernel("row bias", [&] { return cuda::LaunchAddRowBias(x, n_rows, width, bias, compute_); });
}

void CudaDevice::Rope(float* x, int n_rows, int n_heads, std::span<const TokenPos> tokens, const RopeParams& rope) {
  Kernel("rope", [&] {
    const void* t = UploadTokens(tokens.first(n_rows));
    const float* f = UploadRope(rope);
    if (t == nullptr || f == nullptr) return kNothingLaunched;
    return cuda::LaunchRope(x, n_rows, n_heads, rope.head_dim, static_cast<const int2*>(t), f, rope.dims, rope.neox,
                            compute_);
  });
}

void CudaDevice::StoreKv(const KvLayer& kv, const float* k, const float* v, std::span<const TokenPos> tokens) {
  Kernel("store kv", [&] {
    const void* t = UploadTokens(tokens);
    if (t == nullptr) return kNothingLaunched;
    return cuda::LaunchStoreKv({kv.k, kv.v, kv.f16, kv.n_ctx, kv.kv_dim}, k, v, static_cast<const int2*>(t),
                               static_cast<int>(tokens.size()), compute_);
  });
}

void CudaDevice::Attention(const float* q, const KvLayer& kv, std::span<const TokenPos> tokens,
                           const AttentionShape& s, float* scratch, float* out) {
  Kernel("attention", [&] {
    const void* t = UploadTokens(tokens);
    if (t == nullptr) return kNothingLaunched;
    // The window aside: the split count (frozen into a graph) is then the
    // same in every layer, a function of BeginStep's span bucket.
    int max_span = 1;
    for (const TokenPos& tok : tokens) max_span = std::max(max_span, tok.pos + 1);
    cuda::AttentionArgs a{q, {kv.k, kv.v, kv.f16, kv.n_ctx, kv.kv_dim}, static_cast<const int2*>(t),
                          static_cast<int>(tokens.size()), max_span, s.n_head, s.n_head_kv, s.head_dim, s.query_scale,
                          s.softcap, s.window, scratch, out};
    return cuda::LaunchAttention(a, compute_);
  });
}

void CudaDevice::GatedActivation(float* gate, const float* up, int64_t n, model::Activation act) {
  Kernel("gated activation",
         [&] { return cuda::LaunchGatedActivation(gate, up, n, act == model::Activation::kGeluTanh, compute_); });
}

void CudaDevice::SoftCap(float* x, int64_t n, float cap) {
  Kernel("softcap", [&] { return cuda::LaunchSoftCap(x, n, cap, compute_); });
}

void CudaDevice::GatherRows(const float* src, std::span<const int32_t> rows, int64_t width, float* dst) {
  Kernel("gather rows", [&] {
    const int32_t* r = UploadRows(rows);
    if (r == nullptr) return kNothingLaunched;
    return cuda::LaunchGatherRows(src, r, static_cast<int>(rows.size()), width, dst, compute_);
  });
}

}  // namespace ferry::backend
