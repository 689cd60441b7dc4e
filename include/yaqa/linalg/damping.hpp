#pragma once
//! \file
//! The damping ladder shared by every factorization of a Hessian factor (block LDL for YAQA/LDLQ,
//! the inverse factor for GPTQ). A factor that is singular (too few calibration samples, dead
//! inputs) or slightly indefinite (fp32 accumulation) still has to be factored, so each routine
//! adds `damp * I` and retries with a larger damp until the factorization succeeds — never an
//! exception and never NaN: when the whole ladder fails the caller gets a `failure` and decides
//! (e.g. round that layer without error feedback, as GPTQModel does).
//!
//! The schedule, for a matrix with mean diagonal `mu` and largest |diagonal| `dmax`:
//! 1. Ladder, attempts k = 1 .. max_steps:
//!    - accumulate = true (YAQA):   damp_k = k * sigma * mu            (sigma, 2 sigma, 3 sigma, ...)
//!    - accumulate = false (GPTQModel's damp_auto_increment): damp_k = (sigma + (k-1) * 0.01) * mu,
//!      stopping early once the relative damp reaches 1 (GPTQModel's `damp < 1` bound).
//! 2. Floor, attempts f = 1 .. floor_steps: damp = damp_last + 1e-6 * dmax * 10^(f-1), where
//!    damp_last is the last ladder damp. The floor scales with the largest diagonal entry, so it
//!    escalates past the ladder when a few huge diagonal entries make `mu` a poor scale.
//! The first attempt already includes sigma (YAQA and GPTQ both damp before the first try).
//! Every damp is strictly larger than the previous one. GPTQModel re-runs its whole ladder on top
//! of each floor; positive definiteness is monotone in the damp, so ladder points below a damp
//! that already failed cannot succeed and we only try the floor on top of the last ladder damp:
//! at most max_steps + floor_steps factorizations.
#include <cmath>
#include <string>
#include <vector>

#include <yaqa/core/config.hpp>
#include <yaqa/core/error.hpp>

namespace yaqa {

//! Options of the damping ladder (see the file comment for the exact schedule).
struct damping_options {
  double sigma = 1e-2;     //!< first damp, relative to the mean diagonal (1 after normalization)
  int max_steps = 20;      //!< ladder attempts: H + k*sigma*mean(diag)*I, k = 1..max_steps
  int floor_steps = 6;     //!< then a growing floor: + 1e-6*max|diag| x10 per step
  bool accumulate = true;  //!< YAQA: sigma, 2 sigma, 3 sigma ...; false: sigma + 0.01 (k-1)
};

//! The relative increment of the non-accumulating ladder (GPTQModel's damp_auto_increment).
inline constexpr double gptqmodel_damp_increment = 0.01;

namespace detail {

//! Throws invalid_argument naming `what` and the option when `o` is out of range.
inline void check_damping_options(const char* what, const damping_options& o) {
  require(std::isfinite(o.sigma) && o.sigma > 0, what, ": option 'sigma' must be finite and > 0, got ",
          o.sigma);
  require(o.max_steps >= 1, what, ": option 'max_steps' must be >= 1, got ", o.max_steps);
  require(o.floor_steps >= 0, what, ": option 'floor_steps' must be >= 0, got ", o.floor_steps);
}

}  // namespace detail

//! The absolute damps tried, in order, for a matrix whose mean diagonal is `mean_diag` and whose
//! largest |diagonal| entry is `max_abs_diag` (both > 0 for a usable matrix). Strictly increasing.
//! Throws invalid_argument on bad options.
inline std::vector<double> damping_schedule(double mean_diag, double max_abs_diag,
                                            const damping_options& o = {}) {
  detail::check_damping_options("yaqa::damping_schedule", o);
  std::vector<double> s;
  for (int k = 1; k <= o.max_steps; ++k) {
    const double rel = o.accumulate ? k * o.sigma : o.sigma + (k - 1) * gptqmodel_damp_increment;
    if (!o.accumulate && k > 1 && rel >= 1.0) break;
    s.push_back(rel * mean_diag);
  }
  const double last = s.back();
  double floor = 1e-6 * max_abs_diag;
  for (int f = 1; f <= o.floor_steps; ++f, floor *= 10) {
    const double d = last + floor;
    if (d > s.back()) s.push_back(d);  // a zero floor adds nothing new: skip it
  }
  return s;
}

namespace detail {

//! What one factorization attempt reports: 0 success, j + 1 when the pivot of column j failed,
//! -1 when the factorization finished but produced a non-finite entry.
struct ladder_outcome {
  bool ok = false;
  double damp = 0;
  int attempts = 0;
  index failed_column = -1;  //!< of the last failed attempt (-1: non-finite output or none)
  bool last_non_finite = false;
};

//! Runs attempt(damp) -> index over the schedule until one returns 0.
template <class Attempt>
ladder_outcome run_ladder(const std::vector<double>& schedule, Attempt&& attempt) {
  ladder_outcome out;
  for (double d : schedule) {
    ++out.attempts;
    out.damp = d;
    const index info = attempt(d);
    if (info == 0) {
      out.ok = true;
      out.failed_column = -1;
      out.last_non_finite = false;
      return out;
    }
    out.failed_column = info > 0 ? info - 1 : -1;
    out.last_non_finite = info < 0;
  }
  return out;
}

}  // namespace detail
}  // namespace yaqa
