#include "engine/backend/cuda/elementwise.cuh"
#include "engine/backend/cuda/warp.cuh"

#include <algorithm>

namespace ferry::backend::cuda {
namespace {

constexpr int kThreads = 256;

unsigned BlocksFor(int64_t n) { return static_cast<unsigned>(std::max<int64_t>(1, (n + kThreads - 1) / kThreads)); }

__global__ void AddKernel(float* x, const float* y, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void AddRowBiasKernel(float* x, int64_t n, int64_t width, const float* bias) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += bias[i % width];
}

__global__ void GatedKernel(float* gate, const float* up, int64_t n, bool gelu) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  gate[i] = Gate(gate[i], up[i], gelu);
}

__global__ void SoftCapKernel(float* x, int64_t n, float cap) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = cap * tanhf(x[i] / cap);
}

__global__ void GatherKernel(const float* src, const int32_t* rows, int64_t width, float* dst) {
  const float* s = src + static_cast<int64_t>(rows[blockIdx.x]) * width;
  float* d = dst + static_cast<int64_t>(blockIdx.x) * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) d[i] = s[i];
}

// With q non-null the row's output is also quantized to int8 blocks of 32
// (QuantizeBlock32), as the int8 matvec that reads it next would.
__global__ void RmsNormKernel(const float* x, int64_t width, const float* weight, float eps, float* out, int8_t* q,
                              float* d, int32_t* isum) {
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * width;
  float* o = out + static_cast<int64_t>(blockIdx.x) * width;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) ss = fmaf(xr[i], xr[i], ss);
  __shared__ float warp_sums[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x / 32] = ss;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) total += warp_sums[w];
  const float scale = rsqrtf(total / static_cast<float>(width) + eps);
  // In place is allowed: each thread rewrites only the values it read itself.
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) o[i] = xr[i] * scale * weight[i];
  if (q == nullptr) return;
  __syncthreads();  // the row's outputs, written by every thread, are visible to the block
  const int lane = threadIdx.x & 31;
  const int64_t blocks = width / 32, first = static_cast<int64_t>(blockIdx.x) * blocks;
  for (int64_t k = threadIdx.x / 32; k < blocks; k += kThreads / 32) {
    QuantizeBlock32(o[k * 32 + lane], lane, q + (first + k) * 32, d + first + k, isum + first + k);
  }
}

// One thread per (row, pair, head); theta in double as the CPU backend does.
// blockIdx.y 1 rotates a second buffer (k beside q) in the same launch.
__global__ void RopeKernel(float* x, int n_heads, float* x2, int n_heads2, int head_dim, const int2* tokens,
                           const float* inv_freq, int half, bool neox) {
  if (blockIdx.y == 1) x = x2, n_heads = n_heads2;
  const int row = blockIdx.x;
  const int pos = tokens[row].y;
  float* xr = x + static_cast<int64_t>(row) * n_heads * head_dim;
  for (int item = threadIdx.x; item < half * n_heads; item += blockDim.x) {
    const int i = item % half, h = item / half;
    const double theta = static_cast<double>(pos) * inv_freq[i];
    double s, c;
    sincos(theta, &s, &c);
    const float cs = static_cast<float>(c), sn = static_cast<float>(s);
    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    float* head = xr + static_cast<int64_t>(h) * head_dim;
    const float x0 = head[a], x1 = head[b];
    head[a] = x0 * cs - x1 * sn;
    head[b] = x0 * sn + x1 * cs;
  }
}

constexpr int kParamWords = 960;  // 3840 bytes: under the 4 KiB kernel-parameter limit of every CUDA version
struct ParamWords {
  uint32_t v[kParamWords];
};

__global__ void WriteWordsKernel(ParamWords words, int n, uint32_t* dst) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = words.v[i];
}

__global__ void CopyVec16Kernel(const uint4* __restrict__ src, int64_t n, uint4* __restrict__ dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = src[i];
}

__global__ void CopyBytesKernel(const uint8_t* __restrict__ src, int64_t n, uint8_t* __restrict__ dst) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = src[i];
}

}  // namespace

