#include "engine/backend/cpu/cpu_device.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "engine/backend/arena.h"
#include "engine/quant/half.h"
#include "engine/status.h"

namespace ferry::backend {

CpuDevice::CpuDevice(int threads) : pool_(threads) {}

CpuDevice::~CpuDevice() {
  for (auto& [p, size] : sizes_) std::free(p);
}

std::string CpuDevice::Describe() const {
  return absl::StrCat("cpu (", pool_.size(), " threads, ", cpu::IsaName(cpu::ActiveIsa()), " kernels)");
}

uint64_t CpuDevice::capacity() const {
  return static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

void CommitPages(void* p, uint64_t bytes) {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE)), at = reinterpret_cast<uintptr_t>(p);
  const uintptr_t first = at / page * page, end = (at + bytes + page - 1) / page * page;
  madvise(reinterpret_cast<void*>(first), end - first, MADV_POPULATE_WRITE);
}

absl::StatusOr<void*> CpuDevice::Allocate(uint64_t bytes, absl::string_view what) {
  // Large buffers (grouped weights, KV cache) on 2 MiB boundaries, in
  // transparent huge pages where the kernel allows them (fewer TLB misses
  // when the matrix kernels stream through hundreds of MiB per token).
  constexpr uint64_t kHuge = 2u << 20;
  const bool huge = bytes >= kHuge;
  const uint64_t size = huge ? (bytes + kHuge - 1) / kHuge * kHuge : AlignDevice(std::max<uint64_t>(bytes, 1));
  void* p = std::aligned_alloc(huge ? kHuge : kDeviceAlign, size);
  if (p != nullptr && huge) madvise(p, size, MADV_HUGEPAGE);
  if (p == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("out of host memory allocating ", size, " bytes for ", what));
  }
  CommitPages(p, size);
  std::lock_guard<std::mutex> lock(mu_);
  sizes_[p] = size;
  used_ += size;
  peak_ = std::max(peak_, used_);
  return p;
}

absl::StatusOr<void*> CpuDevice::AllocateHost(uint64_t bytes, absl::string_view what) {
  void* p = mmap(nullptr, std::max<uint64_t>(bytes, 1), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of host memory allocating ", bytes, " bytes for ", what, ": ", std::strerror(errno)));
  }
  return p;
}

void CpuDevice::FreeHost(void* p, uint64_t bytes) {
  if (p != nullptr) munmap(p, std::max<uint64_t>(bytes, 1));
}

void CpuDevice::Free(void* p) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = sizes_.find(p);
  if (it == sizes_.end()) return;
  used_ -= it->second;
  sizes_.erase(it);
  std::free(p);
}

namespace {

// The grouped copy's bytes; 0 when the matrix keeps the file's layout.
uint64_t GroupedBytes(const model::Matrix& m) {
  return m.group_bytes != 0 ? 0 : cpu::GroupedMatrixBytes(m.type, m.rows, m.cols);
}

}  // namespace

absl::StatusOr<AdoptedWeights> CpuDevice::AdoptInPlace(std::span<model::Matrix* const> matrices,
                                                       const std::function<void(const model::Matrix&)>& copied) {
  AdoptedWeights out;
  for (const model::Matrix* m : matrices) out.needed += m->present() ? GroupedBytes(*m) : 0;
  const uint64_t available = AvailableHostMemory();
  if (out.needed == 0 || (available > 0 && out.needed + available / 10 > available)) return out;
  for (model::Matrix* m : matrices) {
    const uint64_t bytes = m->present() ? GroupedBytes(*m) : 0;
    if (bytes == 0) continue;
    DeviceBuffer buf;
    FERRY_ASSIGN_OR_RETURN(buf, DeviceBuffer::Make(*this, bytes, m->name));
    const model::Matrix was = *m;
    *m = Grouped(was, buf.bytes());
    if (copied) copied(was);
    out.bytes += bytes;
    out.buffers.push_back(std::move(buf));
  }
  return out;
}

