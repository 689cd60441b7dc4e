#pragma once
//! \file
//! cuda_backend: a CUDA stream with its cuBLAS and cuSOLVER handles (RAII, shared by copies).
//! Errors from the CUDA runtime and libraries become yaqa::cuda_error naming the status.
#if !defined(YAQA_HAS_CUDA)
#error "backend/cuda/backend.hpp needs the yaqa::cuda target (YAQA_HAS_CUDA)"
#endif
#include <memory>
#include <string>
#include <string_view>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <yaqa/backend/backend.hpp>
#include <yaqa/backend/cuda/fwd.hpp>
#include <yaqa/core/error.hpp>

namespace yaqa::cuda {

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw cuda_error(yaqa::detail::concat(what, ": CUDA error ", cudaGetErrorName(e), " (",
                                    cudaGetErrorString(e), ")"));
}
inline void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw cuda_error(yaqa::detail::concat(what, ": cuBLAS error ", cublasGetStatusName(s)));
}
//! The enumerator name of a cuSOLVER status (cuSOLVER has no cusolverGetStatusName).
inline std::string cusolver_status_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_MAPPING_ERROR: return "CUSOLVER_STATUS_MAPPING_ERROR";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_ZERO_PIVOT: return "CUSOLVER_STATUS_ZERO_PIVOT";
    case CUSOLVER_STATUS_INVALID_LICENSE: return "CUSOLVER_STATUS_INVALID_LICENSE";
    case CUSOLVER_STATUS_INVALID_WORKSPACE: return "CUSOLVER_STATUS_INVALID_WORKSPACE";
    default: return yaqa::detail::concat("CUSOLVER_STATUS_<", static_cast<int>(s), ">");
  }
}

inline void check(cusolverStatus_t s, const char* what) {
  if (s != CUSOLVER_STATUS_SUCCESS)
    throw cuda_error(yaqa::detail::concat(what, ": cuSOLVER error ", cusolver_status_name(s)));
}

//! True when a CUDA device can be used (any runtime error counts as "no device").
inline bool device_usable() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0) {
    cudaGetLastError();
    return false;
  }
  return true;
}

class cuda_backend {
  struct state {
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;
    cusolverDnHandle_t solver = nullptr;
    state() {
      check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cuda_backend: stream");
      check(cublasCreate(&blas), "cuda_backend: cublasCreate");
      check(cublasSetStream(blas, stream), "cuda_backend: cublasSetStream");
      check(cusolverDnCreate(&solver), "cuda_backend: cusolverDnCreate");
      check(cusolverDnSetStream(solver, stream), "cuda_backend: cusolverDnSetStream");
    }
    ~state() {
      if (solver) cusolverDnDestroy(solver);
      if (blas) cublasDestroy(blas);
      if (stream) cudaStreamDestroy(stream);
    }
    state(const state&) = delete;
    state& operator=(const state&) = delete;
  };
  std::shared_ptr<state> s_;

 public:
  using memory_space = device_space;
  static constexpr std::string_view name = "cuda";

  //! Creates a stream and library handles on the current device; throws cuda_error if none.
  cuda_backend() : s_(std::make_shared<state>()) {}

  [[nodiscard]] stream_t stream() const { return s_->stream; }
  [[nodiscard]] cublas_handle_t cublas() const { return s_->blas; }
  [[nodiscard]] cusolver_handle_t cusolver() const { return s_->solver; }
  void synchronize() const { check(cudaStreamSynchronize(s_->stream), "cuda_backend::synchronize"); }
};

}  // namespace yaqa::cuda

namespace yaqa {
using cuda::cuda_backend;
}  // namespace yaqa
