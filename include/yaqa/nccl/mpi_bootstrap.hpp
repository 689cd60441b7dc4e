#pragma once
//! \file
//! init_with_mpi: one NCCL communicator over the ranks of an MPI communicator (rank 0 makes the
//! unique id, MPI broadcasts it, every rank joins on its current CUDA device). Needs both the
//! yaqa::nccl and yaqa::mpi targets; call cudaSetDevice (e.g. to the node-local rank) first.
#if !defined(YAQA_HAS_NCCL) || !defined(YAQA_HAS_MPI)
#error "<yaqa/nccl/mpi_bootstrap.hpp> needs the yaqa::nccl and yaqa::mpi targets"
#endif
#include <cstring>
#include <vector>

#include <yaqa/mpi/communicator.hpp>
#include <yaqa/nccl/communicator.hpp>

namespace yaqa::nccl {

inline communicator init_with_mpi(const mpi::communicator& world) {
  ncclUniqueId id{};
  std::vector<std::byte> bytes;
  if (world.rank() == 0) {
    id = unique_id();
    bytes.resize(sizeof(id));
    std::memcpy(bytes.data(), &id, sizeof(id));
  }
  world.broadcast_bytes(bytes, 0);
  std::memcpy(&id, bytes.data(), sizeof(id));
  return communicator::init(id, world.size(), world.rank());
}

}  // namespace yaqa::nccl
