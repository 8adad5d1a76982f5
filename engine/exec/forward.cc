#include "engine/exec/forward.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/backend/arena.h"
#include "engine/backend/cpu/cpu_device.h"
#include "engine/plan/planner.h"
#include "engine/quant/quantize.h"
#include "engine/status.h"
#include "engine/units.h"

namespace ferry::exec {

using backend::AlignDevice;
using backend::Queue;

absl::StatusOr<std::unique_ptr<Executor>> Executor::Create(const model::Model& model, backend::Device* device,
                                                           const ForwardOptions& options) {
  const model::ModelConfig& c = model.config;
  if (options.max_batch <= 0 || options.n_seq <= 0 || options.n_ctx < 0) {
    return absl::InvalidArgumentError("max_batch and n_seq must be positive, n_ctx non-negative");
  }
  if (options.placement.ring_depth <= 0) return absl::InvalidArgumentError("the staging ring needs at least one slot");
  if (options.placement.resident_layers > c.n_layer) {
    return absl::InvalidArgumentError(
        absl::StrCat(options.placement.resident_layers, " resident layers: the model has ", c.n_layer));
  }
  if (!options.placement.head_resident && options.placement.resident_layers != 0) {
    return absl::InvalidArgumentError("the output head becomes resident before any layer: a streamed head needs 0 "
                                      "resident layers");
  }
  const int n_ctx = options.n_ctx > 0 ? options.n_ctx : std::min(c.n_ctx_train, 4096);
  std::unique_ptr<Executor> e(new Executor(model, device, options, n_ctx));
  FERRY_RETURN_IF_ERROR(e->Init());
  return e;
}

namespace {

// MemAvailable from /proc/meminfo in bytes; 0 when it cannot be read.
uint64_t AvailableHostMemory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Host-to-device copies of the resident weights through two page-locked
// staging buffers: the host fills one while the other crosses, so uploads
// run at the pinned rate whatever the source (a file mapping is pageable
// memory, which a GPU driver would bounce through its own small buffers).
class StagedUpload {
 public:
  static constexpr uint64_t kBufferBytes = uint64_t{64} << 20;

  absl::Status Init(backend::Device& d, uint64_t total) {
    d_ = &d;
    size_ = std::min(kBufferBytes, std::max<uint64_t>(total, 1));
    for (int b = 0; b < 2; ++b) {
      FERRY_ASSIGN_OR_RETURN(buffer_[b], backend::HostBuffer::Make(d, size_, "upload staging"));
      FERRY_ASSIGN_OR_RETURN(done_[b], d.CreateEvent());
    }
    return absl::OkStatus();
  }
  void Add(uint8_t* dst, const void* src, uint64_t bytes) {
    const auto* from = static_cast<const uint8_t*>(src);
    while (bytes > 0) {
      const uint64_t take = std::min(bytes, size_ - fill_);
      std::memcpy(buffer_[cur_].bytes() + fill_, from, take);
      copies_.push_back({dst, fill_, take});
      fill_ += take, dst += take, from += take, bytes -= take;
      if (fill_ == size_) Flush();
    }
  }
  // Returns when every copy has landed.
  void Finish() {
    if (fill_ > 0) Flush();
    WaitPending();
  }
  // Also on an early return (a failed allocation): no copy may still read
  // the buffers when they go.
  ~StagedUpload() { WaitPending(); }

 private:
  struct Copy {
    uint8_t* dst;
    uint64_t offset, bytes;
  };
  void WaitPending() {
    for (int b = 0; b < 2; ++b) {
      if (pending_[b]) d_->Synchronize(done_[b]);
      pending_[b] = false;
    }
  }
  void Flush() {
    for (const Copy& c : copies_) d_->CopyToDevice(backend::Queue::kCompute, c.dst, buffer_[cur_].bytes() + c.offset, c.bytes);
    d_->Record(done_[cur_], backend::Queue::kCompute);
    pending_[cur_] = true;
    copies_.clear();
    fill_ = 0;
    cur_ ^= 1;
    if (pending_[cur_]) d_->Synchronize(done_[cur_]);  // its last copies read it
  }
  backend::Device* d_ = nullptr;
  uint64_t size_ = 0, fill_ = 0;
  int cur_ = 0;
  backend::HostBuffer buffer_[2];
  backend::Event done_[2] = {0, 0};
  bool pending_[2] = {false, false};
  std::vector<Copy> copies_;
};

}  // namespace

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
  device_->ReleaseKernelScratch();
}