model::Matrix CpuDevice::Grouped(const model::Matrix& m, uint8_t* dst) {
  const int64_t groups = m.rows / cpu::kGroupRows;
  const uint64_t group_bytes = cpu::GroupBytes(m.type, m.cols);
  const uint64_t row_bytes = m.row_bytes();
  pool_.ParallelFor(groups, [&](int, int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      cpu::GroupRows(m.type, m.data + g * cpu::kGroupRows * row_bytes, row_bytes, m.cols, dst + g * group_bytes);
    }
  });
  const int64_t grouped_rows = groups * cpu::kGroupRows;
  std::memcpy(dst + groups * group_bytes, m.data + grouped_rows * row_bytes, (m.rows - grouped_rows) * row_bytes);
  model::Matrix out = m;
  out.data = dst;
  out.group_bytes = group_bytes;
  return out;
}

void CpuDevice::CopyToDevice(Queue, void* dst, const void* src, uint64_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
}
void CpuDevice::CopyToHost(void* dst, const void* src, uint64_t bytes) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
}

DeviceSpec CpuDevice::spec() const {
  DeviceSpec f = Device::spec();
  f.host_memory = true;
  f.host_kernels = true;
  f.threads = threads();
  return f;
}

DeviceStats CpuDevice::stats() const {
  DeviceStats s;
  s.compute_s = compute_ns_.load(std::memory_order_relaxed) * 1e-9;
  return s;
}

absl::Status CpuDevice::ReserveKernelScratch(int64_t max_rows, int64_t max_width, int max_tokens) {
  if (max_rows <= 0 || max_width <= 0 || max_tokens <= 0) return absl::InvalidArgumentError("kernel scratch: sizes must be positive");
  scratch_ = std::make_unique<cpu::MatMulScratch>(pool_.size(), max_width, max_tokens);
  return absl::OkStatus();
}

uint64_t CpuDevice::AttentionScratchFloats(int tokens, int n_head, int n_ctx) const {
  if (scratch_per_query()) return static_cast<uint64_t>(tokens) * n_head * n_ctx;
  return static_cast<uint64_t>(pool_.size()) * n_ctx;
}

void CpuDevice::MatMul(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* y,
                       int64_t y_stride) {
  KernelTimer timer(this);
  cpu::MatMul(w, x, x_stride, n_tokens, y, y_stride, pool_, *scratch_);
}

void CpuDevice::RmsNorm(const float* x, int n_rows, int64_t width, const float* weight, float eps, float* out) {
  KernelTimer timer(this);
  for (int r = 0; r < n_rows; ++r) cpu::RmsNorm(x + r * width, weight, width, eps, out + r * width);
}

void CpuDevice::Add(float* x, const float* y, int64_t n) {
  KernelTimer timer(this);
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void CpuDevice::AddRowBias(float* x, int n_rows, int64_t width, const float* bias) {
  KernelTimer timer(this);
  for (int r = 0; r < n_rows; ++r) {
    float* row = x + r * width;
    for (int64_t i = 0; i < width; ++i) row[i] += bias[i];
  }
}

void CpuDevice::Rope(float* x, int n_rows, int n_heads, std::span<const TokenPos> tokens, const RopeParams& rope) {
  KernelTimer timer(this);
  const int half = rope.dims / 2;
  const float* freqs = rope.freqs();
  for (int r = 0; r < n_rows; ++r) {
    float* row = x + static_cast<int64_t>(r) * n_heads * rope.head_dim;
    for (int i = 0; i < half; ++i) {
      const double theta = static_cast<double>(tokens[r].pos) * freqs[i];
      const float cs = static_cast<float>(std::cos(theta)), sn = static_cast<float>(std::sin(theta));
      // Normal layout rotates (2i, 2i+1); NeoX rotates (i, i + dims/2).
      const int a = rope.neox ? i : 2 * i;
      const int b = rope.neox ? i + half : 2 * i + 1;
      for (int h = 0; h < n_heads; ++h) {
        float* head = row + static_cast<int64_t>(h) * rope.head_dim;
        const float x0 = head[a], x1 = head[b];
        head[a] = x0 * cs - x1 * sn;
        head[b] = x0 * sn + x1 * cs;
      }
    }
  }
}

void CpuDevice::StoreKv(const KvLayer& kv, const float* k, const float* v, std::span<const TokenPos> tokens) {
  KernelTimer timer(this);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const size_t at = (static_cast<size_t>(tokens[t].seq) * kv.n_ctx + tokens[t].pos) * kv.kv_dim;
    const float* kr = k + t * kv.kv_dim;
    const float* vr = v + t * kv.kv_dim;
    if (kv.f16) {
      uint16_t* kd = static_cast<uint16_t*>(kv.k) + at;
      uint16_t* vd = static_cast<uint16_t*>(kv.v) + at;
      for (int i = 0; i < kv.kv_dim; ++i) kd[i] = quant::FloatToHalf(kr[i]), vd[i] = quant::FloatToHalf(vr[i]);
    } else {
      std::memcpy(static_cast<float*>(kv.k) + at, kr, kv.kv_dim * sizeof(float));
      std::memcpy(static_cast<float*>(kv.v) + at, vr, kv.kv_dim * sizeof(float));
    }
  }
}

