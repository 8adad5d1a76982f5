#include "engine/plan/host.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/backend/cpu/cpu_device.h"
#include "engine/backend/cpu/kernels.h"
#include "engine/backend/cpu/qdot.h"
#include "engine/backend/device.h"
#include "engine/model/unit_tensors.h"
#include "engine/quant/quantize.h"

namespace ferry::plan {

namespace {

// A figure measured at each of kHostTokens, at `tokens`: linear between two
// of them, in proportion past the last.
double AtTokens(const std::array<double, kHostTokens.size()>& at, int tokens) {
  constexpr size_t kLast = kHostTokens.size() - 1;
  if (tokens <= kHostTokens[0]) return at[0];
  if (tokens >= kHostTokens[kLast]) return at[kLast] * tokens / kHostTokens[kLast];
  size_t i = 0;
  while (kHostTokens[i + 1] < tokens) ++i;
  const double f = static_cast<double>(tokens - kHostTokens[i]) / (kHostTokens[i + 1] - kHostTokens[i]);
  return at[i] + f * (at[i + 1] - at[i]);
}

}  // namespace

double HostCurve::SecondsPerByte(int tokens) const { return AtTokens(seconds_per_byte, tokens); }

double HostLayerCurve::Seconds(int tokens) const { return AtTokens(seconds, tokens); }

const HostLayerCurve* HostSpec::LayerCurve(int layer, HostLayout layout) const {
  if (layer < 0 || layer >= static_cast<int>(layer_kind.size())) return nullptr;
  for (const HostLayerCurve& c : layer_curves) {
    if (c.kind == layer_kind[layer] && c.layout == layout) return &c;
  }
  return nullptr;
}

double HostSpec::ProductSeconds(quant::TensorType type, HostLayout layout, uint64_t bytes, uint64_t params,
                                int tokens) const {
  for (const HostCurve& c : curves) {
    if (c.type == type && c.layout == layout) return static_cast<double>(bytes) * c.SecondsPerByte(tokens);
  }
  return std::max(static_cast<double>(bytes) / (memory_gbps * 1e9),
                  2.0 * static_cast<double>(params) * tokens / (gflops * 1e9));
}

std::string HostSpec::Describe() const {
  std::string out = absl::StrFormat("%.1f GB/s of weights from memory, %.0f us a kernel", memory_gbps, kernel_s * 1e6);
  if (layer_rest_s[0] > 0) {
    absl::StrAppend(&out, absl::StrFormat(", a layer's work besides its products %.0f us at 1 token, %.0f us at 16",
                                          layer_rest_s[0] * 1e6, layer_rest_s[1] * 1e6));
  }
  if (!layer_curves.empty()) {
    absl::StrAppend(&out, "; ms a layer run whole takes at 1/8/64 tokens:");
    for (const HostLayerCurve& c : layer_curves) {
      int first = 0;
      while (first < static_cast<int>(layer_kind.size()) && layer_kind[first] != c.kind) ++first;
      absl::StrAppend(&out, " layer ", first, c.layout == HostLayout::kFile ? " (file layout)" : "",
                      absl::StrFormat(" %.2f/%.2f/%.2f", c.Seconds(1) * 1e3, c.Seconds(8) * 1e3, c.Seconds(64) * 1e3),
                      &c == &layer_curves.back() ? "" : ",");
    }
  }
  if (curves.empty()) return absl::StrCat(out, ", ", absl::StrFormat("%.0f", gflops), " GFLOP/s");
  absl::StrAppend(&out, "; GB/s of weights a product reads at 1/8/64 tokens:");
  for (const HostCurve& c : curves) {
    absl::StrAppend(&out, " ", quant::Info(c.type).name, c.layout == HostLayout::kFile ? " (file layout)" : "",
                    absl::StrFormat(" %.1f/%.1f/%.1f", 1e-9 / c.SecondsPerByte(1), 1e-9 / c.SecondsPerByte(8),
                                    1e-9 / c.SecondsPerByte(64)),
                    &c == &curves.back() ? "" : ",");
  }
  return out;
}

std::vector<HostProbe> HostProbesFor(const gguf::File& file, const model::ModelConfig& c) {
  std::map<quant::TensorType, HostProbe> widest;
  for (int u = 0; u <= c.n_layer; ++u) {
    for (const model::UnitTensor* ut : model::TensorsOf(c, u)) {
      if (!ut->is_matrix()) continue;
      const gguf::TensorInfo* t = file.FindTensor(model::TensorName(c, *ut, u));
      if (t == nullptr) continue;
      HostProbe& p = widest[t->type];
      if (ut->cols(c) > p.cols) p = {t->type, ut->cols(c)};
    }
  }
  std::vector<HostProbe> out;
  for (const auto& [type, p] : widest) out.push_back(p);
  return out;
}

HostLayer HostLayerFor(const model::ModelConfig& c, int position) {
  return {.n_embd = c.n_embd, .n_ff = c.n_ff, .n_head = c.n_head, .n_head_kv = c.n_head_kv, .head_dim = c.head_dim,
          .rope_dims = c.rope_dims, .activation = c.activation, .position = std::clamp(position, 1, 4096)};
}

namespace {

constexpr uint64_t kMiB = 1 << 20;

}  // namespace

uint64_t HostWalkBytes(uint64_t model_bytes) {
  uint64_t bytes = std::clamp<uint64_t>(model_bytes, 64 * kMiB, 512 * kMiB);
  if (const uint64_t available = backend::AvailableHostMemory(); available > 0) {
    bytes = std::max<uint64_t>(std::min(bytes, available / 4), 8 * kMiB);
  }
  return bytes;
}

std::optional<std::vector<uint8_t>> MadeUpRows(quant::TensorType type, int64_t cols, int64_t rows) {
  const std::optional<uint64_t> row_bytes = quant::RowBytes(type, cols);
  if (!row_bytes || *row_bytes == 0 || rows <= 0 || !quant::CanConvert(type)) return std::nullopt;
  std::vector<float> values(cols);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (float& v : values) v = normal(rng);
  std::vector<uint8_t> out(rows * *row_bytes);
  if (!quant::QuantizeRow(type, values, std::span(out.data(), *row_bytes)).ok()) return std::nullopt;
  for (int64_t r = 1; r < rows; ++r) std::memcpy(out.data() + r * *row_bytes, out.data(), *row_bytes);
  return out;
}

namespace {

// HostLayer's work at `tokens` tokens on the cpu device (every token a
// decode token at `position`, the cache of one sequence): the best of 5.
double LayerRestSeconds(backend::CpuDevice& cpu, const HostLayer& s, int tokens) {
  const int64_t t = tokens, q_dim = int64_t{s.n_head} * s.head_dim, kv_dim = int64_t{s.n_head_kv} * s.head_dim;
  const int n_ctx = s.position + 1;
  std::vector<float> x(t * s.n_embd, 0.1f), xn(t * s.n_embd), w(s.n_embd, 1.0f), q(t * q_dim, 0.1f),
      k(t * kv_dim, 0.1f), v(t * kv_dim, 0.1f), attn(t * q_dim), out(t * s.n_embd, 0.1f), gate(t * s.n_ff, 0.1f),
      up(t * s.n_ff, 0.1f), scores(t * s.n_head * int64_t{n_ctx}), inv_freq(std::max(s.rope_dims / 2, 1), 1e-3f);
  std::vector<uint16_t> k_cache(n_ctx * kv_dim), v_cache(n_ctx * kv_dim);
  const backend::KvLayer kv{k_cache.data(), v_cache.data(), true, n_ctx, static_cast<int>(kv_dim)};
  const backend::RopeParams rope{inv_freq.data(), s.rope_dims, false, s.head_dim, 1, 0};
  const backend::AttentionShape shape{s.n_head, s.n_head_kv, s.head_dim, 1.0f / std::sqrt(float(s.head_dim)), 0, 0};
  const std::vector<backend::TokenPos> at(tokens, backend::TokenPos{0, s.position});
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    cpu.RmsNorm(x.data(), tokens, s.n_embd, w.data(), 1e-5f, xn.data());
    cpu.Rope(q.data(), tokens, s.n_head, at, rope);
    cpu.Rope(k.data(), tokens, s.n_head_kv, at, rope);
    cpu.StoreKv(kv, k.data(), v.data(), at);
    cpu.Attention(q.data(), kv, at, shape, scores.data(), attn.data());
    cpu.Add(x.data(), out.data(), t * s.n_embd);
    cpu.RmsNorm(x.data(), tokens, s.n_embd, w.data(), 1e-5f, xn.data());
    cpu.GatedActivation(gate.data(), up.data(), t * s.n_ff, s.activation);
    cpu.Add(x.data(), out.data(), t * s.n_embd);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// A buffer the size of the model's weights that products walk through,
// slice after slice and around again, so that they find the weights where
// a decode step does: in cache when the model fits it, in memory when not.
// For each type and layout it is filled by repeating one group of 8
// quantized rows (the values do not change the kernels' speed); on huge
// pages, as the cpu device allocates its grouped weights.
class Walk {
 public:
  Walk(uint64_t bytes, int threads, int64_t max_cols)
      : size_(std::max<uint64_t>(bytes / (2 * kMiB), 1) * 2 * kMiB),
        data_(static_cast<uint8_t*>(std::aligned_alloc(2 * kMiB, size_))),
        pool_(threads),
        scratch_(pool_.size(), max_cols, kHostTokens.back()),
        x_(max_cols * kHostTokens.back(), 0.5f),
        y_(kSliceRowsMax * kHostTokens.back()) {
    if (data_ != nullptr) madvise(data_, size_, MADV_HUGEPAGE);
  }
  ~Walk() { std::free(data_); }
  bool ok() const { return data_ != nullptr; }

  // Fills the buffer with matrices of `type`, `cols` wide, in `layout`
  // (the file's where the type has no grouped layout); false for a type
  // ferry cannot quantize.
  bool Fill(quant::TensorType type, int64_t cols, HostLayout layout) {
    const std::optional<std::vector<uint8_t>> made = MadeUpRows(type, cols, cpu::kGroupRows);
    if (!made) return false;
    const std::vector<uint8_t>& eight = *made;
    const uint64_t row_bytes = eight.size() / cpu::kGroupRows;
    const bool grouped = layout == HostLayout::kGrouped && cpu::GroupedMatrixBytes(type, 64, cols) != 0;
    std::vector<uint8_t> unit = eight;  // 8 rows as the layout stores them
    if (grouped) {
      unit.assign(cpu::GroupBytes(type, cols), 0);
      cpu::GroupRows(type, eight.data(), row_bytes, cols, unit.data());
    }
    units_ = static_cast<int64_t>(size_ / unit.size()) / 2 * 2;
    if (units_ < 2) return false;
    for (int64_t u = 0; u < units_; ++u) std::memcpy(data_ + u * unit.size(), unit.data(), unit.size());
    matrix_ = {data_, type, cols, 0, 0, "host probe"};
    matrix_.group_bytes = grouped ? unit.size() : 0;
    unit_bytes_ = unit.size();
    row_bytes_ = row_bytes;
    // Slices of about 4 MiB (an even number of groups: AMX takes two).
    slice_units_ = std::clamp<int64_t>(static_cast<int64_t>(4 * kMiB / unit.size()) / 2 * 2, 2,
                                       std::min(units_, kSliceRowsMax / cpu::kGroupRows));
    cursor_ = 0;
    return true;
  }

  // Seconds per weight byte of products of `tokens` tokens, walking on for
  // at least `seconds` (and two slices), less each product's fixed cost
  // `kernel_s`; the best of `repetitions`.
  double SecondsPerByte(int tokens, double seconds, int repetitions, double kernel_s) {
    double best = 1e30;
    for (int i = 0; i < repetitions; ++i) {
      uint64_t bytes = 0;
      int products = 0;
      double elapsed = 0;
      const auto t0 = std::chrono::steady_clock::now();
      while (products < 2 || elapsed < seconds) {
        if (cursor_ + slice_units_ > units_) cursor_ = 0;
        model::Matrix m = matrix_;
        m.data = data_ + cursor_ * unit_bytes_;
        m.rows = slice_units_ * cpu::kGroupRows;
        m.bytes = row_bytes_ * m.rows;
        cpu::MatMul(m, x_.data(), m.cols, tokens, y_.data(), kSliceRowsMax, pool_, scratch_);
        cursor_ += slice_units_;
        bytes += m.bytes;
        ++products;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      best = std::min(best, std::max(elapsed - products * kernel_s, elapsed / 2) / static_cast<double>(bytes));
    }
    return best;
  }

  // memcpy from one half of the buffer to the other, 4 MiB at a time,
  // for at least `seconds`: bytes per second (the best of 3).
  double CopyBytesPerSecond(double seconds) {
    const uint64_t half = size_ / 2, chunk = std::min<uint64_t>(4 * kMiB, half);
    double best = 0;
    for (int i = 0; i < 3; ++i) {
      uint64_t bytes = 0, at = 0;
      double elapsed = 0;
      const auto t0 = std::chrono::steady_clock::now();
      while (bytes < 2 * chunk || elapsed < seconds) {
        if (at + chunk > half) at = 0;
        std::memcpy(data_ + half + at, data_ + at, chunk);
        at += chunk;
        bytes += chunk;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      best = std::max(best, bytes / elapsed);
    }
    return best;
  }

  // A product of 64 rows (in cache) at one token: mostly the thread pool's
  // start and finish. The median of many.
  double KernelSeconds() {
    model::Matrix m = matrix_;
    m.rows = std::min<int64_t>(64, units_ * cpu::kGroupRows);
    m.bytes = row_bytes_ * m.rows;
    std::vector<double> times;
    for (int i = 0; i < 201; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      cpu::MatMul(m, x_.data(), m.cols, 1, y_.data(), kSliceRowsMax, pool_, scratch_);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
    return times[times.size() / 2];
  }

 private:
  static constexpr int64_t kSliceRowsMax = 1 << 16;
  uint64_t size_;
  uint8_t* data_;
  cpu::ThreadPool pool_;
  cpu::MatMulScratch scratch_;
  std::vector<float> x_, y_;
  model::Matrix matrix_;
  uint64_t unit_bytes_ = 0, row_bytes_ = 0;
  int64_t units_ = 0, slice_units_ = 0, cursor_ = 0;
};

}  // namespace

HostSpec MeasureHost(int threads, const std::vector<HostProbe>& probes, uint64_t model_bytes, bool file_layout,
                     const HostLayer& layer) {
  constexpr int64_t kRefCols = 4096;
  int64_t max_cols = kRefCols;
  for (const HostProbe& p : probes) {
    if (p.cols <= kHostMaxWidth) max_cols = std::max(max_cols, p.cols);
  }
  HostSpec h;
  Walk walk(HostWalkBytes(model_bytes), threads, max_cols);
  if (!walk.ok()) return h;
  auto curve = [&](quant::TensorType type, int64_t cols, HostLayout layout) -> std::optional<HostCurve> {
    if (!walk.Fill(type, cols, layout)) return std::nullopt;
    HostCurve c{.type = type, .layout = layout, .seconds_per_byte = {}};
    for (size_t i = 0; i < kHostTokens.size(); ++i) {
      c.seconds_per_byte[i] = walk.SecondsPerByte(kHostTokens[i], 0.02, 3, h.kernel_s);
    }
    return c;
  };
  if (walk.Fill(quant::TensorType::kQ8_0, kRefCols, HostLayout::kGrouped)) h.kernel_s = walk.KernelSeconds();
  if (file_layout) h.copy_gbps = walk.CopyBytesPerSecond(0.02) / 1e9;
  if (layer.n_embd > 0 && layer.n_ff > 0 && layer.n_head > 0 && layer.n_head_kv > 0 && layer.head_dim > 0 &&
      layer.n_head % layer.n_head_kv == 0 && layer.rope_dims <= layer.head_dim && layer.n_embd <= kHostMaxWidth &&
      layer.n_ff <= kHostMaxWidth && int64_t{layer.n_head} * layer.head_dim <= kHostMaxWidth) {
    backend::CpuDevice cpu(threads);
    h.layer_rest_s = {LayerRestSeconds(cpu, layer, 1), LayerRestSeconds(cpu, layer, 16)};
  }
  for (const HostProbe& p : probes) {
    for (HostLayout layout : {HostLayout::kGrouped, HostLayout::kFile}) {
      if (p.cols > kHostMaxWidth || (layout == HostLayout::kFile && !file_layout)) continue;
      if (std::optional<HostCurve> c = curve(p.type, p.cols, layout)) h.curves.push_back(*c);
    }
  }
  // The figures a type without a curve is priced by, from q8_0 (the
  // model's own where it has it): the bandwidth at one token, the
  // arithmetic rate at 32.
  std::optional<HostCurve> ref;
  for (const HostCurve& c : h.curves) {
    if (c.type == quant::TensorType::kQ8_0 && c.layout == HostLayout::kGrouped) ref = c;
  }
  if (!ref) ref = curve(quant::TensorType::kQ8_0, kRefCols, HostLayout::kGrouped);
  if (ref) {
    const double params_per_byte = 32.0 / 34.0;  // a q8_0 block: 32 weights in 34 bytes
    h.memory_gbps = 1e-9 / ref->SecondsPerByte(1);
    h.gflops = 2.0 * params_per_byte * 32 / ref->SecondsPerByte(32) / 1e9;
  }
  return h;
}

}  // namespace ferry::plan
