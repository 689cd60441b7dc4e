#pragma once
//! \file
//! The random Hadamard transform U = S A of linalg/hadamard.hpp on the device, for every order the
//! CPU supports: A = scale (G ⊗ H_P) with H_P the Sylvester matrix of order P = 2^p and G a dense
//! K x K factor (K = 1 for a power of two, else a Hadamard matrix of order 4 x odd or the seeded
//! orthogonal fallback).
//!
//! Power-of-two orders (K = 1): per vector, forward v <- S A v is an in-place fast Walsh-Hadamard
//! transform followed by the factor sign_i / sqrt(n); backward v <- A^T S v applies the factor
//! first. The butterflies are the radix-2 stages h = 1, 2, 4, ... with (a, b) <- (a + b, a - b),
//! the same additions in the same order as the CPU code, so the results are meant to be
//! bit-identical to random_hadamard::apply. A vector that fits in 48 KiB of shared memory is
//! transformed by one block in shared memory; longer ones take one global-memory pass per stage.
//!
//! Other orders (K > 1) run the passes of linalg/hadamard_layout.hpp (whose index arithmetic the
//! CPU test tests/linalg/test_hadamard_layout.cpp checks with naive loops):
//!   1. backward only: x_i *= f_i (f_i = sign_i * T(scale));
//!   2. the Walsh-Hadamard transform (kernels above, no factor) of the K P-element sub-vectors of
//!      every vector, in place (skipped when P = 1);
//!   3. scratch <- X op(G) for every vector (X = the vector as a P x K matrix), one cuBLAS GEMM or
//!      strided batched GEMM with G uploaded in T;
//!   4. x <- scratch, times f_i when forward.
//! The additions of pass 2 are the CPU's; the sums of pass 3 are cuBLAS's, in a different order
//! (and K-term dot products instead of Eigen's), so the result is not bit-identical: expected
//! relative Frobenius error of a few eps_T sqrt(K) (the tests allow 1e-5 float, 1e-12 double).
//! Pass 3 needs a scratch of rows x cols elements of T and a K x K copy of G (both allocated
//! stream-ordered per call).
#if !defined(__CUDACC__)
#error "yaqa/backend/cuda/kernels/hadamard.cuh contains CUDA kernels: include <yaqa/cuda.hpp> from a .cu file"
#endif
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <cublas_v2.h>

#include <yaqa/backend/cuda/kernels/common.cuh>
#include <yaqa/backend/cuda/memory.hpp>
#include <yaqa/backend/cuda/ops.hpp>
#include <yaqa/linalg/hadamard.hpp>
#include <yaqa/linalg/hadamard_layout.hpp>

