// tiny_lm's model: forward/backward against finite differences, the kernels against naive
// loops, the captured (X, G) against the parameter gradients, Adam and the weight cache.
// The model is float only (it is an example, not a library routine); differences are taken in
// float with step sizes and tolerances chosen for float.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <random>

#include <support/approx.hpp>
#include <support/generators.hpp>

#include "model.hpp"
#include "train.hpp"

using tiny_lm::mat;
using tiny_lm::vec;

namespace {

const tiny_lm::model_config small_cfg{5, 3, 16, 24, 2};  // nothing a multiple of 8

tiny_lm::batch random_batch(yaqa::index n, yaqa::index context, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  tiny_lm::batch b;
  for (yaqa::index i = 0; i < n * context; ++i) b.context.push_back(std::uint8_t(rng() % 256));
  for (yaqa::index i = 0; i < n; ++i) b.target.push_back(std::uint8_t(rng() % 256));
  return b;
}

double loss_of(const tiny_lm::params& p, const tiny_lm::batch& b, yaqa::index context) {
  tiny_lm::forward_cache c;
  tiny_lm::forward(yaqa::cpu_backend{}, p, b, context, c);
  return tiny_lm::cross_entropy(c.logits, b.target, nullptr);
}

//! A seeded random direction with the structure of params, scaled so that it matters.
tiny_lm::params random_direction(const tiny_lm::model_config& cfg, std::uint64_t seed) {
  tiny_lm::params d = tiny_lm::zeros_like(cfg);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  tiny_lm::for_each_tensor(d, [&](float* x, yaqa::index n) {
    for (yaqa::index i = 0; i < n; ++i) x[i] = nd(rng);
  });
  return d;
}

}  // namespace

