#pragma once
// Naive oracles for the linalg area, in long double and by textbook recurrences that share no
// code (and no algorithm) with the library: the block LDL by its defining recurrence (not via
// Cholesky), the inverse by Gauss-Jordan elimination with partial pivoting.
#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include <yaqa/core/config.hpp>

namespace yaqa::test {

using matrix_ld = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;

//! Gauss-Jordan inverse with partial pivoting (long double).
inline matrix_ld naive_inverse(matrix_ld a) {
  const index n = a.rows();
  matrix_ld inv = matrix_ld::Identity(n, n);
  for (index c = 0; c < n; ++c) {
    index piv = c;
    for (index r = c + 1; r < n; ++r)
      if (std::abs(a(r, c)) > std::abs(a(piv, c))) piv = r;
    a.row(c).swap(a.row(piv));
    inv.row(c).swap(inv.row(piv));
    const long double d = a(c, c);
    a.row(c) /= d;
    inv.row(c) /= d;
    for (index r = 0; r < n; ++r) {
      if (r == c) continue;
      const long double f = a(r, c);
      if (f == 0) continue;
      a.row(r) -= f * a.row(c);
      inv.row(r) -= f * inv.row(c);
    }
  }
  return inv;
}

inline Eigen::MatrixXd naive_inverse(const Eigen::MatrixXd& a) {
  return naive_inverse(matrix_ld(a.cast<long double>())).cast<double>();
}

//! H = L D L^T by the block recurrence, block column by block column (last block = remainder):
//!   T = H[s:, s:e] - sum_{earlier blocks q} L[s:, q] D_q L[s:e, q]^T
//!   D_k = T[s:e, :],  L[e:, s:e] = T[e:, :] D_k^{-1},  L[s:e, s:e] = I.
inline std::pair<Eigen::MatrixXd, Eigen::MatrixXd> naive_block_ldl(const Eigen::MatrixXd& h, index b) {
  const index n = h.rows();
  matrix_ld l = matrix_ld::Zero(n, n), d = matrix_ld::Zero(n, n);
  matrix_ld ld_prod = matrix_ld::Zero(n, n);  // L D, filled block column by block column
  for (index s = 0; s < n; s += b) {
    const index e = std::min(n, s + b), bs = e - s;
    matrix_ld t(n - s, bs);
    for (index j = s; j < e; ++j)
      for (index i = s; i < n; ++i) {
        long double v = h(i, j);
        for (index q = 0; q < s; ++q) v -= ld_prod(i, q) * l(j, q);
        t(i - s, j - s) = v;
      }
    const matrix_ld dk = t.topRows(bs);
    d.block(s, s, bs, bs) = dk;
    const matrix_ld dinv = naive_inverse(dk);
    for (index i = s; i < e; ++i) l(i, i) = 1;
    for (index i = e; i < n; ++i)
      for (index j = 0; j < bs; ++j) {
        long double v = 0;
        for (index q = 0; q < bs; ++q) v += t(i - s, q) * dinv(q, j);
        l(i, s + j) = v;
      }
    for (index i = s; i < n; ++i)
      for (index j = 0; j < bs; ++j) {
        long double v = 0;
        for (index q = 0; q < bs; ++q) v += l(i, s + q) * dk(q, j);
        ld_prod(i, s + j) = v;
      }
  }
  return {l.cast<double>(), d.cast<double>()};
}

}  // namespace yaqa::test
