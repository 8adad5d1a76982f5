#include "engine/plan/planner.h"

#include <algorithm>
#include <cmath>
#include <initializer_list>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/backend/arena.h"
#include "engine/backend/cpu/qdot.h"
#include "engine/backend/scratch.h"
#include "engine/model/unit_tensors.h"
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

const char* StrategyName(Strategy s) {
  switch (s) {
    case Strategy::kStream: return "stream";
    case Strategy::kCpu: return "cpu";
    case Strategy::kMixed: return "mixed";
  }
  return "?";
}

absl::StatusOr<Strategy> ParseStrategy(absl::string_view name) {
  for (Strategy s : {Strategy::kStream, Strategy::kCpu, Strategy::kMixed}) {
    if (name == StrategyName(s)) return s;
  }
  return absl::InvalidArgumentError(absl::StrCat("placement '", name, "' is not one of stream, cpu, mixed"));
}

DeviceSpec Assumed(const DeviceSpec& device) {
  DeviceSpec d = device;
  if (d.h2d_gbps <= 0) d.h2d_gbps = 25.0;
  if (d.latency_us <= 0) d.latency_us = 10.0;
  if (d.memory_gbps <= 0) d.memory_gbps = 500.0;
  if (d.tflops <= 0) d.tflops = 50.0;
  return d;
}

void Plan::Place(const Placement& where) {
  placement = where;
  uint64_t resident = 0, slot = 0, pinned = 0, cpu_bytes = 0, cpu_mapped = 0;
  for (int u = 0; u <= n_layers; ++u) {
    const uint64_t bytes = u == n_layers ? head_device_bytes : layer_device_bytes[u];
    switch (placement.home(u)) {
      case Home::kResident: resident += bytes; break;
      case Home::kStreamed:
        slot = std::max(slot, bytes);
        pinned += AlignDevice(bytes);  // packed as it sits in a slot, as the executor does
        break;
      case Home::kCpu:
        cpu_bytes += unit_cpu_bytes[u];
        cpu_mapped += unit_cpu_mapped[u];
        break;
    }
  }
  head_resident = placement.head() == Home::kResident;
  resident_layers = placement.layers(Home::kResident);
  cpu_layers = placement.layers(Home::kCpu);
  weights_resident = resident;
  ring_depth = placement.ring_depth();
  slot_bytes = placement.count(Home::kStreamed) > 0 ? slot : 0;
  staging = static_cast<uint64_t>(ring_depth) * slot_bytes;
  kv_cache = static_cast<uint64_t>(n_layers - cpu_layers) * kv_layer_bytes;
  host_cpu_kv = static_cast<uint64_t>(cpu_layers) * kv_layer_bytes;
  host_cpu_weights = cpu_bytes;
  host_cpu_mapped = cpu_mapped;
  host_step_buffers = step_buffer_bytes + (placement.count(Home::kCpu) > 0 ? crossing_bytes : 0);
  host_pinned = pinned + host_step_buffers;
  total = weights_resident + staging + kv_cache + workspace + overhead + margin;
}

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

uint64_t KvLayerBytes(int n_ctx, int n_slots, int width, int bytes_per_elem) {
  // Four ints multiply past 64 bits (2^31 each): saturated, never wrapped
  // to a small size that would plan, or allocate, as if it fit.
  if (n_ctx < 0 || n_slots < 0 || width < 0 || bytes_per_elem < 0) return kUnplannableBytes;
  return AlignDevice(SatMul({static_cast<uint64_t>(n_ctx), static_cast<uint64_t>(n_slots), static_cast<uint64_t>(width),
                             static_cast<uint64_t>(bytes_per_elem)}));
}