TEST_CASE("gelu: vectorized form matches the scalar one, its derivative matches differences",
          "[demo][model]") {
  const mat a = yaqa::test::random_matrix<float>(37, 11, 1, 2.0);
  const mat g = tiny_lm::gelu(a), dg = tiny_lm::gelu_grad(a);
  for (yaqa::index j = 0; j < a.cols(); ++j)
    for (yaqa::index i = 0; i < a.rows(); ++i) {
      const double x = a(i, j);
      REQUIRE(g(i, j) == Approx(tiny_lm::gelu(a(i, j))).margin(1e-6));
      // reference in double: 0.5 x (1 + tanh(k (x + c x^3)))
      auto ref = [](double v) {
        return 0.5 * v * (1 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
      };
      REQUIRE(g(i, j) == Approx(ref(x)).margin(1e-5));
      const double h = 1e-4;
      REQUIRE(dg(i, j) == Approx((ref(x + h) - ref(x - h)) / (2 * h)).margin(1e-4));
    }
}

TEST_CASE("layer norm: forward normalizes rows, backward matches a naive derivation",
          "[demo][model]") {
  const yaqa::index n = 13, d = 19;
  tiny_lm::layer_norm ln{yaqa::test::random_matrix<float>(d, 1, 2).col(0),
                         yaqa::test::random_matrix<float>(d, 1, 3).col(0)};
  const mat x = yaqa::test::random_matrix<float>(n, d, 4, 3.0);
  mat xhat, y;
  vec rstd;
  tiny_lm::layer_norm_forward(ln, x, xhat, rstd, y);
  for (yaqa::index i = 0; i < n; ++i) {
    REQUIRE(std::abs(xhat.row(i).mean()) < 1e-5);
    REQUIRE(xhat.row(i).squaredNorm() / double(d) == Approx(1.0).epsilon(1e-3));
  }
  // d/dx of sum(dy .* y) by central differences, per element, in double.
  const mat dy = yaqa::test::random_matrix<float>(n, d, 5);
  mat dx;
  tiny_lm::layer_norm grad{vec::Zero(d), vec::Zero(d)};
  tiny_lm::layer_norm_backward(ln, xhat, rstd, dy, dx, &grad);
  auto f = [&](const Eigen::MatrixXd& xx) {
    double s = 0;
    for (yaqa::index i = 0; i < n; ++i) {
      const double mu = xx.row(i).mean();
      const double var = (xx.row(i).array() - mu).square().mean();
      for (yaqa::index j = 0; j < d; ++j)
        s += dy(i, j) * ((xx(i, j) - mu) / std::sqrt(var + tiny_lm::ln_eps) * ln.gain(j) + ln.bias(j));
    }
    return s;
  };
  const Eigen::MatrixXd xd = x.cast<double>();
  Eigen::MatrixXd num(n, d);
  for (yaqa::index j = 0; j < d; ++j)
    for (yaqa::index i = 0; i < n; ++i) {
      Eigen::MatrixXd a = xd, b = xd;
      a(i, j) += 1e-5;
      b(i, j) -= 1e-5;
      num(i, j) = (f(a) - f(b)) / 2e-5;
    }
  REQUIRE_THAT(Eigen::MatrixXd(dx.cast<double>()), yaqa::test::IsClose(num, 1e-4));
  // gain and bias gradients: colsum(dy .* xhat), colsum(dy)
  for (yaqa::index j = 0; j < d; ++j) {
    double gg = 0, gb = 0;
    for (yaqa::index i = 0; i < n; ++i) {
      gg += double(dy(i, j)) * xhat(i, j);
      gb += dy(i, j);
    }
    REQUIRE(grad.gain(j) == Approx(gg).margin(1e-4));
    REQUIRE(grad.bias(j) == Approx(gb).margin(1e-4));
  }
}

TEST_CASE("log_softmax and cross_entropy match naive loops", "[demo][model]") {
  const mat z = yaqa::test::random_matrix<float>(9, tiny_lm::vocab, 6, 4.0);
  const mat lp = tiny_lm::log_softmax(z);
  std::vector<std::uint8_t> t;
  for (yaqa::index i = 0; i < z.rows(); ++i) t.push_back(std::uint8_t((i * 37 + 5) % 256));
  mat dl;
  const double ce = tiny_lm::cross_entropy(z, t, &dl);
  double ref_ce = 0;
  for (yaqa::index i = 0; i < z.rows(); ++i) {
    double mx = -1e300, s = 0;
    for (yaqa::index v = 0; v < z.cols(); ++v) mx = std::max(mx, double(z(i, v)));
    for (yaqa::index v = 0; v < z.cols(); ++v) s += std::exp(double(z(i, v)) - mx);
    for (yaqa::index v = 0; v < z.cols(); ++v) {
      const double ref = double(z(i, v)) - mx - std::log(s);
      REQUIRE(lp(i, v) == Approx(ref).margin(1e-5));
      const double grad = (std::exp(ref) - (v == t[std::size_t(i)] ? 1.0 : 0.0)) / double(z.rows());
      REQUIRE(dl(i, v) == Approx(grad).margin(1e-7));
    }
    ref_ce -= double(z(i, t[std::size_t(i)])) - mx - std::log(s);
  }
  REQUIRE(ce == Approx(ref_ce / double(z.rows())).epsilon(1e-6));
}

TEST_CASE("backward: every tensor's gradient matches a central difference of the loss",
          "[demo][model]") {
  const auto cfg = small_cfg;
  const tiny_lm::params p = tiny_lm::init_params(cfg, 3);
  const tiny_lm::batch b = random_batch(11, cfg.context, 4);
  tiny_lm::forward_cache c;
  tiny_lm::forward(yaqa::cpu_backend{}, p, b, cfg.context, c);
  mat dl;
  tiny_lm::cross_entropy(c.logits, b.target, &dl);
  tiny_lm::params g = tiny_lm::zeros_like(cfg);
  tiny_lm::backward(yaqa::cpu_backend{}, p, b, cfg.context, c, dl, &g);

  // Directional derivative per tensor: perturb one tensor at a time along a random direction.
  const tiny_lm::params dir = random_direction(cfg, 5);
  std::vector<const float*> gs, ds;
  std::vector<yaqa::index> ns;
  tiny_lm::for_each_tensor(g, [&](const float* x, yaqa::index n) { gs.push_back(x); ns.push_back(n); });
  tiny_lm::for_each_tensor(dir, [&](const float* x, yaqa::index) { ds.push_back(x); });
  for (std::size_t k = 0; k < gs.size(); ++k) {
    double analytic = 0;
    for (yaqa::index i = 0; i < ns[k]; ++i) analytic += double(gs[k][i]) * ds[k][i];
    const float h = 2e-3f;
    auto shifted = [&](float sign) {
      tiny_lm::params q = p;
      std::size_t idx = 0;
      tiny_lm::for_each_tensor(q, [&](float* x, yaqa::index n) {
        if (idx++ == k)
          for (yaqa::index i = 0; i < n; ++i) x[i] += sign * h * ds[k][i];
      });
      return loss_of(q, b, cfg.context);
    };
    const double numeric = (shifted(1.f) - shifted(-1.f)) / (2.0 * h);
    INFO("tensor " << k << ": analytic " << analytic << ", numeric " << numeric);
    REQUIRE(numeric == Approx(analytic).epsilon(2e-2).margin(2e-3));
  }
}

TEST_CASE("backward: captured (X, G) are each layer's input and output gradient",
          "[demo][model]") {
  const auto cfg = small_cfg;
  const tiny_lm::params p = tiny_lm::init_params(cfg, 7);
  const tiny_lm::batch b = random_batch(9, cfg.context, 8);
  tiny_lm::forward_cache c;
  tiny_lm::forward(yaqa::cpu_backend{}, p, b, cfg.context, c);
  mat dl;
  tiny_lm::cross_entropy(c.logits, b.target, &dl);
  tiny_lm::params g = tiny_lm::zeros_like(cfg);
  // Capture during the same backward pass that computes the gradients.
  std::vector<int> seen(std::size_t(cfg.linear_count()), 0);
  std::vector<mat> xs(seen.size()), gys(seen.size());
  tiny_lm::backward(yaqa::cpu_backend{}, p, b, cfg.context, c, dl, &g,
                    [&](yaqa::index l, const mat& x, const mat& gy) {
                      ++seen[std::size_t(l)];
                      xs[std::size_t(l)] = x;
                      gys[std::size_t(l)] = gy;
                    });
  for (yaqa::index l = 0; l < cfg.linear_count(); ++l) {
    INFO("layer " << l);
    REQUIRE(seen[std::size_t(l)] == 1);
    const auto& lin = tiny_lm::linear_at(p, l);
    const mat& x = xs[std::size_t(l)];
    const mat& gy = gys[std::size_t(l)];
    REQUIRE(x.rows() == b.size());
    REQUIRE(x.cols() == lin.w.cols());
    REQUIRE(gy.rows() == b.size());
    REQUIRE(gy.cols() == lin.w.rows());
    // Y = X W^T + b, so dW = G^T X and db = colsum(G): they must equal backward's gradients.
    const auto& gl = tiny_lm::linear_at(g, l);
    const Eigen::MatrixXd gw = gy.cast<double>().transpose() * x.cast<double>();
    REQUIRE_THAT(Eigen::MatrixXd(gl.w.cast<double>()), yaqa::test::IsClose(gw, 1e-5));
    const Eigen::MatrixXd gb = gy.cast<double>().colwise().sum().transpose();
    REQUIRE_THAT(Eigen::MatrixXd(gl.b.cast<double>()), yaqa::test::IsClose(gb, 1e-5));
  }
  // The head's input reproduces the logits.
  mat y;
  tiny_lm::linear_forward(yaqa::cpu_backend{}, p.head, c.uf, y);
  REQUIRE(y == c.logits);
}

TEST_CASE("linear_at visits every linear layer once, bad ids throw naming the routine",
          "[demo][model]") {
  tiny_lm::params p = tiny_lm::init_params(small_cfg, 1);
  std::vector<const tiny_lm::linear*> seen;
  for (yaqa::index l = 0; l < small_cfg.linear_count(); ++l) seen.push_back(&tiny_lm::linear_at(p, l));
  REQUIRE(seen.front() == &p.in);
  REQUIRE(seen.back() == &p.head);
  REQUIRE(seen[1] == &p.blocks[0].up);
  REQUIRE(seen[4] == &p.blocks[1].down);
  REQUIRE(tiny_lm::linear_name(4, 2) == "block1.down");
  REQUIRE_THROWS_WITH(tiny_lm::linear_at(p, 6), Catch::Contains("tiny_lm::linear_at") &&
                                                    Catch::Contains("'id'"));
}

TEST_CASE("adam: one step matches the textbook update, gradients are clipped", "[demo][train]") {
  tiny_lm::train_config tc;
  tc.clip = 1e9;
  tiny_lm::params p = tiny_lm::init_params(small_cfg, 2), p0 = p;
  tiny_lm::params g = random_direction(small_cfg, 3), g0 = g;
  tiny_lm::adam opt(small_cfg, tc);
  opt.step(p, g, 1e-2);
  opt.step(p, g, 1e-2);  // second step: moments carry over
  // Two steps with the same gradient: m2 = (1-b1)(1+b1) g, v2 = (1-b2)(1+b2) g^2.
  const double b1 = tc.beta1, b2 = tc.beta2;
  auto upd = [&](double gi, int t) {
    const double m = (1 - std::pow(b1, t)) * gi, v = (1 - std::pow(b2, t)) * gi * gi;
    return 1e-2 * (m / (1 - std::pow(b1, t))) / (std::sqrt(v / (1 - std::pow(b2, t))) + tc.eps);
  };
  REQUIRE(p.in.w(3, 4) == Approx(p0.in.w(3, 4) - upd(g0.in.w(3, 4), 1) - upd(g0.in.w(3, 4), 2)).margin(1e-6));
  REQUIRE(p.head.b(7) == Approx(p0.head.b(7) - upd(g0.head.b(7), 1) - upd(g0.head.b(7), 2)).margin(1e-6));
  // Clipping: Adam's first step is scale-invariant, so check through the moments: (big, g) with
  // clip 1 must equal (big / |big|, g) without clipping.
  tiny_lm::train_config tc1 = tc, tc2 = tc;
  tc1.clip = 1.0;
  tiny_lm::adam clipped(small_cfg, tc1), plain(small_cfg, tc2);
  tiny_lm::params q1 = p0, q2 = p0, big = g0, unit = g0;
  double norm2 = 0;
  tiny_lm::for_each_tensor(g0, [&](const float* x, yaqa::index n) {
    for (yaqa::index i = 0; i < n; ++i) norm2 += double(x[i]) * x[i] * 1e6;
  });
  const double norm = std::sqrt(norm2);
  REQUIRE(norm > 1.0);
  tiny_lm::for_each_tensor(big, [](float* x, yaqa::index n) {
    for (yaqa::index i = 0; i < n; ++i) x[i] *= 1000.f;
  });
  tiny_lm::for_each_tensor(unit, [&](float* x, yaqa::index n) {
    for (yaqa::index i = 0; i < n; ++i) x[i] = float(double(x[i]) * 1000.0 / norm);
  });
  clipped.step(q1, big, 1e-2);
  plain.step(q2, unit, 1e-2);
  REQUIRE(clipped.last_grad_norm() == Approx(norm).epsilon(1e-5));
  tiny_lm::params small = random_direction(small_cfg, 4);  // norm ~50: scale below the clip
  tiny_lm::for_each_tensor(small, [](float* x, yaqa::index n) {
    for (yaqa::index i = 0; i < n; ++i) x[i] *= 1e-3f;
  });
  tiny_lm::params small2 = small, small3 = small;
  clipped.step(q1, small, 1e-2);
  plain.step(q2, small2, 1e-2);
  REQUIRE_THAT(Eigen::MatrixXd(q1.in.w.cast<double>()),
               yaqa::test::IsClose(Eigen::MatrixXd(q2.in.w.cast<double>()), 1e-5));
  // ... and differs from not clipping at all.
  tiny_lm::adam none(small_cfg, tc2);
  tiny_lm::params q3 = p0, big3 = big;
  none.step(q3, big3, 1e-2);
  none.step(q3, small3, 1e-2);
  REQUIRE(yaqa::test::rel_frobenius(q3.in.w - p0.in.w, q1.in.w - p0.in.w) > 1e-2);
}

TEST_CASE("learning rate: warm-up then cosine decay to a tenth", "[demo][train]") {
  tiny_lm::train_config tc;
  tc.steps = 1000;
  tc.warmup = 100;
  tc.lr = 1e-3;
  REQUIRE(tiny_lm::learning_rate(tc, 0) == Approx(1e-5));
  REQUIRE(tiny_lm::learning_rate(tc, 99) == Approx(1e-3));
  REQUIRE(tiny_lm::learning_rate(tc, 550) == Approx(0.55e-3));
  REQUIRE(tiny_lm::learning_rate(tc, 1000) == Approx(1e-4));
}

TEST_CASE("weight cache: round trip, and a different key is a miss", "[demo][train]") {
  const auto dir = std::filesystem::temp_directory_path() / "yaqa_tests_demo_cache";
  std::filesystem::remove_all(dir);
  const tiny_lm::params p = tiny_lm::init_params(small_cfg, 9);
  const auto path = dir / "w.bin";
  tiny_lm::save_params(path, p, 42);
  tiny_lm::params q;
  REQUIRE(tiny_lm::load_params(path, small_cfg, 42, q));
  REQUIRE(q.in.w == p.in.w);
  REQUIRE(q.blocks[1].ln.gain == p.blocks[1].ln.gain);
  REQUIRE(q.head.b == p.head.b);
  REQUIRE_FALSE(tiny_lm::load_params(path, small_cfg, 43, q));
  REQUIRE_FALSE(tiny_lm::load_params(dir / "missing.bin", small_cfg, 42, q));
  // The key depends on the corpus text and on the configuration.
  tiny_lm::corpus c;
  c.text = std::string(50000, 'a');
  tiny_lm::split(c, 1000);
  tiny_lm::train_config tc;
  const auto k1 = tiny_lm::cache_key(c, small_cfg, tc);
  tc.steps += 1;
  REQUIRE(tiny_lm::cache_key(c, small_cfg, tc) != k1);
  tc.steps -= 1;
  c.text[123] = 'b';
  REQUIRE(tiny_lm::cache_key(c, small_cfg, tc) != k1);
  std::filesystem::remove_all(dir);
}
