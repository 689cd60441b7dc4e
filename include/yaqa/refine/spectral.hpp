#pragma once
//! \file
//! The spectral frame of LSI / SDE: the thin SVD W = U diag(sigma) V^T (fp64, Eigen's BDCSVD),
//! the learnable matrix D restricted to a pattern, W' = W + U D V^T (the delta form: D = 0 gives
//! W' == W exactly, with no SVD round-off), and the gradient dL/dD = P o (U^T G V).
//!
//! Storage of D (spectral_params): the banded part (diag = band:0, band:K, and the diagonal of
//! topleft:K) as an r x (2K+1) matrix, column K + d holding D[j+d, j] in row j (cells outside
//! the matrix stay 0); the dense part (topleft:K's K x K block, whose diagonal stays 0 because
//! the banded part owns it, or full's r x r) as a matrix. Cells outside the pattern get a zero
//! gradient, so an optimizer started at D = 0 keeps them at 0.
//! Cost: materialize O(m r (2K+1)) + one GEMM m x r x n (+ m x K x K for the dense part);
//! gradient one GEMM m x n x r + O(m r (2K+1)) (+ K x m x K). Deterministic for any thread
//! count (backend GEMMs and column loops split by shape only).
#include <algorithm>
#include <cmath>

#include <Eigen/SVD>

#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/refine/pattern.hpp>
#include <yaqa/rounding/common.hpp>

namespace yaqa {

//! U (m x r) and V (n x r) with orthonormal columns, sigma descending (r = min(m, n), or a
//! truncated rank). Sign convention: the largest-|.| entry of each u_i is positive (first one on
//! ties), so the basis does not depend on the SVD routine's sign choices.
template <Scalar T>
struct spectral_basis {
  matrix<T> u, v;
  vector<double> sigma;
  [[nodiscard]] index rows() const { return u.rows(); }
  [[nodiscard]] index cols() const { return v.rows(); }
  [[nodiscard]] index rank() const { return u.cols(); }
};

//! Thin SVD of w in double (single-threaded Eigen BDCSVD: the result does not depend on the
//! thread count). rank < 0: min(m, n); else keep the leading `rank` directions (1 <= rank <=
//! min(m, n)).
template <Scalar T>
spectral_basis<T> make_spectral_basis(matrix_view<const T> w, index rank = -1) {
  constexpr const char* what = "yaqa::make_spectral_basis";
  const index m = w.rows, n = w.cols, full = std::min(m, n);
  detail::require<shape_error>(m >= 1 && n >= 1, what, ": argument 'W' must be non-empty, got ", m, "x", n);
  detail::require(rank < 0 || (rank >= 1 && rank <= full), what, ": option 'rank' must be in [1, ", full,
                  "] (or < 0 for the full rank), got ", rank);
  check_finite(what, "W", w);
  const index r = rank < 0 ? full : rank;
  detail::serial_eigen_scope serial;
  const matrix<double> wd = as_eigen(w).template cast<double>();
  Eigen::BDCSVD<matrix<double>> svd(wd, Eigen::ComputeThinU | Eigen::ComputeThinV);
  matrix<double> u = svd.matrixU().leftCols(r), v = svd.matrixV().leftCols(r);
  for (index i = 0; i < r; ++i) {
    index arg = 0;
    for (index k = 1; k < m; ++k)
      if (std::abs(u(k, i)) > std::abs(u(arg, i))) arg = k;
    if (u(arg, i) < 0) {
      u.col(i) = -u.col(i);
      v.col(i) = -v.col(i);
    }
  }
  spectral_basis<T> b;
  b.u = u.cast<T>();
  b.v = v.cast<T>();
  b.sigma = svd.singularValues().head(r);
  return b;
}

//! The learnable D of one layer (see the file comment for the layout).
template <Scalar T>
struct spectral_params {
  sde_pattern pattern;
  index rank = 0;
  matrix<T> bands;  //!< r x (2K+1) (diag: r x 1; topleft: r x 1; full: empty)
  matrix<T> block;  //!< topleft: K x K; full: r x r; otherwise empty

  //! D = 0 for `pattern` at rank r (validated).
  static spectral_params zeros(const sde_pattern& p, index r) {
    p.validate(r, "yaqa::spectral_params");
    spectral_params s;
    s.pattern = p;
    s.rank = r;
    const index half = p.shape == sde_shape::band ? p.k : 0;
    if (p.shape != sde_shape::full) s.bands.setZero(r, 2 * half + 1);
    if (p.shape == sde_shape::topleft) s.block.setZero(p.k, p.k);
    if (p.shape == sde_shape::full) s.block.setZero(r, r);
    return s;
  }
  [[nodiscard]] index half_width() const { return bands.cols() > 0 ? (bands.cols() - 1) / 2 : 0; }

