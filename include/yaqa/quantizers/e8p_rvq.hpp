#pragma once
//! \file
//! e8p_rvq: QuIP#'s residual vector quantization (RVQ) on top of the E8P codebook (e8p.hpp), for
//! 3 and 4 bits per weight. Two greedy stages per 1 x 8 unit, in codebook units u = x / scale:
//!
//!     stage 1: c1 = the E8P codeword nearest to u                                  (16 bits)
//!     stage 2: c2 = the stage-2 codeword nearest to (u - c1) / rho
//!              3 bits: E81B, a 1-bit E8 codebook of 256 points                       (8 bits)
//!              4 bits: E8P again                                                     (16 bits)
//!     recon  = scale * (c1 + rho * c2)
//!
//! Each stage's search is exact (the E8P search of e8p.hpp; E81B below); the stages are greedy,
//! as in QuIP# (stage 1 does not look ahead), so the pair is not the best of all pairs.
//!
//! E81B (built here from its definition): the 240 minimal vectors of E8 (norm^2 2) and the 16
//! vectors +-2 e_i (norm^2 4), a symmetric set (c in E81B => -c in E81B). Index layout (8 bits):
//!   0..111    (+-1, +-1, 0^6): 4 * pair + s, pair = the position pair (a < b) in lexicographic
//!             order (0 = (0, 1), 1 = (0, 2), ..., 27 = (6, 7)); bit 0 of s: entry a is -1, bit 1:
//!             entry b is -1;
//!   112..239  (+-1/2)^8 with an even number of minus signs: 112 + the signs of entries 0-6
//!             (bit i = 1: entry i is -1/2); entry 7 is negative iff that count is odd;
//!   240..255  +-2 e_i: 240 + 2 i + (1 if negative).
//! (QuIP#'s E81B is the origin, the 240 roots and 15 of the 16 +-2 e_i; on Gaussian input the two
//! give the same MSE to 4 digits, 0.02934 vs 0.02935, and this one has no sign bias.)
//! Exact search: the score <x, c> - |c|^2 / 2 of each shape is maximized in closed form (largest
//! two |x_i| with their signs; signs of x with the parity fix on the smallest |x_i|; largest |x_i|).
//!
//! Code layout (std::uint32_t, written little-endian by the CLI like any code): bits 0-15 the
//! stage-1 E8P code (e8p.hpp's layout); 3 bits: bits 16-23 the E81B index, bits 24-31 zero;
//! 4 bits: bits 16-31 the stage-2 E8P code.
//!
//! Scales: params as e8p (one scale per row by default, or per matrix), scale = RMS *
//! e8p_rvq_calibration(bits).scale / scale_override; rho = e8p_rvq_calibration(bits).rho. Both
//! are calibrated here, once per process, on the same fixed-seed Gaussian sample as e8p (8192
//! 8-vectors): a golden-section search over the stage-1 scale whose objective is the MSE at the
//! best rho (itself a golden-section search with stage 1 held fixed). Calibrated: 3 bits scale
//! 1.010, 1/rho 2.04 (QuIP#: 1/0.98 = 1.020 and 2.04); 4 bits scale 1.11, 1/rho 3.85 (QuIP#:
//! 1/1.03 = 0.971 and 3.45; its pair measures MSE 0.0089 here against 0.0083). See
//! docs/quantizers.md for the MSE table.
#include <algorithm>
#include <array>
#include <bit>
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
#include <yaqa/quantizers/e8p.hpp>

