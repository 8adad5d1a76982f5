// Small kernels over activations: residual add, row bias, gated
// activations (SwiGLU, GELU-tanh), soft-capping, row gather, RMSNorm, rotary
// embedding. Each returns the launch's error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ferry::backend::cuda {

cudaError_t LaunchAdd(float* x, const float* y, int64_t n, cudaStream_t stream);
cudaError_t LaunchAddRowBias(float* x, int n_rows, int64_t width, const float* bias, cudaStream_t stream);
// gate = act(gate) * up; gelu: false = SiLU, true = GELU with the tanh approximation.
cudaError_t LaunchGatedActivation(float* gate, const float* up, int64_t n, bool gelu, cudaStream_t stream);
cudaError_t LaunchSoftCap(float* x, int64_t n, float cap, cudaStream_t stream);
cudaError_t LaunchGatherRows(const float* src, const int32_t* rows, int n_rows, int64_t width, float* dst,
                             cudaStream_t stream);
// out[r] = x[r] / rms(x[r]) * weight, one thread block per row. With q,
// d, isum (the int8 matvec's activation buffer) the output is also
// quantized there, so the next int8 product skips its quantize kernel.
cudaError_t LaunchRmsNorm(const float* x, int n_rows, int64_t width, const float* weight, float eps, float* out,
                          cudaStream_t stream, int8_t* q = nullptr, float* d = nullptr, int32_t* isum = nullptr);
// Rotates n_heads heads of head_dim in each of n_rows rows by its token's
// position (tokens: (seq, pos) pairs); pairs (2i, 2i+1) or, neox, (i, i + dims/2).
cudaError_t LaunchRope(float* x, int n_rows, int n_heads, int head_dim, const int2* tokens, const float* inv_freq,
                       int dims, bool neox, cudaStream_t stream);
// The same over two buffers (q and k) in one launch.
cudaError_t LaunchRopePair(float* x, int n_heads, float* x2, int n_heads2, int n_rows, int head_dim,
                           const int2* tokens, const float* inv_freq, int dims, bool neox, cudaStream_t stream);
// dst[0..n) = words[0..n), the values carried in kernel parameters (up to
// 960 a launch): small per-step tables reach the device without a DMA, so
// they never queue behind a slot's upload on the host-to-device copy engine.
cudaError_t LaunchWriteWords(const uint32_t* words, int64_t n, uint32_t* dst, cudaStream_t stream);
// dst[0..bytes) = src[0..bytes) read by the SMs straight from mapped
// page-locked host memory (no copy engine), for small copies on the
// compute stream.
cudaError_t LaunchCopyFromMappedHost(const void* src, uint64_t bytes, void* dst, cudaStream_t stream);

}  // namespace ferry::backend::cuda
