#pragma once
//! \file
//! Pieces shared by the built-in quantizers: the group-size rule, the argument checks of
//! fit()/quantize()/reconstruct(), and the slow path of the finiteness guard.
//!
//! Finiteness policy (all built-in quantizers): fit() checks its whole input and throws
//! non_finite_error. quantize() is on the rounding hot path, so it does not scan its target up
//! front; instead it folds a branch-free "is this element finite" flag into its main loop and,
//! when the flag trips, throws non_finite_error naming the first offending element. The codes it
//! may already have written for that call are then unspecified, but nothing is returned silently.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <yaqa/core/config.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>

namespace yaqa::detail {

//! Columns per parameter group: group_size 0 (or -1, GPTQ's spelling) means the whole row.
//! Throws invalid_argument naming both numbers when the group size does not divide n, and when
//! n is not a multiple of the unit width.
inline index quantizer_group_cols(const char* what, index group_size, index n, index unit_cols = 1) {
  require(n >= 1, what, ": the number of input columns n must be >= 1, got ", n);
  require(n % unit_cols == 0, what, ": the number of input columns n = ", n,
          " must be a multiple of the unit width ", unit_cols);
  if (group_size <= 0) return n;
  require(n % group_size == 0, what, ": group size ", group_size,
          " must divide the number of input columns n = ", n);
  return group_size;
}

//! Validates a group_size option: 0 / -1 (one group per row) or a positive multiple of `unit`.
inline void check_group_size_option(const char* what, index group_size, index unit_cols = 1) {
  require(group_size >= -1, what, ": option 'group_size' must be >= 1, or 0 / -1 for one group "
          "per row, got ", group_size);
  require(group_size <= 0 || group_size % unit_cols == 0, what, ": option 'group_size' = ",
          group_size, " must be a multiple of the unit width ", unit_cols);
}

//! The checks every fit() makes: at least one column, finite values.
template <class T>
void check_fit_input(const char* what, matrix_view<const T> w) {
  require<shape_error>(w.cols >= 1 && w.rows >= 0, what, ": argument 'w' must have at least one "
                       "column, got ", w.rows, "x", w.cols);
  check_finite(what, "w", w);
}

//! Shape checks of quantize(): recon has the target's shape, codes are (rows / unit_rows) x
//! (cols / unit_cols), the units tile the target, and rows [row0, row0 + rows) exist in params.
template <index unit_rows, index unit_cols, class T, class C>
void check_quantize_args(const char* what, matrix_view<const T> target, index row0,
                         index param_rows, matrix_view<T> recon, matrix_view<C> codes) {
  require<shape_error>(target.rows % unit_rows == 0 && target.cols % unit_cols == 0, what,
                       ": argument 'target' is ", target.rows, "x", target.cols,
                       "; expected rows a multiple of ", unit_rows, " and cols a multiple of ",
                       unit_cols);
  check_shape(what, "recon", recon, target.rows, target.cols);
  check_shape(what, "codes", codes, target.rows / unit_rows, target.cols / unit_cols);
  require<shape_error>(row0 >= 0 && row0 + target.rows <= param_rows, what, ": rows [", row0, ", ",
                       row0 + target.rows, ") of the target are outside the ", param_rows,
                       " rows the params were fitted on");
}

//! Shape checks of reconstruct(): rows [row0, row0 + rows) exist in params.
inline void check_reconstruct_args(const char* what, index code_rows, index unit_rows, index row0,
                                   index param_rows) {
  require<shape_error>(row0 >= 0 && row0 + code_rows * unit_rows <= param_rows, what, ": rows [",
                       row0, ", ", row0 + code_rows * unit_rows, ") of the codes are outside the ",
                       param_rows, " rows the params were fitted on");
}

//! Slow path of the hot-loop finiteness guard: locates the offending element and throws.
template <class T>
[[noreturn]] void throw_non_finite_target(const char* what, matrix_view<const T> target) {
  check_finite(what, "target", target);
  throw non_finite_error(concat(what, ": argument 'target' contains a non-finite value; expected "
                                      "finite values"));
}

//! True unless x is NaN or +-Inf; written as a comparison so it vectorizes and never branches.
template <class T>
inline bool finite_flag(T x) {
  return std::abs(x) <= std::numeric_limits<T>::max();
}

//! v, rounded to T and opaque to the optimizer: `round_to_type(a * b) - c` is never fused into an
//! FMA (GCC contracts across statements under its default -ffp-contract=fast in GNU mode), so
//! distances and errors are computed from the same rounded values that reconstruct() returns,
//! as PyTorch's separate kernels do.
template <class T>
inline T round_to_type(T v) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(v));
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  volatile T t = v;
  v = t;
#endif
  return v;
}

//! Fixed-seed standard normals for the codebook calibrations: Box-Muller on std::mt19937_64's raw
//! output (the engine is fully specified by the standard, unlike std::normal_distribution), so
//! every platform draws the same sample.
inline std::vector<double> gaussian_sample(std::size_t count, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<double> x(count);
  const double two_pi = 6.283185307179586477;
  for (std::size_t i = 0; i < count; i += 2) {
    const double u1 = (static_cast<double>(g() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(g() >> 11) * 0x1.0p-53;          // [0, 1)
    const double r = std::sqrt(-2.0 * std::log(u1));
    x[i] = r * std::cos(two_pi * u2);
    if (i + 1 < count) x[i + 1] = r * std::sin(two_pi * u2);
  }
  return x;
}

//! Number of parameter groups of an n-column matrix with group width g.
inline std::size_t group_count(index n, index g) { return static_cast<std::size_t>(n / g); }

}  // namespace yaqa::detail