namespace yaqa {

namespace detail {

//! The E81B codeword of an index (0..255), entries exact in T (multiples of 1/2).
template <class T>
inline std::array<T, 8> e81b_decode(unsigned idx) {
  std::array<T, 8> c{};
  idx &= 0xFFu;
  if (idx < 112) {
    unsigned pair = idx / 4, a = 0;
    while (pair >= 7 - a) {  // pairs (a, a+1..7): 7 - a of them
      pair -= 7 - a;
      ++a;
    }
    const unsigned b = a + 1 + pair;
    c[a] = (idx & 1u) ? T(-1) : T(1);
    c[b] = (idx & 2u) ? T(-1) : T(1);
  } else if (idx < 240) {
    const unsigned s = idx - 112;
    const unsigned neg7 = static_cast<unsigned>(std::popcount(s)) & 1u;
    const unsigned all = s | (neg7 << 7);
    for (int i = 0; i < 8; ++i) c[i] = ((all >> i) & 1u) ? T(-0.5) : T(0.5);
  } else {
    const unsigned k = idx - 240;
    c[k / 2] = (k & 1u) ? T(-2) : T(2);
  }
  return c;
}

//! Index of the pair (a, b), a < b, in lexicographic order.
inline unsigned e81b_pair_index(int a, int b) {
  return static_cast<unsigned>(a * 7 - a * (a - 1) / 2 + (b - a - 1));
}

//! The E81B codeword nearest to x (exact up to T's rounding of the scores). Ties: the shape
//! listed first above, then the earliest position.
template <class T>
inline std::uint8_t e81b_nearest(const T* x) {
  T ax[8];
  unsigned neg = 0;
  T sum = 0;
  int i1 = 0;  // largest |x|
  for (int i = 0; i < 8; ++i) {
    ax[i] = std::abs(x[i]);
    neg |= (x[i] < T(0) ? 1u : 0u) << i;
    sum += ax[i];
    if (ax[i] > ax[i1]) i1 = i;
  }
  int i2 = i1 == 0 ? 1 : 0;  // second largest
  int imin = 0;
  for (int i = 0; i < 8; ++i) {
    if (i != i1 && ax[i] > ax[i2]) i2 = i;
    if (ax[i] < ax[imin]) imin = i;
  }
  // Scores <x, c> - |c|^2 / 2 (larger is better).
  const T score_pair = ax[i1] + ax[i2] - T(1);
  const bool odd = (std::popcount(neg) & 1) != 0;
  const T score_half = (odd ? sum - T(2) * ax[imin] : sum) * T(0.5) - T(1);
  const T score_axis = T(2) * ax[i1] - T(2);
  if (score_pair >= score_half && score_pair >= score_axis) {
    const int a = std::min(i1, i2), b = std::max(i1, i2);
    const unsigned s = ((neg >> a) & 1u) | (((neg >> b) & 1u) << 1);
    return static_cast<std::uint8_t>(4u * e81b_pair_index(a, b) + s);
  }
  if (score_half >= score_axis) {
    const unsigned signs = odd ? neg ^ (1u << imin) : neg;
    return static_cast<std::uint8_t>(112u + (signs & 0x7Fu));
  }
  return static_cast<std::uint8_t>(240u + 2u * static_cast<unsigned>(i1) + ((neg >> i1) & 1u));
}

}  // namespace detail

//! Result of the RVQ calibration at unit variance.
struct e8p_rvq_calibration_result {
  int bits = 0;
  double scale = 0;  //!< stage-1 codebook multiplier for N(0, 1) input
  double rho = 0;    //!< stage-2 codebook scale relative to stage 1 (recon = scale (c1 + rho c2))
  double mse = 0;    //!< mean squared error per weight at (scale, rho) on the calibration sample
  int samples = 0;   //!< 8-vectors in the calibration sample
};

namespace detail {

//! Greedy two-stage code of u (codebook units) with residual scale rho (T's arithmetic).
template <class T>
inline std::uint32_t e8p_rvq_nearest(const T* u, int bits, T inv_rho) {
  const std::uint16_t c1 = e8p_nearest<T>(u);
  const auto v1 = e8p_decode<T>(c1);
  T r[8];
  for (int t = 0; t < 8; ++t) r[t] = (u[t] - v1[t]) * inv_rho;
  const std::uint32_t c2 = bits == 3 ? std::uint32_t{e81b_nearest<T>(r)} : std::uint32_t{e8p_nearest<T>(r)};
  return static_cast<std::uint32_t>(c1) | (c2 << 16);
}

//! The stage-2 codeword of a code, in stage-2 units.
template <class T>
inline std::array<T, 8> e8p_rvq_stage2(std::uint32_t code, int bits) {
  return bits == 3 ? e81b_decode<T>((code >> 16) & 0xFFu) : e8p_decode<T>(static_cast<std::uint16_t>(code >> 16));
}

//! c1 + rho * c2 in codebook units; the one expression quantize() and reconstruct() share.
template <class T>
inline std::array<T, 8> e8p_rvq_decode(std::uint32_t code, int bits, T rho) {
  auto c = e8p_decode<T>(static_cast<std::uint16_t>(code & 0xFFFFu));
  const auto c2 = e8p_rvq_stage2<T>(code, bits);
  for (int t = 0; t < 8; ++t) c[t] = c[t] + round_to_type(rho * c2[t]);
  return c;
}

//! MSE per weight of (scale, rho), in double, with stage 1 given: res = x / scale - c1 (codebook
//! units).
inline double e8p_rvq_stage2_mse(const std::vector<double>& res, int bits, double scale, double rho) {
  const auto count = static_cast<std::ptrdiff_t>(res.size() / 8);
  std::vector<double> err(static_cast<std::size_t>(count));
  for (std::ptrdiff_t v = 0; v < count; ++v) {
    const double* rv = res.data() + 8 * v;
    double r[8];
    for (int i = 0; i < 8; ++i) r[i] = rv[i] / rho;
    const auto c2 = bits == 3 ? e81b_decode<double>(e81b_nearest<double>(r)) : e8p_decode<double>(e8p_nearest<double>(r));
    double e = 0;
    for (int i = 0; i < 8; ++i) {
      const double d = scale * (rv[i] - rho * c2[i]);
      e += d * d;
    }
    err[static_cast<std::size_t>(v)] = e;
  }
  double sum = 0;
  for (double e : err) sum += e;
  return sum / static_cast<double>(res.size());
}

//! Golden-section minimum of f on [lo, hi] to width tol; returns {argmin, min}.
template <class F>
std::pair<double, double> golden_section(F&& f, double lo, double hi, double tol) {
  const double r = 0.61803398874989484820;
  double c = hi - r * (hi - lo), d = lo + r * (hi - lo);
  double fc = f(c), fd = f(d);
  while (hi - lo > tol) {
    if (fc <= fd) {
      hi = d;
      d = c;
      fd = fc;
      c = hi - r * (hi - lo);
      fc = f(c);
    } else {
      lo = c;
      c = d;
      fc = fd;
      d = lo + r * (hi - lo);
      fd = f(d);
    }
  }
  return fc <= fd ? std::pair{c, fc} : std::pair{d, fd};
}

//! The best rho for a stage-1 scale, and its MSE.
inline std::pair<double, double> e8p_rvq_best_rho(const std::vector<double>& x, int bits, double scale) {
  std::vector<double> res(x.size());
  const auto count = static_cast<std::ptrdiff_t>(x.size() / 8);
  for (std::ptrdiff_t v = 0; v < count; ++v) {
    double u[8];
    for (int i = 0; i < 8; ++i) u[i] = x[static_cast<std::size_t>(8 * v + i)] / scale;
    const auto c1 = e8p_decode<double>(e8p_nearest<double>(u));
    for (int i = 0; i < 8; ++i) res[static_cast<std::size_t>(8 * v + i)] = u[i] - c1[i];
  }
  // Brackets around the optimum (3 bits: 1/rho ~ 2.0, 4 bits: 1/rho ~ 3.8); the calibration test
  // checks that the minimum is interior.
  const double lo = bits == 3 ? 0.30 : 0.15, hi = bits == 3 ? 0.75 : 0.45;
  return golden_section([&](double rho) { return e8p_rvq_stage2_mse(res, bits, scale, rho); }, lo, hi, 1e-3);
}

inline e8p_rvq_calibration_result compute_e8p_rvq_calibration(int bits) {
  constexpr int vectors = 8192;
  const auto x = gaussian_sample(8u * vectors, 0x45385031u /* "E8P1", as e8p */);
  double best_rho = 0;
  const auto [scale, mse] = golden_section(
      [&](double s) {
        const auto [rho, m] = e8p_rvq_best_rho(x, bits, s);
        (void)rho;
        return m;
      },
      0.9, 1.3, 2e-3);
  best_rho = e8p_rvq_best_rho(x, bits, scale).first;
  e8p_rvq_calibration_result res;
  res.bits = bits;
  res.scale = scale;
  res.rho = best_rho;
  res.mse = mse;
  res.samples = vectors;
  return res;
}

//! MSE per weight of the whole RVQ at (scale, rho) on x (a multiple of 8 values), in double.
inline double e8p_rvq_mse_at(const std::vector<double>& x, int bits, double scale, double rho) {
  double err = 0;
  for (std::size_t v = 0; v + 8 <= x.size(); v += 8) {
    double u[8];
    for (int i = 0; i < 8; ++i) u[i] = x[v + i] / scale;
    const auto c = e8p_rvq_decode<double>(e8p_rvq_nearest<double>(u, bits, 1.0 / rho), bits, rho);
    for (int i = 0; i < 8; ++i) {
      const double d = x[v + i] - scale * c[i];
      err += d * d;
    }
  }
  return err / static_cast<double>(x.size());
}

}  // namespace detail

//! The cached unit-variance calibration of the 3- or 4-bit RVQ (computed once per process per
//! bit width, thread-safe). Throws invalid_argument for other bit widths.
inline const e8p_rvq_calibration_result& e8p_rvq_calibration(int bits) {
  detail::require(bits == 3 || bits == 4, "yaqa::e8p_rvq_calibration: argument 'bits' must be 3 or 4, got ", bits);
  if (bits == 3) {
    static const e8p_rvq_calibration_result r3 = detail::compute_e8p_rvq_calibration(3);
    return r3;
  }
  static const e8p_rvq_calibration_result r4 = detail::compute_e8p_rvq_calibration(4);
  return r4;
}

//! Options of e8p_rvq.
struct e8p_rvq_options {
  int bits = 4;                              //!< 3 (E8P + E81B) or 4 (E8P + E8P)
  double scale_override = 1.0;               //!< divides the codebook scale, as e8p's. Must be > 0.
  e8p_scales scales = e8p_scales::per_row;   //!< as e8p's
  index group_size = 0;                      //!< as e8p's: 0 (or -1) for the whole row
};

//! Residual E8P: units of 1 x 8 along the input dimension, 24 (3 bits) or 32 (4 bits) code bits
//! per unit in one std::uint32_t (layout in the file comment), scales as e8p (per row by default,
//! whole rows by default).
//!
//! Storage accounting: bits per weight, plus a 16-bit (fp16) scale per row and group, or one
//! 32-bit (fp32) scale per group (per_matrix); rho is a constant of the format, not stored.
template <Scalar T>
class e8p_rvq {
 public:
  using scalar_type = T;
  using code_type = std::uint32_t;
  using params_type = typename e8p<T>::params_type;
  static constexpr index unit_rows = 1;
  static constexpr index unit_cols = 8;

