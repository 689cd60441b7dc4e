#pragma once
// Seeded random inputs for tests: Gaussian matrices, SPD matrices with a chosen condition number,
// Kronecker-structured Hessians. Everything is generated in double and cast, so float and double
// tests see the same values.
#include <cmath>
#include <cstdint>
#include <random>

#include <Eigen/Dense>

#include <yaqa/core/eigen.hpp>

namespace yaqa::test {

inline std::mt19937_64 make_rng(std::uint64_t seed) { return std::mt19937_64(seed * 0x9E3779B97F4A7C15ull + 1); }

//! rows x cols matrix of independent N(0, sigma^2) entries.
template <class T>
matrix<T> random_matrix(index rows, index cols, std::uint64_t seed, double sigma = 1.0) {
  auto g = make_rng(seed);
  std::normal_distribution<double> nd(0.0, sigma);
  Eigen::MatrixXd m(rows, cols);
  for (index j = 0; j < cols; ++j)
    for (index i = 0; i < rows; ++i) m(i, j) = nd(g);
  return m.cast<T>();
}

//! Random orthogonal n x n matrix (Q of a Gaussian matrix, sign-fixed so it is Haar distributed).
inline Eigen::MatrixXd random_orthogonal(index n, std::uint64_t seed) {
  const Eigen::MatrixXd a = random_matrix<double>(n, n, seed);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(a);
  Eigen::MatrixXd q = qr.householderQ();
  const Eigen::MatrixXd r = qr.matrixQR().triangularView<Eigen::Upper>();
  for (index j = 0; j < n; ++j)
    if (r(j, j) < 0) q.col(j) *= -1.0;
  return q;
}

//! SPD n x n matrix with eigenvalues log-spaced from 1 down to 1/cond (condition number cond),
//! in a random orthogonal basis, scaled by `scale`.
template <class T>
matrix<T> random_spd(index n, double cond, std::uint64_t seed, double scale = 1.0) {
  const Eigen::MatrixXd q = random_orthogonal(n, seed);
  Eigen::VectorXd ev(n);
  for (index i = 0; i < n; ++i)
    ev(i) = scale * std::pow(cond, -(n > 1 ? double(i) / double(n - 1) : 0.0));
  Eigen::MatrixXd h = q * ev.asDiagonal() * q.transpose();
  h = 0.5 * (h + h.transpose()).eval();
  return h.cast<T>();
}

//! A "calibration-like" second moment: X^T X / t for t correlated Gaussian rows of width n
//! (a few dominant directions, like real activations). SPD when t >= n.
template <class T>
matrix<T> random_second_moment(index n, index t, std::uint64_t seed) {
  const Eigen::MatrixXd mix = random_matrix<double>(n, n, seed ^ 0xABCDu);
  Eigen::VectorXd colscale(n);
  for (index i = 0; i < n; ++i) colscale(i) = 1.0 / (1.0 + 0.3 * double(i % 7));
  const Eigen::MatrixXd x = random_matrix<double>(t, n, seed) * mix * colscale.asDiagonal();
  return (x.transpose() * x / double(t)).cast<T>();
}

//! Layer weights: N(0, 1/n) entries with a few larger outlier columns.
template <class T>
matrix<T> random_weights(index m, index n, std::uint64_t seed) {
  Eigen::MatrixXd w = random_matrix<double>(m, n, seed, 1.0 / std::sqrt(double(n)));
  for (index j = 0; j < n; j += 17) w.col(j) *= 3.0;
  return w.cast<T>();
}

}  // namespace yaqa::test
