#pragma once
//! \file
//! The partial state of each Hessian accumulator as bytes, for reductions across processes
//! (<yaqa/mpi.hpp>): what two shards must agree on (state_shape), what differs between them
//! (save / load: sums and counts), and how two shards combine (the accumulator's own merge()).
//! - The bytes are raw host-endian Acc values: for processes of one run on one kind of machine,
//!   not a file format (files go through safetensors, docs/hessians.md).
//! - Sketch A's factors are not in the bytes (every worker starts a pass from the same ones);
//!   state_shape carries a hash of them so that workers on different factors are caught.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include <yaqa/core/error.hpp>
#include <yaqa/hessian/accumulator.hpp>
#include <yaqa/hessian/diagonal.hpp>
#include <yaqa/hessian/kronecker_sketch.hpp>
#include <yaqa/hessian/packed_symmetric.hpp>

namespace yaqa::detail::hessian {

//! What every shard of one reduction must agree on (fixed size, compared field by field).
struct state_shape {
  std::int64_t kind = 0;      //!< 1 second_moment, 2 diagonal, 3 sketch_a pass, 4 sketch_b
  std::int64_t acc_size = 0;  //!< sizeof(Acc)
  std::int64_t n = 0, m = 0;
  std::int64_t passes = 0, pass = 0, in_pass = 0;  //!< sketch_a only
  std::uint64_t factors = 0;                       //!< sketch_a: hash of H_in and H_out
  friend bool operator==(const state_shape&, const state_shape&) = default;
};

inline const char* state_kind_name(std::int64_t k) {
  switch (k) {
    case 1: return "second_moment";
    case 2: return "diagonal_second_moment";
    case 3: return "sketch_a";
    case 4: return "sketch_b";
    default: return "unknown";
  }
}

//! FNV-1a over raw bytes: equal factors give equal hashes on every rank (same bits).
inline std::uint64_t fnv1a(const void* p, std::size_t bytes, std::uint64_t h = 1469598103934665603ull) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < bytes; ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

//! Appends values / reads them back in order (a cursor over the bytes).
struct byte_writer {
  std::vector<std::byte> out;
  template <class T>
  void put(const T* p, std::size_t count) {
    static_assert(std::is_trivially_copyable_v<T>);
    const std::size_t at = out.size();
    out.resize(at + count * sizeof(T));
    if (count) std::memcpy(out.data() + at, p, count * sizeof(T));
  }
  template <class T>
  void put(const T& v) {
    put(&v, 1);
  }
};
struct byte_reader {
  std::span<const std::byte> in;
  std::size_t at = 0;
  template <class T>
  void get(T* p, std::size_t count) {
    detail::require<invalid_argument>(at + count * sizeof(T) <= in.size(),
                                      "yaqa: accumulator state: ", in.size(), " bytes, expected at least ",
                                      at + count * sizeof(T), " (states of different shapes?)");
    if (count) std::memcpy(p, in.data() + at, count * sizeof(T));
    at += count * sizeof(T);
  }
  template <class T>
  void get(T& v) {
    get(&v, 1);
  }
  void finish() const {
    detail::require<invalid_argument>(at == in.size(), "yaqa: accumulator state: ", in.size(),
                                      " bytes, expected ", at);
  }
};

template <class Acc>
void put_packed(byte_writer& w, const packed_symmetric<Acc>& p) {
  w.put(p.data(), p.size());
}
template <class Acc>
void get_packed(byte_reader& r, packed_symmetric<Acc>& p, index dim) {
  p = packed_symmetric<Acc>(dim);
  r.get(p.data(), p.size());
}

template <class Acc, class B>
struct state_access<second_moment<Acc, B>> {
  using A = second_moment<Acc, B>;
  static state_shape shape(const A& a) { return {1, sizeof(Acc), a.n_, 0, 0, 0, 0, 0}; }
  static std::vector<std::byte> save(const A& a) {
    byte_writer w;
    w.put(a.count_);
    w.put(a.batches_);
    put_packed(w, a.sum_);
    return std::move(w.out);
  }
  static void load(A& a, std::span<const std::byte> bytes) {
    byte_reader r{bytes};
    r.get(a.count_);
    r.get(a.batches_);
    get_packed(r, a.sum_, a.n_);
    r.finish();
  }
  static void merge(A& into, const A& from) { into.merge(from); }
};

template <class Acc, class B>
struct state_access<diagonal_second_moment<Acc, B>> {
  using A = diagonal_second_moment<Acc, B>;
  static state_shape shape(const A& a) { return {2, sizeof(Acc), a.n_, 0, 0, 0, 0, 0}; }
  static std::vector<std::byte> save(const A& a) {
    byte_writer w;
    w.put(a.count_);
    w.put(a.batches_);
    w.put(a.sum_.data(), std::size_t(a.sum_.size()));
    return std::move(w.out);
  }
  static void load(A& a, std::span<const std::byte> bytes) {
    byte_reader r{bytes};
    r.get(a.count_);
    r.get(a.batches_);
    a.sum_.resize(a.n_);
    r.get(a.sum_.data(), std::size_t(a.n_));
    r.finish();
  }
  static void merge(A& into, const A& from) { into.merge(from); }
};

//! Sketch A's state is the open pass's sum (the factors are the same on every worker).
template <class Acc, class B>
struct state_access<sketch_a<Acc, B>> {
  using A = sketch_a<Acc, B>;
  static state_shape shape(const A& a) {
    std::uint64_t h = fnv1a(a.h_in_.data(), a.h_in_.size() * sizeof(Acc));
    h = fnv1a(a.h_out_.data(), a.h_out_.size() * sizeof(Acc), h);
    return {3, sizeof(Acc), a.n_, a.m_, a.passes_, a.completed_, a.in_pass_ ? 1 : 0, h};
  }
  static std::vector<std::byte> save(const A& a) {
    byte_writer w;
    w.put(a.count_);
    w.put(a.batches_);
    put_packed(w, a.acc_);
    return std::move(w.out);
  }
  static void load(A& a, std::span<const std::byte> bytes) {
    byte_reader r{bytes};
    r.get(a.count_);
    r.get(a.batches_);
    get_packed(r, a.acc_, a.completed_ % 2 == 1 ? a.m_ : a.n_);
    r.finish();
  }
  static void merge(A& into, const A& from) { into.merge_pass(from); }
};

template <class Acc, class B>
struct state_access<sketch_b<Acc, B>> {
  using A = sketch_b<Acc, B>;
  static state_shape shape(const A& a) { return {4, sizeof(Acc), a.n_, a.m_, 0, 0, 0, 0}; }
  static std::vector<std::byte> save(const A& a) {
    byte_writer w;
    w.put(a.count_);
    w.put(a.tokens_);
    w.put(a.sequences_seen_);
    put_packed(w, a.sum_in_);
    put_packed(w, a.sum_out_);
    return std::move(w.out);
  }
  static void load(A& a, std::span<const std::byte> bytes) {
    byte_reader r{bytes};
    r.get(a.count_);
    r.get(a.tokens_);
    r.get(a.sequences_seen_);
    get_packed(r, a.sum_in_, a.n_);
    get_packed(r, a.sum_out_, a.m_);
    r.finish();
  }
  static void merge(A& into, const A& from) { into.merge(from); }
};

}  // namespace yaqa::detail::hessian
