#pragma once
//! \file
//! backend_ops<cpu_backend>: dense kernels on Eigen.
//!
//! Determinism: every op splits its output into chunks whose boundaries depend only on the
//! problem shape, and each chunk is computed by one thread with Eigen's single-threaded kernels.
//! The result is therefore bit-identical for any thread count (Eigen's own GEMM threading picks
//! blocking sizes from the thread count, which changes summation order; we never use it).
#include <algorithm>
#include <cmath>

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include <yaqa/backend/backend.hpp>
#include <yaqa/backend/cpu/backend.hpp>
#include <yaqa/core/eigen.hpp>

namespace yaqa {
namespace detail {

//! Chunk width for splitting a dimension of length `extent`: fixed by the shape only.
inline index chunk_width(index extent, index minimum = 64) {
  const index target = (extent + 15) / 16;  // about 16 chunks, at least `minimum` wide
  const index w = std::max(minimum, (target + 31) / 32 * 32);
  return std::min(std::max<index>(extent, 1), w);
}

//! Runs f(begin, length) over the chunks of [0, extent), in parallel over `threads` threads.
//! Inside, Eigen sees a team of more than one thread (or max-threads 1) and stays serial.
template <class F>
void parallel_chunks(const cpu_backend& b, index extent, index width, F&& f) {
  if (extent <= 0) return;
  const index chunks = (extent + width - 1) / width;
#if defined(_OPENMP)
  const int t = static_cast<int>(std::min<index>(b.thread_count(), chunks));
  if (t > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(t)
    for (index c = 0; c < chunks; ++c) {
      const index s = c * width;
      f(s, std::min(width, extent - s));
    }
    return;
  }
  // One thread: keep Eigen from opening its own (thread-count dependent) parallel GEMM.
#pragma omp parallel num_threads(1)
  {
    omp_set_num_threads(1);  // affects only this region's implicit task
    for (index c = 0; c < chunks; ++c) {
      const index s = c * width;
      f(s, std::min(width, extent - s));
    }
  }
#else
  (void)b;
  for (index c = 0; c < chunks; ++c) {
    const index s = c * width;
    f(s, std::min(width, extent - s));
  }
#endif
}

//! Multiply-adds below which backend_ops<cpu_backend>::gemm stays on one thread (about 2 MFLOP,
//! some tens of microseconds on one core).
inline constexpr double gemm_parallel_min_macs = double(1 << 20);

template <class T>
void scale_in_place(Eigen::Ref<matrix<T>, 0, Eigen::OuterStride<>> c, T beta) {
  if (beta == T(0))
    c.setZero();  // BLAS semantics: beta == 0 ignores (possibly NaN) contents
  else if (beta != T(1))
    c *= beta;
}

//! C_lower += alpha * A * A^T on the lower triangle of C (n x n), A n x k. The strict upper
//! triangle is never written (the in-place factorization keeps its copy of H there).
template <class T, class MapC, class MapA>
void lower_rank_update(const cpu_backend& b, MapC&& c, const MapA& a, T alpha, index min_chunk = 64) {
  const index n = c.rows();
  const index w = chunk_width(n, min_chunk);
  parallel_chunks(b, n, w, [&](index c0, index cw) {
    // columns [c0, c0+cw) of the lower triangle: the cw x cw triangle on the diagonal, then the
    // rectangle below it
    c.block(c0, c0, cw, cw).template selfadjointView<Eigen::Lower>().rankUpdate(a.middleRows(c0, cw), alpha);
    const index below = n - c0 - cw;
    if (below > 0)
      c.block(c0 + cw, c0, below, cw).noalias() += alpha * a.middleRows(c0 + cw, below) * a.middleRows(c0, cw).transpose();
  });
}

}  // namespace detail

//! CPU backend operations. All views are host views; every op validates shapes.
template <>
struct backend_ops<cpu_backend> {
  //! C = alpha * op(A) * op(B) + beta * C.
  //! - C is m x n; op(A) m x k; op(B) k x n.
  //! - beta == 0 overwrites C (its prior contents, even NaN, are ignored).
  template <Scalar T>
  static void gemm(const cpu_backend& b, trans ta, trans tb, T alpha, matrix_view<const T> a,
                   matrix_view<const T> bm, T beta, matrix_view<T> c) {
    const index m = c.rows, n = c.cols;
    const index am = ta == trans::none ? a.rows : a.cols, ak = ta == trans::none ? a.cols : a.rows;
    const index bk = tb == trans::none ? bm.rows : bm.cols, bn = tb == trans::none ? bm.cols : bm.rows;
    detail::require<shape_error>(am == m && bn == n && ak == bk, "backend_ops<cpu>::gemm: op(A) is ",
                                 am, "x", ak, ", op(B) is ", bk, "x", bn, ", C is ", m, "x", n,
                                 "; expected op(A) m x k, op(B) k x n, C m x n");
    if (m == 0 || n == 0) return;
    auto A = as_eigen(a);
    auto B = as_eigen(bm);
    auto C = as_eigen(c);
    // A small product runs its chunks on one thread: a parallel region's barrier costs more than
    // the product, and under load (a team thread descheduled) a whole time slice. The chunks and
    // hence the bits are the same either way.
    const cpu_backend team = double(m) * double(n) * double(ak) < detail::gemm_parallel_min_macs ? cpu_backend{1} : b;
    auto run = [&](auto&& opA, auto&& opB) {
      if (n >= m) {
        detail::parallel_chunks(team, n, detail::chunk_width(n), [&](index c0, index w) {
          auto blk = C.middleCols(c0, w);
          detail::scale_in_place<T>(blk, beta);
          if (ak > 0 && alpha != T(0)) blk.noalias() += alpha * opA * opB.middleCols(c0, w);
        });
      } else {
        detail::parallel_chunks(team, m, detail::chunk_width(m), [&](index r0, index h) {
          auto blk = C.middleRows(r0, h);
          detail::scale_in_place<T>(blk, beta);
          if (ak > 0 && alpha != T(0)) blk.noalias() += alpha * opA.middleRows(r0, h) * opB;
        });
      }
    };
    if (ta == trans::none && tb == trans::none) run(A, B);
    else if (ta == trans::none) run(A, B.transpose());
    else if (tb == trans::none) run(A.transpose(), B);
    else run(A.transpose(), B.transpose());
  }