namespace yaqa::cuda {
namespace detail {

//! Vectors v = 0 .. nvec-1 of n elements: element i of vector v at x[base(v) + i * es], with
//! base(v) = (v / group) * vs + (v % group) * gs (group = 1: simply v * vs). The two-level form
//! is yaqa::detail::vector_family (the Sylvester sub-vectors of a non-power-of-two order).
template <class T>
struct strided_vectors {
  T* x;
  index n, es, vs, nvec;
  index group = 1, gs = 0;
  __device__ T* base(index v) const { return x + (v / group) * vs + (v % group) * gs; }
};

template <class T>
strided_vectors<T> family_vectors(T* x, const yaqa::detail::vector_family& f) {
  return {x, f.len, f.elem, f.outer, f.count, f.group, f.inner};
}

inline constexpr index hadamard_shared_bytes = 48 * 1024;  // no opt-in needed on any arch

template <class T>
__global__ void fwht_shared_kernel(strided_vectors<T> v, const T* factor, bool forward) {
  extern __shared__ __align__(16) unsigned char smem_raw[];  // untyped: one kernel per T
  T* s = reinterpret_cast<T*>(smem_raw);
  const index n = v.n;
  for (index k = blockIdx.x; k < v.nvec; k += gridDim.x) {
    T* p = v.base(k);
    for (index i = threadIdx.x; i < n; i += blockDim.x)
      s[i] = forward || !factor ? p[i * v.es] : mul_rn(p[i * v.es], factor[i]);
    __syncthreads();
    for (index h = 1; h < n; h *= 2) {
      for (index q = threadIdx.x; q < n / 2; q += blockDim.x) {
        const index i = (q / h) * 2 * h + q % h;
        const T a = s[i], b = s[i + h];
        s[i] = a + b;
        s[i + h] = a - b;
      }
      __syncthreads();
    }
    for (index i = threadIdx.x; i < n; i += blockDim.x)
      p[i * v.es] = forward && factor ? mul_rn(s[i], factor[i]) : s[i];
    __syncthreads();  // s is reused by the next vector
  }
}

template <class T>
__global__ void fwht_stage_kernel(strided_vectors<T> v, index h) {
  const index half = v.n / 2, total = v.nvec * half;
  for (index e = index(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += index(gridDim.x) * blockDim.x) {
    const index k = e / half, q = e % half;
    const index i = (q / h) * 2 * h + q % h;
    T* p = v.base(k);
    const T a = p[i * v.es], b = p[(i + h) * v.es];
    p[i * v.es] = a + b;
    p[(i + h) * v.es] = a - b;
  }
}

template <class T>
__global__ void scale_positions_kernel(strided_vectors<T> v, const T* factor) {
  const index total = v.nvec * v.n;
  for (index e = index(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += index(gridDim.x) * blockDim.x) {
    const index k = e / v.n, i = e % v.n;
    T& x = v.base(k)[i * v.es];
    x = mul_rn(x, factor[i]);
  }
}

//! dst(r, c) = src(r, c) * f (f = factor[r] when factor_on_rows, else factor[c]); a plain copy
//! when factor is null. src may equal dst (elementwise, in place).
template <class T>
__global__ void copy_scaled_kernel(const T* src, index lds, T* dst, index ldd, index rows, index cols,
                                   const T* factor, bool factor_on_rows) {
  const index total = rows * cols;
  for (index e = index(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += index(gridDim.x) * blockDim.x) {
    const index r = e % rows, c = e / rows;
    const T y = src[r + c * lds];
    dst[r + c * ldd] = factor ? mul_rn(y, factor[factor_on_rows ? r : c]) : y;
  }
}

//! The unnormalized Walsh-Hadamard transform of every vector of v (v.n a power of two). With
//! a factor, forward multiplies by it afterwards and backward beforehand (the power-of-two
//! transform); with factor = nullptr, only the transform.
template <class T>
void fwht_vectors(const cuda_backend& b, const strided_vectors<T>& v, const T* factor, bool forward,
                  const char* what) {
  const index n = v.n;
  const index bytes = n * static_cast<index>(sizeof(T));
  if (bytes <= hadamard_shared_bytes) {
    const int threads = static_cast<int>(std::clamp<index>(n / 2, 32, threads_per_block));
    const unsigned blocks = static_cast<unsigned>(std::min<index>(v.nvec, index(1) << 20));
    fwht_shared_kernel<T><<<blocks, threads, static_cast<std::size_t>(bytes), b.stream()>>>(v, factor, forward);
    check_launch(what);
    return;
  }
  const index pairs = v.nvec * (n / 2);
  if (!forward && factor) {
    scale_positions_kernel<T><<<blocks_for(v.nvec * n), threads_per_block, 0, b.stream()>>>(v, factor);
    check_launch(what);
  }
  for (index h = 1; h < n; h *= 2) {
    fwht_stage_kernel<T><<<blocks_for(pairs), threads_per_block, 0, b.stream()>>>(v, h);
    check_launch(what);
  }
  if (forward && factor) {
    scale_positions_kernel<T><<<blocks_for(v.nvec * n), threads_per_block, 0, b.stream()>>>(v, factor);
    check_launch(what);
  }
}

//! The GEMM of pass 3 (yaqa::detail::rht_gemm): cublas<t>gemm for one batch, else
//! cublas<t>gemmStridedBatched (the dense factor's stride is 0: the same G for every batch).
template <class T>
void rht_dense_gemm(const cuda_backend& b, const yaqa::detail::rht_gemm& g, const T* a, const T* bm, T* c,
                    const char* what) {
  const cublasOperation_t ta = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int m = to_int(g.m, what, "m"), n = to_int(g.n, what, "n"), k = to_int(g.k, what, "k");
  const int lda = to_int(g.lda, what, "lda"), ldb = to_int(g.ldb, what, "ldb"), ldc = to_int(g.ldc, what, "ldc");
  const T one = 1, zero = 0;
  if (g.batch == 1) {
    gemm<T>(b, ta, tb, m, n, k, one, a, lda, bm, ldb, zero, c, ldc, what);
    return;
  }
  const int batch = to_int(g.batch, what, "batch");
  const auto sa = static_cast<long long>(g.stride_a), sb = static_cast<long long>(g.stride_b),
             sc = static_cast<long long>(g.stride_c);
  if constexpr (std::is_same_v<T, float>)
    check(cublasSgemmStridedBatched(b.cublas(), ta, tb, m, n, k, &one, a, lda, sa, bm, ldb, sb, &zero, c, ldc, sc,
                                    batch),
          what);
  else
    check(cublasDgemmStridedBatched(b.cublas(), ta, tb, m, n, k, &one, a, lda, sa, bm, ldb, sb, &zero, c, ldc, sc,
                                    batch),
          what);
}

}  // namespace detail

//! side::left: x <- op(U) x (x has n rows); side::right: x <- x op(U) (x has n columns), on the
//! device, for any order n (file comment). Throws shape_error for a wrong shape. Asynchronous
//! (queued on the backend's stream); a non-power-of-two order allocates a rows x cols scratch.
template <Scalar T>
void hadamard_apply(const cuda_backend& b, const random_hadamard& u, side s, trans t, device_view<T> x) {
  constexpr const char* what = "yaqa::cuda::hadamard_apply";
  const index n = u.dim();
  if (s == side::left)
    yaqa::detail::require<shape_error>(x.rows == n, what, ": argument 'x' must have ", n,
                                       " rows (side::left, U is ", n, "x", n, "), got ", x.rows, "x", x.cols);
  else
    yaqa::detail::require<shape_error>(x.cols == n, what, ": argument 'x' must have ", n,
                                       " columns (side::right, U is ", n, "x", n, "), got ", x.rows, "x",
                                       x.cols);
  if (x.empty()) return;
  // The CPU factor: sign_i * T(scale), the scale rounded to T once (scale_positions).
  const std::vector<T> f = yaqa::detail::rht_factors<T>(u);
  device_buffer<T> factor(b, n);
  copy_to_device(b, f.data(), factor.data(), n);

  const bool forward = (s == side::left) == (t == trans::none);  // as in random_hadamard::apply
  if (u.dense_order() == 1) {  // pure Sylvester: one transform per vector, factor fused
    const detail::strided_vectors<T> v =
        s == side::left ? detail::strided_vectors<T>{x.data, n, 1, x.ld, x.cols}
                        : detail::strided_vectors<T>{x.data, n, x.ld, 1, x.rows};
    detail::fwht_vectors<T>(b, v, factor.data(), forward, what);
    return;
  }

  // K > 1: the passes of linalg/hadamard_layout.hpp.
  const index kk = u.dense_order();
  const yaqa::detail::rht_layout l =
      yaqa::detail::make_rht_layout(kk, u.sylvester_order(), s, t, x.rows, x.cols, x.ld);
  const unsigned blocks = detail::blocks_for(x.size());
  if (!l.forward) {  // 1. x_i *= f_i
    detail::copy_scaled_kernel<T><<<blocks, detail::threads_per_block, 0, b.stream()>>>(
        x.data, x.ld, x.data, x.ld, x.rows, x.cols, factor.data(), l.factor_on_rows);
    detail::check_launch(what);
  }
  if (l.sylvester.count > 0)  // 2. H_P on every sub-vector, in place
    detail::fwht_vectors<T>(b, detail::family_vectors(x.data, l.sylvester), nullptr, true, what);
  // 3. scratch <- X op(G)
  device_buffer<T> g(b, kk * kk);
  copy_to_device(b, u.dense_factor<T>().data(), g.data(), kk * kk);
  device_buffer<T> scratch(b, x.size());
  const T* a = l.dense.a_is_dense ? g.data() : x.data;
  const T* bm = l.dense.a_is_dense ? x.data : g.data();
  detail::rht_dense_gemm<T>(b, l.dense, a, bm, scratch.data(), what);
  // 4. x <- scratch (times f_i when forward)
  detail::copy_scaled_kernel<T><<<blocks, detail::threads_per_block, 0, b.stream()>>>(
      scratch.data(), x.rows, x.data, x.ld, x.rows, x.cols, l.forward ? factor.data() : nullptr,
      l.factor_on_rows);
  detail::check_launch(what);
}

}  // namespace yaqa::cuda
