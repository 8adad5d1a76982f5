#include "engine/plan/planner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <initializer_list>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/backend/arena.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/backend/profiles.h"
#include "engine/backend/scratch.h"
#include "engine/quant/quantize.h"
#include "engine/units.h"

namespace ferry::plan {

using backend::AlignDevice;

// Sizes from the request (context, slots, batch: ints up to 2^31) times the
// model's (dimensions up to 2^30) overflow 64 bits. Products and sums of
// plan sizes saturate at kUnplannableBytes instead of wrapping, and MakePlan
// refuses a plan that reaches it; below it every sum of a few terms is exact.
uint64_t SatMul(std::initializer_list<uint64_t> factors) {
  uint64_t out = 1;
  for (const uint64_t f : factors) {
    if (__builtin_mul_overflow(out, f, &out) || out >= kUnplannableBytes) return kUnplannableBytes;
  }
  return out;
}
uint64_t SatAdd(uint64_t a, uint64_t b) { return std::min(a + b, kUnplannableBytes); }  // a, b <= 2^60

absl::StatusOr<DeviceSpec> DeviceProfile(const std::string& name) {
  absl::StatusOr<backend::GpuProfile> p = backend::FindGpuProfile(name);
  if (!p.ok()) return p.status();
  return DeviceSpec{p->name, p->memory_bytes, p->overhead_bytes, p->h2d_gbps, p->copy_latency_us, p->memory_gbps,
                    p->tflops};
}

std::string DeviceProfileNames() { return backend::GpuProfileNames(); }

double Plan::gpu_fraction() const {
  uint64_t all = head_device_bytes;
  for (uint64_t b : layer_device_bytes) all += b;
  return all == 0 ? 0.0 : static_cast<double>(weights_resident) / static_cast<double>(all);
}

uint64_t DeviceTensorBytes(const gguf::TensorInfo& t) {
  const bool vector = t.n_dims <= 1 || t.elements == t.dims[0];
  return AlignDevice(vector ? t.elements * sizeof(float) : t.bytes);
}

UnitSpan SpanOf(const std::vector<std::pair<uint64_t, uint64_t>>& matrices) {
  UnitSpan s;
  if (matrices.empty()) return s;
  uint64_t begin = UINT64_MAX, end = 0, sum = 0;
  for (const auto& [offset, bytes] : matrices) {
    begin = std::min(begin, offset);
    end = std::max(end, offset + bytes);
    sum += bytes;
  }
  if (end - begin <= sum + sum / 8) {
    s.contiguous = true;
    s.begin = begin;
    s.bytes = end - begin;
  }
  return s;
}

uint64_t UnitDeviceBytes(const std::vector<std::pair<uint64_t, uint64_t>>& matrices,
                         const std::vector<uint64_t>& vector_bytes) {
  uint64_t total = 0;
  const UnitSpan span = SpanOf(matrices);
  if (span.contiguous) {
    total += AlignDevice(span.bytes);
  } else {
    for (const auto& m : matrices) total += AlignDevice(m.second);
  }
  for (uint64_t v : vector_bytes) total += AlignDevice(v);
  return total;
}

uint64_t Workspace::bytes() const {
  uint64_t sum = 0;
  for (uint64_t floats : {x, xn, out, q, attn, k, v, gate, up, logits, scores}) {
    sum = SatAdd(sum, AlignDevice(SatMul({floats, sizeof(float)})));
  }
  return sum;
}

uint64_t HostStepBufferBytes(const model::ModelConfig& c, int max_batch, int n_slots) {
  return SatMul({SatAdd(SatMul({static_cast<uint64_t>(std::max(max_batch, 0)), static_cast<uint64_t>(c.n_embd)}),
                        SatMul({static_cast<uint64_t>(std::max(n_slots, 0)), static_cast<uint64_t>(c.n_vocab)})),
                 sizeof(float)});
}

int64_t MaxMatrixRows(const model::ModelConfig& c) {
  return std::max({c.n_vocab, c.n_ff, c.n_embd, c.q_dim(), c.kv_dim(), c.v_dim()});
}

int64_t MaxMatrixWidth(const model::ModelConfig& c) { return std::max({c.n_embd, c.n_ff, c.q_dim()}); }

Workspace WorkspaceFor(const model::ModelConfig& c, int max_batch, int n_ctx) {
  const uint64_t B = std::max(max_batch, 0);
  auto dim = [](int64_t d) { return static_cast<uint64_t>(std::max<int64_t>(d, 0)); };
  Workspace w;
  w.x = w.xn = w.out = SatMul({B, dim(c.n_embd)});
  w.q = w.attn = SatMul({B, dim(c.q_dim())});
  w.k = SatMul({B, dim(c.kv_dim())});
  w.v = SatMul({B, dim(c.v_dim())});
  w.gate = w.up = SatMul({B, dim(c.n_ff)});
  w.logits = SatMul({B, dim(c.n_vocab)});
  w.scores = SatMul({B, dim(c.n_head), dim(n_ctx)});
  return w;
}

double KernelEfficiency(quant::TensorType type) {
  using quant::TensorType;
  switch (type) {
    case TensorType::kF32: return 1.0;
    case TensorType::kF16: case TensorType::kBF16: return 0.90;
    // The next five on the int8 matvec (the default), the rest on the float one.
    case TensorType::kQ8_0: return 0.79;
    case TensorType::kQ4_K: return 0.62;
    case TensorType::kQ5_K: return 0.59;
    case TensorType::kQ4_0: return 0.57;
    case TensorType::kQ6_K: return 0.44;
    case TensorType::kQ5_1: return 0.20;
    case TensorType::kQ5_0: return 0.19;
    case TensorType::kQ4_1: return 0.18;
    default: return 1.0;  // no kernel measured: the bandwidth bound
  }
}

bool LayerResident(int layer, int n_layer, int resident_layers) {
  if (resident_layers >= n_layer) return true;
  if (resident_layers <= 0) return false;
  const int64_t streamed = n_layer - resident_layers;
  return (static_cast<int64_t>(layer) + 1) * streamed / n_layer == static_cast<int64_t>(layer) * streamed / n_layer;
}

uint64_t KvLayerBytes(int n_ctx, int n_slots, int width, int bytes_per_elem) {
  // Four ints multiply past 64 bits (2^31 each): saturated, never wrapped
  // to a small size that would plan, or allocate, as if it fit.
  if (n_ctx < 0 || n_slots < 0 || width < 0 || bytes_per_elem < 0) return kUnplannableBytes;
  return AlignDevice(SatMul({static_cast<uint64_t>(n_ctx), static_cast<uint64_t>(n_slots), static_cast<uint64_t>(width),
                             static_cast<uint64_t>(bytes_per_elem)}));
}

absl::StatusOr<Plan> MakePlan(const gguf::File& file, const model::ModelConfig& c, const PlanRequest& r,
                              const DeviceSpec& device) {
  if (r.n_ctx <= 0 || r.n_slots <= 0 || r.max_batch <= 0 || r.ring_depth <= 0 || r.kv_bytes_per_elem <= 0) {
    return absl::InvalidArgumentError("plan: context, slots, batch, ring depth and KV element size must be positive");
  }
  Plan p;
  p.n_layers = c.n_layer;
  p.layer_bytes.assign(c.n_layer, 0);
  p.layer_device_bytes.assign(c.n_layer, 0);
  p.layer_params.assign(c.n_layer, 0);
  p.layer_kernel_bytes.assign(c.n_layer, 0.0);
  // Every tensor's bytes, by where it belongs; device bytes per unit by
  // the layout rule the executor uses (UnitDeviceBytes).
  std::vector<std::vector<std::pair<uint64_t, uint64_t>>> matrices(c.n_layer + 1);  // [n_layer]: the head
  std::vector<std::vector<uint64_t>> vectors(c.n_layer + 1);
  // Vectors are f32 on the device and read at the full bandwidth; matrices
  // at their kernel's efficiency.
  auto device_part = [&](const gguf::TensorInfo& t, int unit) {
    double& kernel = unit == c.n_layer ? p.head_kernel_bytes : p.layer_kernel_bytes[unit];
    if (t.n_dims <= 1 || t.elements == t.dims[0]) {
      vectors[unit].push_back(t.elements * sizeof(float));
      kernel += static_cast<double>(vectors[unit].back());
    } else {
      matrices[unit].push_back({t.offset, t.bytes});
      kernel += static_cast<double>(t.bytes) / KernelEfficiency(t.type);
    }
  };
  for (const gguf::TensorInfo& t : file.tensors()) {
    p.model_bytes += t.bytes;
    const absl::string_view name = t.name;
    if (const int layer = model::LayerIndex(name); layer >= 0) {
      if (layer >= c.n_layer) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' names a layer outside 0..", c.n_layer - 1));
      }
      p.layer_bytes[layer] += t.bytes;
      device_part(t, layer);
      p.layer_params[layer] += t.elements;
    } else if (name == "token_embd.weight") {
      p.embedding_bytes += t.bytes;
      if (c.tied_output) {  // the head computes with the embedding matrix: it must be on the device
        p.head_bytes += t.bytes;
        device_part(t, c.n_layer);
        p.head_params += t.elements;
      }
    } else {
      p.head_bytes += t.bytes;
      // rope_freqs builds the host's rotation table; the rest runs on the device every step.
      if (name != "rope_freqs.weight") {
        device_part(t, c.n_layer);
        p.head_params += t.elements;
      }
    }
  }
  for (int l = 0; l < c.n_layer; ++l) p.layer_device_bytes[l] = UnitDeviceBytes(matrices[l], vectors[l]);
  p.head_device_bytes = UnitDeviceBytes(matrices[c.n_layer], vectors[c.n_layer]);
  for (uint64_t b : p.layer_bytes) p.layer_bytes_total += b;

