#include "engine/backend/device_spec.h"

#include "absl/strings/str_cat.h"

namespace ferry::backend {
namespace {

constexpr uint64_t kGiB = 1ull << 30;
constexpr uint64_t kMiB = 1ull << 20;

// Copy bandwidth: what pinned cudaMemcpyAsync reaches in practice, about 80%
// of the link (PCIe 4.0 x16 = 32 GB/s raw, x8 on the RTX 4060; PCIe 5.0 x16
// on the H100). Memory bandwidth and tensor throughput: the vendors' spec
// sheets (GeForce cards run fp16 with fp32 accumulation at half rate).
// The context overhead is a typical value; the cuda backend measures it.
const DeviceSpec kProfiles[] = {
    {"rtx3060-12g", 12 * kGiB, 400 * kMiB, 25.0, 10.0, 360.0, 25.0},
    {"rtx4060-8g", 8 * kGiB, 400 * kMiB, 13.0, 10.0, 272.0, 30.0},
    {"rtx4070-12g", 12 * kGiB, 400 * kMiB, 25.0, 10.0, 504.0, 58.0},
    {"rtx4080-16g", 16 * kGiB, 450 * kMiB, 25.0, 10.0, 717.0, 97.0},
    {"rtx4090-24g", 24 * kGiB, 500 * kMiB, 25.0, 10.0, 1008.0, 165.0},
    {"a100-40g", 40 * kGiB, 500 * kMiB, 25.0, 10.0, 1555.0, 312.0},
    {"a100-80g", 80 * kGiB, 500 * kMiB, 25.0, 10.0, 2039.0, 312.0},
    {"h100-80g", 80 * kGiB, 550 * kMiB, 50.0, 10.0, 3350.0, 989.0},
};

}  // namespace

absl::StatusOr<DeviceSpec> FindGpuProfile(absl::string_view name) {
  for (const DeviceSpec& p : kProfiles) {
    if (name == p.name) return p;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown GPU profile '", name, "' (profiles: ", GpuProfileNames(), ")"));
}

std::string GpuProfileNames() {
  std::string out;
  for (const DeviceSpec& p : kProfiles) absl::StrAppend(&out, out.empty() ? "" : ", ", p.name);
  return out;
}

}  // namespace ferry::backend
