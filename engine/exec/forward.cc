#include "engine/exec/forward.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/backend/arena.h"
#include "engine/backend/cpu/cpu_device.h"
#include "engine/stream/layout.h"
#include "engine/plan/planner.h"
#include "engine/quant/quantize.h"
#include "engine/status.h"
#include "engine/units.h"

namespace ferry::exec {

using backend::AlignDevice;
using backend::Queue;
using plan::Home;
using stream::InPlace;
using stream::LayOut;
using stream::MatricesOf;
using stream::Piece;
using stream::StagedUpload;
using stream::UnitBytes;
using stream::UnitImage;

namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Executor>> Executor::Create(const model::Model& model, backend::Device* device,
                                                           const ForwardOptions& options,
                                                           stream::ScheduleFaults faults) {
  const model::ModelConfig& c = model.config;
  if (options.max_batch <= 0 || options.n_seq <= 0 || options.n_ctx < 0) {
    return absl::InvalidArgumentError("max_batch and n_seq must be positive, n_ctx non-negative");
  }
  const int n_ctx = options.n_ctx > 0 ? options.n_ctx : c.default_context();
  std::unique_ptr<Executor> e(new Executor(model, device, options, n_ctx));
  FERRY_RETURN_IF_ERROR(e->Init(faults));
  return e;
}

Executor::Executor(const model::Model& model, backend::Device* device, const ForwardOptions& options, int n_ctx)
    : model_(model), config_(model.config), options_(options), n_ctx_(n_ctx), device_(device) {
  if (device_ == nullptr) {
    owned_device_ = std::make_unique<backend::CpuDevice>(options.threads);
    device_ = owned_device_.get();
  }
}

Executor::~Executor() {
  // Copies in flight read host memory this object owns and write its slots.
  device_->SynchronizeAll();
  if (!embd_host_.empty()) device_->UnregisterHost(embd_host_.data());
  if (cpu_device_ != nullptr) device_->UnregisterHost(cpu_lane_.act.x);
  device_->ReleaseKernelScratch();
}

absl::Status Executor::Init(stream::ScheduleFaults faults) {
  const model::ModelConfig& c = config_;
  backend::Device& d = *device_;
  FERRY_RETURN_IF_ERROR(d.ReserveKernelScratch(plan::MaxMatrixRows(c), plan::MaxMatrixWidth(c), options_.max_batch));
  usage_.workspace += d.kernel_scratch_bytes();
  // theta_i = pos * freq_scale * base^(-2i / rope_dims) / factor_i; the
  // sliding layers' own table (gemma3) is unscaled.
  for (int i = 0; i < c.rope_dims / 2; ++i) {
    double f = c.rope_freq_scale * std::pow(static_cast<double>(c.rope_base), -2.0 * i / c.rope_dims);
    if (!model_.weights.rope_freq_factors.empty()) f /= model_.weights.rope_freq_factors[i];
    inv_freq_.push_back(static_cast<float>(f));
  }
  if (c.rope_sets() > 1) {
    for (int i = 0; i < c.rope_dims / 2; ++i) {
      inv_freq_.push_back(static_cast<float>(std::pow(static_cast<double>(c.rope_base_local), -2.0 * i / c.rope_dims)));
    }
  }
  rope_ = {inv_freq_.data(), c.rope_dims, c.rope_layout == model::RopeLayout::kNeox, c.head_dim, c.rope_sets(), 0};

  FERRY_ASSIGN_OR_RETURN(placement_, options_.placement.Resolve(c.n_layer));
  std::vector<int> resident, streamed, on_cpu;
  for (int u = 0; u <= c.n_layer; ++u) {
    const Home h = placement_.home(u);
    (h == Home::kResident ? resident : h == Home::kStreamed ? streamed : on_cpu).push_back(u);
  }
  // Resident units are uploaded once, or, where the device's memory is the
  // host's (cpu), read where they lie.
  host_memory_ = d.spec().host_memory;
  resident_.assign(c.n_layer + 1, {});
  if (host_memory_) {
    FERRY_RETURN_IF_ERROR(AdoptInPlace(d, resident, &resident_, &adopted_));
  } else {
    FERRY_RETURN_IF_ERROR(UploadResident());
  }
  FERRY_RETURN_IF_ERROR(ring_.Init(d, model_, streamed, placement_.ring_depth(), faults, options_.progress));
  usage_.staging = ring_.staging_bytes();
  load_.packed_bytes = ring_.packed_bytes();
  load_.pack_s = ring_.pack_seconds();

  FERRY_RETURN_IF_ERROR(MakeLane(d, Home::kResident, &lane_, &lane_buffers_, &usage_.kv_cache, &usage_.workspace));
  if (!on_cpu.empty()) {
    // The CPU's units: read in place from host memory (regrouped for its
    // kernels, never also packed), their KV cache in host memory.
    cpu_device_ = std::make_unique<backend::CpuDevice>(options_.threads);
    FERRY_RETURN_IF_ERROR(AdoptInPlace(*cpu_device_, on_cpu, &cpu_views_, &cpu_weights_));
    FERRY_RETURN_IF_ERROR(cpu_device_->ReserveKernelScratch(plan::MaxMatrixRows(c), plan::MaxMatrixWidth(c),
                                                           options_.max_batch));
    uint64_t workspace = 0;
    FERRY_RETURN_IF_ERROR(MakeLane(*cpu_device_, Home::kCpu, &cpu_lane_, &cpu_buffers_, &cpu_kv_bytes_, &workspace));
    // The residual stream crosses between the lanes from page-locked memory.
    FERRY_RETURN_IF_ERROR(
        d.RegisterHost(cpu_lane_.act.x, static_cast<uint64_t>(options_.max_batch) * c.n_embd * sizeof(float)));
  }

  // The step's host buffers, as plan::HostStepBufferBytes counts them.
  embd_host_.resize(static_cast<size_t>(options_.max_batch) * c.n_embd);
  FERRY_RETURN_IF_ERROR(d.RegisterHost(embd_host_.data(), embd_host_.size() * sizeof(float)));
  tokens_.reserve(options_.max_batch);
  logit_rows_.reserve(options_.max_batch);
  FERRY_ASSIGN_OR_RETURN(logits_out_, backend::HostBuffer::Make(d, static_cast<uint64_t>(options_.n_seq) * c.n_vocab *
                                                                        sizeof(float),
                                                                "the logits"));
  return absl::OkStatus();
}

// Units computed from host memory as they are, in the device's own layout
// where it has one; the file's pages of what was copied are dropped, so a
// weight is held once.
absl::Status Executor::AdoptInPlace(backend::Device& d, const std::vector<int>& units,
                                   std::vector<model::UnitView>* views, backend::AdoptedWeights* adopted) {
  views->resize(config_.n_layer + 1);
  std::vector<model::Matrix*> matrices;
  for (int u : units) {
    (*views)[u] = InPlace(model_, u);
    for (model::Matrix* m : MatricesOf((*views)[u])) matrices.push_back(m);
  }
  const std::span<const uint8_t> file = model_.file->bytes();
  auto drop = [&](const model::Matrix& was) {
    // A tied head regroups token_embd: the embedding rows are still read from the file.
    const bool embedding = was.data == model_.weights.token_embd.data;
    if (!embedding && was.data >= file.data() && was.data < file.data() + file.size()) {
      model_.file->DropPages(was.data, was.bytes);
    }
  };
  FERRY_ASSIGN_OR_RETURN(*adopted, d.AdoptInPlace(matrices, drop));
  return absl::OkStatus();
}

// Resident units: uploaded once, on the compute queue, before any step,
// through page-locked staging (StagedUpload).
absl::Status Executor::UploadResident() {
  const model::ModelConfig& c = config_;
  backend::Device& d = *device_;
  const auto start = std::chrono::steady_clock::now();
  uint64_t total = 0;
  for (int u = 0; u <= c.n_layer; ++u) {
    if (placement_.home(u) == Home::kResident) total += UnitBytes(model_, u);
  }
  if (options_.progress) options_.progress(absl::StrCat("uploading ", HumanBytes(total), " of resident weights"));
  StagedUpload staged;
  FERRY_RETURN_IF_ERROR(staged.Init(d, total));
  // The head first: it is the first unit to become resident.
  for (int i = 0; i <= c.n_layer; ++i) {
    const int u = i == 0 ? c.n_layer : i - 1;
    if (placement_.home(u) != Home::kResident) continue;
    const uint64_t size = UnitBytes(model_, u);
    backend::DeviceBuffer buf;
    FERRY_ASSIGN_OR_RETURN(buf, backend::DeviceBuffer::Make(d, size, u == c.n_layer ? std::string("the output head")
                                                                                   : absl::StrCat("layer ", u, " weights")));
    UnitImage img = LayOut(model_, u, reinterpret_cast<uintptr_t>(buf.bytes()));
    for (const Piece& piece : img.pieces) staged.Add(buf.bytes() + piece.offset, piece.src, piece.bytes);
    resident_[u] = img.view;
    usage_.weights_resident += AlignDevice(size);
    resident_buffers_.push_back(std::move(buf));
  }
  staged.Finish();
  load_.uploaded_bytes = total;
  load_.upload_s = Seconds(start);
  return absl::OkStatus();
}

// A lane's KV cache (one K and one V buffer for each layer whose home is
// `home`, or not on the CPU for the device's lane) and the activations of
// the largest step.
absl::Status Executor::MakeLane(backend::Device& d, Home home, Lane* lane, std::vector<backend::DeviceBuffer>* buffers,
                                uint64_t* kv_bytes, uint64_t* workspace_bytes) {
  const model::ModelConfig& c = config_;
  lane->device = &d;
  const int elem = KvBytesPerElement(options_.kv_type);
  lane->kv.assign(c.n_layer, {});
  for (int l = 0; l < c.n_layer; ++l) {
    if ((placement_.home(l) == Home::kCpu) != (home == Home::kCpu)) continue;
    backend::DeviceBuffer k, v;
    FERRY_ASSIGN_OR_RETURN(k, backend::DeviceBuffer::Make(d, plan::KvLayerBytes(n_ctx_, options_.n_seq, c.kv_dim(), elem),
                                                          absl::StrCat("KV cache (K) of layer ", l)));
    FERRY_ASSIGN_OR_RETURN(v, backend::DeviceBuffer::Make(d, plan::KvLayerBytes(n_ctx_, options_.n_seq, c.v_dim(), elem),
                                                          absl::StrCat("KV cache (V) of layer ", l)));
    *kv_bytes += k.size() + v.size();
    lane->kv[l] = {k.bytes(), v.bytes(), elem == 2, n_ctx_, c.kv_dim()};
    buffers->push_back(std::move(k));
    buffers->push_back(std::move(v));
  }
  plan::Workspace ws = plan::WorkspaceFor(c, options_.max_batch, n_ctx_);
  ws.scores = d.AttentionScratchFloats(options_.max_batch, c.n_head, n_ctx_);
  auto make = [&](float** at, uint64_t floats) -> absl::Status {
    backend::DeviceBuffer b;
    FERRY_ASSIGN_OR_RETURN(b, backend::DeviceBuffer::Make(d, floats * sizeof(float), "activation workspace"));
    *workspace_bytes += AlignDevice(floats * sizeof(float));
    *at = b.floats();
    buffers->push_back(std::move(b));
    return absl::OkStatus();
  };
  Activations& a = lane->act;
  if (home == Home::kCpu) {
    // The residual stream on pages of its own: the device registers it to
    // copy from (Device::RegisterHost; PageVector says why).
    cpu_x_.resize(ws.x);
    a.x = cpu_x_.data();
  } else {
    FERRY_RETURN_IF_ERROR(make(&a.x, ws.x));
  }
  for (auto [at, floats] : {std::pair{&a.xn, ws.xn}, {&a.out, ws.out}, {&a.q, ws.q}, {&a.attn, ws.attn}, {&a.k, ws.k},
                            {&a.v, ws.v}, {&a.gate, ws.gate}, {&a.up, ws.up}, {&a.logits, ws.logits},
                            {&a.scores, ws.scores}}) {
    FERRY_RETURN_IF_ERROR(make(at, floats));
  }
  return absl::OkStatus();
}

absl::Status Executor::Forward(std::span<const BatchToken> batch, std::span<float> logits) {
  const model::ModelConfig& c = config_;
  const int n = static_cast<int>(batch.size());
  if (n == 0) return absl::OkStatus();
  if (n > options_.max_batch) {
    return absl::InvalidArgumentError(absl::StrCat("batch of ", n, " tokens exceeds max_batch ", options_.max_batch));
  }
  size_t n_logits = 0;
  for (const BatchToken& t : batch) {
    if (t.token < 0 || t.token >= c.n_vocab) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", t.token, " outside the vocabulary [0, ", c.n_vocab, ")"));
    }
    if (t.seq < 0 || t.seq >= options_.n_seq) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", t.seq, " outside [0, ", options_.n_seq, ")"));
    }
    if (t.pos < 0 || t.pos >= n_ctx_) {
      return absl::InvalidArgumentError(absl::StrCat("position ", t.pos, " outside the context [0, ", n_ctx_, ")"));
    }
    n_logits += t.logits;
  }
  if (logits.size() < n_logits * c.n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat("logits buffer holds ", logits.size(), " floats, need ",
                                                   n_logits * c.n_vocab));
  }
  const auto start = std::chrono::steady_clock::now();
  const backend::DeviceStats before = device_->stats();
  const double cpu_before = cpu_device_ ? cpu_device_->stats().compute_s : 0;
  backend::Device& d = *device_;
  tokens_.clear();
  logit_rows_.clear();
  for (int t = 0; t < n; ++t) {
    tokens_.push_back({batch[t].seq, batch[t].pos});
    if (batch[t].logits) logit_rows_.push_back(t);
  }

  // The embedding stays on the host: decode the step's rows, send them over.
  const int E = c.n_embd;
  const model::Matrix& embd = model_.weights.token_embd;
  const quant::DequantizeFn decode = quant::GetDequantizer(embd.type);
  for (int t = 0; t < n; ++t) {
    float* x = embd_host_.data() + static_cast<size_t>(t) * E;
    decode(embd.row(batch[t].token), E, x);
    if (c.embed_scale != 1.0f) {
      for (int i = 0; i < E; ++i) x[i] *= c.embed_scale;
    }
  }
  d.BeginStep(tokens_, logit_rows_, rope_);
  const uint64_t x_bytes = static_cast<uint64_t>(n) * E * sizeof(float);
  bool x_on_cpu = placement_.home(0) == Home::kCpu;
  if (x_on_cpu) {
    std::memcpy(cpu_lane_.act.x, embd_host_.data(), x_bytes);
  } else {
    d.CopyToDevice(Queue::kCompute, lane_.act.x, embd_host_.data(), x_bytes);
  }
  // The residual stream follows the units between the device and the CPU
  // (a few KB a token each way).
  auto cross = [&](bool to_cpu) {
    if (to_cpu == x_on_cpu) return;
    if (to_cpu) {
      d.CopyToHost(cpu_lane_.act.x, lane_.act.x, x_bytes);
    } else {
      d.CopyToDevice(Queue::kCompute, lane_.act.x, cpu_lane_.act.x, x_bytes);
    }
    x_on_cpu = to_cpu;
  };

  // Units 0..n_layer (the last is the head). The device's run in pieces it
  // may record once and replay (a CUDA graph): each run of resident units
  // is one, and each streamed unit one per staging slot (its weights'
  // address), between the waits and records that order it with the copy
  // queue. The key names the run and the slot; the device adds the step's
  // shape. Units on the CPU run on its threads while the copy queue fills
  // the ring ahead.
  const StepShape step{tokens_, logit_rows_, &rope_};
  const int units = c.n_layer + 1;
  auto key = [&](int first, int end, int slot) {
    return (static_cast<uint64_t>(first) * (units + 1) + end) * (ring_.depth() + 1) + (slot + 1);
  };
  for (int u = 0; u < units;) {
    const Home home = placement_.home(u);
    cross(home == Home::kCpu);
    if (home == Home::kCpu) {
      RunUnit(c, u, cpu_views_[u], step, cpu_lane_);
      ++u;
    } else if (home == Home::kResident) {
      int end = u + 1;
      while (end < units && placement_.home(end) == Home::kResident) ++end;
      d.RunRecorded(key(u, end, -1), [&, u, end] {
        for (int i = u; i < end; ++i) RunUnit(c, i, resident_[i], step, lane_);
      });
      u = end;
    } else {
      const int ring_slot = ring_.next_slot();
      int slot = -1;
      const model::UnitView& view = ring_.Acquire(&slot);
      d.RunRecorded(key(u, u + 1, ring_slot), [&, u] { RunUnit(c, u, view, step, lane_); });
      ring_.Release(slot);
      ++u;
    }
  }
  const uint64_t logit_bytes = n_logits * c.n_vocab * sizeof(float);
  if (placement_.head() == Home::kCpu) {
    std::memcpy(logits.data(), cpu_lane_.act.logits, logit_bytes);
  } else {
    d.CopyToHost(logits.data(), lane_.act.logits, logit_bytes);
  }
  // A faulted device's results are garbage: the step fails, and so will every later one.
  if (absl::Status h = d.health(); !h.ok()) return absl::InternalError(absl::StrCat("device fault: ", h.message()));

  const backend::DeviceStats after = device_->stats();
  ++stats_.steps;
  stats_.step_s += Seconds(start);
  stats_.bytes_streamed += after.bytes_to_device - before.bytes_to_device;
  stats_.copy_busy_s += after.copy_busy_s - before.copy_busy_s;
  stats_.compute_s += after.compute_s - before.compute_s;
  stats_.compute_wait_s += after.compute_wait_s - before.compute_wait_s;
  if (cpu_device_) stats_.cpu_compute_s += cpu_device_->stats().compute_s - cpu_before;
  return absl::OkStatus();
}

