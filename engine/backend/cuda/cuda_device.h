// The cuda backend: the Device interface on one GPU. Device memory is one
// cudaMalloc taken at start-up (never managed memory) and handed out by the
// same first-fit Arena as the sim device, so an allocation fails at the
// byte the planner predicts, and nothing is allocated per request. The
// compute and copy queues are two non-blocking streams; events are CUDA
// events (timing disabled), so the executor's ring schedule maps one to one.
// Kernels: matmul.cuh, attention.cuh, elementwise.cuh.
//
// Host memory for streamed weights: the executor packs them into one
// buffer from AllocateHost (cudaHostAlloc), each unit as it sits in a slot,
// and drops the mapping's pages of what it copied, so host memory for
// streaming is ~1.0x the streamed bytes and each unit crosses in one DMA.
// Resident weights go up through two 64 MiB cudaHostAlloc staging buffers.
// Registering the mapped file (cudaHostRegister) and uploading from
// pageable memory instead made an 8B model's load take minutes
// (docs/measurements.md). The executor's small buffers
// (embedding rows) sit on pages of their own (PageVector) and are
// registered: a copy from pageable memory makes the host wait.
//
// Steps run as CUDA graphs: each piece of work the executor hands to
// RunRecorded is captured from the compute stream the second time its key
// and the step's shape (tokens, logit rows, attention splits) come up, and
// replayed from then on, one launch for its kernels (cuBLAS's GEMMs for
// larger batches included: its workspace is set, so it allocates nothing). Every kernel reads the step's positions and rows
// from device tables that BeginStep rewrites before the step, so a replay
// computes the new step ("parameters updated in place"). Work that cannot
// be captured runs kernel by kernel, with one line on stderr.
//
// Any CUDA error latches a fault (health()): after an illegal address the
// context is unusable, so the executor fails every later step and the
// service reports itself unhealthy. Out-of-memory cannot happen during a
// request: every byte comes from the arena, sized at load.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "engine/backend/arena.h"
#include "engine/backend/cuda/blas.h"
#include "engine/backend/cuda/matvec_int8.cuh"
#include "engine/backend/cuda/options.h"
#include "engine/backend/device.h"
#include "engine/backend/host_ranges.h"

namespace ferry::backend {

class CudaDevice : public Device {
 public:
  // Fails with FAILED_PRECONDITION "no CUDA device: ..." where there is none.
  static absl::StatusOr<std::unique_ptr<CudaDevice>> Create(const CudaOptions& options);
  ~CudaDevice() override;

  std::string Describe() const override;
  DeviceSpec spec() const override;
  uint64_t context_overhead() const { return overhead_; }
  double measured_h2d_gbps() const { return h2d_gbps_; }
  double measured_d2d_gbps() const { return d2d_gbps_; }

  uint64_t capacity() const override { return arena_.capacity(); }
  uint64_t used() const override;
  uint64_t peak() const override;
  absl::StatusOr<void*> Allocate(uint64_t bytes, absl::string_view what) override;
  void Free(void* p) override;
  absl::StatusOr<void*> AllocateHost(uint64_t bytes, absl::string_view what) override;
  void FreeHost(void* p, uint64_t bytes) override;
  absl::Status RegisterHost(const void* p, uint64_t bytes) override;
  void UnregisterHost(const void* p) override;

  absl::StatusOr<Event> CreateEvent() override;
  void Record(Event e, Queue q) override;
  void Wait(Queue q, Event e) override;
  bool Query(Event e) override;
  void Synchronize(Event e) override;
  void SynchronizeAll() override;
  void CopyToDevice(Queue q, void* dst, const void* src, uint64_t bytes) override;
  void CopyToHost(void* dst, const void* src, uint64_t bytes) override;
  bool poison() const override { return options_.poison; }
  void PoisonOnReuse(void* dst, uint64_t bytes) override;
  DeviceStats stats() const override;
  absl::Status health() const override;

  void BeginStep(std::span<const TokenPos> tokens, std::span<const int32_t> logit_rows,
                 const RopeParams& rope) override;
  void RunRecorded(uint64_t key, const std::function<void()>& enqueue) override;

