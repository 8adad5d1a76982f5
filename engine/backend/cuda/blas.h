// cuBLAS, loaded at run time (dlopen) when a CUDA device is opened, for the
// prefill GEMMs. Not linked: libcublasLt carries ~94 KiB of static TLS,
// which glibc places on every thread's stack once the library is linked,
// and civetweb's small-stack worker threads (the metrics endpoint) then
// fail to start (measured here: mg_start returns null whenever
// libcublasLt.so.13 is linked; with dlopen the TLS is dynamic and it
// starts). Without cuBLAS the GEMM path falls back to the matvec kernel in
// chunks of kMatVecMaxTokens tokens: correct, slower, and said at start-up.
#pragma once

#include <cublas_v2.h>

#include <string>

namespace ferry::backend::cuda {

struct Blas {
  cublasStatus_t (*create)(cublasHandle_t*) = nullptr;
  cublasStatus_t (*destroy)(cublasHandle_t) = nullptr;
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t) = nullptr;
  cublasStatus_t (*set_workspace)(cublasHandle_t, void*, size_t) = nullptr;
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t) = nullptr;
  std::string path;  // the library loaded
};

// The process-wide table, loaded on first use; nullptr (and `why`) when no
// libcublas.so.13 is found (LD_LIBRARY_PATH, the linker cache, $CUDA_HOME,
// /usr/local/cuda).
const Blas* LoadBlas(std::string* why);

const char* BlasStatusName(cublasStatus_t s);

}  // namespace ferry::backend::cuda
