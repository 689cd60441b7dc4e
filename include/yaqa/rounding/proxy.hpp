#pragma once
//! \file
//! The rounding proxies: tr(dW H_in dW^T H_out) (YAQA's objective, vec(dW)^T (H_out ⊗ H_in)
//! vec(dW) with row-major vec) and the one-sided tr(dW H dW^T) (GPTQ/LDLQ's), computed with two
//! GEMMs through the backend: tr(A B) = sum((dW H_in) ∘ (H_out dW)).
//!
//! From the block LDL factors H = L D L^T (block_ldl) the same traces are
//! tr(X D_in X^T D_out) with X = L_out^T dW L_in, O(m n b) once X is known (ldl_proxy); the
//! rounding sweeps return X for their own error (the residual, sweep.hpp), and times_lower /
//! lower_transpose_times form it for any matrix at half a GEMM's flops each.
#include <vector>

#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/linalg/block_diagonal.hpp>
#include <yaqa/rounding/common.hpp>

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

namespace detail {
//! sum over c in [0, count) of f(c0, width) for fixed chunks of `per` items, in chunk order: the
//! same bits for any thread count.
template <class F>
double ordered_sum(const cpu_backend& b, index count, index per, F&& f) {
  std::vector<double> part(static_cast<std::size_t>((count + per - 1) / per), 0.0);
  parallel_chunks(b, count, per, [&](index c0, index w) { part[static_cast<std::size_t>(c0 / per)] = f(c0, w); });
  double sum = 0;
  for (double p : part) sum += p;
  return sum;
}
}  // namespace detail

//! tr(X D_in X^T D_out) for X (m x n) and block-diagonal D_in (n x n), D_out (m x m; null =
//! identity), accumulated in double; m n (b_in + b_out) flops. With X = L_out^T dW L_in and the
//! block LDL factors H = L D L^T this is tr(dW H_in dW^T H_out). Deterministic for any thread count.
template <Scalar T>
double ldl_proxy(const cpu_backend& b, matrix_view<const T> x, const block_diagonal<double>& d_in,
                 const block_diagonal<double>* d_out = nullptr) {
  constexpr const char* what = "yaqa::ldl_proxy";
  detail::require<shape_error>(d_in.n == x.cols && (!d_out || d_out->n == x.rows), what, ": X is ", x.rows, "x",
                               x.cols, ", D_in is ", d_in.n, "x", d_in.n, ", D_out is ", d_out ? d_out->n : x.rows,
                               "x", d_out ? d_out->n : x.rows, "; expected D_in n x n and D_out m x m");
  const index nb = d_in.block_count();
  const auto X = as_eigen(x);
  return detail::ordered_sum(b, nb, std::max<index>(1, (nb + 31) / 32), [&](index k0, index kc) {
    double acc = 0;
    matrix<double> xk, y;
    for (index k = k0; k < k0 + kc; ++k) {
      const index c0 = d_in.offset(k), bw = d_in[k].cols();
      xk = X.middleCols(c0, bw).template cast<double>();
      y.noalias() = xk * d_in[k];  // X_k D_in,k
      if (!d_out) {
        acc += y.cwiseProduct(xk).sum();
        continue;
      }
      for (index a = 0; a < d_out->block_count(); ++a) {
        const index r0 = d_out->offset(a), bh = (*d_out)[a].rows();
        acc += ((*d_out)[a] * xk.middleRows(r0, bh)).cwiseProduct(y.middleRows(r0, bh)).sum();
      }
    }
    return acc;
  });
}

