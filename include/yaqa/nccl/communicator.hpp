#pragma once
//! \file
//! yaqa::nccl::communicator: a checked wrapper of an ncclComm_t (one rank per GPU) with the
//! byte transfers the device reductions need (yaqa::cuda::device_communicator: all-gather,
//! send / recv, broadcast), each queued on the caller's stream. A failed NCCL call throws
//! nccl_error naming the call, the rank and NCCL's own message.
//! - wrap(comm): non-owning, for a communicator the application already has (from torch,
//!   another library, ncclCommInitAll ...).
//! - init(id, size, rank): creates and owns one (ncclCommInitRank on the current device; every
//!   rank calls it with the same id, made once by unique_id() and shared out of band, e.g. by
//!   init_with_mpi in <yaqa/nccl/mpi_bootstrap.hpp>).
//! NCCL allows one rank per GPU in a communicator ("Duplicate GPU detected" otherwise).
#if !defined(YAQA_HAS_NCCL)
#error "<yaqa/nccl/communicator.hpp> needs the yaqa::nccl target (YAQA_HAS_NCCL); link yaqa::nccl"
#endif
#include <nccl.h>

#include <cstddef>
#include <string>
#include <utility>

#include <yaqa/backend/cuda/backend.hpp>
#include <yaqa/core/error.hpp>

namespace yaqa {

//! An NCCL call failed, or the ranks of a device reduction disagree (shapes, counts, pass); the
//! message names the call or the mismatch and the rank.
class nccl_error : public error {
 public:
  using error::error;
};

namespace nccl {

//! A new unique id (ncclGetUniqueId): made on one rank, then given to every rank's init().
inline ncclUniqueId unique_id() {
  ncclUniqueId id;
  const ncclResult_t r = ncclGetUniqueId(&id);
  if (r != ncclSuccess)
    throw nccl_error(yaqa::detail::concat("yaqa::nccl::unique_id: ncclGetUniqueId failed: ",
                                          ncclGetErrorString(r)));
  return id;
}

class communicator {
 public:
  using error_type = nccl_error;

  //! Wraps `comm` (not destroyed here). Throws nccl_error when it is null or NCCL rejects it.
  static communicator wrap(ncclComm_t comm) { return communicator(comm, false); }

  //! Creates rank `rank` of `size` on the current CUDA device (collective: every rank calls it
  //! with the same id) and owns it. Throws invalid_argument for a rank outside [0, size).
  static communicator init(const ncclUniqueId& id, int size, int rank) {
    yaqa::detail::require<invalid_argument>(size >= 1 && rank >= 0 && rank < size,
                                            "yaqa::nccl::communicator::init: argument 'rank' is ", rank,
                                            " and 'size' ", size, "; expected 0 <= rank < size");
    ncclComm_t c = nullptr;
    const ncclResult_t r = ncclCommInitRank(&c, size, id, rank);
    if (r != ncclSuccess)
      throw nccl_error(yaqa::detail::concat("yaqa::nccl: ncclCommInitRank failed on rank ", rank, " of ", size,
                                            ": ", ncclGetErrorString(r)));
    return communicator(c, true);
  }

  communicator(communicator&& o) noexcept
      : comm_(std::exchange(o.comm_, nullptr)), owned_(std::exchange(o.owned_, false)), rank_(o.rank_),
        size_(o.size_) {}
  communicator& operator=(communicator&& o) noexcept {
    if (this != &o) {
      release();
      comm_ = std::exchange(o.comm_, nullptr);
      owned_ = std::exchange(o.owned_, false);
      rank_ = o.rank_;
      size_ = o.size_;
    }
    return *this;
  }
  communicator(const communicator&) = delete;
  communicator& operator=(const communicator&) = delete;
  ~communicator() { release(); }

  [[nodiscard]] ncclComm_t get() const { return comm_; }
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }

  //! Throws nccl_error for a result other than ncclSuccess, naming `call`, this rank and NCCL's
  //! last error text.
  void check(ncclResult_t r, const char* call) const {
    if (r == ncclSuccess) return;
    const char* last = comm_ ? ncclGetLastError(comm_) : nullptr;
    throw nccl_error(yaqa::detail::concat("yaqa::nccl: ", call, " failed on rank ", rank_, " of ", size_, ": ",
                                          ncclGetErrorString(r), last && *last ? " (" : "",
                                          last && *last ? last : "", last && *last ? ")" : ""));
  }

  //! recv[r * bytes, (r + 1) * bytes) = rank r's `send` (device memory), on stream s.
  void all_gather(const std::byte* send, std::byte* recv, std::size_t bytes, cudaStream_t s) const {
    check(ncclAllGather(send, recv, bytes, ncclUint8, comm_, s), "ncclAllGather");
  }
  void send(const std::byte* p, std::size_t bytes, int peer, cudaStream_t s) const {
    check(ncclSend(p, bytes, ncclUint8, peer, comm_, s), "ncclSend");
  }
  void recv(std::byte* p, std::size_t bytes, int peer, cudaStream_t s) const {
    check(ncclRecv(p, bytes, ncclUint8, peer, comm_, s), "ncclRecv");
  }
  //! Root's bytes at p to every rank's p (in place).
  void broadcast(std::byte* p, std::size_t bytes, int root, cudaStream_t s) const {
    check(ncclBroadcast(p, p, bytes, ncclUint8, root, comm_, s), "ncclBroadcast");
  }

 private:
  communicator(ncclComm_t comm, bool owned) : comm_(comm), owned_(owned) {
    yaqa::detail::require<invalid_argument>(comm != nullptr, "yaqa::nccl::communicator: argument 'comm' is null");
    check(ncclCommUserRank(comm_, &rank_), "ncclCommUserRank");
    check(ncclCommCount(comm_, &size_), "ncclCommCount");
  }
  void release() noexcept {
    if (owned_ && comm_) ncclCommDestroy(comm_);
    comm_ = nullptr;
    owned_ = false;
  }
  ncclComm_t comm_ = nullptr;
  bool owned_ = false;
  int rank_ = 0, size_ = 1;
};

}  // namespace nccl
}  // namespace yaqa
