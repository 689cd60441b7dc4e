#pragma once
//! \file
//! Non-uniform scalar grids:
//! - lloyd_max_grid: the MSE-optimal k-level quantizer of a standard Gaussian (2, 3, 4 bits),
//!   computed here by Lloyd's iteration on the exact Gaussian cell integrals, scaled per row (or
//!   per group) by the row's RMS, so unit-variance rows (e.g. after a random Hadamard transform)
//!   use the optimal grid as is;
//! - fp4_e2m1: OCP MX FP4 (E2M1 values with a shared power-of-two scale per 32 input columns).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/quantizers/common.hpp>
#include <yaqa/quantizers/concepts.hpp>

namespace yaqa {

// ---------------------------------------------------------------------------------------------
// Lloyd-Max grid

//! The Lloyd-Max quantizer of N(0, 1) with 2^bits levels, in double.
struct lloyd_max_table {
  int bits = 0;
  std::vector<double> levels;      //!< 2^bits reconstruction levels, ascending, symmetric
  std::vector<double> thresholds;  //!< 2^bits - 1 decision thresholds (midpoints of the levels)
  double mse = 0;                  //!< E[(X - Q(X))^2] for X ~ N(0, 1), from the closed form
  int iterations = 0;              //!< Lloyd iterations until the levels moved less than 1e-13
};

namespace detail {

//! Standard normal density and upper tail, written with erfc so tails keep their accuracy.
inline double normal_pdf(double x) {
  return std::isinf(x) ? 0.0 : 0.39894228040143267794 * std::exp(-0.5 * x * x);
}
inline double normal_upper_tail(double x) { return 0.5 * std::erfc(x * 0.70710678118654752440); }

//! P(a < X < b) for X ~ N(0, 1) without cancellation: differences of the smaller tail.
inline double normal_cell_probability(double a, double b) {
  if (a >= 0) return normal_upper_tail(a) - normal_upper_tail(b);
  if (b <= 0) return normal_upper_tail(-b) - normal_upper_tail(-a);
  return 1.0 - normal_upper_tail(b) - normal_upper_tail(-a);
}

//! Lloyd's iteration for N(0, 1): alternately thresholds = midpoints and levels = cell
//! centroids E[X | a < X < b] = (pdf(a) - pdf(b)) / P(a < X < b), until the levels move less
//! than 1e-13. The result is symmetrized (the iteration preserves symmetry up to rounding).
inline lloyd_max_table compute_gaussian_lloyd_max(int bits) {
  const int k = 1 << bits;
  lloyd_max_table t;
  t.bits = bits;
  t.levels.resize(static_cast<std::size_t>(k));
  t.thresholds.resize(static_cast<std::size_t>(k - 1));
  const double inf = std::numeric_limits<double>::infinity();
  // Start from a uniform grid on [-3, 3]: every cell then has mass and the iteration is monotone.
  for (int i = 0; i < k; ++i) t.levels[i] = -3.0 + 6.0 * (i + 0.5) / k;
  std::vector<double> y = t.levels;
  for (t.iterations = 1; t.iterations <= 1000000; ++t.iterations) {
    for (int i = 0; i + 1 < k; ++i) t.thresholds[i] = 0.5 * (y[i] + y[i + 1]);
    double moved = 0;
    for (int i = 0; i < k; ++i) {
      const double a = i == 0 ? -inf : t.thresholds[i - 1];
      const double b = i == k - 1 ? inf : t.thresholds[i];
      const double c = (normal_pdf(a) - normal_pdf(b)) / normal_cell_probability(a, b);
      moved = std::max(moved, std::abs(c - y[i]));
      y[i] = c;
    }
    if (moved < 1e-13) break;
  }
  for (int i = 0; i < k / 2; ++i) {
    const double s = 0.5 * (y[k - 1 - i] - y[i]);
    y[i] = -s;
    y[k - 1 - i] = s;
  }
  t.levels = y;
  for (int i = 0; i + 1 < k; ++i) t.thresholds[i] = 0.5 * (y[i] + y[i + 1]);
  // Distortion from the cell integrals: int (x - y)^2 pdf = P - [x pdf]_a^b - 2 y [-pdf]_a^b + y^2 P.
  double mse = 0;
  for (int i = 0; i < k; ++i) {
    const double a = i == 0 ? -inf : t.thresholds[i - 1];
    const double b = i == k - 1 ? inf : t.thresholds[i];
    const double p = normal_cell_probability(a, b);
    const double xpdf_b = std::isinf(b) ? 0.0 : b * normal_pdf(b);
    const double xpdf_a = std::isinf(a) ? 0.0 : a * normal_pdf(a);
    const double m1 = normal_pdf(a) - normal_pdf(b);  // int x pdf over (a, b)
    mse += (p - (xpdf_b - xpdf_a)) - 2.0 * y[i] * m1 + y[i] * y[i] * p;
  }
  t.mse = mse;
  return t;
}

}  // namespace detail

//! The cached Lloyd-Max table for bits in {2, 3, 4} (computed once per process, thread-safe).
inline const lloyd_max_table& gaussian_lloyd_max(int bits) {
  detail::require(bits >= 2 && bits <= 4, "yaqa::gaussian_lloyd_max: argument 'bits' must be 2, 3 "
                  "or 4, got ", bits);
  static const std::array<lloyd_max_table, 3> tables = {detail::compute_gaussian_lloyd_max(2),
                                                        detail::compute_gaussian_lloyd_max(3),
                                                        detail::compute_gaussian_lloyd_max(4)};
  return tables[static_cast<std::size_t>(bits - 2)];
}

//! Options of lloyd_max_grid.
struct lloyd_max_options {
  int bits = 4;          //!< 2, 3 or 4
  index group_size = 0;  //!< input columns per group; 0 (or -1) = one group per row
};

//! Gaussian Lloyd-Max levels times a per-row RMS scale; codes index the ascending levels.
//!
//! Rounding: the element goes to the nearest of the row's reconstruction values scale * level_k
//! (found from the thresholds, then confirmed against the two neighbouring values, so it is the
//! nearest in T's arithmetic; exact ties go to the lower level). A row whose RMS is 0 gets scale
//! 0 and reconstructs to 0.
//!
//! Storage accounting: `bits` per weight, plus a 16-bit (fp16) scale per row and group.
template <Scalar T>
class lloyd_max_grid {
 public:
  using scalar_type = T;
  using code_type = std::uint8_t;
  struct params_type {
    std::vector<T> scale;  //!< per-row RMS of the fitted region
    [[nodiscard]] index rows() const { return static_cast<index>(scale.size()); }
  };
  static constexpr index unit_rows = 1;
  static constexpr index unit_cols = 1;

