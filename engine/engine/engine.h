// One way to open an engine: model -> tokenizer -> device -> plan ->
// executor -> runtime. Every front end (serve, generate, bench, loadgen
// --direct) gives OpenEngine its settings, grouped by concern (where the
// weights go; how requests run), each defaulted here and validated once.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "engine/backend/device.h"
#include "engine/exec/forward.h"
#include "engine/model/weights.h"
#include "engine/plan/planner.h"
#include "engine/runtime/runtime.h"
#include "engine/text/tokenizer.h"

namespace ferry::engine {

// Settings are grouped by concern, each group a plain struct whose member
// initializers are the defaults. A group's ForEach(v) calls
// v(&Group::member, "flag_name", "help") for every setting a user sets: the
// one table the command line's flags, their defaults and `ferry --help` are
// made from (service/flags.h), so none of them is written twice.

// Where the weights go.
struct PlacementArgs {
  std::string device = "cpu";          // cpu | sim[:key=value,...] | cuda[:N][,key=value,...]
  int gpu_layers = -1;                 // exactly N layers resident (+ the head); -1: as many as fit
  bool stream_head = false;            // with gpu_layers 0: stream the head too
  std::optional<uint64_t> gpu_memory;  // budget; unset: the device's memory
  int ring_depth = 2;                  // staging slots: the copy queue runs this many units ahead
  // Where the layers that are not resident go: stream, cpu, mixed (the
  // fastest split, or exactly cpu_layers on the CPU) or auto (mixed, the
  // fastest split).
  std::string placement = "auto";
  int cpu_layers = -1;

  // stream_head is a test switch and gpu_memory a size the front end parses
  // (`ferry plan` takes a list of them): neither is a flag of this group.
  template <class Visitor>
  static constexpr void ForEach(Visitor&& v) {
    v(&PlacementArgs::device, "device",
      "cpu, sim[:key=value,...] or cuda[:N][,key=value,...]. sim keys: profile (a --gpu "
      "profile, gives the defaults), mem (8GiB), overhead, h2d (25GB/s), lat (10us), poison (1: NaN-fill staging "
      "slots on reuse), fault (N: latch a device fault after N copies on the copy queue, to test fault handling). "
      "cuda keys: mem (at most this much of the GPU), poison, int8 (default 1: decode matvec on int8 activations "
      "for q8_0/q4_0/q4_K/q5_K/q6_K; 0: float activations, ~10x smaller error, 1.5-3x slower decode), graphs "
      "(default 1: steps replayed as CUDA graphs; 0: every kernel launched on its own), fuse (default 1: fused "
      "launches (q/k/v, gate/up with the gating, residual adds, rope q+k, norm+quantize); 0: one launch per op)");
    v(&PlacementArgs::gpu_layers, "gpu_layers",
      "exactly this many layers resident on the GPU, the output head counted apart (-1: as many as fit)");
    v(&PlacementArgs::ring_depth, "ring_depth",
      "staging slots for streamed layers (the copy queue runs this many ahead)");
    v(&PlacementArgs::placement, "placement",
      "where the layers that are not resident go: stream (over PCIe every step), cpu "
      "(computed on the CPU from host memory, as LM Studio does), mixed (some of each, at once: the split the speed "
      "model predicts fastest for a step of --slots tokens, or --cpu_layers of them) or auto (mixed, the fastest "
      "split)");
    v(&PlacementArgs::cpu_layers, "cpu_layers",
      "with --placement mixed or auto, exactly this many of the units that are not resident on the CPU, the rest "
      "streamed (-1: the fastest split)");
  }
};
absl::Status Validate(const PlacementArgs& args);

// How requests run.
struct RuntimeArgs {
  int threads = 0;     // the CPU's threads; 0: one per hardware thread
  int ctx = 0;         // positions per slot; 0: ModelConfig::default_context
  int slots = 4;       // sequences decoded together, each with its own KV cache
  int batch = 64;      // tokens per step (decode tokens + prompt chunks)
  exec::KvType kv_type = exec::KvType::kF16;
  int max_queue = 64;  // requests waiting for a slot

  template <class Visitor>
  static constexpr void ForEach(Visitor&& v) {
    v(&RuntimeArgs::threads, "threads", "CPU threads; 0 = one per hardware thread");
    v(&RuntimeArgs::ctx, "ctx", "context length (per request slot); 0 = the model's, at most 4096");
    v(&RuntimeArgs::slots, "slots",
      "requests decoded together, each with its own KV cache (plan: sizes the KV cache and is the step the "
      "placement is chosen for); generate runs one request");
    v(&RuntimeArgs::batch, "batch",
      "tokens per forward step: a prompt's tokens (generate, bench, plan), or all requests' decode tokens and "
      "prompt chunks together (serve)");
    v(&RuntimeArgs::kv_type, "kv_type", "KV cache element type, f16 or f32");
    v(&RuntimeArgs::max_queue, "max_queue", "requests waiting for a slot before new ones get RESOURCE_EXHAUSTED");
  }
};
absl::Status Validate(const RuntimeArgs& args);
// f16 or f32 (--kv_type, and GetPlan's kv_type); "" is not a type.
absl::StatusOr<exec::KvType> ParseKvType(absl::string_view name);

struct EngineSpec {
  std::string model_path;
  PlacementArgs placement;
  RuntimeArgs runtime;
  bool start_runtime = true;           // false: everything up to the executor (bench)
  runtime::StepObserver observer;      // each step, on the scheduler thread
  std::function<void(const std::string&)> progress;  // "uploading 6.8 GiB of resident weights"
};

struct Engine {
  std::unique_ptr<model::Model> model;
  std::unique_ptr<text::Tokenizer> tokenizer;
  std::unique_ptr<backend::Device> device;
  backend::DeviceSpec spec;          // the device's figures, as the planner took them
  plan::Plan plan;
  exec::ForwardOptions forward;      // with the context and placement resolved
  std::unique_ptr<exec::Executor> executor;
  std::unique_ptr<runtime::Runtime> runtime;  // declared last: stops first
};

absl::StatusOr<std::unique_ptr<Engine>> OpenEngine(const EngineSpec& spec);

// The planning step alone, for a front end that builds several executors on
// one device (bench): plans `forward` (n_ctx resolved) on `device` and sets
// its placement (every unit resident on a device whose memory is the
// host's). A plan that may put layers on the CPU is made for a step of
// forward->n_seq tokens with this host's CPU as `host` says, or, where that
// is null, as measured here (exec::MeasureHost: a few seconds), and must
// fit the host memory the system has available.
absl::StatusOr<plan::Plan> PlanPlacement(const model::Model& model, const backend::Device& device,
                                         const PlacementArgs& args, exec::ForwardOptions* forward,
                                         const plan::HostSpec* host);

}  // namespace ferry::engine

namespace ferry::exec {
// --kv_type as a flag of its own type (Abseil finds these by argument-
// dependent lookup): "f16" or "f32", ParseKvType's words.
bool AbslParseFlag(absl::string_view text, KvType* type, std::string* error);
std::string AbslUnparseFlag(KvType type);
}  // namespace ferry::exec
