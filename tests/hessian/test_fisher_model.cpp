// End-to-end check of the sketches against an exactly computable true Fisher.
//
// Model: a 2-layer MLP with softmax output. The layer under study is the first one,
// y = W1 u (W1 is m x n), a = tanh(y), logits z = W2 a (K classes). For a label t the loss is
// -log softmax(z)_t, and g = dloss/dy = (1 - a^2) ∘ W2^T (softmax(z) - e_t). The true Fisher of W1
// (row-major vec, index a*n + i) is H = mean_u sum_t p_t (g_t ⊗ u)(g_t ⊗ u)^T, computed here by
// enumerating the labels with their probabilities.
//
// The sketches are fed exact label expectations where an identity is checked (a row per label,
// scaled by sqrt(p_t): the sketches are quadratic in g), and labels sampled from the model's own
// softmax where the realistic estimator is checked.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include <Eigen/Dense>

#include <support/approx.hpp>
#include <support/generators.hpp>
#include <yaqa/hessian/accumulator.hpp>
#include <yaqa/hessian/kronecker_sketch.hpp>

using namespace yaqa;

namespace {

constexpr yaqa::index n = 6, m = 5, k_classes = 4, seq_len = 2, n_seq = 60, n_tok = seq_len * n_seq;

struct mlp {
  Eigen::MatrixXd w1, w2;  // m x n, K x m

  Eigen::VectorXd probs(const Eigen::VectorXd& u) const {
    const Eigen::VectorXd z = w2 * (w1 * u).array().tanh().matrix();
    const Eigen::ArrayXd e = (z.array() - z.maxCoeff()).exp();
    return (e / e.sum()).matrix();
  }
  //! dloss/dy for input u and label t.
  Eigen::VectorXd grad_y(const Eigen::VectorXd& u, yaqa::index t) const {
    const Eigen::ArrayXd a = (w1 * u).array().tanh();
    Eigen::VectorXd d = probs(u);
    d(t) -= 1.0;
    return ((1.0 - a * a) * (w2.transpose() * d).array()).matrix();
  }
  double loss(const Eigen::MatrixXd& w1_, const Eigen::VectorXd& u, yaqa::index t) const {
    const Eigen::VectorXd z = w2 * (w1_ * u).array().tanh().matrix();
    return -(z(t) - z.maxCoeff() - std::log((z.array() - z.maxCoeff()).exp().sum()));
  }
};

struct fixture {
  mlp model;
  Eigen::MatrixXd tokens;  // n_tok x n, sequence s = rows [s*seq_len, (s+1)*seq_len)
  Eigen::MatrixXd fisher;  // mn x mn, mean over tokens

