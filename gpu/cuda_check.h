// Checked calls into the CUDA runtime, cuDNN and cuBLAS.
//
//   TETHER_CUDA_CHECK(cudaMemcpyAsync(...));
//   TETHER_CUDNN_CHECK(cudnnConvolutionForward(...));
//   TETHER_CUBLAS_CHECK(cublasSgemm(...));
//
// A failing call throws std::runtime_error naming the file, the line, the call
// as written and the library's own error string, e.g.
//   gpu/cuda_backend.cpp:212: cudaMalloc(&p, bytes) failed: out of memory
//   (cudaErrorMemoryAllocation)
// Kernel launches are checked with TETHER_CUDA_CHECK(cudaGetLastError()).
// Destructors use the *_WARN forms, which print instead of throwing.
// Bad arguments: TETHER_GPU_ARG throws std::invalid_argument.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>

namespace tether::gpu {

[[noreturn]] inline void throw_gpu_error(const char* file, int line, const char* call,
                                         const std::string& what) {
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + call +
                           " failed: " + what);
}

inline std::string cuda_error_text(cudaError_t e) {
  return std::string(cudaGetErrorString(e)) + " (" + cudaGetErrorName(e) + ")";
}

inline void check_cuda(cudaError_t e, const char* call, const char* file, int line) {
  if (e != cudaSuccess) {
    // Clear a non-sticky error so the next unrelated call does not report it.
    (void)cudaGetLastError();
    throw_gpu_error(file, line, call, cuda_error_text(e));
  }
}

inline void check_cudnn(cudnnStatus_t s, const char* call, const char* file, int line) {
  if (s != CUDNN_STATUS_SUCCESS) {
    std::string what = cudnnGetErrorString(s);
    char detail[512] = {0};
    cudnnGetLastErrorString(detail, sizeof(detail));
    if (detail[0] != '\0') what += std::string(" [") + detail + "]";
    throw_gpu_error(file, line, call, what);
  }
}

inline void check_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    throw_gpu_error(file, line, call,
                    std::string(cublasGetStatusString(s)) + " (" + cublasGetStatusName(s) + ")");
  }
}

// For destructors and other places that must not throw.
inline void warn_cuda(cudaError_t e, const char* call, const char* file, int line) {
  // At process exit the runtime may be torn down before a static backend.
  if (e == cudaErrorCudartUnloading) {
    (void)cudaGetLastError();
    return;
  }
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    std::fprintf(stderr, "tether: %s:%d: %s failed: %s\n", file, line, call,
                 cuda_error_text(e).c_str());
  }
}

inline void warn_cudnn(cudnnStatus_t s, const char* call, const char* file, int line) {
  if (s != CUDNN_STATUS_SUCCESS) {
    std::fprintf(stderr, "tether: %s:%d: %s failed: %s\n", file, line, call, cudnnGetErrorString(s));
  }
}

inline void warn_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "tether: %s:%d: %s failed: %s\n", file, line, call,
                 cublasGetStatusString(s));
  }
}

[[noreturn]] inline void throw_invalid(const char* file, int line, const char* cond,
                                       const std::string& what) {
  std::ostringstream os;
  os << "cuda backend: " << what << " (check `" << cond << "` failed at " << file << ":" << line
     << ")";
  throw std::invalid_argument(os.str());
}

}  // namespace tether::gpu

#define TETHER_CUDA_CHECK(call) ::tether::gpu::check_cuda((call), #call, __FILE__, __LINE__)
#define TETHER_CUDNN_CHECK(call) ::tether::gpu::check_cudnn((call), #call, __FILE__, __LINE__)
#define TETHER_CUBLAS_CHECK(call) ::tether::gpu::check_cublas((call), #call, __FILE__, __LINE__)
#define TETHER_CUDA_WARN(call) ::tether::gpu::warn_cuda((call), #call, __FILE__, __LINE__)
#define TETHER_CUDNN_WARN(call) ::tether::gpu::warn_cudnn((call), #call, __FILE__, __LINE__)
#define TETHER_CUBLAS_WARN(call) ::tether::gpu::warn_cublas((call), #call, __FILE__, __LINE__)

// TETHER_GPU_ARG(cond, "name " << value ...): std::invalid_argument on a bad
// argument (the same checks, wording and exception as the CPU backend's).
#define TETHER_GPU_ARG(cond, msg)                                                   \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::ostringstream tether_gpu_os_;                                            \
      tether_gpu_os_ << msg;                                                        \
      ::tether::gpu::throw_invalid(__FILE__, __LINE__, #cond, tether_gpu_os_.str()); \
    }                                                                               \
  } while (0)