  //! A += alpha * X^T * X, X is t x n, A is n x n; both triangles of A are updated.
  template <Scalar T>
  static void syrk_accumulate(const cpu_backend& b, matrix_view<const T> x, T alpha,
                              matrix_view<T> a) {
    check_shape("backend_ops<cpu>::syrk_accumulate", "A", a, x.cols, x.cols);
    if (x.rows == 0 || x.cols == 0) return;
    auto A = as_eigen(a);
    const auto X = as_eigen(x);
    detail::lower_rank_update<T>(b, A, X.transpose(), alpha);
    A.template triangularView<Eigen::StrictlyUpper>() = A.transpose();
  }

  //! A += alpha * X^T * diag(w) * X, X is t x n, w has t entries; both triangles updated.
  template <Scalar T>
  static void weighted_syrk_accumulate(const cpu_backend& b, matrix_view<const T> x, const T* w,
                                       T alpha, matrix_view<T> a) {
    check_shape("backend_ops<cpu>::weighted_syrk_accumulate", "A", a, x.cols, x.cols);
    if (x.rows == 0 || x.cols == 0) return;
    auto A = as_eigen(a);
    const auto X = as_eigen(x);
    const Eigen::Map<const vector<T>> wv(w, x.rows);
    const matrix<T> Y = wv.asDiagonal() * X;  // t x n
    const index n = x.cols;
    detail::parallel_chunks(b, n, detail::chunk_width(n), [&](index c0, index cw) {
      const index r = n - c0;
      A.block(c0, c0, r, cw).noalias() +=
          alpha * X.middleCols(c0, r).transpose() * Y.middleCols(c0, cw);
    });
    A.template triangularView<Eigen::StrictlyUpper>() = A.transpose();
  }

