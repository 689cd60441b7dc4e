#pragma once
//! \file
//! Learnable weight clipping (LWC, OmniQuant): per row and parameter group, the quantizer's range
//! is shrunk by c_hi = sigmoid(gamma) and c_lo = sigmoid(beta), learned through the straight-
//! through estimator. A quantizer opts in with the `learnable_clipping` property and two members
//! (the ClippableQuantizer concept): fit_clipped (the forward: params from the clipped range) and
//! clip_backward (the STE backward: mask of the round path and the gradient of the factors through
//! the scale). int_grid implements them; see docs/refine.md for writing them for another grid.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include <yaqa/quantizers/concepts.hpp>

namespace yaqa {

//! - `q.fit_clipped(w, c_hi, c_lo)` -> params: fit() with the row range shrunk by factors in (0, 1]
//!   (one per row of w).
//! - `q.clip_backward(w, p, c_hi, c_lo, g, d_hi, d_lo)`: g holds dL/dWhat on w's region; replace it
//!   with dL/dw (the straight-through gradient), and add dL/dc_hi, dL/dc_lo per row.
template <class Q>
concept ClippableQuantizer =
    quantizer_with<Q, learnable_clipping> &&
    requires(const Q& q, matrix_view<const typename Q::scalar_type> w, const typename Q::params_type& p,
             const typename Q::scalar_type* c, matrix_view<typename Q::scalar_type> g,
             typename Q::scalar_type* d) {
      { q.fit_clipped(w, c, c) } -> std::same_as<typename Q::params_type>;
      { q.clip_backward(w, p, c, c, g, d, d) } -> std::same_as<void>;
    };

namespace detail {
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
}  // namespace detail

//! Summary of learned clip factors (over rows and groups).
struct clipping_summary {
  double hi_mean = 1, hi_min = 1, lo_mean = 1, lo_min = 1;
  double clipped_fraction = 0;  //!< fraction of (row, group) pairs with a factor below 0.99
};

//! The logits gamma (upper) and beta (lower), one per (row, group), group-major: entry k * m + i.
template <Scalar T>
struct clip_logits {
  std::vector<T> gamma, beta;

  static clip_logits init(std::size_t count, double value) {
    return {std::vector<T>(count, static_cast<T>(value)), std::vector<T>(count, static_cast<T>(value))};
  }
  //! c = sigmoid(logit), clamped into (0, 1] in T (sigmoid can round to 0 for very negative logits).
  static void factors(const std::vector<T>& logit, std::vector<T>& c) {
    c.resize(logit.size());
    for (std::size_t i = 0; i < logit.size(); ++i) {
      const T v = static_cast<T>(detail::sigmoid(static_cast<double>(logit[i])));
      c[i] = std::min(T(1), std::max(v, std::numeric_limits<T>::min()));
    }
  }
  [[nodiscard]] clipping_summary summary() const {
    clipping_summary s;
    if (gamma.empty()) return s;
    double sh = 0, sl = 0;
    std::size_t clipped = 0;
    s.hi_min = s.lo_min = 1;
    for (std::size_t i = 0; i < gamma.size(); ++i) {
      const double h = detail::sigmoid(static_cast<double>(gamma[i])), l = detail::sigmoid(static_cast<double>(beta[i]));
      sh += h;
      sl += l;
      s.hi_min = std::min(s.hi_min, h);
      s.lo_min = std::min(s.lo_min, l);
      clipped += (h < 0.99 || l < 0.99) ? 1 : 0;
    }
    s.hi_mean = sh / static_cast<double>(gamma.size());
    s.lo_mean = sl / static_cast<double>(gamma.size());
    s.clipped_fraction = static_cast<double>(clipped) / static_cast<double>(gamma.size());
    return s;
  }
};

}  // namespace yaqa
