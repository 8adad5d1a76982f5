// The forward pass over a Device and a placement: one step over a batch of
// tokens from many sequences, each at its own position, with a KV cache per
// sequence slot. Resident units (the output head first, then layers from
// the first) are uploaded once; streamed units cross to the device every
// step through a ring of staging slots that the copy queue refills ahead of
// compute, wrapping into the next step. Every buffer is sized at creation
// with the planner's layout rules (plan/planner.h); a step allocates nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/device.h"
#include "engine/model/weights.h"
#include "engine/plan/planner.h"

namespace ferry::exec {

enum class KvType { kF16, kF32 };

struct Placement {
  bool head_resident = true;  // the head is the first unit to become resident
  int resident_layers = -1;   // layers 0..n-1 resident, the rest streamed; -1: all
  int ring_depth = 2;         // staging slots (clamped to the number of streamed units)
};

struct ForwardOptions {
  int max_batch = 64;   // tokens per step
  int n_seq = 1;        // sequence slots, each with its own KV cache
  int n_ctx = 0;        // positions per slot; 0 = the model's training context, at most 4096
  KvType kv_type = KvType::kF16;
  int threads = 0;      // cpu device made by Create when none is given: 0 = one per hardware thread
  Placement placement = {};  // ignored on the cpu device, which reads every weight in place
  // Deliberately broken schedules, for tests that prove the sim device's
  // poisoning catches them: compute on a slot without waiting for its
  // "ready" event; release a slot (record "free", start its refill) before
  // the layer that reads it has run.
  bool testing_skip_ready_wait = false;
  bool testing_release_slot_early = false;
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
  double compute_s = 0;         // kernels
  double compute_wait_s = 0;    // compute standing at a slot's "ready" event
};

class Executor {
 public:
  // `device` must outlive the executor; nullptr: a cpu device of its own.
  static absl::StatusOr<std::unique_ptr<Executor>> Create(const model::Model& model, backend::Device* device,
                                                          const ForwardOptions& options);
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
  int resident_layers() const { return resident_layers_; }
  bool head_resident() const { return head_resident_; }
  int ring_depth() const { return ring_depth_; }
  uint64_t slot_bytes() const { return slot_bytes_; }
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
  // the step's buffers, as the plan's host_pinned names them.
  uint64_t host_pinned_bytes() const;
  std::string LoadSummary() const;  // "; loaded 6.8 GiB in 1.2 s, 5.9 GB/s, ..."

 private:
  struct Piece {
    const void* src;
    uint64_t bytes;
    uint64_t offset;
  };
  // One unit's weights where the kernels read them (device memory).
  struct DeviceLayer {
    const float* attn_norm = nullptr;       // (n_embd)
    model::Matrix wq, wk, wv, wo;
    const float *bq = nullptr, *bk = nullptr, *bv = nullptr;
    const float *q_norm = nullptr, *k_norm = nullptr;  // qwen3, gemma3
    const float* post_attn_norm = nullptr;  // gemma2
    const float* ffn_norm = nullptr;
    model::Matrix w_gate, w_up, w_down;
    const float* post_ffn_norm = nullptr;   // gemma2
    const float* output_norm = nullptr;     // the head
    model::Matrix output;
  };
  static constexpr int kHead = -1;

  Executor(const model::Model& model, backend::Device* device, const ForwardOptions& options, int n_ctx);
  absl::Status Init();
  // Lays unit `unit` (a layer, or kHead) out from `base`: the view, and the
  // copies that fill it. Returns its size.
  uint64_t LayOut(int unit, uintptr_t base, DeviceLayer* view, std::vector<Piece>* pieces) const;
  DeviceLayer InPlace(int unit) const;  // the cpu device: host memory as is
  void EnqueueUpload(uint64_t u);        // streamed unit u (counted over all steps) into slot u % ring
  const DeviceLayer& Acquire(int unit, int* slot);
  void Release(int slot);
  void Layer(int l, const DeviceLayer& L, int n);
  void Head(const DeviceLayer& H, int m);
  // Unit u of a step (a layer, or u == n_layer: the head) for n tokens, m of them wanting logits.
  void Unit(int u, const DeviceLayer& view, int n, int m);
  bool UnitIsResident(int u) const { return u == config_.n_layer ? head_resident_ : LayerIsResident(u); }
  bool LayerIsResident(int l) const { return plan::LayerResident(l, config_.n_layer, resident_layers_); }
  void Progress(const std::string& what) const {
    if (options_.progress) options_.progress(what);
  }

  const model::Model& model_;
  const model::ModelConfig& config_;
  const ForwardOptions options_;
  const int n_ctx_;
  std::unique_ptr<backend::Device> owned_device_;
  backend::Device* device_;
  bool in_place_ = false;
  uint64_t relayout_bytes_ = 0;  // in place: the device's own layout of the matrices would take this much
  bool relayout_ = false;        // and it is used
  int resident_layers_ = 0;
  bool head_resident_ = true;
  // Resident units' views (index l, or n_layer for the head).
  std::vector<DeviceLayer> resident_;
  std::vector<backend::DeviceBuffer> resident_buffers_;
  // Streamed units in step order, each one's packed image in host_streamed_
  // (one copy fills a slot), and a view per ring slot.
  std::vector<int> streamed_;
  std::vector<std::span<const uint8_t>> streamed_images_;
  std::vector<std::vector<DeviceLayer>> streamed_views_;  // [unit][slot]
  std::vector<backend::DeviceBuffer> slots_;
  std::vector<backend::Event> ready_, free_;
  int ring_depth_ = 0;
  uint64_t slot_bytes_ = 0;
  uint64_t cursor_ = 0;  // streamed units computed so far, over all steps
  backend::HostBuffer host_streamed_;  // every streamed unit as it sits in a slot, page-locked
  LoadTimes load_;
  // KV cache per layer and activations, in device memory.
  std::vector<backend::DeviceBuffer> k_cache_, v_cache_;
  std::vector<backend::KvLayer> kv_;
  backend::DeviceBuffer x_, xn_, out_, q_, attn_, k_, v_, gate_, up_, logits_, scores_;
  backend::PageVector<float> embd_host_;     // (max_batch, n_embd): rows gathered on the host
  std::vector<backend::TokenPos> tokens_;
  std::vector<int32_t> logit_rows_;
  backend::HostBuffer logits_out_;      // n_seq rows of logits (Forward(batch))
  std::vector<float> logits_overflow_;  // a step that wants more rows
  std::vector<float> inv_freq_;      // rope: one frequency per rotated pair, per table (RopeParams)
  backend::RopeParams rope_;
  DeviceUsage usage_;
  StreamStats stats_;
};

}  // namespace ferry::exec
