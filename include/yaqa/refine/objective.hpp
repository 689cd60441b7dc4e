#pragma once
//! \file
//! Refinement objectives: a loss of the quantized weight What and its gradient dL/dWhat. The
//! refinement loop (refine.hpp) only asks `value_and_gradient(What)`, so any differentiable
//! layer loss can drive LSI / SDE / LWC. Two are provided here, the cross-layer one in
//! cross_layer.hpp:
//!
//!   kronecker_objective     tr(dW H_in dW^T H_out), dW = What - W          (YAQA's proxy; H_out = I:
//!                           grad 2 H_out dW H_in, 2 GEMMs                   the X^T X objective)
//!   output_error_objective  ||X (What - W)^T||_F^2 on activations X (tokens x n)
//!                           grad 2 (X dW^T)^T X, 2 GEMMs
//!
//! Objectives hold views: the caller keeps W, the factors and the activations alive.
#include <concepts>

#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>

namespace yaqa {

template <Scalar T>
struct objective_value {
  double loss = 0;      //!< accumulated in double
  matrix<T> gradient;   //!< dL/dWhat, m x n
};

//! A layer loss over the quantized weight What (m x n):
//! - `O::scalar_type`; `o.rows()`, `o.cols()`: the shape of What;
//! - `o.value_and_gradient(What)` -> objective_value (loss and dL/dWhat);
//! - `o.normalizer()`: a positive scale for relative figures (the loss of What = 0).
template <class O>
concept RefineObjective = requires(O& o, const O& co, matrix_view<const typename O::scalar_type> w_hat) {
  requires Scalar<typename O::scalar_type>;
  { co.rows() } -> std::convertible_to<index>;
  { co.cols() } -> std::convertible_to<index>;
  { o.value_and_gradient(w_hat) } -> std::same_as<objective_value<typename O::scalar_type>>;
  { co.normalizer() } -> std::convertible_to<double>;
};

namespace detail {
//! sum(a o b) in double.
template <class A, class B2>
double frobenius_dot(const A& a, const B2& b) {
  return a.template cast<double>().cwiseProduct(b.template cast<double>()).sum();
}
}  // namespace detail

//! tr(dW H_in dW^T H_out) with dW = What - W; h_out empty = identity (one-sided, GPTQ/LDLQ).
template <Scalar T, Backend B = default_backend>
class kronecker_objective {
 public:
  using scalar_type = T;
  kronecker_objective(const B& b, matrix_view<const T> w, matrix_view<const T> h_in, matrix_view<const T> h_out)
      : b_(b), w_(w), h_in_(h_in), h_out_(h_out) {
    constexpr const char* what = "yaqa::kronecker_objective";
    check_shape(what, "H_in", h_in, w.cols, w.cols);
    if (!h_out.empty()) check_shape(what, "H_out", h_out, w.rows, w.rows);
  }
  kronecker_objective(matrix_view<const T> w, matrix_view<const T> h_in, matrix_view<const T> h_out)
      : kronecker_objective(B{}, w, h_in, h_out) {}

  [[nodiscard]] index rows() const { return w_.rows; }
  [[nodiscard]] index cols() const { return w_.cols; }

  [[nodiscard]] objective_value<T> value_and_gradient(matrix_view<const T> w_hat) const {
    check_shape("yaqa::kronecker_objective", "What", w_hat, w_.rows, w_.cols);
    const matrix<T> e = as_eigen(w_hat) - as_eigen(w_);
    return of_difference(view(e));
  }
  //! tr(W H_in W^T H_out): the loss of What = 0.
  [[nodiscard]] double normalizer() const { return of_difference(w_).loss; }

 private:
  objective_value<T> of_difference(matrix_view<const T> e) const {
    using ops = backend_ops<B>;
    matrix<T> a(e.rows, e.cols);
    ops::template gemm<T>(b_, trans::none, trans::none, T(1), e, h_in_, T(0), view(a));
    objective_value<T> v;
    if (!h_out_.empty()) {
      v.gradient.resize(e.rows, e.cols);
      ops::template gemm<T>(b_, trans::none, trans::none, T(1), h_out_, view(std::as_const(a)), T(0), view(v.gradient));
    } else {
      v.gradient = std::move(a);
    }
    v.loss = detail::frobenius_dot(as_eigen(e), v.gradient);
    v.gradient *= T(2);
    return v;
  }

  B b_;
  matrix_view<const T> w_, h_in_, h_out_;
};

//! ||X (What - W)^T||_F^2 for calibration activations X (tokens x n, one token per row).
template <Scalar T, Backend B = default_backend>
class output_error_objective {
 public:
  using scalar_type = T;
  output_error_objective(const B& b, matrix_view<const T> w, matrix_view<const T> x) : b_(b), w_(w), x_(x) {
    detail::require<shape_error>(x.cols == w.cols && x.rows >= 1, "yaqa::output_error_objective: argument 'X' is ",
                                 x.rows, "x", x.cols, "; expected tokens x ", w.cols, " (tokens >= 1)");
  }
  output_error_objective(matrix_view<const T> w, matrix_view<const T> x) : output_error_objective(B{}, w, x) {}

  [[nodiscard]] index rows() const { return w_.rows; }
  [[nodiscard]] index cols() const { return w_.cols; }

  [[nodiscard]] objective_value<T> value_and_gradient(matrix_view<const T> w_hat) const {
    check_shape("yaqa::output_error_objective", "What", w_hat, w_.rows, w_.cols);
    const matrix<T> e = as_eigen(w_hat) - as_eigen(w_);
    return of_difference(view(e));
  }
  [[nodiscard]] double normalizer() const { return of_difference(w_).loss; }

 private:
  objective_value<T> of_difference(matrix_view<const T> e) const {
    using ops = backend_ops<B>;
    matrix<T> y(x_.rows, e.rows);  // X dW^T
    ops::template gemm<T>(b_, trans::none, trans::transpose, T(1), x_, e, T(0), view(y));
    objective_value<T> v;
    v.loss = y.template cast<double>().squaredNorm();
    v.gradient.resize(e.rows, e.cols);
    ops::template gemm<T>(b_, trans::transpose, trans::none, T(2), view(std::as_const(y)), x_, T(0), view(v.gradient));
    return v;
  }

  B b_;
  matrix_view<const T> w_, x_;
};

}  // namespace yaqa