cudaError_t LaunchWriteWords(const uint32_t* words, int64_t n, uint32_t* dst, cudaStream_t stream) {
  for (int64_t at = 0; at < n; at += kParamWords) {
    const int k = static_cast<int>(n - at < kParamWords ? n - at : kParamWords);
    ParamWords p;
    for (int i = 0; i < k; ++i) p.v[i] = words[at + i];
    WriteWordsKernel<<<(k + 255) / 256, 256, 0, stream>>>(p, k, dst + at);
  }
  return cudaGetLastError();
}

cudaError_t LaunchCopyFromMappedHost(const void* src, uint64_t bytes, void* dst, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  const bool vec = (reinterpret_cast<uintptr_t>(src) | reinterpret_cast<uintptr_t>(dst) | bytes) % 16 == 0;
  const int64_t n = static_cast<int64_t>(vec ? bytes / 16 : bytes);
  const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
  if (vec) {
    CopyVec16Kernel<<<blocks, 256, 0, stream>>>(static_cast<const uint4*>(src), n, static_cast<uint4*>(dst));
  } else {
    CopyBytesKernel<<<blocks, 256, 0, stream>>>(static_cast<const uint8_t*>(src), n, static_cast<uint8_t*>(dst));
  }
  return cudaGetLastError();
}

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  AddKernel<<<BlocksFor(n), kThreads, 0, stream>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t LaunchAddRowBias(float* x, int n_rows, int64_t width, const float* bias, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(n_rows) * width;
  if (n == 0) return cudaSuccess;
  AddRowBiasKernel<<<BlocksFor(n), kThreads, 0, stream>>>(x, n, width, bias);
  return cudaGetLastError();
}

cudaError_t LaunchGatedActivation(float* gate, const float* up, int64_t n, bool gelu, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  GatedKernel<<<BlocksFor(n), kThreads, 0, stream>>>(gate, up, n, gelu);
  return cudaGetLastError();
}

cudaError_t LaunchSoftCap(float* x, int64_t n, float cap, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SoftCapKernel<<<BlocksFor(n), kThreads, 0, stream>>>(x, n, cap);
  return cudaGetLastError();
}

cudaError_t LaunchGatherRows(const float* src, const int32_t* rows, int n_rows, int64_t width, float* dst,
                             cudaStream_t stream) {
  if (n_rows == 0) return cudaSuccess;
  GatherKernel<<<n_rows, kThreads, 0, stream>>>(src, rows, width, dst);
  return cudaGetLastError();
}

cudaError_t LaunchRmsNorm(const float* x, int n_rows, int64_t width, const float* weight, float eps, float* out,
                          cudaStream_t stream, int8_t* q, float* d, int32_t* isum) {
  if (n_rows == 0) return cudaSuccess;
  if (q != nullptr && width % 32 != 0) return cudaErrorInvalidValue;
  RmsNormKernel<<<n_rows, kThreads, 0, stream>>>(x, width, weight, eps, out, q, d, isum);
  return cudaGetLastError();
}

cudaError_t LaunchRope(float* x, int n_rows, int n_heads, int head_dim, const int2* tokens, const float* inv_freq,
                       int dims, bool neox, cudaStream_t stream) {
  if (n_rows == 0 || dims < 2) return cudaSuccess;
  RopeKernel<<<n_rows, kThreads, 0, stream>>>(x, n_heads, nullptr, 0, head_dim, tokens, inv_freq, dims / 2, neox);
  return cudaGetLastError();
}

cudaError_t LaunchRopePair(float* x, int n_heads, float* x2, int n_heads2, int n_rows, int head_dim,
                           const int2* tokens, const float* inv_freq, int dims, bool neox, cudaStream_t stream) {
  if (n_rows == 0 || dims < 2) return cudaSuccess;
  RopeKernel<<<dim3(n_rows, 2), kThreads, 0, stream>>>(x, n_heads, x2, n_heads2, head_dim, tokens, inv_freq, dims / 2,
                                                       neox);
  return cudaGetLastError();
}

}  // namespace ferry::backend::cuda