absl::StatusOr<std::span<float>> Executor::Forward(std::span<const BatchToken> batch) {
  size_t rows = 0;
  for (const BatchToken& t : batch) rows += t.logits;
  const size_t floats = rows * static_cast<size_t>(config_.n_vocab);
  std::span<float> out(logits_out_.floats(), floats);
  if (floats * sizeof(float) > logits_out_.size()) {
    logits_overflow_.resize(floats);
    out = std::span<float>(logits_overflow_);
  }
  FERRY_RETURN_IF_ERROR(Forward(batch, out));
  return out;
}

std::string Executor::PlacementSummary() const {
  if (host_memory_ && placement_.count(Home::kResident) == config_.n_layer + 1) {
    return absl::StrCat(device_->Describe(), ": all ", config_.n_layer, " layers computed in place from host memory",
                        adopted_.Describe());
  }
  const plan::Placement& p = placement_;
  const int resident = p.layers(Home::kResident), on_cpu = p.layers(Home::kCpu);
  std::string which;
  if ((resident > 0 || on_cpu > 0) && !p.Describe().empty()) which = absl::StrCat(" (", p.Describe(), ")");
  std::string cpu;
  if (on_cpu > 0 || p.head() == Home::kCpu) {
    cpu = absl::StrCat(", ", on_cpu, " layer(s)", p.head() == Home::kCpu ? " and the head" : "",
                       " on the CPU (KV cache ", HumanBytes(cpu_kv_bytes_), " in host memory)", cpu_weights_.Describe());
  }
  const char* head = p.head() == Home::kResident ? " + output head" : p.head() == Home::kCpu ? " (head on the CPU)"
                                                                                             : " (head streamed)";
  return absl::StrFormat(
             "%s: offloaded %d/%d layers%s%s, %s resident, %d streamed unit(s) through a ring of %d x %s%s; device "
             "holds %s (KV cache %s, workspace %s) of %s",
             device_->Describe(), resident, config_.n_layer, head, which, HumanBytes(usage_.weights_resident),
             p.count(Home::kStreamed), ring_.depth(), HumanBytes(ring_.slot_bytes()), cpu, HumanBytes(device_->used()),
             HumanBytes(usage_.kv_cache), HumanBytes(usage_.workspace), HumanBytes(device_->capacity())) +
         LoadSummary();
}

uint64_t Executor::host_pinned_bytes() const {
  if (host_memory_) return 0;
  return ring_.packed_bytes() + embd_host_.size() * sizeof(float) + logits_out_.size() +
         (cpu_device_ ? cpu_x_.size() * sizeof(float) : 0);
}

std::string Executor::LoadSummary() const {
  auto rate = [](uint64_t bytes, double s) { return s > 0 ? absl::StrFormat(", %.1f GB/s", bytes / s / 1e9) : std::string(); };
  std::string out = absl::StrFormat("; loaded %s in %.2f s%s", HumanBytes(load_.uploaded_bytes), load_.upload_s,
                                    rate(load_.uploaded_bytes, load_.upload_s));
  if (load_.packed_bytes > 0) {
    absl::StrAppend(&out, absl::StrFormat(", packed %s of streamed weights in page-locked host memory in %.2f s%s",
                                          HumanBytes(load_.packed_bytes), load_.pack_s,
                                          rate(load_.packed_bytes, load_.pack_s)));
  }
  return out;
}

}  // namespace ferry::exec
