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
  yaqa::detail::require(group_cols >= 1, what, ": argument 'group_cols' must be >= 1, got ", group_cols);
  const auto h = detail::pack_grid_params<T>(p, what);
  int_grid_device_params<T> d{device_buffer<T>(b, h.rows * h.groups), device_buffer<T>(b, h.rows * h.groups),
                              h.rows, h.groups, group_cols};
  copy_to_device(b, h.scale.data(), d.scale.data(), h.rows * h.groups);
  copy_to_device(b, h.zero.data(), d.zero.data(), h.rows * h.groups);
  return d;
}

namespace detail {

//! The kernel arguments of a grid (grid_args and grid_quantize: device_math.hpp).
template <class T>
grid_args<T> make_grid_args(const int_grid<T>& q, const int_grid_device_params<T>& p) {
  return {p.scale.data(), p.zero.data(), p.rows, p.group_cols, grid_maxq(q)};
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