  absl::Status ReserveKernelScratch(int64_t max_rows, int64_t max_width, int max_tokens) override;
  uint64_t kernel_scratch_bytes() const override { return scratch_bytes_; }
  void ReleaseKernelScratch() override;
  uint64_t AttentionScratchFloats(int tokens, int n_head, int n_ctx) const override;
  void MatMul(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* y,
              int64_t y_stride) override;
  void MatMulShared(std::span<const MatMulOut> outs, const float* x, int64_t x_stride, int n_tokens) override;
  void GatedMatMul(const model::Matrix& w_gate, const model::Matrix& w_up, const float* x, int64_t x_stride,
                   int n_tokens, float* gate, float* up, int64_t stride, model::Activation act) override;
  void MatMulAdd(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* scratch, float* acc,
                 int64_t stride) override;
  void RopeQK(float* q, int n_head, float* k, int n_head_kv, int n_rows, std::span<const TokenPos> tokens,
              const RopeParams& rope) override;
  void RmsNorm(const float* x, int n_rows, int64_t width, const float* weight, float eps, float* out) override;
  void RmsNormBefore(const model::Matrix& next, const float* x, int n_rows, int64_t width, const float* weight,
                     float eps, float* out) override;
  void Add(float* x, const float* y, int64_t n) override;
  void AddRowBias(float* x, int n_rows, int64_t width, const float* bias) override;
  void Rope(float* x, int n_rows, int n_heads, std::span<const TokenPos> tokens, const RopeParams& rope) override;
  void StoreKv(const KvLayer& kv, const float* k, const float* v, std::span<const TokenPos> tokens) override;
  void Attention(const float* q, const KvLayer& kv, std::span<const TokenPos> tokens, const AttentionShape& shape,
                 float* scratch, float* out) override;
  void GatedActivation(float* gate, const float* up, int64_t n, model::Activation act) override;
  void SoftCap(float* x, int64_t n, float cap) override;
  void GatherRows(const float* src, std::span<const int32_t> rows, int64_t width, float* dst) override;

  // Latches the first fault (FERRY_CUDA_CHECK calls this).
  void Fail(const std::string& what) const;

 private:
  explicit CudaDevice(const CudaOptions& options);
  absl::Status Init();
  void MeasureBandwidths();
  cudaStream_t StreamOf(Queue q) const { return q == Queue::kCopy ? copy_ : compute_; }
  bool Faulted() const;
  // The compute queue is about to run something: the step's timing starts.
  void BeginCompute();
  // The step's positions / logit rows / rope table in device memory,
  // uploaded only when they differ from what is there.
  // A table of 4-byte values into device memory on the compute stream, in
  // kernel parameters (cuda::LaunchWriteWords).
  void WriteTable(const void* host, uint64_t bytes, void* dev, const char* what);
  // Whether the int8 matvec takes these products (n tokens, activations
  // `cols` wide) in one launch: one supported type and width, room in the
  // int8 buffer.
  bool Int8Takes(std::span<const model::Matrix* const> ws, int n_tokens) const;
  // Launches them (cuda::LaunchMatVecInt8Rows) after BeginCompute,
  // quantizing x unless the int8 buffer holds it already; `outs` is each
  // output's extent, for the next product's reuse of the quantized x.
  void LaunchInt8Rows(const cuda::Int8Rows& rows, quant::TensorType type, const float* x, int64_t x_stride,
                      int64_t cols, int n_tokens, int gated, const char* what);
  // Whether the int8 buffer can take a step's n_rows rows of `width`.
  bool Int8Fits(int n_rows, int64_t width) const;
  // RmsNorm, and with `quantize` its output also into the int8 buffer.
  void NormAndQuantize(const float* x, int n_rows, int64_t width, const float* weight, float eps, float* out,
                       bool quantize);
  const void* UploadTokens(std::span<const TokenPos> tokens);
  // A table that differs from the step's, met while capturing: the write
  // cannot be frozen into a graph, so the capture fails.
  template <typename T>
  T* BreakCapture(T* table) {
    capture_broken_ = true;
    return table;
  }
  const int32_t* UploadRows(std::span<const int32_t> rows);
  const float* UploadRope(const RopeParams& rope);
  // The device's pointer to [src, src + bytes) if that lies in one mapped
  // registered range, else null.
  const void* MappedSource(const void* src, uint64_t bytes) const;
  // Records `enqueue` into an executable graph; null (and a line on
  // stderr, once) when it cannot be captured.
  template <typename F>
  cudaGraphExec_t Capture(const F& enqueue);
  void ClearGraphs();
  // Timing events from a pool; pairs are harvested once they complete.
  cudaEvent_t TimingEvent();
  void Harvest(bool compute_idle);
  void Launched(cudaError_t e, const char* what);
  // The kernel methods' shape: after a fault, nothing; else the step's
  // compute span begun (BeginCompute), `launch()` run and its error checked
  // as `what` (Launched). `launch` returns the launch's error, or
  // kNothingLaunched where it launched nothing (a table it needs could not
  // be written, a type has no kernel: that has latched the fault, or broken
  // the capture, already). Launch is the same without the fault check, for
  // methods that check before choosing a path.
  static constexpr cudaError_t kNothingLaunched = cudaSuccess;
  template <typename F>
  void Kernel(const char* what, const F& launch) {
    if (Faulted()) return;
    Launch(what, launch);
  }
  template <typename F>
  void Launch(const char* what, const F& launch) {
    BeginCompute();
    Launched(launch(), what);
  }
  // A launch or cuBLAS call failed: a fault, or while capturing a broken
  // capture (nothing ran; RunRecorded runs the work uncaptured).
  void LaunchFailed(const std::string& what);

