#pragma once
//! \file
//! yaqa::mpi::communicator: a thin, non-owning wrapper of an MPI_Comm with the few transfers the
//! reductions need (bytes point to point, broadcast, all-gather of fixed-size records), each
//! checked: a failed MPI call throws mpi_error naming the call and the rank.
//! - Non-owning: the caller creates, frees and MPI_Init/MPI_Finalize as usual.
//! - MPI reports errors to the caller only under MPI_ERRORS_RETURN; with the default
//!   MPI_ERRORS_ARE_FATAL the job aborts inside MPI before any mpi_error can be thrown.
//! - Messages of any size: transfers are split into chunks of at most 1 GiB (MPI counts are int).
#if !defined(YAQA_HAS_MPI)
#error "<yaqa/mpi/communicator.hpp> needs the yaqa::mpi target (YAQA_HAS_MPI); link yaqa::mpi"
#endif
#include <mpi.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <yaqa/core/error.hpp>

namespace yaqa {

//! An MPI call failed, or the ranks of a collective disagree (shapes, counts, pass); the message
//! names the call or the mismatch and the rank.
class mpi_error : public error {
 public:
  using error::error;
};

namespace mpi {

class communicator {
 public:
  //! Wraps `comm` (not duplicated, not freed). Throws mpi_error when MPI is not initialized.
  explicit communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    int init = 0;
    MPI_Initialized(&init);
    detail::require<mpi_error>(init != 0, "yaqa::mpi::communicator: MPI is not initialized; call "
                                          "MPI_Init (or MPI_Init_thread) first");
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }

  [[nodiscard]] MPI_Comm get() const { return comm_; }
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }

  //! Throws mpi_error for a return code other than MPI_SUCCESS, naming `call` and this rank.
  void check(int rc, const char* call) const {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING] = {};
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw mpi_error(detail::concat("yaqa::mpi: ", call, " failed on rank ", rank_, " of ", size_, ": ",
                                   std::string(text, std::size_t(std::max(len, 0)))));
  }

  void barrier() const { check(MPI_Barrier(comm_), "MPI_Barrier"); }

  //! Sends `bytes` to `dest` (its size first, then chunks); pairs with recv_bytes.
  void send_bytes(std::span<const std::byte> bytes, int dest, int tag) const {
    const std::uint64_t n = bytes.size();
    check(MPI_Send(&n, 1, MPI_UINT64_T, dest, tag, comm_), "MPI_Send");
    for (std::uint64_t at = 0; at < n; at += chunk)
      check(MPI_Send(bytes.data() + at, int(std::min<std::uint64_t>(chunk, n - at)), MPI_BYTE, dest, tag, comm_),
            "MPI_Send");
  }
  [[nodiscard]] std::vector<std::byte> recv_bytes(int source, int tag) const {
    std::uint64_t n = 0;
    check(MPI_Recv(&n, 1, MPI_UINT64_T, source, tag, comm_, MPI_STATUS_IGNORE), "MPI_Recv");
    std::vector<std::byte> b(n);
    for (std::uint64_t at = 0; at < n; at += chunk)
      check(MPI_Recv(b.data() + at, int(std::min<std::uint64_t>(chunk, n - at)), MPI_BYTE, source, tag, comm_,
                     MPI_STATUS_IGNORE),
            "MPI_Recv");
    return b;
  }

  //! Root's `bytes` to every rank (resized on the others).
  void broadcast_bytes(std::vector<std::byte>& bytes, int root) const {
    std::uint64_t n = bytes.size();
    check(MPI_Bcast(&n, 1, MPI_UINT64_T, root, comm_), "MPI_Bcast");
    bytes.resize(n);
    for (std::uint64_t at = 0; at < n; at += chunk)
      check(MPI_Bcast(bytes.data() + at, int(std::min<std::uint64_t>(chunk, n - at)), MPI_BYTE, root, comm_),
            "MPI_Bcast");
  }
  void broadcast_string(std::string& s, int root) const {
    std::vector<std::byte> b(s.size());
    std::memcpy(b.data(), s.data(), s.size());
    broadcast_bytes(b, root);
    s.assign(reinterpret_cast<const char*>(b.data()), b.size());
  }

  //! Every rank's `v`, indexed by rank (a trivially copyable record, sent as bytes).
  template <class T>
  [[nodiscard]] std::vector<T> all_gather(const T& v) const {
    static_assert(std::is_trivially_copyable_v<T>);
    std::vector<T> all(static_cast<std::size_t>(size_));
    check(MPI_Allgather(&v, int(sizeof(T)), MPI_BYTE, all.data(), int(sizeof(T)), MPI_BYTE, comm_),
          "MPI_Allgather");
    return all;
  }

 private:
  static constexpr std::uint64_t chunk = std::uint64_t(1) << 30;
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace mpi
}  // namespace yaqa
