#pragma once
// Small quantizers used only by the rounding tests, so they do not depend on the library's own
// quantizers: a uniform grid (step s, no params), a per-row scaled grid with groups, and a
// 2-element vector quantizer (the D2 "checkerboard" lattice), and a 16x16 tile quantizer (the
// D256 checkerboard lattice on a whole tile, standing in for a trellis), all exact and cheap.
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

//! Tile quantizer on 16 x 16 units (a trellis tile's shape): nearest point of the D_256
//! "checkerboard" lattice {k in Z^256 : sum k even} scaled by `step`, i.e. round every element,
//! then if the sum is odd re-round the element with the largest rounding error the other way
//! (Conway & Sloane's exact D_n decoder; ties to the first such element in column-major order).
//! The code is a 64-bit hash of the 256 integers (enough to tell tiles apart in tests).
template <class T>
struct d256_tiles {
  using scalar_type = T;
  using code_type = std::uint64_t;
  struct params_type {};
  static constexpr yaqa::index unit_rows = 16;
  static constexpr yaqa::index unit_cols = 16;
  T step = T(0.5);
  yaqa::index group_cols(yaqa::index n) const { return n; }
  params_type fit(matrix_view<const T>) const { return {}; }
  void quantize(matrix_view<const T> t, const params_type&, yaqa::index, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    for (yaqa::index tj = 0; tj < t.cols; tj += 16)
      for (yaqa::index ti = 0; ti < t.rows; ti += 16) {
        T k[256];
        long long parity = 0;
        int worst = 0;
        T worst_err = T(-1);
        for (int b = 0; b < 16; ++b)
          for (int a = 0; a < 16; ++a) {
            const T x = t(ti + a, tj + b) / step;
            const T r = std::nearbyint(x);
            k[a + 16 * b] = r;
            parity += static_cast<long long>(r);
            const T err = std::abs(x - r);
            if (err > worst_err) worst_err = err, worst = a + 16 * b;
          }
        if (parity % 2 != 0) {
          const T x = t(ti + worst % 16, tj + worst / 16) / step;
          k[worst] += (x > k[worst] ? T(1) : T(-1));
        }
        std::uint64_t h = 1469598103934665603ull;
        for (int e = 0; e < 256; ++e) {
          h ^= static_cast<std::uint64_t>(static_cast<long long>(k[e]));
          h *= 1099511628211ull;
          recon(ti + e % 16, tj + e / 16) = k[e] * step;
        }
        codes(ti / 16, tj / 16) = h;
      }
  }
  double bits_per_weight() const { return 64.0 / 256.0; }
};

static_assert(Quantizer<uniform_grid<float>>);
static_assert(Quantizer<row_scaled_grid<double>>);
static_assert(Quantizer<d2_pairs<float>>);
static_assert(Quantizer<d256_tiles<double>>);

}  // namespace yaqa::test