  //! In-place lower Cholesky A = L L^T (upper triangle left untouched).
  //! Returns 0 on success, or j + 1 when the pivot of column j was not positive or not finite.
  //! Recursive (split in halves down to 128 columns): the n^3/3 flops run as the trailing updates
  //! A22 -= A21 A21^T of depth n/2, n/4, ... and the solves A21 L11^{-T}, large GEMM-shaped
  //! products, instead of 128-deep rank updates (docs/benchmarks.md, "Factorization").
  template <Scalar T>
  static index potrf_lower(const cpu_backend& b, matrix_view<T> a) {
    check_shape("backend_ops<cpu>::potrf_lower", "A", a, a.rows, a.rows);
    Eigen::Ref<matrix<T>, 0, Eigen::OuterStride<>> A = as_eigen(a);
    return potrf_recursive<T>(b, A);
  }

  template <Scalar T>
  static index potrf_recursive(const cpu_backend& b, Eigen::Ref<matrix<T>, 0, Eigen::OuterStride<>> A) {
    const index n = A.rows();
    if (n <= 128) {
      const index info = Eigen::internal::llt_inplace<T, Eigen::Lower>::unblocked(A);
      if (info >= 0) return info + 1;
      for (index j = 0; j < n; ++j)
        if (!std::isfinite(A(j, j))) return j + 1;
      return 0;
    }
    const index n1 = (n / 2 + 63) / 64 * 64, n2 = n - n1;  // a multiple of 64 (n > 128: n1 < n)
    if (const index info = potrf_recursive<T>(b, A.topLeftCorner(n1, n1)); info != 0) return info;
    auto a21 = A.bottomLeftCorner(n2, n1);
    // A21 <- A21 * L11^{-T}, split by rows. Each chunk packs all of L11, so chunks are wide as
    // in the rank update below (n2/16-row chunks spent 9 % of a factorization packing).
    const auto l11 = A.topLeftCorner(n1, n1).template triangularView<Eigen::Lower>();
    detail::parallel_chunks(b, n2, detail::chunk_width(n2, std::max<index>(128, n2 / 8)), [&](index r0, index h) {
      auto blk = a21.middleRows(r0, h);
      l11.transpose().template solveInPlace<Eigen::OnTheRight>(blk);
    });
    auto a22 = A.bottomRightCorner(n2, n2);
    // wide chunks: each chunk repacks its rows of A21, so fewer chunks pack less
    detail::lower_rank_update<T>(b, a22, a21, T(-1), std::max<index>(256, n2 / 8));
    if (const index info = potrf_recursive<T>(b, A.bottomRightCorner(n2, n2)); info != 0) return n1 + info;
    return 0;
  }

  //! Triangular solve with the lower triangle of L (n x n):
  //! - side::left:  B <- op(L)^{-1} B      (B is n x k)
  //! - side::right: B <- B op(L)^{-1}      (B is k x n)
  //! unit_diag treats the diagonal of L as ones.
  template <Scalar T>
  static void trsm_lower(const cpu_backend& b, side s, trans t, bool unit_diag,
                         matrix_view<const T> l, matrix_view<T> bm) {
    const index n = l.rows;
    check_shape("backend_ops<cpu>::trsm_lower", "L", l, n, n);
    detail::require<shape_error>((s == side::left ? bm.rows : bm.cols) == n,
                                 "backend_ops<cpu>::trsm_lower: argument 'B' is ", bm.rows, "x",
                                 bm.cols, ", expected ", s == side::left ? "rows" : "cols",
                                 " = ", n);
    const auto L = as_eigen(l);
    auto B = as_eigen(bm);
    auto solve = [&](auto&& tri) {
      if (s == side::left) {
        detail::parallel_chunks(b, bm.cols, detail::chunk_width(bm.cols), [&](index c0, index w) {
          auto blk = B.middleCols(c0, w);
          tri.solveInPlace(blk);
        });
      } else {
        detail::parallel_chunks(b, bm.rows, detail::chunk_width(bm.rows), [&](index r0, index h) {
          auto blk = B.middleRows(r0, h);
          tri.template solveInPlace<Eigen::OnTheRight>(blk);
        });
      }
    };
    if (unit_diag) {
      if (t == trans::none) solve(L.template triangularView<Eigen::UnitLower>());
      else solve(L.transpose().template triangularView<Eigen::UnitUpper>());
    } else {
      if (t == trans::none) solve(L.template triangularView<Eigen::Lower>());
      else solve(L.transpose().template triangularView<Eigen::Upper>());
    }
  }
};

}  // namespace yaqa
