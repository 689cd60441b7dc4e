#pragma once
//! \file
//! The scalar arithmetic of the device kernels, written once for host and device (YAQA_HD).
//! On the device (__CUDA_ARCH__) every operation is an explicitly rounded intrinsic, so nvcc never
//! contracts a product into an FMA where the CPU code rounds it separately. On the host the
//! same functions are the plain operators, which is what the CPU quantizers compute. Including
//! no CUDA header, this file lets the CPU tests run the kernels' element code (see
//! rounding_plan.hpp): only the launch wrappers and the cuBLAS calls are left unchecked there.
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <yaqa/core/config.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>

#if defined(__CUDACC__)
#define YAQA_HD __host__ __device__
#else
#define YAQA_HD
#endif

namespace yaqa::cuda::detail {

template <class T>
YAQA_HD inline T mul_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) return __fmul_rn(a, b);
  else return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
template <class T>
YAQA_HD inline T div_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) return __fdiv_rn(a, b);
  else return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
template <class T>
YAQA_HD inline T add_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) return __fadd_rn(a, b);
  else return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
template <class T>
YAQA_HD inline T sub_rn(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) return __fsub_rn(a, b);
  else return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
//! Round to nearest integer, ties to even (std::nearbyint in the default rounding mode).
template <class T>
YAQA_HD inline T round_even(T x) {
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<T, float>) return rintf(x);
  else return rint(x);
#else
  return std::nearbyint(x);
#endif
}
template <class T>
YAQA_HD inline bool finite(T x) {
#if defined(__CUDA_ARCH__)
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

//! What a kernel needs of an int_grid: raw parameter pointers ([group][row] layout) plus maxq.
template <class T>
struct grid_args {
  const T* scale;
  const T* zero;
  index rows;  // rows of the layer (stride between groups)
  index group_cols;
  T maxq;
};

//! The int_grid parameters of every group packed [group][row]: element (row, group) at
//! group * rows + row. Every group must have the same rows.
template <class T>
struct packed_grid_params {
  std::vector<T> scale, zero;
  index rows = 0, groups = 0;
};

template <Scalar T>
packed_grid_params<T> pack_grid_params(const std::vector<typename int_grid<T>::params_type>& p,
                                       const char* what) {
  yaqa::detail::require(!p.empty(), what, ": argument 'params' must hold at least one group");
  packed_grid_params<T> r;
  r.rows = p.front().rows();
  r.groups = static_cast<index>(p.size());
  r.scale.resize(static_cast<std::size_t>(r.rows * r.groups));
  r.zero.resize(r.scale.size());
  for (index g = 0; g < r.groups; ++g) {
    const auto& pg = p[static_cast<std::size_t>(g)];
    yaqa::detail::require<shape_error>(
        pg.rows() == r.rows && static_cast<index>(pg.zero.size()) == r.rows, what, ": group ", g,
        " has ", pg.rows(), " scales and ", pg.zero.size(), " zeros; expected ", r.rows,
        " of each (group 0)");
    for (index i = 0; i < r.rows; ++i) {
      r.scale[static_cast<std::size_t>(g * r.rows + i)] = pg.scale[static_cast<std::size_t>(i)];
      r.zero[static_cast<std::size_t>(g * r.rows + i)] = pg.zero[static_cast<std::size_t>(i)];
    }
  }
  return r;
}

//! maxq of an int_grid, the value its constructor computes.
template <class T>
T grid_maxq(const int_grid<T>& q) {
  return static_cast<T>((1 << q.options().bits) - 1);
}

//! One element of int_grid::quantize with the parameters of (row, group): returns recon,
//! writes the code; ok = the target was finite. Operation for operation the CPU's
//!   q = min(max(nearbyint(x / scale) + zero, 0), maxq),  recon = scale * (q - zero).
template <class T>
YAQA_HD inline T grid_quantize_group(const grid_args<T>& g, T x, index row, index group,
                                     std::uint8_t& code, bool& ok) {
  const index k = group * g.rows + row;
  const T sc = g.scale[k], ze = g.zero[k];
  T q = add_rn(round_even(div_rn(x, sc)), ze);
  q = q < T(0) ? T(0) : q;      // std::max(q, 0)
  q = g.maxq < q ? g.maxq : q;  // std::min(q, maxq)
  ok = finite(x);
  code = static_cast<std::uint8_t>(ok ? static_cast<int>(q) : 0);  // never convert NaN
  return mul_rn(sc, sub_rn(q, ze));
}

//! The same for the element in column `col` (group col / group_cols).
template <class T>
YAQA_HD inline T grid_quantize(const grid_args<T>& g, T x, index row, index col, std::uint8_t& code,
                               bool& ok) {
  return grid_quantize_group(g, x, row, col / g.group_cols, code, ok);
}

}  // namespace yaqa::cuda::detail
