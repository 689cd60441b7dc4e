#pragma once
//! \file
//! Cross-layer learning (CL, CQE+'s "two-layer-ahead loss"), as an objective: a layer's loss also
//! counts the error it causes at the output of the next layer. Reconstruction (the paper body is
//! not public, docs/refine.md): with X_q the layer's inputs from the already-quantized
//! predecessors (OmniQuant's quantized input stream), Y = the full-precision model's output of
//! this layer, Y2 = the full-precision output of the next layer, and f the next layer applied to
//! this layer's output on the quantized stream,
//!
//!     Z = X_q What^T,   L = lambda_self ||Z - Y||^2 + lambda_next ||f(Z) - Y2||^2
//!     dL/dZ = 2 lambda_self (Z - Y) + lambda_next f'(Z)^T 2 (f(Z) - Y2),   dL/dWhat = (dL/dZ)^T X_q
//!
//! f is caller-supplied (NextLayer): it adds this layer's bias, the residual stream, the
//! normalization and nonlinearity, and the next weight — whatever the model does next — and
//! gives its vector-Jacobian product.
#include <concepts>

#include <yaqa/refine/objective.hpp>

namespace yaqa {

//! The layers after the one being refined, as a differentiable function of its output Z
//! (tokens x m, without bias): `f.forward(Z)` -> tokens x p, `f.backward(Z, dY)` -> dL/dZ
//! (tokens x m) given dL/dY at forward(Z).
template <class F, class T>
concept NextLayer = requires(const F& f, matrix_view<const T> z, matrix_view<const T> dy) {
  { f.forward(z) } -> std::same_as<matrix<T>>;
  { f.backward(z, dy) } -> std::same_as<matrix<T>>;
};

struct cross_layer_options {
  double lambda_self = 1.0;  //!< weight of this layer's own output error (>= 0)
  double lambda_next = 1.0;  //!< weight of the next layer's output error (>= 0)
};

template <Scalar T, class Next, Backend B = default_backend>
  requires NextLayer<Next, T>
class cross_layer_objective {
 public:
  using scalar_type = T;
  //! w: m x n (only its shape is used: the targets carry the full-precision model); x_q: tokens x
  //! n; y: tokens x m; y2: tokens x p (= next.forward's width).
  cross_layer_objective(const B& b, matrix_view<const T> w, matrix_view<const T> x_q, matrix_view<const T> y,
                        Next next, matrix_view<const T> y2, const cross_layer_options& opt = {})
      : b_(b), m_(w.rows), n_(w.cols), x_(x_q), y_(y), y2_(y2), next_(std::move(next)), opt_(opt) {
    constexpr const char* what = "yaqa::cross_layer_objective";
    detail::require<shape_error>(x_q.cols == n_ && x_q.rows >= 1, what, ": argument 'X_q' is ", x_q.rows, "x",
                                 x_q.cols, "; expected tokens x ", n_);
    check_shape(what, "Y", y, x_q.rows, m_);
    detail::require<shape_error>(y2.rows == x_q.rows, what, ": argument 'Y2' has ", y2.rows,
                                 " rows; expected one per token (", x_q.rows, ")");
    detail::require(opt.lambda_self >= 0 && opt.lambda_next >= 0 && opt.lambda_self + opt.lambda_next > 0, what,
                    ": weights lambda_self = ", opt.lambda_self, ", lambda_next = ", opt.lambda_next,
                    " must be >= 0 and not both 0");
  }

  [[nodiscard]] index rows() const { return m_; }
  [[nodiscard]] index cols() const { return n_; }

  [[nodiscard]] objective_value<T> value_and_gradient(matrix_view<const T> w_hat) const {
    constexpr const char* what = "yaqa::cross_layer_objective";
    check_shape(what, "What", w_hat, m_, n_);
    using ops = backend_ops<B>;
    matrix<T> z(x_.rows, m_);
    ops::template gemm<T>(b_, trans::none, trans::transpose, T(1), x_, w_hat, T(0), view(z));
    matrix<T> dz = z - as_eigen(y_);  // Z - Y
    objective_value<T> v;
    v.loss = opt_.lambda_self * dz.template cast<double>().squaredNorm();
    dz *= T(2 * opt_.lambda_self);
    if (opt_.lambda_next > 0) {
      matrix<T> f = next_.forward(view(std::as_const(z)));
      check_shape(what, "next.forward(Z)", view(std::as_const(f)), y2_.rows, y2_.cols);
      f -= as_eigen(y2_);
      v.loss += opt_.lambda_next * f.template cast<double>().squaredNorm();
      f *= T(2 * opt_.lambda_next);
      const matrix<T> back = next_.backward(view(std::as_const(z)), view(std::as_const(f)));
      check_shape(what, "next.backward(Z, dY)", view(back), x_.rows, m_);
      dz += back;
    }
    v.gradient.resize(m_, n_);
    ops::template gemm<T>(b_, trans::transpose, trans::none, T(1), view(std::as_const(dz)), x_, T(0),
                          view(v.gradient));
    return v;
  }

  //! lambda_self ||Y||^2 + lambda_next ||Y2||^2.
  [[nodiscard]] double normalizer() const {
    return opt_.lambda_self * as_eigen(y_).template cast<double>().squaredNorm() +
           opt_.lambda_next * as_eigen(y2_).template cast<double>().squaredNorm();
  }

 private:
  B b_;
  index m_, n_;
  matrix_view<const T> x_, y_, y2_;
  Next next_;
  cross_layer_options opt_;
};

}  // namespace yaqa
