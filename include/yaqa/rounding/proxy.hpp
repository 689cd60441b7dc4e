#pragma once
//! \file
//! The rounding proxies: tr(dW H_in dW^T H_out) (YAQA's objective, vec(dW)^T (H_out ⊗ H_in)
//! vec(dW) with row-major vec) and the one-sided tr(dW H dW^T) (GPTQ/LDLQ's), computed with two
//! GEMMs through the backend: tr(A B) = sum((dW H_in) ∘ (H_out dW)).
#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/core/eigen.hpp>

namespace yaqa {

//! Both proxies of one difference d (m x n) from a single d H_in product.
struct proxy_pair {
  double two_sided = 0;  //!< tr(d H_in d^T H_out) (H_out = I when none is given)
  double one_sided = 0;  //!< tr(d H_in d^T)
};

//! tr(d H_in d^T H_out) and tr(d H_in d^T) for d (m x n), H_in (n x n), H_out (m x m; empty view
//! = identity). Accumulated in double.
template <Backend B, Scalar T>
proxy_pair kronecker_proxies(const B& b, matrix_view<const T> d, matrix_view<const T> h_in,
                             matrix_view<const T> h_out) {
  constexpr const char* what = "yaqa::kronecker_proxy";
  const index m = d.rows, n = d.cols;
  check_shape(what, "H_in", h_in, n, n);
  matrix<T> a(m, n);
  backend_ops<B>::template gemm<T>(b, trans::none, trans::none, T(1), d, h_in, T(0), view(a));
  const double one = as_eigen(d).template cast<double>().cwiseProduct(a.template cast<double>()).sum();
  if (h_out.empty()) return {one, one};
  check_shape(what, "H_out", h_out, m, m);
  matrix<T> c(m, n);
  backend_ops<B>::template gemm<T>(b, trans::none, trans::none, T(1), h_out, d, T(0), view(c));
  return {c.template cast<double>().cwiseProduct(a.template cast<double>()).sum(), one};
}

//! tr(d H_in d^T H_out) for d (m x n), H_in (n x n), H_out (m x m; empty view = identity).
template <Backend B, Scalar T>
double kronecker_proxy(const B& b, matrix_view<const T> d, matrix_view<const T> h_in, matrix_view<const T> h_out) {
  return kronecker_proxies(b, d, h_in, h_out).two_sided;
}

template <Scalar T>
double kronecker_proxy(matrix_view<const T> d, matrix_view<const T> h_in, matrix_view<const T> h_out) {
  return kronecker_proxy(default_backend{}, d, h_in, h_out);
}

}  // namespace yaqa
