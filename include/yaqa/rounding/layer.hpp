#pragma once
//! \file
//! The layer-level driver: everything between "a weight and its Hessian factors" and "a quantized
//! weight in the original basis", with a report of what happened.
//!
//!   normalize factors (mean diagonal 1, dead inputs) -> optional two-sided random Hadamard
//!   transform -> damped block LDL (fp64) -> optional CQE+ refinement (LSI / SDE / LWC, the
//!   `refine` options: a learned grid, and W' for RTN) -> fit quantizer params on the rotated W
//!   ("static groups") unless refined -> round (RTN / GPTQ / LDLQ / YAQA) -> optional
//!   coordinate-descent refinement (cd_sweeps) -> un-rotate
//!
//! Never throws for a numerically hopeless Hessian: when every damp fails, the layer is rounded
//! without feedback and the report says so (feedback = false, fallback_reason).
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <yaqa/linalg/block_ldl.hpp>
#include <yaqa/linalg/damping.hpp>
#include <yaqa/linalg/hadamard.hpp>
#include <yaqa/linalg/preprocess.hpp>
#include <yaqa/refine/refine.hpp>
#include <yaqa/rounding/coordinate_descent.hpp>
#include <yaqa/rounding/gptq.hpp>
#include <yaqa/rounding/ldlq.hpp>
#include <yaqa/rounding/proxy.hpp>
#include <yaqa/rounding/rtn.hpp>
#include <yaqa/rounding/yaqa.hpp>

namespace yaqa {

enum class method { rtn, gptq, ldlq, yaqa };

inline const char* method_name(method a) {
  switch (a) {
    case method::rtn: return "rtn";
    case method::gptq: return "gptq";
    case method::ldlq: return "ldlq";
    case method::yaqa: return "yaqa";
  }
  return "?";
}

//! Options of quantize_layer, validated up front (validate()).
struct rounding_options {
  method algorithm = method::yaqa;
  index tile_rows = 16;      //!< td_x (YAQA): output rows per tile, must divide m
  index tile_cols = 16;      //!< td_y (YAQA) and the LDLQ block: input columns, must divide n
  yaqa_ordering ordering = yaqa_ordering::automatic;
  bool incoherence = true;   //!< two-sided random Hadamard transform (RHT)
  std::uint64_t seed = 0;    //!< RHT seed; the two sides use derived seeds (see transform_seeds)
  damping_options damping{}; //!< sigma relative to the normalized mean diagonal (1)
  bool zero_dead_inputs = true;  //!< GPTQ's rule: W[:, i] = 0 for inputs with diag(H_in) = 0
  index gptq_block = 128;
  bool act_order = false;
  bool static_groups = false;
  bool report_baseline = true;   //!< also report the RTN proxy with the same quantizer ("before")
  //! LSI / SDE / LWC before rounding, on the method's own objective in the rotated basis
  //! (docs/refine.md): RTN rounds the refined W' on the learned grid; GPTQ / LDLQ / YAQA round
  //! with the learned grid (refine.handover says whether the target is W or W').
  refine_options refine{};
  //! Coordinate-descent sweeps after rounding (0 = off): monotone on the objective relative_proxy
  //! reports (see quantize_layer, stage "cd", and coordinate_descent.hpp).
  index cd_sweeps = 0;

