#pragma once
//! \file
//! YAQA two-sided rounding (and one-sided LDLQ, its H_out = I case) with the int_grid quantizer on
//! the device, in the efficient wavefront ordering of rounding/sweep.hpp (detail::wavefront):
//!
//!   tiles (a, k) of td_x x td_y with d = (M-1-a) + (N-1-k) equal are independent; for
//!   d = 0 .. M+N-2 (M+N-1 steps), every tile of the anti-diagonal d at once:
//!     R[a,k] = L_out[rows below a, a]^T E[rows below a, k]             (batched GEMM 1)
//!     F[a,k] = E'[a, cols right of k] L_in[cols right of k, k]          (batched GEMM 2)
//!     target = (W[a,k] + R) + F,  What[a,k] = Q(target)                  (one kernel)
//!     E[a,k] = W - What,  E'[a,k] = (W + R) - What
//!
//! with E = W - What and E' = W' - What (W' = W + output correction), both zero on tiles not yet
//! rounded. That zero lets all GEMMs of a step share one inner dimension: the strip of tile (a, k)
//! may start at the first row (column) any tile of the step needs; the extra rows multiply tiles
//! of E (E') that are still zero, i.e. add exact zeros. This is why L_in and L_out must be finite
//! everywhere, upper parts included (the host entry points check; block_ldl's L is).
//!
//! Per step: one pointer-filling kernel, at most two cublas<t>gemmBatched calls, one quantize
//! kernel; 4 (M+N-1) launches per layer. The arithmetic of the quantize step is the CPU's
//! (int_grid.cuh); the GEMM sums are cuBLAS's, so codes can differ from the CPU where a target
//! lies within rounding error of a decision boundary.
#if !defined(__CUDACC__)
#error "yaqa/backend/cuda/kernels/rounding.cuh contains CUDA kernels: include <yaqa/cuda.hpp> from a .cu file"
#endif
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include <cublas_v2.h>

#include <yaqa/backend/cuda/kernels/common.cuh>
#include <yaqa/backend/cuda/kernels/int_grid.cuh>
#include <yaqa/backend/cuda/memory.hpp>
#include <yaqa/backend/cuda/ops.hpp>
#include <yaqa/rounding/ldlq.hpp>
#include <yaqa/rounding/yaqa.hpp>

