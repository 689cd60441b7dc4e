#pragma once
//! \file
//! tiny_lm: a byte-level language model small enough to train on two CPU cores in a few minutes,
//! yet with enough wide linear layers (>= 256) for Hessian-aware rounding to matter.
//!
//! Architecture (an MLP over the previous `context` bytes, residual blocks, pre-LayerNorm):
//!   x0 = concat(embed[b_{t-C}], ..., embed[b_{t-1}])          C*e
//!   h  = in(x0)                                                 width
//!   h += down_k(gelu(up_k(LN_k(h))))      for k < blocks        width -> hidden -> width
//!   logits = head(LN_f(h))                                      256
//! The quantized layers are the linear layers in, up_k, down_k, head (2 + 2*blocks of them).
//!
//! Data layout: one token per row (B x features, column-major), matching the library's
//! convention for activations (X is tokens x n, G is tokens x m) so captured inputs and output
//! gradients go to the Hessian accumulators without copies.
//! All products go through yaqa::backend_ops<cpu_backend>::gemm, whose results do not depend on
//! the thread count: a run is reproducible bit for bit on any machine with the same compiler.
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>

namespace tiny_lm {

using yaqa::index;
using mat = yaqa::matrix<float>;
using vec = yaqa::vector<float>;

inline constexpr index vocab = 256;  //!< bytes

//! Sizes of the model. Every field enters the cache key of trained weights.
struct model_config {
  index context = 32;  //!< previous bytes the model sees
  index embed = 16;    //!< byte embedding width
  index width = 256;   //!< residual stream width
  index hidden = 512;  //!< MLP hidden width
  index blocks = 3;    //!< residual blocks