uint64_t Executor::LayOut(int unit, uintptr_t base, DeviceLayer* view, std::vector<Piece>* pieces) const {
  // plan::UnitDeviceBytes's rule: the matrices as one span of the file when
  // they lie together in it (one copy), else each on a 256-byte boundary;
  // then the norms and biases as f32, each on a 256-byte boundary.
  const model::ModelWeights& w = model_.weights;
  std::vector<const model::Matrix*> mats;
  std::vector<const std::vector<float>*> vecs;
  if (unit == kHead) {
    mats = {&w.output};
    vecs = {&w.output_norm};
  } else {
    const model::LayerWeights& L = w.layers[unit];
    mats = {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down};
    vecs = {&L.attn_norm, &L.bq, &L.bk, &L.bv, &L.post_attn_norm, &L.ffn_norm, &L.post_ffn_norm, &L.q_norm, &L.k_norm};
  }
  const uint8_t* file = model_.file->bytes().data();
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const model::Matrix* m : mats) ranges.push_back({static_cast<uint64_t>(m->data - file), m->bytes});
  const plan::UnitSpan span = plan::SpanOf(ranges);

  uint64_t offset = 0;
  std::vector<uintptr_t> mat_at(mats.size());
  if (span.contiguous) {
    if (pieces) pieces->push_back({file + span.begin, span.bytes, 0});
    for (size_t i = 0; i < mats.size(); ++i) mat_at[i] = base + (ranges[i].first - span.begin);
    offset = AlignDevice(span.bytes);
  } else {
    for (size_t i = 0; i < mats.size(); ++i) {
      if (pieces) pieces->push_back({mats[i]->data, mats[i]->bytes, offset});
      mat_at[i] = base + offset;
      offset += AlignDevice(mats[i]->bytes);
    }
  }
  std::vector<const float*> vec_at(vecs.size(), nullptr);
  for (size_t i = 0; i < vecs.size(); ++i) {
    if (vecs[i]->empty()) continue;
    const uint64_t bytes = vecs[i]->size() * sizeof(float);
    if (pieces) pieces->push_back({vecs[i]->data(), bytes, offset});
    vec_at[i] = reinterpret_cast<const float*>(base + offset);
    offset += AlignDevice(bytes);
  }
  if (view) {
    auto mat = [&](size_t i) {
      model::Matrix d = *mats[i];
      d.data = reinterpret_cast<const uint8_t*>(mat_at[i]);
      return d;
    };
    DeviceLayer v;
    if (unit == kHead) {
      v.output = mat(0);
      v.output_norm = vec_at[0];
    } else {
      v.wq = mat(0), v.wk = mat(1), v.wv = mat(2), v.wo = mat(3), v.w_gate = mat(4), v.w_up = mat(5), v.w_down = mat(6);
      v.attn_norm = vec_at[0], v.bq = vec_at[1], v.bk = vec_at[2], v.bv = vec_at[3];
      v.post_attn_norm = vec_at[4], v.ffn_norm = vec_at[5], v.post_ffn_norm = vec_at[6];
      v.q_norm = vec_at[7], v.k_norm = vec_at[8];
    }
    *view = v;
  }
  return offset;
}

Executor::DeviceLayer Executor::InPlace(int unit) const {
  const model::ModelWeights& w = model_.weights;
  auto vec = [](const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); };
  DeviceLayer v;
  if (unit == kHead) {
    v.output_norm = vec(w.output_norm);
    v.output = w.output;
    return v;
  }
  const model::LayerWeights& L = w.layers[unit];
  v.attn_norm = vec(L.attn_norm);
  v.wq = L.wq, v.wk = L.wk, v.wv = L.wv, v.wo = L.wo;
  v.bq = vec(L.bq), v.bk = vec(L.bk), v.bv = vec(L.bv);
  v.q_norm = vec(L.q_norm), v.k_norm = vec(L.k_norm);
  v.post_attn_norm = vec(L.post_attn_norm);
  v.ffn_norm = vec(L.ffn_norm);
  v.w_gate = L.w_gate, v.w_up = L.w_up, v.w_down = L.w_down;
  v.post_ffn_norm = vec(L.post_ffn_norm);
  return v;
}

