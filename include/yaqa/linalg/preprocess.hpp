#pragma once
//! \file
//! Per-factor preprocessing, before any transform or damping (spec §3.1 steps 1-2, pitfalls 8, 13).
//!
//! Order of a layer's preprocessing: normalize_factor(H_in), normalize_factor(H_out) -> zero the
//! weight columns of H_in's dead inputs (and, if wanted, the rows of H_out's dead outputs) ->
//! random Hadamard transform -> damped_block_ldl. The damping is relative to the mean diagonal, which
//! normalization makes 1, so sigma = 1e-2 means "1 % of the average curvature" on every layer.
#include <algorithm>
#include <cmath>
#include <vector>

#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/core/concepts.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>

namespace yaqa {
namespace detail {
//! Calls f(i, j) for every i > j of an n x n matrix, in 64 x 64 tiles (column-major friendly for
//! both (i, j) and (j, i)); within the order below, pairs come column by column of each tile.
//! The pairs i > j with j in the column strip [j0, j0 + jw), in 64-row tiles.
template <class F>
void for_lower_pairs_in(index n, index j0, index jw, F&& f) {
  constexpr index t = 64;
  for (index i0 = j0; i0 < n; i0 += t) {
    const index i1 = std::min(n, i0 + t);
    for (index j = j0; j < j0 + jw; ++j)
      for (index i = std::max(i0, j + 1); i < i1; ++i) f(i, j);
  }
}
template <class F>
void for_lower_pairs(index n, F&& f) {
  constexpr index t = 64;
  for (index j0 = 0; j0 < n; j0 += t) for_lower_pairs_in(n, j0, std::min(t, n - j0), f);
}
}  // namespace detail

//! What normalize_factor found and did.
struct factor_report {
  double mean_diagonal = 0;           //!< what the factor was divided by (0 if it was all zero)
  std::vector<index> dead;            //!< indices whose diagonal was 0 (set to 1 after normalization)
  bool replaced_by_identity = false;  //!< all-zero (or non-positive-trace) factor -> I, reported
};

//! Relative asymmetry normalize_factor accepts: |h_ij - h_ji| <= tol * max_kl |h_kl|. Rounding noise
//! of an fp32 accumulator is ~1e-6 relative; a wrong matrix (a weight passed as a Hessian, a
//! mis-unpacked triangle) is O(1). Accepted asymmetry is removed (the result is exactly symmetric).
inline constexpr double factor_symmetry_tolerance = 1e-4;

//! Normalizes the Hessian factor `h` in place; `name` (e.g. "H_in") is used in error messages.
//! - Throws shape_error unless h is square, non_finite_error (naming `name` and the first NaN/Inf)
//!   unless every entry is finite, invalid_argument unless h is symmetric within
//!   factor_symmetry_tolerance.
//! - Dead inputs: indices i with h_ii == 0 exactly (an input that was never non-zero). Their row and
//!   column are zeroed and h_ii set to 1 after the division, so they decouple from the rest (GPTQ's
//!   rule; the caller zeroes the matching weight columns with zero_columns, or rows for H_out).
//! - h is divided by the mean diagonal of the non-dead entries (spec: every factor has mean diagonal
//!   1 before damping) and made exactly symmetric (the average of its two triangles).
//! - A factor with no positive trace (all zero: e.g. a layer that never received gradient, or a
//!   sum of non-dead diagonals <= 0) carries no usable curvature: it becomes I, with
//!   replaced_by_identity = true, mean_diagonal = 0 and an empty `dead` (no input is declared dead,
//!   so no weight gets zeroed: the layer is rounded as if that side had no Hessian).
template <Scalar T>
factor_report normalize_factor(const cpu_backend& b, matrix_view<T> h, const char* name) {
  constexpr const char* what = "yaqa::normalize_factor";
  detail::require<shape_error>(h.rows == h.cols, what, ": argument '", name, "' must be square, got ",
                               h.rows, "x", h.cols);
  check_finite(what, name, matrix_view<const T>(h));
  const index n = h.rows;
  factor_report rep;
  if (n == 0) return rep;

  // Every pass runs over 64-column strips in parallel; maxima and element-wise updates do not
  // depend on the split, so the result is the same for any thread count.
  constexpr index strip = 64;
  const index strips = (n + strip - 1) / strip;
  std::vector<double> part(static_cast<std::size_t>(strips), 0.0);
  auto strip_max = [&](auto&& f) {
    std::fill(part.begin(), part.end(), 0.0);
    detail::parallel_chunks(b, n, strip, [&](index j0, index jw) { part[static_cast<std::size_t>(j0 / strip)] = f(j0, jw); });
    return *std::max_element(part.begin(), part.end());
  };
  const double max_abs = strip_max([&](index j0, index jw) {
    double m = 0;
    for (index j = j0; j < j0 + jw; ++j)
      for (index i = 0; i < n; ++i) m = std::max(m, std::abs(double(h(i, j))));
    return m;
  });
  const double tol = factor_symmetry_tolerance * max_abs;
  // Pairs (i, j), i > j, visited in 64 x 64 tiles so that h(j, i) is read along a few columns at a
  // time, not across n pages per element. The loop only finds the largest gap; the message names
  // the first pair over the tolerance, found again on failure only.
  const double worst = strip_max([&](index j0, index jw) {
    double m = 0;
    detail::for_lower_pairs_in(n, j0, jw, [&](index i, index j) { m = std::max(m, std::abs(double(h(i, j)) - double(h(j, i)))); });
    return m;
  });
  if (!(worst <= tol))
    detail::for_lower_pairs(n, [&](index i, index j) {
      const double gap = std::abs(double(h(i, j)) - double(h(j, i)));
      detail::require(gap <= tol, what, ": argument '", name, "' must be symmetric (|h_ij - h_ji| <= ",
                      factor_symmetry_tolerance, " * max|h|), but h(", i, ", ", j, ") = ", h(i, j), " and h(",
                      j, ", ", i, ") = ", h(j, i));
    });

  double sum = 0;
  index live = 0;
  for (index i = 0; i < n; ++i) {
    if (h(i, i) == T(0)) {
      rep.dead.push_back(i);
    } else {
      sum += double(h(i, i));
      ++live;
    }
  }
  if (live == 0 || !(sum > 0)) {
    rep.dead.clear();
    rep.replaced_by_identity = true;
    for (index j = 0; j < n; ++j)
      for (index i = 0; i < n; ++i) h(i, j) = i == j ? T(1) : T(0);
    return rep;
  }
  const double mean = sum / double(live);
  rep.mean_diagonal = mean;
  for (index j = 0; j < n; ++j) h(j, j) = T(double(h(j, j)) / mean);
  // strip j0 writes h(i, j) and h(j, i) for j in the strip, i > j: disjoint between strips
  detail::parallel_chunks(b, n, strip, [&](index j0, index jw) {
    detail::for_lower_pairs_in(n, j0, jw, [&](index i, index j) {
      const T v = T(0.5 * (double(h(i, j)) + double(h(j, i))) / mean);
      h(i, j) = v;
      h(j, i) = v;
    });
  });
  for (index d : rep.dead) {
    for (index k = 0; k < n; ++k) {
      h(d, k) = T(0);
      h(k, d) = T(0);
    }
    h(d, d) = T(1);
  }
  return rep;
}

//! normalize_factor with the default backend's threads (the result does not depend on them).
template <Scalar T>
factor_report normalize_factor(matrix_view<T> h, const char* name) {
  return normalize_factor(cpu_backend{}, h, name);
}

namespace detail {
inline void check_indices(const char* what, const char* dim, index extent,
                          const std::vector<index>& idx) {
  for (index i : idx)
    require(i >= 0 && i < extent, what, ": index ", i, " is out of range: argument 'W' has ", extent,
            " ", dim, ", expected indices in [0, ", extent, ")");
}
}  // namespace detail

//! Zeroes the columns `cols` of the weight w (m x n): the inputs H_in reported dead. A dead input
//! contributes nothing to the layer's output on the calibration data, so its weights are free; GPTQ
//! zeroes them so the quantizer does not spend range on them. Throws invalid_argument for an index
//! outside [0, n).
template <Scalar T>
void zero_columns(matrix_view<T> w, const std::vector<index>& cols) {
  detail::check_indices("yaqa::zero_columns", "columns", w.cols, cols);
  for (index j : cols)
    for (index i = 0; i < w.rows; ++i) w(i, j) = T(0);
}

//! Zeroes the rows `rows` of the weight w (m x n): the outputs H_out reported dead (outputs whose
//! error never reaches the loss). Throws invalid_argument for an index outside [0, m).
template <Scalar T>
void zero_rows(matrix_view<T> w, const std::vector<index>& rows) {
  detail::check_indices("yaqa::zero_rows", "rows", w.rows, rows);
  for (index j = 0; j < w.cols; ++j)
    for (index i : rows) w(i, j) = T(0);
}

}  // namespace yaqa
