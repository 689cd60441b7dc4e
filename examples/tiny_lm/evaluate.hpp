#pragma once
//! \file
//! Held-out evaluation: KL(original || quantized) per byte and bits per byte.
//!
//! KL per byte = mean over held-out positions of sum_v p(v) (log p(v) - log q(v)), p the original
//! model's next-byte distribution, q the quantized model's (the paper's metric, per token).
//! Bits per byte = mean cross-entropy of the true next byte / ln 2.
#include <cmath>
#include <vector>

#include "corpus.hpp"
#include "model.hpp"

namespace tiny_lm {

//! The held-out positions, evaluated in batches.
struct eval_set {
  const corpus* text = nullptr;
  position_set positions;
  index batch = 2048;
  index context = 0;

  [[nodiscard]] index size() const { return positions.size(); }
  void fill(index first, index count, tiny_lm::batch& b) const {
    positions.fill(*text, text->heldout, first, count, context, b);
  }
};

//! Held-out positions of c (at most `limit`, in text order), for a model with `context`.
inline eval_set make_eval_set(const corpus& c, index context, index limit, index batch = 2048) {
  return eval_set{&c, position_set::of(c.heldout, limit), batch, context};
}

//! Log-probabilities (N x vocab) of the model at every position of the set.
inline mat log_probs(const yaqa::cpu_backend& be, const params& p, const eval_set& es) {
  mat out(es.size(), vocab);
  batch b;
  for (index s = 0; s < es.size(); s += es.batch) {
    const index n = std::min(es.batch, es.size() - s);
    es.fill(s, n, b);
    out.middleRows(s, n) = log_softmax(logits(be, p, b, es.context));
  }
  return out;
}

struct eval_result {
  double kl = 0;   //!< KL(original || model), nats per byte
  double bpb = 0;  //!< bits per byte on the held-out next bytes
};

//! Mean KL(ref || q) per row and the mean cross-entropy of the targets under q, in bits.
//! ref and q are N x vocab log-probability matrices.
inline eval_result compare_log_probs(const mat& ref, const mat& q,
                                     const std::vector<std::uint8_t>& targets) {
  yaqa::detail::require<yaqa::shape_error>(
      ref.rows() == q.rows() && ref.cols() == q.cols() && q.rows() == index(targets.size()),
      "tiny_lm::compare_log_probs: arguments 'ref' (", ref.rows(), "x", ref.cols(), "), 'q' (",
      q.rows(), "x", q.cols(), ") and 'targets' (", targets.size(), ") must agree");
  const index n = ref.rows();
  std::vector<double> kl(std::size_t(n), 0.0);
  for (index v = 0; v < ref.cols(); ++v)
    for (index i = 0; i < n; ++i) {
      const double lp = ref(i, v);
      kl[std::size_t(i)] += std::exp(lp) * (lp - double(q(i, v)));
    }
  eval_result r;
  for (index i = 0; i < n; ++i) {
    r.kl += kl[std::size_t(i)];
    r.bpb -= q(i, targets[std::size_t(i)]);
  }
  r.kl /= double(n);
  r.bpb /= double(n) * std::log(2.0);
  return r;
}

//! The held-out targets in set order.
inline std::vector<std::uint8_t> targets_of(const eval_set& es) {
  std::vector<std::uint8_t> t;
  t.reserve(std::size_t(es.size()));
  for (index p : es.positions.pos) t.push_back(static_cast<std::uint8_t>(es.text->text[std::size_t(p)]));
  return t;
}

//! Evaluates model p against the original model's log-probabilities ref (from log_probs()).
inline eval_result evaluate(const yaqa::cpu_backend& be, const params& p, const eval_set& es,
                            const mat& ref, const std::vector<std::uint8_t>& targets) {
  return compare_log_probs(ref, log_probs(be, p, es), targets);
}

}  // namespace tiny_lm
