#pragma once
//! \file
//! "SDE+LWC+CL": CQE+'s cross-layer learning on the real model, layer by layer in order
//! (OmniQuant's loop, with the library's refinement instead of autograd). For layer l:
//!   X_q  = its inputs in the model whose earlier layers are already quantized (quantized stream)
//!   Y    = X_fp W^T, its full-precision output (no bias; the bias is not quantized)
//!   Y2   = the full-precision output of what follows it (next linear, after LayerNorm/GELU and
//!          the residual stream), f = the same computation on the quantized stream, in full precision
//!   L    = ||X_q What^T - Y||^2 + lambda ||f(X_q What^T) - Y2||^2   (yaqa::cross_layer_objective)
//! refined with SDE + LWC (yaqa::refine), RTN on the learned grid, in the original basis.
//! The head has no next layer: its loss is its own output error on the quantized stream.
#include <chrono>
#include <vector>

#include <yaqa/refine/cross_layer.hpp>
#include <yaqa/refine/refine.hpp>

#include "corpus.hpp"
#include "fisher.hpp"
#include "model.hpp"
#include "quantize.hpp"

namespace tiny_lm {

struct cross_layer_config {
  index sequences = 16;        //!< calibration sequences (x 128 positions) for the activations
  double lambda_next = 1.0;    //!< weight of the next layer's output error
};

//! The next layer of linear `l` as a function of its output Z (tokens x m, without bias).
struct next_of_layer {
  const yaqa::cpu_backend* be = nullptr;
  const vec* bias = nullptr;         //!< this layer's bias
  const mat* residual = nullptr;     //!< residual stream on the quantized path (down layers), or null
  const layer_norm* ln = nullptr;    //!< LayerNorm before the next linear (in / down layers), or null
  bool gelu_first = false;           //!< up layers: GELU, then the next linear
  const linear* next = nullptr;      //!< the next linear (full precision)

  //! Input of the next linear from Z, and what the backward pass needs.
  struct state {
    mat pre, xhat, u;
    vec rstd;
  };
  [[nodiscard]] state input_of(yaqa::matrix_view<const float> z) const {
    state s;
    s.pre = yaqa::as_eigen(z);
    s.pre.rowwise() += bias->transpose();
    if (residual) s.pre += *residual;
    if (gelu_first) s.u = gelu(s.pre);
    else layer_norm_forward(*ln, s.pre, s.xhat, s.rstd, s.u);
    return s;
  }
  [[nodiscard]] mat forward(yaqa::matrix_view<const float> z) const {
    mat y;
    linear_forward(*be, *next, input_of(z).u, y);
    return y;
  }
  [[nodiscard]] mat backward(yaqa::matrix_view<const float> z, yaqa::matrix_view<const float> dy) const {
    const state s = input_of(z);
    mat du;
    linear_backward(*be, *next, s.u, yaqa::as_eigen(dy), &du, nullptr);
    if (gelu_first) return du.cwiseProduct(gelu_grad(s.pre));
    mat dx;
    layer_norm_backward(*ln, s.xhat, s.rstd, du, dx, nullptr);
    return dx;
  }
};
static_assert(yaqa::NextLayer<next_of_layer, float>);

//! The calibration positions of the first `sequences` windows of the Hessian calibration set.
inline batch cross_layer_batch(const corpus& c, const calibration_config& cc, index sequences, index context) {
  calibration_config sub = cc;
  const calibration_set cs = make_calibration_set(c, sub);
  std::vector<index> pos, seg;
  for (index s = 0; s < std::min<index>(sequences, index(cs.start.size())); ++s)
    for (index t = 0; t < cc.length; ++t) {
      pos.push_back(cs.start[std::size_t(s)] + t);
      seg.push_back(cs.segment_index[std::size_t(s)]);
    }
  batch b;
  make_batch(c.text, pos, c.train, seg, context, b);
  return b;
}

//! The input of linear l in a forward cache.
inline const mat& input_of_layer(const forward_cache& fc, index l, index blocks) {
  if (l == 0) return fc.x0;
  if (l == 1 + 2 * blocks) return fc.uf;
  const auto& bc = fc.blocks[std::size_t((l - 1) / 2)];
  return (l - 1) % 2 == 0 ? bc.u : bc.z;
}

struct cross_layer_outcome {
  params p;
  double seconds = 0;
  std::vector<yaqa::refine_report> reports;
};

//! Quantizes every linear layer of p in order with SDE + LWC on the cross-layer objective.
inline cross_layer_outcome quantize_cross_layer(const yaqa::cpu_backend& be, const params& p, const model_config& mc,
                                                const batch& bt, const quant_config& qc, int bits,
                                                const cross_layer_config& cl) {
  const auto t0 = std::chrono::steady_clock::now();
  const index nb = mc.blocks, layers = mc.linear_count();
  forward_cache fp;
  forward(be, p, bt, mc.context, fp);
  cross_layer_outcome out{p, 0.0, {}};
  yaqa::int_grid_options io;
  io.bits = bits;
  io.sym = qc.sym;
  io.group_size = qc.group_size;
  const yaqa::int_grid<float> q(io);
  yaqa::refine_options ro = qc.refine;
  ro.method = yaqa::refine_method::sde;
  ro.lwc = true;
  for (index l = 0; l < layers; ++l) {
    forward_cache qf;
    forward(be, out.p, bt, mc.context, qf);  // the quantized stream: layers < l already quantized
    const linear& lin = linear_at(p, l);
    const mat& xq = input_of_layer(qf, l, nb);
    const mat y = input_of_layer(fp, l, nb) * lin.w.transpose();
    next_of_layer nx;
    nx.be = &be;
    nx.bias = &lin.b;
    mat y2;
    double lambda = cl.lambda_next;
    if (l == 0) {  // in -> LN_0 -> up_0
      nx.ln = &p.blocks[0].ln;
      nx.next = &p.blocks[0].up;
      y2 = fp.blocks[0].a;
    } else if (l == layers - 1) {  // head: no next layer
      nx.ln = &p.ln_f;
      nx.next = &p.head;
      y2 = fp.logits;
      lambda = 0;
    } else if ((l - 1) % 2 == 0) {  // up_k -> GELU -> down_k
      const index k = (l - 1) / 2;
      nx.gelu_first = true;
      nx.next = &p.blocks[std::size_t(k)].down;
      linear_forward(be, p.blocks[std::size_t(k)].down, fp.blocks[std::size_t(k)].z, y2);
    } else {  // down_k -> residual -> LN -> up_{k+1} (or the head)
      const index k = (l - 2) / 2;
      nx.residual = &qf.blocks[std::size_t(k)].h_in;
      if (k + 1 < nb) {
        nx.ln = &p.blocks[std::size_t(k + 1)].ln;
        nx.next = &p.blocks[std::size_t(k + 1)].up;
        y2 = fp.blocks[std::size_t(k + 1)].a;
      } else {
        nx.ln = &p.ln_f;
        nx.next = &p.head;
        y2 = fp.logits;
      }
    }
    const yaqa::cross_layer_objective<float, next_of_layer> obj(
        be, yaqa::view(lin.w), yaqa::view(xq), yaqa::view(y), nx, yaqa::view(y2), {1.0, lambda});
    auto r = yaqa::refine(be, q, yaqa::view(lin.w), obj, ro);
    linear_at(out.p, l).w = std::move(r.weights);
    out.reports.push_back(std::move(r.report));
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace tiny_lm
