#pragma once
//! \file
//! backend_ops<cuda_backend>: the dense kernels of backend/cpu/ops.hpp on cuBLAS and cuSOLVER,
//! same signatures, same semantics, device views only. Host-side library calls only (g++ can
//! compile this header); every call is queued on the backend's stream, and only potrf_lower
//! synchronizes (it returns the factorization status).
//!
//! Results are not bit-identical to the CPU backend (different summation order), and cuBLAS may
//! pick a different algorithm per call, so they are not guaranteed bit-reproducible either.
#if !defined(YAQA_HAS_CUDA)
#error "backend/cuda/ops.hpp needs the yaqa::cuda target (YAQA_HAS_CUDA)"
#endif
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <cublas_v2.h>
#include <cusolverDn.h>

#include <yaqa/backend/backend.hpp>
#include <yaqa/backend/cuda/backend.hpp>
#include <yaqa/backend/cuda/memory.hpp>
#include <yaqa/core/concepts.hpp>

namespace yaqa::cuda::detail {

//! cuBLAS / cuSOLVER (v2 API) take int sizes: refuse larger ones instead of truncating.
inline int to_int(index v, const char* what, const char* name) {
  yaqa::detail::require<shape_error>(v >= 0 && v <= std::numeric_limits<int>::max(), what,
                                     ": ", name, " = ", v, " does not fit the int sizes of cuBLAS/cuSOLVER");
  return static_cast<int>(v);
}

inline cublasOperation_t op(trans t) { return t == trans::none ? CUBLAS_OP_N : CUBLAS_OP_T; }

template <class T>
void gemm(const cuda_backend& b, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
          T alpha, const T* a, int lda, const T* bm, int ldb, T beta, T* c, int ldc, const char* what) {
  if constexpr (std::is_same_v<T, float>)
    check(cublasSgemm(b.cublas(), ta, tb, m, n, k, &alpha, a, lda, bm, ldb, &beta, c, ldc), what);
  else
    check(cublasDgemm(b.cublas(), ta, tb, m, n, k, &alpha, a, lda, bm, ldb, &beta, c, ldc), what);
}

//! A += s + s^T - diag(s), where s (n x n, ld n) holds a symmetric result in its lower triangle
//! and zeros above: fills both triangles of A with three cuBLAS calls and no custom kernel.
template <class T>
void add_lower_symmetric(const cuda_backend& b, const T* s, int n, T* a, int lda, const char* what) {
  const T one = 1, minus_one = -1;
  if constexpr (std::is_same_v<T, float>) {
    check(cublasSgeam(b.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, n, n, &one, a, lda, &one, s, n, a, lda), what);
    check(cublasSgeam(b.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, n, n, &one, a, lda, &one, s, n, a, lda), what);
    check(cublasSaxpy(b.cublas(), n, &minus_one, s, n + 1, a, lda + 1), what);
  } else {
    check(cublasDgeam(b.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, n, n, &one, a, lda, &one, s, n, a, lda), what);
    check(cublasDgeam(b.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, n, n, &one, a, lda, &one, s, n, a, lda), what);
    check(cublasDaxpy(b.cublas(), n, &minus_one, s, n + 1, a, lda + 1), what);
  }
}

}  // namespace yaqa::cuda::detail

namespace yaqa {

//! CUDA backend operations: cuBLAS/cuSOLVER on the backend's stream. All views are device views
//! (host views do not convert: accessible_from<cuda_backend, host_space> is false). Shapes are
//! validated on the host exactly as in backend_ops<cpu_backend>.
template <>
struct backend_ops<cuda_backend> {
  template <class T>
  using dview = matrix_view<T, cuda::device_space>;

  //! C = alpha * op(A) * op(B) + beta * C (cublas<t>gemm).
  //! - C is m x n; op(A) m x k; op(B) k x n.
  //! - beta == 0 overwrites C (cuBLAS does not read C then).
  template <Scalar T>
  static void gemm(const cuda_backend& b, trans ta, trans tb, T alpha, dview<const T> a,
                   dview<const T> bm, T beta, dview<T> c) {
    constexpr const char* what = "backend_ops<cuda>::gemm";
    const index m = c.rows, n = c.cols;
    const index am = ta == trans::none ? a.rows : a.cols, ak = ta == trans::none ? a.cols : a.rows;
    const index bk = tb == trans::none ? bm.rows : bm.cols, bn = tb == trans::none ? bm.cols : bm.rows;
    yaqa::detail::require<shape_error>(am == m && bn == n && ak == bk, what, ": op(A) is ", am, "x",
                                       ak, ", op(B) is ", bk, "x", bn, ", C is ", m, "x", n,
                                       "; expected op(A) m x k, op(B) k x n, C m x n");
    if (m == 0 || n == 0) return;
    using cuda::detail::to_int;
    // k == 0 is valid BLAS (C = beta C); cuBLAS needs lda >= 1 even then.
    cuda::detail::gemm<T>(b, cuda::detail::op(ta), cuda::detail::op(tb), to_int(m, what, "m"),
                          to_int(n, what, "n"), to_int(ak, what, "k"), alpha, a.data,
                          to_int(std::max<index>(a.ld, 1), what, "lda"), bm.data,
                          to_int(std::max<index>(bm.ld, 1), what, "ldb"), beta, c.data,
                          to_int(c.ld, what, "ldc"), what);
  }

