// A CUDA error becomes text one way: "<what>: <name> (<description>)",
// `what` naming the call. From there it is either a status the caller
// returns (ErrorStatus: start-up, allocations, registrations, which the
// caller can refuse and go on) or a latched fault: FERRY_CUDA_CHECK for
// every other CUDA runtime call (naming the call's text, file and line),
// CudaDevice::Launched for kernel launches. A CUDA error may leave the
// context unusable (an illegal address poisons every later call), so after
// a fault the device reports itself unhealthy instead of serving garbage.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace ferry::backend::cuda {

std::string DescribeCudaError(cudaError_t e);
// "<what>: <DescribeCudaError(e)>".
std::string ErrorText(absl::string_view what, cudaError_t e);
// ErrorText as a status of `code`, with `more` after it.
absl::Status ErrorStatus(absl::StatusCode code, absl::string_view what, cudaError_t e, absl::string_view more = "");

}  // namespace ferry::backend::cuda

// Inside CudaDevice methods: `Fail(std::string)` latches the fault.
#define FERRY_CUDA_CHECK(call)                                                                                     \
  do {                                                                                                             \
    const cudaError_t ferry_cuda_error_ = (call);                                                                  \
    if (ferry_cuda_error_ != cudaSuccess) {                                                                        \
      Fail(::ferry::backend::cuda::ErrorText(std::string(#call) + " at " + __FILE__ + ":" + std::to_string(__LINE__), \
                                             ferry_cuda_error_));                                                  \
    }                                                                                                              \
  } while (0)