  lloyd_max_grid() : lloyd_max_grid(lloyd_max_options{}) {}
  explicit lloyd_max_grid(const lloyd_max_options& o) : opt_(o) {
    constexpr const char* what = "yaqa::lloyd_max_grid";
    detail::require(o.bits >= 2 && o.bits <= 4, what, ": option 'bits' must be 2, 3 or 4, got ",
                    o.bits);
    detail::check_group_size_option(what, o.group_size);
    const auto& t = gaussian_lloyd_max(o.bits);
    levels_.assign(t.levels.begin(), t.levels.end());
    thresholds_.assign(t.thresholds.begin(), t.thresholds.end());
  }

  [[nodiscard]] const lloyd_max_options& options() const { return opt_; }
  [[nodiscard]] double bits_per_weight() const { return opt_.bits; }
  //! The levels in T (ascending), i.e. the reconstruction values of a row with scale 1.
  [[nodiscard]] const std::vector<T>& levels() const { return levels_; }

  [[nodiscard]] index group_cols(index n) const {
    return detail::quantizer_group_cols("yaqa::lloyd_max_grid::group_cols", opt_.group_size, n);
  }
  void validate(index n) const { (void)group_cols(n); }

  //! Per-row RMS of w (accumulated in double).
  [[nodiscard]] params_type fit(matrix_view<const T> w) const {
    detail::check_fit_input("yaqa::lloyd_max_grid::fit", w);
    std::vector<double> ss(static_cast<std::size_t>(w.rows), 0.0);
    for (index j = 0; j < w.cols; ++j)
      for (index i = 0; i < w.rows; ++i) ss[i] += static_cast<double>(w(i, j)) * w(i, j);
    params_type p;
    p.scale.resize(ss.size());
    for (std::size_t i = 0; i < ss.size(); ++i)
      p.scale[i] = static_cast<T>(std::sqrt(ss[i] / static_cast<double>(w.cols)));
    return p;
  }

