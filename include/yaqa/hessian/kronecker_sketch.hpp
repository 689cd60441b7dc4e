#pragma once
//! \file
//! Kronecker sketches of a linear layer's Hessian (the Fisher of the model's own predictive
//! distribution, yaqa-algorithm.md §1-§2): H ≈ H_out ⊗ H_in for row-major vec(W), W m x n.
//!
//! - sketch_a: token samples, power iteration over P >= 2 passes over the same data (biased by
//!   the token-independence assumption, low variance).
//! - sketch_b: sequence samples G_s = sum_t g_t x_t^T, both factors from the identity in one
//!   pass (unbiased, higher variance; the recommended one).
//! - sketch_b_refinement: the optional further power iterations of Sketch B (use at your own
//!   risk, as the reference code says).
//!
//! Inputs per call: X (T x n, the layer inputs, one token per row) and G (T x m, dloss/dy for the
//! same tokens), column-major views. The proxy the factors define is
//! tr(dW H_in dW^T H_out) = vec(dW)^T (H_out ⊗ H_in) vec(dW). See docs/hessians.md.
#include <concepts>
#include <string>
#include <type_traits>
#include <utility>

#include <yaqa/backend/backend.hpp>
#include <yaqa/core/concepts.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/hessian/common.hpp>
#include <yaqa/hessian/packed_symmetric.hpp>

namespace yaqa {
namespace detail::hessian {

//! Element types of an (x, g) pair of views of the same scalar, at least one of them mutable.
template <class TX, class TG>
concept mutable_view_pair = Scalar<std::remove_const_t<TX>> &&
                            std::same_as<std::remove_const_t<TX>, std::remove_const_t<TG>> &&
                            (!std::is_const_v<TX> || !std::is_const_v<TG>);

//! A full copy of a packed factor in the compute type, built on first use and dropped on copy.
struct full_factor_cache {
  scratch<float> f;
  scratch<double> d;
  bool f_ok = false, d_ok = false;

  full_factor_cache() = default;
  full_factor_cache(const full_factor_cache&) {}
  full_factor_cache& operator=(const full_factor_cache&) {
    clear();
    return *this;
  }
  full_factor_cache(full_factor_cache&&) noexcept = default;
  full_factor_cache& operator=(full_factor_cache&&) noexcept = default;

  void clear() { f_ok = d_ok = false; }

  template <class C, class Acc>
  const matrix<C>& get(const packed_symmetric<Acc>& p) {
    if constexpr (std::is_same_v<C, float>) {
      if (!f_ok) f.m = p.to_full().template cast<float>(), f_ok = true;
      return f.m;
    } else {
      if (!d_ok) d.m = p.to_full().template cast<double>(), d_ok = true;
      return d.m;
    }
  }
};

template <class T>
matrix_view<const T> cview(const matrix<T>& m) {
  return {m.data(), m.rows(), m.cols(), m.rows() > 0 ? m.rows() : 1};
}

//! s_t = a_t^T H a_t for every row t of a (T x k), H k x k: one GEMM (A H) and a row-wise dot.
template <class B, class C>
void quadratic_weights(const B& b, matrix_view<const C> a, const matrix<C>& h, matrix<C>& ah,
                       matrix<C>& s) {
  backend_ops<B>::gemm(b, trans::none, trans::none, C(1), a, cview(h), C(0), view(ah));
  const auto A = as_eigen(a);
  host_chunks(b, a.rows, [&](index r0, index rows) {
    s.middleRows(r0, rows).col(0) =
        (ah.middleRows(r0, rows).array() * A.middleRows(r0, rows).array()).rowwise().sum().matrix();
  });
}

//! Divides packed values by `divisor` (computed in double, stored in Acc).
template <class Acc>
packed_symmetric<Acc> divided(const packed_symmetric<Acc>& p, double divisor) {
  packed_symmetric<Acc> r(p.dim());
  for (std::size_t k = 0; k < p.size(); ++k)
    r.data()[k] = static_cast<Acc>(double(p.data()[k]) / divisor);
  return r;
}

template <class Acc>
void add_packed(packed_symmetric<Acc>& a, const packed_symmetric<Acc>& b) {
  for (std::size_t k = 0; k < a.size(); ++k) a.data()[k] += b.data()[k];
}

}  // namespace detail::hessian

// =============================================================================================
//! Sketch A: H ≈ H_out ⊗ H_in fitted to E_tokens[(g g^T) ⊗ (x x^T)] by power iteration, one
//! half-step per pass over the data (the caller re-runs the same data, same fake labels, each pass):
//! - pass 0:        H_in  = E[x x^T]                                 (g is not used)
//! - odd pass p:    H_out = E[(x^T H_in x) g g^T]  / ||H_in||_F^2
//! - even pass p>0: H_in  = E[(g^T H_out g) x x^T] / ||H_out||_F^2
//!
//! Caller's loop:  for (p = 0; p < passes; ++p) { s.begin_pass(); for (batch) s.add(x, g); s.end_pass(); }
//! A pass can be distributed: copy the sketch after end_pass() (or before the first pass) to
//! each worker, let each worker begin_pass() and add() its shard, then merge_pass() the workers
//! into one sketch and end_pass() it.
//!
//! Per token: pass 0 n(n+1) FLOPs; odd passes 2n^2 (weights, one GEMM) + m(m+1) (weighted SYRK);
//! even passes 2m^2 + n(n+1). Memory: packed H_in, H_out and the pass sum (Acc), plus during a
//! pass a full copy of the previous factor and T x max(n, m) + max(n, m)^2 scratch.
//!
//! Degenerate data: when H_out comes out exactly zero (the layer got no gradient),
//! h_out_is_zero() says so, the even passes leave H_in at its last value (the weights
//! g^T H_out g would all be 0), and the solver stage falls back to H_out = I, i.e. LDLQ with
//! E[x x^T]. When H_in is zero an odd pass sets H_out to zero.
template <Scalar Acc = double, Backend B = default_backend>
class sketch_a {
  static_assert(accessible_from<B, host_space>, "yaqa::sketch_a keeps its factors in host memory");

