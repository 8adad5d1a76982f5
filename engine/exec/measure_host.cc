#include "engine/exec/measure_host.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "engine/backend/cpu/cpu_device.h"
#include "engine/exec/layer.h"
#include "engine/model/unit_tensors.h"
#include "engine/plan/planner.h"
#include "engine/quant/quantize.h"
#include "engine/stream/layout.h"

namespace ferry::exec {

namespace {

constexpr uint64_t kMiB = 1 << 20;
// The KV cache the layers attend over: as many sequences of `position`
// cached positions as fit here (at most one per token of the largest step).
constexpr uint64_t kKvBudget = 256 * kMiB;

struct Shape {
  const model::UnitTensor* tensor = nullptr;
  quant::TensorType type = quant::TensorType::kF32;
  int64_t rows = 0, cols = 0;
};

// A layer's cost is set by its matrices (type and shape, in order) and by
// how many positions its attention reads.
std::vector<int64_t> KeyOf(const std::vector<Shape>& shapes, int span) {
  std::vector<int64_t> key;
  for (const Shape& s : shapes) key.insert(key.end(), {static_cast<int64_t>(s.type), s.rows, s.cols});
  key.push_back(span);
  return key;
}

// One layer's weights made up in the file's layout (plan::MadeUpRows).
class Template {
 public:
  // False where a type cannot be quantized.
  bool Make(const model::ModelConfig& c, const std::vector<Shape>& shapes) {
    int64_t longest = std::max({int64_t{c.n_embd}, int64_t{c.q_dim()}, int64_t{c.kv_dim()}, int64_t{c.v_dim()},
                                int64_t{c.n_ff}});
    ones_.assign(longest, 1.0f);
    for (const Shape& s : shapes) {
      std::optional<std::vector<uint8_t>> made = plan::MadeUpRows(s.type, s.cols, s.rows);
      if (!made) return false;
      const std::vector<uint8_t>& m = matrices_.emplace_back(*std::move(made));
      view_.*(s.tensor->view_matrix) = {m.data(), s.type, s.cols, s.rows, m.size(), s.tensor->name};
    }
    for (const model::UnitTensor* t : model::TensorsOf(c, 0)) {
      if (!t->is_matrix()) view_.*(t->view_vector) = ones_.data();
    }
    return true;
  }
  const model::UnitView& view() const { return view_; }

 private:
  std::vector<std::vector<uint8_t>> matrices_;
  std::vector<float> ones_;
  model::UnitView view_;
};

// The buffers a layer of up to `max_tokens` tokens reads and writes on the
// cpu device, every token attending over `position` positions of its own
// sequence (tokens beyond the sequences the KV budget holds share them).
class Bench {
 public:
  Bench(backend::CpuDevice& cpu, const model::ModelConfig& c, int max_tokens, int position)
      : c_(c), position_(position) {
    const int n_ctx = position + 1;
    const uint64_t per_seq = 2 * static_cast<uint64_t>(n_ctx) * std::max(c.kv_dim(), c.v_dim()) * sizeof(uint16_t);
    n_seq_ = static_cast<int>(std::clamp<uint64_t>(kKvBudget / std::max<uint64_t>(per_seq, 1), 1, max_tokens));
    k_.assign(static_cast<size_t>(n_seq_) * n_ctx * c.kv_dim(), 0);
    v_.assign(static_cast<size_t>(n_seq_) * n_ctx * c.v_dim(), 0);
    plan::Workspace ws = plan::WorkspaceFor(c, max_tokens, n_ctx);
    ws.scores = cpu.AttentionScratchFloats(max_tokens, c.n_head, n_ctx);
    Activations& a = lane_.act;
    for (auto [at, floats] : {std::pair{&a.x, ws.x}, {&a.xn, ws.xn}, {&a.out, ws.out}, {&a.q, ws.q}, {&a.attn, ws.attn},
                              {&a.k, ws.k}, {&a.v, ws.v}, {&a.gate, ws.gate}, {&a.up, ws.up}, {&a.scores, ws.scores}}) {
      *at = buffers_.emplace_back(floats, 0.0f).data();
    }
    lane_.device = &cpu;
    lane_.kv.assign(c.n_layer, {});
    // theta_i = pos * base^(-2i / rope_dims), per rope set (the values do
    // not change the kernels' speed; their size does, a little).
    for (int set = 0; set < c.rope_sets(); ++set) {
      const double base = set == 0 ? c.rope_base : c.rope_base_local;
      for (int i = 0; i < c.rope_dims / 2; ++i) {
        inv_freq_.push_back(static_cast<float>(std::pow(base, -2.0 * i / c.rope_dims)));
      }
    }
    rope_ = {inv_freq_.data(), c.rope_dims, c.rope_layout == model::RopeLayout::kNeox, c.head_dim, c.rope_sets(), 0};
  }

