#include "engine/backend/device.h"

#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "engine/backend/cpu/cpu_device.h"
#include "engine/backend/cuda/options.h"
#include "engine/backend/sim/sim_device.h"
#include "engine/units.h"
#if FERRY_HAVE_CUDA
#include "engine/backend/cuda/cuda_device.h"
#endif

namespace ferry::backend {

uint64_t AvailableHostMemory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

absl::StatusOr<AdoptedWeights> Device::AdoptInPlace(std::span<model::Matrix* const>,
                                                    const std::function<void(const model::Matrix&)>&) {
  return AdoptedWeights();
}

std::string AdoptedWeights::Describe() const {
  if (bytes > 0) return absl::StrCat(" (", HumanBytes(bytes), " of matrices regrouped for the kernels)");
  if (needed > 0) {
    return absl::StrCat(" (matrices read as the file stores them: regrouping them needs ", HumanBytes(needed),
                        ", more than 90% of the memory available)");
  }
  return "";
}

DeviceSpec Device::spec() const {
  DeviceSpec f;
  f.name = Describe();
  f.memory_bytes = capacity();
  return f;
}

void Device::MatMulShared(std::span<const MatMulOut> outs, const float* x, int64_t x_stride, int n_tokens) {
  for (const MatMulOut& o : outs) MatMul(*o.w, x, x_stride, n_tokens, o.y, o.y_stride);
}

void Device::GatedMatMul(const model::Matrix& w_gate, const model::Matrix& w_up, const float* x, int64_t x_stride,
                         int n_tokens, float* gate, float* up, int64_t stride, model::Activation act) {
  MatMul(w_gate, x, x_stride, n_tokens, gate, stride);
  MatMul(w_up, x, x_stride, n_tokens, up, stride);
  GatedActivation(gate, up, static_cast<int64_t>(n_tokens) * stride, act);
}

void Device::MatMulAdd(const model::Matrix& w, const float* x, int64_t x_stride, int n_tokens, float* scratch,
                       float* acc, int64_t stride) {
  MatMul(w, x, x_stride, n_tokens, scratch, stride);
  Add(acc, scratch, static_cast<int64_t>(n_tokens) * stride);
}

void Device::RopeQK(float* q, int n_head, float* k, int n_head_kv, int n_rows, std::span<const TokenPos> tokens,
                    const RopeParams& rope) {
  Rope(q, n_rows, n_head, tokens, rope);
  Rope(k, n_rows, n_head_kv, tokens, rope);
}

absl::StatusOr<std::unique_ptr<Device>> OpenDevice(absl::string_view spec, int threads) {
  if (spec == "cpu") return std::unique_ptr<Device>(new CpuDevice(threads));
  absl::string_view rest = spec;
  if (rest == "sim" || absl::ConsumePrefix(&rest, "sim:")) {
    if (rest == "sim") rest = "";
    absl::StatusOr<SimOptions> o = ParseSimOptions(rest);
    if (!o.ok()) return o.status();
    absl::StatusOr<std::unique_ptr<SimDevice>> d = SimDevice::Create(*o, threads);
    if (!d.ok()) return d.status();
    return std::unique_ptr<Device>(std::move(*d));
  }
  if (rest == "cuda" || absl::ConsumePrefix(&rest, "cuda:")) {
    if (rest == "cuda") rest = "";
    absl::StatusOr<CudaOptions> o = ParseCudaOptions(rest);
    if (!o.ok()) return o.status();
#if FERRY_HAVE_CUDA
    absl::StatusOr<std::unique_ptr<CudaDevice>> d = CudaDevice::Create(*o);
    if (!d.ok()) return d.status();
    return std::unique_ptr<Device>(std::move(*d));
#else
    return absl::UnimplementedError(
        "this ferry was built without CUDA (nvcc was not found at configure time); --device sim:profile=<gpu> "
        "runs the same schedule on the CPU with a GPU's memory cap and copy bandwidth");
#endif
  }
  return absl::InvalidArgumentError(absl::StrCat("--device '", spec, "': want cpu, sim[:key=value,...] or cuda[:N]"));
}

}  // namespace ferry::backend