 public:
  using accumulator_type = Acc;
  using backend_type = B;

  //! Throws invalid_argument when n < 1, m < 1 or passes < 2 (one pass would leave H_out
  //! undefined).
  sketch_a(index n, index m, int passes, accumulate_options options = {}, B backend = B{})
      : n_(n), m_(m), passes_(passes), opt_(options), backend_(std::move(backend)) {
    detail::require(n >= 1 && m >= 1, "yaqa::sketch_a: arguments 'n' and 'm' must be >= 1, got n = ",
                    n, ", m = ", m);
    detail::require(passes >= 2, "yaqa::sketch_a: argument 'passes' must be >= 2 (pass 0 estimates "
                                 "H_in, pass 1 the first H_out), got ",
                    passes);
  }

  //! Opens pass pass() for add(). Throws invalid_argument when a pass is already open or all
  //! passes are done.
  void begin_pass() {
    constexpr const char* what = "yaqa::sketch_a::begin_pass";
    detail::require(!in_pass_, what, ": pass ", completed_,
                    " is already open; call end_pass() before beginning the next");
    detail::require(completed_ < passes_, what, ": all ", passes_,
                    " passes are done; expected no further begin_pass()");
    const int p = completed_;
    acc_ = packed_symmetric<Acc>(p % 2 == 1 ? m_ : n_);
    count_ = 0;
    batches_ = 0;
    prev_norm2_ = p == 0 ? 1.0 : detail::hessian::frobenius_squared(p % 2 == 1 ? h_in_ : h_out_);
    prev_zero_ = prev_norm2_ == 0.0;
    prev_full_.clear();
    in_pass_ = true;
  }

