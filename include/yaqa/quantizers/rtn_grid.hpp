#pragma once
//! \file
//! int_grid: the uniform integer grid of GPTQ (2-8 bits, symmetric or asymmetric, per output
//! channel or group-wise along the input dimension, optional MSE clipping search).
//!
//! The arithmetic reproduces the GPTQ reference quantizer operation for operation, in the scalar
//! type T, so that a naive transcription gives bit-identical results. Per row of the fitted region:
//!
//!     xmin = min(0, min(row)),  xmax = max(0, max(row))
//!     sym:  xmax = max(|xmin|, xmax);  if xmin < 0: xmin = -xmax
//!     if xmin == 0 and xmax == 0: xmin = -1, xmax = +1
//!     maxq  = 2^bits - 1                                   (as T)
//!     scale = (xmax - xmin) / maxq
//!     zero  = sym ? (maxq + 1) / 2 : round(-xmin / scale)
//!     q     = min(max(round(x / scale) + zero, 0), maxq);   recon = scale * (q - zero)
//!
//! round is std::nearbyint in the default rounding mode (half to even, like torch.round).
//! Reference quirk kept on purpose: a symmetric row without negative values keeps xmin = 0, so
//! its grid (zero point (maxq + 1) / 2) reaches only about xmax / 2 on the positive side.
//! MSE search (options.mse): for i = 0 .. int(maxshrink * grid) - 1,
//!     p = T(1.0 - double(i) / grid)        (computed in double, then rounded to T, as torch does
//!                                           with a Python scalar)
//!     xmin1 = p * xmin, xmax1 = p * xmax, scale1 = (xmax1 - xmin1) / maxq,
//!     zero1 = sym ? zero : round(-xmin1 / scale1),
//!     err = sum over the row's columns, left to right, in T, of pow(|recon1 - x|, T(norm)),
//!           recon1 = scale1 * (q1 - zero1) rounded to T before the subtraction (never fused
//!           into an FMA, as in PyTorch's separate kernels),
//! and (scale1, zero1) replaces the row's parameters when err < best (strictly; best starts at +inf).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/quantizers/common.hpp>
#include <yaqa/quantizers/concepts.hpp>

namespace yaqa {

//! Options of int_grid (designated-initializer friendly: `int_grid<float>({.bits = 3, .sym = true})`).
struct int_grid_options {
  int bits = 4;             //!< 2..8
  bool sym = false;         //!< symmetric grid with the fixed zero point (maxq + 1) / 2
  index group_size = 0;     //!< input columns per group; 0 (or -1) = one group per row
  bool mse = false;         //!< GPTQ's clipping search (shrink the range, keep the lowest error)
  double norm = 2.4;        //!< error exponent of the MSE search (> 0)
  int grid = 100;           //!< grid resolution of the MSE search (>= 1)
  double maxshrink = 0.8;   //!< fraction of the grid searched, in (0, 1]
};

//! Uniform integer grid with per-row (scale, zero) per group; codes are the integers 0..2^bits-1.
//!
//! Storage accounting (storage_bits): `bits` per weight for the codes, plus per row and group a
//! 16-bit scale (fp16, as GPTQ checkpoints store it) and, when asymmetric, a `bits`-bit zero
//! (packed like GPTQ's qzeros; the symmetric zero is implied). The in-memory parameters are kept
//! in T: a checkpoint writer rounds the scale to fp16 when it exports.
template <Scalar T>
class int_grid {
 public:
  using scalar_type = T;
  using code_type = std::uint8_t;
  //! Per-row scale and zero point of one group (zero holds integers, stored as T like GPTQ).
  struct params_type {
    std::vector<T> scale;
    std::vector<T> zero;
    [[nodiscard]] index rows() const { return static_cast<index>(scale.size()); }
  };
  static constexpr index unit_rows = 1;
  static constexpr index unit_cols = 1;

