// The memory planner: which layers live in GPU memory, byte-exact, from the
// GGUF header alone, and how fast that placement will run. Every byte the
// device will hold is named here by category, with the same layout rules
// the executor allocates by (exec/forward.cc); nothing reads tensor data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/gguf/gguf.h"
#include "engine/model/config.h"

namespace ferry::plan {

struct DeviceSpec {
  std::string name;
  uint64_t memory_bytes = 0;      // what the device has
  uint64_t overhead_bytes = 0;    // taken before ferry allocates (CUDA context: measured; sim: configured)
  double h2d_gbps = 25.0;         // host-to-device copy bandwidth
  double latency_us = 10.0;       // per copy
  double memory_gbps = 500.0;     // device memory bandwidth
  double tflops = 50.0;           // matrix throughput
};

// A named device profile (backend/profiles.h): "rtx4060-8g", "h100-80g", ...
absl::StatusOr<DeviceSpec> DeviceProfile(const std::string& name);
std::string DeviceProfileNames();

enum class Policy {
  kAuto,     // the most layers that fit the device's memory
  kLayers,   // exactly gpu_layers layers resident (and the head)
  kBudget,   // the most layers that fit gpu_memory bytes
};

struct PlanRequest {
  Policy policy = Policy::kAuto;
  int gpu_layers = 0;            // kLayers
  bool stream_head = false;      // kLayers with gpu_layers 0: nothing resident, the head streamed too
  uint64_t gpu_memory = 0;       // kBudget
  int n_ctx = 4096;              // positions per slot
  int n_slots = 1;               // concurrent sequences
  int kv_bytes_per_elem = 2;     // f16 cache
  int max_batch = 512;           // tokens per step (sizes the activation workspace)
  int ring_depth = 2;            // staging slots for streamed layers
  double margin_fraction = 0.02; // safety margin, of the device memory
};

// How one unit (a layer, or the head) sits in device memory. Its matrices
// are copied as one span of the file when they lie together in it (the
// gaps between them at most 1/8 of their bytes): one host-to-device copy
// per unit instead of one per tensor, which matters when every copy pays a
// fixed latency. Otherwise each matrix gets its own 256-byte-aligned range.
// The f32 vectors (norms, biases) follow, each 256-byte aligned.
struct UnitSpan {
  bool contiguous = false;
  uint64_t begin = 0;  // file offset of the span (contiguous)
  uint64_t bytes = 0;  // span bytes (contiguous)
};
// `matrices`: (offset in the file, bytes) of the unit's matrices.
UnitSpan SpanOf(const std::vector<std::pair<uint64_t, uint64_t>>& matrices);
// The unit's device bytes under that rule; `vector_bytes` are the f32 sizes.
uint64_t UnitDeviceBytes(const std::vector<std::pair<uint64_t, uint64_t>>& matrices,
                         const std::vector<uint64_t>& vector_bytes);

// Device bytes of one tensor: matrices as stored, 1-D tensors (norms,
// biases) as f32, each range 256-byte aligned.
uint64_t DeviceTensorBytes(const gguf::TensorInfo& tensor);

// The activation buffers of one step, in floats, each its own allocation.
struct Workspace {
  uint64_t x = 0, xn = 0, out = 0;  // residual, normed, layer output: (batch, n_embd)
  uint64_t q = 0, attn = 0;         // (batch, q_dim)
  uint64_t k = 0, v = 0;            // (batch, kv_dim), (batch, v_dim)
  uint64_t gate = 0, up = 0;        // (batch, n_ff)
  uint64_t logits = 0;              // (batch, n_vocab)
  uint64_t scores = 0;              // attention: (batch, n_head, n_ctx)
  uint64_t bytes() const;           // the sum, each buffer aligned
};
Workspace WorkspaceFor(const model::ModelConfig& config, int max_batch, int n_ctx);
// The largest matrix's rows and widths, for the kernels' scratch
// (backend/scratch.h), which the plan counts in the workspace.
int64_t MaxMatrixRows(const model::ModelConfig& config);
int64_t MaxMatrixWidth(const model::ModelConfig& config);

// Host memory a step reads and writes through the device's page-locked
// buffers: the embedding rows it gathers (max_batch x n_embd floats) and the
// logits that come back (n_slots rows of n_vocab floats). The executor
// holds exactly this.
uint64_t HostStepBufferBytes(const model::ModelConfig& config, int max_batch, int n_slots);

// A size no device has (1 EiB): what a product that overflows, or comes
// near overflowing, is reported as, so that sums of plan sizes stay exact.
constexpr uint64_t kUnplannableBytes = 1ull << 60;

// One layer's K or V cache: (n_slots, n_ctx, width) elements, aligned;
// kUnplannableBytes when that is 2^60 bytes or more.
uint64_t KvLayerBytes(int n_ctx, int n_slots, int width, int bytes_per_elem);

// Which layers stay on the device when `resident_layers` of `n_layer` do:
// the streamed ones are spread evenly over the step (Bresenham: layer l is
// streamed when floor((l+1) S / n) > floor(l S / n), S = n - resident), so
// the copy queue refills a slot while the resident layers between two
// streamed ones compute, instead of idling through a resident block and
// then holding compute up at a streamed tail. The planner, the executor and
// the speed model all use this one rule.
bool LayerResident(int layer, int n_layer, int resident_layers);

struct Plan {
  int n_layers = 0;
  int resident_layers = 0;       // this many layers stay on the device (LayerResident says which)
  bool head_resident = false;    // output norm + output matrix: the first unit to become resident
  int ring_depth = 0;            // staging slots in use: min(requested, streamed units)
  uint64_t slot_bytes = 0;       // the largest streamed unit
  // Device bytes by category; total = their sum.
  uint64_t weights_resident = 0; // resident layers + head
  uint64_t staging = 0;          // ring_depth x slot_bytes
  uint64_t kv_cache = 0;
  uint64_t workspace = 0;
  uint64_t overhead = 0;
  uint64_t margin = 0;
  uint64_t total = 0;
  uint64_t budget = 0;           // what the plan had to fit in
  // Page-locked host memory held while serving: the streamed units packed
  // as they sit in a slot, plus the step's buffers (host_step_buffers).
  uint64_t host_pinned = 0;
  // The embedding rows a step gathers (max_batch x n_embd floats) and the
  // logits that come back (n_slots rows of n_vocab floats).
  uint64_t host_step_buffers = 0;
  // Model bytes, as in the file.
  uint64_t model_bytes = 0;      // every tensor in the file
  uint64_t layer_bytes_total = 0;
  uint64_t head_bytes = 0;       // output, output_norm, rope_freqs (+ token_embd when tied)
  uint64_t embedding_bytes = 0;  // stays on the host: only the rows a step needs are copied
  std::vector<uint64_t> layer_bytes;
  // The same on the device (DeviceTensorBytes), and parameters for the speed model.
  std::vector<uint64_t> layer_device_bytes;
  uint64_t head_device_bytes = 0;
  std::vector<uint64_t> layer_params;
  uint64_t head_params = 0;
  // Device bytes over the GPU decode kernel's efficiency for each tensor's
  // type (KernelEfficiency): what the speed model divides by the device's
  // memory bandwidth.
  std::vector<double> layer_kernel_bytes;
  double head_kernel_bytes = 0;

