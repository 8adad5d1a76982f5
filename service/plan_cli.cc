#include "service/plan_cli.h"

#include <cctype>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/config.h"
#include "engine/status.h"
#include "engine/units.h"

namespace ferry::service {

namespace {

std::string Row(const plan::Plan& p, const plan::Prediction& b1, const plan::Prediction& b8,
                const plan::Prediction& prefill) {
  return absl::StrFormat("%9s %7s %6.1f%% %11s %10s %10s %10s %10s %9s %10s %12s %9.1f %9.1f %9.0f\n",
                         HumanBytes(p.budget),
                         absl::StrCat(p.resident_layers, "/", p.n_layers), 100.0 * p.gpu_fraction(),
                         HumanBytes(p.weights_resident), HumanBytes(p.staging),
                         HumanBytes(p.kv_cache), HumanBytes(p.workspace), HumanBytes(p.overhead),
                         HumanBytes(p.margin), HumanBytes(p.total), HumanBytes(p.host_pinned), b1.tokens_per_s,
                         b8.tokens_per_s, prefill.tokens_per_s);
}

std::string Json(const plan::Plan& p, const plan::Prediction& b1, const plan::Prediction& b8,
                 const plan::Prediction& prefill) {
  return absl::StrCat("{\"budget_bytes\":", p.budget, ",\"layers\":", p.n_layers, ",\"resident_layers\":",
                      p.resident_layers, ",\"head_resident\":", p.head_resident ? "true" : "false",
                      ",\"gpu_fraction\":", p.gpu_fraction(), ",\"device_bytes\":{\"weights_resident\":",
                      p.weights_resident, ",\"staging\":", p.staging, ",\"kv_cache\":", p.kv_cache,
                      ",\"workspace\":", p.workspace, ",\"overhead\":", p.overhead, ",\"margin\":", p.margin,
                      ",\"total\":", p.total, "},\"host_pinned_bytes\":", p.host_pinned, ",\"model_bytes\":",
                      p.model_bytes, ",\"predicted\":{\"decode_tokens_per_s_batch1\":", b1.tokens_per_s,
                      ",\"decode_tokens_per_s_batch8\":", b8.tokens_per_s, ",\"cpu_only_tokens_per_s_batch1\":",
                      b1.cpu_tokens_per_s, ",\"cpu_only_tokens_per_s_batch8\":", b8.cpu_tokens_per_s,
                      ",\"prefill_tokens_per_step\":", prefill.batch, ",\"prefill_tokens_per_s\":",
                      prefill.tokens_per_s, ",\"cpu_only_prefill_tokens_per_s\":", prefill.cpu_tokens_per_s,
                      ",\"stream_beats_cpu_from_batch\":", b1.stream_beats_cpu_from_batch, "}}");
}

}  // namespace

absl::StatusOr<std::string> RunPlan(const PlanOptions& o) {
  std::unique_ptr<gguf::File> file;
  FERRY_ASSIGN_OR_RETURN(file, gguf::File::Open(o.model_path, {.header_only = true}));
  model::ModelConfig config;
  FERRY_ASSIGN_OR_RETURN(config, model::LoadConfig(*file));
  plan::DeviceSpec device;
  FERRY_ASSIGN_OR_RETURN(device, plan::DeviceProfile(o.gpu));

  std::vector<plan::Plan> plans;
  plan::PlanRequest r = o.request;
  if (o.gpu_layers >= 0) {
    r.policy = plan::Policy::kLayers;
    r.gpu_layers = o.gpu_layers;
    plan::Plan p;
    FERRY_ASSIGN_OR_RETURN(p, plan::MakePlan(*file, config, r, device));
    plans.push_back(p);
  } else if (o.budgets.empty()) {
    r.policy = plan::Policy::kAuto;
    plan::Plan p;
    FERRY_ASSIGN_OR_RETURN(p, plan::MakePlan(*file, config, r, device));
    plans.push_back(p);
  } else {
    for (uint64_t budget : o.budgets) {
      plan::DeviceSpec d = device;
      d.name = absl::StrCat(HumanBytes(budget), " budget");
      d.memory_bytes = budget;
      r.policy = plan::Policy::kBudget;
      r.gpu_memory = budget;
      absl::StatusOr<plan::Plan> p = plan::MakePlan(*file, config, r, d);
      if (p.ok()) {
        plans.push_back(*p);
      } else if (o.budgets.size() == 1) {
        return p.status();
      }  // in a table, a budget where nothing fits is left out (said below)
    }
  }
  // The speed model: the profile's bandwidths, this host's measured CPU kernels.
  const plan::HostSpec host = plan::MeasureHost(o.threads);
  std::vector<plan::Prediction> b1, b8, prefill;
  for (const plan::Plan& p : plans) {
    b1.push_back(plan::Predict(p, device, host, 1));
    b8.push_back(plan::Predict(p, device, host, 8));
    prefill.push_back(plan::PredictPrefill(p, device, host, r.max_batch));
  }
  if (o.json) {
    std::string out = absl::StrCat("{\"host\":{\"cpu_weight_gbps\":", host.memory_gbps, ",\"cpu_gflops\":", host.gflops,
                                   "},\"plans\":[");
    for (size_t i = 0; i < plans.size(); ++i) absl::StrAppend(&out, i ? "," : "", Json(plans[i], b1[i], b8[i], prefill[i]));
    return out + "]}\n";
  }
  const plan::Plan& any = plans.empty() ? plan::Plan{} : plans.front();
  std::string out = absl::StrCat(
      o.model_path, ": ", config.arch_name, ", ", config.n_layer, " layers, ", HumanBytes(any.model_bytes),
      " of weights (layers ", HumanBytes(any.layer_bytes_total), ", output head ", HumanBytes(any.head_bytes),
      ", embedding ", HumanBytes(any.embedding_bytes), " kept on the host)\n");
  absl::StrAppend(&out, "context ", r.n_ctx, " x ", r.n_slots, " slot(s), ", r.kv_bytes_per_elem == 2 ? "f16" : "f32",
                  " KV cache; batch up to ", r.max_batch, " tokens; staging ring depth ", r.ring_depth,
                  "; CUDA context overhead ", HumanBytes(device.overhead_bytes), " (", device.name,
                  " profile, not measured)\n");
  absl::StrAppend(&out, absl::StrFormat("%9s %7s %7s %11s %10s %10s %10s %10s %9s %10s %12s %9s %9s %9s\n",
                                        "budget", "layers", "on GPU", "weights", "staging", "KV cache", "workspace",
                                        "overhead", "margin", "total", "host pinned", "tok/s b1", "tok/s b8", "prefill"));
  for (size_t i = 0; i < plans.size(); ++i) absl::StrAppend(&out, Row(plans[i], b1[i], b8[i], prefill[i]));
  if (!plans.empty()) {
    absl::StrAppend(&out, absl::StrFormat(
        "predicted decode tokens/s (tok/s columns) and prefill tokens/s in steps of %d prompt tokens: %s profile "
        "(%.0f GB/s memory, %.0f GB/s host-to-device, %.0f TFLOPS; resident weights read at the share of it ferry's "
        "CUDA kernels reach per type), streamed layers overlapped with compute; CPU only on this host: %.1f tok/s at "
        "batch 1, %.1f at batch 8, prefill %.0f (measured here: %.1f GB/s of weights, %.0f GFLOP/s). Streaming a "
        "layer beats computing it on this CPU from batch %d on.\n",
        r.max_batch, device.name, device.memory_gbps, device.h2d_gbps, device.tflops, b1[0].cpu_tokens_per_s,
        b8[0].cpu_tokens_per_s, prefill[0].cpu_tokens_per_s, host.memory_gbps, host.gflops,
        b1[0].stream_beats_cpu_from_batch));
  }
  if (o.gpu_layers < 0 && plans.size() < o.budgets.size()) {
    absl::StrAppend(&out, "(budgets too small for the head, KV cache and workspace are left out)\n");
  }
  return out;
}

}  // namespace ferry::service