  void quantize(matrix_view<const T> target, const params_type& p, index row0, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    constexpr const char* what = "yaqa::lloyd_max_grid::quantize";
    detail::check_quantize_args<1, 1>(what, target, row0, p.rows(), recon, codes);
    const int k = static_cast<int>(levels_.size());
    const T* lv = levels_.data();
    const T* th = thresholds_.data();
    int bad = 0;
    for (index j = 0; j < target.cols; ++j) {
      const T* x = target.data + j * target.ld;
      T* out = recon.data + j * recon.ld;
      code_type* c = codes.data + j * codes.ld;
      for (index i = 0; i < target.rows; ++i) {
        const T s = p.scale[row0 + i];
        const bool ok = detail::finite_flag(x[i]);
        bad |= !ok;
        const T u = s > T(0) && ok ? x[i] / s : T(0);
        int code = 0;
        for (int t = 0; t + 1 < k; ++t) code += u > th[t] ? 1 : 0;
        // The threshold test ran on x / s (rounded); confirm against the actual values s * level.
        const T v = detail::round_to_type(s * lv[code]);
        const T best = std::abs(x[i] - v);
        if (code > 0 && std::abs(x[i] - detail::round_to_type(s * lv[code - 1])) <= best)
          --code;
        else if (code + 1 < k && std::abs(x[i] - detail::round_to_type(s * lv[code + 1])) < best)
          ++code;
        c[i] = static_cast<code_type>(code);
        out[i] = s * lv[code];
      }
    }
    if (bad) detail::throw_non_finite_target(what, target);
  }

  [[nodiscard]] matrix<T> reconstruct(matrix_view<const code_type> codes, const params_type& p,
                                      index row0) const {
    detail::check_reconstruct_args("yaqa::lloyd_max_grid::reconstruct", codes.rows, 1, row0, p.rows());
    matrix<T> out(codes.rows, codes.cols);
    for (index j = 0; j < codes.cols; ++j)
      for (index i = 0; i < codes.rows; ++i) {
        const auto c = static_cast<std::size_t>(codes(i, j));
        detail::require<format_error>(c < levels_.size(), "yaqa::lloyd_max_grid::reconstruct: code ",
                                      c, " at (", i, ", ", j, ") is out of range; expected < ",
                                      levels_.size());
        out(i, j) = p.scale[row0 + i] * levels_[c];
      }
    return out;
  }

  //! Exact bits of a rows x cols matrix: codes plus a 16-bit scale per row and group.
  [[nodiscard]] std::size_t storage_bits(index rows, index cols) const {
    const auto groups = detail::group_count(cols, group_cols(cols));
    const auto r = static_cast<std::size_t>(rows), c = static_cast<std::size_t>(cols);
    return r * c * static_cast<std::size_t>(opt_.bits) + r * groups * 16;
  }

 private:
  lloyd_max_options opt_;
  std::vector<T> levels_;
  std::vector<T> thresholds_;
};

// ---------------------------------------------------------------------------------------------
// FP4 E2M1 with MX block scales

//! OCP MX FP4: each element is an E2M1 value {0, 0.5, 1, 1.5, 2, 3, 4, 6} with a sign; each row
//! of each block of 32 consecutive input columns shares one power-of-two scale 2^e (stored as an
//! 8-bit E8M0 exponent), e = floor(log2(amax)) - 2, amax = the block row's max |x| (so amax maps
//! into [4, 8) and only values above 6 * 2^e saturate). An all-zero block row gets e = 0.
//! e is clamped to E8M0's range [-127, 127].
//!
//! Codes are the 4-bit E2M1 encodings: bit 3 = sign, bits 0-2 = magnitude index (000 = 0 ...
//! 111 = 6), so the code is also the OCP bit pattern. Rounding is to the nearest value, ties to the
//! even code (e.g. 0.25 -> 0, 0.75 -> 1, 2.5 -> 2, 5 -> 4); a value that rounds to 0 is stored as
//! +0 (code 0).
//!
//! bits_per_weight() is 4 (the codes); the scales add 8 bits per 32 weights (0.25 bit/weight),
//! which storage_bits() counts.
template <Scalar T>
class fp4_e2m1 {
 public:
  using scalar_type = T;
  using code_type = std::uint8_t;
  struct params_type {
    std::vector<std::int8_t> exponent;  //!< per-row e (what is stored): the block scale is 2^e
    std::vector<T> scale;               //!< 2^e in T (derived from exponent, kept for speed)
    std::vector<T> inv_scale;           //!< 2^-e in T (derived)
    [[nodiscard]] index rows() const { return static_cast<index>(exponent.size()); }
  };
  static constexpr index unit_rows = 1;
  static constexpr index unit_cols = 1;
  static constexpr index block_size = 32;
  //! The eight E2M1 magnitudes, indexed by the low three code bits.
  static constexpr std::array<T, 8> magnitudes = {T(0), T(0.5), T(1), T(1.5),
                                                  T(2), T(3),   T(4), T(6)};

  [[nodiscard]] double bits_per_weight() const { return 4.0; }

  //! Always 32. Throws invalid_argument when n is not a multiple of 32.
  [[nodiscard]] index group_cols(index n) const {
    return detail::quantizer_group_cols("yaqa::fp4_e2m1::group_cols", block_size, n);
  }
  void validate(index n) const { (void)group_cols(n); }

