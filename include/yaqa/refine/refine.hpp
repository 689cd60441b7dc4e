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

namespace detail {

//! The refinement's learnable state and one step of the loop (evaluate, then update): what
//! refine() iterates, and what the benchmark times.
template <class B, Quantizer Q, class O>
class refine_stepper {
 public:
  using T = scalar_of<Q>;
  using params_type = typename Q::params_type;
  static constexpr bool clippable = ClippableQuantizer<Q>;

  //! The hard-quantized state of one step.
  struct evaluation {
    objective_value<T> value;          //!< loss and dL/dWhat
    std::vector<params_type> params;   //!< the grid fitted from W'
    rounded<Q> result;                 //!< Q(W') with those params
  };

  //! Sets up D = 0 (with the SVD of w when spectral) and the clip logits; fills the report's
  //! pattern, rank, parameter count, svd_seconds and lr_abs. step_size: the grid step estimate.
  //! `basis`: a precomputed frame of w (empty: computed here when the method is spectral).
  refine_stepper(const B& b, const Q& q, matrix_view<const T> w, const O& objective, const refine_options& opt,
                 double step_size, double lambda_abs, refine_report& rep, spectral_basis<T> basis = {})
      : b_(b), q_(q), w_(w), obj_(objective), opt_(opt), g_(q.group_cols(w.cols)), lambda_abs_(lambda_abs),
        wp_(as_eigen(w)), basis_(std::move(basis)) {
    const index m = w.rows, n = w.cols;
    if (opt.method != refine_method::none) {
      const auto ts = std::chrono::steady_clock::now();
      if (basis_.rank() == 0) basis_ = make_spectral_basis(w, opt.rank);
      rep.svd_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
      const sde_pattern pat = opt.effective_pattern();
      d_ = spectral_params<T>::zeros(pat, basis_.rank());
      rep.pattern = to_string(pat);
      rep.rank = basis_.rank();
      rep.parameters += pat.parameter_count(basis_.rank());
      d_.for_each_array([&](T*, index s) { adam_d_.emplace_back(static_cast<std::size_t>(s), opt.adam); });
      lr_d_ = opt.lr * step_size * std::sqrt(double(m) * double(n) / double(pat.parameter_count(basis_.rank())));
    }
    rep.lr_abs = lr_d_;
    nclip_ = static_cast<std::size_t>(m * (n / g_));
    if (opt.lwc) {
      logits_ = clip_logits<T>::init(nclip_, opt.lwc_init);
      adam_hi_ = adam(nclip_, opt.adam);
      adam_lo_ = adam(nclip_, opt.adam);
      rep.parameters += static_cast<index>(2 * nclip_);
    } else if constexpr (clippable) {
      c_hi_.assign(nclip_, T(1));  // the straight-through mask of the unclipped grid
      c_lo_.assign(nclip_, T(1));
    }
  }

  [[nodiscard]] bool spectral() const { return opt_.method != refine_method::none; }
  [[nodiscard]] const matrix<T>& refined() const { return wp_; }  //!< W' of the last evaluate()
  [[nodiscard]] double d_norm() const { return spectral() ? d_.norm() : 0.0; }
  [[nodiscard]] clipping_summary clipping() const { return logits_.summary(); }

  //! Forward at the current state: W' = W + U D V^T, the grid (LWC: clipped), What, L and dL/dWhat.
  evaluation evaluate() {
    if (spectral() && steps_ > 0) wp_ = as_eigen(w_) + spectral_delta(b_, basis_, d_);
    if (opt_.lwc) {
      clip_logits<T>::factors(logits_.gamma, c_hi_);
      clip_logits<T>::factors(logits_.beta, c_lo_);
    }
    evaluation e;
    e.params = refine_fit(q_, view(std::as_const(wp_)), g_, opt_.lwc ? &c_hi_ : nullptr, opt_.lwc ? &c_lo_ : nullptr);
    e.result = rtn(b_, q_, view(std::as_const(wp_)), e.params);
    e.value = obj_.value_and_gradient(view(std::as_const(e.result.weights)));
    return e;
  }

