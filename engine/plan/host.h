// What this host's CPU kernels cost, for the speed model: measured at
// start-up on the model's own weight types and matrix widths, at the token
// counts a step carries, in the layout each placement computes on.
//
// Why measured per type and token count rather than one bandwidth and one
// arithmetic rate: the kernels change with the step (a token or two take
// the 512-bit pair kernels, 16 or more AMX where the CPU has it), each
// weight type unpacks at its own cost, the sim device computes on the
// file's layout (slower than the cpu device's grouped copy), and whether a
// model's weights come from cache or memory changes the cost several-fold;
// one roofline priced the CPU's steps several times too fast (the figures:
// docs/measurements.md).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/gguf/gguf.h"
#include "engine/model/config.h"
#include "engine/quant/types.h"

namespace ferry::plan {

// The token counts a product is measured at; between two of them the cost
// is interpolated linearly, past the last it grows in proportion.
inline constexpr std::array<int, 7> kHostTokens = {1, 2, 4, 8, 16, 32, 64};

// Where a product's weights are laid out: the cpu device's grouped copy
// (units computed on the CPU) or as the file stores them (the sim device's
// kernels; types without a grouped layout everywhere).
enum class HostLayout { kGrouped, kFile };

// A product of one weight type in one layout: seconds per weight byte at
// each of kHostTokens, measured on matrices of the model's width walked
// through as a step walks the model (MeasureHost), so that it holds the
// memory's part too.
struct HostCurve {
  quant::TensorType type = quant::TensorType::kF32;
  HostLayout layout = HostLayout::kGrouped;
  std::array<double, kHostTokens.size()> seconds_per_byte{};
  double SecondsPerByte(int tokens) const;
};

// A whole layer of one kind (HostSpec::layer_kind) run by the host's
// kernels as the executor runs it (products in `layout`, norms, rope, KV
// store, attention, activation, adds): seconds at each of kHostTokens,
// interpolated as HostCurve is.
struct HostLayerCurve {
  int kind = 0;
  HostLayout layout = HostLayout::kGrouped;
  std::array<double, kHostTokens.size()> seconds{};
  double Seconds(int tokens) const;
};

struct HostSpec {
  // Products of a type without a curve: the weight bytes a one-token
  // product reads per second, and the arithmetic per second (q8_0's).
  double memory_gbps = 20.0;
  double gflops = 100.0;
  double kernel_s = 0;        // a kernel's fixed cost (thread pool start and finish)
  // memcpy's rate on one thread: the sim device's copy engine is a host
  // thread, and while it copies a streamed unit it takes a core from the
  // kernels (a GPU's copy engine takes none).
  double copy_gbps = 10.0;
  std::vector<HostCurve> curves{};
  // The model's layers as measured whole (exec::MeasureHost): layer l is
  // of kind layer_kind[l] (layers of one kind cost the same: the same
  // matrices, the same reach of attention), and each kind has a curve per
  // layout measured. A layer without one is priced by its parts: the type
  // curves and layer_rest_s.
  std::vector<int> layer_kind{};
  std::vector<HostLayerCurve> layer_curves{};
  const HostLayerCurve* LayerCurve(int layer, HostLayout layout) const;
  // A layer's work besides its products (HostLayer), measured at 1 and at
  // 16 tokens; {0, 0}: not measured.
  std::array<double, 2> layer_rest_s{};
  // That work at `tokens` tokens: linear in them.
  double LayerRestSeconds(int tokens) const {
    return layer_rest_s[0] + (layer_rest_s[1] - layer_rest_s[0]) * (tokens - 1) / 15.0;
  }

  // A product of `bytes` (`params` weights) of `type` at `tokens` tokens:
  // bytes x the type's curve in that layout; without one, the slower of
  // bytes / memory_gbps and 2 x params x tokens / gflops.
  double ProductSeconds(quant::TensorType type, HostLayout layout, uint64_t bytes, uint64_t params,
                        int tokens) const;
  // "45.9 GB/s of weights from memory, 12 us a kernel; GB/s of weights a
  // product reads at 1/8/64 tokens: q8_0 30.2/13.9/3.8, q8_0 (file layout) ..."
  std::string Describe() const;
};

// The widest matrix or layer the host is measured at (a header may claim
// any width); one wider is priced by the q8_0 figures or its parts.
inline constexpr int64_t kHostMaxWidth = 1 << 18;

// The buffer the measurements walk through, for a model of `model_bytes`:
// as large as the model within 64 MiB .. 512 MiB (past the caches of most
// CPUs), at most a quarter of the free memory, at least 8 MiB.
uint64_t HostWalkBytes(uint64_t model_bytes);

// `rows` rows of `type`, `cols` wide, as a file stores them: one row of
// normal values (sigma 0.02) quantized, then repeated (their values do not
// change the kernels' speed). Nothing for a type ferry cannot quantize.
std::optional<std::vector<uint8_t>> MadeUpRows(quant::TensorType type, int64_t cols, int64_t rows);

// A width to measure a type at: that of the widest matrix (most columns) of
// the type in the model's layers and head, one per type. (Rows do not
// matter: the products walk a buffer of them.)
struct HostProbe {
  quant::TensorType type = quant::TensorType::kF32;
  int64_t cols = 0;
};
std::vector<HostProbe> HostProbesFor(const gguf::File& file, const model::ModelConfig& config);

// What a layer does besides its products, as the executor runs it on the
// CPU (exec/layer.cc): two norms, rope on q and k, the KV store, attention
// over `position` cached positions, the gated activation, two adds. Some
// of these run on one thread (the norms, rope, the activation), so at a
// few tokens a step they are a share of a layer's time the products alone
// miss (docs/measurements.md).
struct HostLayer {
  int n_embd = 0, n_ff = 0, n_head = 0, n_head_kv = 0, head_dim = 0, rope_dims = 0;
  model::Activation activation = model::Activation::kSilu;
  int position = 0;
};
// The model's layer with attention over `position` positions (clamped to
// 1..4096).
HostLayer HostLayerFor(const model::ModelConfig& config, int position);

// Measures the host with ferry's matmul kernels on `threads` threads: a
// kernel's fixed cost, a curve per probe in the grouped layout (and, with
// `file_layout`, in the file's), and q8_0's bandwidth and arithmetic rate.
// The products walk through a buffer of HostWalkBytes(model_bytes), filled
// for each type by repeating one group of MadeUpRows, not read from the
// file: about 0.15 s per curve plus faulting the buffer in.
// With a `layer` (n_embd > 0), also that layer's other work
// (HostSpec::layer_rest_s) on the cpu device's kernels.
HostSpec MeasureHost(int threads, const std::vector<HostProbe>& probes, uint64_t model_bytes, bool file_layout,
                     const HostLayer& layer);

}  // namespace ferry::plan