  //! Per-row shared exponent of w (drivers pass one 32-column block; any width is accepted and
  //! then forms one block).
  [[nodiscard]] params_type fit(matrix_view<const T> w) const {
    detail::check_fit_input("yaqa::fp4_e2m1::fit", w);
    std::vector<T> amax(static_cast<std::size_t>(w.rows), T(0));
    for (index j = 0; j < w.cols; ++j)
      for (index i = 0; i < w.rows; ++i) amax[i] = std::max(amax[i], std::abs(w(i, j)));
    params_type p;
    p.exponent.resize(amax.size());
    for (std::size_t i = 0; i < amax.size(); ++i) {
      const int e = amax[i] > T(0) ? std::ilogb(amax[i]) - 2 : 0;  // ilogb = floor(log2), exact
      p.exponent[i] = static_cast<std::int8_t>(std::clamp(e, -127, 127));
    }
    return with_scales(std::move(p));
  }

  //! Params from stored exponents (e.g. read from a checkpoint): fills the derived scales.
  [[nodiscard]] static params_type with_scales(params_type p) {
    p.scale.resize(p.exponent.size());
    p.inv_scale.resize(p.exponent.size());
    for (std::size_t i = 0; i < p.exponent.size(); ++i) {
      detail::require(p.exponent[i] >= -127, "yaqa::fp4_e2m1: exponent ", int(p.exponent[i]),
                      " of row ", i, " is outside E8M0's range [-127, 127]");
      p.scale[i] = std::ldexp(T(1), p.exponent[i]);
      p.inv_scale[i] = std::ldexp(T(1), -p.exponent[i]);
    }
    return p;
  }

  void quantize(matrix_view<const T> target, const params_type& p, index row0, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    constexpr const char* what = "yaqa::fp4_e2m1::quantize";
    detail::check_quantize_args<1, 1>(what, target, row0, p.rows(), recon, codes);
    const T* sc = p.scale.data() + row0;
    const T* inv = p.inv_scale.data() + row0;
    int bad = 0;
    for (index j = 0; j < target.cols; ++j) {
      const T* x = target.data + j * target.ld;
      T* out = recon.data + j * recon.ld;
      code_type* c = codes.data + j * codes.ld;
      for (index i = 0; i < target.rows; ++i) {
        const T xv = x[i];
        bad |= !detail::finite_flag(xv);
        // Scaling by a power of two is exact (results below the normal range round to 0 anyway),
        // so the midpoint comparisons are exact too. NaN fails every comparison: m = 0.
        const T v = std::abs(xv) * inv[i];
        const int c5 = v > T(2.5), c6 = v >= T(3.5), c7 = v > T(5);
        const int m = int(v > T(0.25)) + int(v >= T(0.75)) + int(v > T(1.25)) + int(v >= T(1.75)) +
                      c5 + c6 + c7;
        const int neg = int(m > 0) & int(xv < T(0));
        c[i] = static_cast<code_type>((neg << 3) | m);
        // magnitudes[m] without a lookup or branch (keeps the loop vectorizable): m / 2 up to
        // m = 4 (2.0), then +0.5, +0.5 and +1.5 more for 3, 4 and 6. Every term is exact.
        const T mag = T(0.5) * T(m) + T(0.5) * T(c5) + T(0.5) * T(c6) + T(1.5) * T(c7);
        out[i] = mag * sc[i] * T(1 - 2 * neg);
      }
    }
    if (bad) detail::throw_non_finite_target(what, target);
  }

  [[nodiscard]] matrix<T> reconstruct(matrix_view<const code_type> codes, const params_type& p,
                                      index row0) const {
    detail::check_reconstruct_args("yaqa::fp4_e2m1::reconstruct", codes.rows, 1, row0, p.rows());
    matrix<T> out(codes.rows, codes.cols);
    for (index j = 0; j < codes.cols; ++j)
      for (index i = 0; i < codes.rows; ++i) {
        detail::require<format_error>(codes(i, j) < 16, "yaqa::fp4_e2m1::reconstruct: code ",
                                      int(codes(i, j)), " at (", i, ", ", j,
                                      ") is out of range; expected < 16");
        const T mag = magnitudes[codes(i, j) & 7u] * p.scale[row0 + i];
        out(i, j) = (codes(i, j) & 8u) ? -mag : mag;
      }
    return out;
  }

  //! Exact bits: 4 per weight plus an 8-bit E8M0 exponent per row and 32-column block.
  [[nodiscard]] std::size_t storage_bits(index rows, index cols) const {
    const auto r = static_cast<std::size_t>(rows), c = static_cast<std::size_t>(cols);
    return r * c * 4 + r * detail::group_count(cols, group_cols(cols)) * 8;
  }
};

}  // namespace yaqa
