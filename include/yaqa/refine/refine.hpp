#pragma once
//! \file
//! CQE+-style refinement of a layer before quantization: learn W' = W + U D V^T (LSI: D
//! diagonal; SDE: D on a pattern) and, optionally, the clip range of the grid (LWC), through the
//! straight-through estimator, so that Q(W') minimizes a layer objective (objective.hpp,
//! cross_layer.hpp). Written once over the Quantizer concept and the backend.
//!
//! Loop (docs/refine.md; the CQE+ paper body is not public, so the schedule is our
//! reconstruction of "OmniQuant's loop with extra learnable parameters", on a layer objective):
//!   state 0: D = 0, LWC logits = lwc_init; every step t = 0 .. steps:
//!     W' = W + U D V^T;  params = fit(W') per group (LWC: fit_clipped with sigmoid(logits));
//!     What = Q(W'; params);  L, G = objective(What)          (hard-quantized loss: what we keep)
//!     keep the best (L, What, codes, params, W');  stop after `steps` updates or `patience`
//!     steps without a new best
//!     G' = STE(G) (the quantizer's round-path mask when it is clippable, else identity)
//!     dD = P o (U^T G' V) + 2 lambda_abs D;  dlogits through the scale (LWC)
//!     Adam on D (lr_abs) and on the logits (lwc_lr)
//! The unrefined result (RTN with params fitted from W, exactly yaqa::rtn) is the first
//! candidate, so the result's loss is never above it, and 0 steps returns it bit for bit.
//!
//! Scale of the learning rates (our choice, docs/refine.md): lr is the per-weight RMS change of
//! W' per Adam step, relative to the quantizer's step size estimated as sqrt(12) RMS(W - RTN(W));
//! so lr_abs = lr * step * sqrt(m n / |P|) (Adam moves every learnable entry by about lr_abs,
//! and ||U dD V^T||_F = ||dD||_F). lambda weighs the relative drift ||W'-W||^2 / ||W||^2 in units
//! of the relative loss L / normalizer: lambda_abs = lambda * normalizer / ||W||_F^2.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <string_view>
#include <vector>

#include <yaqa/refine/adam.hpp>
#include <yaqa/refine/clipping.hpp>
#include <yaqa/refine/objective.hpp>
#include <yaqa/refine/pattern.hpp>
#include <yaqa/refine/spectral.hpp>
#include <yaqa/rounding/rtn.hpp>

namespace yaqa {

enum class refine_method { none, lsi, sde };

inline const char* refine_method_name(refine_method m) {
  switch (m) {
    case refine_method::none: return "none";
    case refine_method::lsi: return "lsi";
    case refine_method::sde: return "sde";
  }
  return "?";
}

//! "none" | "lsi" | "sde"; throws invalid_argument otherwise.
inline refine_method parse_refine_method(std::string_view s) {
  if (s == "none") return refine_method::none;
  if (s == "lsi") return refine_method::lsi;
  if (s == "sde") return refine_method::sde;
  throw invalid_argument(detail::concat("yaqa::parse_refine_method: '", s, "' is not a refinement; expected none, lsi or sde"));
}

//! How a refinement hands over to GPTQ / LDLQ / YAQA in the layer driver (docs/refine.md).
enum class refine_handover {
  grid,     //!< the learned parameters (grid) round the ORIGINAL W with error feedback (default)
  weights,  //!< the refined W' is rounded (on the learned grid) as if it were the weight
};

struct refine_options {
  refine_method method = refine_method::none;
  sde_pattern pattern{};      //!< SDE's pattern (LSI is diag)
  index rank = -1;            //!< truncated SVD rank (< 0: min(m, n))
  bool lwc = false;           //!< learn the clip range (quantizers with learnable_clipping)
  int steps = 100;            //!< Adam updates (>= 0)
  double lr = 1e-3;           //!< D: per-weight RMS move per step, relative to the grid step
  double lwc_lr = 1e-2;       //!< Adam LR of the clipping logits (OmniQuant's lwc_lr)
  double lwc_init = 4.0;      //!< initial logits (OmniQuant: 4, sigmoid(4) = 0.982)
  double lambda = 0;          //!< weight of the relative drift ||W'-W||^2/||W||^2 (>= 0)
  int patience = 0;           //!< stop after this many steps without a new best (0: never)
  int trace_every = 10;       //!< report the loss every this many steps (>= 1)
  refine_handover handover = refine_handover::grid;
  adam_options adam{};

