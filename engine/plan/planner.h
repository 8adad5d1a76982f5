// The memory planner: which layers live in GPU memory, byte-exact, from the
// GGUF header alone, and how fast that placement will run. Every byte the
// device will hold is named here by category, with the same layout rules
// the executor allocates by (exec/forward.cc); nothing reads tensor data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/device_spec.h"
#include "engine/gguf/gguf.h"
#include "engine/model/config.h"
#include "engine/plan/host.h"
#include "engine/plan/placement.h"

namespace ferry::plan {

using backend::DeviceSpec;  // a device's figures (backend/device_spec.h)

// The figures the speed model uses: the device's, and where it does not
// know one (0), a typical card's: 25 GB/s host-to-device, 10 us a copy,
// 500 GB/s of memory bandwidth, 50 TFLOPS.
DeviceSpec Assumed(const DeviceSpec& device);

enum class Policy {
  kAuto,     // the most layers that fit the device's memory
  kLayers,   // exactly gpu_layers layers resident (and the head)
  kBudget,   // the most layers that fit gpu_memory bytes
};

// Where the units that are not resident go.
enum class Strategy {
  kStream,  // all streamed over PCIe every step
  kCpu,     // all computed on the CPU from host memory, as llama.cpp (LM Studio) offloads
  kMixed,   // some of each, both at once: the split the speed model predicts fastest at `batch`
};
const char* StrategyName(Strategy strategy);
absl::StatusOr<Strategy> ParseStrategy(absl::string_view name);  // stream, cpu, mixed

// Kernels a unit runs on the CPU (a layer's norms, products, rope, cache
// store, attention, gating and adds; the head has fewer): what their fixed
// costs add up to, with HostSpec::kernel_s.
inline constexpr int kCpuKernelsPerUnit = 14;

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
  Strategy strategy = Strategy::kStream;
  int cpu_layers = -1;           // kMixed: exactly this many of the non-resident layers on the CPU; -1: fastest
  int batch = 1;                 // kMixed: tokens a decode step carries (the slots a server keeps busy)
  HostSpec host;                 // kMixed: the CPU's speed (MeasureHost)
  uint64_t host_available = 0;   // host memory a plan may take (Plan::host_total); 0: not checked
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

struct Plan {
  // What the executor takes: every unit's home and the ring; the three
  // fields after it summarize it.
  Placement placement;
  int n_layers = 0;
  int resident_layers = 0;       // this many layers stay on the device (LayerResident says which)
  bool head_resident = false;    // output norm + output matrix: the first unit to become resident
  int ring_depth = 0;            // staging slots in use: min(requested, streamed units)
  int cpu_layers = 0;            // layers computed on the CPU
  Strategy strategy = Strategy::kStream;
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
  // The embedding rows a step gathers (max_batch x n_embd floats), the
  // logits that come back (n_slots rows of n_vocab floats) and, with units
  // on the CPU, the residual stream that crosses (max_batch x n_embd).
  uint64_t host_step_buffers = 0;
  // Host memory the units on the CPU hold: their matrices copied into the
  // CPU kernels' layout (regrouped), what they read where it is (matrices
  // of types without such a layout, from the file's pages; vectors), and
  // their KV cache.
  uint64_t host_cpu_weights = 0;
  uint64_t host_cpu_mapped = 0;
  uint64_t host_cpu_kv = 0;
  uint64_t host_total() const { return host_pinned + host_cpu_weights + host_cpu_mapped + host_cpu_kv; }
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
  // Each unit's matrices by weight type, as the file stores them: what the
  // speed model prices a product on the host's CPU by (HostSpec); [n_layers]:
  // the head.
  struct TypeBytes {
    quant::TensorType type = quant::TensorType::kF32;
    uint64_t bytes = 0;
    uint64_t params = 0;
    int matrices = 0;
  };
  std::vector<std::vector<TypeBytes>> unit_types;
  // Each unit's host bytes on the CPU (host_cpu_weights' and
  // host_cpu_mapped's rules); [n_layers]: the head.
  std::vector<uint64_t> unit_cpu_bytes, unit_cpu_mapped;
  // What every placement shares: one layer's KV cache, the step's host
  // buffers, the residual stream that crosses to units on the CPU.
  uint64_t kv_layer_bytes = 0;
  uint64_t step_buffer_bytes = 0;
  uint64_t crossing_bytes = 0;

  // Sets `placement` (resolved for this model) and every byte count that
  // follows from it: resident weights, ring, KV cache, host memory, total.
  void Place(const Placement& placement);