  // Layer `l` (for its sliding window and rope set) over `tokens` tokens
  // with the weights of `views`, one after another from where the last call
  // stopped and around again, for at least `seconds` and one layer: seconds
  // a layer, the best of `repetitions` (of fewer where one layer takes
  // longer than all of them were meant to: a big model's layer at many
  // tokens).
  double SecondsPerLayer(int l, const std::vector<model::UnitView>& views, int tokens, double seconds,
                         int repetitions) {
    lane_.kv[l] = {k_.data(), v_.data(), true, position_ + 1, c_.kv_dim()};
    std::vector<backend::TokenPos> at;
    for (int t = 0; t < tokens; ++t) at.push_back({t % n_seq_, position_});
    const StepShape step{at, {}, &rope_};
    double best = 1e30, total = 0;
    for (int r = 0; r < repetitions && total < repetitions * seconds; ++r) {
      int layers = 0;
      double elapsed = 0;
      const auto t0 = std::chrono::steady_clock::now();
      while (layers < 1 || elapsed < seconds) {
        // The residual stream as a step starts it: layer after layer of
        // made-up weights would grow it without bound.
        std::fill_n(lane_.act.x, static_cast<size_t>(tokens) * c_.n_embd, 0.1f);
        RunLayer(c_, l, views[cursor_++ % views.size()], step, lane_);
        ++layers;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      best = std::min(best, elapsed / layers);
      total += elapsed;
    }
    return best;
  }

 private:
  const model::ModelConfig& c_;
  int position_ = 0, n_seq_ = 1;
  uint64_t cursor_ = 0;
  std::vector<uint16_t> k_, v_;
  std::vector<std::vector<float>> buffers_;
  std::vector<float> inv_freq_;
  backend::RopeParams rope_;
  Lane lane_;
};

// Each kind of layer run whole: h->layer_kind and h->layer_curves.
void MeasureLayers(const gguf::File& file, const model::ModelConfig& c, int threads, uint64_t model_bytes,
                   bool file_layout, int position, plan::HostSpec* out) {
  plan::HostSpec& h = *out;
  position = std::clamp(position, 1, 4096);
  h.layer_kind.assign(c.n_layer, -1);
  // The kinds of layer, each with the first layer of the kind.
  std::map<std::vector<int64_t>, int> kinds;
  std::vector<std::pair<int, std::vector<Shape>>> firsts;
  for (int l = 0; l < c.n_layer; ++l) {
    std::vector<Shape> shapes;
    bool complete = true;
    for (const model::UnitTensor* t : model::TensorsOf(c, l)) {
      if (!t->is_matrix()) continue;
      const gguf::TensorInfo* info = file.FindTensor(model::TensorName(c, *t, l));
      if (info == nullptr) {
        complete = false;
        break;
      }
      shapes.push_back({t, info->type, t->rows(c), t->cols(c)});
    }
    if (!complete) continue;
    const int span = c.LayerIsSliding(l) ? std::min(position, c.sliding_window) : position;
    auto [it, added] = kinds.try_emplace(KeyOf(shapes, span), static_cast<int>(firsts.size()));
    if (added) firsts.push_back({l, std::move(shapes)});
    h.layer_kind[l] = it->second;
  }
  // Widths no layer has (a header may claim anything) are not measured:
  // the kernels' scratch and the activations would not fit.
  for (int64_t width : {int64_t{c.n_embd}, int64_t{c.n_ff}, int64_t{c.q_dim()}, int64_t{c.kv_dim()},
                        int64_t{c.v_dim()}, plan::MaxMatrixRows(c), plan::MaxMatrixWidth(c)}) {
    if (width <= 0 || width > plan::kHostMaxWidth) firsts.clear();
  }
  // Nor a sequence's cache that alone passes the KV budget.
  if (2 * uint64_t{sizeof(uint16_t)} * (position + 1) * std::max(c.kv_dim(), c.v_dim()) > kKvBudget) firsts.clear();
  if (firsts.empty()) {
    h.layer_kind.assign(c.n_layer, -1);
    return;
  }
  const uint64_t budget = plan::HostWalkBytes(model_bytes), available = backend::AvailableHostMemory();

  backend::CpuDevice cpu(threads);
  if (!cpu.ReserveKernelScratch(plan::MaxMatrixRows(c), plan::MaxMatrixWidth(c), plan::kHostTokens.back()).ok()) {
    return;
  }
  Bench bench(cpu, c, plan::kHostTokens.back(), position);
  for (int kind = 0; kind < static_cast<int>(firsts.size()); ++kind) {
    const auto& [l, shapes] = firsts[kind];
    // The layer must fit (a header may claim any size): the budget, or a
    // quarter of the free memory where one layer is larger.
    uint64_t layer_bytes = 0;
    bool sized = true;
    for (const Shape& s : shapes) {
      const std::optional<uint64_t> row = quant::RowBytes(s.type, s.cols);
      sized = sized && row.has_value() && s.rows > 0 && *row <= (uint64_t{1} << 40) / s.rows;
      if (sized) layer_bytes += *row * s.rows;
    }
    if (!sized || (layer_bytes > budget && (available == 0 || layer_bytes > available / 4))) continue;
    Template source;
    if (!source.Make(c, shapes)) continue;
    for (plan::HostLayout layout : {plan::HostLayout::kGrouped, plan::HostLayout::kFile}) {
      if (layout == plan::HostLayout::kFile && !file_layout) continue;
      // Copies of the layer filling the budget: regrouped by the device as
      // the executor has it regroup a model's units (a matrix without a
      // grouped layout, and every matrix in the file's layout, copied as it
      // is).
      std::vector<model::UnitView> views;
      std::vector<backend::AdoptedWeights> adopted;
      std::vector<std::vector<uint8_t>> as_is;
      bool ok = true;
      for (uint64_t bytes = 0; ok && (views.empty() || bytes + layer_bytes <= budget); bytes += layer_bytes) {
        model::UnitView& view = views.emplace_back(source.view());
        std::vector<model::Matrix*> matrices = stream::MatricesOf(view);
        if (layout == plan::HostLayout::kGrouped) {
          absl::StatusOr<backend::AdoptedWeights> a = cpu.AdoptInPlace(matrices, nullptr);
          ok = a.ok();
          if (ok) adopted.push_back(*std::move(a));
        }
        for (model::Matrix* m : matrices) {
          if (m->group_bytes != 0 || !m->present()) continue;
          m->data = as_is.emplace_back(m->data, m->data + m->bytes).data();
        }
      }
      if (!ok) continue;
      plan::HostLayerCurve curve{.kind = kind, .layout = layout, .seconds = {}};
      bench.SecondsPerLayer(l, views, 1, 0, 1);  // the buffers faulted in
      for (size_t i = 0; i < plan::kHostTokens.size(); ++i) {
        curve.seconds[i] = bench.SecondsPerLayer(l, views, plan::kHostTokens[i], 0.01, 3);
      }
      h.layer_curves.push_back(curve);
    }
  }
}

}  // namespace

plan::HostSpec MeasureHost(const gguf::File& file, const model::ModelConfig& c, int threads, uint64_t model_bytes,
                           bool file_layout, int position) {
  plan::HostSpec layers;
  MeasureLayers(file, c, threads, model_bytes, file_layout, position, &layers);
  // A layer's other work apart is what prices a layer not measured whole.
  bool whole = true;
  for (int l = 0; l < c.n_layer; ++l) {
    whole = whole && layers.LayerCurve(l, plan::HostLayout::kGrouped) != nullptr &&
            (!file_layout || layers.LayerCurve(l, plan::HostLayout::kFile) != nullptr);
  }
  plan::HostSpec h = plan::MeasureHost(threads, plan::HostProbesFor(file, c), model_bytes, file_layout,
                                       whole ? plan::HostLayer{} : plan::HostLayerFor(c, position));
  h.layer_kind = std::move(layers.layer_kind);
  h.layer_curves = std::move(layers.layer_curves);
  return h;
}

}  // namespace ferry::exec