  // Fixed costs, whatever the placement.
  p.kv_cache = SatMul({static_cast<uint64_t>(c.n_layer),
                       SatAdd(KvLayerBytes(r.n_ctx, r.n_slots, c.kv_dim(), r.kv_bytes_per_elem),
                              KvLayerBytes(r.n_ctx, r.n_slots, c.v_dim(), r.kv_bytes_per_elem))});
  if (p.kv_cache >= kUnplannableBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the KV cache of ", c.n_layer, " layers x ", r.n_ctx, " positions x ", r.n_slots, " slots x (", c.kv_dim(),
        " + ", c.v_dim(), ") values x ", r.kv_bytes_per_elem,
        " bytes is beyond any device (2^60 bytes or more); use a smaller --ctx or fewer --slots"));
  }
  p.workspace = SatAdd(WorkspaceFor(c, r.max_batch, r.n_ctx).bytes(),
                       backend::KernelScratchFor(MaxMatrixRows(c), MaxMatrixWidth(c), r.max_batch).bytes());
  if (p.workspace >= kUnplannableBytes || HostStepBufferBytes(c, r.max_batch, r.n_slots) >= kUnplannableBytes) {
    return absl::InvalidArgumentError(absl::StrCat("a step of ", r.max_batch, " tokens over ", r.n_slots,
                                                   " slots at a context of ", r.n_ctx,
                                                   " needs buffers beyond any device (2^60 bytes or more); use a "
                                                   "smaller --batch, --ctx or fewer --slots"));
  }
  p.overhead = device.overhead_bytes;
  p.margin = static_cast<uint64_t>(r.margin_fraction * static_cast<double>(device.memory_bytes));
  p.budget = r.policy == Policy::kBudget ? std::min(r.gpu_memory, device.memory_bytes) : device.memory_bytes;

  // The device bytes with `units` resident: 0 = nothing, 1 = the head,
  // 1 + n = the head and n layers (LayerResident).
  auto fill = [&](int units) {
    uint64_t resident = 0, slot = 0, pinned = 0;
    int streamed = 0;
    p.head_resident = units > 0;
    p.resident_layers = std::max(0, units - 1);
    if (p.head_resident) {
      resident += p.head_device_bytes;
    } else {
      slot = p.head_device_bytes;
      pinned += AlignDevice(p.head_device_bytes);  // packed as it sits in a slot, as the executor does
      ++streamed;
    }
    for (int l = 0; l < c.n_layer; ++l) {
      if (LayerResident(l, c.n_layer, p.resident_layers)) {
        resident += p.layer_device_bytes[l];
      } else {
        slot = std::max(slot, p.layer_device_bytes[l]);
        pinned += AlignDevice(p.layer_device_bytes[l]);
        ++streamed;
      }
    }
    p.weights_resident = resident;
    p.ring_depth = std::min(r.ring_depth, streamed);
    p.slot_bytes = streamed > 0 ? slot : 0;
    p.staging = static_cast<uint64_t>(p.ring_depth) * p.slot_bytes;
    p.host_step_buffers = HostStepBufferBytes(c, r.max_batch, r.n_slots);
    p.host_pinned = pinned + p.host_step_buffers;
    p.total = p.weights_resident + p.staging + p.kv_cache + p.workspace + p.overhead + p.margin;
  };

  if (r.policy == Policy::kLayers) {
    if (r.gpu_layers < 0 || r.gpu_layers > c.n_layer) {
      return absl::InvalidArgumentError(absl::StrCat("--gpu_layers ", r.gpu_layers, ": the model has ", c.n_layer,
                                                     " layers"));
    }
    if (r.stream_head && r.gpu_layers != 0) {
      return absl::InvalidArgumentError("the head becomes resident before any layer: a streamed head needs 0 layers");
    }
    const int head = r.stream_head ? 0 : 1;
    fill(head + r.gpu_layers);
    if (p.total > p.budget) {
      int fits = -1;
      for (int n = r.gpu_layers - 1; n >= 0 && fits < 0; --n) {
        fill(1 + n);
        if (p.total <= p.budget) fits = n;
      }
      fill(head + r.gpu_layers);
      return absl::ResourceExhaustedError(absl::StrCat(
          r.gpu_layers, " resident layers need ", HumanBytes(p.total), " on ", device.name, " (", HumanBytes(p.budget),
          "): ", HumanBytes(p.total - p.budget), " missing. ",
          fits >= 0 ? absl::StrCat("At most ", fits, " layers fit at this context; ")
                    : std::string("Not even the head, KV cache and workspace fit; "),
          "use fewer --gpu_layers, a smaller --ctx (KV cache ", HumanBytes(p.kv_cache), ") or fewer --slots"));
    }
    return p;
  }
  // Auto and budget: the most units that fit, the head first.
  for (int units = c.n_layer + 1; units >= 0; --units) {
    fill(units);
    if (p.total <= p.budget) return p;
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "even with every layer streamed, the staging ring, KV cache and workspace need ", HumanBytes(p.total), " on ",
      device.name, " (", HumanBytes(p.budget), "): ", HumanBytes(p.total - p.budget),
      " missing; use a smaller --ctx (KV cache ", HumanBytes(p.kv_cache), "), fewer --slots, a smaller --batch (workspace ",
      HumanBytes(p.workspace), ") or a shallower --ring (staging ", HumanBytes(p.staging), ")"));
}

