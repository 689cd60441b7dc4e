#pragma once
//! \file
//! Forward declarations of the CUDA library handles, so the CUDA backend type can appear in
//! host-only code without <cuda_runtime.h> (Ginkgo's opaque-handle idea).
#include <string_view>

struct CUstream_st;
struct cublasContext;
struct cusolverDnContext;

namespace yaqa::cuda {

//! Memory on the CUDA device: host code must never dereference it.
struct device_space {
  static constexpr std::string_view name = "cuda";
};

using stream_t = CUstream_st*;
using cublas_handle_t = cublasContext*;
using cusolver_handle_t = cusolverDnContext*;

}  // namespace yaqa::cuda
