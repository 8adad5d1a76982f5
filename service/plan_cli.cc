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

std::string Row(const plan::Plan& p) {
  return absl::StrFormat("%9s %7s %6.1f%% %11s %10s %10s %10s %10s %9s %10s %12s\n", HumanBytes(p.budget),
                         absl::StrCat(p.resident_layers, "/", p.n_layers), 100.0 * p.gpu_fraction(),
                         HumanBytes(p.weights_resident), HumanBytes(p.staging),
                         HumanBytes(p.kv_cache), HumanBytes(p.workspace), HumanBytes(p.overhead),
                         HumanBytes(p.margin), HumanBytes(p.total), HumanBytes(p.host_pinned));
}

std::string Json(const plan::Plan& p) {
  return absl::StrCat("{\"budget_bytes\":", p.budget, ",\"layers\":", p.n_layers, ",\"resident_layers\":",
                      p.resident_layers, ",\"head_resident\":", p.head_resident ? "true" : "false",
                      ",\"gpu_fraction\":", p.gpu_fraction(), ",\"device_bytes\":{\"weights_resident\":",
                      p.weights_resident, ",\"staging\":", p.staging, ",\"kv_cache\":", p.kv_cache,
                      ",\"workspace\":", p.workspace, ",\"overhead\":", p.overhead, ",\"margin\":", p.margin,
                      ",\"total\":", p.total, "},\"host_pinned_bytes\":", p.host_pinned, ",\"model_bytes\":",
                      p.model_bytes, "}");
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
  if (o.json) {
    std::string out = "{\"plans\":[";
    for (size_t i = 0; i < plans.size(); ++i) absl::StrAppend(&out, i ? "," : "", Json(plans[i]));
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
  absl::StrAppend(&out, absl::StrFormat("%9s %7s %7s %11s %10s %10s %10s %10s %9s %10s %12s\n", "budget", "layers",
                                        "on GPU", "weights", "staging", "KV cache", "workspace", "overhead", "margin",
                                        "total", "host pinned"));
  for (const plan::Plan& p : plans) absl::StrAppend(&out, Row(p));
  if (o.gpu_layers < 0 && plans.size() < o.budgets.size()) {
    absl::StrAppend(&out, "(budgets too small for the head, KV cache and workspace are left out)\n");
  }
  return out;
}

}  // namespace ferry::service