  //! Adds a batch of T tokens to the open pass: x is T x n, g is T x m (row t of g is dloss/dy
  //! for the token in row t of x). In pass 0, g is not used and may be empty (0 x 0).
  //! Empty batches (T = 0) are accepted and change nothing. Throws shape_error / non_finite_error
  //! naming the batch ("batch 17 of sketch_a pass 1"; batches and passes count from 0), and
  //! invalid_argument when no pass is open.
  template <Scalar T>
  void add(matrix_view<const T> x, matrix_view<const T> g) {
    constexpr const char* what = "yaqa::sketch_a::add";
    detail::require(in_pass_, what, ": no pass is open (", completed_, " of ", passes_,
                    " done); call begin_pass() first");
    const int p = completed_;
    const std::string where = detail::concat("batch ", batches_, " of sketch_a pass ", p);
    detail::require<shape_error>(x.cols == n_, what, ": argument 'x' (", where,
                                 ") must be T x ", n_, " (one token per row), got ", x.rows, "x",
                                 x.cols);
    const bool g_used = p > 0;
    if (g_used || !g.empty())
      detail::require<shape_error>(g.rows == x.rows && g.cols == m_, what, ": argument 'g' (",
                                   where, ") must be ", x.rows, "x", m_,
                                   " (rows of x by m)", g_used ? "" : " or empty in pass 0",
                                   ", got ", g.rows, "x", g.cols);
    detail::hessian::require_finite_batch(what, "x", x, where);
    if (g_used) detail::hessian::require_finite_batch(what, "g", g, where);
    ++batches_;
    if (x.rows == 0) return;
    if (!prev_zero_) {
      if (opt_.precision == batch_precision::accumulator)
        accumulate<Acc>(x, g);
      else
        accumulate<T>(x, g);
    }
    count_ += x.rows;
  }
  //! Mutable views (view() of a non-const matrix) forward to the read-only overload.
  template <class TX, class TG>
    requires detail::hessian::mutable_view_pair<TX, TG>
  void add(matrix_view<TX> x, matrix_view<TG> g) {
    using T = std::remove_const_t<TX>;
    add(matrix_view<const T>(x), matrix_view<const T>(g));
  }

  //! Adds other's partial sums of the same open pass (a worker's shard). Both must be inside
  //! the same pass, started from identical factors. Exact, like second_moment::merge.
  void merge_pass(const sketch_a& other) {
    constexpr const char* what = "yaqa::sketch_a::merge_pass";
    detail::require<shape_error>(other.n_ == n_ && other.m_ == m_ && other.passes_ == passes_,
                                 what, ": argument 'other' is ", other.n_, "x", other.m_, " with ",
                                 other.passes_, " passes, expected n = ", n_, ", m = ", m_,
                                 ", passes = ", passes_);
    detail::require(in_pass_ && other.in_pass_ && other.completed_ == completed_, what,
                    ": both sketches must have pass ", completed_,
                    " open (this: ", in_pass_ ? "open" : "closed", ", other: pass ",
                    other.completed_, other.in_pass_ ? " open" : " closed", ")");
    detail::require(other.h_in_ == h_in_ && other.h_out_ == h_out_, what,
                    ": argument 'other' started pass ", completed_,
                    " from different factors; copy the sketch after end_pass() to make workers");
    detail::hessian::add_packed(acc_, other.acc_);
    count_ += other.count_;
    batches_ += other.batches_;
  }

  //! Finalizes the open pass's factor (see the class comment). Throws invalid_argument when no
  //! pass is open or the pass saw no token, numerical_error when the factor overflowed.
  void end_pass() {
    constexpr const char* what = "yaqa::sketch_a::end_pass";
    detail::require(in_pass_, what, ": no pass is open; call begin_pass() first");
    const int p = completed_;
    detail::require(count_ > 0, what, ": pass ", p,
                    " saw no tokens; expected at least one non-empty batch");
    packed_symmetric<Acc> next;
    bool keep = false;
    if (p == 0) {
      next = detail::hessian::divided(acc_, double(count_));
    } else if (prev_zero_) {
      if (p % 2 == 1) next = packed_symmetric<Acc>(m_);  // H_in zero: H_out cannot be estimated
      else keep = true;                                  // H_out zero: keep H_in
    } else {
      next = detail::hessian::divided(acc_, double(count_) * prev_norm2_);
    }
    if (!keep)
      detail::require<numerical_error>(detail::hessian::all_finite(next), what, ": pass ", p, " produced a non-finite ",
                                       p % 2 == 1 ? "H_out" : "H_in",
                                       " (overflow in the accumulator type?)");
    if (!keep) (p % 2 == 1 ? h_out_ : h_in_) = std::move(next);
    (p % 2 == 1 ? has_out_ : has_in_) = true;
    acc_ = packed_symmetric<Acc>();  // release the pass sum between passes
    prev_full_.clear();
    in_pass_ = false;
    ++completed_;
  }