HostSpec MeasureHost(int threads) {
  constexpr int64_t kCols = 4096, kRows = 16384;  // 64 MiB of q8_0 blocks, past every cache
  const uint64_t row_bytes = *quant::RowBytes(quant::TensorType::kQ8_0, kCols);
  std::vector<uint8_t> data(row_bytes * kRows);
  std::vector<float> row(kCols);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (float& v : row) v = normal(rng);
  for (int64_t r = 0; r < kRows; ++r) {
    (void)quant::QuantizeRow(quant::TensorType::kQ8_0, row, std::span(data.data() + r * row_bytes, row_bytes));
  }
  // In the layout the cpu device computes on (rows grouped by 8).
  std::vector<uint8_t> grouped(cpu::GroupBytes(quant::TensorType::kQ8_0, kCols) * (kRows / cpu::kGroupRows));
  for (int64_t g = 0; g < kRows / cpu::kGroupRows; ++g) {
    cpu::GroupRows(quant::TensorType::kQ8_0, data.data() + g * cpu::kGroupRows * row_bytes, row_bytes, kCols,
                   grouped.data() + g * cpu::GroupBytes(quant::TensorType::kQ8_0, kCols));
  }
  model::Matrix m{grouped.data(), quant::TensorType::kQ8_0, kCols, kRows, data.size(), "probe"};
  m.group_bytes = cpu::GroupBytes(quant::TensorType::kQ8_0, kCols);
  constexpr int kBatch = 32;
  std::vector<float> x(kCols * kBatch, 0.5f), y(kRows * kBatch);
  cpu::ThreadPool pool(threads);
  cpu::MatMulScratch scratch(pool.size(), kCols, kBatch);
  auto best_of = [&](int tokens, int reps) {
    double best = 1e30;
    for (int i = 0; i < reps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      cpu::MatMul(m, x.data(), kCols, tokens, y.data(), kRows, pool, scratch);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  best_of(1, 1);  // fault the pages in
  HostSpec h;
  h.memory_gbps = static_cast<double>(data.size()) / best_of(1, 3) / 1e9;
  h.gflops = 2.0 * kRows * kCols * kBatch / best_of(kBatch, 2) / 1e9;
  return h;
}

namespace {

// Predict and PredictPrefill: decode products read the weights in place at
// the kernels' efficiency; a GEMM step (prefill) adds the f32 tile's
// traffic and runs at the TF32 rate.
Prediction Roofline(const Plan& p, const DeviceSpec& d, const HostSpec& host, int batch, bool gemm) {
  Prediction out;
  out.batch = batch;
  const double flops = gemm ? d.tflops * 1e12 * 0.5 : std::min(d.tflops * 1e12, kDecodeOpsPerS);
  const double hbm = d.memory_gbps * 1e9, h2d = d.h2d_gbps * 1e9;
  const double cpu_bw = host.memory_gbps * 1e9, cpu_flops = host.gflops * 1e9;
  double compute = 0, copy = 0, cpu = 0;
  auto unit = [&](uint64_t device_bytes, double kernel_bytes, uint64_t file_bytes, uint64_t params, bool resident) {
    const double work = 2.0 * static_cast<double>(params) * batch;
    const double read = gemm ? device_bytes + kTileBytesPerParam * static_cast<double>(params) : kernel_bytes;
    compute += std::max(read / hbm, work / flops) + kUnitOverheadS;
    if (!resident) copy += d.latency_us * 1e-6 + device_bytes / h2d;
    cpu += std::max(file_bytes / cpu_bw, work / cpu_flops);
  };
  unit(p.head_device_bytes, p.head_kernel_bytes, p.head_bytes, p.head_params, p.head_resident);
  for (int l = 0; l < p.n_layers; ++l) {
    unit(p.layer_device_bytes[l], p.layer_kernel_bytes[l], p.layer_bytes[l], p.layer_params[l],
         LayerResident(l, p.n_layers, p.resident_layers));
  }
  out.compute_s = compute;
  out.copy_s = copy;
  out.step_s = std::max(compute, copy);
  out.tokens_per_s = out.step_s > 0 ? batch / out.step_s : 0;
  out.cpu_tokens_per_s = cpu > 0 ? batch / cpu : 0;
  // A typical layer: streaming it costs its copy; the CPU costs its roofline.
  if (p.n_layers > 0) {
    const int l = p.n_layers - 1;
    const double copy_layer = d.latency_us * 1e-6 + p.layer_device_bytes[l] / h2d;
    for (int b = 1; b <= 4096; ++b) {
      const double on_cpu = std::max(p.layer_bytes[l] / cpu_bw, 2.0 * p.layer_params[l] * b / cpu_flops);
      if (on_cpu > copy_layer) {
        out.stream_beats_cpu_from_batch = b;
        break;
      }
    }
  }
  return out;
}

}  // namespace

Prediction Predict(const Plan& p, const DeviceSpec& d, const HostSpec& host, int batch) {
  return Roofline(p, d, host, batch, false);
}

Prediction PredictPrefill(const Plan& p, const DeviceSpec& d, const HostSpec& host, int tokens_per_step) {
  return Roofline(p, d, host, tokens_per_step, tokens_per_step > backend::kMatVecMaxTokens);
}

}  // namespace ferry::plan