absl::StatusOr<Plan> MakePlan(const gguf::File& file, const model::ModelConfig& c, const PlanRequest& r,
                              const DeviceSpec& spec) {
  DeviceSpec device = spec;
  device.host_kernels = false;  // planned as the card it imitates
  if (r.n_ctx <= 0 || r.n_slots <= 0 || r.max_batch <= 0 || r.ring_depth <= 0 || r.kv_bytes_per_elem <= 0) {
    return absl::InvalidArgumentError("plan: context, slots, batch, ring depth and KV element size must be positive");
  }
  Plan p;
  p.n_layers = c.n_layer;
  p.layer_bytes.assign(c.n_layer, 0);
  p.layer_device_bytes.assign(c.n_layer, 0);
  p.layer_params.assign(c.n_layer, 0);
  p.layer_kernel_bytes.assign(c.n_layer, 0.0);
  p.unit_types.assign(c.n_layer + 1, {});
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
  // The units' tensors by the table the loader and the executor use; the
  // embedding stays on the host (a step copies only its rows), rope_freqs
  // builds the host's rotation table.
  for (const gguf::TensorInfo& t : file.tensors()) p.model_bytes += t.bytes;
  for (int u = 0; u <= c.n_layer; ++u) {
    const bool head = u == c.n_layer;
    for (const model::UnitTensor* ut : model::TensorsOf(c, u)) {
      const std::string name = model::TensorName(c, *ut, u);
      const gguf::TensorInfo* t = file.FindTensor(name);
      if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' is missing"));
      (head ? p.head_bytes : p.layer_bytes[u]) += t->bytes;
      (head ? p.head_params : p.layer_params[u]) += t->elements;
      device_part(*t, u);
      if (ut->is_matrix()) {
        std::vector<Plan::TypeBytes>& types = p.unit_types[u];
        auto it = std::find_if(types.begin(), types.end(), [&](const Plan::TypeBytes& m) { return m.type == t->type; });
        if (it == types.end()) it = types.insert(types.end(), Plan::TypeBytes{t->type, 0, 0, 0});
        it->bytes += t->bytes;
        it->params += t->elements;
        ++it->matrices;
      }
    }
  }
  if (const gguf::TensorInfo* e = file.FindTensor("token_embd.weight"); e != nullptr) p.embedding_bytes = e->bytes;
  if (const gguf::TensorInfo* f = file.FindTensor("rope_freqs.weight"); f != nullptr) p.head_bytes += f->bytes;
  for (int l = 0; l < c.n_layer; ++l) p.layer_device_bytes[l] = UnitDeviceBytes(matrices[l], vectors[l]);
  p.head_device_bytes = UnitDeviceBytes(matrices[c.n_layer], vectors[c.n_layer]);
  for (uint64_t b : p.layer_bytes) p.layer_bytes_total += b;

  // Each layer's KV cache (on the device, or in host memory for a layer
  // on the CPU), and each unit's host bytes on the CPU: its matrices in the
  // CPU kernels' layout (or as the file stores them), its vectors as f32.
  // Request sizes times model sizes overflow 64 bits: KV and step buffers
  // past kUnplannableBytes are refused here, so every sum below is exact.
  const uint64_t kv_layer = SatAdd(KvLayerBytes(r.n_ctx, r.n_slots, c.kv_dim(), r.kv_bytes_per_elem),
                                   KvLayerBytes(r.n_ctx, r.n_slots, c.v_dim(), r.kv_bytes_per_elem));
  if (SatMul({static_cast<uint64_t>(c.n_layer), kv_layer}) >= kUnplannableBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the KV cache of ", c.n_layer, " layers x ", r.n_ctx, " positions x ", r.n_slots, " slots x (", c.kv_dim(),
        " + ", c.v_dim(), ") values x ", r.kv_bytes_per_elem,
        " bytes is beyond any device (2^60 bytes or more); use a smaller --ctx or fewer --slots"));
  }
  p.unit_cpu_bytes.assign(c.n_layer + 1, 0);
  p.unit_cpu_mapped.assign(c.n_layer + 1, 0);
  for (int u = 0; u <= c.n_layer; ++u) {
    for (const model::UnitTensor* ut : model::TensorsOf(c, u)) {
      const gguf::TensorInfo& t = *file.FindTensor(model::TensorName(c, *ut, u));
      const uint64_t grouped = ut->is_matrix() ? cpu::GroupedMatrixBytes(t.type, ut->rows(c), ut->cols(c)) : 0;
      p.unit_cpu_bytes[u] += grouped;
      p.unit_cpu_mapped[u] += !ut->is_matrix() ? t.elements * sizeof(float) : grouped > 0 ? 0 : t.bytes;
    }
  }
  p.kv_layer_bytes = kv_layer;
  p.step_buffer_bytes = HostStepBufferBytes(c, r.max_batch, r.n_slots);
  p.crossing_bytes = SatMul({static_cast<uint64_t>(std::max(r.max_batch, 0)), static_cast<uint64_t>(c.n_embd),
                             sizeof(float)});
  p.workspace = SatAdd(WorkspaceFor(c, r.max_batch, r.n_ctx).bytes(),
                       backend::KernelScratchFor(MaxMatrixRows(c), MaxMatrixWidth(c), r.max_batch).bytes());
  if (p.workspace >= kUnplannableBytes || p.step_buffer_bytes >= kUnplannableBytes) {
    return absl::InvalidArgumentError(absl::StrCat("a step of ", r.max_batch, " tokens over ", r.n_slots,
                                                   " slots at a context of ", r.n_ctx,
                                                   " needs buffers beyond any device (2^60 bytes or more); use a "
                                                   "smaller --batch, --ctx or fewer --slots"));
  }
  p.overhead = device.overhead_bytes;
  p.margin = static_cast<uint64_t>(r.margin_fraction * static_cast<double>(device.memory_bytes));
  p.budget = r.policy == Policy::kBudget ? std::min(r.gpu_memory, device.memory_bytes) : device.memory_bytes;
  p.strategy = r.strategy;
  // A device whose memory is the host's reads every unit where it lies, and
  // the host's memory is no budget: where a regrouped copy does not fit,
  // its kernels read the file's pages.
  if (device.host_memory) {
    p.Place(*Placement().Resolve(c.n_layer));
    return p;
  }

  // `resident` layers resident (LayerResident), `cpu` of the other layers on
  // the CPU (spread evenly among them: Spread), the rest streamed; the head at `head`.
  auto fill = [&](int resident, int cpu, Home head) {
    std::vector<Home> homes(c.n_layer + 1, Home::kStreamed);
    std::vector<int> rest;
    for (int l = 0; l < c.n_layer; ++l) {
      if (LayerResident(l, c.n_layer, resident)) {
        homes[l] = Home::kResident;
      } else {
        rest.push_back(l);
      }
    }
    for (size_t j = 0; j < rest.size(); ++j) {
      if (Spread(static_cast<int>(j), static_cast<int>(rest.size()), cpu)) homes[rest[j]] = Home::kCpu;
    }
    homes[c.n_layer] = head;
    p.Place(*Placement(std::move(homes), r.ring_depth).Resolve(c.n_layer));
  };
  auto fits = [&] { return p.total <= p.budget && (r.host_available == 0 || p.host_total() <= r.host_available); };
  // With `resident` layers resident and the head resident or not, the
  // strategy's placement of the rest: all streamed (the head too), all on
  // the CPU, cpu_layers of them on the CPU (the head streamed), or the
  // fastest split (the head streamed or on the CPU, whichever is faster).
  // Fills the fastest candidate that fits and says its step time; false
  // (and the strategy's own candidate filled) when none fits.
  auto place = [&](int resident, bool head_resident, double* step_s) {
    const int others = c.n_layer - resident;
    std::vector<std::pair<int, Home>> candidates;
    auto with_head = [&](Home rest) { return head_resident ? Home::kResident : rest; };
    switch (r.strategy) {
      case Strategy::kStream: candidates = {{0, with_head(Home::kStreamed)}}; break;
      case Strategy::kCpu: candidates = {{others, with_head(Home::kCpu)}}; break;
      case Strategy::kMixed:
        if (r.cpu_layers >= 0) {
          candidates = {{std::min(r.cpu_layers, others), with_head(Home::kStreamed)}};
          break;
        }
        for (int k = 0; k <= others; ++k) {
          candidates.push_back({k, with_head(Home::kStreamed)});
          if (!head_resident) candidates.push_back({k, Home::kCpu});
        }
        break;
    }
    int best = -1;
    for (size_t i = 0; i < candidates.size(); ++i) {
      fill(resident, candidates[i].first, candidates[i].second);
      if (!fits()) continue;
      const double step = Predict(p, device, r.host, r.batch).step_s;
      if (best < 0 || step < *step_s) best = static_cast<int>(i), *step_s = step;
    }
    const auto& pick = candidates[std::max(best, 0)];
    fill(resident, pick.first, pick.second);
    return best >= 0;
  };
  // The refusal when the host is what is short.
  auto host_short = [&] {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this placement needs ", HumanBytes(p.host_total()), " of host memory (page-locked ", HumanBytes(p.host_pinned),
        ", weights on the CPU ", HumanBytes(p.host_cpu_weights + p.host_cpu_mapped), ", their KV cache ",
        HumanBytes(p.host_cpu_kv), "), more than the ", HumanBytes(r.host_available),
        " this machine has available; put fewer layers on the CPU (--cpu_layers, --placement stream), use a smaller "
        "--ctx or fewer --slots"));
  };

  if (r.policy == Policy::kLayers) {
    if (r.gpu_layers < 0 || r.gpu_layers > c.n_layer) {
      return absl::InvalidArgumentError(absl::StrCat("--gpu_layers ", r.gpu_layers, ": the model has ", c.n_layer,
                                                     " layers"));
    }
    if (r.stream_head && r.gpu_layers != 0) {
      return absl::InvalidArgumentError("the head becomes resident before any layer: a streamed head needs 0 layers");
    }
    if (r.cpu_layers > c.n_layer - r.gpu_layers) {
      return absl::InvalidArgumentError(absl::StrCat("--cpu_layers ", r.cpu_layers, ": only ",
                                                     c.n_layer - r.gpu_layers, " layers are not resident with "
                                                     "--gpu_layers ", r.gpu_layers));
    }
    double step = 0;
    if (!place(r.gpu_layers, !r.stream_head, &step)) {
      int fit = -1;
      for (int n = r.gpu_layers - 1; n >= 0 && fit < 0; --n) {
        if (place(n, true, &step)) fit = n;
      }
      place(r.gpu_layers, !r.stream_head, &step);
      if (p.total <= p.budget) return host_short();
      return absl::ResourceExhaustedError(absl::StrCat(
          r.gpu_layers, " resident layers need ", HumanBytes(p.total), " on ", device.name, " (", HumanBytes(p.budget),
          "): ", HumanBytes(p.total - p.budget), " missing. ",
          fit >= 0 ? absl::StrCat("At most ", fit, " layers fit at this context; ")
                   : std::string("Not even the head, KV cache and workspace fit; "),
          "use fewer --gpu_layers, a smaller --ctx (KV cache ", HumanBytes(p.kv_cache), ") or fewer --slots"));
    }
    return p;
  }
  // Auto and budget: the most that fits, the head first, then layers. The
  // fastest mixed split also weighs fewer resident layers (which may leave
  // the ring out, or make room for the head) by their speed.
  if (r.strategy == Strategy::kMixed && r.cpu_layers < 0) {
    int best_resident = -1;
    bool best_head = false;
    double best_s = 0;
    for (int resident = c.n_layer; resident >= 0; --resident) {
      for (bool head : {true, false}) {
        double step = 0;
        if (place(resident, head, &step) && (best_resident < 0 || step < best_s)) {
          best_resident = resident, best_head = head, best_s = step;
        }
      }
    }
    if (best_resident >= 0) {
      place(best_resident, best_head, &best_s);
      return p;
    }
  } else {
    double step = 0;
    for (int units = c.n_layer + 1; units >= 0; --units) {
      if (place(std::max(units - 1, 0), units > 0, &step)) return p;
    }
  }
  double step = 0;
  place(0, false, &step);
  if (p.total <= p.budget) return host_short();
  return absl::ResourceExhaustedError(absl::StrCat(
      "even with every layer ", r.strategy == Strategy::kStream ? "streamed" : r.strategy == Strategy::kCpu
                                                                          ? "on the CPU"
                                                                          : "streamed or on the CPU",
      ", the ", p.staging > 0 ? "staging ring, " : "", "KV cache and workspace need ",
      HumanBytes(p.total), " on ", device.name, " (", HumanBytes(p.budget), "): ", HumanBytes(p.total - p.budget),
      " missing; use a smaller --ctx (KV cache ", HumanBytes(p.kv_cache), "), fewer --slots, a smaller --batch "
      "(workspace ", HumanBytes(p.workspace), ")", p.staging > 0 ? absl::StrCat(" or a shallower --ring_depth (staging ",
                                                                                HumanBytes(p.staging), ")")
                                                                  : std::string()));
}