  const CudaOptions options_;
  cudaDeviceProp prop_{};
  uint64_t total_ = 0, overhead_ = 0;
  double h2d_gbps_ = 0, d2d_gbps_ = 0;
  uint8_t* base_ = nullptr;
  Arena arena_{0};
  mutable std::mutex mu_;  // arena_, fault_, allocated_host_
  HostRanges<> allocated_host_;  // from AllocateHost: device-to-host copies land there directly
  mutable std::string fault_;
  cudaStream_t compute_ = nullptr, copy_ = nullptr;
  const cuda::Blas* lib_ = nullptr;  // cuBLAS when found (blas.h)
  std::string blas_missing_;
  cublasHandle_t blas_ = nullptr;
  std::vector<cudaEvent_t> events_;
  // Registered host ranges (mapped), each with the device's pointer to it
  // (null if it has none), for small compute-stream copies the SMs read.
  HostRanges<const void*> registered_;
  // Kernel scratch (backend/scratch.h) inside the arena.
  void* scratch_ = nullptr;
  uint64_t scratch_bytes_ = 0;
  int2* tokens_dev_ = nullptr;
  int32_t* rows_dev_ = nullptr;
  float* rope_dev_ = nullptr;
  float* tile_ = nullptr;
  int64_t tile_values_ = 0;
  cuda::Int8Activations int8_;  // quantized activations for the int8 matvec
  // What int8_ holds: the activations the last int8 product quantized.
  // Products of one input (q/k/v, gate/up) quantize it once; any other
  // kernel, copy or recorded piece between them forgets it (BeginCompute).
  struct Int8Input {
    const float* x = nullptr;
    int64_t stride = 0, cols = 0;
    int n = 0;
    bool operator==(const Int8Input&) const = default;
  } int8_input_;
  int64_t int8_values_ = 0;
  int max_tokens_ = 0;
  std::vector<TokenPos> tokens_host_;
  std::vector<int32_t> rows_host_;
  std::vector<float> rope_host_;
  // Recorded work by (key, tokens, logit rows, attention span bucket): how
  // often it ran, its graph once captured, or that capture failed.
  // Capturing: the compute stream is being recorded, so a table write
  // would be frozen into the graph: it breaks the capture instead.
  struct Recorded {
    int seen = 0;
    cudaGraphExec_t exec = nullptr;
    bool failed = false;
  };
  static constexpr size_t kMaxGraphs = 1024;  // a long-running server meets many shapes
  std::map<std::tuple<uint64_t, size_t, size_t, int>, Recorded> graphs_;
  size_t step_tokens_ = 0, step_rows_ = 0;
  int step_span_bucket_ = 0;
  bool capturing_ = false, capture_broken_ = false, capture_failure_told_ = false;
  uint64_t graphs_captured_ = 0;
  // Logits come back through a pinned buffer (grown on demand).
  void* bounce_ = nullptr;
  uint64_t bounce_bytes_ = 0;
  // Stats: copy time from events around each copy; compute time from the
  // first kernel after the host last waited to the end of CopyToHost, less
  // the time the compute stream stood at waits on the copy stream.
  struct Timed {
    cudaEvent_t begin, end;
    bool copy;  // else a compute-side wait
  };
  std::vector<cudaEvent_t> timing_pool_;
  std::deque<Timed> pending_;
  cudaEvent_t step_begin_ = nullptr;
  bool compute_running_ = false;
  DeviceStats stats_;
  double waits_in_step_s_ = 0;
};

}  // namespace ferry::backend
