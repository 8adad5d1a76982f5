// Decode-kernel bandwidth per quant type on a CUDA device: one token times
// a 16384 x 8192 matrix (the shape of a 13B model's FFN), timed over 50
// launches after 5 warm-ups, reported in GB/s of weight bytes read against
// the device-to-device copy bandwidth the device measured at start-up.
// Exits 2 with "no CUDA device" where there is none.
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "engine/backend/cuda/cuda_device.h"
#include "engine/quant/quantize.h"
#include "engine/quant/types.h"

int main() {
  using namespace ferry;
  auto opened = backend::CudaDevice::Create({});
  if (!opened.ok()) {
    std::printf("%s\n", std::string(opened.status().message()).c_str());
    return 2;
  }
  backend::CudaDevice& d = **opened;
  std::printf("%s\n", d.Describe().c_str());
  const int64_t rows = 16384, cols = 8192;
  if (!d.ReserveKernelScratch(rows, cols, 1).ok()) return 1;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.5f);
  std::vector<float> row(cols), x(cols);
  for (float& v : x) v = dist(rng);
  std::printf("%-6s %12s %10s %12s %8s\n", "type", "weight MiB", "us/call", "kernel GB/s", "% of d2d");
  for (quant::TensorType type :
       {quant::TensorType::kF16, quant::TensorType::kBF16, quant::TensorType::kQ8_0, quant::TensorType::kQ4_0,
        quant::TensorType::kQ4_1, quant::TensorType::kQ5_0, quant::TensorType::kQ5_1, quant::TensorType::kQ4_K,
        quant::TensorType::kQ5_K, quant::TensorType::kQ6_K, quant::TensorType::kF32}) {
    const uint64_t row_bytes = *quant::RowBytes(type, cols);
    // One quantized row repeated: the kernel's speed does not depend on the values.
    for (float& v : row) v = dist(rng);
    std::vector<uint8_t> one(row_bytes), all(rows * row_bytes);
    if (!quant::QuantizeRow(type, row, one).ok()) return 1;
    for (int64_t r = 0; r < rows; ++r) std::copy(one.begin(), one.end(), all.begin() + r * row_bytes);
    auto w = backend::DeviceBuffer::Make(d, all.size(), "bench matrix");
    auto xb = backend::DeviceBuffer::Make(d, cols * sizeof(float), "bench x");
    auto yb = backend::DeviceBuffer::Make(d, rows * sizeof(float), "bench y");
    if (!w.ok() || !xb.ok() || !yb.ok()) return 1;
    d.CopyToDevice(backend::Queue::kCompute, w->bytes(), all.data(), all.size());
    d.CopyToDevice(backend::Queue::kCompute, xb->bytes(), x.data(), cols * sizeof(float));
    const model::Matrix m{w->bytes(), type, cols, rows, all.size(), "bench"};
    for (int i = 0; i < 5; ++i) d.MatMul(m, xb->floats(), cols, 1, yb->floats(), rows);
    d.SynchronizeAll();
    const int iters = 50;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) d.MatMul(m, xb->floats(), cols, 1, yb->floats(), rows);
    d.SynchronizeAll();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / iters;
    if (!d.health().ok()) {
      std::printf("%s\n", std::string(d.health().message()).c_str());
      return 1;
    }
    const double gbps = all.size() / s / 1e9;
    std::printf("%-6s %12.1f %10.1f %12.1f %7.0f%%\n", std::string(quant::Info(type).name).c_str(),
                all.size() / 1048576.0, s * 1e6, gbps, 100.0 * gbps / d.measured_d2d_gbps());
  }
  std::printf("device-to-device copy %.0f GB/s; pinned host-to-device (64 MiB copies) %.1f GB/s\n",
              d.measured_d2d_gbps(), d.measured_h2d_gbps());
  return 0;
}
