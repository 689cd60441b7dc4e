// tiny_lm's Hessian collection: the factors the library's accumulators return from the model's
// own backward pass equal naive sums over the captured (X, G); labels are redrawn identically on
// every pass; each method is handed the right Hessian.
#include <catch2/catch.hpp>

#include <random>

#include <support/approx.hpp>
#include <support/generators.hpp>

#include "hessians.hpp"
#include "quantize.hpp"

using tiny_lm::mat;

namespace {

struct fixture {
  tiny_lm::model_config mc{6, 4, 24, 40, 1};  // layers 24x24, 40x24, 24x40, 256x24
  tiny_lm::corpus c;
  tiny_lm::params p;
  tiny_lm::hessian_config hc;

  fixture() {
    std::mt19937_64 rng(11);
    for (int i = 0; i < 6000; ++i) c.text.push_back(char('a' + rng() % 7));
    tiny_lm::split(c, 500, 4);
    p = tiny_lm::init_params(mc, 12);
    hc.calibration = {13, 9, 5, 3};  // 13 sequences of 9 positions, batches of 5 (last one 3)
    hc.sketch_a_passes = 3;
  }

  //! Every (X, G) of one pass, per layer, in batch order.
  std::vector<std::vector<std::pair<mat, mat>>> capture() const {
    std::vector<std::vector<std::pair<mat, mat>>> out(std::size_t(mc.linear_count()));
    const auto cs = tiny_lm::make_calibration_set(c, hc.calibration);
    tiny_lm::sampled_fisher_pass(yaqa::cpu_backend{}, p, c, mc, hc.calibration, cs,
                                 [&](yaqa::index l, const mat& x, const mat& g, yaqa::index seqs,
                                     yaqa::index len) {
                                   REQUIRE(x.rows() == seqs * len);
                                   out[std::size_t(l)].emplace_back(x, g);
                                 });
    return out;
  }
};

}  // namespace

TEST_CASE("sampled Fisher passes redraw identical labels", "[demo][hessian]") {
  const fixture f;
  const auto a = f.capture(), b = f.capture();
  for (std::size_t l = 0; l < a.size(); ++l)
    for (std::size_t k = 0; k < a[l].size(); ++k) {
      REQUIRE(a[l][k].first == b[l][k].first);
      REQUIRE(a[l][k].second == b[l][k].second);
    }
  // The head's G is softmax - onehot(sampled label): each row sums to 0 and has exactly one
  // negative entry (at the sampled byte).
  for (const auto& [x, g] : a.back()) {
    for (yaqa::index i = 0; i < g.rows(); ++i) {
      REQUIRE(std::abs(g.row(i).sum()) < 1e-5);
      REQUIRE((g.row(i).array() < 0).count() == 1);
    }
  }
}

TEST_CASE("collect_hessians equals naive E[xx^T], Sketch A and Sketch B sums", "[demo][hessian]") {
  const fixture f;
  const auto hs = tiny_lm::collect_hessians(yaqa::cpu_backend{}, f.p, f.c, f.mc, f.hc,
                                            tiny_lm::clock_type::now(), true);
  const auto cap = f.capture();
  const yaqa::index len = f.hc.calibration.length;
  for (yaqa::index l = 0; l < f.mc.linear_count(); ++l) {
    INFO("layer " << l);
    const auto& batches = cap[std::size_t(l)];
    const yaqa::index n = batches[0].first.cols(), m = batches[0].second.cols();
    Eigen::MatrixXd xtx = Eigen::MatrixXd::Zero(n, n), bin = xtx;
    Eigen::MatrixXd bout = Eigen::MatrixXd::Zero(m, m);
    double tokens = 0, seqs = 0;
    for (const auto& [x, g] : batches) {
      const Eigen::MatrixXd xd = x.cast<double>(), gd = g.cast<double>();
      xtx += xd.transpose() * xd;
      tokens += double(x.rows());
      for (yaqa::index s = 0; s < x.rows() / len; ++s) {
        Eigen::MatrixXd gs = Eigen::MatrixXd::Zero(m, n);  // G_s = sum_t g_t x_t^T
        for (yaqa::index t = s * len; t < (s + 1) * len; ++t)
          gs += gd.row(t).transpose() * xd.row(t);
        bin += gs.transpose() * gs;
        bout += gs * gs.transpose();
        seqs += 1;
      }
    }
    REQUIRE(seqs == double(f.hc.calibration.sequences));
    xtx /= tokens;
    bin /= seqs;
    bout /= seqs;
    const auto& h = hs[std::size_t(l)];
    REQUIRE_THAT(Eigen::MatrixXd(h.xtx.cast<double>()), yaqa::test::IsClose(xtx, 1e-5));
    REQUIRE_THAT(Eigen::MatrixXd(h.b_in.cast<double>()), yaqa::test::IsClose(bin, 1e-5));
    REQUIRE_THAT(Eigen::MatrixXd(h.b_out.cast<double>()), yaqa::test::IsClose(bout, 1e-5));
    // Sketch A, 3 passes: H_in0 = E[xx^T]; H_out = E[(x^T H_in0 x) g g^T] / |H_in0|^2;
    // H_in = E[(g^T H_out g) x x^T] / |H_out|^2.
    Eigen::MatrixXd aout = Eigen::MatrixXd::Zero(m, m), ain = Eigen::MatrixXd::Zero(n, n);
    for (const auto& [x, g] : batches) {
      const Eigen::MatrixXd xd = x.cast<double>(), gd = g.cast<double>();
      for (yaqa::index t = 0; t < x.rows(); ++t) {
        const double w = xd.row(t) * xtx * xd.row(t).transpose();
        aout += w * gd.row(t).transpose() * gd.row(t);
      }
    }
    aout /= tokens * xtx.squaredNorm();
    for (const auto& [x, g] : batches) {
      const Eigen::MatrixXd xd = x.cast<double>(), gd = g.cast<double>();
      for (yaqa::index t = 0; t < x.rows(); ++t) {
        const double w = gd.row(t) * aout * gd.row(t).transpose();
        ain += w * xd.row(t).transpose() * xd.row(t);
      }
    }
    ain /= tokens * aout.squaredNorm();
    REQUIRE_THAT(Eigen::MatrixXd(h.a_out.cast<double>()), yaqa::test::IsClose(aout, 1e-4));
    REQUIRE_THAT(Eigen::MatrixXd(h.a_in.cast<double>()), yaqa::test::IsClose(ain, 1e-4));
  }
  // Without Sketch A: one pass, no A factors.
  fixture g;
  g.hc.sketch_a = false;
  const auto hb = tiny_lm::collect_hessians(yaqa::cpu_backend{}, g.p, g.c, g.mc, g.hc,
                                            tiny_lm::clock_type::now(), true);
  REQUIRE(hb[0].a_in.size() == 0);
  REQUIRE(hb[0].b_in == hs[0].b_in);
}

