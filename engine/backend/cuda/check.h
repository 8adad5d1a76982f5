// One macro for every CUDA runtime and cuBLAS call: on failure it hands
// the call's text, file, line and the error string to the device's fault
// latch (CudaDevice::Fail). A CUDA error may leave the context unusable
// (an illegal address poisons every later call), so the device reports
// itself unhealthy from then on instead of serving garbage.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

namespace ferry::backend::cuda {

std::string DescribeCudaError(cudaError_t e);

}  // namespace ferry::backend::cuda

// Inside CudaDevice methods: `Fail(std::string)` latches the fault.
#define FERRY_CUDA_CHECK(call)                                                                             \
  do {                                                                                                     \
    const cudaError_t ferry_cuda_error_ = (call);                                                          \
    if (ferry_cuda_error_ != cudaSuccess) {                                                                \
      Fail(std::string(#call) + " at " + __FILE__ + ":" + std::to_string(__LINE__) + ": " +                \
           ::ferry::backend::cuda::DescribeCudaError(ferry_cuda_error_));                                  \
    }                                                                                                      \
  } while (0)