  int_grid() : int_grid(int_grid_options{}) {}
  explicit int_grid(const int_grid_options& o) : opt_(o) {
    constexpr const char* what = "yaqa::int_grid";
    detail::require(o.bits >= 2 && o.bits <= 8, what, ": option 'bits' must be in [2, 8], got ",
                    o.bits);
    detail::check_group_size_option(what, o.group_size);
    detail::require(o.norm > 0 && std::isfinite(o.norm), what,
                    ": option 'norm' must be a finite positive exponent, got ", o.norm);
    detail::require(o.grid >= 1, what, ": option 'grid' must be >= 1, got ", o.grid);
    detail::require(o.maxshrink > 0 && o.maxshrink <= 1, what,
                    ": option 'maxshrink' must be in (0, 1], got ", o.maxshrink);
    maxq_ = static_cast<T>((1 << o.bits) - 1);
  }

  [[nodiscard]] const int_grid_options& options() const { return opt_; }
  [[nodiscard]] double bits_per_weight() const { return opt_.bits; }

  //! Columns per group for an n-column matrix. Throws invalid_argument (naming the group size
  //! and n) when the group size does not divide n.
  [[nodiscard]] index group_cols(index n) const {
    return detail::quantizer_group_cols("yaqa::int_grid::group_cols", opt_.group_size, n);
  }
  //! Throws unless this quantizer can be used on a matrix with n columns.
  void validate(index n) const { (void)group_cols(n); }

  //! (scale, zero) per row of w; all of w's columns form one group.
  [[nodiscard]] params_type fit(matrix_view<const T> w) const {
    constexpr const char* what = "yaqa::int_grid::fit";
    detail::check_fit_input(what, w);
    std::vector<T> xmin, xmax;
    params_type p = fit_range(w, nullptr, nullptr, xmin, xmax);
    if (opt_.mse) mse_search(w, xmin, xmax, p);
    return p;
  }

  //! Learnable weight clipping (OmniQuant's LWC): fit() with the row range shrunk by per-row
  //! factors, xmax_i = c_hi[i] * max(0, max row i), xmin_i = c_lo[i] * min(0, min row i), then
  //! the usual scale and zero. Symmetric grids clip their symmetric range by c_hi only (c_lo is
  //! ignored). Factors must be in (0, 1]; all ones gives fit() without the MSE search (the
  //! learned clip replaces it).
  [[nodiscard]] params_type fit_clipped(matrix_view<const T> w, const T* c_hi, const T* c_lo) const {
    constexpr const char* what = "yaqa::int_grid::fit_clipped";
    detail::check_fit_input(what, w);
    check_clip_factors(what, w.rows, c_hi, c_lo);
    std::vector<T> xmin, xmax;
    return fit_range(w, c_hi, c_lo, xmin, xmax);
  }

  //! Backward pass of quantize() for the straight-through estimator (round has derivative 1),
  //! with p = fit_clipped(w, c_hi, c_lo) and the zero point held fixed (it is rounded, as in
  //! OmniQuant). On entry g holds dL/dWhat on w's region; on exit dL/dw through the round path
  //! (elements whose code was clamped get 0), and d_hi[i] / d_lo[i] receive += dL/dc_hi[i] /
  //! dL/dc_lo[i] through the scale: dWhat/ds = (q - zero) - (in range ? x / s : 0).
  void clip_backward(matrix_view<const T> w, const params_type& p, const T* c_hi, const T* c_lo,
                     matrix_view<T> g, T* d_hi, T* d_lo) const {
    constexpr const char* what = "yaqa::int_grid::clip_backward";
    check_shape(what, "g", g, w.rows, w.cols);
    detail::require<shape_error>(p.rows() == w.rows, what, ": params have ", p.rows(),
                                 " rows, argument 'w' has ", w.rows);
    check_clip_factors(what, w.rows, c_hi, c_lo);
    const index m = w.rows, n = w.cols;
    std::vector<T> ds(static_cast<std::size_t>(m), T(0)), xmin(static_cast<std::size_t>(m), T(0)),
        xmax(static_cast<std::size_t>(m), T(0));
    for (index j = 0; j < n; ++j)
      for (index i = 0; i < m; ++i) {
        const T x = w(i, j), s = p.scale[i], z = p.zero[i];
        xmin[i] = std::min(xmin[i], x);
        xmax[i] = std::max(xmax[i], x);
        const T r = std::nearbyint(x / s) + z;
        const bool in = r >= T(0) && r <= maxq_;
        const T q = std::min(std::max(r, T(0)), maxq_);
        ds[i] += g(i, j) * ((q - z) - (in ? x / s : T(0)));
        if (!in) g(i, j) = T(0);
      }
    for (index i = 0; i < m; ++i) {
      if (xmin[i] == T(0) && xmax[i] == T(0)) continue;  // the fixed [-1, 1] range: no gradient
      if (opt_.sym) {
        d_hi[i] += ds[i] * p.scale[i] / c_hi[i];  // the scale is linear in c_hi
      } else {
        d_hi[i] += ds[i] * xmax[i] / maxq_;
        d_lo[i] -= ds[i] * xmin[i] / maxq_;
      }
    }
  }