absl::Status Executor::Init() {
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

  in_place_ = d.computes_on_host_memory();
  resident_.resize(c.n_layer + 1);  // [n_layer] is the head
  if (in_place_) {
    resident_layers_ = c.n_layer;
    head_resident_ = true;
    for (int l = 0; l < c.n_layer; ++l) resident_[l] = InPlace(l);
    resident_[c.n_layer] = InPlace(kHead);
    // The device's own layout of the matrices it reads in place, if any,
    // when the copy fits in the memory the system has available (the
    // file's pages count as available: they can be dropped); otherwise the
    // kernels read the mapped file as it is, which also works for a model
    // larger than RAM.
    auto matrices = [](DeviceLayer& unit) {
      return std::array<model::Matrix*, 8>{&unit.wq, &unit.wk, &unit.wv, &unit.wo, &unit.w_gate, &unit.w_up,
                                           &unit.w_down, &unit.output};
    };
    for (DeviceLayer& unit : resident_) {
      for (model::Matrix* m : matrices(unit)) relayout_bytes_ += m->present() ? d.InPlaceLayoutBytes(*m) : 0;
    }
    const uint64_t available = AvailableHostMemory();
    relayout_ = relayout_bytes_ > 0 && (available == 0 || relayout_bytes_ + available / 10 <= available);
    for (DeviceLayer& unit : resident_) {
      for (model::Matrix* m : matrices(unit)) {
        const uint64_t bytes = relayout_ && m->present() ? d.InPlaceLayoutBytes(*m) : 0;
        if (bytes == 0) continue;
        backend::DeviceBuffer buf;
        FERRY_ASSIGN_OR_RETURN(buf, backend::DeviceBuffer::Make(d, bytes, m->name));
        *m = d.ToInPlaceLayout(*m, buf.bytes());
        resident_buffers_.push_back(std::move(buf));
      }
    }
  } else {
    const Placement& p = options_.placement;
    resident_layers_ = p.resident_layers < 0 ? c.n_layer : p.resident_layers;
    head_resident_ = p.head_resident;
    // Resident units: uploaded once, on the compute queue, before any step,
    // through page-locked staging (StagedUpload).
    const auto upload_start = std::chrono::steady_clock::now();
    uint64_t resident_bytes = 0;
    if (head_resident_) resident_bytes += LayOut(kHead, 0, nullptr, nullptr);
    for (int l = 0; l < c.n_layer; ++l) {
      if (LayerIsResident(l)) resident_bytes += LayOut(l, 0, nullptr, nullptr);
    }
    Progress(absl::StrCat("uploading ", HumanBytes(resident_bytes), " of resident weights"));
    StagedUpload staged;
    FERRY_RETURN_IF_ERROR(staged.Init(d, resident_bytes));
    std::vector<Piece> pieces;
    auto upload = [&](int unit, const std::string& what) -> absl::Status {
      const uint64_t size = LayOut(unit, 0, nullptr, nullptr);
      backend::DeviceBuffer buf;
      FERRY_ASSIGN_OR_RETURN(buf, backend::DeviceBuffer::Make(d, size, what));
      pieces.clear();
      LayOut(unit, reinterpret_cast<uintptr_t>(buf.bytes()), &resident_[unit == kHead ? c.n_layer : unit], &pieces);
      for (const Piece& piece : pieces) staged.Add(buf.bytes() + piece.offset, piece.src, piece.bytes);
      usage_.weights_resident += AlignDevice(size);
      resident_buffers_.push_back(std::move(buf));
      return absl::OkStatus();
    };
    if (head_resident_) FERRY_RETURN_IF_ERROR(upload(kHead, "the output head"));
    for (int l = 0; l < c.n_layer; ++l) {
      if (LayerIsResident(l)) FERRY_RETURN_IF_ERROR(upload(l, absl::StrCat("layer ", l, " weights")));
    }
    staged.Finish();
    load_.uploaded_bytes = resident_bytes;
    load_.upload_s = Seconds(upload_start);

    // Streamed units, in the order a step computes them.
    for (int l = 0; l < c.n_layer; ++l) {
      if (!LayerIsResident(l)) streamed_.push_back(l);
    }
    if (!head_resident_) streamed_.push_back(kHead);
    const int S = static_cast<int>(streamed_.size());
    ring_depth_ = std::min(p.ring_depth, S);
    for (int unit : streamed_) slot_bytes_ = std::max(slot_bytes_, LayOut(unit, 0, nullptr, nullptr));
    for (int s = 0; s < ring_depth_; ++s) {
      backend::DeviceBuffer buf;
      FERRY_ASSIGN_OR_RETURN(buf, backend::DeviceBuffer::Make(d, slot_bytes_, absl::StrCat("staging slot ", s)));
      usage_.staging += AlignDevice(slot_bytes_);
      slots_.push_back(std::move(buf));
      backend::Event ready = 0, free = 0;
      FERRY_ASSIGN_OR_RETURN(ready, d.CreateEvent());
      FERRY_ASSIGN_OR_RETURN(free, d.CreateEvent());
      ready_.push_back(ready);
      free_.push_back(free);
    }
    // Host side of streaming: every streamed unit packed, exactly as it
    // sits in a slot, into one page-locked buffer allocated by the device
    // (cudaHostAlloc on a GPU), so each unit crosses in one copy at the
    // pinned rate. Why copies and not cudaHostRegister on the mapped file:
    // registering a file mapping needs read-only registration support and
    // its cost depends on the system, while the driver's own allocation is
    // the documented fast path; the copy costs one pass over the streamed
    // bytes at load. The mapping's pages of the copied matrices are then
    // dropped (File::DropPages), so host memory for streaming is the packed
    // copy (1.0x the streamed bytes, plus 256-byte alignment gaps) and the
    // staging ring is on the device.
    const auto pack_start = std::chrono::steady_clock::now();
    streamed_views_.assign(S, std::vector<DeviceLayer>(ring_depth_));
    std::vector<uint64_t> unit_offset(S), unit_bytes(S);
    uint64_t packed = 0;
    for (int i = 0; i < S; ++i) {
      unit_bytes[i] = LayOut(streamed_[i], 0, nullptr, nullptr);
      unit_offset[i] = packed;
      packed += AlignDevice(unit_bytes[i]);
    }
    if (packed > 0) {
      Progress(absl::StrCat("copying ", HumanBytes(packed), " of streamed weights to page-locked host memory"));
      FERRY_ASSIGN_OR_RETURN(host_streamed_, backend::HostBuffer::Make(d, packed, "the streamed layers' weights"));
    }
    const std::span<const uint8_t> file = model_.file->bytes();
    for (int i = 0; i < S; ++i) {
      pieces.clear();
      for (int s = 0; s < ring_depth_; ++s) {
        LayOut(streamed_[i], reinterpret_cast<uintptr_t>(slots_[s].bytes()), &streamed_views_[i][s],
               s == 0 ? &pieces : nullptr);
      }
      uint8_t* image = host_streamed_.bytes() + unit_offset[i];
      for (const Piece& piece : pieces) {
        std::memcpy(image + piece.offset, piece.src, piece.bytes);
        const auto* src = static_cast<const uint8_t*>(piece.src);
        if (src >= file.data() && src < file.data() + file.size()) model_.file->DropPages(src, piece.bytes);
      }
      streamed_images_.emplace_back(image, unit_bytes[i]);
    }
    load_.packed_bytes = packed;
    load_.pack_s = Seconds(pack_start);
  }

  // KV cache, one K and one V buffer per layer.
  const int elem = options_.kv_type == KvType::kF16 ? 2 : 4;
  for (int l = 0; l < c.n_layer; ++l) {
    backend::DeviceBuffer k, v;
    FERRY_ASSIGN_OR_RETURN(k, backend::DeviceBuffer::Make(d, plan::KvLayerBytes(n_ctx_, options_.n_seq, c.kv_dim(), elem),
                                                          absl::StrCat("KV cache (K) of layer ", l)));
    FERRY_ASSIGN_OR_RETURN(v, backend::DeviceBuffer::Make(d, plan::KvLayerBytes(n_ctx_, options_.n_seq, c.v_dim(), elem),
                                                          absl::StrCat("KV cache (V) of layer ", l)));
    usage_.kv_cache += k.size() + v.size();
    kv_.push_back({k.bytes(), v.bytes(), elem == 2, n_ctx_, c.kv_dim()});
    k_cache_.push_back(std::move(k));
    v_cache_.push_back(std::move(v));
  }

  // Activations of the largest step.
  plan::Workspace ws = plan::WorkspaceFor(c, options_.max_batch, n_ctx_);
  ws.scores = d.AttentionScratchFloats(options_.max_batch, c.n_head, n_ctx_);
  auto make = [&](backend::DeviceBuffer* b, uint64_t floats) -> absl::Status {
    FERRY_ASSIGN_OR_RETURN(*b, backend::DeviceBuffer::Make(d, floats * sizeof(float), "activation workspace"));
    usage_.workspace += AlignDevice(floats * sizeof(float));
    return absl::OkStatus();
  };
  FERRY_RETURN_IF_ERROR(make(&x_, ws.x));
  FERRY_RETURN_IF_ERROR(make(&xn_, ws.xn));
  FERRY_RETURN_IF_ERROR(make(&out_, ws.out));
  FERRY_RETURN_IF_ERROR(make(&q_, ws.q));
  FERRY_RETURN_IF_ERROR(make(&attn_, ws.attn));
  FERRY_RETURN_IF_ERROR(make(&k_, ws.k));
  FERRY_RETURN_IF_ERROR(make(&v_, ws.v));
  FERRY_RETURN_IF_ERROR(make(&gate_, ws.gate));
  FERRY_RETURN_IF_ERROR(make(&up_, ws.up));
  FERRY_RETURN_IF_ERROR(make(&logits_, ws.logits));
  FERRY_RETURN_IF_ERROR(make(&scores_, ws.scores));
  // The step's host buffers, as plan::HostStepBufferBytes counts them.
  embd_host_.resize(static_cast<size_t>(options_.max_batch) * c.n_embd);
  FERRY_RETURN_IF_ERROR(d.RegisterHost(embd_host_.data(), embd_host_.size() * sizeof(float)));
  tokens_.reserve(options_.max_batch);
  logit_rows_.reserve(options_.max_batch);
  FERRY_ASSIGN_OR_RETURN(logits_out_, backend::HostBuffer::Make(d, static_cast<uint64_t>(options_.n_seq) * c.n_vocab *
                                                                        sizeof(float),
                                                                "the logits"));

  // The copy queue starts ring_depth units ahead of the first step.
  for (int u = 0; u < ring_depth_; ++u) EnqueueUpload(u);
  return absl::OkStatus();
}

