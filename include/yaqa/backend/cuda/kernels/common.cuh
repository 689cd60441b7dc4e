#pragma once
//! \file
//! Small device helpers shared by the kernels: launch geometry, IEEE-exact arithmetic wrappers
//! (so nvcc never contracts a product into an FMA where the CPU code rounds it separately), and
//! the launch check.
#if !defined(__CUDACC__)
#error "yaqa/backend/cuda/kernels/*.cuh contain CUDA kernels: include <yaqa/cuda.hpp> from a .cu file"
#endif
#include <algorithm>
#include <type_traits>

#include <cuda_runtime.h>

#include <yaqa/backend/cuda/backend.hpp>
#include <yaqa/core/config.hpp>

namespace yaqa::cuda::detail {

inline constexpr int threads_per_block = 256;

//! Blocks for a grid-stride loop over `total` items (capped: the loops cover the rest).
inline unsigned blocks_for(index total, int threads = threads_per_block) {
  const index b = (total + threads - 1) / threads;
  return static_cast<unsigned>(std::clamp<index>(b, 1, index(1) << 20));
}

//! Throws cuda_error (with the status name) if the last launch failed.
inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

template <class T>
__device__ inline T mul_rn(T a, T b) {
  if constexpr (std::is_same_v<T, float>) return __fmul_rn(a, b);
  else return __dmul_rn(a, b);
}
template <class T>
__device__ inline T div_rn(T a, T b) {
  if constexpr (std::is_same_v<T, float>) return __fdiv_rn(a, b);
  else return __ddiv_rn(a, b);
}
template <class T>
__device__ inline T add_rn(T a, T b) {
  if constexpr (std::is_same_v<T, float>) return __fadd_rn(a, b);
  else return __dadd_rn(a, b);
}
template <class T>
__device__ inline T sub_rn(T a, T b) {
  if constexpr (std::is_same_v<T, float>) return __fsub_rn(a, b);
  else return __dsub_rn(a, b);
}
//! Round to nearest integer, ties to even (std::nearbyint in the default rounding mode).
template <class T>
__device__ inline T round_even(T x) {
  if constexpr (std::is_same_v<T, float>) return rintf(x);
  else return rint(x);
}
template <class T>
__device__ inline bool finite(T x) {
  return isfinite(x);
}

}  // namespace yaqa::cuda::detail