  //! The pass add() works on (while open), else the next pass to begin (= passes completed).
  [[nodiscard]] int pass() const { return completed_; }
  [[nodiscard]] int passes() const { return passes_; }
  [[nodiscard]] bool done() const { return completed_ == passes_; }
  [[nodiscard]] bool in_pass() const { return in_pass_; }
  //! Tokens added to the open pass so far.
  [[nodiscard]] index pass_count() const { return count_; }
  [[nodiscard]] index n() const { return n_; }
  [[nodiscard]] index m() const { return m_; }
  [[nodiscard]] const accumulate_options& options() const { return opt_; }

  [[nodiscard]] bool has_h_in() const { return has_in_; }
  [[nodiscard]] bool has_h_out() const { return has_out_; }
  //! True when H_out has been estimated and is exactly zero (no gradient reached the layer):
  //! the solver should use H_out = I.
  [[nodiscard]] bool h_out_is_zero() const { return has_out_ && detail::hessian::all_zero(h_out_); }

  //! The latest H_in (n x n; final once done()). Throws invalid_argument before pass 0 ended.
  [[nodiscard]] matrix<Acc> h_in() const { return packed_h_in().to_full(); }
  //! The latest H_out (m x m; final once done()). Throws invalid_argument before pass 1 ended.
  [[nodiscard]] matrix<Acc> h_out() const { return packed_h_out().to_full(); }
  [[nodiscard]] const packed_symmetric<Acc>& packed_h_in() const {
    detail::require(has_in_, "yaqa::sketch_a::h_in: H_in is available once pass 0 has ended (",
                    completed_, " passes done)");
    return h_in_;
  }
  [[nodiscard]] const packed_symmetric<Acc>& packed_h_out() const {
    detail::require(has_out_, "yaqa::sketch_a::h_out: H_out is available once pass 1 has ended (",
                    completed_, " passes done)");
    return h_out_;
  }

  //! FLOPs of one batch of t tokens in pass p (the algorithm as implemented).
  [[nodiscard]] static double flops(int p, index t, index n, index m) {
    const double T = double(t), N = double(n), M = double(m);
    if (p == 0) return T * N * (N + 1);
    if (p % 2 == 1) return 2 * T * N * N + T * M * (M + 1);
    return 2 * T * M * M + T * N * (N + 1);
  }

 private:
  template <class>
  friend struct detail::hessian::state_access;

  template <class C, class T>
  void accumulate(matrix_view<const T> x_in, matrix_view<const T> g_in) {
    const int p = completed_;
    const index t = x_in.rows;
    matrix<C> xc, gc;
    const matrix_view<const C> x = detail::hessian::as_compute<C>(x_in, xc);
    if (p == 0) {
      matrix<C>& out = ws_.get<C>(0, n_, n_);
      detail::hessian::gram_upper(backend_, x, static_cast<const C*>(nullptr), out, ws_.template buffer<C>(3));
      detail::hessian::add_upper_to_packed(backend_, acc_, out);
      return;
    }
    const matrix_view<const C> g = detail::hessian::as_compute<C>(g_in, gc);
    // odd: weights from x and H_in, accumulate over g; even: weights from g and H_out, over x.
    const bool odd = p % 2 == 1;
    const matrix_view<const C> a = odd ? x : g, z = odd ? g : x;
    const matrix<C>& h = prev_full_.get<C>(odd ? h_in_ : h_out_);
    matrix<C>& ah = ws_.get<C>(0, t, a.cols);
    matrix<C>& s = ws_.get<C>(1, t, 1);
    detail::hessian::quadratic_weights(backend_, a, h, ah, s);
    matrix<C>& out = ws_.get<C>(2, z.cols, z.cols);
    detail::hessian::gram_upper(backend_, z, static_cast<const C*>(s.data()), out, ws_.template buffer<C>(3));
    detail::hessian::add_upper_to_packed(backend_, acc_, out);
  }

