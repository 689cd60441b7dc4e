#pragma once
//! \file
//! Capture of per-layer (X, G) pairs for the Hessian sketches, through the model's own backward
//! pass with labels sampled from the model's own softmax (the true Fisher, yaqa-algorithm.md §1).
//!
//! A calibration sample is a sequence: `length` consecutive prediction positions of one train
//! segment. The model is an MLP over a fixed context, so each position is predicted on its own,
//! but the sequence is still the unit Sketch B sums over: G_s = sum_t g_t x_t^T. Labels are drawn
//! independently per position from an RNG seeded by (seed, sequence), so every pass over the
//! calibration set redraws identical labels (what Sketch A's alternating passes need).
//! The loss is the sum (not the mean) of the per-position cross-entropies, so g_t = softmax - onehot
//! is O(1) whatever the batch size; the scale cancels in the sketches' normalization anyway.
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include <yaqa/core/error.hpp>

#include "corpus.hpp"
#include "model.hpp"

namespace tiny_lm {

struct calibration_config {
  index sequences = 256;       //!< S: calibration sequences (Sketch B samples)
  index length = 128;          //!< T: positions per sequence
  index batch_sequences = 16;  //!< sequences per forward/backward batch
  std::uint64_t seed = 7;
};

//! Start offsets of the calibration sequences: uniformly random windows of `length` positions
//! inside train segments long enough to hold one. Same seed, same windows.
struct calibration_set {
  std::vector<index> start;
  std::vector<index> segment_index;
};

inline calibration_set make_calibration_set(const corpus& c, const calibration_config& cc) {
  std::vector<index> eligible;
  for (std::size_t s = 0; s < c.train.size(); ++s)
    if (c.train[s].size() >= cc.length) eligible.push_back(static_cast<index>(s));
  yaqa::detail::require(!eligible.empty(), "tiny_lm::make_calibration_set: argument 'length' (",
                        cc.length, ") is longer than every train segment");
  std::mt19937_64 rng(cc.seed * 0x9E3779B97F4A7C15ull + 11);
  std::uniform_int_distribution<std::size_t> pick(0, eligible.size() - 1);
  calibration_set cs;
  for (index i = 0; i < cc.sequences; ++i) {
    const index s = eligible[pick(rng)];
    const segment seg = c.train[std::size_t(s)];
    std::uniform_int_distribution<index> off(seg.begin, seg.end - cc.length);
    cs.start.push_back(off(rng));
    cs.segment_index.push_back(s);
  }
  return cs;
}

//! Draws one byte from the distribution given by a row of log-probabilities (inverse CDF).
inline std::uint8_t sample_byte(const mat& logp, index row, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  const double u = u01(rng);
  double acc = 0;
  for (index v = 0; v < logp.cols(); ++v) {
    acc += std::exp(double(logp(row, v)));
    if (u < acc) return static_cast<std::uint8_t>(v);
  }
  return static_cast<std::uint8_t>(logp.cols() - 1);  // rounding left a sliver: last byte
}

//! Receives, for one batch of `seqs` sequences of `len` positions each (rows s*len .. s*len+len-1
//! belong to sequence s), layer `layer`'s input X (rows x n) and output gradient G (rows x m).
using fisher_sink =
    std::function<void(index layer, const mat& x, const mat& g, index seqs, index len)>;

//! One pass over the calibration set: forward, labels sampled from the model's softmax,
//! backward (no parameter gradients), and sink() for every layer of every batch.
inline void sampled_fisher_pass(const yaqa::cpu_backend& be, const params& p, const corpus& c,
                                const model_config& mc, const calibration_config& cc,
                                const calibration_set& cs, const fisher_sink& sink,
                                const std::function<void(index done)>& on_batch = {}) {
  batch b;
  forward_cache fc;
  std::vector<index> pos, seg;
  const index total = static_cast<index>(cs.start.size());
  for (index s0 = 0; s0 < total; s0 += cc.batch_sequences) {
    const index ns = std::min(cc.batch_sequences, total - s0);
    pos.clear();
    seg.clear();
    for (index s = s0; s < s0 + ns; ++s)
      for (index t = 0; t < cc.length; ++t) {
        pos.push_back(cs.start[std::size_t(s)] + t);
        seg.push_back(cs.segment_index[std::size_t(s)]);
      }
    make_batch(c.text, pos, c.train, seg, mc.context, b);
    forward(be, p, b, mc.context, fc);
    const mat lp = log_softmax(fc.logits);
    mat dlogits = lp.array().exp().matrix();  // softmax
    for (index s = s0; s < s0 + ns; ++s) {
      std::mt19937_64 rng(cc.seed * 0xD1B54A32D192ED03ull + std::uint64_t(s) * 0x9E3779B97F4A7C15ull);
      for (index t = 0; t < cc.length; ++t) {
        const index row = (s - s0) * cc.length + t;
        dlogits(row, sample_byte(lp, row, rng)) -= 1.f;
      }
    }
    backward(be, p, b, mc.context, fc, dlogits, nullptr,
             [&](index layer, const mat& x, const mat& g) { sink(layer, x, g, ns, cc.length); });
    if (on_batch) on_batch(s0 + ns);
  }
}

}  // namespace tiny_lm
