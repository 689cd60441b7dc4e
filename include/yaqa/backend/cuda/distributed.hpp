#pragma once
//! \file
//! Reductions of the device Hessian accumulators (cuda::second_moment, sketch_b, sketch_a's pass
//! sums) across ranks, one GPU each, in a deterministic order: the device counterpart of
//! <yaqa/mpi/accumulators.hpp>, with the same functions and guarantees.
//!
//! - reduce(comm, acc, root): root's sums become rank 0's + rank 1's + ... in rank order (the
//!   elementwise sum merge() forms, cublas<t>geam), whatever the root. Other ranks unchanged.
//! - allreduce(comm, acc): the same bits on every rank (reduce to rank 0, then broadcast).
//! - sketch_a: reduce_pass / allreduce_pass sum the open pass; end_pass(comm, s) is
//!   allreduce_pass then s.end_pass() on every rank, so every rank begins the next pass from the
//!   identical factor.
//!
//! Why not ncclAllReduce: its order of additions depends on the algorithm NCCL picks (ring, tree)
//! and on the topology, so the bits could change between machines or rank counts. Here the root
//! receives every rank's sums (point to point) and adds them in rank order. Traffic: each
//! non-root rank sends its sums once (n^2 T per n x n factor); allreduce broadcasts them once
//! more. The root's adds are sequential: O(ranks x state) time; memory: 2 extra states on the
//! root (the received one and, when root != 0, the running total).
//!
//! Before any sum moves, the ranks all-gather a record of their shapes and counts; every rank
//! throws the same error (the communicator's error_type) naming the first rank that differs
//! from rank 0, so no rank is left waiting in a transfer.
//!
//! The communicator is any type modelling device_communicator: yaqa::nccl::communicator
//! (<yaqa/nccl.hpp>) in real runs, or a test transport. Host-side calls only: g++ compiles it.
#if !defined(YAQA_HAS_CUDA)
#error "backend/cuda/distributed.hpp needs the yaqa::cuda target (YAQA_HAS_CUDA)"
#endif
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <yaqa/backend/cuda/memory.hpp>
#include <yaqa/backend/cuda/sketch.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/hessian/state.hpp>

