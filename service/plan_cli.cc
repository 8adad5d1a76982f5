#include "service/plan_cli.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "engine/backend/device.h"
#include "engine/exec/measure_host.h"
#include "engine/model/config.h"
#include "engine/status.h"
#include "engine/units.h"

namespace ferry::service {

namespace {

constexpr plan::Strategy kStrategies[] = {plan::Strategy::kStream, plan::Strategy::kCpu, plan::Strategy::kMixed};
constexpr int kBatches[] = {1, 8, 32};

// One budget: the plan of each strategy, its predictions at batch 1, 8 and
// 32 (with the placement chosen for the expected batch, --slots) and at
// prefill, and which strategy is fastest at the expected batch.
struct Budget {
  std::vector<plan::Plan> plans;  // by kStrategies
  std::vector<std::vector<plan::Prediction>> decode;
  std::vector<plan::Prediction> prefill;
  int chosen = 0;
};

std::string Layers(const plan::Plan& p) {
  std::string out = absl::StrCat(p.resident_layers, p.head_resident ? "+h" : "");
  const int streamed = p.placement.layers(plan::Home::kStreamed), cpu = p.cpu_layers;
  if (streamed > 0 || p.placement.head() == plan::Home::kStreamed) {
    absl::StrAppend(&out, " / ", streamed, p.placement.head() == plan::Home::kStreamed ? "+h" : "");
  } else {
    absl::StrAppend(&out, " / 0");
  }
  return absl::StrCat(out, " / ", cpu, p.placement.head() == plan::Home::kCpu ? "+h" : "");
}

// Decode tokens/s at kBatches[j], with a star where the strategy is the
// fastest of the three at that batch.
std::string Rate(const Budget& b, int i, int j) {
  bool fastest = true;
  for (int k = 0; k < 3; ++k) fastest &= b.decode[k][j].tokens_per_s <= b.decode[i][j].tokens_per_s * 1.0001;
  return absl::StrFormat("%.1f%s", b.decode[i][j].tokens_per_s, fastest ? "*" : " ");
}

std::string Row(const Budget& b, int i) {
  const plan::Plan& p = b.plans[i];
  return absl::StrFormat("%9s %1s%-7s %13s %6.1f%% %11s %10s %10s %10s %10s %9s %10s %12s %12s %10s %10s %10s %9.0f\n",
                         HumanBytes(p.budget), i == b.chosen ? ">" : "", plan::StrategyName(p.strategy), Layers(p),
                         100.0 * p.gpu_fraction(), HumanBytes(p.weights_resident), HumanBytes(p.staging),
                         HumanBytes(p.kv_cache), HumanBytes(p.workspace), HumanBytes(p.overhead), HumanBytes(p.margin),
                         HumanBytes(p.total), HumanBytes(p.host_pinned), HumanBytes(p.host_total()), Rate(b, i, 0),
                         Rate(b, i, 1), Rate(b, i, 2), b.prefill[i].tokens_per_s);
}

std::string Json(const plan::Plan& p, const std::vector<plan::Prediction>& d, const plan::Prediction& prefill,
                 bool chosen) {
  return absl::StrCat(
      "{\"budget_bytes\":", p.budget, ",\"placement\":\"", plan::StrategyName(p.strategy), "\",\"chosen\":",
      chosen ? "true" : "false", ",\"layers\":", p.n_layers, ",\"resident_layers\":", p.resident_layers,
      ",\"streamed_layers\":", p.placement.layers(plan::Home::kStreamed), ",\"cpu_layers\":", p.cpu_layers,
      ",\"head\":\"", plan::HomeName(p.placement.head()), "\",\"head_resident\":", p.head_resident ? "true" : "false",
      ",\"where\":\"", p.placement.Describe(), "\",\"gpu_fraction\":", p.gpu_fraction(),
      ",\"device_bytes\":{\"weights_resident\":", p.weights_resident, ",\"staging\":", p.staging,
      ",\"kv_cache\":", p.kv_cache, ",\"workspace\":", p.workspace, ",\"overhead\":", p.overhead,
      ",\"margin\":", p.margin, ",\"total\":", p.total, "},\"host_pinned_bytes\":", p.host_pinned,
      ",\"host_bytes\":{\"pinned\":", p.host_pinned, ",\"cpu_weights_regrouped\":", p.host_cpu_weights,
      ",\"cpu_weights_mapped\":", p.host_cpu_mapped, ",\"cpu_kv_cache\":", p.host_cpu_kv, ",\"total\":",
      p.host_total(), "},\"model_bytes\":", p.model_bytes, ",\"predicted\":{\"decode_tokens_per_s_batch1\":",
      d[0].tokens_per_s, ",\"decode_tokens_per_s_batch8\":", d[1].tokens_per_s, ",\"decode_tokens_per_s_batch32\":",
      d[2].tokens_per_s, ",\"cpu_only_tokens_per_s_batch1\":", d[0].cpu_tokens_per_s,
      ",\"cpu_only_tokens_per_s_batch8\":", d[1].cpu_tokens_per_s, ",\"prefill_tokens_per_step\":", prefill.batch,
      ",\"prefill_tokens_per_s\":", prefill.tokens_per_s, ",\"cpu_only_prefill_tokens_per_s\":",
      prefill.cpu_tokens_per_s, ",\"stream_beats_cpu_from_batch\":", d[0].stream_beats_cpu_from_batch, "}}");
}

// The host's measured products: per weight type and layout, seconds per
// weight byte at each token count.
std::string CurvesJson(const plan::HostSpec& host) {
  std::string out = "[";
  for (const plan::HostCurve& c : host.curves) {
    absl::StrAppend(&out, out.size() > 1 ? "," : "", "{\"type\":\"", quant::Info(c.type).name, "\",\"layout\":\"",
                    c.layout == plan::HostLayout::kFile ? "file" : "grouped", "\",\"tokens\":[",
                    absl::StrJoin(plan::kHostTokens, ","), "],\"seconds_per_byte\":[",
                    absl::StrJoin(c.seconds_per_byte, ","), "]}");
  }
  return out + "]";
}

// The model's kinds of layer run whole: the layers of each kind, and per
// layout seconds a layer at each token count.
std::string LayersJson(const plan::HostSpec& host) {
  std::string out = "[";
  for (const plan::HostLayerCurve& c : host.layer_curves) {
    std::vector<int> layers;
    for (int l = 0; l < static_cast<int>(host.layer_kind.size()); ++l) {
      if (host.layer_kind[l] == c.kind) layers.push_back(l);
    }
    absl::StrAppend(&out, out.size() > 1 ? "," : "", "{\"layers\":[", absl::StrJoin(layers, ","), "],\"layout\":\"",
                    c.layout == plan::HostLayout::kFile ? "file" : "grouped", "\",\"tokens\":[",
                    absl::StrJoin(plan::kHostTokens, ","), "],\"seconds\":[", absl::StrJoin(c.seconds, ","), "]}");
  }
  return out + "]";
}

}  // namespace

absl::StatusOr<std::string> RunPlan(const PlanOptions& o) {
  std::unique_ptr<gguf::File> file;
  FERRY_ASSIGN_OR_RETURN(file, gguf::File::Open(o.model_path, {.header_only = true}));
  model::ModelConfig config;
  FERRY_ASSIGN_OR_RETURN(config, model::LoadConfig(*file));
  plan::DeviceSpec device;
  FERRY_ASSIGN_OR_RETURN(device, backend::FindGpuProfile(o.gpu));
  // The speed model: the profile's bandwidths, this host's measured CPU
  // kernels (which also decide the mixed splits).
  uint64_t model_bytes = 0;
  for (const gguf::TensorInfo& t : file->tensors()) model_bytes += t.bytes;
  const int n_ctx = o.request.n_ctx > 0 ? o.request.n_ctx : config.default_context();
  const plan::HostSpec host = exec::MeasureHost(*file, config, o.threads, model_bytes, false, n_ctx / 2);
  const uint64_t host_available = backend::AvailableHostMemory();

  plan::PlanRequest r = o.request;
  r.n_ctx = n_ctx;
  r.host = host;
  r.batch = r.n_slots;
  std::vector<std::pair<plan::DeviceSpec, plan::PlanRequest>> requests;
  if (o.gpu_layers >= 0) {
    r.policy = plan::Policy::kLayers;
    r.gpu_layers = o.gpu_layers;
    requests.push_back({device, r});
  } else if (o.budgets.empty()) {
    r.policy = plan::Policy::kAuto;
    requests.push_back({device, r});
  } else {
    for (uint64_t budget : o.budgets) {
      plan::DeviceSpec d = device;
      d.name = absl::StrCat(HumanBytes(budget), " budget");
      d.memory_bytes = budget;
      r.policy = plan::Policy::kBudget;
      r.gpu_memory = budget;
      requests.push_back({d, r});
    }
  }
  std::vector<Budget> budgets;
  for (const auto& [d, req] : requests) {
    Budget b;
    absl::Status failed;
    for (plan::Strategy s : kStrategies) {
      plan::PlanRequest sr = req;
      sr.strategy = s;
      absl::StatusOr<plan::Plan> p = plan::MakePlan(*file, config, sr, d);
      if (!p.ok()) {
        failed = p.status();
        break;
      }
      b.plans.push_back(*p);
      b.decode.emplace_back();
      for (int batch : kBatches) b.decode.back().push_back(plan::Predict(*p, device, host, batch));
      b.prefill.push_back(plan::PredictPrefill(*p, device, host, req.max_batch));
    }
    if (!failed.ok()) {
      if (requests.size() == 1) return failed;
      continue;  // in a table, a budget where nothing fits is left out (said below)
    }
    // The fastest at the expected batch; a tie goes to the simpler strategy.
    const double expected = plan::Predict(b.plans[0], device, host, r.batch).tokens_per_s;
    double best = expected;
    for (int i = 1; i < 3; ++i) {
      const double t = plan::Predict(b.plans[i], device, host, r.batch).tokens_per_s;
      if (t > best * 1.0001) best = t, b.chosen = i;
    }
    budgets.push_back(std::move(b));
  }
  if (o.json) {
    std::string out = absl::StrCat("{\"host\":{\"cpu_weight_gbps\":", host.memory_gbps, ",\"cpu_gflops\":", host.gflops,
                                   ",\"cpu_kernel_seconds\":", host.kernel_s, ",\"cpu_products\":", CurvesJson(host),
                                   ",\"cpu_layers_whole\":", LayersJson(host),
                                   ",\"memory_available_bytes\":", host_available, "},\"expected_batch\":", r.batch,
                                   ",\"plans\":[");
    bool first = true;
    for (const Budget& b : budgets) {
      for (int i = 0; i < 3; ++i) {
        absl::StrAppend(&out, first ? "" : ",", Json(b.plans[i], b.decode[i], b.prefill[i], i == b.chosen));
        first = false;
      }
    }
    return out + "]}\n";
  }
  const plan::Plan& any = budgets.empty() ? plan::Plan{} : budgets.front().plans.front();
  std::string out = absl::StrCat(
      o.model_path, ": ", config.arch_name, ", ", config.n_layer, " layers, ", HumanBytes(any.model_bytes),
      " of weights (layers ", HumanBytes(any.layer_bytes_total), ", output head ", HumanBytes(any.head_bytes),
      ", embedding ", HumanBytes(any.embedding_bytes), " kept on the host)\n");
  absl::StrAppend(&out, "context ", r.n_ctx, " x ", r.n_slots, " slot(s), ", r.kv_bytes_per_elem == 2 ? "f16" : "f32",
                  " KV cache; batch up to ", r.max_batch, " tokens; staging ring depth ", r.ring_depth,
                  "; CUDA context overhead ", HumanBytes(device.overhead_bytes), " (", device.name,
                  " profile, not measured); this host has ", HumanBytes(host_available), " of memory available\n");
  absl::StrAppend(&out, absl::StrFormat(
      "%9s %-8s %13s %7s %11s %10s %10s %10s %10s %9s %10s %12s %12s %10s %10s %10s %9s\n", "budget", "place",
      "layers r/s/c", "on GPU", "weights", "staging", "KV cache", "workspace", "overhead", "margin", "total",
      "host pinned", "host total", "tok/s b1", "tok/s b8", "b32", "prefill"));
  for (const Budget& b : budgets) {
    for (int i = 0; i < 3; ++i) absl::StrAppend(&out, Row(b, i));
  }
  for (const Budget& b : budgets) {
    const plan::Plan& p = b.plans[b.chosen];
    absl::StrAppend(&out, absl::StrFormat("%s: %s: %s%s\n", HumanBytes(p.budget), plan::StrategyName(p.strategy),
                                          p.placement.Describe().empty() ? "every layer resident" : p.placement.Describe(),
                                          p.host_total() > host_available && host_available > 0
                                              ? " (more host memory than this host has available)"
                                              : ""));
  }
  if (!budgets.empty()) {
    const Budget& b = budgets.front();
    absl::StrAppend(&out, absl::StrFormat(
        "layers r/s/c: resident / streamed / on the CPU (+h: the output head); * the fastest strategy at that batch; > the "
        "one chosen for a step of %d token(s) (--slots), for which the mixed row's split is made. Predicted decode "
        "tokens/s (tok/s columns) and "
        "prefill tokens/s in steps of %d prompt tokens: %s profile (%.0f GB/s memory, %.0f GB/s host-to-device, %.0f "
        "TFLOPS; resident weights read at the share of it ferry's CUDA kernels reach per type), streamed layers "
        "overlapped with compute as far as the staging ring lets them, layers on the CPU at this host's speed in the "
        "chain; CPU only on this host: %.1f "
        "tok/s at batch 1, %.1f at batch 8, prefill %.0f (measured here: %s). "
        "Streaming a layer beats computing it on this CPU from batch %d on.\n",
        r.batch, r.max_batch, device.name, device.memory_gbps, device.h2d_gbps, device.tflops,
        b.decode[0][0].cpu_tokens_per_s, b.decode[0][1].cpu_tokens_per_s, b.prefill[0].cpu_tokens_per_s,
        host.Describe(), b.decode[0][0].stream_beats_cpu_from_batch));
  }
  if (o.gpu_layers < 0 && budgets.size() < o.budgets.size()) {
    absl::StrAppend(&out, "(budgets too small for the head, KV cache and workspace are left out)\n");
  }
  return out;
}

}  // namespace ferry::service
