#pragma once
//! \file
//! The CUDA umbrella: the CPU library plus the CUDA backend. Usable only through the yaqa::cuda
//! CMake target, which defines YAQA_HAS_CUDA and links cudart, cuBLAS and cuSOLVER.
//! - Any compiler: cuda_backend, device buffers and copies, backend_ops<cuda_backend>
//!   (cuBLAS / cuSOLVER calls), and the device Hessian accumulators cuda::second_moment,
//!   cuda::sketch_a and cuda::sketch_b (cuBLAS only), and their rank-order reductions over any
//!   device_communicator (cuda::reduce / allreduce / end_pass; NCCL's in <yaqa/nccl.hpp>).
//! - nvcc only (a .cu file): the kernels, i.e. hadamard_apply, the int_grid quantize kernel,
//!   yaqa::cuda::yaqa_round / ldlq / gptq, and the trellis quantize / reconstruct (docs/cuda.md).
#if !defined(YAQA_HAS_CUDA)
#error "<yaqa/cuda.hpp> needs the yaqa::cuda target (YAQA_HAS_CUDA); link yaqa::cuda or include <yaqa/yaqa.hpp>"
#endif
#include <yaqa/yaqa.hpp>

#include <yaqa/backend/cuda/backend.hpp>
#include <yaqa/backend/cuda/distributed.hpp>
#include <yaqa/backend/cuda/memory.hpp>
#include <yaqa/backend/cuda/ops.hpp>
#include <yaqa/backend/cuda/sketch.hpp>

#if defined(__CUDACC__)
#include <yaqa/backend/cuda/kernels/common.cuh>
#include <yaqa/backend/cuda/kernels/hadamard.cuh>
#include <yaqa/backend/cuda/kernels/int_grid.cuh>
#include <yaqa/backend/cuda/kernels/rounding.cuh>
#include <yaqa/backend/cuda/kernels/gptq.cuh>
#include <yaqa/backend/cuda/kernels/trellis.cuh>
#endif