  //! Backward through the straight-through estimator and one Adam step (uses e's gradient).
  void update(evaluation& e) {
    const index m = w_.rows, n = w_.cols;
    matrix<T>& gw = e.value.gradient;
    if constexpr (clippable) {
      std::vector<T> dh(nclip_, T(0)), dl(nclip_, T(0));
      for (index c = 0, k = 0; c < n; c += g_, ++k)
        q_.clip_backward(view(std::as_const(wp_)).col_block(c, g_), e.params[static_cast<std::size_t>(k)],
                         c_hi_.data() + k * m, c_lo_.data() + k * m, view(gw).col_block(c, g_), dh.data() + k * m,
                         dl.data() + k * m);
      if (opt_.lwc) {
        // chain rule through the sigmoid: dc/dlogit = c (1 - c)
        for (std::size_t i = 0; i < nclip_; ++i) {
          dh[i] *= c_hi_[i] * (T(1) - c_hi_[i]);
          dl[i] *= c_lo_[i] * (T(1) - c_lo_[i]);
        }
        adam_hi_.step(logits_.gamma.data(), dh.data(), opt_.lwc_lr);
        adam_lo_.step(logits_.beta.data(), dl.data(), opt_.lwc_lr);
      }
    }
    if (spectral()) {
      spectral_params<T> gd = spectral_gradient(b_, basis_, d_, view(std::as_const(gw)));
      if (lambda_abs_ > 0) {
        gd.bands += T(2 * lambda_abs_) * d_.bands;
        gd.block += T(2 * lambda_abs_) * d_.block;
      }
      std::vector<T*> grads;
      gd.for_each_array([&](T* p, index) { grads.push_back(p); });
      std::size_t i = 0;
      d_.for_each_array([&](T* p, index) {
        adam_d_[i].step(p, grads[i], lr_d_);
        ++i;
      });
    }
    ++steps_;
  }

 private:
  B b_;
  const Q& q_;
  matrix_view<const T> w_;
  const O& obj_;
  const refine_options& opt_;
  index g_;
  double lambda_abs_, lr_d_ = 0;
  matrix<T> wp_;  // W'
  spectral_basis<T> basis_;
  spectral_params<T> d_;
  std::vector<adam> adam_d_;
  std::size_t nclip_ = 0;
  clip_logits<T> logits_;
  std::vector<T> c_hi_, c_lo_;  // clip factors (all ones without LWC)
  adam adam_hi_, adam_lo_;
  long steps_ = 0;
};

}  // namespace detail

//! Refines w (m x n) for quantizer q against `objective` (whose W must be w). See the file
//! comment. Deterministic for any thread count.
template <Backend B, Quantizer Q, RefineObjective O>
  requires accessible_from<B, host_space> && std::same_as<typename O::scalar_type, scalar_of<Q>>
refine_result<Q> refine(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w, const O& objective,
                        const refine_options& opt) {
  using clock = std::chrono::steady_clock;
  constexpr const char* what = "yaqa::refine";
  const index m = w.rows, n = w.cols;
  detail::require<shape_error>(objective.rows() == m && objective.cols() == n, what, ": the objective is for a ",
                               objective.rows(), "x", objective.cols(), " weight; argument 'W' is ", m, "x", n);
  (void)detail::checked_group_cols(what, q, m, n);
  opt.validate(m, n, ClippableQuantizer<Q>);
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

  // Learning-rate scale: the grid step from RTN's error (uniform-error variance step^2 / 12).
  const double rms_err = (as_eigen(w) - res.weights).template cast<double>().norm() / std::sqrt(double(m) * double(n));
  const double lambda_abs = rep.w_norm > 0 ? opt.lambda * rep.normalizer / (rep.w_norm * rep.w_norm) : 0.0;
  detail::refine_stepper<B, Q, O> st(be, q, w, objective, opt, std::sqrt(12.0) * rms_err, lambda_abs, rep);

  double best = rep.loss_unrefined;
  int since_best = 0;
  for (int t = 0;; ++t) {
    auto e = st.evaluate();
    const double loss = e.value.loss, dn = st.d_norm();
    if (t == 0) rep.loss_initial = loss;
    if (loss < best) {
      best = loss;
      since_best = 0;
      rep.best_step = t;
      rep.loss = loss;
      rep.d_norm = dn;
      rep.clipping = st.clipping();
      res.refined = st.refined();
      static_cast<rounded<Q>&>(res) = e.result;
    } else {
      ++since_best;
    }
    if (t % opt.trace_every == 0 || t == opt.steps) rep.trace.push_back({t, loss, best, dn});
    if (t == opt.steps) break;
    if (opt.patience > 0 && since_best >= opt.patience) {
      rep.early_stop = true;
      if (rep.trace.back().step != t) rep.trace.push_back({t, loss, best, dn});
      break;
    }
    st.update(e);
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