  fixture() {
    model.w1 = test::random_matrix<double>(m, n, 1, 0.6);
    model.w2 = test::random_matrix<double>(k_classes, m, 2, 1.5);
    const Eigen::MatrixXd mix = test::random_matrix<double>(n, n, 3) + 1.5 * Eigen::MatrixXd::Identity(n, n);
    tokens = test::random_matrix<double>(n_tok, n, 4) * mix;
    fisher = Eigen::MatrixXd::Zero(m * n, m * n);
    for (yaqa::index r = 0; r < n_tok; ++r) {
      const Eigen::VectorXd u = tokens.row(r).transpose();
      const Eigen::VectorXd p = model.probs(u);
      for (yaqa::index t = 0; t < k_classes; ++t) {
        const Eigen::VectorXd g = model.grad_y(u, t);
        Eigen::VectorXd v(m * n);  // vec(g u^T), row-major = g ⊗ u
        for (yaqa::index a = 0; a < m; ++a) v.segment(a * n, n) = g(a) * u;
        fisher += p(t) * v * v.transpose();
      }
    }
    fisher /= double(n_tok);
  }
};

const fixture& fx() {
  static const fixture f;
  return f;
}

//! R(H) (m^2 x n^2): R[(a,b),(i,j)] = H[a*n+i, b*n+j], so R(A ⊗ B) = vec(A) vec(B)^T.
Eigen::MatrixXd rearrange(const Eigen::MatrixXd& h) {
  Eigen::MatrixXd r(m * m, n * n);
  for (yaqa::index a = 0; a < m; ++a)
    for (yaqa::index b = 0; b < m; ++b)
      for (yaqa::index i = 0; i < n; ++i)
        for (yaqa::index j = 0; j < n; ++j) r(a * m + b, i * n + j) = h(a * n + i, b * n + j);
  return r;
}

Eigen::VectorXd vec_rowmajor(const Eigen::MatrixXd& a) {
  Eigen::VectorXd v(a.size());
  for (yaqa::index i = 0; i < a.rows(); ++i)
    for (yaqa::index j = 0; j < a.cols(); ++j) v(i * a.cols() + j) = a(i, j);
  return v;
}

Eigen::MatrixXd unvec(const Eigen::VectorXd& v, yaqa::index k) {
  Eigen::MatrixXd a(k, k);
  for (yaqa::index i = 0; i < k; ++i)
    for (yaqa::index j = 0; j < k; ++j) a(i, j) = v(i * k + j);
  return a;
}

//! <H, H_out ⊗ H_in> / (||H|| ||H_out ⊗ H_in||), via R(H) (no mn x mn Kronecker product needed).
double cosine(const Eigen::MatrixXd& h, const Eigen::MatrixXd& h_out, const Eigen::MatrixXd& h_in) {
  const double inner = vec_rowmajor(h_out).dot(rearrange(h) * vec_rowmajor(h_in));
  return inner / (h.norm() * h_out.norm() * h_in.norm());
}

//! One exact-expectation "batch" per token: K rows (x = u, g = sqrt(p_t) g_t).
void expected_rows(yaqa::index r, Eigen::MatrixXd& x, Eigen::MatrixXd& g) {
  const auto& f = fx();
  const Eigen::VectorXd u = f.tokens.row(r).transpose();
  const Eigen::VectorXd p = f.model.probs(u);
  x.resize(k_classes, n);
  g.resize(k_classes, m);
  for (yaqa::index t = 0; t < k_classes; ++t) {
    x.row(t) = u.transpose();
    g.row(t) = std::sqrt(p(t)) * f.model.grad_y(u, t).transpose();
  }
}

}  // namespace

TEST_CASE("fisher model: gradients and the row-major Fisher are consistent", "[hessian][fisher]") {
  const auto& f = fx();
  // g = dloss/dy by central differences of the loss in W1: dloss/dW1(a,i) = g_a u_i
  const Eigen::VectorXd u = f.tokens.row(3).transpose();
  const Eigen::VectorXd g = f.model.grad_y(u, 2);
  for (auto [a, i] : {std::pair<int, int>{0, 0}, {4, 5}, {2, 3}}) {
    Eigen::MatrixXd wp = f.model.w1, wm = f.model.w1;
    wp(a, i) += 1e-6;
    wm(a, i) -= 1e-6;
    const double fd = (f.model.loss(wp, u, 2) - f.model.loss(wm, u, 2)) / 2e-6;
    CHECK(fd == Approx(g(a) * u(i)).epsilon(1e-6).margin(1e-9));
  }
  // vec(dW)^T H vec(dW) = mean_u sum_t p_t (g_t^T dW u)^2 (the second-order KL term)
  const Eigen::MatrixXd dw = test::random_matrix<double>(m, n, 9);
  double direct = 0;
  for (yaqa::index r = 0; r < n_tok; ++r) {
    const Eigen::VectorXd ur = f.tokens.row(r).transpose();
    const Eigen::VectorXd p = f.model.probs(ur);
    for (yaqa::index t = 0; t < k_classes; ++t) {
      const double d = f.model.grad_y(ur, t).dot(dw * ur);
      direct += p(t) * d * d;
    }
  }
  const Eigen::VectorXd v = vec_rowmajor(dw);
  CHECK(v.dot(f.fisher * v) == Approx(direct / double(n_tok)).epsilon(1e-12));
}