  index n_, m_;
  int passes_;
  accumulate_options opt_;
  B backend_;
  int completed_ = 0;
  bool in_pass_ = false;
  packed_symmetric<Acc> h_in_, h_out_;
  bool has_in_ = false, has_out_ = false;
  packed_symmetric<Acc> acc_;  // the open pass's sum
  index count_ = 0, batches_ = 0;
  double prev_norm2_ = 1;
  bool prev_zero_ = false;
  detail::hessian::full_factor_cache prev_full_;
  detail::hessian::workspace ws_;
};

// =============================================================================================
//! Sketch B: one sample per sequence, G_s = G^T X (m x n, the sequence's weight gradient), and
//! - H_in  = (1/S) sum_s G_s^T G_s      (n x n)
//! - H_out = (1/S) sum_s G_s G_s^T      (m x m)
//! both from the identity in the same single pass (one Jacobi-style power iteration). Labels
//! are sampled per position from the model's own softmax, so cross-token terms are
//! zero-mean and E[vec(G_s) vec(G_s)^T] is the sequence-level true Fisher (unbiased). Never
//! replace G_s by per-token outer products: that is Sketch A.
//!
//! Two contractions give the same matrices (sketch_b_path): direct (form G_s) costs
//! 2Tmn + mn(m+n) FLOPs per sequence; gram (T x T Gram matrices, symmetric products) costs
//! 3T^2(m+n) + T(n^2+m^2) + T(m+n) and wins for short sequences (about T < min(m,n)/sqrt(3)
//! when m = n). `automatic` takes the cheaper by flops(); options.path forces one.
//! Memory: packed sums (Acc) plus scratch of n^2 + m^2 + 2mn (direct) or
//! n^2 + m^2 + T^2 + T(max(m,n) + m + n) (gram) in the compute type.
template <Scalar Acc = double, Backend B = default_backend>
class sketch_b {
  static_assert(accessible_from<B, host_space>, "yaqa::sketch_b keeps its sums in host memory");

 public:
  using accumulator_type = Acc;
  using backend_type = B;

  //! Throws invalid_argument when n < 1 or m < 1.
  sketch_b(index n, index m, accumulate_options options = {}, B backend = B{})
      : n_(n), m_(m), opt_(options), backend_(std::move(backend)) {
    detail::require(n >= 1 && m >= 1, "yaqa::sketch_b: arguments 'n' and 'm' must be >= 1, got n = ",
                    n, ", m = ", m);
    sum_in_ = packed_symmetric<Acc>(n);
    sum_out_ = packed_symmetric<Acc>(m);
  }

  //! Adds one sequence: x is T x n (layer inputs), g is T x m (dloss/dy), row t = token t.
  //! A sequence with T = 0 is accepted and not counted. Throws shape_error / non_finite_error
  //! naming the sequence ("sequence 17 of sketch_b", counted from 0).
  template <Scalar T>
  void add_sequence(matrix_view<const T> x, matrix_view<const T> g) {
    constexpr const char* what = "yaqa::sketch_b::add_sequence";
    const std::string where = detail::concat("sequence ", sequences_seen_, " of sketch_b");
    detail::require<shape_error>(x.cols == n_, what, ": argument 'x' (", where,
                                 ") must be T x ", n_, " (one token per row), got ", x.rows, "x",
                                 x.cols);
    detail::require<shape_error>(g.rows == x.rows && g.cols == m_, what, ": argument 'g' (", where,
                                 ") must be ", x.rows, "x", m_, " (rows of x by m), got ", g.rows,
                                 "x", g.cols);
    detail::hessian::require_finite_batch(what, "x", x, where);
    detail::hessian::require_finite_batch(what, "g", g, where);
    ++sequences_seen_;
    if (x.rows == 0) return;
    const sketch_b_path path = opt_.path == sketch_b_path::automatic ? choose_path(x.rows, n_, m_) : opt_.path;
    if (opt_.precision == batch_precision::accumulator)
      accumulate<Acc>(x, g, path);
    else
      accumulate<T>(x, g, path);
    ++count_;
    tokens_ += x.rows;
  }
  template <class TX, class TG>
    requires detail::hessian::mutable_view_pair<TX, TG>
  void add_sequence(matrix_view<TX> x, matrix_view<TG> g) {
    using T = std::remove_const_t<TX>;
    add_sequence(matrix_view<const T>(x), matrix_view<const T>(g));
  }

  //! Adds other's sums and counts (same n, m); exact like second_moment::merge.
  void merge(const sketch_b& other) {
    detail::require<shape_error>(other.n_ == n_ && other.m_ == m_,
                                 "yaqa::sketch_b::merge: argument 'other' is for n = ", other.n_,
                                 ", m = ", other.m_, ", expected n = ", n_, ", m = ", m_);
    detail::hessian::add_packed(sum_in_, other.sum_in_);
    detail::hessian::add_packed(sum_out_, other.sum_out_);
    count_ += other.count_;
    tokens_ += other.tokens_;
    sequences_seen_ += other.sequences_seen_;
  }