TEST_CASE("quantize_weights hands each method its Hessian", "[demo][hessian]") {
  const yaqa::index m = 48, n = 80;  // multiples of the 16 tile, not of 64
  const mat w = yaqa::test::random_weights<float>(m, n, 1);
  tiny_lm::layer_hessians h;
  h.xtx = yaqa::test::random_second_moment<float>(n, 3 * n, 2);
  h.b_in = h.xtx;
  h.b_out = mat::Identity(m, m);
  h.a_in = yaqa::test::random_spd<float>(n, 100.0, 3);
  h.a_out = yaqa::test::random_spd<float>(m, 100.0, 4);
  tiny_lm::quant_config qc;
  qc.group_size = 16;
  const yaqa::cpu_backend be{};
  auto q = [&](tiny_lm::method_id id, tiny_lm::format_id f = tiny_lm::format_id::int_grid, int bits = 3) {
    return tiny_lm::quantize_weights(be, {id, f, bits}, qc, w, h, 5);
  };
  // YAQA with H_out = I and H_in = E[xx^T] is LDLQ with the same tiles: identical weights.
  const auto ldlq = q(tiny_lm::method_id::ldlq), yb = q(tiny_lm::method_id::yaqa_b);
  REQUIRE_THAT(Eigen::MatrixXd(yb.weights.cast<double>()),
               yaqa::test::IsClose(ldlq.weights.cast<double>(), 1e-6));
  // ... while Sketch A's different factors give different weights.
  const auto ya = q(tiny_lm::method_id::yaqa_a);
  REQUIRE(yaqa::test::rel_frobenius(ya.weights, ldlq.weights) > 1e-3);
  // Feedback helps in the proxy the method minimizes; RTN without RHT differs from RTN+RHT.
  const auto rtn = q(tiny_lm::method_id::rtn), rht = q(tiny_lm::method_id::rtn_rht);
  REQUIRE(yaqa::test::rel_frobenius(rtn.weights, rht.weights) > 1e-3);
  REQUIRE(ldlq.relative_proxy < rht.relative_proxy);
  REQUIRE(q(tiny_lm::method_id::gptq).relative_proxy < rht.relative_proxy);
  const double own_a = tiny_lm::relative_kron_proxy(be, w, ya.weights, h.a_in, h.a_out);
  REQUIRE(own_a < tiny_lm::relative_kron_proxy(be, w, rht.weights, h.a_in, h.a_out));
  // E8P: 2 bits, 3-4 with RVQ; GPTQ cannot use it.
  REQUIRE(q(tiny_lm::method_id::yaqa_b, tiny_lm::format_id::e8p, 2).weights.rows() == m);
  REQUIRE(q(tiny_lm::method_id::ldlq, tiny_lm::format_id::e8p, 3).weights.rows() == m);
  REQUIRE(q(tiny_lm::method_id::rtn_rht, tiny_lm::format_id::e8p, 4).weights.rows() == m);
  REQUIRE_THROWS_WITH(q(tiny_lm::method_id::ldlq, tiny_lm::format_id::e8p, 5),
                      Catch::Contains("tiny_lm::quantize_weights") && Catch::Contains("bits"));
  REQUIRE_FALSE(tiny_lm::supported({tiny_lm::method_id::gptq, tiny_lm::format_id::e8p, 2}));
  // A method whose Hessian was not collected is an error naming the routine and the method.
  tiny_lm::layer_hessians none = h;
  none.a_in.resize(0, 0);
  REQUIRE_THROWS_WITH(tiny_lm::quantize_weights(be, {tiny_lm::method_id::yaqa_a}, qc, w, none, 5),
                      Catch::Contains("tiny_lm::quantize_weights") && Catch::Contains("YAQA-A"));
}
