#pragma once
//! \file
//! The NCCL umbrella: the CUDA library plus the NCCL transport of the device reductions
//! (docs/distributed.md). Usable only through the yaqa::nccl CMake target, which defines
//! YAQA_HAS_NCCL and links NCCL.
//! - nccl::communicator: a checked ncclComm_t wrapper (nccl_error names the call and rank);
//! - cuda::reduce / allreduce for cuda::second_moment and cuda::sketch_b, and Sketch A's pass
//!   protocol (reduce_pass / allreduce_pass / end_pass), in rank order, bitwise reproducible:
//!   the same functions as yaqa::mpi's for the CPU accumulators.
#if !defined(YAQA_HAS_NCCL)
#error "<yaqa/nccl.hpp> needs the yaqa::nccl target (YAQA_HAS_NCCL); link yaqa::nccl"
#endif
#include <yaqa/cuda.hpp>

#include <yaqa/backend/cuda/distributed.hpp>
#include <yaqa/nccl/communicator.hpp>
#if defined(YAQA_HAS_MPI)
#include <yaqa/nccl/mpi_bootstrap.hpp>
#endif