  //! Sequences added (non-empty ones).
  [[nodiscard]] index count() const { return count_; }
  //! Tokens over all sequences.
  [[nodiscard]] index tokens() const { return tokens_; }
  [[nodiscard]] index n() const { return n_; }
  [[nodiscard]] index m() const { return m_; }
  [[nodiscard]] const accumulate_options& options() const { return opt_; }

  //! (1/S) sum_s G_s^T G_s. Throws invalid_argument when no sequence was added.
  [[nodiscard]] matrix<Acc> h_in() const { return detail::hessian::scaled_full(sum_in_, divisor("h_in")); }
  //! (1/S) sum_s G_s G_s^T. Throws invalid_argument when no sequence was added.
  [[nodiscard]] matrix<Acc> h_out() const { return detail::hessian::scaled_full(sum_out_, divisor("h_out")); }
  //! Packed (tril order) sums, not divided by the count: for files and reductions.
  [[nodiscard]] const packed_symmetric<Acc>& packed_sum_in() const { return sum_in_; }
  [[nodiscard]] const packed_symmetric<Acc>& packed_sum_out() const { return sum_out_; }
  //! True when sequences were added and H_out is exactly zero (no gradient reached the layer;
  //! then H_in is zero as well): the solver should fall back to identities / E[x x^T].
  [[nodiscard]] bool h_out_is_zero() const { return count_ > 0 && detail::hessian::all_zero(sum_out_); }

  //! FLOPs of one sequence of t tokens by the given path (automatic = the path chosen).
  [[nodiscard]] static double flops(sketch_b_path path, index t, index n, index m) {
    const double T = double(t), N = double(n), M = double(m);
    if (path == sketch_b_path::automatic) path = choose_path(t, n, m);
    if (path == sketch_b_path::direct) return 2 * T * M * N + M * N * (N + 1) + N * M * (M + 1);
    return T * (T + 1) * (N + M) + 2 * T * T * (N + M) + T * N * (N + 1) + T * M * (M + 1);
  }
  //! The cheaper contraction for a sequence of t tokens.
  [[nodiscard]] static sketch_b_path choose_path(index t, index n, index m) {
    return flops(sketch_b_path::gram, t, n, m) < flops(sketch_b_path::direct, t, n, m)
               ? sketch_b_path::gram
               : sketch_b_path::direct;
  }

 private:
  template <class>
  friend struct detail::hessian::state_access;

  double divisor(const char* name) const {
    detail::require(count_ > 0, "yaqa::sketch_b::", name,
                    ": no sequences were added (count is 0); expected at least one non-empty sequence");
    return double(count_);
  }

  template <class C, class T>
  void accumulate(matrix_view<const T> x_in, matrix_view<const T> g_in, sketch_b_path path) {
    matrix<C> xc, gc;
    const matrix_view<const C> x = detail::hessian::as_compute<C>(x_in, xc);
    const matrix_view<const C> g = detail::hessian::as_compute<C>(g_in, gc);
    const index t = x.rows;
    matrix<C>& p_in = ws_.get<C>(0, n_, n_);
    matrix<C>& p_out = ws_.get<C>(1, m_, m_);
    if (path == sketch_b_path::direct) {
      matrix<C>& mt = ws_.get<C>(2, n_, m_);  // M^T = X^T G
      detail::hessian::tn_product(backend_, x, g, view(mt));
      matrix<C>& mm = ws_.get<C>(3, m_, n_);
      matrix<C>& y = ws_.template buffer<C>(4);
      detail::hessian::gram_upper(backend_, detail::hessian::transposed(detail::hessian::cview(mt), mm),
                                  static_cast<const C*>(nullptr), p_in, y);  // M^T M
      detail::hessian::gram_upper(backend_, detail::hessian::cview(mt), static_cast<const C*>(nullptr), p_out, y);  // M M^T
    } else {
      matrix<C>& k = ws_.get<C>(2, t, t);
      matrix<C>& y = ws_.get<C>(3, t, std::max(n_, m_));
      matrix<C>& gt = ws_.get<C>(4, m_, t);
      matrix<C>& xt = ws_.get<C>(5, n_, t);
      // H_in += X^T (G G^T) X
      detail::hessian::gram(backend_, detail::hessian::transposed(g, gt), k);
      auto yn = view(y).col_block(0, n_);
      backend_ops<B>::gemm(backend_, trans::none, trans::none, C(1), detail::hessian::cview(k), x, C(0), yn);
      detail::hessian::gemm_upper(backend_, trans::transpose, x, trans::none, matrix_view<const C>(yn), view(p_in));
      // H_out += G^T (X X^T) G
      detail::hessian::gram(backend_, detail::hessian::transposed(x, xt), k);
      auto ym = view(y).col_block(0, m_);
      backend_ops<B>::gemm(backend_, trans::none, trans::none, C(1), detail::hessian::cview(k), g, C(0), ym);
      detail::hessian::gemm_upper(backend_, trans::transpose, g, trans::none, matrix_view<const C>(ym), view(p_out));
    }
    detail::hessian::add_upper_to_packed(backend_, sum_in_, p_in);
    detail::hessian::add_upper_to_packed(backend_, sum_out_, p_out);
  }

