#pragma once
//! \file
//! diagonal_second_moment: the diagonal of E[x x^T], i.e. E[x_j^2] per input column.
//!
//! The equivalent of llama.cpp's importance matrix (imatrix `in_sum2` / `counts`): a cheap
//! (O(n) memory, 2n FLOPs per token) per-column importance for quantizers that weight their
//! rounding error per element but do no cross-column error feedback.
#include <string>
#include <type_traits>
#include <utility>

#include <yaqa/backend/backend.hpp>
#include <yaqa/core/concepts.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/hessian/common.hpp>

namespace yaqa {

//! Running sum of x_j^2 over tokens; mean() is diag(E[x x^T]). Same conventions as
//! second_moment: T x n batches, empty batches are no-ops, NaN/Inf rejected naming the batch,
//! exact merge(), sums in Acc with the per-batch column sums in the input or the Acc precision.
template <Scalar Acc = double, Backend B = default_backend>
class diagonal_second_moment {
  static_assert(accessible_from<B, host_space>,
                "yaqa::diagonal_second_moment keeps its sums in host memory");

 public:
  using accumulator_type = Acc;
  using backend_type = B;

  //! Throws invalid_argument when n < 1.
  explicit diagonal_second_moment(index n, accumulate_options options = {}, B backend = B{})
      : n_(n), opt_(options), backend_(std::move(backend)) {
    detail::require(n >= 1, "yaqa::diagonal_second_moment: argument 'n' must be >= 1, got ", n);
    sum_ = vector<Acc>::Zero(n);
  }

  //! Adds the tokens of x (T x n): sum_j += sum_t x_tj^2, count += T.
  template <Scalar T>
  void add(matrix_view<const T> x) {
    constexpr const char* what = "yaqa::diagonal_second_moment::add";
    const std::string where = detail::concat("batch ", batches_, " of diagonal_second_moment");
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

  //! Adds other's sums and counts (same n); exact in the same sense as second_moment::merge.
  void merge(const diagonal_second_moment& other) {
    detail::require<shape_error>(other.n_ == n_,
                                 "yaqa::diagonal_second_moment::merge: argument 'other' has n = ",
                                 other.n_, ", expected ", n_);
    sum_ += other.sum_;
    count_ += other.count_;
    batches_ += other.batches_;
  }

  [[nodiscard]] index count() const { return count_; }
  [[nodiscard]] index batches() const { return batches_; }
  [[nodiscard]] index dim() const { return n_; }
  [[nodiscard]] const accumulate_options& options() const { return opt_; }

  //! sum_t x_tj^2 for each column j.
  [[nodiscard]] vector<Acc> sum() const { return sum_; }
  //! E[x_j^2] = sum / count. Throws invalid_argument when no token was added.
  [[nodiscard]] vector<Acc> mean() const {
    detail::require(count_ > 0,
                    "yaqa::diagonal_second_moment::mean: no tokens were added (count is 0); "
                    "expected at least one non-empty batch");
    return sum_ / static_cast<Acc>(count_);
  }

 private:
  template <class>
  friend struct detail::hessian::state_access;

  template <class C, class T>
  void accumulate(matrix_view<const T> x) {
    // Each column's sum of squares is computed by one thread in the same order whatever the
    // thread count, so the result is deterministic.
    detail::hessian::host_chunks(backend_, n_, [&](index c0, index w) {
      for (index j = c0; j < c0 + w; ++j) {
        const auto col = as_eigen(x.col_block(j, 1));
        C s;
        if constexpr (std::is_same_v<C, T>)
          s = col.squaredNorm();
        else
          s = col.template cast<C>().squaredNorm();
        sum_(j) += static_cast<Acc>(s);
      }
    });
  }

  index n_;
  accumulate_options opt_;
  B backend_;
  vector<Acc> sum_;
  index count_ = 0;
  index batches_ = 0;
};

}  // namespace yaqa