  double gpu_fraction() const;   // share of the layers' and head's device bytes resident
};

// Plans `request` on `device` from the model's header. kLayers with more
// than fits fails with an error that says how much is missing and what to
// change; kAuto/kBudget choose the most that fits: the head first, then
// layers (possibly nothing resident).
absl::StatusOr<Plan> MakePlan(const gguf::File& file, const model::ModelConfig& config, const PlanRequest& request,
                              const DeviceSpec& device);

// What the host can do for the speed model: the weight bandwidth and the
// arithmetic rate ferry's own CPU kernels reach.
struct HostSpec {
  double memory_gbps = 20.0;  // decode: weight bytes read per second
  double gflops = 100.0;      // prefill: matrix arithmetic per second
};
// Measures both with ferry's matmul kernels (a 64 MiB q8_0 matrix at batch 1
// and batch 32; about a quarter of a second).
HostSpec MeasureHost(int threads);

struct Prediction {
  int batch = 1;
  double step_s = 0;           // one step of `batch` tokens with the plan's placement
  double tokens_per_s = 0;
  double copy_s = 0;           // of which the copy engine is busy
  double compute_s = 0;        // and the device computes
  double cpu_tokens_per_s = 0; // every layer on the CPU instead
  // The smallest batch at which streaming a non-resident layer beats
  // computing it on the CPU (0: streaming never wins below 4096).
  int stream_beats_cpu_from_batch = 0;
};

// The share of the device's copy bandwidth (read + write) that ferry's CUDA
// decode matvec reaches on weights of `type`: measured by tests/gpu/run.sh
// (cuda_kernel_bench, 1 x 16384 x 8192) on an H200 on 2026-11-26 with the
// matvec each type takes by default: the int8 one for q8_0 0.79, q4_K 0.62,
// q5_K 0.59, q4_0 0.57, q6_K 0.44 (the run of 03:05 UTC, after the fused
// launches); the float one for f16/bf16 0.90, f32 1.0 (it read 1.2), q5_1
// 0.20, q5_0 0.19, q4_1 0.18. Update it when the kernels change (the script
// prints the new figures).
double KernelEfficiency(quant::TensorType type);

// What a unit (layer or head) computed on the device costs beyond its
// weights' bytes: its ~14 small kernels (norms, rope, attention, adds,
// quantizing) and the gaps between launches, 45 us. Measured on the H200
// (2026-11-26): the 8B-shaped q8_0 model all resident took 4.60 ms of
// kernels a decode step at batch 1, its weights at the efficiency above
// 3.12 ms; 1.48 ms over 33 units.
inline constexpr double kUnitOverheadS = 45e-6;

// What the decode products compute per second at most (2 operations a
// parameter and token): each weight is dotted with every token's int8
// activations, so at a few tokens a step the kernels stop being bound by
// memory. Measured on the H200 (2026-11-26): the same model all resident at
// batch 8 took 8.43 ms of kernels a step, 6.94 ms beyond the per-unit
// overhead, for 8 x 2 x 8.0e9 operations: 18.5e12 a second. Capped by the
// profile's own matrix rate.
inline constexpr double kDecodeOpsPerS = 18.5e12;

// Roofline per unit (layer or head): time = max(kernel bytes / bandwidth,
// 2 x params x batch / flops), kernel bytes being the device bytes over
// KernelEfficiency; streamed units also need bytes / h2d + latency
// on the copy engine, which overlaps all compute (the ring runs ahead and
// wraps into the next step): step = max(sum of compute, sum of copies).
// Attention over the cache is not modelled (small at short contexts).
Prediction Predict(const Plan& plan, const DeviceSpec& device, const HostSpec& host, int batch);

// The same for prefill: steps of `tokens_per_step` prompt tokens. Above
// kMatVecMaxTokens the device decodes each weight chunk to an f32 tile that
// cuBLAS multiplies in TF32: each parameter costs its stored bytes plus
// kTileBytesPerParam of tile traffic (written, then read), at the full
// device bandwidth, against half the profile's (bf16) matrix rate. The
// H200 run of 2026-11-26: 8B q8_0 all resident, 128 prompt tokens in steps
// of 64, 2172 tok/s; this model says 3030 at its 3466 GB/s (0.72x).
inline constexpr double kTileBytesPerParam = 8.0;
Prediction PredictPrefill(const Plan& plan, const DeviceSpec& device, const HostSpec& host, int tokens_per_step);

}  // namespace ferry::plan
