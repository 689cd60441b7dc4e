#pragma once
//! \file
//! int_grid on the device: the parameters of every group uploaded once, and an elementwise
//! quantize kernel with exactly the arithmetic of int_grid<T>::quantize (quantizers/rtn_grid.hpp):
//!     q = min(max(nearbyint(x / scale) + zero, 0), maxq),   recon = scale * (q - zero)
//! with IEEE division, ties-to-even rounding and an unfused product, so the codes equal the CPU
//! codes for the same target and parameters. Fitting stays on the host (int_grid<T>::fit).
#if !defined(__CUDACC__)
#error "yaqa/backend/cuda/kernels/int_grid.cuh contains CUDA kernels: include <yaqa/cuda.hpp> from a .cu file"
#endif
#include <algorithm>
#include <cstdint>
#include <vector>

#include <yaqa/backend/cuda/kernels/common.cuh>
#include <yaqa/backend/cuda/memory.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>

namespace yaqa::cuda {

//! The (scale, zero) of every row and group of an m x n layer, in device memory, laid out
//! [group][row]: element (row, group) at index group * rows + row.
template <Scalar T>
struct int_grid_device_params {
  device_buffer<T> scale;
  device_buffer<T> zero;
  index rows = 0;
  index groups = 0;
  index group_cols = 0;  //!< columns per group
};

//! Uploads host parameters (one params_type per group of `group_cols` columns, as returned by
//! detail::fit_groups / in rounded<int_grid<T>>::params). Every group must have the same rows.
template <Scalar T>
int_grid_device_params<T> upload_params(const cuda_backend& b,
                                        const std::vector<typename int_grid<T>::params_type>& p,
                                        index group_cols) {
  constexpr const char* what = "yaqa::cuda::upload_params";
  yaqa::detail::require(!p.empty(), what, ": argument 'params' must hold at least one group");
  yaqa::detail::require(group_cols >= 1, what, ": argument 'group_cols' must be >= 1, got ", group_cols);
  const index rows = p.front().rows(), groups = static_cast<index>(p.size());
  std::vector<T> sc(static_cast<std::size_t>(rows * groups)), ze(sc.size());
  for (index g = 0; g < groups; ++g) {
    const auto& pg = p[static_cast<std::size_t>(g)];
    yaqa::detail::require<shape_error>(pg.rows() == rows && static_cast<index>(pg.zero.size()) == rows,
                                       what, ": group ", g, " has ", pg.rows(), " scales and ",
                                       pg.zero.size(), " zeros; expected ", rows, " of each (group 0)");
    std::copy(pg.scale.begin(), pg.scale.end(), sc.begin() + g * rows);
    std::copy(pg.zero.begin(), pg.zero.end(), ze.begin() + g * rows);
  }
  int_grid_device_params<T> d{device_buffer<T>(b, rows * groups), device_buffer<T>(b, rows * groups),
                              rows, groups, group_cols};
  copy_to_device(b, sc.data(), d.scale.data(), rows * groups);
  copy_to_device(b, ze.data(), d.zero.data(), rows * groups);
  return d;
}

namespace detail {

//! What a kernel needs of the grid: raw parameter pointers plus maxq.
template <class T>
struct grid_args {
  const T* scale;
  const T* zero;
  index rows;        // rows of the layer (stride between groups)
  index group_cols;
  T maxq;
};

template <class T>
grid_args<T> make_grid_args(const int_grid<T>& q, const int_grid_device_params<T>& p) {
  return {p.scale.data(), p.zero.data(), p.rows, p.group_cols,
          static_cast<T>((1 << q.options().bits) - 1)};  // the same maxq as int_grid's constructor
}

//! One element of int_grid::quantize: returns recon, writes the code; ok = target was finite.
template <class T>
__device__ inline T grid_quantize(const grid_args<T>& g, T x, index row, index col, std::uint8_t& code,
                                  bool& ok) {
  const index k = (col / g.group_cols) * g.rows + row;
  const T sc = g.scale[k], ze = g.zero[k];
  T q = round_even(div_rn(x, sc)) + ze;
  q = q < T(0) ? T(0) : q;          // std::max(q, 0)
  q = g.maxq < q ? g.maxq : q;      // std::min(q, maxq)
  ok = finite(x);
  code = static_cast<std::uint8_t>(ok ? static_cast<int>(q) : 0);  // never convert NaN
  return mul_rn(sc, q - ze);
}

template <class T>
__global__ void int_grid_quantize_kernel(grid_args<T> g, matrix_view<const T, device_space> target,
                                         index row0, index col0, matrix_view<T, device_space> recon,
                                         matrix_view<std::uint8_t, device_space> codes, int* bad) {
  const index total = target.rows * target.cols;
  for (index e = index(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += index(gridDim.x) * blockDim.x) {
    const index i = e % target.rows, j = e / target.rows;
    bool ok = true;
    std::uint8_t c = 0;
    recon.data[i + j * recon.ld] =
        grid_quantize(g, target.data[i + j * target.ld], row0 + i, col0 + j, c, ok);
    codes.data[i + j * codes.ld] = c;
    if (!ok) *bad = 1;
  }
}

}  // namespace detail

//! Quantizes `target`, the block of the layer whose top-left element is (row0, col0), with the
//! parameters of its rows and column groups; writes recon and codes (same shape). Throws
//! shape_error for bad shapes and non_finite_error when the target holds NaN/Inf (the codes are
//! then unspecified). Synchronizes the backend (to read the finiteness flag).
template <Scalar T>
void quantize(const cuda_backend& b, const int_grid<T>& q, const int_grid_device_params<T>& p,
              device_view<const T> target, index row0, index col0, device_view<T> recon,
              device_view<std::uint8_t> codes) {
  constexpr const char* what = "yaqa::cuda::quantize (int_grid)";
  check_shape(what, "recon", recon, target.rows, target.cols);
  check_shape(what, "codes", codes, target.rows, target.cols);
  yaqa::detail::require<shape_error>(row0 >= 0 && row0 + target.rows <= p.rows, what, ": rows [", row0,
                                     ", ", row0 + target.rows, ") are outside the ", p.rows,
                                     " rows of the parameters");
  yaqa::detail::require<shape_error>(col0 >= 0 && col0 + target.cols <= p.groups * p.group_cols, what,
                                     ": columns [", col0, ", ", col0 + target.cols, ") are outside the ",
                                     p.groups * p.group_cols, " columns the parameters cover");
  if (target.empty()) return;
  device_buffer<int> bad(b, 1);
  bad.zero();
  detail::int_grid_quantize_kernel<T>
      <<<detail::blocks_for(target.size()), detail::threads_per_block, 0, b.stream()>>>(
          detail::make_grid_args(q, p), target, row0, col0, recon, codes, bad.data());
  detail::check_launch(what);
  int h_bad = 0;
  copy_to_host(b, bad.data(), &h_bad, 1);
  yaqa::detail::require<non_finite_error>(h_bad == 0, what,
                                          ": argument 'target' contains a non-finite value; expected finite values");
}

}  // namespace yaqa::cuda
