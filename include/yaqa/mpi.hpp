#pragma once
//! \file
//! The MPI umbrella: the CPU library plus yaqa::mpi (docs/distributed.md). Usable only through the
//! yaqa::mpi CMake target, which defines YAQA_HAS_MPI and links MPI's C library.
//! - communicator: a checked, non-owning MPI_Comm wrapper (mpi_error names the call and rank).
//! - reduce / allreduce for second_moment, diagonal_second_moment and sketch_b, and Sketch A's
//!   pass protocol (reduce_pass / allreduce_pass / end_pass), all in rank order, bitwise
//!   reproducible.
#if !defined(YAQA_HAS_MPI)
#error "<yaqa/mpi.hpp> needs the yaqa::mpi target (YAQA_HAS_MPI); link yaqa::mpi or include <yaqa/yaqa.hpp>"
#endif
#include <yaqa/yaqa.hpp>

#include <yaqa/mpi/accumulators.hpp>
#include <yaqa/mpi/communicator.hpp>
