#include "engine/backend/cuda/blas.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <vector>

namespace ferry::backend::cuda {

const Blas* LoadBlas(std::string* why) {
  static std::once_flag once;
  static Blas blas;
  static bool ok = false;
  static std::string error;
  std::call_once(once, [] {
    std::vector<std::string> names = {"libcublas.so.13"};
    if (const char* home = std::getenv("CUDA_HOME")) names.push_back(std::string(home) + "/lib64/libcublas.so.13");
    names.push_back("/usr/local/cuda/lib64/libcublas.so.13");
    void* lib = nullptr;
    for (const std::string& name : names) {
      lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (lib != nullptr) {
        blas.path = name;
        break;
      }
      error = dlerror();
    }
    if (lib == nullptr) return;
    auto get = [&](auto* fn, const char* symbol) {
      *fn = reinterpret_cast<std::remove_pointer_t<decltype(fn)>>(dlsym(lib, symbol));
      if (*fn == nullptr) error = std::string(blas.path) + " has no " + symbol;
      return *fn != nullptr;
    };
    ok = get(&blas.create, "cublasCreate_v2") && get(&blas.destroy, "cublasDestroy_v2") &&
         get(&blas.set_stream, "cublasSetStream_v2") && get(&blas.set_workspace, "cublasSetWorkspace_v2") &&
         get(&blas.gemm_ex, "cublasGemmEx");
  });
  if (!ok) {
    if (why) *why = error;
    return nullptr;
  }
  return &blas;
}

const char* BlasStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}

}  // namespace ferry::backend::cuda
