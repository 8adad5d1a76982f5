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
// out[r] = x[r] / rms(x[r]) * weight, one thread block per row.
cudaError_t LaunchRmsNorm(const float* x, int n_rows, int64_t width, const float* weight, float eps, float* out,
                          cudaStream_t stream);
// Rotates n_heads heads of head_dim in each of n_rows rows by its token's
// position (tokens: (seq, pos) pairs); pairs (2i, 2i+1) or, neox, (i, i + dims/2).
cudaError_t LaunchRope(float* x, int n_rows, int n_heads, int head_dim, const int2* tokens, const float* inv_freq,
                       int dims, bool neox, cudaStream_t stream);

}  // namespace ferry::backend::cuda