void CpuDevice::Attention(const float* q_all, const KvLayer& kv, std::span<const TokenPos> tokens,
                          const AttentionShape& s, float* scratch, float* out_all) {
  KernelTimer timer(this);
  const int hd = s.head_dim, group = s.n_head / s.n_head_kv, q_dim = s.n_head * hd;
  const int64_t items = static_cast<int64_t>(tokens.size()) * s.n_head;
  int max_pos = 0;
  for (const TokenPos& t : tokens) max_pos = std::max(max_pos, t.pos);
  const bool per_query = scratch_per_query();
  pool_.ParallelFor(items, [&](int thread, int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      float* scores = scratch + (per_query ? item : thread) * static_cast<int64_t>(kv.n_ctx);
      const int t = static_cast<int>(item / s.n_head), h = static_cast<int>(item % s.n_head), kvh = h / group;
      const TokenPos& tok = tokens[t];
      const float* q = q_all + static_cast<size_t>(t) * q_dim + h * hd;
      const size_t seq_base = static_cast<size_t>(tok.seq) * kv.n_ctx * kv.kv_dim + kvh * hd;
      // Sliding layers see the last `window` positions, the query's included.
      const int lo = s.window > 0 ? std::max(0, tok.pos - s.window + 1) : 0;
      const int n = tok.pos - lo + 1;
      for (int j = 0; j < n; ++j) {
        const size_t at = seq_base + static_cast<size_t>(lo + j) * kv.kv_dim;
        float v = kv.f16 ? cpu::DotF16(q, static_cast<const uint16_t*>(kv.k) + at, hd)
                         : cpu::Dot(q, static_cast<const float*>(kv.k) + at, hd);
        v *= s.query_scale;
        if (s.softcap > 0.0f) v = s.softcap * std::tanh(v / s.softcap);
        scores[j] = v;
      }
      cpu::Softmax(scores, n);
      float* out = out_all + static_cast<size_t>(t) * q_dim + h * hd;
      std::fill(out, out + hd, 0.0f);
      for (int j = 0; j < n; ++j) {
        const size_t at = seq_base + static_cast<size_t>(lo + j) * kv.kv_dim;
        const float p = scores[j];
        if (kv.f16) {
          cpu::AxpyF16(p, static_cast<const uint16_t*>(kv.v) + at, out, hd);
        } else {
          const float* vr = static_cast<const float*>(kv.v) + at;
          for (int d = 0; d < hd; ++d) out[d] += p * vr[d];
        }
      }
    }
  }, items * hd * (max_pos + 1), 1 << 16);
}

void CpuDevice::GatedActivation(float* gate, const float* up, int64_t n, model::Activation act) {
  KernelTimer timer(this);
  if (act == model::Activation::kSilu) {
    for (int64_t i = 0; i < n; ++i) gate[i] = cpu::Silu(gate[i]) * up[i];
  } else {
    for (int64_t i = 0; i < n; ++i) gate[i] = cpu::GeluTanh(gate[i]) * up[i];
  }
}

void CpuDevice::SoftCap(float* x, int64_t n, float cap) {
  KernelTimer timer(this);
  for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] / cap);
}

void CpuDevice::GatherRows(const float* src, std::span<const int32_t> rows, int64_t width, float* dst) {
  KernelTimer timer(this);
  for (size_t i = 0; i < rows.size(); ++i) {
    std::memmove(dst + i * width, src + static_cast<int64_t>(rows[i]) * width, width * sizeof(float));
  }
}

}  // namespace ferry::backend