namespace yaqa::cuda {

//! A group of ranks that moves device bytes, each transfer queued on the given stream:
//! - all_gather(send, recv, bytes, s): recv[r * bytes ...] = rank r's send bytes, every rank;
//! - send(p, bytes, peer, s) / recv(p, bytes, peer, s): point to point, matched in call order;
//! - broadcast(p, bytes, root, s): root's bytes to every rank, in place;
//! - error_type: what a disagreement between ranks throws (derived from yaqa::error).
template <class C>
concept device_communicator =
    std::derived_from<typename C::error_type, error> &&
    requires(const C& c, const std::byte* in, std::byte* out, std::size_t bytes, int peer, stream_t s) {
      { c.rank() } -> std::convertible_to<int>;
      { c.size() } -> std::convertible_to<int>;
      c.all_gather(in, out, bytes, s);
      c.send(in, bytes, peer, s);
      c.recv(out, bytes, peer, s);
      c.broadcast(out, bytes, peer, s);
    };

namespace detail::sketch {

using yaqa::detail::hessian::state_shape;

//! What every rank of one reduction must agree on (the CPU accumulators' state_shape: kind,
//! scalar size, n, m, Sketch A's pass and factor hash) and its counts (summed, not compared).
struct device_record {
  state_shape shape;
  std::int64_t counts[3] = {0, 0, 0};
};

template <class T>
struct state_access<second_moment<T>> {
  using A = second_moment<T>;
  static device_record record(const A& a) { return {{1, sizeof(T), a.n_, 0, 0, 0, 0, 0}, {a.count_, a.batches_, 0}}; }
  static void set_counts(A& a, const std::int64_t (&c)[3]) {
    a.count_ = c[0];
    a.batches_ = c[1];
  }
  static std::vector<device_matrix<T>*> sums(A& a) { return {&a.sum_}; }
};

template <class T>
struct state_access<sketch_b<T>> {
  using A = sketch_b<T>;
  static device_record record(const A& a) {
    return {{4, sizeof(T), a.n_, a.m_, 0, 0, 0, 0}, {a.count_, a.tokens_, a.sequences_seen_}};
  }
  static void set_counts(A& a, const std::int64_t (&c)[3]) {
    a.count_ = c[0];
    a.tokens_ = c[1];
    a.sequences_seen_ = c[2];
  }
  static std::vector<device_matrix<T>*> sums(A& a) { return {&a.sum_in_, &a.sum_out_}; }
};

//! Sketch A: the open pass's sum. A pass whose previous factor is zero accumulates nothing
//! (prev_zero_, the same on every rank since the factors agree): only its counts are reduced.
template <class T>
struct state_access<sketch_a<T>> {
  using A = sketch_a<T>;
  static device_record record(const A& a) {
    using yaqa::detail::hessian::fnv1a;
    std::uint64_t h = fnv1a(a.h_in_.data(), std::size_t(a.h_in_.size()) * sizeof(T));
    h = fnv1a(a.h_out_.data(), std::size_t(a.h_out_.size()) * sizeof(T), h);
    return {{3, sizeof(T), a.n_, a.m_, a.passes_, a.completed_, a.in_pass_ ? 1 : 0, h}, {a.count_, a.batches_, 0}};
  }
  static void set_counts(A& a, const std::int64_t (&c)[3]) {
    a.count_ = c[0];
    a.batches_ = c[1];
  }
  static std::vector<device_matrix<T>*> sums(A& a) {
    if (a.prev_zero_) return {};
    return {&a.acc_};
  }
};

//! Every rank's record, by rank (one all_gather of the fixed-size records through the device).
template <device_communicator C>
std::vector<device_record> gather_records(const C& comm, const cuda_backend& b, const device_record& mine) {
  const std::size_t bytes = sizeof(device_record);
  const std::size_t ranks = static_cast<std::size_t>(comm.size());
  device_buffer<std::byte> in(b, index(bytes)), out(b, index(bytes * ranks));
  yaqa::cuda::copy_to_device(b, reinterpret_cast<const std::byte*>(&mine), in.data(), index(bytes));
  comm.all_gather(in.data(), out.data(), bytes, b.stream());
  std::vector<device_record> all(ranks);
  yaqa::cuda::copy_to_host(b, out.data(), reinterpret_cast<std::byte*>(all.data()), index(bytes * ranks));
  return all;
}

//! Throws C::error_type on every rank when some rank's shape differs from rank 0's; returns the
//! records.
template <device_communicator C>
std::vector<device_record> require_same_shape(const C& comm, const cuda_backend& b, const device_record& mine,
                                              const char* what) {
  std::vector<device_record> all = gather_records(comm, b, mine);
  const state_shape& s0 = all.front().shape;
  for (std::size_t r = 1; r < all.size(); ++r) {
    const state_shape& s = all[r].shape;
    if (s == s0) continue;
    const std::string field = yaqa::detail::hessian::shape_mismatch(s, s0, "cuda::");
    throw typename C::error_type(yaqa::detail::concat(what, ": rank ", r, " of ", all.size(), " has ", field,
                                                      "; every rank must pass the same accumulator shape"));
  }
  return all;
}

template <class T>
std::size_t bytes_of(const device_matrix<T>& d) {
  return static_cast<std::size_t>(d.rows()) * static_cast<std::size_t>(d.cols()) * sizeof(T);
}
template <class T>
std::byte* raw(const device_matrix<T>& d) {
  return reinterpret_cast<std::byte*>(d.data());
}

//! Adds up the counts of every rank's record.
inline void total_counts(const std::vector<device_record>& all, std::int64_t (&counts)[3]) {
  for (int i = 0; i < 3; ++i) counts[i] = 0;
  for (const device_record& rec : all)
    for (int i = 0; i < 3; ++i) counts[i] += rec.counts[i];
}

//! reduce(); returns every rank's record (their counts, before the reduction).
template <device_communicator C, class A>
std::vector<device_record> reduce(const C& comm, A& acc, int root, const char* what) {
  using S = state_access<A>;
  using T = typename A::value_type;
  const cuda_backend& b = acc.backend();
  std::vector<device_record> all = require_same_shape(comm, b, S::record(acc), what);
  if constexpr (requires { acc.in_pass(); })
    yaqa::detail::require<invalid_argument>(acc.in_pass(), what, ": rank ", comm.rank(), " of ", comm.size(),
                                            " has no pass open (", acc.pass(), " of ", acc.passes(),
                                            " done); call begin_pass() and add() the shard first");
  yaqa::detail::require<invalid_argument>(root >= 0 && root < comm.size(), what, ": argument 'root' is ", root,
                                          "; expected a rank in [0, ", comm.size(), ")");
  const std::vector<device_matrix<T>*> sums = S::sums(acc);
  if (comm.rank() != root) {
    for (device_matrix<T>* d : sums) comm.send(raw(*d), bytes_of(*d), root, b.stream());
    b.synchronize();  // the caller may overwrite the sums after we return
    return all;
  }
  for (device_matrix<T>* d : sums) {
    // total = rank 0's sum, then += rank 1's, 2's, ... (the root's own in its place), the
    // elementwise order merge() uses. All on b's stream, so `part` is reused in order.
    device_matrix<T> part(b, d->rows(), d->cols());
    device_matrix<T> total_buf;
    if (root != 0) total_buf = device_matrix<T>(b, d->rows(), d->cols());
    device_matrix<T>& total = root == 0 ? *d : total_buf;
    if (root != 0) comm.recv(raw(total), bytes_of(total), 0, b.stream());
    for (int r = 1; r < comm.size(); ++r) {
      if (r != root) comm.recv(raw(part), bytes_of(part), r, b.stream());
      add_into<T>(b, r == root ? d->cview() : part.cview(), total.view(), what);
    }
    if (root != 0) copy<T>(b, total.cview(), d->view());
  }
  std::int64_t counts[3];
  total_counts(all, counts);
  S::set_counts(acc, counts);
  b.synchronize();  // the sums are final when we return
  return all;
}

template <device_communicator C, class A>
void allreduce(const C& comm, A& acc, const char* what) {
  using S = state_access<A>;
  const std::vector<device_record> all = reduce(comm, acc, 0, what);
  const cuda_backend& b = acc.backend();
  for (auto* d : S::sums(acc)) comm.broadcast(raw(*d), bytes_of(*d), 0, b.stream());
  std::int64_t counts[3];
  total_counts(all, counts);  // the same records on every rank: the same totals
  S::set_counts(acc, counts);
  b.synchronize();
}

}  // namespace detail::sketch

//! A device accumulator whose whole sums are reduced: cuda::second_moment, cuda::sketch_b (Sketch
//! A is reduced pass by pass, below).
template <class A>
concept whole_state_accumulator = requires(const A& a) {
  { detail::sketch::state_access<A>::record(a) } -> std::same_as<detail::sketch::device_record>;
} && !requires(const A& a) { a.in_pass(); };

namespace detail::sketch {
template <class A>
std::string call_name(const char* fn, const A& acc) {
  return yaqa::detail::concat("yaqa::cuda::", fn, "(",
                              yaqa::detail::hessian::state_kind_name(state_access<A>::record(acc).shape.kind), ")");
}
}  // namespace detail::sketch

//! Sums the accumulator over the ranks into root's (rank order; other ranks unchanged).
template <device_communicator C, whole_state_accumulator A>
void reduce(const C& comm, A& acc, int root = 0) {
  detail::sketch::reduce(comm, acc, root, detail::sketch::call_name("reduce", acc).c_str());
}
//! The same sum on every rank, the same bits.
template <device_communicator C, whole_state_accumulator A>
void allreduce(const C& comm, A& acc) {
  detail::sketch::allreduce(comm, acc, detail::sketch::call_name("allreduce", acc).c_str());
}
//! Sums the open pass of Sketch A into root's sketch; the pass stays open. Every rank must have
//! the same pass open, begun from the same factors.
template <device_communicator C, class T>
void reduce_pass(const C& comm, sketch_a<T>& s, int root = 0) {
  detail::sketch::reduce(comm, s, root, "yaqa::cuda::reduce_pass(sketch_a)");
}
template <device_communicator C, class T>
void allreduce_pass(const C& comm, sketch_a<T>& s) {
  detail::sketch::allreduce(comm, s, "yaqa::cuda::allreduce_pass(sketch_a)");
}
//! allreduce_pass, then end_pass() on every rank: the identical next factor everywhere.
template <device_communicator C, class T>
void end_pass(const C& comm, sketch_a<T>& s) {
  allreduce_pass(comm, s);
  s.end_pass();
}

}  // namespace yaqa::cuda