  //! Throws invalid_argument (naming the option and the dims) when the options cannot work for an
  //! m x n layer and quantizer Q.
  template <Quantizer Q>
  void validate(const Q& q, index m, index n) const {
    constexpr const char* what = "yaqa::quantize_layer";
    detail::require(tile_rows >= 1 && tile_cols >= 1, what, ": tile sizes must be positive, got ",
                    tile_rows, "x", tile_cols);
    detail::check_damping_options(what, damping);
    detail::checked_group_cols(what, q, m, n);
    detail::require(cd_sweeps >= 0, what, ": option 'cd_sweeps' must be >= 0, got ", cd_sweeps);
    if (algorithm == method::yaqa) {
      detail::require<shape_error>(m % tile_rows == 0 && n % tile_cols == 0, what, ": the tile ", tile_rows,
                                   "x", tile_cols, " must divide the layer ", m, "x", n,
                                   " (td_x divides m = out_features, td_y divides n = in_features)");
      detail::require(tile_rows % Q::unit_rows == 0 && tile_cols % Q::unit_cols == 0, what, ": the tile ",
                      tile_rows, "x", tile_cols, " must be a multiple of the quantizer's unit ", Q::unit_rows,
                      "x", Q::unit_cols);
    }
    if (algorithm == method::ldlq) {
      detail::require<shape_error>(n % tile_cols == 0, what, ": the LDLQ block tile_cols = ", tile_cols,
                                   " must divide n = ", n);
      detail::require(tile_cols % Q::unit_cols == 0, what, ": the LDLQ block ", tile_cols,
                      " must be a multiple of the quantizer's unit width ", Q::unit_cols);
    }
    refine.validate(m, n, ClippableQuantizer<Q>);
    if (algorithm == method::gptq) {
      detail::require(Q::unit_rows == 1 && Q::unit_cols == 1, what,
                      ": gptq needs a scalar quantizer (unit 1x1); this one's unit is ", Q::unit_rows, "x",
                      Q::unit_cols, " (use ldlq or yaqa)");
      detail::require(gptq_block >= 1, what, ": option 'gptq_block' must be >= 1, got ", gptq_block);
    }
  }
};

//! The seeds of the input-side and output-side transforms derived from one user seed.
inline std::pair<std::uint64_t, std::uint64_t> transform_seeds(std::uint64_t seed) {
  auto mix = [](std::uint64_t x) {  // splitmix64 finalizer
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
  };
  return {mix(2 * seed), mix(2 * seed + 1)};
}

struct stage_time {
  std::string stage;
  double seconds = 0;
};

struct layer_report {
  method algorithm = method::yaqa;
  index rows = 0, cols = 0;
  //! tr(dW H_in dW^T H_out) / tr(W H_in W^T H_out), in the normalized, rotated, damped basis
  //! (H_out = I when none was given).
  double relative_proxy = 0;
  //! tr(dW H_in dW^T) / tr(W H_in W^T) (GPTQ/LDLQ's objective).
  double relative_proxy_one_sided = 0;
  //! relative_proxy of RTN with the same quantizer and params (NaN unless report_baseline).
  double baseline_relative_proxy = std::numeric_limits<double>::quiet_NaN();
  double damp_in = 0, damp_out = 0;  //!< absolute damps added (normalized scale: relative)
  int attempts_in = 0, attempts_out = 0;
  bool feedback = true;              //!< false: factorization failed, rounded without feedback
  std::string fallback_reason;
  factor_report in, out;             //!< normalization, dead inputs, identity fallback
  //! The refinement stage (method none when rounding_options::refine is off); its losses are
  //! the method's own objective in the rotated, damped basis (divide by normalizer).
  refine_report refine;
  //! Coordinate descent (cd_sweeps > 0 and feedback): sweeps run, units changed over all sweeps,
  //! and relative_proxy's objective before and after it (NaN when it did not run);
  //! relative_proxy itself is measured after CD.
  index cd_sweeps_run = 0;
  index cd_units_changed = 0;
  double cd_relative_proxy_before = std::numeric_limits<double>::quiet_NaN();
  double cd_relative_proxy_after = std::numeric_limits<double>::quiet_NaN();
  std::vector<stage_time> times;
  double seconds = 0;
};

template <Quantizer Q>
struct layer_result : rounded<Q> {
  //! rounded<Q>::weights are in the ORIGINAL basis (ready to load back into the model); codes
  //! and params are those of the rotated weight W_r = U_out^T W U_in.
  bool rotated = false;
  std::uint64_t seed_in = 0, seed_out = 0;
  std::vector<std::int8_t> signs_in, signs_out;
  std::string transform_in, transform_out;
  layer_report report;
};

//! Quantizes one linear layer. w: m x n (out x in). h_in: n x n. h_out: m x m, or an empty view
//! for H_out = I (GPTQ/LDLQ ignore it for rounding; it is used for the report when given).
template <Backend B, Quantizer Q>
  requires accessible_from<B, host_space>
layer_result<Q> quantize_layer(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w,
                               matrix_view<const scalar_of<Q>> h_in, matrix_view<const scalar_of<Q>> h_out,
                               const rounding_options& opt = {}) {
  using T = scalar_of<Q>;
  using clock = std::chrono::steady_clock;
  constexpr const char* what = "yaqa::quantize_layer";
  const index m = w.rows, n = w.cols;
  check_shape(what, "H_in", h_in, n, n);
  if (!h_out.empty()) check_shape(what, "H_out", h_out, m, m);
  opt.validate(q, m, n);
  check_finite(what, "W", w);
  const B be = detail::pin_threads(b);

  layer_result<Q> res;
  auto& rep = res.report;
  rep.algorithm = opt.algorithm;
  rep.rows = m;
  rep.cols = n;
  const auto t_start = clock::now();
  auto t = t_start;
  auto lap = [&](const char* stage) {
    const auto now = clock::now();
    rep.times.push_back({stage, std::chrono::duration<double>(now - t).count()});
    t = now;
  };

  // 1. normalize (fp64). No H_out means I: nothing is stored, rotated or factored for it (its
  // normalization is itself, its damped LDL is L = I, D = (1 + damp) I).
  const cpu_backend host = detail::host_backend(be);
  auto to_double = [&](matrix_view<const T> v) {  // column strips in parallel (first touch too)
    matrix<double> d(v.rows, v.cols);
    detail::parallel_chunks(host, v.cols, detail::chunk_width(v.cols), [&](index c0, index cw) {
      d.middleCols(c0, cw) = as_eigen(v).middleCols(c0, cw).template cast<double>();
    });
    return d;
  };
  matrix<double> hin = to_double(h_in);
  matrix<double> hout;
  rep.in = normalize_factor(host, view(hin), "H_in");
  if (!h_out.empty()) {
    hout = to_double(h_out);
    rep.out = normalize_factor(host, view(hout), "H_out");
  } else {
    rep.out.mean_diagonal = 1;
  }
  matrix<double> wd = to_double(w);
  if (opt.zero_dead_inputs) zero_columns(view(wd), rep.in.dead);
  lap("normalize");

  // 2. incoherence: W_r = U_out^T W U_in, H_in,r = U_in^T H_in U_in, H_out,r = U_out^T H_out U_out
  std::optional<random_hadamard> u_in, u_out;
  if (opt.incoherence) {
    std::tie(res.seed_in, res.seed_out) = transform_seeds(opt.seed);
    u_in.emplace(n, res.seed_in);
    u_out.emplace(m, res.seed_out);
    u_in->apply(side::right, trans::none, view(wd));
    u_out->apply(side::left, trans::transpose, view(wd));
    u_in->apply(side::right, trans::none, view(hin));
    u_in->apply(side::left, trans::transpose, view(hin));
    if (!h_out.empty()) {
      u_out->apply(side::right, trans::none, view(hout));
      u_out->apply(side::left, trans::transpose, view(hout));
    }
    res.rotated = true;
    res.signs_in = u_in->signs();
    res.signs_out = u_out->signs();
    res.transform_in = u_in->description();
    res.transform_out = u_out->description();
  }
  const matrix<T> wr = wd.template cast<T>();
  wd = matrix<double>();  // memory: only the rounding's copy stays
  lap("rotate");

  // 3. factor (fp64), with the damping ladder; a failure means rounding without feedback
  const bool two_sided = opt.algorithm == method::yaqa;
  const bool needs_ldl = opt.algorithm == method::ldlq || two_sided;
  matrix<T> l_in, l_out;  // l_in: whenever H_in factored (the report uses it even without feedback)
  block_diagonal<double> d_in, d_out;  // kept for the report (its proxies from the residual)
  if (needs_ldl) {
    // Memory at large n (28672: 6.6 GB per fp64 copy): unless refine or CD read the factors
    // again, they are factored in place (hin / hout become L, or are restored on failure).
    const bool in_place = !opt.refine.enabled() && opt.cd_sweeps == 0;
    auto factor = [&](matrix<double>& h, index block) {
      return in_place ? damped_block_ldl_in_place(be, h, block, opt.damping)
                      : damped_block_ldl(be, view(std::as_const(h)), block, opt.damping);
    };
    auto f_in = factor(hin, opt.tile_cols);
    if (f_in) {
      rep.damp_in = f_in->damp;
      rep.attempts_in = f_in->attempts;
      d_in = std::move(f_in->D);
      l_in = f_in->L.template cast<T>();
      f_in->L = matrix<double>();
    } else {
      rep.feedback = false;
      rep.fallback_reason = "H_in: " + f_in.error().reason;
      rep.attempts_in = f_in.error().attempts;
      rep.damp_in = f_in.error().last_damp;
    }
    if (two_sided && rep.feedback && h_out.empty()) {
      rep.damp_out = damping_schedule(1.0, 1.0, opt.damping).front();  // H_out = I: the first damp works
      rep.attempts_out = 1;  // l_out stays empty: yaqa_round's H_out = I
    } else if (two_sided && rep.feedback) {
      auto f_out = factor(hout, opt.tile_rows);
      if (f_out) {
        rep.damp_out = f_out->damp;
        rep.attempts_out = f_out->attempts;
        l_out = f_out->L.template cast<T>();
        d_out = std::move(f_out->D);
      } else {
        rep.feedback = false;
        rep.fallback_reason = "H_out: " + f_out.error().reason;
        rep.attempts_out = f_out.error().attempts;
        rep.damp_out = f_out.error().last_damp;
      }
    }
  }
  lap("factor");

  // 3b. refine: learn W' and/or the grid on the objective the report's relative_proxy measures
  // (the same one coordinate descent descends): tr(dW (H_in + d_in I) dW^T H_out) with H_out +
  // d_out I for YAQA, H_out as given for RTN/GPTQ/LDLQ, none (= I) when no H_out was given
  // (GPTQ factors later, inside its loop: its first damp)
  rounded<Q>& out = res;
  std::optional<std::vector<typename Q::params_type>> grid;
  matrix<T> target_refined;
  bool rounded_by_refine = false;
  if (opt.refine.enabled()) {
    const double di = opt.algorithm == method::gptq ? opt.damping.sigma : rep.damp_in;
    matrix<T> hin_d = hin.template cast<T>();
    hin_d.diagonal().array() += T(di);
    matrix<T> hout_d;
    if (!h_out.empty()) {
      hout_d = hout.template cast<T>();
      hout_d.diagonal().array() += T(two_sided ? rep.damp_out : 0.0);
    }
    const kronecker_objective<T, B> objective(be, view(wr), view(std::as_const(hin_d)), view(std::as_const(hout_d)));
    refine_result<Q> rr = refine(be, q, view(wr), objective, opt.refine);
    rep.refine = std::move(rr.report);
    if (opt.algorithm == method::rtn || !rep.feedback) {
      out = std::move(static_cast<rounded<Q>&>(rr));
      rounded_by_refine = true;
    } else {
      grid = std::move(rr.params);
      if (opt.refine.handover == refine_handover::weights) target_refined = std::move(rr.refined);
    }
  }
  const auto target = target_refined.size() > 0 ? view(std::as_const(target_refined)) : view(wr);
  if (opt.refine.enabled()) lap("refine");

  // 4. round
  matrix<T> residual;  // LDLQ / YAQA: R = L_out^T (target - What) L_in, for the report
  double gptq_loss = -1;  // GPTQ with feedback: its loss sum, = tr(dW H dW^T) / 2
  auto params_for = [&](matrix_view<const T> w_fit) {
    return grid ? std::move(*grid) : detail::fit_groups(q, w_fit, detail::checked_group_cols(what, q, m, n));
  };
  if (rounded_by_refine) {
  } else if (!rep.feedback || opt.algorithm == method::rtn) {
    out = rtn(be, q, view(wr));
  } else if (opt.algorithm == method::ldlq) {
    out = ldlq(be, q, target, view(std::as_const(l_in)), opt.tile_cols, params_for(target), &residual);
  } else if (opt.algorithm == method::yaqa) {
    const yaqa_options yo{opt.tile_rows, opt.tile_cols, opt.ordering};
    out = yaqa_round(be, q, target, view(std::as_const(l_in)), view(std::as_const(l_out)), yo, params_for(target),
                     &residual);
  } else {
    if constexpr (Q::unit_rows == 1 && Q::unit_cols == 1) {
      gptq_options go;
      go.block = opt.gptq_block;
      go.act_order = opt.act_order;
      go.static_groups = opt.static_groups;
      go.damping = opt.damping;
      const matrix<T> hin_t = hin.template cast<T>();
      auto g = grid ? gptq(be, q, target, view(hin_t), go, *grid) : gptq(be, q, target, view(hin_t), go);
      rep.damp_in = g.damp;
      rep.attempts_in = g.attempts;
      rep.feedback = g.feedback;
      rep.fallback_reason = g.failure;
      if (g.feedback) gptq_loss = g.loss;
      out = std::move(static_cast<rounded<Q>&>(g));
    }
  }
  lap("round");

  // 4b. coordinate descent on the objective relative_proxy reports: the damped factors of the
  // report below, i.e. tr(dW (H_in + d_in I) dW^T H_out) with H_out + d_out I for YAQA, H_out as
  // given (undamped) for RTN/GPTQ/LDLQ, and I (passed as "none": the same minimiser) when no
  // H_out was given. Skipped without feedback (the factors were hopeless).
  double cd_before = 0, cd_after = 0, cd_scale = 1;
  const bool cd_ran = opt.cd_sweeps > 0 && rep.feedback;
  if (cd_ran) {
    const double dout = two_sided ? rep.damp_out : 0.0;
    matrix<T> cd_hin = hin.template cast<T>(), cd_hout;
    cd_hin.diagonal().array() += T(rep.damp_in);
    if (!h_out.empty()) {
      cd_hout = hout.template cast<T>();
      cd_hout.diagonal().array() += T(dout);
    } else {
      cd_scale = static_cast<double>(T(1) + T(dout));  // the report's H_out = (1 + d_out) I
    }
    const cd_report cd = coordinate_descent(be, q, view(wr), view(std::as_const(cd_hin)),
                                            view(std::as_const(cd_hout)), out, cd_options{.sweeps = opt.cd_sweeps});
    rep.cd_sweeps_run = cd.sweeps_run();
    rep.cd_units_changed = cd.units_changed();
    cd_before = cd.proxy_before();
    cd_after = cd.proxy_after();
    lap("cd");
  }

  // 5. report, in the rotated basis with the damped factors H_in + d_in I and H_out + d_out I
  // (d_out = 0 unless YAQA; H_out = I when none was given). Computed from what the rounding
  // already has where it can (docs/rounding.md, "The report's cost"): with the LDL factors,
  // tr(X H X^T) = tr((X L) D (X L)^T) at half a GEMM per side, and the error's traces from the
  // sweep's residual R = L_out^T dW L_in at O(m n b); GPTQ's error from its loss sum; otherwise
  // the W^T W route (half a GEMM) or, for a given H_out without its factor, two GEMMs.
  {
    const double di = rep.damp_in, dout = two_sided ? rep.damp_out : 0.0;
    const matrix<T> dw = wr - out.weights;
    const bool have_lin = l_in.size() > 0;                     // L_in, D_in of H_in + d_in I
    const bool have_lout = l_out.size() > 0;                   // L_out, D_out of H_out + d_out I
    const bool out_identity = h_out.empty();                   // H_out + d_out I = (1 + d_out) I
    // the sweep's residual is the error's when the rounding target was W and nothing moved What
    const bool residual_valid = residual.size() > 0 && target_refined.size() == 0 && !cd_ran;
    matrix<T> hin_f, hout_f;  // float damped factors, only for the routes that need them
    auto damped_hout = [&]() -> const matrix<T>& {
      if (hout_f.size() == 0) {
        hout_f = hout.template cast<T>();
        hout_f.diagonal().array() += T(dout);
      }
      return hout_f;
    };
    auto exact_two_sided = [&](matrix_view<const T> d) {  // RTN / GPTQ / no factor, H_out given
      if (hin_f.size() == 0) {
        hin_f = hin.template cast<T>();
        hin_f.diagonal().array() += T(di);
      }
      return kronecker_proxy(be, d, view(std::as_const(hin_f)), view(damped_hout()));
    };
    // both traces of one difference d
    auto proxies = [&](matrix_view<const T> d) -> proxy_pair {
      proxy_pair p;
      if (have_lin) {
        const matrix<T> x = times_lower(be, d, view(std::as_const(l_in)));
        p.one_sided = ldl_proxy(host, view(x), d_in);
        if (have_lout) {
          const matrix<T> y = lower_transpose_times(be, view(std::as_const(l_out)), view(x));
          p.two_sided = ldl_proxy(host, view(y), d_in, &d_out);
        } else if (out_identity) {
          p.two_sided = (1.0 + dout) * p.one_sided;
        } else {  // H_out given but not factored (LDLQ, or its factorization failed)
          p.two_sided = ldl_proxy_dense_out(be, view(x), d_in, view(damped_hout()));
        }
        return p;
      } else {
        p.one_sided = gram_proxy(be, d, hin, di);
      }
      p.two_sided = out_identity ? (1.0 + dout) * p.one_sided : exact_two_sided(d);
      return p;
    };
    const proxy_pair base = proxies(view(wr));
    proxy_pair err;
    if (residual_valid && two_sided) {  // YAQA: R = L_out^T dW L_in; the one-sided trace needs dW L_in
      err.two_sided = have_lout ? ldl_proxy(host, view(std::as_const(residual)), d_in, &d_out)
                                : (1.0 + dout) * ldl_proxy(host, view(std::as_const(residual)), d_in);
      err.one_sided = ldl_proxy(host, view(times_lower(be, view(dw), view(std::as_const(l_in)))), d_in);
    } else if (residual_valid) {  // LDLQ: R = dW L_in
      err.one_sided = ldl_proxy(host, view(std::as_const(residual)), d_in);
      err.two_sided = out_identity ? err.one_sided : proxies(view(dw)).two_sided;
    } else if (gptq_loss >= 0 && target_refined.size() == 0 && !cd_ran) {
      err.one_sided = 2 * gptq_loss;  // GPTQ's loss sum is tr(dW (H + d I) dW^T) / 2
      err.two_sided = out_identity ? err.one_sided : exact_two_sided(view(dw));
    } else {
      err = proxies(view(dw));
    }
    rep.relative_proxy = err.two_sided / base.two_sided;
    rep.relative_proxy_one_sided = err.one_sided / base.one_sided;
    if (rep.cd_sweeps_run > 0) {
      rep.cd_relative_proxy_before = cd_scale * cd_before / base.two_sided;
      rep.cd_relative_proxy_after = cd_scale * cd_after / base.two_sided;
    }
    if (opt.report_baseline) {
      if (opt.algorithm == method::rtn && !rounded_by_refine) {
        rep.baseline_relative_proxy = rep.relative_proxy;  // the same rounding
      } else {
        const matrix<T> dr = wr - rtn(be, q, view(wr)).weights;
        rep.baseline_relative_proxy = proxies(view(dr)).two_sided / base.two_sided;
      }
    }
  }
  lap("report");

  // 6. un-rotate: What = U_out What_r U_in^T
  if (res.rotated) {
    matrix<double> wh = out.weights.template cast<double>();
    u_out->apply(side::left, trans::none, view(wh));
    u_in->apply(side::right, trans::transpose, view(wh));
    out.weights = wh.template cast<T>();
  }
  lap("unrotate");
  rep.seconds = std::chrono::duration<double>(clock::now() - t_start).count();
  return res;
}

template <Quantizer Q>
layer_result<Q> quantize_layer(const Q& q, matrix_view<const scalar_of<Q>> w, matrix_view<const scalar_of<Q>> h_in,
                               matrix_view<const scalar_of<Q>> h_out, const rounding_options& opt = {}) {
  return quantize_layer(default_backend{}, q, w, h_in, h_out, opt);
}

}  // namespace yaqa