  //! Rounds target (rows [row0, row0 + r) of the fitted region) elementwise. Thread-safe.
  //! Throws non_finite_error if the target holds NaN/Inf (see quantizers/common.hpp).
  void quantize(matrix_view<const T> target, const params_type& p, index row0, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    constexpr const char* what = "yaqa::int_grid::quantize";
    detail::check_quantize_args<1, 1>(what, target, row0, p.rows(), recon, codes);
    const T* sc = p.scale.data() + row0;
    const T* ze = p.zero.data() + row0;
    const T maxq = maxq_;
    int bad = 0;
    for (index j = 0; j < target.cols; ++j) {
      const T* x = target.data + j * target.ld;
      T* out = recon.data + j * recon.ld;
      code_type* c = codes.data + j * codes.ld;
      for (index i = 0; i < target.rows; ++i) {
        const T xv = x[i];
        const bool ok = detail::finite_flag(xv);
        bad |= !ok;
        const T q = std::min(std::max(std::nearbyint(xv / sc[i]) + ze[i], T(0)), maxq);
        out[i] = sc[i] * (q - ze[i]);
        c[i] = static_cast<code_type>(static_cast<int>(ok ? q : T(0)));  // never convert NaN
      }
    }
    if (bad) detail::throw_non_finite_target(what, target);
  }

  //! Decodes codes (rows [row0, ...) of the fitted region): scale * (code - zero).
  [[nodiscard]] matrix<T> reconstruct(matrix_view<const code_type> codes, const params_type& p,
                                      index row0) const {
    detail::check_reconstruct_args("yaqa::int_grid::reconstruct", codes.rows, 1, row0, p.rows());
    matrix<T> out(codes.rows, codes.cols);
    for (index j = 0; j < codes.cols; ++j)
      for (index i = 0; i < codes.rows; ++i)
        out(i, j) = p.scale[row0 + i] * (static_cast<T>(codes(i, j)) - p.zero[row0 + i]);
    return out;
  }

  //! Exact bits of a rows x cols matrix: codes plus per-row, per-group fp16 scale (+ zero if asym).
  [[nodiscard]] std::size_t storage_bits(index rows, index cols) const {
    const auto groups = detail::group_count(cols, group_cols(cols));
    const auto r = static_cast<std::size_t>(rows), c = static_cast<std::size_t>(cols);
    const auto b = static_cast<std::size_t>(opt_.bits);
    return r * c * b + r * groups * (16 + (opt_.sym ? 0 : b));
  }

 private:
  static void check_clip_factors(const char* what, index rows, const T* c_hi, const T* c_lo) {
    detail::require(c_hi != nullptr && c_lo != nullptr, what, ": clip factors must not be null");
    for (index i = 0; i < rows; ++i)
      detail::require(c_hi[i] > T(0) && c_hi[i] <= T(1) && c_lo[i] > T(0) && c_lo[i] <= T(1), what,
                      ": clip factors of row ", i, " are (", c_hi[i], ", ", c_lo[i],
                      "); expected values in (0, 1]");
  }