TEST_CASE("fisher model: Sketch A is power iteration on R(H) and converges to its top singular pair",
          "[hessian][fisher][sketch_a]") {
  const auto& f = fx();
  const Eigen::MatrixXd r = rearrange(f.fisher);
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(r, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::VectorXd u1 = svd.matrixU().col(0), v1 = svd.matrixV().col(0);
  const double best = svd.singularValues()(0) / f.fisher.norm();  // the optimal cosine
  const double h1_cosine = cosine(f.fisher, Eigen::MatrixXd::Identity(m, m), f.tokens.transpose() * f.tokens);

  const int passes = 10;
  sketch_a<double> s(n, m, passes);
  double last_cosine = 0;
  Eigen::MatrixXd x, g;
  for (int p = 0; p < passes; ++p) {
    const Eigen::MatrixXd prev_in = p > 0 ? Eigen::MatrixXd(s.h_in()) : Eigen::MatrixXd();
    const Eigen::MatrixXd prev_out = p > 1 ? Eigen::MatrixXd(s.h_out()) : Eigen::MatrixXd();
    s.begin_pass();
    for (yaqa::index t = 0; t < n_tok; ++t) {
      expected_rows(t, x, g);
      s.add(view(std::as_const(x)), view(std::as_const(g)));
    }
    s.end_pass();
    if (p == 0) {
      REQUIRE_THAT(Eigen::MatrixXd(s.h_in()),
                   test::IsClose(Eigen::MatrixXd(f.tokens.transpose() * f.tokens / double(n_tok)), 1e-13));
      continue;
    }
    // each half-step is exactly H_out = R(H) vec(H_in) / ||H_in||^2 (and the transpose), up to
    // the 1/K of feeding K weighted rows per token
    if (p % 2 == 1) {
      const Eigen::MatrixXd expect = unvec(r * vec_rowmajor(prev_in), m) / (k_classes * prev_in.squaredNorm());
      REQUIRE_THAT(Eigen::MatrixXd(s.h_out()), test::IsClose(expect, 1e-12));
    } else {
      const Eigen::MatrixXd expect =
          unvec(r.transpose() * vec_rowmajor(prev_out), n) / (k_classes * prev_out.squaredNorm());
      REQUIRE_THAT(Eigen::MatrixXd(s.h_in()), test::IsClose(expect, 1e-12));
    }
    // alternating maximization of the cosine: it never decreases
    const double c = cosine(f.fisher, s.h_out(), s.h_in());
    CHECK(c >= last_cosine - 1e-12);
    last_cosine = c;
  }
  const double align_in = std::abs(vec_rowmajor(s.h_in()).normalized().dot(v1));
  const double align_out = std::abs(vec_rowmajor(s.h_out()).normalized().dot(u1));
  INFO("cosine I⊗H1 " << h1_cosine << ", sketch A " << last_cosine << ", optimum " << best
                      << "; alignment with the top singular vectors " << align_in << ", " << align_out);
  CHECK(last_cosine > h1_cosine + 0.02);
  CHECK(last_cosine == Approx(best).epsilon(1e-6));
  CHECK(align_in > 1 - 1e-5);
  CHECK(align_out > 1 - 1e-5);
}

TEST_CASE("fisher model: Sketch B estimates the sequence Fisher's partial traces and beats I⊗H1",
          "[hessian][fisher][sketch_b]") {
  const auto& f = fx();
  const double h1_cosine = cosine(f.fisher, Eigen::MatrixXd::Identity(m, m), f.tokens.transpose() * f.tokens);
  // exact expectation: enumerate the K^seq_len label combinations of each sequence, G_s scaled by
  // sqrt(prob) (G_s is linear in g)
  sketch_b<double> exact(n, m);
  const yaqa::index combos = k_classes * k_classes;
  for (yaqa::index s = 0; s < n_seq; ++s) {
    const Eigen::MatrixXd xs = f.tokens.middleRows(s * seq_len, seq_len);
    Eigen::MatrixXd p(seq_len, k_classes);
    for (yaqa::index t = 0; t < seq_len; ++t) p.row(t) = f.model.probs(xs.row(t).transpose()).transpose();
    for (yaqa::index c = 0; c < combos; ++c) {
      static_assert(seq_len == 2, "the enumeration below is written for two tokens");
      const yaqa::index lab[2] = {c % k_classes, c / k_classes};
      const double weight = p(0, lab[0]) * p(1, lab[1]);  // probability of this labelling
      Eigen::MatrixXd gs(seq_len, m);
      for (yaqa::index t = 0; t < seq_len; ++t)
        gs.row(t) = std::sqrt(weight) * f.model.grad_y(xs.row(t).transpose(), lab[t]).transpose();
      exact.add_sequence(view(xs), view(std::as_const(gs)));
    }
  }
  // E[G_s^T G_s] = sum_t of the per-token partial traces: H_in(i,j) = seq_len * sum_a H[(a,i),(a,j)]
  Eigen::MatrixXd tr_in = Eigen::MatrixXd::Zero(n, n), tr_out = Eigen::MatrixXd::Zero(m, m);
  for (yaqa::index a = 0; a < m; ++a) tr_in += f.fisher.block(a * n, a * n, n, n);
  for (yaqa::index a = 0; a < m; ++a)
    for (yaqa::index b = 0; b < m; ++b) tr_out(a, b) = f.fisher.block(a * n, b * n, n, n).trace();
  REQUIRE_THAT(Eigen::MatrixXd(exact.h_in() * double(combos)), test::IsClose(Eigen::MatrixXd(seq_len * tr_in), 1e-12));
  REQUIRE_THAT(Eigen::MatrixXd(exact.h_out() * double(combos)), test::IsClose(Eigen::MatrixXd(seq_len * tr_out), 1e-12));
  const double exact_cosine = cosine(f.fisher, exact.h_out(), exact.h_in());

  // the realistic estimator: labels sampled from the model's own softmax, many draws per sequence
  sketch_b<double> sampled(n, m);
  std::mt19937_64 rng(12345);
  for (int rep = 0; rep < 400; ++rep)
    for (yaqa::index s = 0; s < n_seq; ++s) {
      const Eigen::MatrixXd xs = f.tokens.middleRows(s * seq_len, seq_len);
      Eigen::MatrixXd gs(seq_len, m);
      for (yaqa::index t = 0; t < seq_len; ++t) {
        const Eigen::VectorXd p = f.model.probs(xs.row(t).transpose());
        std::discrete_distribution<int> pick(p.data(), p.data() + p.size());
        gs.row(t) = f.model.grad_y(xs.row(t).transpose(), pick(rng)).transpose();
      }
      sampled.add_sequence(view(xs), view(std::as_const(gs)));
    }
  const double sampled_cosine = cosine(f.fisher, sampled.h_out(), sampled.h_in());
  INFO("cosine I⊗H1 " << h1_cosine << ", sketch B exact " << exact_cosine << ", sampled " << sampled_cosine);
  CHECK(exact_cosine > h1_cosine + 0.02);
  CHECK(sampled_cosine > h1_cosine + 0.02);
  // the sampled estimate converges to the exact expectation (unbiased)
  REQUIRE_THAT(Eigen::MatrixXd(sampled.h_in()), test::IsClose(Eigen::MatrixXd(exact.h_in() * double(combos)), 0.05));
  REQUIRE_THAT(Eigen::MatrixXd(sampled.h_out()), test::IsClose(Eigen::MatrixXd(exact.h_out() * double(combos)), 0.05));
}