void Executor::EnqueueUpload(uint64_t u) {
  backend::Device& d = *device_;
  const int slot = static_cast<int>(u % ring_depth_);
  const std::span<const uint8_t> image = streamed_images_[u % streamed_.size()];
  uint8_t* base = slots_[slot].bytes();
  // The slot is reused only after the layer that read it has run.
  d.Wait(Queue::kCopy, free_[slot]);
  d.PoisonOnReuse(base, slot_bytes_);
  d.CopyToDevice(Queue::kCopy, base, image.data(), image.size());
  d.Record(ready_[slot], Queue::kCopy);
}

const Executor::DeviceLayer& Executor::Acquire(int unit, int* slot) {
  *slot = -1;
  const int index = unit == kHead ? config_.n_layer : unit;
  if (UnitIsResident(index)) return resident_[index];
  *slot = static_cast<int>(cursor_ % ring_depth_);
  const DeviceLayer& view = streamed_views_[cursor_ % streamed_.size()][*slot];
  if (!options_.testing_skip_ready_wait) device_->Wait(Queue::kCompute, ready_[*slot]);
  if (options_.testing_release_slot_early) {
    Release(*slot);
    *slot = -1;
  }
  return view;
}

void Executor::Release(int slot) {
  if (slot < 0) return;
  // After the unit's last kernel: the copy queue may refill the slot with
  // the unit ring_depth ahead (in this step or, wrapping, the next).
  device_->Record(free_[slot], Queue::kCompute);
  EnqueueUpload(cursor_ + ring_depth_);
  ++cursor_;
}