  //! D as a dense r x r matrix (tests, reports).
  [[nodiscard]] matrix<T> dense() const {
    matrix<T> d = matrix<T>::Zero(rank, rank);
    const index h = half_width();
    for (index c = 0; c < bands.cols(); ++c) {
      const index off = c - h;
      for (index j = std::max<index>(0, -off); j < std::min(rank, rank - off); ++j) d(j + off, j) = bands(j, c);
    }
    if (block.size() > 0) {
      for (index j = 0; j < block.cols(); ++j)
        for (index i = 0; i < block.rows(); ++i)
          if (pattern.shape == sde_shape::full || i != j) d(i, j) += block(i, j);
    }
    return d;
  }
  //! ||D||_F (= ||U D V^T||_F = ||W' - W||_F), accumulated in double.
  [[nodiscard]] double norm() const {
    return std::sqrt(bands.template cast<double>().squaredNorm() + block.template cast<double>().squaredNorm());
  }
  //! Every stored value (bands, then block), for optimizers: f(pointer, count).
  template <class F>
  void for_each_array(F&& f) {
    if (bands.size() > 0) f(bands.data(), bands.size());
    if (block.size() > 0) f(block.data(), block.size());
  }
};

namespace detail {

//! Column chunk width for the banded loops: one chunk unless the work (r (2K+1) m multiply-adds)
//! pays for a parallel region.
inline index banded_chunk(index r, index width, index m) {
  return double(r) * double(width) * double(m) < 4e6 ? std::max<index>(r, 1) : chunk_width(r, 16);
}

//! out.col(j) (+)= sum_d bands(j, h + d) * src.col(j + d): the banded part of src * D.
template <Scalar T>
void banded_times(const cpu_backend& b, const matrix<T>& src, const matrix<T>& bands, matrix<T>& out) {
  const index r = bands.rows(), h = (bands.cols() - 1) / 2;
  parallel_chunks(b, r, banded_chunk(r, bands.cols(), src.rows()), [&](index j0, index w) {
    for (index j = j0; j < j0 + w; ++j)
      for (index c = 0; c < bands.cols(); ++c) {
        const index i = j + c - h;
        if (i >= 0 && i < r) out.col(j).noalias() += bands(j, c) * src.col(i);
      }
  });
}

}  // namespace detail

//! U D V^T (m x n) for the basis and parameters.
template <Backend B, Scalar T>
matrix<T> spectral_delta(const B& b, const spectral_basis<T>& basis, const spectral_params<T>& d) {
  constexpr const char* what = "yaqa::spectral_delta";
  detail::require<shape_error>(d.rank == basis.rank(), what, ": D has rank ", d.rank, ", the basis ", basis.rank());
  using ops = backend_ops<B>;
  const index m = basis.rows(), n = basis.cols(), r = basis.rank();
  matrix<T> ud = matrix<T>::Zero(m, r);
  if (d.bands.size() > 0) detail::banded_times(b, basis.u, d.bands, ud);
  if (d.block.size() > 0) {
    const index k = d.block.rows();
    ops::template gemm<T>(b, trans::none, trans::none, T(1), view(basis.u).col_block(0, k), view(d.block), T(1),
                          view(ud).col_block(0, k));
    if (d.pattern.shape == sde_shape::topleft)  // the banded part owns the diagonal
      for (index i = 0; i < k; ++i) ud.col(i).noalias() -= d.block(i, i) * basis.u.col(i);
  }
  matrix<T> out(m, n);
  ops::template gemm<T>(b, trans::none, trans::transpose, T(1), view(std::as_const(ud)), view(basis.v), T(0),
                        view(out));
  return out;
}

//! dL/dD = P o (U^T G V) for G = dL/dW' (m x n), in D's storage layout.
template <Backend B, Scalar T>
spectral_params<T> spectral_gradient(const B& b, const spectral_basis<T>& basis, const spectral_params<T>& like,
                                     matrix_view<const T> g) {
  constexpr const char* what = "yaqa::spectral_gradient";
  check_shape(what, "G", g, basis.rows(), basis.cols());
  using ops = backend_ops<B>;
  const index m = basis.rows(), r = basis.rank();
  matrix<T> gv(m, r);
  ops::template gemm<T>(b, trans::none, trans::none, T(1), g, view(basis.v), T(0), view(gv));
  spectral_params<T> out = spectral_params<T>::zeros(like.pattern, like.rank);
  if (out.bands.size() > 0) {
    const index h = out.half_width();
    detail::parallel_chunks(detail::host_backend(b), r, detail::banded_chunk(r, out.bands.cols(), m),
                            [&](index j0, index w) {
      for (index j = j0; j < j0 + w; ++j)
        for (index c = 0; c < out.bands.cols(); ++c) {
          const index i = j + c - h;
          if (i >= 0 && i < r) out.bands(j, c) = basis.u.col(i).dot(gv.col(j));
        }
    });
  }
  if (out.block.size() > 0) {
    const index k = out.block.rows();
    ops::template gemm<T>(b, trans::transpose, trans::none, T(1), view(basis.u).col_block(0, k),
                          view(std::as_const(gv)).col_block(0, k), T(0), view(out.block));
    if (out.pattern.shape == sde_shape::topleft) out.block.diagonal().setZero();
  }
  return out;
}

}  // namespace yaqa
