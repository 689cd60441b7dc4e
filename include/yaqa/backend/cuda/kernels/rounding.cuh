#pragma once
//! \file
//! YAQA two-sided rounding (and one-sided LDLQ, its H_out = I case) with the int_grid quantizer on
//! the device, in the efficient wavefront ordering. The algorithm (steps, strips, pointers, the
//! element update) is in rounding_plan.hpp, shared with a CPU test that runs it on the host; this
//! file holds the kernels around it and the cuBLAS calls.
//!
//! Per step: one pointer-filling kernel, at most two cublas<t>gemmBatched calls, one quantize
//! kernel; 4 (M+N-1) launches per layer. The arithmetic of the quantize step is the CPU's
//! (device_math.hpp); the GEMM sums are cuBLAS's, so codes can differ from the CPU where a target
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
#include <yaqa/backend/cuda/kernels/rounding_plan.hpp>
#include <yaqa/backend/cuda/memory.hpp>
#include <yaqa/backend/cuda/ops.hpp>
#include <yaqa/quantizers/e8p.hpp>
#include <yaqa/rounding/ldlq.hpp>
#include <yaqa/rounding/yaqa.hpp>

namespace yaqa::cuda {

//! A quantizer's state on the device, for the wavefront: device_quantizer<Q> uploads what the
//! kernels need (the fitted parameters, tables) and gives the unit policy (rounding_plan.hpp).
//! Specialized for int_grid<T> and e8p<T>; other quantizers have no device path.
template <class Q>
struct device_quantizer;

template <Scalar T>
struct device_quantizer<int_grid<T>> {
  using unit_type = detail::grid_unit<T>;
  int_grid_device_params<T> p;
  T maxq;
  device_quantizer(const cuda_backend& b, const int_grid<T>& q, const std::vector<typename int_grid<T>::params_type>& params,
                   index group_cols)
      : p(upload_params<T>(b, params, group_cols)), maxq(detail::grid_maxq(q)) {}
  [[nodiscard]] unit_type unit() const {
    return {detail::grid_args<T>{p.scale.data(), p.zero.data(), p.rows, p.group_cols, maxq}};
  }
  [[nodiscard]] index rows() const { return p.rows; }
  [[nodiscard]] index cols() const { return p.groups * p.group_cols; }
};

template <Scalar T>
struct device_quantizer<e8p<T>> {
  using unit_type = detail::e8p_unit<T>;
  device_buffer<std::int8_t> twice_abs;
  device_buffer<std::uint8_t> parity;
  device_buffer<int> norm2_times4;
  device_buffer<T> scale;  // [group][row]
  index rows_ = 0, group_cols = 0, groups = 0;
  device_quantizer(const cuda_backend& b, const e8p<T>&, const std::vector<typename e8p<T>::params_type>& params,
                   index gc)
      : twice_abs(b, 256 * 8), parity(b, 256), norm2_times4(b, 256),
        scale(b, detail::e8p_packed_scale_count(params)), group_cols(gc), groups(static_cast<index>(params.size())) {
    const detail::e8p_table_view h = detail::e8p_host_table();  // static storage: outlives the copies
    copy_to_device(b, h.twice_abs, twice_abs.data(), 256 * 8);
    copy_to_device(b, h.parity, parity.data(), 256);
    copy_to_device(b, h.norm2_times4, norm2_times4.data(), 256);
    const std::vector<T> s = detail::pack_e8p_scales<T>(params, "yaqa::cuda::device_quantizer<e8p>");
    rows_ = params.empty() ? 0 : params.front().rows();
    copy_to_device(b, s.data(), scale.data(), static_cast<index>(s.size()));
    b.synchronize();  // s is a local
  }
  [[nodiscard]] unit_type unit() const {
    return {detail::e8p_table_view{twice_abs.data(), parity.data(), norm2_times4.data()}, scale.data(), rows_,
            group_cols};
  }
  [[nodiscard]] index rows() const { return rows_; }
  [[nodiscard]] index cols() const { return groups * group_cols; }
};

namespace detail {

template <class T, class Code>
__global__ void wave_pointers_kernel(wave_step s, wave_buffers<T, Code> bf, index cap, const T** ptrs,
                                     T** cptrs) {
  for (index t = index(blockIdx.x) * blockDim.x + threadIdx.x; t < s.nt;
       t += index(gridDim.x) * blockDim.x)
    wave_tile_pointers(s, bf, cap, t, ptrs, cptrs);
}

template <class T, class DQ>
__global__ void wave_quantize_kernel(wave_step s, wave_buffers<T, typename DQ::code_type> bf, DQ dq, int* bad) {
  const index total = s.nt * s.tdx * s.tdy / DQ::unit;
  for (index u = index(blockIdx.x) * blockDim.x + threadIdx.x; u < total;
       u += index(gridDim.x) * blockDim.x)
    if (!wave_quantize_unit(s, bf, dq, u)) *bad = 1;
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

//! run_wavefront's executor on the device: kernels and cuBLAS on the backend's stream.
template <class T, class DQ>
struct wave_device_exec {
  const cuda_backend& b;
  const wave_geometry& geo;
  const wave_buffers<T, typename DQ::code_type>& bf;
  DQ dq;
  const T** ptrs;
  T** cptrs;
  int* bad;
  const char* what;

  void pointers(const wave_step& s) {
    wave_pointers_kernel<<<blocks_for(s.nt), threads_per_block, 0, b.stream()>>>(s, bf, geo.cap, ptrs, cptrs);
    check_launch(what);
  }
  void gemm(const batched_gemm_call& c) {
    gemm_batched<T>(b, c.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, to_int(c.m, what, "td_x"), to_int(c.n, what, "td_y"),
                    to_int(c.k, what, "strip"), ptrs + c.a_slot, to_int(c.lda, what, "lda"), ptrs + c.b_slot,
                    to_int(c.ldb, what, "ldb"), cptrs + c.c_slot, to_int(c.ldc, what, "ldc"),
                    to_int(c.count, what, "tiles per step"), what);
  }
  void quantize(const wave_step& s) {
    wave_quantize_kernel<T, DQ><<<blocks_for(s.nt * geo.tile / DQ::unit), threads_per_block, 0, b.stream()>>>(
        s, bf, dq, bad);
    check_launch(what);
  }
};

}  // namespace detail

namespace detail {

//! The wavefront with a unit policy DQ whose parameters cover prows (-1: any) x pcols.
template <class T, class DQ>
void wavefront_device(const cuda_backend& b, const DQ& dq, index prows, index pcols, device_view<const T> w,
                      device_view<const T> l_in, device_view<const T> l_out, device_view<T> w_hat,
                      device_view<typename DQ::code_type> codes, index tdx, index tdy) {
  constexpr const char* what = "yaqa::cuda::yaqa_round";
  const index m = w.rows, n = w.cols;
  const bool two = !l_out.empty();
  check_shape(what, "L_in", l_in, n, n);
  if (two) check_shape(what, "L_out", l_out, m, m);
  check_shape(what, "What", w_hat, m, n);
  check_shape(what, "codes", codes, m, n / DQ::unit);
  yaqa::detail::require<invalid_argument>(tdx >= 1 && tdy >= 1, what,
                                          ": tile sizes must be positive, got td_x = ", tdx, ", td_y = ", tdy);
  yaqa::detail::require<shape_error>(m % tdx == 0 && n % tdy == 0 && tdy % DQ::unit == 0, what, ": the tile ",
                                     tdx, "x", tdy, " must divide the layer ", m, "x", n,
                                     " and its width be a multiple of the quantizer unit ", DQ::unit);
  yaqa::detail::require<shape_error>((prows < 0 || prows == m) && pcols == n, what, ": the parameters cover ",
                                     prows, " rows and ", pcols, " columns; expected ", m, "x", n);
  if (m == 0 || n == 0) return;
  const detail::wave_geometry geo = detail::make_wave_geometry(m, n, tdx, tdy, two);
  const index cap = geo.cap, tile = geo.tile;

  device_matrix<T> e(b, two ? m : 0, two ? n : 0), ep(b, m, n);
  e.zero();
  ep.zero();
  device_buffer<T> r(b, two ? cap * tile : 0), f(b, cap * tile);
  device_buffer<const T*> ptrs(b, 4 * cap);
  device_buffer<T*> cptrs(b, 2 * cap);
  device_buffer<int> bad(b, 1);
  bad.zero();

  const detail::wave_buffers<T, typename DQ::code_type> bf{
      w.data,     w.ld,     l_in.data, l_in.ld, two ? l_out.data : nullptr, two ? l_out.ld : 1, e.data(), m,
      ep.data(),  m,        w_hat.data, w_hat.ld, codes.data, codes.ld, r.data(), f.data()};
  detail::wave_device_exec<T, DQ> ex{b, geo, bf, dq, ptrs.data(), cptrs.data(), bad.data(), what};
  detail::run_wavefront(geo, bf, ex);
  int h_bad = 0;
  copy_to_host(b, bad.data(), &h_bad, 1);  // synchronizes
  yaqa::detail::require<non_finite_error>(h_bad == 0, what,
                                          ": a rounding target became non-finite (overflow in the feedback)");
}

}  // namespace detail

//! The device-level wavefront for any quantizer with a device_quantizer. All views in device
//! memory: w (m x n), l_in (n x n), l_out (m x m, or empty for one-sided LDLQ), w_hat (m x n,
//! written), codes (m x n / unit, written). dq holds the quantizer's device state (fitted
//! parameters of every row and group). Preconditions beyond the shapes checked here: l_in and
//! l_out finite everywhere (see rounding_plan.hpp) and unit block-lower-triangular with tdy (tdx)
//! blocks; only their strictly-block-lower parts influence the result.
//! Throws non_finite_error if a target becomes non-finite. Synchronizes the backend.
template <class Q>
void yaqa_round_device(const cuda_backend& b, const device_quantizer<Q>& dq, device_view<const scalar_of<Q>> w,
                       device_view<const scalar_of<Q>> l_in, device_view<const scalar_of<Q>> l_out,
                       device_view<scalar_of<Q>> w_hat, device_view<typename Q::code_type> codes, index tdx,
                       index tdy) {
  detail::wavefront_device(b, dq.unit(), dq.rows(), dq.cols(), w, l_in, l_out, w_hat, codes, tdx, tdy);
}

//! The int_grid form with uploaded parameters (upload_params), as the benchmarks call it.
template <Scalar T>
void yaqa_round_device(const cuda_backend& b, const int_grid<T>& q, const int_grid_device_params<T>& p,
                       device_view<const T> w, device_view<const T> l_in, device_view<const T> l_out,
                       device_view<T> w_hat, device_view<std::uint8_t> codes, index tdx, index tdy) {
  detail::wavefront_device(b, detail::grid_unit<T>{detail::make_grid_args(q, p)}, p.rows, p.groups * p.group_cols,
                           w, l_in, l_out, w_hat, codes, tdx, tdy);
}

//! YAQA two-sided rounding on the device; the same contract and result type as
//! yaqa::yaqa_round (rounding/yaqa.hpp), for the quantizers with a device path (int_grid, e8p):
//! host inputs, host result. Inputs are validated and the group parameters fitted on the host
//! exactly as the CPU does; W, L_in, L_out are uploaded, the wavefront runs on the device
//! (opt.ordering is ignored: the device always uses the wavefront), What and the codes are
//! downloaded. An empty l_out means H_out = I (one-sided LDLQ with td_x x td_y tiles).
template <class Q>
  requires requires { typename device_quantizer<Q>::unit_type; }
rounded<Q> yaqa_round(const cuda_backend& b, const Q& q, matrix_view<const scalar_of<Q>> w,
                      matrix_view<const scalar_of<Q>> l_in, matrix_view<const scalar_of<Q>> l_out,
                      const yaqa_options& opt = {}) {
  using T = scalar_of<Q>;
  constexpr const char* what = "yaqa::cuda::yaqa_round";
  const index m = w.rows, n = w.cols;
  const index g = yaqa::detail::checked_group_cols(what, q, m, n);
  yaqa::detail::check_sweep_inputs<Q>(what, w, l_in, l_out, opt.tile_rows, opt.tile_cols);
  auto r = yaqa::detail::make_rounded<Q>(m, n);
  r.params = yaqa::detail::fit_groups(q, w, g);
  const device_quantizer<Q> dq(b, q, r.params, g);
  const auto dw = to_device(b, w), dlin = to_device(b, l_in);
  const auto dlout = to_device(b, l_out);  // 0 x 0 when one-sided
  device_matrix<T> dwhat(b, m, n);
  device_matrix<typename Q::code_type> dcodes(b, m, n / Q::unit_cols);
  yaqa_round_device<Q>(b, dq, dw.view(), dlin.view(), dlout.view(), dwhat.view(), dcodes.view(), opt.tile_rows,
                       opt.tile_cols);
  r.weights = to_host(b, dwhat);
  r.codes = to_host(b, dcodes);
  return r;
}

//! One-sided block LDLQ on the device (yaqa::ldlq's contract for int_grid and e8p): the wavefront
//! with H_out = I and tiles m x block, i.e. N = n / block sequential steps of one GEMM each.
template <class Q>
  requires requires { typename device_quantizer<Q>::unit_type; }
rounded<Q> ldlq(const cuda_backend& b, const Q& q, matrix_view<const scalar_of<Q>> w,
                matrix_view<const scalar_of<Q>> l, index block) {
  using T = scalar_of<Q>;
  yaqa::detail::require<invalid_argument>(block >= 1, "yaqa::cuda::ldlq: argument 'block' must be >= 1, got ",
                                          block);
  yaqa_options o;
  o.tile_rows = std::max<index>(w.rows, 1);  // rows are independent without H_out
  o.tile_cols = block;
  return yaqa_round<Q>(b, q, w, l, matrix_view<const T>{}, o);
}

}  // namespace yaqa::cuda
