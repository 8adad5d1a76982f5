// The forward pass over a Device and a placement: one step over a batch of
// tokens from many sequences, each at its own position, with a KV cache per
// sequence slot. The placement (plan/placement.h) gives every unit (the
// layers, then the output head) a home: resident units are uploaded once;
// streamed ones cross every step through the staging ring (stream/ring.h);
// units on the CPU are computed by a CPU device on host memory while the
// copy queue keeps filling the ring. The executor composes those pieces and
// the layer arithmetic (exec/layer.h); every buffer is sized at creation
// with the planner's rules (plan/planner.h), and a step allocates nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/device.h"
#include "engine/exec/layer.h"
#include "engine/model/weights.h"
#include "engine/plan/placement.h"
#include "engine/stream/ring.h"

namespace ferry::exec {

enum class KvType { kF16, kF32 };
inline int KvBytesPerElement(KvType t) { return t == KvType::kF16 ? 2 : 4; }

struct ForwardOptions {
  int max_batch = 64;   // tokens per step
  int n_seq = 1;        // sequence slots, each with its own KV cache
  int n_ctx = 0;        // positions per slot; 0 = the model's training context, at most 4096
  KvType kv_type = KvType::kF16;
  int threads = 0;      // the CPU's threads (cpu device made by Create, CPU units): 0 = one per hardware thread
  // Taken as is (MakePlan's). On a device whose memory is the host's (cpu)
  // resident units are read in place, not uploaded.
  plan::Placement placement = {};
  // Told what a long step of loading is about to do ("uploading 6.8 GiB of
  // resident weights"); the CLI prints it.
  std::function<void(const std::string&)> progress = nullptr;
};

struct BatchToken {
  int32_t token = 0;
  int32_t seq = 0;   // slot whose cache this token extends
  int32_t pos = 0;   // its position; attends to positions 0..pos of its slot
  bool logits = false;
};

// What the executor holds on the device, by the planner's categories.
struct DeviceUsage {
  uint64_t weights_resident = 0;
  uint64_t staging = 0;
  uint64_t kv_cache = 0;
  uint64_t workspace = 0;
  uint64_t total() const { return weights_resident + staging + kv_cache + workspace; }
};

// Overlap of copies and compute, summed over steps.
struct StreamStats {
  uint64_t steps = 0;
  uint64_t bytes_streamed = 0;  // copied to staging slots
  double step_s = 0;            // wall time of the steps
  double copy_busy_s = 0;       // copy engine moving bytes
  double compute_s = 0;         // kernels on the device
  double compute_wait_s = 0;    // compute standing at a slot's "ready" event
  double cpu_compute_s = 0;     // kernels of the units on the CPU
};

class Executor {
 public:
  // `device` must outlive the executor; nullptr: a cpu device of its own.
  // `faults` breaks the streaming schedule on purpose (tests only).
  static absl::StatusOr<std::unique_ptr<Executor>> Create(const model::Model& model, backend::Device* device,
                                                          const ForwardOptions& options,
                                                          stream::ScheduleFaults faults = {});
  ~Executor();

  // Runs one step. `logits` receives n_vocab floats for each token with
  // logits = true, in batch order. Tokens of one sequence must come in
  // position order, and a token's earlier positions must already be cached.
  absl::Status Forward(std::span<const BatchToken> batch, std::span<float> logits);
  // The same, with the logits in a buffer of the executor's, valid until
  // the next step: memory from the device's AllocateHost (page-locked on a
  // GPU, where they then land without a host copy) for up to n_seq rows.
  absl::StatusOr<std::span<float>> Forward(std::span<const BatchToken> batch);

