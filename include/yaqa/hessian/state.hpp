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
#include <string>
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

//! What differs between shard s and rank 0's s0 (the first differing field, for the message
//! "rank r of R has <this>"); kind names get `kind_prefix` ("cuda::" for the device classes).
inline std::string shape_mismatch(const state_shape& s, const state_shape& s0, const char* kind_prefix = "") {
  if (s.kind != s0.kind)
    return concat("an accumulator of kind ", kind_prefix, state_kind_name(s.kind), ", rank 0 ", kind_prefix,
                  state_kind_name(s0.kind));
  if (s.acc_size != s0.acc_size)
    return concat("a ", s.acc_size * 8, "-bit accumulator type, rank 0 ", s0.acc_size * 8, "-bit");
  if (s.n != s0.n) return concat("n = ", s.n, ", rank 0 n = ", s0.n);
  if (s.m != s0.m) return concat("m = ", s.m, ", rank 0 m = ", s0.m);
  if (s.passes != s0.passes) return concat("passes = ", s.passes, ", rank 0 passes = ", s0.passes);
  if (s.pass != s0.pass || s.in_pass != s0.in_pass)
    return concat("pass ", s.pass, s.in_pass ? " open" : " not open", ", rank 0 pass ", s0.pass,
                  s0.in_pass ? " open" : " not open");
  return "different Sketch A factors than rank 0 (each pass must start from the factors of the previous "
         "distributed end_pass)";
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
  //! Everything but the shape: the pass position, the factors, the open pass's weights and sum.
  static void save_all(byte_writer& w, const A& a) {
    w.put(std::int64_t(a.has_in_));
    w.put(std::int64_t(a.has_out_));
    w.put(std::int64_t(a.prev_zero_));
    w.put(a.prev_norm2_);
    if (a.has_in_) put_packed(w, a.h_in_);
    if (a.has_out_) put_packed(w, a.h_out_);
    if (a.in_pass_) {
      const std::vector<std::byte> pass = save(a);
      w.put(pass.data(), pass.size());
    }
  }
  static void load_all(A& a, const state_shape& s, byte_reader& r) {
    std::int64_t has_in = 0, has_out = 0, prev_zero = 0;
    r.get(has_in);
    r.get(has_out);
    r.get(prev_zero);
    r.get(a.prev_norm2_);
    a.completed_ = int(s.pass);
    a.in_pass_ = s.in_pass != 0;
    a.has_in_ = has_in != 0;
    a.has_out_ = has_out != 0;
    a.prev_zero_ = prev_zero != 0;
    a.h_in_ = packed_symmetric<Acc>();
    a.h_out_ = packed_symmetric<Acc>();
    if (a.has_in_) get_packed(r, a.h_in_, a.n_);
    if (a.has_out_) get_packed(r, a.h_out_, a.m_);
    a.acc_ = packed_symmetric<Acc>();
    a.count_ = a.batches_ = 0;
    a.prev_full_.clear();
    if (a.in_pass_) load(a, r.in.subspan(r.at)), r.at = r.in.size();
    detail::require<invalid_argument>(shape(a) == s, "yaqa::load_state: the sketch_a state's factors do not "
                                      "match their hash (corrupt state)");
  }
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

namespace yaqa {

//! The whole state of an accumulator (second_moment, diagonal_second_moment, sketch_a, sketch_b)
//! as bytes: its shape (kind, accumulator type, dims), its sums and counts, and for sketch_a the
//! pass position and factors. load_state() into an accumulator constructed with the same dims
//! (and passes) restores it exactly: what pickling (the Python package) and checkpoints need.
//! Same caveats as the reductions' state: raw host-endian values, not a file format. Options and
//! backends are not in the bytes (the caller constructs the accumulator with them).
template <class A>
std::vector<std::byte> save_state(const A& a) {
  using S = detail::hessian::state_access<A>;
  detail::hessian::byte_writer w;
  w.put(S::shape(a));
  if constexpr (requires(detail::hessian::byte_writer& bw) { S::save_all(bw, a); }) {
    S::save_all(w, a);
  } else {
    const std::vector<std::byte> body = S::save(a);
    w.put(body.data(), body.size());
  }
  return std::move(w.out);
}

//! Restores a's state from save_state()'s bytes. Throws invalid_argument when the bytes are
//! truncated or were saved from an accumulator of another kind, type or shape (naming both).
template <class A>
void load_state(A& a, std::span<const std::byte> bytes) {
  using S = detail::hessian::state_access<A>;
  detail::hessian::byte_reader r{bytes};
  detail::hessian::state_shape s{};
  r.get(s);
  const detail::hessian::state_shape mine = S::shape(a);
  detail::require(s.kind == mine.kind && s.acc_size == mine.acc_size && s.n == mine.n && s.m == mine.m &&
                      s.passes == mine.passes,
                  "yaqa::load_state: argument 'bytes' holds a ", detail::hessian::state_kind_name(s.kind),
                  " state (", s.acc_size, "-byte sums, n = ", s.n, ", m = ", s.m, ", passes = ", s.passes,
                  "); expected ", detail::hessian::state_kind_name(mine.kind), " (", mine.acc_size,
                  "-byte sums, n = ", mine.n, ", m = ", mine.m, ", passes = ", mine.passes, ")");
  if constexpr (requires(detail::hessian::byte_reader& br) { S::load_all(a, s, br); }) {
    detail::require(s.pass >= 0 && s.pass <= s.passes && (s.in_pass == 0 || s.pass < s.passes),
                    "yaqa::load_state: sketch_a state at pass ", s.pass, " of ", s.passes, " (corrupt state)");
    S::load_all(a, s, r);
  } else {
    S::load(a, r.in.subspan(r.at));
    r.at = r.in.size();
  }
  r.finish();
}

}  // namespace yaqa