  e8p_rvq() : e8p_rvq(e8p_rvq_options{}) {}
  explicit e8p_rvq(const e8p_rvq_options& o) : opt_(o) {
    detail::require(o.bits == 3 || o.bits == 4, "yaqa::e8p_rvq: option 'bits' must be 3 or 4, got ", o.bits,
                    " (2 bits is yaqa::e8p)");
    detail::check_e8p_scale_options("yaqa::e8p_rvq", o.scale_override, o.scales, o.group_size);
    const auto& cal = e8p_rvq_calibration(o.bits);  // computed now, not in the first timed call
    multiplier_ = cal.scale / o.scale_override;
    rho_ = static_cast<T>(cal.rho);
    inv_rho_ = static_cast<T>(1.0 / cal.rho);
    (void)detail::e8p_search<T>();
  }

  [[nodiscard]] const e8p_rvq_options& options() const { return opt_; }
  [[nodiscard]] double bits_per_weight() const { return opt_.bits; }
  //! The stage-2 scale relative to stage 1, in T (what quantize and reconstruct use).
  [[nodiscard]] T rho() const { return rho_; }

  [[nodiscard]] index group_cols(index n) const {
    return detail::quantizer_group_cols("yaqa::e8p_rvq::group_cols", opt_.group_size, n, unit_cols);
  }
  void validate(index n) const { (void)group_cols(n); }