  const model::ModelConfig& config() const { return config_; }
  int n_ctx() const { return n_ctx_; }
  int n_seq() const { return options_.n_seq; }
  int max_batch() const { return options_.max_batch; }
  uint64_t kv_cache_bytes() const { return usage_.kv_cache; }
  backend::Device& device() const { return *device_; }
  const DeviceUsage& usage() const { return usage_; }
  const StreamStats& stats() const { return stats_; }
  const plan::Placement& placement() const { return placement_; }
  // Layers by where they are computed: resident ones on a device whose
  // memory is the host's (cpu) are computed by the CPU, in place.
  int resident_layers() const { return host_memory_ ? 0 : placement_.layers(plan::Home::kResident); }
  int streamed_layers() const { return placement_.layers(plan::Home::kStreamed); }
  int cpu_layers() const {
    return placement_.layers(plan::Home::kCpu) + (host_memory_ ? placement_.layers(plan::Home::kResident) : 0);
  }
  bool head_resident() const { return placement_.head() == plan::Home::kResident; }
  int ring_depth() const { return ring_.depth(); }
  uint64_t slot_bytes() const { return ring_.slot_bytes(); }
  // "offloaded 30/46 layers + head, 7.4 GiB resident, ring 4 x 212 MiB"
  std::string PlacementSummary() const;
  // What loading the weights onto the device took.
  struct LoadTimes {
    uint64_t uploaded_bytes = 0;  // resident weights copied to the device
    double upload_s = 0;
    uint64_t packed_bytes = 0;    // streamed weights copied to page-locked host memory
    double pack_s = 0;
  };
  const LoadTimes& load_times() const { return load_; }
  // Host memory the executor holds from the device's AllocateHost or
  // RegisterHost (page-locked on a GPU): the packed streamed weights and
  // the step's buffers, as the plan's host_pinned names them; 0 on a device
  // whose memory is the host's (nothing there is page-locked).
  uint64_t host_pinned_bytes() const;
  // Host memory the units on the CPU hold: their weights in the CPU's own
  // layout (what is regrouped; the rest is read from the file mapping) and
  // their KV cache.
  uint64_t cpu_weight_bytes() const { return cpu_weights_.bytes; }
  uint64_t cpu_kv_bytes() const { return cpu_kv_bytes_; }
  std::string LoadSummary() const;  // "; loaded 6.8 GiB in 1.2 s, 5.9 GB/s, ..."

 private:
  Executor(const model::Model& model, backend::Device* device, const ForwardOptions& options, int n_ctx);
  absl::Status Init(stream::ScheduleFaults faults);
  absl::Status UploadResident();
  absl::Status AdoptInPlace(backend::Device& d, const std::vector<int>& units, std::vector<model::UnitView>* views,
                            backend::AdoptedWeights* adopted);
  absl::Status MakeLane(backend::Device& d, plan::Home home, Lane* lane, std::vector<backend::DeviceBuffer>* buffers,
                        uint64_t* kv_bytes, uint64_t* workspace_bytes);

  const model::Model& model_;
  const model::ModelConfig& config_;
  const ForwardOptions options_;
  const int n_ctx_;
  std::unique_ptr<backend::Device> owned_device_;
  backend::Device* device_;
  plan::Placement placement_;
  bool host_memory_ = false;  // the device's memory is the host's: resident units read in place
  // Units the device computes from its memory: resident ones (index u;
  // n_layer is the head), uploaded once, or adopted in place on a device
  // whose memory is the host's.
  std::vector<model::UnitView> resident_;
  std::vector<backend::DeviceBuffer> resident_buffers_;
  backend::AdoptedWeights adopted_;
  stream::StagingRing ring_;
  LoadTimes load_;
  // The device's lane, and the CPU's for the units placed there.
  Lane lane_;
  std::vector<backend::DeviceBuffer> lane_buffers_;
  std::unique_ptr<backend::Device> cpu_device_;
  Lane cpu_lane_;
  std::vector<backend::DeviceBuffer> cpu_buffers_;
  std::vector<model::UnitView> cpu_views_;  // [u] for units on the CPU
  backend::PageVector<float> cpu_x_;        // the CPU lane's residual stream, registered with the device
  backend::AdoptedWeights cpu_weights_;
  uint64_t cpu_kv_bytes_ = 0;
  // Step tables and host buffers.
  backend::PageVector<float> embd_host_;     // (max_batch, n_embd): rows gathered on the host
  std::vector<backend::TokenPos> tokens_;
  std::vector<int32_t> logit_rows_;
  backend::HostBuffer logits_out_;      // n_seq rows of logits (Forward(batch))
  std::vector<float> logits_overflow_;  // a step that wants more rows
  std::vector<float> inv_freq_;         // rope: one frequency per rotated pair, per table (RopeParams)
  backend::RopeParams rope_;
  DeviceUsage usage_;
  StreamStats stats_;
};

}  // namespace ferry::exec
