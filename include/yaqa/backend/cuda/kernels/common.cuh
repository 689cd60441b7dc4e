#pragma once
//! \file
//! Small device helpers shared by the kernels: launch geometry and the launch check. The
//! IEEE-exact arithmetic wrappers live in device_math.hpp (host-compilable).
#if !defined(__CUDACC__)
#error "yaqa/backend/cuda/kernels/*.cuh contain CUDA kernels: include <yaqa/cuda.hpp> from a .cu file"
#endif
#include <algorithm>
#include <type_traits>

#include <cuda_runtime.h>

#include <yaqa/backend/cuda/backend.hpp>
#include <yaqa/backend/cuda/kernels/device_math.hpp>  // mul_rn, div_rn, ... (host and device)
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

}  // namespace yaqa::cuda::detail