  index n_, m_;
  accumulate_options opt_;
  B backend_;
  packed_symmetric<Acc> sum_in_, sum_out_;
  index count_ = 0, tokens_ = 0, sequences_seen_ = 0;
  detail::hessian::workspace ws_;
};

// =============================================================================================
//! Which Kronecker factor a sketch_b_refinement re-estimates.
enum class kron_factor { h_in, h_out };

//! One further power-iteration half-step of Sketch B (yaqa-algorithm.md §2.3). USE AT YOUR OWN
//! RISK: the reference code ships these passes as "not optimized ... use at your own risk", and
//! they are not part of the recommended recipe (one pass of sketch_b).
//! - update h_in:  H_in  = (1/S) sum_s G_s^T H_out G_s / ||H_out||_F^2   (H_out fixed, m x m)
//! - update h_out: H_out = (1/S) sum_s G_s H_in G_s^T  / ||H_in||_F^2    (H_in fixed, n x n)
//! Each sequence forms G_s (2Tmn FLOPs), then updating h_in costs 2nm^2 + n^2 m and updating
//! h_out 2mn^2 + m^2 n. Same add/merge/count rules as sketch_b.
template <Scalar Acc = double, Backend B = default_backend>
class sketch_b_refinement {
  static_assert(accessible_from<B, host_space>, "yaqa::sketch_b_refinement keeps its sums in host memory");

 public:
  //! `fixed` is the other factor (m x m when updating h_in, n x n when updating h_out),
  //! symmetric and not zero. Throws shape_error, non_finite_error, or invalid_argument when it
  //! is zero (fall back to the identity: that is plain sketch_b).
  sketch_b_refinement(index n, index m, kron_factor update, matrix_view<const Acc> fixed,
                      accumulate_options options = {}, B backend = B{})
      : n_(n), m_(m), update_(update), opt_(options), backend_(std::move(backend)) {
    constexpr const char* what = "yaqa::sketch_b_refinement";
    detail::require(n >= 1 && m >= 1, what, ": arguments 'n' and 'm' must be >= 1, got n = ", n,
                    ", m = ", m);
    const index k = update == kron_factor::h_in ? m : n;
    check_shape(what, "fixed", fixed, k, k);
    check_finite(what, "fixed", fixed);
    try {
      fixed_ = packed_symmetric<Acc>::from_full(fixed);
    } catch (const invalid_argument& e) {
      throw invalid_argument(detail::concat(what, ": argument 'fixed' is not symmetric (", e.what(), ")"));
    }
    norm2_ = detail::hessian::frobenius_squared(fixed_);
    detail::require(norm2_ > 0, what, ": argument 'fixed' is zero; expected a non-zero factor");
    sum_ = packed_symmetric<Acc>(update == kron_factor::h_in ? n : m);
  }