//! tr(X D_in X^T H_out) for X (m x n), block-diagonal D_in and a dense H_out (m x m): one GEMM
//! H_out X (m^2 n flops), then sum((X D_in) ∘ (H_out X)) blockwise in double.
template <Backend B, Scalar T>
double ldl_proxy_dense_out(const B& b, matrix_view<const T> x, const block_diagonal<double>& d_in,
                           matrix_view<const T> h_out) {
  constexpr const char* what = "yaqa::ldl_proxy_dense_out";
  check_shape(what, "H_out", h_out, x.rows, x.rows);
  detail::require<shape_error>(d_in.n == x.cols, what, ": X is ", x.rows, "x", x.cols, ", D_in is ", d_in.n, "x",
                               d_in.n, "; expected D_in n x n");
  matrix<T> hx(x.rows, x.cols);
  backend_ops<B>::template gemm<T>(b, trans::none, trans::none, T(1), h_out, x, T(0), view(hx));
  const auto X = as_eigen(x);
  const index nb = d_in.block_count();
  return detail::ordered_sum(detail::host_backend(b), nb, std::max<index>(1, (nb + 31) / 32), [&](index k0, index kc) {
    double acc = 0;
    for (index k = k0; k < k0 + kc; ++k) {
      const index c0 = d_in.offset(k), bw = d_in[k].cols();
      const matrix<double> y = X.middleCols(c0, bw).template cast<double>() * d_in[k];
      acc += y.cwiseProduct(hx.middleCols(c0, bw).template cast<double>()).sum();
    }
    return acc;
  });
}

//! Products with a lower-triangular L that has exact zeros above its diagonal (as block_ldl
//! returns it), one GEMM per 256-wide chunk over the trapezoid that chunk needs:
//! side::right: X L (X m x n, L n x n; m n^2 flops); side::left: L^T X (L m x m; m^2 n flops).
template <Backend B, Scalar T>
matrix<T> lower_product(const B& b, side s, matrix_view<const T> x, matrix_view<const T> l) {
  const bool right = s == side::right;
  const index k = right ? x.cols : x.rows;
  check_shape(right ? "yaqa::times_lower" : "yaqa::lower_transpose_times", "L", l, k, k);
  matrix<T> y(x.rows, x.cols);
  for (index c0 = 0; c0 < k; c0 += 256) {
    const index c = std::min<index>(256, k - c0);
    if (right)
      backend_ops<B>::template gemm<T>(b, trans::none, trans::none, T(1), x.col_block(c0, k - c0),
                                       l.block(c0, c0, k - c0, c), T(0), view(y).col_block(c0, c));
    else
      backend_ops<B>::template gemm<T>(b, trans::transpose, trans::none, T(1), l.block(c0, c0, k - c0, c),
                                       x.row_block(c0, k - c0), T(0), view(y).row_block(c0, c));
  }
  return y;
}
//! X = W L (see lower_product).
template <Backend B, Scalar T>
matrix<T> times_lower(const B& b, matrix_view<const T> w, matrix_view<const T> l) {
  return lower_product(b, side::right, w, l);
}
//! Y = L^T X (see lower_product).
template <Backend B, Scalar T>
matrix<T> lower_transpose_times(const B& b, matrix_view<const T> l, matrix_view<const T> x) {
  return lower_product(b, side::left, x, l);
}

//! tr(W H W^T) for W (m x n) and symmetric H (n x n, fp64) through G = W^T W (a rank-m update of
//! the lower triangle: m n^2 flops, half a GEMM), plus `shift` ||W||^2 (a damp on H's diagonal).
template <Backend B, Scalar T>
double gram_proxy(const B& b, matrix_view<const T> w, const matrix<double>& h, double shift = 0) {
  check_shape("yaqa::gram_proxy", "H", matrix_view<const double>(h.data(), h.rows(), h.cols(), h.rows()), w.cols,
              w.cols);
  const index n = w.cols;
  matrix<T> g = matrix<T>::Zero(n, n);
  const cpu_backend host = detail::host_backend(b);
  detail::lower_rank_update<T>(host, g, as_eigen(w).transpose(), T(1));
  // sum_ij G_ij H_ij over the lower triangle, off-diagonal entries twice; fixed column chunks.
  return detail::ordered_sum(host, n, detail::chunk_width(n), [&](index c0, index c) {
    double acc = 0;
    for (index j = c0; j < c0 + c; ++j) {
      acc += double(g(j, j)) * (h(j, j) + shift);
      for (index i = j + 1; i < n; ++i) acc += 2.0 * double(g(i, j)) * h(i, j);
    }
    return acc;
  });
}

}  // namespace yaqa
