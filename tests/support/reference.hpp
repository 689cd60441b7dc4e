#pragma once
// Naive reference oracles (triple loops, in long double) that the optimized routines are checked
// against. Areas may add their own oracles in tests/<area>/reference_<name>.hpp.
#include <Eigen/Core>

#include <yaqa/core/config.hpp>

namespace yaqa::test {

//! C = A * B by the textbook triple loop, accumulated in long double.
inline Eigen::MatrixXd naive_gemm(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  Eigen::MatrixXd c(a.rows(), b.cols());
  for (index i = 0; i < a.rows(); ++i)
    for (index j = 0; j < b.cols(); ++j) {
      long double s = 0;
      for (index k = 0; k < a.cols(); ++k) s += (long double)a(i, k) * b(k, j);
      c(i, j) = double(s);
    }
  return c;
}

//! tr(dW H_in dW^T H_out) by explicit sums (the YAQA proxy), long double.
inline double naive_kron_proxy(const Eigen::MatrixXd& dw, const Eigen::MatrixXd& h_in,
                               const Eigen::MatrixXd& h_out) {
  long double s = 0;
  const index m = dw.rows(), n = dw.cols();
  for (index a = 0; a < m; ++a)
    for (index b = 0; b < m; ++b)
      for (index i = 0; i < n; ++i)
        for (index j = 0; j < n; ++j) s += (long double)h_out(a, b) * dw(a, i) * h_in(i, j) * dw(b, j);
  return double(s);
}

}  // namespace yaqa::test
