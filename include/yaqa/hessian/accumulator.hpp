#pragma once
//! \file
//! second_moment: GPTQ's input-side Hessian H = E[x x^T] (n x n), accumulated batch by batch.
//!
//! This is the proxy of GPTQ/LDLQ (tr(dW H dW^T), i.e. YAQA with H_out = I) and pass 0 of Sketch A.
//! The state is (packed lower triangle of sum_t x_t x_t^T in Acc, token count), so partial sums
//! from several workers or files combine exactly with merge() (see docs/hessians.md).
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

//! Running sum of x x^T over tokens; mean() is H = E[x x^T].
//! - Batches are T x n, one token per row (a column-major view, any leading dimension).
//! - An empty batch (0 rows) is accepted and changes nothing (a worker may get no tokens).
//! - NaN/Inf in a batch is rejected before anything is added, naming the batch ("batch 17 of
//!   second_moment", batches numbered from 0 in the order add() accepted them).
//! - Cost per token: n(n+1) FLOPs (symmetric product, upper triangle only). Memory: the packed
//!   sum (n(n+1)/2 Acc) plus an n x n scratch in the compute type during add().
//! - Not thread-safe: use one accumulator per thread and merge().
template <Scalar Acc = double, Backend B = default_backend>
class second_moment {
  static_assert(accessible_from<B, host_space>, "yaqa::second_moment keeps its sums in host memory");

 public:
  using accumulator_type = Acc;
  using backend_type = B;

  //! Throws invalid_argument when n < 1.
  explicit second_moment(index n, accumulate_options options = {}, B backend = B{})
      : n_(n), opt_(options), backend_(std::move(backend)) {
    detail::require(n >= 1, "yaqa::second_moment: argument 'n' must be >= 1, got ", n);
    sum_ = packed_symmetric<Acc>(n);
  }

  //! Adds the tokens of x (T x n): sum += x^T x, count += T.
  template <Scalar T>
  void add(matrix_view<const T> x) {
    constexpr const char* what = "yaqa::second_moment::add";
    const std::string where = detail::concat("batch ", batches_, " of second_moment");
    detail::require<shape_error>(x.cols == n_, what, ": argument 'x' (", where,
                                 ") must be T x ", n_, " (one token per row), got ", x.rows, "x",
                                 x.cols);
    detail::hessian::require_finite_batch(what, "x", x, where);
    ++batches_;
    if (x.rows == 0) return;
    if (opt_.precision == batch_precision::accumulator)
      accumulate<Acc>(x);
    else
      accumulate<T>(x);
    count_ += x.rows;
  }
  template <Scalar T>
  void add(matrix_view<T> x) {
    add(matrix_view<const T>(x));
  }

  //! Adds other's sums and counts (same n). Exact: merging shards that each hold one batch, in
  //! batch order, gives bitwise the sums of one accumulator that saw all batches in that order.
  void merge(const second_moment& other) {
    detail::require<shape_error>(other.n_ == n_, "yaqa::second_moment::merge: argument 'other' has n = ",
                                 other.n_, ", expected ", n_);
    Acc* p = sum_.data();
    const Acc* q = other.sum_.data();
    for (std::size_t k = 0, e = sum_.size(); k < e; ++k) p[k] += q[k];
    count_ += other.count_;
    batches_ += other.batches_;
  }

  //! Tokens seen.
  [[nodiscard]] index count() const { return count_; }
  //! Batches accepted (empty ones included).
  [[nodiscard]] index batches() const { return batches_; }
  [[nodiscard]] index dim() const { return n_; }
  [[nodiscard]] const accumulate_options& options() const { return opt_; }
  [[nodiscard]] const B& backend() const { return backend_; }

  //! sum_t x_t x_t^T (full symmetric n x n).
  [[nodiscard]] matrix<Acc> sum() const { return sum_.to_full(); }
  //! The packed lower triangle of the sum (for files and reductions; tril order).
  [[nodiscard]] const packed_symmetric<Acc>& packed_sum() const { return sum_; }
  //! E[x x^T] = sum / count. Throws invalid_argument when no token was added.
  [[nodiscard]] matrix<Acc> mean() const {
    detail::require(count_ > 0, "yaqa::second_moment::mean: no tokens were added (count is 0); "
                                "expected at least one non-empty batch");
    return detail::hessian::scaled_full(sum_, double(count_));
  }

 private:
  template <class>
  friend struct detail::hessian::state_access;

  template <class C, class T>
  void accumulate(matrix_view<const T> x_in) {
    matrix<C> converted;
    const matrix_view<const C> x = detail::hessian::as_compute<C>(x_in, converted);
    matrix<C>& p = ws_.get<C>(0, n_, n_);
    detail::hessian::gram_upper(backend_, x, static_cast<const C*>(nullptr), p, ws_.template buffer<C>(1));
    detail::hessian::add_upper_to_packed(backend_, sum_, p);
  }

  index n_;
  accumulate_options opt_;
  B backend_;
  packed_symmetric<Acc> sum_;
  index count_ = 0;
  index batches_ = 0;
  detail::hessian::workspace ws_;
};

}  // namespace yaqa
