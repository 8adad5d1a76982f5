// Decode-kernel bandwidth per quant type on a CUDA device: one token times
// a 16384 x 8192 matrix (the shape of a 13B model's FFN), timed over 50
// launches after 5 warm-ups, reported in GB/s of weight bytes read against
// the device-to-device copy bandwidth the device measured at start-up.
// With --host-memory instead: what each way of getting host memory to the
// GPU costs (HostMemoryCosts). Exits 2 with "no CUDA device" where there is none.
#include <cuda_runtime.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <initializer_list>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "engine/backend/cuda/cuda_device.h"
#include "engine/quant/quantize.h"
#include "engine/quant/types.h"

namespace {

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// What the ways of getting weights from host memory to the GPU cost on this
// machine, 1 GiB each: page-locking (driver allocation, registering heap
// memory, registering a read-only file mapping) and copying from pageable
// memory (heap, file mapping). The executor's loading choices rest on these.
void HostMemoryCosts(void* dst) {
  constexpr size_t kBytes = size_t{1} << 30;
  auto line = [](const char* what, double s, bool ok) {
    if (ok) std::printf("host memory: %-52s %7.3f s  %6.1f GB/s\n", what, s, kBytes / s / 1e9);
    else std::printf("host memory: %-52s failed\n", what);
  };
  auto t = std::chrono::steady_clock::now();
  void* pinned = nullptr;
  bool ok = cudaHostAlloc(&pinned, kBytes, cudaHostAllocPortable) == cudaSuccess;
  line("cudaHostAlloc", Since(t), ok);
  if (ok) {
    std::memset(pinned, 1, kBytes);
    t = std::chrono::steady_clock::now();
    ok = cudaMemcpy(dst, pinned, kBytes, cudaMemcpyHostToDevice) == cudaSuccess;
    line("copy from it (cudaMemcpy)", Since(t), ok);
    cudaFreeHost(pinned);
  }
  void* heap = std::aligned_alloc(4096, kBytes);
  std::memset(heap, 2, kBytes);
  t = std::chrono::steady_clock::now();
  ok = cudaMemcpy(dst, heap, kBytes, cudaMemcpyHostToDevice) == cudaSuccess;
  line("copy from pageable heap memory", Since(t), ok);
  t = std::chrono::steady_clock::now();
  ok = cudaHostRegister(heap, kBytes, cudaHostRegisterPortable) == cudaSuccess;
  line("cudaHostRegister of heap memory", Since(t), ok);
  if (ok) cudaHostUnregister(heap);
  cudaGetLastError();
  // A file written here, mapped read-only as the loader maps models.
  char path[] = "/tmp/ferry-probe-XXXXXX";
  const int fd = mkstemp(path);
  bool written = fd >= 0;
  for (size_t off = 0; written && off < kBytes; off += size_t{64} << 20) {
    written = write(fd, static_cast<uint8_t*>(heap) + off, size_t{64} << 20) == (ssize_t{64} << 20);
  }
  std::free(heap);
  void* map = written ? mmap(nullptr, kBytes, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
  if (map != MAP_FAILED) {
    volatile uint8_t sink = 0;
    for (size_t off = 0; off < kBytes; off += 4096) sink = sink + static_cast<const uint8_t*>(map)[off];
    t = std::chrono::steady_clock::now();
    ok = cudaMemcpy(dst, map, kBytes, cudaMemcpyHostToDevice) == cudaSuccess;
    line("copy from a read-only file mapping (page cache)", Since(t), ok);
    t = std::chrono::steady_clock::now();
    ok = cudaHostRegister(map, kBytes, cudaHostRegisterPortable | cudaHostRegisterReadOnly) == cudaSuccess;
    line("cudaHostRegister(ReadOnly) of that mapping", Since(t), ok);
    if (ok) cudaHostUnregister(map);
    cudaGetLastError();
    munmap(map, kBytes);
  } else {
    std::printf("host memory: could not write and map a 1 GiB file in /tmp\n");
  }
  if (fd >= 0) close(fd), unlink(path);
}

// One row per type: a 1 x rows x cols matvec timed over 50 calls after 5
// warm-ups. False when a step fails (printed).
bool Table(ferry::backend::CudaDevice& d, std::initializer_list<ferry::quant::TensorType> types, const char* label) {
  using namespace ferry;
  const int64_t rows = 16384, cols = 8192;
  if (!d.ReserveKernelScratch(rows, cols, 1).ok()) return false;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist(0.0f, 0.5f);
  std::vector<float> row(cols), x(cols);
  for (float& v : x) v = dist(rng);
  std::printf("%-6s %12s %10s %12s %8s  (%s)\n", "type", "weight MiB", "us/call", "kernel GB/s", "% of d2d", label);
  for (quant::TensorType type : types) {
    const uint64_t row_bytes = *quant::RowBytes(type, cols);
    // One quantized row repeated: the kernel's speed does not depend on the values.
    for (float& v : row) v = dist(rng);
    std::vector<uint8_t> one(row_bytes), all(rows * row_bytes);
    if (!quant::QuantizeRow(type, row, one).ok()) return false;
    for (int64_t r = 0; r < rows; ++r) std::copy(one.begin(), one.end(), all.begin() + r * row_bytes);
    auto w = backend::DeviceBuffer::Make(d, all.size(), "bench matrix");
    auto xb = backend::DeviceBuffer::Make(d, cols * sizeof(float), "bench x");
    auto yb = backend::DeviceBuffer::Make(d, rows * sizeof(float), "bench y");
    if (!w.ok() || !xb.ok() || !yb.ok()) return false;
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
      return false;
    }
    const double gbps = all.size() / s / 1e9;
    std::printf("%-6s %12.1f %10.1f %12.1f %7.0f%%\n", std::string(quant::Info(type).name).c_str(),
                all.size() / 1048576.0, s * 1e6, gbps, 100.0 * gbps / d.measured_d2d_gbps());
  }
  d.ReleaseKernelScratch();
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ferry;
  using quant::TensorType;
  // Line by line even into a pipe: a run stopped by a time limit keeps what it printed.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const bool host_memory = argc > 1 && std::strcmp(argv[1], "--host-memory") == 0;
  backend::CudaOptions float_matvec;
  float_matvec.int8 = false;
  auto opened = backend::CudaDevice::Create(float_matvec);
  if (!opened.ok()) {
    std::printf("%s\n", std::string(opened.status().message()).c_str());
    return 2;
  }
  backend::CudaDevice& d = **opened;
  std::printf("%s\n", d.Describe().c_str());
  if (host_memory) {
    auto dst = backend::DeviceBuffer::Make(d, size_t{1} << 30, "host memory probe");
    if (!dst.ok()) return 1;
    HostMemoryCosts(dst->bytes());
    return 0;
  }
  if (!Table(d, {TensorType::kF16, TensorType::kBF16, TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_1,
                 TensorType::kQ5_0, TensorType::kQ5_1, TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K,
                 TensorType::kF32},
             "float matvec, int8=0")) {
    return 1;
  }
  std::printf("device-to-device copy %.0f GB/s; pinned host-to-device (64 MiB copies) %.1f GB/s\n",
              d.measured_d2d_gbps(), d.measured_h2d_gbps());
  // The same types on the int8 path (the default), side by side.
  opened->reset();
  auto second = backend::CudaDevice::Create({});
  if (!second.ok()) return 1;
  if (!Table(**second, {TensorType::kQ8_0, TensorType::kQ4_0, TensorType::kQ4_K, TensorType::kQ5_K, TensorType::kQ6_K},
             "int8 matvec, the default")) {
    return 1;
  }
  // q4_1, q5_0, q5_1 on the int8 path: off by default until the GPU suite
  // has passed with them (int8_more=1).
  second->reset();
  backend::CudaOptions more;
  more.int8_more = true;
  auto third = backend::CudaDevice::Create(more);
  if (!third.ok()) return 1;
  if (!Table(**third, {TensorType::kQ4_1, TensorType::kQ5_0, TensorType::kQ5_1}, "int8 matvec, int8_more=1")) {
    return 1;
  }
  return 0;
}
