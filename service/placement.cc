#include "service/placement.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace ferry::service {

plan::DeviceSpec SpecOf(const backend::Device& device) {
  // What the device knows (configured on sim, measured on cuda) over the
  // planner's defaults. A sim device plans with the card it imitates
  // (host_kernels stays false): its placements are that card's.
  const backend::DeviceFacts f = device.facts();
  plan::DeviceSpec spec;
  spec.name = f.name;
  spec.memory_bytes = f.memory_bytes;
  spec.overhead_bytes = f.overhead_bytes;
  if (f.h2d_gbps > 0) spec.h2d_gbps = f.h2d_gbps;
  if (f.latency_us > 0) spec.latency_us = f.latency_us;
  if (f.memory_gbps > 0) spec.memory_gbps = f.memory_gbps;
  if (f.tflops > 0) spec.tflops = f.tflops;
  return spec;
}

int DefaultContext(const model::Model& model) { return model.config.default_context(); }

absl::StatusOr<std::optional<plan::Plan>> PlanPlacement(const model::Model& model, const backend::Device& device,
                                                        const DeviceFlags& flags, exec::ForwardOptions* forward) {
  if (device.computes_on_host_memory()) return std::optional<plan::Plan>();
  plan::PlanRequest r;
  if (flags.gpu_layers >= 0) {
    r.policy = plan::Policy::kLayers;
    r.gpu_layers = flags.gpu_layers;
    r.stream_head = flags.stream_head;
  } else if (flags.gpu_memory) {
    r.policy = plan::Policy::kBudget;
    r.gpu_memory = *flags.gpu_memory;
  }
  r.n_ctx = forward->n_ctx > 0 ? forward->n_ctx : DefaultContext(model);
  r.n_slots = forward->n_seq;
  r.kv_bytes_per_elem = forward->kv_type == exec::KvType::kF16 ? 2 : 4;
  r.max_batch = forward->max_batch;
  r.ring_depth = flags.ring_depth;
  if (flags.placement != "auto") {
    absl::StatusOr<plan::Strategy> s = plan::ParseStrategy(flags.placement);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("--placement: ", s.status().message(), " or auto"));
    r.strategy = *s;
  } else {
    r.strategy = plan::Strategy::kMixed;
  }
  if (flags.cpu_layers >= 0) {
    if (r.strategy != plan::Strategy::kMixed) {
      return absl::InvalidArgumentError(
          absl::StrCat("--cpu_layers goes with --placement mixed (or auto), not ", flags.placement));
    }
    r.cpu_layers = flags.cpu_layers;
  }
  if (r.strategy != plan::Strategy::kStream) {
    r.batch = forward->n_seq;
    r.host = plan::MeasureHost(forward->threads);
    r.host_available = backend::AvailableHostMemory();
  }
  absl::StatusOr<plan::Plan> p = plan::MakePlan(*model.file, model.config, r, SpecOf(device));
  if (!p.ok()) return p.status();
  forward->n_ctx = r.n_ctx;
  forward->placement = p->placement;
  return std::optional<plan::Plan>(*p);
}

}  // namespace ferry::service