  double gpu_fraction() const;   // share of the layers' and head's device bytes resident
};

// Plans `request` on `device` from the model's header. kLayers with more
// than fits fails with an error that says how much is missing and what to
// change; kAuto/kBudget choose the most that fits: the head first, then
// layers (possibly nothing resident). The units left over are streamed,
// computed on the CPU or split between the two by request.strategy: the
// split's CPU units spread evenly among them (Spread), and kMixed weighs
// every split of every resident count that fits by Predict at
// request.batch. On a device whose memory is the host's (cpu) every unit
// is resident, whatever the policy. A device whose kernels are the host's
// (sim) is planned as the card its figures describe (host_kernels is left
// out), so its placements are that card's; Predict given it costs the run
// as it runs.
absl::StatusOr<Plan> MakePlan(const gguf::File& file, const model::ModelConfig& config, const PlanRequest& request,
                              const DeviceSpec& device);

// A step as the executor runs it, given each unit's time on the compute
// side (the device's kernels, or the CPU's for its units: one chain, in the
// step's order) and each streamed unit's copy (0: not streamed). The copy
// queue copies the streamed units in order, wrapping into the next step,
// into `depth` staging slots; a slot is free again once the unit that read
// it has been computed, and a streamed unit is computed once its copy is
// in. So a step takes max(copy, compute) only where the ring lets one hide
// the other: work bunched in one place (a large head computed while the
// ring is full) leaves the copy queue idle. The steady state: the third of
// three steps, from the second's end. Predict's step_s.
double PipelinedStep(const std::vector<double>& compute, const std::vector<double>& copy, int depth);

struct Prediction {
  int batch = 1;
  double step_s = 0;           // one step of `batch` tokens with the plan's placement
  double tokens_per_s = 0;
  double copy_s = 0;           // of which the copy engine is busy
  double compute_s = 0;        // and the device computes
  double cpu_s = 0;            // and the CPU computes (units placed there)
  double cpu_tokens_per_s = 0; // every layer on the CPU instead
  // The smallest batch at which streaming a non-resident layer beats
  // computing it on the CPU (0: streaming never wins below 4096).
  int stream_beats_cpu_from_batch = 0;
};

// The share of the device's copy bandwidth (read + write) that ferry's CUDA
// decode matvec reaches on weights of `type`, with the matvec each type
// takes by default, as tests/gpu/run.sh's kernel stage measures it (the
// values and the run: docs/measurements.md). Update both when the kernels
// change (the script prints the new figures).
double KernelEfficiency(quant::TensorType type);

// What a unit (layer or head) computed on the device costs beyond its
// weights' bytes: its ~14 small kernels (norms, rope, attention, adds,
// quantizing) and the gaps between launches: a decode step's kernel time
// less its weights' time over the units, on an H200 (docs/measurements.md).
inline constexpr double kUnitOverheadS = 45e-6;

// What the decode products compute per second at most (2 operations a
// parameter and token): each weight is dotted with every token's int8
// activations, so at a few tokens a step the kernels stop being bound by
// memory. From a batch-8 step on an H200 (docs/measurements.md); capped by
// the profile's own matrix rate.
inline constexpr double kDecodeOpsPerS = 18.5e12;

// Roofline per unit (layer or head) on the device: time = max(kernel bytes
// / bandwidth, 2 x params x batch / flops), kernel bytes being the device
// bytes over KernelEfficiency; streamed units also need bytes / h2d +
// latency on the copy engine. Units on the CPU cost what the host measured
// (HostSpec: a layer of its kind run whole, else its products' curves plus
// kCpuKernelsPerUnit fixed costs and its other work), and a copy latency
// each way where the residual stream crosses; on a device whose kernels are
// the host's (the sim) every unit costs the same in the file's layout, and
// a streamed one also its copy engine's memcpy (HostSpec::copy_gbps). The
// step: those times played through the ring (PipelinedStep). On the device,
// attention over the cache is not modelled (small at short contexts).
Prediction Predict(const Plan& plan, const DeviceSpec& device, const HostSpec& host, int batch);

// The same for prefill: steps of `tokens_per_step` prompt tokens. Above
// kMatVecMaxTokens the device decodes each weight chunk to an f32 tile that
// cuBLAS multiplies in TF32: each parameter costs its stored bytes plus
// kTileBytesPerParam of tile traffic (written, then read), at the full
// device bandwidth, against half the profile's (bf16) matrix rate (it
// predicts 1.4x what an H200 measured: docs/measurements.md).
inline constexpr double kTileBytesPerParam = 8.0;
Prediction PredictPrefill(const Plan& plan, const DeviceSpec& device, const HostSpec& host, int tokens_per_step);

}  // namespace ferry::plan