  [[nodiscard]] bool enabled() const { return method != refine_method::none || lwc; }
  [[nodiscard]] sde_pattern effective_pattern() const {
    return method == refine_method::lsi ? sde_pattern{sde_shape::diag, 0} : pattern;
  }
  //! Throws invalid_argument naming the option unless the options work for an m x n layer.
  void validate(index m, index n, bool clippable) const {
    constexpr const char* what = "yaqa::refine";
    detail::require(steps >= 0, what, ": option 'steps' must be >= 0, got ", steps);
    detail::require(std::isfinite(lr) && lr > 0, what, ": option 'lr' must be finite and > 0, got ", lr);
    detail::require(std::isfinite(lwc_lr) && lwc_lr > 0, what, ": option 'lwc_lr' must be finite and > 0, got ",
                    lwc_lr);
    detail::require(std::isfinite(lwc_init), what, ": option 'lwc_init' must be finite, got ", lwc_init);
    detail::require(std::isfinite(lambda) && lambda >= 0, what, ": option 'lambda' must be finite and >= 0, got ",
                    lambda);
    detail::require(patience >= 0, what, ": option 'patience' must be >= 0, got ", patience);
    detail::require(trace_every >= 1, what, ": option 'trace_every' must be >= 1, got ", trace_every);
    detail::require(!lwc || clippable, what,
                    ": option 'lwc' needs a quantizer with the learnable_clipping property (e.g. int_grid)");
    const index full = std::min(m, n);
    detail::require(rank < 0 || (rank >= 1 && rank <= full), what, ": option 'rank' must be in [1, ", full,
                    "] (or < 0 for the full rank), got ", rank);
    if (method != refine_method::none) effective_pattern().validate(rank < 0 ? full : rank, what);
  }
};

struct refine_trace_point {
  int step = 0;         //!< Adam updates applied before this evaluation
  double loss = 0;      //!< hard-quantized objective at this step
  double best = 0;      //!< best so far (including the unrefined candidate)
  double d_norm = 0;    //!< ||D||_F = ||W' - W||_F
};

struct refine_report {
  refine_method method = refine_method::none;
  std::string pattern;            //!< "" without a spectral refinement
  bool lwc = false;
  index rank = 0;                 //!< SVD rank used (0: none)
  index parameters = 0;           //!< learnable scalars (D entries + 2 logits per row and group)
  double normalizer = 0;          //!< objective.normalizer(): divide losses by it for relative figures
  double loss_unrefined = 0;      //!< RTN with params fitted from W
  double loss_initial = 0;        //!< state 0 of the loop (differs from unrefined with LWC's init)
  double loss = 0;                //!< the result's loss (best, <= loss_unrefined)
  int best_step = -1;             //!< step of the result (-1: the unrefined candidate was best)
  int steps_run = 0;              //!< Adam updates applied
  bool early_stop = false;        //!< stopped by patience
  double d_norm = 0;              //!< ||W' - W||_F of the result
  double w_norm = 0;              //!< ||W||_F
  double lr_abs = 0;              //!< the absolute Adam LR of D
  clipping_summary clipping;      //!< learned factors of the result
  std::vector<refine_trace_point> trace;
  double svd_seconds = 0, seconds = 0;
};

template <Quantizer Q>
struct refine_result : rounded<Q> {
  matrix<scalar_of<Q>> refined;  //!< W' of the result (W when the unrefined candidate won)
  refine_report report;
};

namespace detail {

//! Per-group parameters of w: fit, or fit_clipped with factors c (group-major, k * m + i).
template <Quantizer Q>
std::vector<typename Q::params_type> refine_fit(const Q& q, matrix_view<const scalar_of<Q>> w, index g,
                                                const std::vector<scalar_of<Q>>* c_hi,
                                                const std::vector<scalar_of<Q>>* c_lo) {
  if (!c_hi) return fit_groups(q, w, g);
  std::vector<typename Q::params_type> p;
  if constexpr (ClippableQuantizer<Q>) {
    const index m = w.rows;
    for (index c = 0, k = 0; c < w.cols; c += g, ++k)
      p.push_back(q.fit_clipped(w.col_block(c, g), c_hi->data() + k * m, c_lo->data() + k * m));
  }
  return p;
}

}  // namespace detail

//! Refines w (m x n) for quantizer q against `objective` (whose W must be w). See the file
//! comment. Deterministic for any thread count.
template <Backend B, Quantizer Q, RefineObjective O>
  requires accessible_from<B, host_space> && std::same_as<typename O::scalar_type, scalar_of<Q>>
refine_result<Q> refine(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w, const O& objective,
                        const refine_options& opt) {
  using T = scalar_of<Q>;
  using clock = std::chrono::steady_clock;
  constexpr const char* what = "yaqa::refine";
  constexpr bool clippable = ClippableQuantizer<Q>;
  const index m = w.rows, n = w.cols;
  detail::require<shape_error>(objective.rows() == m && objective.cols() == n, what, ": the objective is for a ",
                               objective.rows(), "x", objective.cols(), " weight; argument 'W' is ", m, "x", n);
  const index g = detail::checked_group_cols(what, q, m, n);
  opt.validate(m, n, clippable);
  check_finite(what, "W", w);
  const B be = detail::pin_threads(b);
  const auto t0 = clock::now();

  refine_result<Q> res;
  refine_report& rep = res.report;
  rep.method = opt.method;
  rep.lwc = opt.lwc;
  rep.normalizer = objective.normalizer();
  rep.w_norm = as_eigen(w).template cast<double>().norm();

  // Candidate 0: the unrefined quantizer (exactly yaqa::rtn).
  static_cast<rounded<Q>&>(res) = rtn(be, q, w);
  res.refined = as_eigen(w);
  rep.loss_unrefined = rep.loss = objective.value_and_gradient(view(std::as_const(res.weights))).loss;
  rep.loss_initial = rep.loss_unrefined;
  if (!opt.enabled() || opt.steps == 0) {
    rep.seconds = std::chrono::duration<double>(clock::now() - t0).count();
    return res;
  }

  // Learnable state.
  const bool spectral = opt.method != refine_method::none;
  spectral_basis<T> basis;
  spectral_params<T> d;
  adam adam_d;
  if (spectral) {
    const auto ts = clock::now();
    basis = make_spectral_basis(w, opt.rank);
    rep.svd_seconds = std::chrono::duration<double>(clock::now() - ts).count();
    const sde_pattern pat = opt.effective_pattern();
    d = spectral_params<T>::zeros(pat, basis.rank());
    rep.pattern = to_string(pat);
    rep.rank = basis.rank();
    rep.parameters += pat.parameter_count(basis.rank());
    adam_d = adam(static_cast<std::size_t>(d.bands.size() + d.block.size()), opt.adam);
  }
  const std::size_t nclip = static_cast<std::size_t>(m * (n / g));
  clip_logits<T> logits;
  std::vector<T> c_hi, c_lo, d_hi, d_lo;
  adam adam_hi, adam_lo;
  if (opt.lwc) {
    logits = clip_logits<T>::init(nclip, opt.lwc_init);
    adam_hi = adam(nclip, opt.adam);
    adam_lo = adam(nclip, opt.adam);
    rep.parameters += static_cast<index>(2 * nclip);
  }
  // Learning-rate scale: the grid step from RTN's error (uniform-error variance step^2 / 12).
  const double rms_err = (as_eigen(w) - res.weights).template cast<double>().norm() / std::sqrt(double(m) * double(n));
  const double step_size = std::sqrt(12.0) * rms_err;
  const double lr_d = spectral ? opt.lr * step_size * std::sqrt(double(m) * double(n) / double(d.pattern.parameter_count(d.rank)))
                               : 0.0;
  rep.lr_abs = lr_d;
  const double lambda_abs = rep.w_norm > 0 ? opt.lambda * rep.normalizer / (rep.w_norm * rep.w_norm) : 0.0;

  matrix<T> wp = as_eigen(w);  // W'
  std::vector<T> ones_hi, ones_lo;
  if (clippable && !opt.lwc) {
    ones_hi.assign(nclip, T(1));
    ones_lo.assign(nclip, T(1));
  }
  double best = rep.loss_unrefined;
  int since_best = 0;
  for (int t = 0;; ++t) {
    // forward
    if (spectral && t > 0) wp = as_eigen(w) + spectral_delta(be, basis, d);
    if (opt.lwc) {
      clip_logits<T>::factors(logits.gamma, c_hi);
      clip_logits<T>::factors(logits.beta, c_lo);
    }
    const auto params = detail::refine_fit(q, view(std::as_const(wp)), g, opt.lwc ? &c_hi : nullptr,
                                           opt.lwc ? &c_lo : nullptr);
    rounded<Q> cur = rtn(be, q, view(std::as_const(wp)), params);
    objective_value<T> ov = objective.value_and_gradient(view(std::as_const(cur.weights)));
    if (t == 0) rep.loss_initial = ov.loss;
    const double dn = spectral ? d.norm() : 0.0;
    if (ov.loss < best) {
      best = ov.loss;
      since_best = 0;
      rep.best_step = t;
      rep.loss = ov.loss;
      rep.d_norm = dn;
      rep.clipping = logits.summary();
      res.refined = wp;
      static_cast<rounded<Q>&>(res) = std::move(cur);
    } else {
      ++since_best;
    }
    if (t % opt.trace_every == 0 || t == opt.steps) rep.trace.push_back({t, ov.loss, best, dn});
    if (t == opt.steps) break;
    if (opt.patience > 0 && since_best >= opt.patience) {
      rep.early_stop = true;
      if (rep.trace.back().step != t) rep.trace.push_back({t, ov.loss, best, dn});
      break;
    }
    // backward (STE)
    matrix<T>& gw = ov.gradient;
    if constexpr (clippable) {
      const std::vector<T>& hi = opt.lwc ? c_hi : ones_hi;
      const std::vector<T>& lo = opt.lwc ? c_lo : ones_lo;
      if (opt.lwc) {
        d_hi.assign(nclip, T(0));
        d_lo.assign(nclip, T(0));
      }
      T* dh = opt.lwc ? d_hi.data() : nullptr;
      T* dl = opt.lwc ? d_lo.data() : nullptr;
      std::vector<T> scratch_hi, scratch_lo;
      if (!opt.lwc) {
        scratch_hi.assign(static_cast<std::size_t>(m), T(0));
        scratch_lo.assign(static_cast<std::size_t>(m), T(0));
      }
      // The in-range mask and the factor gradients use the params this step's forward used.
      const auto& pcur = params;
      for (index c = 0, k = 0; c < n; c += g, ++k)
        q.clip_backward(view(std::as_const(wp)).col_block(c, g), pcur[static_cast<std::size_t>(k)],
                        hi.data() + k * m, lo.data() + k * m, view(gw).col_block(c, g),
                        dh ? dh + k * m : scratch_hi.data(), dl ? dl + k * m : scratch_lo.data());
    }
    if (spectral) {
      spectral_params<T> gd = spectral_gradient(be, basis, d, view(std::as_const(gw)));
      if (lambda_abs > 0) {
        gd.bands += T(2 * lambda_abs) * d.bands;
        gd.block += T(2 * lambda_abs) * d.block;
      }
      std::vector<T> flat_g, flat_d;
      gd.for_each_array([&](T* p, index s) { flat_g.insert(flat_g.end(), p, p + s); });
      d.for_each_array([&](T* p, index s) { flat_d.insert(flat_d.end(), p, p + s); });
      adam_d.step(flat_d.data(), flat_g.data(), lr_d);
      std::size_t off = 0;
      d.for_each_array([&](T* p, index s) {
        std::copy(flat_d.begin() + off, flat_d.begin() + off + s, p);
        off += static_cast<std::size_t>(s);
      });
    }
    if (opt.lwc) {
      // chain rule through the sigmoid: dc/dlogit = c (1 - c)
      for (std::size_t i = 0; i < nclip; ++i) {
        d_hi[i] *= c_hi[i] * (T(1) - c_hi[i]);
        d_lo[i] *= c_lo[i] * (T(1) - c_lo[i]);
      }
      adam_hi.step(logits.gamma.data(), d_hi.data(), opt.lwc_lr);
      adam_lo.step(logits.beta.data(), d_lo.data(), opt.lwc_lr);
    }
    rep.steps_run = t + 1;
  }
  rep.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return res;
}

template <Quantizer Q, RefineObjective O>
  requires std::same_as<typename O::scalar_type, scalar_of<Q>>
refine_result<Q> refine(const Q& q, matrix_view<const scalar_of<Q>> w, const O& objective, const refine_options& opt) {
  return refine(default_backend{}, q, w, objective, opt);
}

}  // namespace yaqa