  [[nodiscard]] index input_width() const { return context * embed; }
  [[nodiscard]] index linear_count() const { return 2 + 2 * blocks; }
  [[nodiscard]] std::string describe() const {
    return yaqa::detail::concat("ctx ", context, ", embed ", embed, ", width ", width, ", hidden ",
                                hidden, ", blocks ", blocks);
  }
};

//! y = x W^T + b; W is out x in (the library's m x n).
struct linear {
  mat w;
  vec b;
};

struct layer_norm {
  vec gain;
  vec bias;
};

struct block {
  layer_norm ln;
  linear up;
  linear down;
};

//! All trainable tensors. Gradients and Adam moments use the same type.
struct params {
  mat embed;  //!< vocab x embed
  linear in;
  std::vector<block> blocks;
  layer_norm ln_f;
  linear head;
};

//! Calls f(float* data, index size) on every tensor in a fixed order (serialization, Adam).
template <class P, class F>
void for_each_tensor(P& p, F&& f) {
  auto t = [&](auto& m) { f(m.data(), static_cast<index>(m.size())); };
  t(p.embed);
  t(p.in.w);
  t(p.in.b);
  for (auto& bl : p.blocks) {
    t(bl.ln.gain);
    t(bl.ln.bias);
    t(bl.up.w);
    t(bl.up.b);
    t(bl.down.w);
    t(bl.down.b);
  }
  t(p.ln_f.gain);
  t(p.ln_f.bias);
  t(p.head.w);
  t(p.head.b);
}

//! Number of scalars in the model.
inline index parameter_count(const params& p) {
  index n = 0;
  for_each_tensor(p, [&](const float*, index s) { n += s; });
  return n;
}

//! Quantized layers, in the order the pipeline visits them: in, block0.up, block0.down, ..., head.
inline linear& linear_at(params& p, index id) {
  const index count = 2 + 2 * static_cast<index>(p.blocks.size());
  yaqa::detail::require(id >= 0 && id < count, "tiny_lm::linear_at: argument 'id' must be in [0, ",
                        count, "), got ", id);
  if (id == 0) return p.in;
  if (id == count - 1) return p.head;
  auto& bl = p.blocks[static_cast<std::size_t>((id - 1) / 2)];
  return (id - 1) % 2 == 0 ? bl.up : bl.down;
}
inline const linear& linear_at(const params& p, index id) {
  return linear_at(const_cast<params&>(p), id);
}
inline std::string linear_name(index id, index blocks) {
  if (id == 0) return "in";
  if (id == 1 + 2 * blocks) return "head";
  return yaqa::detail::concat("block", (id - 1) / 2, (id - 1) % 2 == 0 ? ".up" : ".down");
}

//! Parameters shaped for cfg, all zero (used for gradients and Adam moments).
inline params zeros_like(const model_config& cfg) {
  params p;
  auto lin = [](index out, index in) { return linear{mat::Zero(out, in), vec::Zero(out)}; };
  auto ln = [](index n) { return layer_norm{vec::Zero(n), vec::Zero(n)}; };
  p.embed = mat::Zero(vocab, cfg.embed);
  p.in = lin(cfg.width, cfg.input_width());
  for (index k = 0; k < cfg.blocks; ++k)
    p.blocks.push_back({ln(cfg.width), lin(cfg.hidden, cfg.width), lin(cfg.width, cfg.hidden)});
  p.ln_f = ln(cfg.width);
  p.head = lin(vocab, cfg.width);
  return p;
}

//! Seeded initialization: N(0, 1/fan_in) weights so activations start at unit scale; the
//! residual branches' output layers start scaled by 1/sqrt(2 blocks) (GPT-2's trick), so the
//! stream does not grow with depth.
inline params init_params(const model_config& cfg, std::uint64_t seed) {
  params p = zeros_like(cfg);
  std::mt19937_64 rng(seed);
  auto fill = [&](mat& m, double sigma) {
    std::normal_distribution<float> nd(0.f, static_cast<float>(sigma));
    for (index i = 0; i < m.size(); ++i) m.data()[i] = nd(rng);
  };
  fill(p.embed, 1.0);
  fill(p.in.w, 1.0 / std::sqrt(double(cfg.input_width())));
  for (auto& bl : p.blocks) {
    bl.ln.gain.setOnes();
    fill(bl.up.w, 1.0 / std::sqrt(double(cfg.width)));
    fill(bl.down.w, 1.0 / std::sqrt(double(cfg.hidden) * 2.0 * double(cfg.blocks)));
  }
  p.ln_f.gain.setOnes();
  fill(p.head.w, 1.0 / std::sqrt(double(cfg.width)));
  return p;
}

// ---- kernels --------------------------------------------------------------------------------

//! C = alpha * op(A) * op(B) + beta * C through the library's deterministic CPU GEMM.
inline void gemm(const yaqa::cpu_backend& be, bool ta, bool tb, float alpha, const mat& a,
                 const mat& b, float beta, mat& c) {
  yaqa::backend_ops<yaqa::cpu_backend>::gemm<float>(
      be, ta ? yaqa::trans::transpose : yaqa::trans::none,
      tb ? yaqa::trans::transpose : yaqa::trans::none, alpha, yaqa::view(a), yaqa::view(b), beta,
      yaqa::view(c));
}

//! Y = X W^T + 1 b^T.
inline void linear_forward(const yaqa::cpu_backend& be, const linear& l, const mat& x, mat& y) {
  y.resize(x.rows(), l.w.rows());
  gemm(be, false, true, 1.f, x, l.w, 0.f, y);
  y.rowwise() += l.b.transpose();
}

//! Given dY: dX = dY W (when dx != nullptr); dW += dY^T X and db += colsum(dY) (when grad).
inline void linear_backward(const yaqa::cpu_backend& be, const linear& l, const mat& x,
                            const mat& dy, mat* dx, linear* grad) {
  if (grad) {
    gemm(be, true, false, 1.f, dy, x, 1.f, grad->w);
    grad->b += dy.colwise().sum().transpose();
  }
  if (dx) {
    dx->resize(dy.rows(), l.w.cols());
    gemm(be, false, false, 1.f, dy, l.w, 0.f, *dx);
  }
}

inline constexpr float ln_eps = 1e-5f;

//! Row-wise LayerNorm. Keeps xhat and 1/sigma for the backward pass.
inline void layer_norm_forward(const layer_norm& ln, const mat& x, mat& xhat, vec& rstd, mat& y) {
  const vec mu = x.rowwise().mean();
  xhat = x.colwise() - mu;
  rstd = (xhat.array().square().rowwise().mean() + ln_eps).rsqrt().matrix();
  xhat = rstd.asDiagonal() * xhat;
  y = xhat * ln.gain.asDiagonal();
  y.rowwise() += ln.bias.transpose();
}

//! dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * gain.
inline void layer_norm_backward(const layer_norm& ln, const mat& xhat, const vec& rstd,
                                const mat& dy, mat& dx, layer_norm* grad) {
  if (grad) {
    grad->gain += dy.cwiseProduct(xhat).colwise().sum().transpose();
    grad->bias += dy.colwise().sum().transpose();
  }
  const mat dxhat = dy * ln.gain.asDiagonal();
  const vec m1 = dxhat.rowwise().mean();
  const vec m2 = dxhat.cwiseProduct(xhat).rowwise().mean();
  dx = rstd.asDiagonal() * ((dxhat.colwise() - m1) - m2.asDiagonal() * xhat);
}

//! GELU, tanh form, and its derivative; array forms so Eigen vectorizes tanh.
inline constexpr float gelu_k = 0.7978845608028654f;  // sqrt(2/pi)
inline constexpr float gelu_c = 0.044715f;
inline float gelu(float a) {
  return 0.5f * a * (1.f + std::tanh(gelu_k * (a + gelu_c * a * a * a)));
}
inline float gelu_grad(float a) {
  const float t = std::tanh(gelu_k * (a + gelu_c * a * a * a));
  return 0.5f * (1.f + t) + 0.5f * a * (1.f - t * t) * gelu_k * (1.f + 3.f * gelu_c * a * a);
}
inline mat gelu(const mat& a) {
  const auto x = a.array();
  return (0.5f * x * (1.f + (gelu_k * (x + gelu_c * x.cube())).tanh())).matrix();
}
inline mat gelu_grad(const mat& a) {
  const auto x = a.array();
  const Eigen::ArrayXXf t = (gelu_k * (x + gelu_c * x.cube())).tanh();
  return (0.5f * (1.f + t) + 0.5f * x * (1.f - t.square()) * gelu_k * (1.f + 3.f * gelu_c * x.square()))
      .matrix();
}

//! Row-wise log-softmax of logits (B x vocab).
inline mat log_softmax(const mat& logits) {
  const vec mx = logits.rowwise().maxCoeff();
  mat z = logits.colwise() - mx;
  const vec lse = z.array().exp().rowwise().sum().log().matrix();
  z.colwise() -= lse;
  return z;
}

// ---- forward / backward ---------------------------------------------------------------------

//! A batch of prediction positions: context bytes (B x context, oldest first) and next bytes.
struct batch {
  std::vector<std::uint8_t> context;  //!< row-major B x C
  std::vector<std::uint8_t> target;   //!< B
  [[nodiscard]] index size() const { return static_cast<index>(target.size()); }
};

//! Activations kept for the backward pass. Inputs of the linear layers are x0 (in), u (up),
//! z (down) and uf (head).
struct forward_cache {
  mat x0;
  struct block_cache {
    mat h_in;        // residual stream entering the block
    mat xhat, u;     // LN output is u
    vec rstd;
    mat a, z;        // up output, gelu(a)
  };
  std::vector<block_cache> blocks;
  mat h;             // final residual stream
  mat xhat_f, uf;
  vec rstd_f;
  mat logits;
};

//! Gathers the byte embeddings of the contexts into x0 (B x C*e).
inline void embed_forward(const params& p, const batch& bt, index context, mat& x0) {
  const index n = bt.size(), e = p.embed.cols();
  x0.resize(n, context * e);
  for (index c = 0; c < context; ++c)
    for (index j = 0; j < e; ++j) {
      float* col = x0.col(c * e + j).data();
      const float* emb = p.embed.col(j).data();
      for (index i = 0; i < n; ++i) col[i] = emb[bt.context[std::size_t(i * context + c)]];
    }
}

inline void forward(const yaqa::cpu_backend& be, const params& p, const batch& bt, index context,
                    forward_cache& c) {
  embed_forward(p, bt, context, c.x0);
  mat h;
  linear_forward(be, p.in, c.x0, h);
  c.blocks.resize(p.blocks.size());
  for (std::size_t k = 0; k < p.blocks.size(); ++k) {
    auto& bc = c.blocks[k];
    const auto& bl = p.blocks[k];
    bc.h_in = h;
    layer_norm_forward(bl.ln, h, bc.xhat, bc.rstd, bc.u);
    linear_forward(be, bl.up, bc.u, bc.a);
    bc.z = gelu(bc.a);
    mat d;
    linear_forward(be, bl.down, bc.z, d);
    h += d;
  }
  c.h = std::move(h);
  layer_norm_forward(p.ln_f, c.h, c.xhat_f, c.rstd_f, c.uf);
  linear_forward(be, p.head, c.uf, c.logits);
}

//! Logits only (evaluation).
inline mat logits(const yaqa::cpu_backend& be, const params& p, const batch& bt, index context) {
  forward_cache c;
  forward(be, p, bt, context, c);
  return std::move(c.logits);
}

//! Called by backward() for every linear layer with its input X (B x in) and the gradient of
//! the loss w.r.t. its output G (B x out): exactly what the Hessian sketches consume.
using capture_fn = std::function<void(index layer, const mat& x, const mat& g)>;

//! Back-propagates dlogits (B x vocab). Accumulates parameter gradients into grad when given;
//! calls capture for each linear layer when given. Linear layers are visited from the head down.
inline void backward(const yaqa::cpu_backend& be, const params& p, const batch& bt, index context,
                     const forward_cache& c, const mat& dlogits, params* grad,
                     const capture_fn& capture = {}) {
  const index nb = static_cast<index>(p.blocks.size());
  const index head_id = 1 + 2 * nb;
  if (capture) capture(head_id, c.uf, dlogits);
  mat du, dh;
  linear_backward(be, p.head, c.uf, dlogits, &du, grad ? &grad->head : nullptr);
  layer_norm_backward(p.ln_f, c.xhat_f, c.rstd_f, du, dh, grad ? &grad->ln_f : nullptr);
  for (index k = nb - 1; k >= 0; --k) {
    const auto& bc = c.blocks[std::size_t(k)];
    const auto& bl = p.blocks[std::size_t(k)];
    block* gb = grad ? &grad->blocks[std::size_t(k)] : nullptr;
    // dh is the gradient of the block's output, and of its down layer's output.
    if (capture) capture(2 + 2 * k, bc.z, dh);
    mat dz;
    linear_backward(be, bl.down, bc.z, dh, &dz, gb ? &gb->down : nullptr);
    const mat da = dz.cwiseProduct(gelu_grad(bc.a));
    if (capture) capture(1 + 2 * k, bc.u, da);
    linear_backward(be, bl.up, bc.u, da, &du, gb ? &gb->up : nullptr);
    mat dx;
    layer_norm_backward(bl.ln, bc.xhat, bc.rstd, du, dx, gb ? &gb->ln : nullptr);
    dh += dx;
  }
  if (capture) capture(0, c.x0, dh);
  if (!grad) return;
  mat dx0;
  linear_backward(be, p.in, c.x0, dh, &dx0, &grad->in);
  const index e = p.embed.cols();
  for (index cpos = 0; cpos < context; ++cpos)
    for (index i = 0; i < bt.size(); ++i)
      grad->embed.row(bt.context[std::size_t(i * context + cpos)]) +=
          dx0.row(i).segment(cpos * e, e);
}

//! Mean cross-entropy (nats) of targets under logits, and dloss/dlogits = (softmax - onehot)/B.
inline double cross_entropy(const mat& logits, const std::vector<std::uint8_t>& target,
                            mat* dlogits) {
  const mat lp = log_softmax(logits);
  const index n = lp.rows();
  double loss = 0;
  for (index i = 0; i < n; ++i) loss -= lp(i, target[std::size_t(i)]);
  if (dlogits) {
    *dlogits = lp.array().exp().matrix() / float(n);
    for (index i = 0; i < n; ++i) (*dlogits)(i, target[std::size_t(i)]) -= 1.f / float(n);
  }
  return loss / double(n);
}

}  // namespace tiny_lm