  //! Adds one sequence (x: T x n, g: T x m). Same rules as sketch_b::add_sequence.
  template <Scalar T>
  void add_sequence(matrix_view<const T> x, matrix_view<const T> g) {
    constexpr const char* what = "yaqa::sketch_b_refinement::add_sequence";
    const std::string where = detail::concat("sequence ", sequences_seen_, " of sketch_b_refinement");
    detail::require<shape_error>(x.cols == n_, what, ": argument 'x' (", where,
                                 ") must be T x ", n_, ", got ", x.rows, "x", x.cols);
    detail::require<shape_error>(g.rows == x.rows && g.cols == m_, what, ": argument 'g' (", where,
                                 ") must be ", x.rows, "x", m_, ", got ", g.rows, "x", g.cols);
    detail::hessian::require_finite_batch(what, "x", x, where);
    detail::hessian::require_finite_batch(what, "g", g, where);
    ++sequences_seen_;
    if (x.rows == 0) return;
    if (opt_.precision == batch_precision::accumulator)
      accumulate<Acc>(x, g);
    else
      accumulate<T>(x, g);
    ++count_;
  }
  template <class TX, class TG>
    requires detail::hessian::mutable_view_pair<TX, TG>
  void add_sequence(matrix_view<TX> x, matrix_view<TG> g) {
    using T = std::remove_const_t<TX>;
    add_sequence(matrix_view<const T>(x), matrix_view<const T>(g));
  }

  void merge(const sketch_b_refinement& other) {
    detail::require<shape_error>(other.n_ == n_ && other.m_ == m_ && other.update_ == update_ &&
                                     other.fixed_ == fixed_,
                                 "yaqa::sketch_b_refinement::merge: argument 'other' must update "
                                 "the same factor of the same layer from the same fixed factor");
    detail::hessian::add_packed(sum_, other.sum_);
    count_ += other.count_;
    sequences_seen_ += other.sequences_seen_;
  }

  [[nodiscard]] index count() const { return count_; }
  [[nodiscard]] kron_factor updates() const { return update_; }
  //! The re-estimated factor. Throws invalid_argument when no sequence was added.
  [[nodiscard]] matrix<Acc> factor() const {
    detail::require(count_ > 0, "yaqa::sketch_b_refinement::factor: no sequences were added");
    return detail::hessian::scaled_full(sum_, double(count_) * norm2_);
  }

 private:
  template <class C, class T>
  void accumulate(matrix_view<const T> x_in, matrix_view<const T> g_in) {
    matrix<C> xc, gc;
    const matrix_view<const C> x = detail::hessian::as_compute<C>(x_in, xc);
    const matrix_view<const C> g = detail::hessian::as_compute<C>(g_in, gc);
    const auto& h = cache_.get<C>(fixed_);
    matrix<C>& mt = ws_.get<C>(0, n_, m_);  // M^T = X^T G
    backend_ops<B>::gemm(backend_, trans::transpose, trans::none, C(1), x, g, C(0), view(mt));
    matrix<C>& y = ws_.get<C>(1, n_, m_);
    const index k = update_ == kron_factor::h_in ? n_ : m_;
    matrix<C>& p = ws_.get<C>(2, k, k);
    if (update_ == kron_factor::h_in) {
      // M^T H_out M = Mt H_out Mt^T: Y = Mt H_out, then Y Mt^T.
      backend_ops<B>::gemm(backend_, trans::none, trans::none, C(1), detail::hessian::cview(mt), detail::hessian::cview(h),
                           C(0), view(y));
      detail::hessian::gemm_upper(backend_, trans::none, detail::hessian::cview(y), trans::transpose, detail::hessian::cview(mt),
                         view(p));
    } else {
      // M H_in M^T = Mt^T H_in Mt: Y = H_in Mt, then Mt^T Y.
      backend_ops<B>::gemm(backend_, trans::none, trans::none, C(1), detail::hessian::cview(h), detail::hessian::cview(mt),
                           C(0), view(y));
      detail::hessian::gemm_upper(backend_, trans::transpose, detail::hessian::cview(mt), trans::none, detail::hessian::cview(y),
                         view(p));
    }
    detail::hessian::add_upper_to_packed(backend_, sum_, p);
  }

  index n_, m_;
  kron_factor update_;
  accumulate_options opt_;
  B backend_;
  packed_symmetric<Acc> fixed_, sum_;
  double norm2_ = 0;
  index count_ = 0, sequences_seen_ = 0;
  detail::hessian::full_factor_cache cache_;
  detail::hessian::workspace ws_;
};

}  // namespace yaqa
