#pragma once
// Naive oracles for the Hessian accumulators and sketches: explicit per-token (or per-sequence)
// loops accumulated in long double, straight from the formulas of yaqa-algorithm.md §2.
#include <utility>
#include <vector>

#include <Eigen/Core>

#include <yaqa/core/config.hpp>

namespace yaqa::test {

//! One batch (or sequence): x is T x n, g is T x m (row t = token t).
struct token_batch {
  Eigen::MatrixXd x, g;
};

using ld_matrix = Eigen::Matrix<long double, Eigen::Dynamic, Eigen::Dynamic>;

//! sum over all tokens of x x^T.
inline Eigen::MatrixXd naive_xtx_sum(const std::vector<token_batch>& data, yaqa::index n) {
  ld_matrix s = ld_matrix::Zero(n, n);
  for (const auto& b : data)
    for (yaqa::index t = 0; t < b.x.rows(); ++t)
      for (yaqa::index i = 0; i < n; ++i)
        for (yaqa::index j = 0; j < n; ++j) s(i, j) += (long double)b.x(t, i) * b.x(t, j);
  return s.cast<double>();
}

//! x^T h x in long double.
inline long double naive_quadratic(const Eigen::MatrixXd& rowvec_src, yaqa::index row, const Eigen::MatrixXd& h) {
  long double s = 0;
  for (yaqa::index i = 0; i < h.rows(); ++i)
    for (yaqa::index j = 0; j < h.cols(); ++j)
      s += (long double)rowvec_src(row, i) * h(i, j) * rowvec_src(row, j);
  return s;
}

//! Sketch A pass by pass (H_in, H_out after each pass; H_out is empty before pass 1).
struct naive_a_state {
  Eigen::MatrixXd h_in, h_out;
};
inline std::vector<naive_a_state> naive_sketch_a(const std::vector<token_batch>& data, yaqa::index n,
                                                 yaqa::index m, int passes) {
  std::vector<naive_a_state> out;
  naive_a_state st;
  for (int p = 0; p < passes; ++p) {
    const bool odd = p % 2 == 1;
    const yaqa::index k = odd ? m : n;
    ld_matrix s = ld_matrix::Zero(k, k);
    long double count = 0;
    for (const auto& b : data)
      for (yaqa::index t = 0; t < b.x.rows(); ++t) {
        count += 1;
        long double w = 1;
        if (p > 0) w = odd ? naive_quadratic(b.x, t, st.h_in) : naive_quadratic(b.g, t, st.h_out);
        const Eigen::MatrixXd& z = odd ? b.g : b.x;
        for (yaqa::index i = 0; i < k; ++i)
          for (yaqa::index j = 0; j < k; ++j) s(i, j) += w * z(t, i) * z(t, j);
      }
    long double norm2 = 1;
    if (p > 0) norm2 = (long double)(odd ? st.h_in : st.h_out).squaredNorm();
    const Eigen::MatrixXd f = (s / (count * norm2)).cast<double>();
    (odd ? st.h_out : st.h_in) = f;
    out.push_back(st);
  }
  return out;
}

//! G_s = sum_t g_t x_t^T (m x n) by explicit outer products.
inline ld_matrix naive_sequence_gradient(const token_batch& s) {
  ld_matrix gs = ld_matrix::Zero(s.g.cols(), s.x.cols());
  for (yaqa::index t = 0; t < s.x.rows(); ++t)
    for (yaqa::index a = 0; a < s.g.cols(); ++a)
      for (yaqa::index i = 0; i < s.x.cols(); ++i) gs(a, i) += (long double)s.g(t, a) * s.x(t, i);
  return gs;
}

//! Sketch B: (mean_s G_s^T G_s, mean_s G_s G_s^T) over the non-empty sequences.
inline std::pair<Eigen::MatrixXd, Eigen::MatrixXd> naive_sketch_b(const std::vector<token_batch>& seqs) {
  const yaqa::index n = seqs.front().x.cols(), m = seqs.front().g.cols();
  ld_matrix hin = ld_matrix::Zero(n, n), hout = ld_matrix::Zero(m, m);
  long double count = 0;
  for (const auto& s : seqs) {
    if (s.x.rows() == 0) continue;
    const ld_matrix gs = naive_sequence_gradient(s);
    hin += gs.transpose() * gs;
    hout += gs * gs.transpose();
    count += 1;
  }
  return {(hin / count).cast<double>(), (hout / count).cast<double>()};
}

}  // namespace yaqa::test