namespace yaqa::cuda {
namespace detail {

//! Geometry of one anti-diagonal step (host-computed, passed by value to the kernels).
struct wave_step {
  index d;       // step number
  index a_lo;    // first tile row of the step (tile t has a = a_lo + t, k = k_of(a))
  index nt;      // tiles in the step
  index M, N;    // tiles per column / row of the layer
  index tdx, tdy;
  index rs;      // first row of the output-feedback strips (K_out = m - rs)
  index cs;      // first column of the input-feedback strips (K_in = n - cs)
  __host__ __device__ index k_of(index a) const { return (N - 1 - d) + (M - 1 - a); }
};

template <class T>
struct wave_buffers {
  const T* w; index ldw;
  const T* lin; index ldli;
  const T* lout; index ldlo;  // nullptr: one-sided
  T* e; index lde;            // W - What (two-sided only)
  T* ep; index ldep;          // W' - What
  T* what; index ldwh;
  std::uint8_t* codes; index ldc;
  T* r;                       // nt tiles of td_x x td_y (GEMM 1 results), contiguous
  T* f;                       // nt tiles (GEMM 2 results)
};

//! Pointer arrays of the two batched GEMMs: ptrs = [A_out | B_out | A_in | B_in], each `cap`
//! entries; cptrs = [C_out | C_in].
template <class T>
__global__ void wave_pointers_kernel(wave_step s, wave_buffers<T> bf, index cap, const T** ptrs,
                                     T** cptrs) {
  for (index t = index(blockIdx.x) * blockDim.x + threadIdx.x; t < s.nt;
       t += index(gridDim.x) * blockDim.x) {
    const index a = s.a_lo + t, k = s.k_of(a);
    const index a0 = a * s.tdx, k0 = k * s.tdy, tile = s.tdx * s.tdy;
    if (bf.lout) {
      ptrs[t] = bf.lout + s.rs + a0 * bf.ldlo;        // K_out x td_x, used transposed
      ptrs[cap + t] = bf.e + s.rs + k0 * bf.lde;      // K_out x td_y
      cptrs[t] = bf.r + t * tile;
    }
    ptrs[2 * cap + t] = bf.ep + a0 + s.cs * bf.ldep;  // td_x x K_in
    ptrs[3 * cap + t] = bf.lin + s.cs + k0 * bf.ldli; // K_in x td_y
    cptrs[cap + t] = bf.f + t * tile;
  }
}

//! Quantizes every tile of the step and records What, codes, E and E'.
template <class T>
__global__ void wave_quantize_kernel(wave_step s, wave_buffers<T> bf, grid_args<T> g, bool use_r,
                                     bool use_f, int* bad) {
  const index tile = s.tdx * s.tdy, total = s.nt * tile;
  for (index e = index(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += index(gridDim.x) * blockDim.x) {
    const index t = e / tile, rem = e % tile, i = rem % s.tdx, j = rem / s.tdx;
    const index a = s.a_lo + t, k = s.k_of(a);
    const index row = a * s.tdx + i, col = k * s.tdy + j;
    const T x = bf.w[row + col * bf.ldw];
    const T base = use_r ? add_rn(x, bf.r[e]) : x;      // W + R (CPU: W + rr)
    const T target = use_f ? add_rn(base, bf.f[e]) : base;  // + E' L_in strip
    bool ok = true;
    std::uint8_t c = 0;
    const T recon = grid_quantize(g, target, row, col, c, ok);
    bf.what[row + col * bf.ldwh] = recon;
    bf.codes[row + col * bf.ldc] = c;
    if (bf.lout) bf.e[row + col * bf.lde] = sub_rn(x, recon);
    bf.ep[row + col * bf.ldep] = sub_rn(base, recon);
    if (!ok) *bad = 1;
  }
}

template <class T>
void gemm_batched(const cuda_backend& b, cublasOperation_t ta, int m, int n, int k, const T* const* a,
                  int lda, const T* const* bm, int ldb, T* const* c, int ldc, int count, const char* what) {
  const T one = 1, zero = 0;
  if constexpr (std::is_same_v<T, float>)
    check(cublasSgemmBatched(b.cublas(), ta, CUBLAS_OP_N, m, n, k, &one, a, lda, bm, ldb, &zero, c, ldc,
                             count),
          what);
  else
    check(cublasDgemmBatched(b.cublas(), ta, CUBLAS_OP_N, m, n, k, &one, a, lda, bm, ldb, &zero, c, ldc,
                             count),
          what);
}

}  // namespace detail

//! The device-level wavefront. All views in device memory: w (m x n), l_in (n x n), l_out (m x m,
//! or empty for one-sided LDLQ), w_hat (m x n, written), codes (m x n, written). p holds the
//! parameters of every row and group (upload_params). Preconditions beyond the shapes checked
//! here: l_in and l_out finite everywhere (see the file comment) and unit block-lower-triangular
//! with tdy (tdx) blocks; only their strictly-block-lower parts influence the result.
//! Throws non_finite_error if a target becomes non-finite. Synchronizes the backend.
template <Scalar T>
void yaqa_round_device(const cuda_backend& b, const int_grid<T>& q, const int_grid_device_params<T>& p,
                       device_view<const T> w, device_view<const T> l_in, device_view<const T> l_out,
                       device_view<T> w_hat, device_view<std::uint8_t> codes, index tdx, index tdy) {
  constexpr const char* what = "yaqa::cuda::yaqa_round";
  const index m = w.rows, n = w.cols;
  const bool two = !l_out.empty();
  check_shape(what, "L_in", l_in, n, n);
  if (two) check_shape(what, "L_out", l_out, m, m);
  check_shape(what, "What", w_hat, m, n);
  check_shape(what, "codes", codes, m, n);
  yaqa::detail::require<invalid_argument>(tdx >= 1 && tdy >= 1, what,
                                          ": tile sizes must be positive, got td_x = ", tdx, ", td_y = ", tdy);
  yaqa::detail::require<shape_error>(m % tdx == 0 && n % tdy == 0, what, ": the tile ", tdx, "x", tdy,
                                     " must divide the layer ", m, "x", n);
  yaqa::detail::require<shape_error>(p.rows == m && p.groups * p.group_cols == n, what,
                                     ": the parameters cover ", p.rows, " rows and ",
                                     p.groups * p.group_cols, " columns; expected ", m, "x", n);
  if (m == 0 || n == 0) return;
  using detail::to_int;
  const index M = m / tdx, N = n / tdy, cap = std::min(M, N), tile = tdx * tdy;
  const int itdx = to_int(tdx, what, "td_x"), itdy = to_int(tdy, what, "td_y");

  device_matrix<T> e(b, two ? m : 0, two ? n : 0), ep(b, m, n);
  e.zero();
  ep.zero();
  device_buffer<T> r(b, two ? cap * tile : 0), f(b, cap * tile);
  device_buffer<const T*> ptrs(b, 4 * cap);
  device_buffer<T*> cptrs(b, 2 * cap);
  device_buffer<int> bad(b, 1);
  bad.zero();

  const detail::wave_buffers<T> bf{w.data,    w.ld,          l_in.data, l_in.ld,   two ? l_out.data : nullptr,
                                   two ? l_out.ld : 1,       e.data(),  m,         ep.data(),
                                   m,         w_hat.data,    w_hat.ld,  codes.data, codes.ld,
                                   r.data(),  f.data()};
  const detail::grid_args<T> g = detail::make_grid_args(q, p);
  const int ldw_l = to_int(std::max<index>(l_out.ld, 1), what, "ld of L_out");
  const int ld_e = to_int(m, what, "m"), ld_li = to_int(l_in.ld, what, "ld of L_in");

  for (index d = 0; d <= M + N - 2; ++d) {
    detail::wave_step s{};
    s.d = d;
    s.M = M;
    s.N = N;
    s.tdx = tdx;
    s.tdy = tdy;
    s.a_lo = std::max<index>(0, M - 1 - d);
    const index a_hi = std::min<index>(M - 1, M + N - 2 - d);
    s.nt = a_hi - s.a_lo + 1;
    s.rs = (s.a_lo + 1) * tdx;            // rows below the highest tile of the step
    s.cs = (s.k_of(a_hi) + 1) * tdy;      // columns right of the leftmost tile of the step
    const index k_out = m - s.rs, k_in = n - s.cs;
    const bool use_r = two && k_out > 0, use_f = k_in > 0;
    const int nt = to_int(s.nt, what, "tiles per step");

    detail::wave_pointers_kernel<T><<<detail::blocks_for(s.nt), detail::threads_per_block, 0, b.stream()>>>(
        s, bf, cap, ptrs.data(), cptrs.data());
    detail::check_launch(what);
    if (use_r)  // R = L_out(rs:m, a)^T E(rs:m, k)
      detail::gemm_batched<T>(b, CUBLAS_OP_T, itdx, itdy, to_int(k_out, what, "K_out"), ptrs.data(), ldw_l,
                              ptrs.data() + cap, ld_e, cptrs.data(), itdx, nt, what);
    if (use_f)  // F = E'(a, cs:n) L_in(cs:n, k)
      detail::gemm_batched<T>(b, CUBLAS_OP_N, itdx, itdy, to_int(k_in, what, "K_in"), ptrs.data() + 2 * cap,
                              ld_e, ptrs.data() + 3 * cap, ld_li, cptrs.data() + cap, itdx, nt, what);
    detail::wave_quantize_kernel<T><<<detail::blocks_for(s.nt * tile), detail::threads_per_block, 0, b.stream()>>>(
        s, bf, g, use_r, use_f, bad.data());
    detail::check_launch(what);
  }
  int h_bad = 0;
  copy_to_host(b, bad.data(), &h_bad, 1);  // synchronizes
  yaqa::detail::require<non_finite_error>(h_bad == 0, what,
                                          ": a rounding target became non-finite (overflow in the feedback)");
}

//! YAQA two-sided rounding on the device; the same contract and result type as
//! yaqa::yaqa_round (rounding/yaqa.hpp) for the int_grid quantizer: host inputs, host result.
//! Inputs are validated and the group parameters fitted on the host exactly as the CPU does;
//! W, L_in, L_out are uploaded, the wavefront runs on the device (opt.ordering is ignored: the
//! device always uses the wavefront), What and the codes are downloaded. An empty l_out means
//! H_out = I (one-sided LDLQ with td_x x td_y tiles).
template <Scalar T>
rounded<int_grid<T>> yaqa_round(const cuda_backend& b, const int_grid<T>& q, matrix_view<const T> w,
                                matrix_view<const T> l_in, matrix_view<const T> l_out,
                                const yaqa_options& opt = {}) {
  using Q = int_grid<T>;
  constexpr const char* what = "yaqa::cuda::yaqa_round";
  const index m = w.rows, n = w.cols;
  const index g = yaqa::detail::checked_group_cols(what, q, m, n);
  yaqa::detail::check_sweep_inputs<Q>(what, w, l_in, l_out, opt.tile_rows, opt.tile_cols);
  auto r = yaqa::detail::make_rounded<Q>(m, n);
  r.params = yaqa::detail::fit_groups(q, w, g);
  const auto p = upload_params<T>(b, r.params, g);
  const auto dw = to_device(b, w), dlin = to_device(b, l_in);
  const auto dlout = to_device(b, l_out);  // 0 x 0 when one-sided
  device_matrix<T> dwhat(b, m, n);
  device_matrix<std::uint8_t> dcodes(b, m, n);
  yaqa_round_device<T>(b, q, p, dw.view(), dlin.view(), dlout.view(), dwhat.view(), dcodes.view(),
                       opt.tile_rows, opt.tile_cols);
  r.weights = to_host(b, dwhat);
  r.codes = to_host(b, dcodes);
  return r;
}

//! One-sided block LDLQ on the device (yaqa::ldlq's contract for int_grid): the wavefront with
//! H_out = I and tiles m x block, i.e. N = n / block sequential steps of one GEMM each.
template <Scalar T>
rounded<int_grid<T>> ldlq(const cuda_backend& b, const int_grid<T>& q, matrix_view<const T> w,
                          matrix_view<const T> l, index block) {
  yaqa::detail::require<invalid_argument>(block >= 1, "yaqa::cuda::ldlq: argument 'block' must be >= 1, got ",
                                          block);
  yaqa_options o;
  o.tile_rows = std::max<index>(w.rows, 1);  // rows are independent without H_out
  o.tile_cols = block;
  return yaqa_round<T>(b, q, w, l, matrix_view<const T>{}, o);
}

}  // namespace yaqa::cuda
