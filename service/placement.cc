#include "service/placement.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "engine/backend/profiles.h"
#include "engine/backend/sim/sim_device.h"

namespace ferry::service {

plan::DeviceSpec SpecOf(const backend::Device& device) {
  plan::DeviceSpec spec;
  spec.name = device.Describe();
  if (const auto* sim = dynamic_cast<const backend::SimDevice*>(&device)) {
    const backend::SimOptions& o = sim->options();
    spec.memory_bytes = o.memory_bytes;
    spec.overhead_bytes = o.overhead_bytes;
    spec.h2d_gbps = o.h2d_gbps;
    spec.latency_us = o.latency_us;
    if (absl::StatusOr<backend::GpuProfile> p = backend::FindGpuProfile(o.profile); p.ok()) {
      spec.memory_gbps = p->memory_gbps;
      spec.tflops = p->tflops;
    }
    spec.name = absl::StrCat("sim ", o.profile);
    return spec;
  }
  spec.memory_bytes = device.capacity();
  return spec;
}

int DefaultContext(const model::Model& model) { return std::min(model.config.n_ctx_train, 4096); }

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
  absl::StatusOr<plan::Plan> p = plan::MakePlan(*model.file, model.config, r, SpecOf(device));
  if (!p.ok()) return p.status();
  forward->n_ctx = r.n_ctx;
  forward->placement = {p->head_resident, p->resident_layers, flags.ring_depth};
  return std::optional<plan::Plan>(*p);
}

}  // namespace ferry::service
