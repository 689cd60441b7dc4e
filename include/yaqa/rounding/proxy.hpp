#pragma once
//! \file
//! The rounding proxies: tr(dW H_in dW^T H_out) (YAQA's objective, vec(dW)^T (H_out ⊗ H_in)
//! vec(dW) with row-major vec) and the one-sided tr(dW H dW^T) (GPTQ/LDLQ's), computed with two
//! GEMMs through the backend: tr(A B) = sum((dW H_in) ∘ (H_out dW)).
#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/core/eigen.hpp>

namespace yaqa {

//! tr(d H_in d^T H_out) for d (m x n), H_in (n x n), H_out (m x m; empty view = identity).
//! Accumulated in double.
template <Backend B, Scalar T>
double kronecker_proxy(const B& b, matrix_view<const T> d, matrix_view<const T> h_in, matrix_view<const T> h_out) {
  constexpr const char* what = "yaqa::kronecker_proxy";
  const index m = d.rows, n = d.cols;
  check_shape(what, "H_in", h_in, n, n);
  matrix<T> a(m, n);
  backend_ops<B>::template gemm<T>(b, trans::none, trans::none, T(1), d, h_in, T(0), view(a));
  if (h_out.empty()) return as_eigen(d).template cast<double>().cwiseProduct(a.template cast<double>()).sum();
  check_shape(what, "H_out", h_out, m, m);
  matrix<T> c(m, n);
  backend_ops<B>::template gemm<T>(b, trans::none, trans::none, T(1), h_out, d, T(0), view(c));
  return c.template cast<double>().cwiseProduct(a.template cast<double>()).sum();
}

template <Scalar T>
double kronecker_proxy(matrix_view<const T> d, matrix_view<const T> h_in, matrix_view<const T> h_out) {
  return kronecker_proxy(default_backend{}, d, h_in, h_out);
}

}  // namespace yaqa