  //! scale = RMS * e8p_rvq_calibration(bits).scale / scale_override, per row or per matrix.
  [[nodiscard]] params_type fit(matrix_view<const T> w) const {
    detail::check_fit_input("yaqa::e8p_rvq::fit", w);
    return params_type{detail::e8p_fit_scales(w, multiplier_, opt_.scales)};
  }

  //! Greedy two-stage code per 1 x 8 unit (each stage exact), recon = scale[row0 + i] *
  //! (c1 + rho c2). Thread-safe.
  void quantize(matrix_view<const T> target, const params_type& p, index row0, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    constexpr const char* what = "yaqa::e8p_rvq::quantize";
    detail::check_quantize_args<1, 8>(what, target, row0, p.rows(), recon, codes);
    detail::e8p_quantize_rows(what, target, p.scale, row0, recon, codes,
                              [&](const T* u) { return detail::e8p_rvq_nearest<T>(u, opt_.bits, inv_rho_); },
                              [&](code_type c) { return detail::e8p_rvq_decode<T>(c, opt_.bits, rho_); });
  }

  [[nodiscard]] matrix<T> reconstruct(matrix_view<const code_type> codes, const params_type& p,
                                      index row0) const {
    detail::check_reconstruct_args("yaqa::e8p_rvq::reconstruct", codes.rows, 1, row0, p.rows());
    return detail::e8p_reconstruct_rows<T>(codes, p.scale, row0,
                                           [&](code_type c) { return detail::e8p_rvq_decode<T>(c, opt_.bits, rho_); });
  }

  //! Exact bits of a rows x cols matrix: `bits` per weight plus the scales.
  [[nodiscard]] std::size_t storage_bits(index rows, index cols) const {
    const auto groups = detail::group_count(cols, group_cols(cols));
    return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols) * static_cast<std::size_t>(opt_.bits) +
           detail::e8p_scale_bits(opt_.scales, rows, groups);
  }

  //! c1 + rho c2 of a code, in stage-1 codebook units.
  [[nodiscard]] std::array<T, 8> codeword(code_type code) const {
    return detail::e8p_rvq_decode<T>(code, opt_.bits, rho_);
  }
  //! The greedy code of u (stage-1 codebook units).
  [[nodiscard]] code_type nearest(const std::array<T, 8>& u) const {
    return detail::e8p_rvq_nearest<T>(u.data(), opt_.bits, inv_rho_);
  }

 private:
  e8p_rvq_options opt_;
  double multiplier_ = 0;
  T rho_ = T(0), inv_rho_ = T(0);
};

}  // namespace yaqa