namespace {

// A unit computed by the host's kernels: a layer measured whole as such;
// else its products and its kernels' fixed costs, and a layer's other work
// as measured where it was (else each of its kernels at the fixed cost).
double HostUnitSeconds(const Plan& p, const HostSpec& host, int u, HostLayout layout, int tokens) {
  if (const HostLayerCurve* whole = host.LayerCurve(u, layout)) return whole->Seconds(tokens);
  double s = 0;
  int products = 0;
  for (const Plan::TypeBytes& m : p.unit_types[u]) {
    s += host.ProductSeconds(m.type, layout, m.bytes, m.params, tokens);
    products += m.matrices;
  }
  if (u < p.n_layers && host.layer_rest_s[0] > 0) return s + products * host.kernel_s + host.LayerRestSeconds(tokens);
  return s + kCpuKernelsPerUnit * host.kernel_s;
}

// Predict and PredictPrefill: decode products read the weights in place at
// the kernels' efficiency; a GEMM step (prefill) adds the f32 tile's
// traffic and runs at the TF32 rate.
Prediction Roofline(const Plan& p, const DeviceSpec& spec, const HostSpec& host, int batch, bool gemm) {
  const DeviceSpec d = Assumed(spec);
  Prediction out;
  out.batch = batch;
  const double flops = gemm ? d.tflops * 1e12 * 0.5 : std::min(d.tflops * 1e12, kDecodeOpsPerS);
  const double hbm = d.memory_gbps * 1e9, h2d = d.h2d_gbps * 1e9;
  double compute = 0, copy = 0, chain_cpu = 0, cpu = 0;
  // Each unit's time on the compute side and its copy, for PipelinedStep.
  std::vector<double> unit_compute(p.n_layers + 1, 0.0), unit_copy(p.n_layers + 1, 0.0);
  auto unit = [&](int u, uint64_t device_bytes, double kernel_bytes, uint64_t params) {
    const double work = 2.0 * static_cast<double>(params) * batch;
    const double on_cpu = HostUnitSeconds(p, host, u, HostLayout::kGrouped, batch);
    cpu += on_cpu;
    const Home home = p.placement.home(u);
    if (home == Home::kCpu) {
      chain_cpu += on_cpu;
      unit_compute[u] = on_cpu;
      return;
    }
    if (home == Home::kStreamed) unit_copy[u] = d.latency_us * 1e-6 + device_bytes / h2d;
    copy += unit_copy[u];
    if (d.host_kernels) {
      unit_compute[u] = HostUnitSeconds(p, host, u, HostLayout::kFile, batch);
      if (home == Home::kStreamed) unit_compute[u] += device_bytes / (host.copy_gbps * 1e9);  // its copy engine's memcpy
    } else {
      const double read = gemm ? device_bytes + kTileBytesPerParam * static_cast<double>(params) : kernel_bytes;
      unit_compute[u] = std::max(read / hbm, work / flops) + kUnitOverheadS;
    }
    compute += unit_compute[u];
  };
  for (int l = 0; l < p.n_layers; ++l) {
    unit(l, p.layer_device_bytes[l], p.layer_kernel_bytes[l], p.layer_params[l]);
  }
  unit(p.n_layers, p.head_device_bytes, p.head_kernel_bytes, p.head_params);
  // The residual stream crosses to the CPU and back around each run of units there.
  for (int u = 0; u <= p.n_layers; ++u) {
    const bool here = p.placement.home(u) == Home::kCpu, before = u > 0 && p.placement.home(u - 1) == Home::kCpu;
    if (here != before) {
      chain_cpu += d.latency_us * 1e-6;
      unit_compute[u] += d.latency_us * 1e-6;
    }
  }
  out.compute_s = compute;
  out.copy_s = copy;
  out.cpu_s = chain_cpu;
  out.step_s = PipelinedStep(unit_compute, unit_copy, p.placement.ring_depth());
  out.tokens_per_s = out.step_s > 0 ? batch / out.step_s : 0;
  out.cpu_tokens_per_s = cpu > 0 ? batch / cpu : 0;
  // A typical layer: streaming it costs its copy; the CPU costs its roofline.
  if (p.n_layers > 0) {
    const int l = p.n_layers - 1;
    const double copy_layer = d.latency_us * 1e-6 + p.layer_device_bytes[l] / h2d;
    for (int b = 1; b <= 4096; ++b) {
      if (HostUnitSeconds(p, host, l, HostLayout::kGrouped, b) > copy_layer) {
        out.stream_beats_cpu_from_batch = b;
        break;
      }
    }
  }
  return out;
}

}  // namespace

double PipelinedStep(const std::vector<double>& compute, const std::vector<double>& copy, int depth) {
  depth = std::max(depth, 1);
  std::vector<double> copied, released;  // per streamed unit, in copy order across the steps
  double copy_free = 0, t = 0, step_end[3] = {};
  for (int step = 0; step < 3; ++step) {
    for (size_t u = 0; u < compute.size(); ++u) {
      if (copy[u] > 0) {
        const size_t n = copied.size();
        const double start = std::max(copy_free, n >= static_cast<size_t>(depth) ? released[n - depth] : 0.0);
        copy_free = start + copy[u];
        copied.push_back(copy_free);
        t = std::max(t, copy_free) + compute[u];
        released.push_back(t);
      } else {
        t += compute[u];
      }
    }
    step_end[step] = t;
  }
  return step_end[2] - step_end[1];
}

Prediction Predict(const Plan& p, const DeviceSpec& d, const HostSpec& host, int batch) {
  return Roofline(p, d, host, batch, false);
}

Prediction PredictPrefill(const Plan& p, const DeviceSpec& d, const HostSpec& host, int tokens_per_step) {
  return Roofline(p, d, host, tokens_per_step, tokens_per_step > backend::kMatVecMaxTokens);
}

}  // namespace ferry::plan