void Executor::Layer(int l, const DeviceLayer& L, int n) {
  const model::ModelConfig& c = config_;
  backend::Device& d = *device_;
  const int E = c.n_embd;
  float *x = x_.floats(), *xn = xn_.floats(), *q = q_.floats(), *k = k_.floats(), *v = v_.floats();
  float *attn = attn_.floats(), *out = out_.floats(), *gate = gate_.floats(), *up = up_.floats();
  const std::span<const backend::TokenPos> tokens(tokens_);
  d.RmsNormBefore(L.wq, x, n, E, L.attn_norm, c.norm_eps, xn);
  const backend::MatMulOut qkv[] = {{&L.wq, q, c.q_dim()}, {&L.wk, k, c.kv_dim()}, {&L.wv, v, c.v_dim()}};
  d.MatMulShared(qkv, xn, E, n);
  if (c.qkv_bias) {
    d.AddRowBias(q, n, c.q_dim(), L.bq);
    d.AddRowBias(k, n, c.kv_dim(), L.bk);
    d.AddRowBias(v, n, c.v_dim(), L.bv);
  }
  if (c.qk_norm) {  // each head of q and k on its own: rows of head_dim
    d.RmsNorm(q, n * c.n_head, c.head_dim, L.q_norm, c.norm_eps, q);
    d.RmsNorm(k, n * c.n_head_kv, c.head_dim, L.k_norm, c.norm_eps, k);
  }
  d.RopeQK(q, c.n_head, k, c.n_head_kv, n, tokens, rope_.WithSet(c.LayerRopeSet(l)));
  d.StoreKv(kv_[l], k, v, tokens);
  const backend::AttentionShape shape{c.n_head, c.n_head_kv, c.head_dim, c.query_scale, c.attn_softcap,
                                      c.LayerIsSliding(l) ? c.sliding_window : 0};
  d.Attention(q, kv_[l], tokens, shape, scores_.floats(), attn);
  if (c.post_norms) {
    d.MatMul(L.wo, attn, c.q_dim(), n, out, E);
    d.RmsNorm(out, n, E, L.post_attn_norm, c.norm_eps, out);
    d.Add(x, out, static_cast<int64_t>(n) * E);
  } else {
    d.MatMulAdd(L.wo, attn, c.q_dim(), n, out, x, E);
  }
  d.RmsNormBefore(L.w_gate, x, n, E, L.ffn_norm, c.norm_eps, xn);
  d.GatedMatMul(L.w_gate, L.w_up, xn, E, n, gate, up, c.n_ff, c.activation);
  if (c.post_norms) {
    d.MatMul(L.w_down, gate, c.n_ff, n, out, E);
    d.RmsNorm(out, n, E, L.post_ffn_norm, c.norm_eps, out);
    d.Add(x, out, static_cast<int64_t>(n) * E);
  } else {
    d.MatMulAdd(L.w_down, gate, c.n_ff, n, out, x, E);
  }
}

