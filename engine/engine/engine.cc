#include "engine/engine/engine.h"

#include "absl/strings/str_cat.h"
#include "engine/exec/measure_host.h"
#include "engine/status.h"

namespace ferry::engine {

absl::Status Validate(const PlacementArgs& a) {
  if (a.ring_depth <= 0) return absl::InvalidArgumentError("--ring_depth must be at least 1");
  if (a.gpu_layers < -1) return absl::InvalidArgumentError("--gpu_layers must be -1 (as many as fit) or more");
  if (a.cpu_layers < -1) return absl::InvalidArgumentError("--cpu_layers must be -1 (the fastest split) or more");
  if (a.placement != "auto") {
    if (absl::StatusOr<plan::Strategy> s = plan::ParseStrategy(a.placement); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--placement: ", s.status().message(), " or auto"));
    }
  }
  if (a.cpu_layers >= 0 && a.placement != "mixed" && a.placement != "auto") {
    return absl::InvalidArgumentError(
        absl::StrCat("--cpu_layers goes with --placement mixed (or auto), not ", a.placement));
  }
  return absl::OkStatus();
}

absl::Status Validate(const RuntimeArgs& a) {
  if (a.threads < 0) return absl::InvalidArgumentError("--threads must be 0 (one per hardware thread) or more");
  if (a.ctx < 0) return absl::InvalidArgumentError("--ctx must be 0 (the model's) or more");
  if (a.slots <= 0) return absl::InvalidArgumentError("--slots must be at least 1");
  if (a.batch < a.slots) {
    return absl::InvalidArgumentError(absl::StrCat("--batch ", a.batch, " is below --slots ", a.slots,
                                                   ": a step must hold one token of every slot"));
  }
  if (a.max_queue < 0) return absl::InvalidArgumentError("--max_queue must be 0 or more");
  return absl::OkStatus();
}

absl::StatusOr<exec::KvType> ParseKvType(absl::string_view name) {
  if (name == "f16") return exec::KvType::kF16;
  if (name == "f32") return exec::KvType::kF32;
  return absl::InvalidArgumentError(absl::StrCat("kv_type must be f16 or f32, got '", name, "'"));
}

absl::StatusOr<plan::Plan> PlanPlacement(const model::Model& model, const backend::Device& device,
                                         const PlacementArgs& args, exec::ForwardOptions* forward,
                                         const plan::HostSpec* host) {
  FERRY_RETURN_IF_ERROR(Validate(args));
  if (forward->n_ctx <= 0) forward->n_ctx = model.config.default_context();
  const backend::DeviceSpec spec = device.spec();
  plan::PlanRequest r;
  if (args.gpu_layers >= 0) {
    r.policy = plan::Policy::kLayers;
    r.gpu_layers = args.gpu_layers;
    r.stream_head = args.stream_head;
  } else if (args.gpu_memory) {
    r.policy = plan::Policy::kBudget;
    r.gpu_memory = *args.gpu_memory;
  }
  r.n_ctx = forward->n_ctx;
  r.n_slots = forward->n_seq;
  r.kv_bytes_per_elem = exec::KvBytesPerElement(forward->kv_type);
  r.max_batch = forward->max_batch;
  r.ring_depth = args.ring_depth;
  r.strategy = args.placement == "auto" ? plan::Strategy::kMixed : *plan::ParseStrategy(args.placement);
  r.cpu_layers = args.cpu_layers;
  // The CPU's speed and memory weigh units that could leave the device for
  // the CPU; on a device whose memory is the host's, none do (MakePlan
  // keeps them all resident), so the measuring is not spent.
  if (r.strategy != plan::Strategy::kStream && !spec.host_memory) {
    r.batch = forward->n_seq;
    r.host = host != nullptr ? *host
                             : exec::MeasureHost(*model.file, model.config, forward->threads, model.weights.bytes,
                                                 spec.host_kernels, forward->n_ctx / 2);
    r.host_available = backend::AvailableHostMemory();
  }
  absl::StatusOr<plan::Plan> p = plan::MakePlan(*model.file, model.config, r, spec);
  if (!p.ok()) return p.status();
  forward->placement = p->placement;
  return p;
}

absl::StatusOr<std::unique_ptr<Engine>> OpenEngine(const EngineSpec& spec) {
  FERRY_RETURN_IF_ERROR(Validate(spec.placement));
  FERRY_RETURN_IF_ERROR(Validate(spec.runtime));
  auto e = std::make_unique<Engine>();
  FERRY_ASSIGN_OR_RETURN(e->model, model::LoadModel(spec.model_path));
  FERRY_ASSIGN_OR_RETURN(e->tokenizer, text::Tokenizer::FromGguf(*e->model->file));
  if (e->tokenizer->n_vocab() != e->model->config.n_vocab) {
    return absl::InvalidArgumentError(absl::StrCat(spec.model_path, ": the tokenizer has ", e->tokenizer->n_vocab(),
                                                   " tokens, the model ", e->model->config.n_vocab));
  }
  const RuntimeArgs& ra = spec.runtime;
  e->forward = {.max_batch = ra.batch, .n_seq = ra.slots, .n_ctx = ra.ctx, .kv_type = ra.kv_type,
                .threads = ra.threads, .progress = spec.progress};
  FERRY_ASSIGN_OR_RETURN(e->device, backend::OpenDevice(spec.placement.device, ra.threads));
  FERRY_ASSIGN_OR_RETURN(e->plan, PlanPlacement(*e->model, *e->device, spec.placement, &e->forward, nullptr));
  e->spec = e->device->spec();
  FERRY_ASSIGN_OR_RETURN(e->executor, exec::Executor::Create(*e->model, e->device.get(), e->forward));
  if (spec.start_runtime) {
    runtime::RuntimeOptions ro;
    ro.max_queue = ra.max_queue;
    ro.observer = spec.observer;
    FERRY_ASSIGN_OR_RETURN(e->runtime, runtime::Runtime::Create(e->executor.get(), e->tokenizer.get(), ro));
  }
  return e;
}

}  // namespace ferry::engine

namespace ferry::exec {

bool AbslParseFlag(absl::string_view text, KvType* type, std::string* error) {
  absl::StatusOr<KvType> t = engine::ParseKvType(text);
  if (!t.ok()) {
    *error = std::string(t.status().message());
    return false;
  }
  *type = *t;
  return true;
}

std::string AbslUnparseFlag(KvType type) { return type == KvType::kF16 ? "f16" : "f32"; }

}  // namespace ferry::exec