  //! GPTQ's range rule per row, optionally shrunk by clip factors (null: none). Leaves the
  //! clipped range in xmin / xmax (the MSE search starts from it).
  params_type fit_range(matrix_view<const T> w, const T* c_hi, const T* c_lo, std::vector<T>& xmin,
                        std::vector<T>& xmax) const {
    const index m = w.rows, n = w.cols;
    xmin.assign(static_cast<std::size_t>(m), T(0));
    xmax.assign(static_cast<std::size_t>(m), T(0));
    // min(0, min(row)) == min over {0} U row, so starting from 0 gives GPTQ's clamp for free.
    for (index j = 0; j < n; ++j)
      for (index i = 0; i < m; ++i) {
        const T x = w(i, j);
        xmin[i] = std::min(xmin[i], x);
        xmax[i] = std::max(xmax[i], x);
      }
    params_type p;
    p.scale.resize(static_cast<std::size_t>(m));
    p.zero.resize(static_cast<std::size_t>(m));
    for (index i = 0; i < m; ++i) {
      T lo = xmin[i], hi = xmax[i];
      if (opt_.sym) {
        hi = std::max(std::abs(lo), hi);
        if (c_hi) hi *= c_hi[i];
        if (lo < T(0)) lo = -hi;
      } else if (c_hi) {
        hi *= c_hi[i];
        lo *= c_lo[i];
      }
      if (lo == T(0) && hi == T(0)) {
        lo = T(-1);
        hi = T(1);
      }
      xmin[i] = lo;
      xmax[i] = hi;
      p.scale[i] = (hi - lo) / maxq_;
      p.zero[i] = opt_.sym ? (maxq_ + T(1)) / T(2) : std::nearbyint(-lo / p.scale[i]);
    }
    return p;
  }

  //! GPTQ's clipping search. Rows are independent, so chunks of rows run in parallel (OpenMP,
  //! a partition fixed by the shape: bit-identical for any thread count; serial when called
  //! from inside another parallel region).
  void mse_search(matrix_view<const T> w, const std::vector<T>& xmin, const std::vector<T>& xmax,
                  params_type& p) const {
    const index m = w.rows, n = w.cols;
    const index chunk = 32;
    const index chunks = (m + chunk - 1) / chunk;
    const int steps = static_cast<int>(opt_.maxshrink * opt_.grid);
    const bool parallel = chunks > 1 && double(m) * double(n) * steps > 2e6;
    (void)parallel;
#if defined(_OPENMP)
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
#endif
    for (index c = 0; c < chunks; ++c)
      mse_search_rows(w, xmin, xmax, p, c * chunk, std::min(chunk, m - c * chunk), steps);
  }

  void mse_search_rows(matrix_view<const T> w, const std::vector<T>& xmin, const std::vector<T>& xmax,
                       params_type& p, index r0, index h, int steps) const {
    const index n = w.cols;
    const T maxq = maxq_;
    const T norm = static_cast<T>(opt_.norm);
    const auto hs = static_cast<std::size_t>(h);
    std::vector<T> best(hs, std::numeric_limits<T>::infinity()), scale1(hs), zero1(hs), err(hs);
    for (int s = 0; s < steps; ++s) {
      const T pr = static_cast<T>(1.0 - static_cast<double>(s) / static_cast<double>(opt_.grid));
      for (index i = 0; i < h; ++i) {
        const T lo = pr * xmin[r0 + i], hi = pr * xmax[r0 + i];
        scale1[i] = (hi - lo) / maxq;
        zero1[i] = opt_.sym ? p.zero[r0 + i] : std::nearbyint(-lo / scale1[i]);
        err[i] = T(0);
      }
      // Column-outer keeps the accesses contiguous; each row's sum still runs left to right.
      for (index j = 0; j < n; ++j) {
        const T* x = w.data + j * w.ld + r0;
        for (index i = 0; i < h; ++i) {
          const T q = std::min(std::max(std::nearbyint(x[i] / scale1[i]) + zero1[i], T(0)), maxq);
          const T r = detail::round_to_type(scale1[i] * (q - zero1[i]));
          err[i] += std::pow(std::abs(r - x[i]), norm);
        }
      }
      for (index i = 0; i < h; ++i)
        if (err[i] < best[i]) {
          best[i] = err[i];
          p.scale[r0 + i] = scale1[i];
          p.zero[r0 + i] = zero1[i];
        }
    }
  }

  int_grid_options opt_;
  T maxq_ = T(15);
};

template <Scalar T>
inline constexpr bool quantizer_property<int_grid<T>, learnable_clipping> = true;

}  // namespace yaqa
