#pragma once
//! \file
//! The random Hadamard transform U = S A of linalg/hadamard.hpp on the device, for power-of-two
//! orders (A = H_n / sqrt(n), the pure Sylvester case). Per vector: forward v <- S A v is an
//! in-place fast Walsh-Hadamard transform followed by the factor sign_i / sqrt(n); backward
//! v <- A^T S v applies the factor first. The butterflies are the radix-2 stages h = 1, 2, 4, ...
//! with (a, b) <- (a + b, a - b), the same additions in the same order as the CPU code, so the
//! results are bit-identical to random_hadamard::apply.
//!
//! A vector that fits in 48 KiB of shared memory is transformed by one block in shared memory;
//! longer ones take one global-memory pass per stage.
//! Other orders (a dense Hadamard or orthogonal factor G) are not implemented on the device:
//! hadamard_apply throws invalid_argument for them.
#if !defined(__CUDACC__)
#error "yaqa/backend/cuda/kernels/hadamard.cuh contains CUDA kernels: include <yaqa/cuda.hpp> from a .cu file"
#endif
#include <cmath>
#include <vector>

#include <yaqa/backend/cuda/kernels/common.cuh>
#include <yaqa/backend/cuda/memory.hpp>
#include <yaqa/linalg/hadamard.hpp>

namespace yaqa::cuda {
namespace detail {

//! Vectors v = 0 .. nvec-1 of n elements: element i of vector v at x[v * vs + i * es].
template <class T>
struct strided_vectors {
  T* x;
  index n, es, vs, nvec;
};

inline constexpr index hadamard_shared_bytes = 48 * 1024;  // no opt-in needed on any arch

template <class T>
__global__ void fwht_shared_kernel(strided_vectors<T> v, const T* factor, bool forward) {
  extern __shared__ __align__(16) unsigned char smem_raw[];  // untyped: one kernel per T
  T* s = reinterpret_cast<T*>(smem_raw);
  const index n = v.n;
  for (index k = blockIdx.x; k < v.nvec; k += gridDim.x) {
    T* p = v.x + k * v.vs;
    for (index i = threadIdx.x; i < n; i += blockDim.x)
      s[i] = forward ? p[i * v.es] : mul_rn(p[i * v.es], factor[i]);
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
      p[i * v.es] = forward ? mul_rn(s[i], factor[i]) : s[i];
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
    T* p = v.x + k * v.vs;
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
    T& x = v.x[k * v.vs + i * v.es];
    x = mul_rn(x, factor[i]);
  }
}

}  // namespace detail

//! side::left: x <- op(U) x (x has n rows); side::right: x <- x op(U) (x has n columns), on the
//! device, for a random_hadamard whose order n is a power of two. Throws shape_error for a wrong
//! shape and invalid_argument for other orders. Asynchronous (queued on the backend's stream).
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
  yaqa::detail::require(u.dense_order() == 1, what, ": the transform of order n = ", n, " is ",
                        u.description(),
                        "; only power-of-two orders (pure Sylvester) run on the device, apply the "
                        "others on the host with random_hadamard::apply");
  if (x.empty()) return;
  // The CPU factor: sign_i * T(1/sqrt(n)), the scale rounded to T once (scale_positions).
  const T sc = static_cast<T>(1.0 / std::sqrt(static_cast<double>(n)));
  std::vector<T> f(static_cast<std::size_t>(n));
  for (index i = 0; i < n; ++i) f[static_cast<std::size_t>(i)] = u.signs()[static_cast<std::size_t>(i)] < 0 ? -sc : sc;
  device_buffer<T> factor(b, n);
  copy_to_device(b, f.data(), factor.data(), n);

  const bool forward = (s == side::left) == (t == trans::none);  // as in random_hadamard::apply
  const detail::strided_vectors<T> v =
      s == side::left ? detail::strided_vectors<T>{x.data, n, 1, x.ld, x.cols}
                      : detail::strided_vectors<T>{x.data, n, x.ld, 1, x.rows};
  const index bytes = n * static_cast<index>(sizeof(T));
  if (bytes <= detail::hadamard_shared_bytes) {
    const int threads = static_cast<int>(std::clamp<index>(n / 2, 32, detail::threads_per_block));
    const unsigned blocks = static_cast<unsigned>(std::min<index>(v.nvec, index(1) << 20));
    detail::fwht_shared_kernel<T><<<blocks, threads, static_cast<std::size_t>(bytes), b.stream()>>>(
        v, factor.data(), forward);
    detail::check_launch(what);
    return;
  }
  const index pairs = v.nvec * (n / 2);
  if (!forward) {
    detail::scale_positions_kernel<T><<<detail::blocks_for(v.nvec * n), detail::threads_per_block, 0, b.stream()>>>(
        v, factor.data());
    detail::check_launch(what);
  }
  for (index h = 1; h < n; h *= 2) {
    detail::fwht_stage_kernel<T><<<detail::blocks_for(pairs), detail::threads_per_block, 0, b.stream()>>>(v, h);
    detail::check_launch(what);
  }
  if (forward) {
    detail::scale_positions_kernel<T><<<detail::blocks_for(v.nvec * n), detail::threads_per_block, 0, b.stream()>>>(
        v, factor.data());
    detail::check_launch(what);
  }
}

}  // namespace yaqa::cuda
