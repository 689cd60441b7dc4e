#pragma once
//! \file
//! Reductions of the Hessian accumulators over an MPI communicator, in a deterministic order.
//!
//! - reduce(comm, acc, root): root's acc becomes rank 0's acc merged with rank 1's, then 2's...
//!   (the accumulator's own merge(), in rank order, whatever the root). Other ranks unchanged.
//! - allreduce(comm, acc): the same sum on every rank (reduced to rank 0, then broadcast).
//! - sketch_a: every rank begin_pass()es and add()s its shard; end_pass(comm, s) sums the pass
//!   (merge_pass() in rank order) on every rank and ends it there, so every rank starts the next
//!   pass from the identical factor. allreduce_pass / reduce_pass do the sum only.
//!
//! Why not MPI_Reduce with MPI_SUM: its order of additions is the implementation's, so the bits
//! could change with the rank count's factorization or the library. Here the root receives each
//! rank's serialized state (<yaqa/hessian/state.hpp>) in rank order and merges it, so the result
//! is bitwise the single-process merge of the per-rank accumulators. Traffic: every non-root rank
//! sends one state (the packed sums: n(n+1)/2 Acc per factor) to the root, then for allreduce the
//! root broadcasts one. The root's merge is sequential: O(ranks x state) time, 3 states of memory.
//!
//! Before any data moves, the ranks all-gather their shapes (kind, Acc, n, m, Sketch A's pass and
//! a hash of its factors) and every rank throws the same mpi_error naming the first rank that
//! disagrees with rank 0, so no rank is left waiting in a collective.
#include <concepts>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <yaqa/hessian/state.hpp>
#include <yaqa/mpi/communicator.hpp>

namespace yaqa::mpi {
namespace detail {

using yaqa::detail::hessian::state_access;
using yaqa::detail::hessian::state_shape;

inline constexpr int state_tag = 7101;

//! Throws mpi_error on every rank when some rank's shape differs from rank 0's.
inline void require_same_shape(const communicator& comm, const state_shape& mine, const char* what) {
  const std::vector<state_shape> all = comm.all_gather(mine);
  const state_shape& s0 = all.front();
  for (std::size_t r = 1; r < all.size(); ++r) {
    const state_shape& s = all[r];
    if (s == s0) continue;
    const std::string field = yaqa::detail::hessian::shape_mismatch(s, s0);
    throw mpi_error(yaqa::detail::concat(what, ": rank ", r, " of ", all.size(), " has ", field,
                                         "; every rank must pass the same accumulator shape"));
  }
}

//! Root: acc = merge of every rank's state in rank order. Others: send theirs.
template <class A>
void reduce_to(const communicator& comm, A& acc, int root) {
  using S = state_access<A>;
  if (comm.rank() != root) {
    const std::vector<std::byte> mine = S::save(acc);
    comm.send_bytes(mine, root, state_tag);
    return;
  }
  A total = acc;  // same shape and (Sketch A) factors; its sums are overwritten with rank 0's
  A part = acc;
  for (int r = 0; r < comm.size(); ++r) {
    A& dst = r == 0 ? total : part;
    if (r == root)
      dst = acc;
    else
      S::load(dst, comm.recv_bytes(r, state_tag));
    if (r > 0) S::merge(total, part);
  }
  acc = std::move(total);
}

template <class Acc, class B>
void require_open_pass(const communicator& comm, const sketch_a<Acc, B>& s, const char* what) {
  // After the shape check (all ranks agree), so every rank throws this together.
  yaqa::detail::require<invalid_argument>(s.in_pass(), what, ": rank ", comm.rank(), " of ", comm.size(),
                                          " has no pass open (", s.pass(), " of ", s.passes(),
                                          " done); call begin_pass() and add() the shard first");
}

template <class A>
void reduce(const communicator& comm, A& acc, int root, const char* what) {
  require_same_shape(comm, state_access<A>::shape(acc), what);
  if constexpr (requires { acc.in_pass(); }) require_open_pass(comm, acc, what);
  yaqa::detail::require<invalid_argument>(root >= 0 && root < comm.size(), what, ": argument 'root' is ",
                                          root, "; expected a rank in [0, ", comm.size(), ")");
  reduce_to(comm, acc, root);
}

template <class A>
void allreduce(const communicator& comm, A& acc, const char* what) {
  reduce(comm, acc, 0, what);
  std::vector<std::byte> bytes;
  if (comm.rank() == 0) bytes = state_access<A>::save(acc);
  comm.broadcast_bytes(bytes, 0);
  if (comm.rank() != 0) state_access<A>::load(acc, bytes);
}

}  // namespace detail

//! An accumulator whose whole state is reduced: second_moment, diagonal_second_moment, sketch_b
//! (Sketch A is reduced pass by pass, below).
template <class A>
concept whole_state_accumulator = requires(const A& a) {
  { detail::state_access<A>::shape(a) } -> std::same_as<detail::state_shape>;
} && !requires(const A& a) { a.in_pass(); };

namespace detail {
template <class A>
std::string call_name(const char* fn, const A& acc) {
  return yaqa::detail::concat("yaqa::mpi::", fn, "(",
                              yaqa::detail::hessian::state_kind_name(state_access<A>::shape(acc).kind), ")");
}
}  // namespace detail

//! Sums the accumulator over the ranks into root's (rank order; other ranks unchanged).
template <whole_state_accumulator A>
void reduce(const communicator& comm, A& acc, int root = 0) {
  detail::reduce(comm, acc, root, detail::call_name("reduce", acc).c_str());
}
//! Sums the accumulator over the ranks, the same bits on every rank.
template <whole_state_accumulator A>
void allreduce(const communicator& comm, A& acc) {
  detail::allreduce(comm, acc, detail::call_name("allreduce", acc).c_str());
}

//! Sums the open pass of Sketch A into root's sketch (merge_pass() in rank order); the pass stays
//! open. Every rank must have the same pass open, begun from the same factors.
template <Scalar Acc, class B>
void reduce_pass(const communicator& comm, sketch_a<Acc, B>& s, int root = 0) {
  detail::reduce(comm, s, root, "yaqa::mpi::reduce_pass(sketch_a)");
}
//! The same pass sums on every rank; the pass stays open.
template <Scalar Acc, class B>
void allreduce_pass(const communicator& comm, sketch_a<Acc, B>& s) {
  detail::allreduce(comm, s, "yaqa::mpi::allreduce_pass(sketch_a)");
}
//! allreduce_pass, then end_pass() on every rank: the identical next factor everywhere (and the
//! same exception everywhere when the pass saw no token or overflowed).
template <Scalar Acc, class B>
void end_pass(const communicator& comm, sketch_a<Acc, B>& s) {
  allreduce_pass(comm, s);
  s.end_pass();
}

}  // namespace yaqa::mpi