void Executor::Unit(int u, const DeviceLayer& view, int n, int m) {
  if (u == config_.n_layer) {
    Head(view, m);
  } else {
    Layer(u, view, n);
  }
}

void Executor::Head(const DeviceLayer& H, int m) {
  const model::ModelConfig& c = config_;
  backend::Device& d = *device_;
  // The head only for the tokens that want logits, packed in batch order.
  d.GatherRows(x_.floats(), logit_rows_, c.n_embd, out_.floats());
  d.RmsNormBefore(H.output, out_.floats(), m, c.n_embd, H.output_norm, c.norm_eps, xn_.floats());
  d.MatMul(H.output, xn_.floats(), c.n_embd, m, logits_.floats(), c.n_vocab);
  if (c.final_softcap > 0.0f) d.SoftCap(logits_.floats(), static_cast<int64_t>(m) * c.n_vocab, c.final_softcap);
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
  d.CopyToDevice(Queue::kCompute, x_.floats(), embd_host_.data(), static_cast<uint64_t>(n) * E * sizeof(float));

  // Units 0..n_layer (the last is the head) in runs the device may record
  // once and replay (a CUDA graph): each run of resident units is one, and
  // each streamed unit one per staging slot (its weights' address), between
  // the waits and records that order it with the copy queue. The key names
  // the run and the slot; the device adds the step's shape.
  const int units = c.n_layer + 1, m = static_cast<int>(n_logits);
  auto key = [&](int first, int end, int slot) {
    return (static_cast<uint64_t>(first) * (units + 1) + end) * (ring_depth_ + 1) + (slot + 1);
  };
  for (int u = 0; u < units;) {
    if (UnitIsResident(u)) {
      int end = u + 1;
      while (end < units && UnitIsResident(end)) ++end;
      d.RunRecorded(key(u, end, -1), [&, u, end] {
        for (int i = u; i < end; ++i) Unit(i, resident_[i], n, m);
      });
      u = end;
      continue;
    }
    const int ring_slot = static_cast<int>(cursor_ % ring_depth_);
    int slot = -1;
    const DeviceLayer& view = Acquire(u == c.n_layer ? kHead : u, &slot);
    d.RunRecorded(key(u, u + 1, ring_slot), [&, u] { Unit(u, view, n, m); });
    Release(slot);
    ++u;
  }
  d.CopyToHost(logits.data(), logits_.floats(), n_logits * c.n_vocab * sizeof(float));
  // A faulted device's results are garbage: the step fails, and so will every later one.
  if (absl::Status h = d.health(); !h.ok()) return absl::InternalError(absl::StrCat("device fault: ", h.message()));

  const backend::DeviceStats after = device_->stats();
  ++stats_.steps;
  stats_.step_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stats_.bytes_streamed += after.bytes_to_device - before.bytes_to_device;
  stats_.copy_busy_s += after.copy_busy_s - before.copy_busy_s;
  stats_.compute_s += after.compute_s - before.compute_s;
  stats_.compute_wait_s += after.compute_wait_s - before.compute_wait_s;
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
  if (in_place_) {
    std::string layout;
    if (relayout_bytes_ > 0) {
      layout = relayout_ ? absl::StrCat(" (", HumanBytes(relayout_bytes_), " of matrices regrouped for the kernels)")
                         : absl::StrCat(" (matrices read as the file stores them: regrouping them needs ",
                                        HumanBytes(relayout_bytes_), ", more than 90% of the memory available)");
    }
    return absl::StrCat(device_->Describe(), ": all ", config_.n_layer, " layers computed in place from host memory",
                        layout);
  }
  std::string which;
  if (!streamed_.empty() && resident_layers_ > 0) {
    std::vector<std::string> names;
    for (int unit : streamed_) {
      if (unit != kHead) names.push_back(absl::StrCat(unit));
    }
    if (names.size() > 12) names.resize(12), names.push_back("...");
    which = absl::StrCat(" (layers ", absl::StrJoin(names, ", "), " streamed)");
  }
  return absl::StrFormat(
      "%s: offloaded %d/%d layers%s%s, %s resident, %d streamed unit(s) through a ring of %d x %s; device holds %s "
      "(KV cache %s, workspace %s) of %s",
      device_->Describe(), resident_layers_, config_.n_layer, head_resident_ ? " + output head" : " (head streamed)",
      which, HumanBytes(usage_.weights_resident), streamed_.size(), ring_depth_, HumanBytes(slot_bytes_),
      HumanBytes(device_->used()), HumanBytes(usage_.kv_cache), HumanBytes(usage_.workspace),
      HumanBytes(device_->capacity())) + LoadSummary();
}

uint64_t Executor::host_pinned_bytes() const {
  return host_streamed_.size() + embd_host_.size() * sizeof(float) + logits_out_.size();
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
