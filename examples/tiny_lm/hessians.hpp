#pragma once
//! \file
//! Hessian collection for every linear layer with the library's accumulators, fed by the model's
//! own backward pass with sampled labels (fisher.hpp):
//! - yaqa::second_moment: H = E[x x^T] (GPTQ / LDLQ's input-side Hessian);
//! - yaqa::sketch_a: power iteration over `sketch_a_passes` passes of the same calibration set;
//! - yaqa::sketch_b: one sample per calibration sequence, G_s = sum_t g_t x_t^T.
//! All of them are collected from the original model, once (yaqa-algorithm.md pitfall 16).
#include <optional>
#include <vector>

#include <yaqa/hessian/accumulator.hpp>
#include <yaqa/hessian/kronecker_sketch.hpp>

#include "fisher.hpp"
#include "progress.hpp"

namespace tiny_lm {

struct hessian_config {
  calibration_config calibration;
  int sketch_a_passes = 3;  //!< >= 2: pass 0 gives H_in = E[xx^T], odd passes H_out, even H_in
  bool sketch_a = true;     //!< false: only E[xx^T] and Sketch B (the ordering check needs no A)
};

//! The Hessian factors of one linear layer (m x n = out x in), in float for quantize_layer.
struct layer_hessians {
  mat xtx;           //!< E[x x^T], n x n
  mat a_in, a_out;   //!< Sketch A factors (empty when not collected)
  mat b_in, b_out;   //!< Sketch B factors
};

//! Runs the calibration passes and returns one layer_hessians per linear layer (linear_at order).
//! Pass 0 feeds E[xx^T], Sketch A's pass 0 and Sketch B; passes 1.. feed Sketch A only.
inline std::vector<layer_hessians> collect_hessians(const yaqa::cpu_backend& be, const params& p,
                                                    const corpus& c, const model_config& mc,
                                                    const hessian_config& hc,
                                                    clock_type::time_point t0, bool quiet = false) {
  const index layers = mc.linear_count();
  const calibration_set cs = make_calibration_set(c, hc.calibration);
  std::vector<yaqa::second_moment<double>> xtx;
  std::vector<yaqa::sketch_a<double>> sa;
  std::vector<yaqa::sketch_b<double>> sb;
  for (index l = 0; l < layers; ++l) {
    const linear& lin = linear_at(p, l);
    const index n = lin.w.cols(), m = lin.w.rows();
    xtx.emplace_back(n, yaqa::accumulate_options{}, be);
    sb.emplace_back(n, m, yaqa::accumulate_options{}, be);
    if (hc.sketch_a) sa.emplace_back(n, m, hc.sketch_a_passes, yaqa::accumulate_options{}, be);
  }
  const int passes = hc.sketch_a ? hc.sketch_a_passes : 1;
  const index sequences = hc.calibration.sequences;
  progress pr("hessians", passes * sequences, t0, quiet);
  for (int pass = 0; pass < passes; ++pass) {
    if (hc.sketch_a)
      for (auto& s : sa) s.begin_pass();
    sampled_fisher_pass(
        be, p, c, mc, hc.calibration, cs,
        [&](index l, const mat& x, const mat& g, index seqs, index len) {
          const auto xv = yaqa::view(x);
          const auto gv = yaqa::view(g);
          const auto li = std::size_t(l);
          if (hc.sketch_a) sa[li].add(xv, gv);
          if (pass > 0) return;
          xtx[li].add(xv);
          for (index s = 0; s < seqs; ++s)  // one Sketch B sample per sequence (rows s*len ...)
            sb[li].add_sequence(xv.row_block(s * len, len), gv.row_block(s * len, len));
        },
        [&](index done) {
          pr.update(pass * sequences + done,
                    yaqa::detail::concat("pass ", pass + 1, "/", passes,
                                         pass == 0 ? " (E[xx^T], Sketch A, Sketch B)" : " (Sketch A)"));
        });
    if (hc.sketch_a)
      for (auto& s : sa) s.end_pass();
  }
  std::vector<layer_hessians> out(static_cast<std::size_t>(layers));
  for (index l = 0; l < layers; ++l) {
    auto& h = out[std::size_t(l)];
    const auto li = std::size_t(l);
    h.xtx = xtx[li].mean().cast<float>();
    h.b_in = sb[li].h_in().cast<float>();
    h.b_out = sb[li].h_out().cast<float>();
    if (hc.sketch_a) {
      h.a_in = sa[li].h_in().cast<float>();
      h.a_out = sa[li].h_out().cast<float>();
    }
  }
  return out;
}

}  // namespace tiny_lm
