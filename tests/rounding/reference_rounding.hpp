#pragma once
// Naive oracles for the rounding tests: block LDL by definition, the YAQA reference ordering
// (anti-diagonal wavefronts from the bottom-right, the duplicated diagonal included, Ŵ zero
// initialised, feedback from full slices — O(m^2 n^2 / td)), and the GPTQ reference loop.
#include <algorithm>
#include <cstdint>
#include <vector>

#include <Eigen/Dense>

#include <support/generators.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/rounding/common.hpp>

namespace yaqa::test {

//! Block LDL by definition: H = C C^T, L = C blockdiag(C_kk)^{-1} (diagonal blocks set to I),
//! D_k = C_kk C_kk^T. Returns L (unit block-lower); b must divide n.
inline Eigen::MatrixXd naive_block_ldl_L(const Eigen::MatrixXd& h, yaqa::index b, Eigen::MatrixXd* d = nullptr) {
  const yaqa::index n = h.rows();
  const Eigen::MatrixXd c = h.llt().matrixL();
  Eigen::MatrixXd l = Eigen::MatrixXd::Zero(n, n);
  if (d) d->setZero(n, n);
  for (yaqa::index k = 0; k < n; k += b) {
    const yaqa::index w = std::min(b, n - k);
    const Eigen::MatrixXd ckk = c.block(k, k, w, w);
    const Eigen::MatrixXd inv = ckk.inverse();
    l.block(k, k, n - k, w) = c.block(k, k, n - k, w) * inv;
    l.block(k, k, w, w).setIdentity();
    if (d) d->block(k, k, w, w) = ckk * ckk.transpose();
  }
  return l;
}

//! L' = L with its td x td diagonal blocks zeroed.
inline Eigen::MatrixXd strictly_block_lower(Eigen::MatrixXd l, yaqa::index td) {
  for (yaqa::index k = 0; k < l.rows(); k += td) l.block(k, k, td, td).setZero();
  return l;
}

//! The reference ordering of the official YAQA code, transcribed naively.
template <class Q>
rounded<Q> reference_yaqa(const Q& q, const matrix<typename Q::scalar_type>& w,
                          const matrix<typename Q::scalar_type>& l_in, const matrix<typename Q::scalar_type>& l_out,
                          yaqa::index tdx, yaqa::index tdy) {
  using T = typename Q::scalar_type;
  const yaqa::index m = w.rows(), n = w.cols(), M = m / tdx, N = n / tdy;
  const matrix<T> li = strictly_block_lower(l_in.template cast<double>(), tdy).template cast<T>();
  const matrix<T> lo = strictly_block_lower(l_out.template cast<double>(), tdx).template cast<T>();
  rounded<Q> r = detail::make_rounded<Q>(m, n);
  const yaqa::index g = q.group_cols(n);
  r.params = detail::fit_groups(q, view(w), g);
  // start points (M-1-i, N-1) for i < M, then (0, N-1-i) for i < N: the diagonal through
  // (0, N-1) is visited twice, as in the reference.
  std::vector<std::pair<yaqa::index, yaqa::index>> starts;
  for (yaqa::index i = 0; i < M; ++i) starts.emplace_back(M - 1 - i, N - 1);
  for (yaqa::index i = 0; i < N; ++i) starts.emplace_back(0, N - 1 - i);
  matrix<T> tile(tdx, tdy), recon(tdx, tdy);
  for (auto [a, k] : starts) {
    for (; a < M && k >= 0; ++a, --k) {
      const yaqa::index a0 = a * tdx, k0 = k * tdy;
      const matrix<T> e = w - r.weights;  // zero-initialised What: E = W on unvisited tiles
      const auto lo_col = lo.block(a0, a0, m - a0, tdx);          // L_O'[a:, a]
      const auto li_col = li.block(k0, k0, n - k0, tdy);          // L_I'[k:, k]
      const auto e_br = e.block(a0, k0, m - a0, n - k0);           // E[a:, k:]
      tile = w.block(a0, k0, tdx, tdy);
      tile += lo_col.transpose() * (e_br * li_col);
      tile += lo_col.transpose() * e.block(a0, k0, m - a0, tdy);
      tile += e.block(a0, k0, tdx, n - k0) * li_col;
      detail::quantize_region(q, r, g, view(std::as_const(tile)), a0, k0, view(recon), view(r.codes));
      r.weights.block(a0, k0, tdx, tdy) = recon;
    }
  }
  return r;
}

//! tr(dW H_in dW^T H_out) in double.
template <class A, class B, class C>
double proxy(const A& dw, const B& h_in, const C& h_out) {
  const Eigen::MatrixXd d = dw.template cast<double>();
  return (d * h_in.template cast<double>() * d.transpose() * h_out.template cast<double>()).trace();
}

//! A two-sided rounding problem: W m x n (outliers scaled by 4), H_in from correlated
//! activations, H_out SPD with condition 1e3, and their unit block-lower L's by definition
//! (naive_block_ldl_L with blocks td_y and td_x; zeros above).
template <class T>
struct kronecker_layer {
  matrix<T> w, h_in, h_out, l_in, l_out;
};

template <class T>
kronecker_layer<T> make_kronecker_layer(yaqa::index m, yaqa::index n, yaqa::index tdx, yaqa::index tdy,
                                        std::uint64_t seed) {
  kronecker_layer<T> p;
  p.w = random_weights<T>(m, n, seed) * T(4);
  const Eigen::MatrixXd hin = random_second_moment<double>(n, 3 * n, seed + 1);
  const Eigen::MatrixXd hout = random_spd<double>(m, 1e3, seed + 2);
  p.h_in = hin.cast<T>();
  p.h_out = hout.cast<T>();
  p.l_in = naive_block_ldl_L(hin, tdy).cast<T>();
  p.l_out = naive_block_ldl_L(hout, tdx).cast<T>();
  return p;
}

}  // namespace yaqa::test
