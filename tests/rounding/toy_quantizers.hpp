#pragma once
// Small quantizers used only by the rounding tests, so they do not depend on the library's own
// quantizers: a uniform grid (step s, no params), a per-row scaled grid with groups, and a
// 2-element vector quantizer (the D2 "checkerboard" lattice), all exact and cheap.
#include <cmath>
#include <cstdint>

#include <yaqa/core/eigen.hpp>
#include <yaqa/quantizers/concepts.hpp>

namespace yaqa::test {

//! Rounds every element to the nearest multiple of `step` (ties to even multiple).
template <class T>
struct uniform_grid {
  using scalar_type = T;
  using code_type = std::int32_t;
  struct params_type {};
  static constexpr yaqa::index unit_rows = 1;
  static constexpr yaqa::index unit_cols = 1;
  T step = T(0.5);
  yaqa::index group_cols(yaqa::index n) const { return n; }
  params_type fit(matrix_view<const T>) const { return {}; }
  void quantize(matrix_view<const T> t, const params_type&, yaqa::index, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    for (yaqa::index j = 0; j < t.cols; ++j)
      for (yaqa::index i = 0; i < t.rows; ++i) {
        const T c = std::nearbyint(t(i, j) / step);
        codes(i, j) = static_cast<code_type>(c);
        recon(i, j) = c * step;
      }
  }
  double bits_per_weight() const { return 32; }
};

//! Per-row, per-group symmetric 3-bit grid: scale = max|x| / 3 over the fitted region's row.
template <class T>
struct row_scaled_grid {
  using scalar_type = T;
  using code_type = std::int8_t;
  using params_type = vector<T>;  // one scale per row of W
  static constexpr yaqa::index unit_rows = 1;
  static constexpr yaqa::index unit_cols = 1;
  yaqa::index group = 0;  // 0: whole row
  yaqa::index group_cols(yaqa::index n) const { return group > 0 ? group : n; }
  params_type fit(matrix_view<const T> w) const {
    params_type s(w.rows);
    for (yaqa::index i = 0; i < w.rows; ++i) {
      T mx = 0;
      for (yaqa::index j = 0; j < w.cols; ++j) mx = std::max(mx, std::abs(w(i, j)));
      s(i) = mx > 0 ? mx / T(3) : T(1);
    }
    return s;
  }
  void quantize(matrix_view<const T> t, const params_type& p, yaqa::index row0, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    for (yaqa::index j = 0; j < t.cols; ++j)
      for (yaqa::index i = 0; i < t.rows; ++i) {
        const T s = p(row0 + i);
        const T c = std::clamp(std::nearbyint(t(i, j) / s), T(-4), T(3));
        codes(i, j) = static_cast<code_type>(c);
        recon(i, j) = c * s;
      }
  }
  double bits_per_weight() const { return 3; }
};

//! Vector quantizer on pairs of consecutive input columns: nearest point of the D2 lattice
//! {(x, y) in Z^2 : x + y even} scaled by `step` (unit 1 x 2).
template <class T>
struct d2_pairs {
  using scalar_type = T;
  using code_type = std::int64_t;
  struct params_type {};
  static constexpr yaqa::index unit_rows = 1;
  static constexpr yaqa::index unit_cols = 2;
  T step = T(0.5);
  yaqa::index group_cols(yaqa::index n) const { return n; }
  params_type fit(matrix_view<const T>) const { return {}; }
  void quantize(matrix_view<const T> t, const params_type&, yaqa::index, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    for (yaqa::index j = 0; j < t.cols; j += 2)
      for (yaqa::index i = 0; i < t.rows; ++i) {
        const T x = t(i, j) / step, y = t(i, j + 1) / step;
        T a = std::nearbyint(x), b = std::nearbyint(y);
        if (std::fmod(std::abs(a + b), T(2)) != 0) {  // fix parity on the coordinate with the larger error
          if (std::abs(x - a) > std::abs(y - b)) a += (x > a ? 1 : -1);
          else b += (y > b ? 1 : -1);
        }
        codes(i, j / 2) = static_cast<code_type>(a) * 100000 + static_cast<code_type>(b);
        recon(i, j) = a * step;
        recon(i, j + 1) = b * step;
      }
  }
  double bits_per_weight() const { return 32; }
};

static_assert(Quantizer<uniform_grid<float>>);
static_assert(Quantizer<row_scaled_grid<double>>);
static_assert(Quantizer<d2_pairs<float>>);

}  // namespace yaqa::test