  //! A += alpha * X^T * X, X is t x n, A is n x n; both triangles of A are updated.
  //! cublas<t>syrk into a zeroed scratch (lower triangle), then A += S + S^T - diag(S).
  template <Scalar T>
  static void syrk_accumulate(const cuda_backend& b, dview<const T> x, T alpha, dview<T> a) {
    constexpr const char* what = "backend_ops<cuda>::syrk_accumulate";
    check_shape(what, "A", a, x.cols, x.cols);
    if (x.rows == 0 || x.cols == 0) return;
    using cuda::detail::to_int;
    const int n = to_int(x.cols, what, "n"), t = to_int(x.rows, what, "t");
    cuda::device_buffer<T> s(b, x.cols * x.cols);
    s.zero();
    const T zero = 0;
    if constexpr (std::is_same_v<T, float>)
      cuda::check(cublasSsyrk(b.cublas(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, n, t, &alpha, x.data,
                              to_int(x.ld, what, "ldx"), &zero, s.data(), n),
                  what);
    else
      cuda::check(cublasDsyrk(b.cublas(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, n, t, &alpha, x.data,
                              to_int(x.ld, what, "ldx"), &zero, s.data(), n),
                  what);
    cuda::detail::add_lower_symmetric<T>(b, s.data(), n, a.data, to_int(a.ld, what, "lda"), what);
  }

  //! A += alpha * X^T * diag(w) * X, X is t x n, w (device memory) has t entries; both triangles
  //! updated. Y = diag(w) X (cublas<t>dgmm), then cublas<t>syrkx(X, Y) as in syrk_accumulate.
  template <Scalar T>
  static void weighted_syrk_accumulate(const cuda_backend& b, dview<const T> x, const T* w, T alpha,
                                       dview<T> a) {
    constexpr const char* what = "backend_ops<cuda>::weighted_syrk_accumulate";
    check_shape(what, "A", a, x.cols, x.cols);
    if (x.rows == 0 || x.cols == 0) return;
    using cuda::detail::to_int;
    const int n = to_int(x.cols, what, "n"), t = to_int(x.rows, what, "t");
    const int ldx = to_int(x.ld, what, "ldx");
    cuda::device_buffer<T> y(b, x.rows * x.cols);
    cuda::device_buffer<T> s(b, x.cols * x.cols);
    s.zero();
    const T zero = 0;
    if constexpr (std::is_same_v<T, float>) {
      cuda::check(cublasSdgmm(b.cublas(), CUBLAS_SIDE_LEFT, t, n, x.data, ldx, w, 1, y.data(), t), what);
      cuda::check(cublasSsyrkx(b.cublas(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, n, t, &alpha, x.data,
                               ldx, y.data(), t, &zero, s.data(), n),
                  what);
    } else {
      cuda::check(cublasDdgmm(b.cublas(), CUBLAS_SIDE_LEFT, t, n, x.data, ldx, w, 1, y.data(), t), what);
      cuda::check(cublasDsyrkx(b.cublas(), CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_T, n, t, &alpha, x.data,
                               ldx, y.data(), t, &zero, s.data(), n),
                  what);
    }
    cuda::detail::add_lower_symmetric<T>(b, s.data(), n, a.data, to_int(a.ld, what, "lda"), what);
  }

  //! In-place lower Cholesky A = L L^T (cusolverDn<t>potrf; the upper triangle is not referenced).
  //! Returns 0 on success, or j + 1 when the pivot of column j was not positive or not finite,
  //! like the CPU op (cuSOLVER's info has that meaning; a NaN/Inf pivot, which cuSOLVER may let
  //! through, is found by scanning the factor's diagonal). Synchronizes the backend.
  template <Scalar T>
  static index potrf_lower(const cuda_backend& b, dview<T> a) {
    constexpr const char* what = "backend_ops<cuda>::potrf_lower";
    check_shape(what, "A", a, a.rows, a.rows);
    if (a.rows == 0) return 0;
    using cuda::detail::to_int;
    const int n = to_int(a.rows, what, "n"), lda = to_int(a.ld, what, "lda");
    int lwork = 0;
    if constexpr (std::is_same_v<T, float>)
      cuda::check(cusolverDnSpotrf_bufferSize(b.cusolver(), CUBLAS_FILL_MODE_LOWER, n, a.data, lda, &lwork), what);
    else
      cuda::check(cusolverDnDpotrf_bufferSize(b.cusolver(), CUBLAS_FILL_MODE_LOWER, n, a.data, lda, &lwork), what);
    cuda::device_buffer<T> work(b, std::max(lwork, 1));
    cuda::device_buffer<int> info(b, 1);
    if constexpr (std::is_same_v<T, float>)
      cuda::check(cusolverDnSpotrf(b.cusolver(), CUBLAS_FILL_MODE_LOWER, n, a.data, lda, work.data(),
                                   lwork, info.data()),
                  what);
    else
      cuda::check(cusolverDnDpotrf(b.cusolver(), CUBLAS_FILL_MODE_LOWER, n, a.data, lda, work.data(),
                                   lwork, info.data()),
                  what);
    // The diagonal (stride lda + 1) and info, in one synchronization.
    cuda::device_buffer<T> diag(b, a.rows);
    if constexpr (std::is_same_v<T, float>)
      cuda::check(cublasScopy(b.cublas(), n, a.data, lda + 1, diag.data(), 1), what);
    else
      cuda::check(cublasDcopy(b.cublas(), n, a.data, lda + 1, diag.data(), 1), what);
    int h_info = 0;
    std::vector<T> h_diag(static_cast<std::size_t>(n));
    cuda::check(cudaMemcpyAsync(&h_info, info.data(), sizeof(int), cudaMemcpyDeviceToHost, b.stream()), what);
    cuda::copy_to_host(b, diag.data(), h_diag.data(), a.rows);  // synchronizes
    yaqa::detail::require<invalid_argument>(h_info >= 0, what, ": cuSOLVER rejected parameter ",
                                            -h_info, " (info = ", h_info, ")");
    // Columns before a failed pivot are finished; a non-finite one among them fails first.
    const index limit = h_info > 0 ? h_info - 1 : a.rows;
    for (index j = 0; j < limit; ++j)
      if (!std::isfinite(h_diag[static_cast<std::size_t>(j)])) return j + 1;
    return h_info;
  }

  //! Triangular solve with the lower triangle of L (n x n), cublas<t>trsm:
  //! - side::left:  B <- op(L)^{-1} B      (B is n x k)
  //! - side::right: B <- B op(L)^{-1}      (B is k x n)
  //! unit_diag treats the diagonal of L as ones.
  template <Scalar T>
  static void trsm_lower(const cuda_backend& b, side s, trans t, bool unit_diag, dview<const T> l,
                         dview<T> bm) {
    constexpr const char* what = "backend_ops<cuda>::trsm_lower";
    const index n = l.rows;
    check_shape(what, "L", l, n, n);
    yaqa::detail::require<shape_error>((s == side::left ? bm.rows : bm.cols) == n, what,
                                       ": argument 'B' is ", bm.rows, "x", bm.cols, ", expected ",
                                       s == side::left ? "rows" : "cols", " = ", n);
    if (bm.rows == 0 || bm.cols == 0) return;
    using cuda::detail::to_int;
    const T one = 1;
    const auto sd = s == side::left ? CUBLAS_SIDE_LEFT : CUBLAS_SIDE_RIGHT;
    const auto dg = unit_diag ? CUBLAS_DIAG_UNIT : CUBLAS_DIAG_NON_UNIT;
    const int m = to_int(bm.rows, what, "rows of B"), k = to_int(bm.cols, what, "cols of B");
    const int ldl = to_int(l.ld, what, "ldl"), ldb = to_int(bm.ld, what, "ldb");
    if constexpr (std::is_same_v<T, float>)
      cuda::check(cublasStrsm(b.cublas(), sd, CUBLAS_FILL_MODE_LOWER, cuda::detail::op(t), dg, m, k,
                              &one, l.data, ldl, bm.data, ldb),
                  what);
    else
      cuda::check(cublasDtrsm(b.cublas(), sd, CUBLAS_FILL_MODE_LOWER, cuda::detail::op(t), dg, m, k,
                              &one, l.data, ldl, bm.data, ldb),
                  what);
  }
};

}  // namespace yaqa
