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
// forward->n_seq tokens with this host's CPU measured here
// (plan::MeasureHost, a quarter of a second) and must fit the host memory
// the system has available.
absl::StatusOr<plan::Plan> PlanPlacement(const model::Model& model, const backend::Device& device,
                                         const PlacementArgs& args, exec::ForwardOptions* forward);

}  // namespace ferry::engine
