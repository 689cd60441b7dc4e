// The layer driver: pipeline equivalences, incoherence round trip, report contents, fallbacks,
// validation and determinism.
#include <catch2/catch.hpp>

#include <layer_instances.hpp>  // quantize_layer<int_grid<float>> etc.: compiled once, in instances/
#include <rounding/reference_rounding.hpp>
#include <rounding/toy_quantizers.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>
#include <yaqa/rounding/layer.hpp>

using namespace yaqa;

namespace {
template <class T>
struct layer_problem {
  matrix<T> w, h_in, h_out;
};
template <class T>
layer_problem<T> make_layer(yaqa::index m, yaqa::index n, std::uint64_t seed) {
  layer_problem<T> p;
  p.w = test::random_weights<T>(m, n, seed);
  p.h_in = (test::random_second_moment<double>(n, 2 * n, seed + 1) * 3.0).cast<T>();  // not normalized
  p.h_out = (test::random_spd<double>(m, 1e3, seed + 2) * 0.01).cast<T>();
  return p;
}
}  // namespace

TEMPLATE_TEST_CASE("quantize_layer without incoherence is the documented pipeline", "[rounding][layer]", float, double) {
  using T = TestType;
  auto p = make_layer<T>(48, 80, 1);
  test::row_scaled_grid<T> q;
  rounding_options o;
  o.incoherence = false;
  o.report_baseline = false;
  // manual pipeline
  matrix<T> hin = p.h_in, hout = p.h_out;
  normalize_factor(view(hin), "H_in");
  normalize_factor(view(hout), "H_out");
  const auto li = damped_block_ldl(view(std::as_const(hin)), 16);
  const auto lo = damped_block_ldl(view(std::as_const(hout)), 16);
  REQUIRE(li);
  REQUIRE(lo);
  const auto manual = yaqa_round(q, view(p.w), view(std::as_const(li->L)), view(std::as_const(lo->L)));
  const auto got = quantize_layer(q, view(p.w), view(p.h_in), view(p.h_out), o);
  CHECK(got.weights == manual.weights);
  CHECK(got.codes == manual.codes);
  CHECK_FALSE(got.rotated);
  CHECK(got.report.feedback);
  CHECK(got.report.damp_in == Approx(o.damping.sigma));  // normalized: mean diagonal 1
  CHECK(got.report.attempts_in == 1);
  CHECK(got.report.in.mean_diagonal == Approx(p.h_in.diagonal().template cast<double>().mean()).epsilon(1e-6));
  CHECK(std::isnan(got.report.baseline_relative_proxy));
  o.algorithm = method::rtn;
  CHECK(quantize_layer(q, view(p.w), view(p.h_in), view(p.h_out), o).weights == rtn(q, view(p.w)).weights);
  o.algorithm = method::ldlq;
  CHECK(quantize_layer(q, view(p.w), view(p.h_in), {}, o).weights ==
        ldlq(q, view(p.w), view(std::as_const(li->L)), 16).weights);
}

TEMPLATE_TEST_CASE("the incoherence transform is undone exactly and reported", "[rounding][layer]", float, double) {
  using T = TestType;
  auto p = make_layer<T>(48, 80, 2);
  test::uniform_grid<T> fine;
  fine.step = T(1e-30);  // a quantizer that changes nothing (up to rounding of the transform)
  rounding_options o;
  for (auto a : {method::rtn, method::gptq, method::ldlq, method::yaqa}) {
    o.algorithm = a;
    o.seed = 7;
    const auto r = quantize_layer(fine, view(p.w), view(p.h_in), view(p.h_out), o);
    CHECK(r.rotated);
    CHECK(r.signs_in.size() == 80);
    CHECK(r.signs_out.size() == 48);
    CHECK(test::rel_frobenius(r.weights, p.w) < (sizeof(T) == 4 ? 1e-5 : 1e-12));
  }
  // the seed decides the signs, deterministically
  const auto a = quantize_layer(fine, view(p.w), view(p.h_in), view(p.h_out), o);
  o.seed = 8;
  const auto b = quantize_layer(fine, view(p.w), view(p.h_in), view(p.h_out), o);
  CHECK(a.signs_in != b.signs_in);
  o.seed = 7;
  CHECK(quantize_layer(fine, view(p.w), view(p.h_in), view(p.h_out), o).signs_in == a.signs_in);
}

TEST_CASE("quantize_layer's report: YAQA beats LDLQ and RTN on its proxy", "[rounding][layer]") {
  double y = 0, l = 0, base = 0;
  for (std::uint64_t s = 1; s <= 3; ++s) {
    auto p = make_layer<float>(64, 96, 10 * s);
    test::row_scaled_grid<float> q;
    rounding_options o;
    o.seed = s;
    const auto ry = quantize_layer(q, view(p.w), view(p.h_in), view(p.h_out), o);
    o.algorithm = method::ldlq;
    const auto rl = quantize_layer(q, view(p.w), view(p.h_in), view(p.h_out), o);
    y += ry.report.relative_proxy;
    l += rl.report.relative_proxy;
    base += ry.report.baseline_relative_proxy;
    CHECK(ry.report.relative_proxy_one_sided > 0);
    REQUIRE(ry.report.times.size() == 6);
    CHECK(ry.report.times[0].stage == "normalize");
    CHECK(ry.report.seconds > 0);
  }
  INFO("relative proxy: RTN " << base / 3 << ", LDLQ " << l / 3 << ", YAQA " << y / 3);
  CHECK(y < l);
  CHECK(l < base);
}

TEST_CASE("quantize_layer degrades gracefully on hopeless or empty factors", "[rounding][layer]") {
  auto p = make_layer<double>(32, 48, 3);
  test::row_scaled_grid<double> q;
  rounding_options o;
  o.incoherence = false;
  o.damping.max_steps = 2;
  o.damping.floor_steps = 0;
  // H_in strongly indefinite: every damp fails -> rounded without feedback, reported
  matrix<double> bad = matrix<double>::Identity(48, 48);
  bad(10, 10) = -40;
  const auto r = quantize_layer(q, view(p.w), view(std::as_const(bad)), view(p.h_out), o);
  CHECK_FALSE(r.report.feedback);
  CHECK(r.report.fallback_reason.find("H_in") != std::string::npos);
  CHECK(r.weights == rtn(q, view(p.w)).weights);
  // H_out all zero (a layer that never received gradient): identity, reported; = LDLQ
  const matrix<double> zero = matrix<double>::Zero(32, 32);
  o = rounding_options{};
  o.incoherence = false;
  const auto z = quantize_layer(q, view(p.w), view(p.h_in), view(zero), o);
  CHECK(z.report.out.replaced_by_identity);
  o.algorithm = method::ldlq;
  CHECK(z.weights == quantize_layer(q, view(p.w), view(p.h_in), {}, o).weights);
  // a dead input column is zeroed
  matrix<double> hd = p.h_in;
  hd.row(4).setZero();
  hd.col(4).setZero();
  o.algorithm = method::yaqa;
  const auto d = quantize_layer(q, view(p.w), view(std::as_const(hd)), view(p.h_out), o);
  CHECK(d.report.in.dead == std::vector<yaqa::index>{4});
  CHECK((d.weights.col(4).array() == 0).all());
}

TEST_CASE("quantize_layer validates options and inputs up front", "[rounding][layer][errors]") {
  auto p = make_layer<double>(32, 48, 4);
  test::row_scaled_grid<double> q;
  rounding_options o;
  o.tile_cols = 20;
  try {
    quantize_layer(q, view(p.w), view(p.h_in), view(p.h_out), o);
    FAIL("expected shape_error");
  } catch (const shape_error& e) {
    const std::string s = e.what();
    CHECK(s.find("16x20") != std::string::npos);
    CHECK(s.find("32x48") != std::string::npos);
  }
  o = rounding_options{};
  CHECK_THROWS_AS(quantize_layer(q, view(p.w), view(p.h_out), view(p.h_out), o), shape_error);
  CHECK_THROWS_AS(quantize_layer(q, view(p.w), view(p.h_in), view(p.h_in), o), shape_error);
  matrix<double> nan_w = p.w;
  nan_w(0, 0) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(quantize_layer(q, view(nan_w), view(p.h_in), view(p.h_out), o), non_finite_error);
  matrix<double> nan_h = p.h_in;
  nan_h(2, 3) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(quantize_layer(q, view(p.w), view(std::as_const(nan_h)), view(p.h_out), o),
                    Catch::Contains("H_in"));
  o.damping.sigma = -1;
  CHECK_THROWS_AS(quantize_layer(q, view(p.w), view(p.h_in), view(p.h_out), o), invalid_argument);
  o = rounding_options{};
  o.algorithm = method::gptq;
  test::d2_pairs<double> vq;
  CHECK_THROWS_WITH(quantize_layer(vq, view(p.w), view(p.h_in), {}, o), Catch::Contains("scalar quantizer"));
}

TEST_CASE("quantize_layer is bit-identical across thread counts", "[rounding][layer][determinism]") {
  auto p = make_layer<float>(96, 160, 5);
  test::row_scaled_grid<float> q;
  rounding_options o;
  o.seed = 3;
  const auto ref = quantize_layer(cpu_backend{1}, q, view(p.w), view(p.h_in), view(p.h_out), o);
  for (int t : {2, 4}) {
    const auto r = quantize_layer(cpu_backend{t}, q, view(p.w), view(p.h_in), view(p.h_out), o);
    CHECK(r.weights == ref.weights);
    CHECK(r.codes == ref.codes);
    CHECK(r.report.relative_proxy == ref.report.relative_proxy);
  }
}

TEST_CASE("quantize_layer's cd_sweeps lowers relative_proxy", "[rounding][layer][cd]") {
  const auto p = test::make_kronecker_layer<float>(64, 96, 16, 16, 17);
  test::row_scaled_grid<float> q;
  q.group = 32;
  struct run {
    method a;
    bool with_h_out;
  };
  for (run c : {run{method::yaqa, true}, run{method::ldlq, false}, run{method::gptq, false},
                run{method::ldlq, true}, run{method::rtn, true}}) {
    INFO(method_name(c.a) << (c.with_h_out ? " with H_out" : " without H_out"));
    const auto h_out = c.with_h_out ? view(p.h_out) : matrix_view<const float>{};
    rounding_options o;
    o.algorithm = c.a;
    o.seed = 5;
    const auto plain = quantize_layer(q, view(p.w), view(p.h_in), h_out, o);
    o.cd_sweeps = 3;
    const auto cd = quantize_layer(q, view(p.w), view(p.h_in), h_out, o);
    const auto& r = cd.report;
    INFO("relative proxy " << plain.report.relative_proxy << " -> " << r.relative_proxy << " (CD "
                           << r.cd_relative_proxy_before << " -> " << r.cd_relative_proxy_after << ", "
                           << r.cd_units_changed << " units in " << r.cd_sweeps_run << " sweeps)");
    CHECK(r.relative_proxy < plain.report.relative_proxy);
    CHECK(r.cd_sweeps_run >= 1);
    CHECK(r.cd_sweeps_run <= 3);
    CHECK(r.cd_units_changed > 0);
    // CD's own figures are the reported objective before and after
    CHECK(r.cd_relative_proxy_before == Approx(plain.report.relative_proxy).epsilon(1e-4));
    CHECK(r.cd_relative_proxy_after == Approx(r.relative_proxy).epsilon(1e-4));
    if (!c.with_h_out) CHECK(r.relative_proxy_one_sided < plain.report.relative_proxy_one_sided);
    REQUIRE(r.times.size() == 7);
    CHECK(r.times[3].stage == "round");
    CHECK(r.times[4].stage == "cd");
    CHECK(std::isnan(plain.report.cd_relative_proxy_before));
    CHECK(plain.report.cd_sweeps_run == 0);
    CHECK(cd.codes != plain.codes);
  }
  rounding_options bad;
  bad.cd_sweeps = -1;
  CHECK_THROWS_WITH(quantize_layer(q, view(p.w), view(p.h_in), view(p.h_out), bad),
                    Catch::Contains("'cd_sweeps'"));
}

namespace {
//! The report's two relative proxies computed naively in double in the original basis (both are
//! invariant under the orthogonal transforms): tr(dW H_d dW^T H_o,d) / tr(W H_d W^T H_o,d).
template <class T>
std::pair<double, double> naive_report(const layer_problem<T>& p, bool with_out, const matrix<T>& what,
                                       const layer_report& rep) {
  const yaqa::index m = p.w.rows();
  matrix<double> hin = p.h_in.template cast<double>();
  matrix<double> hout = matrix<double>::Identity(m, m);
  normalize_factor(view(hin), "H_in");
  if (with_out) {
    hout = p.h_out.template cast<double>();
    normalize_factor(view(hout), "H_out");
  }
  hin.diagonal().array() += rep.damp_in;
  if (rep.algorithm == method::yaqa) hout.diagonal().array() += rep.damp_out;
  const matrix<double> w = p.w.template cast<double>();
  const matrix<double> dw = w - what.template cast<double>();
  const double two = (dw * hin * dw.transpose() * hout).trace() / (w * hin * w.transpose() * hout).trace();
  const double one = (dw * hin * dw.transpose()).trace() / (w * hin * w.transpose()).trace();
  return {two, one};
}
}  // namespace

TEMPLATE_TEST_CASE("quantize_layer's report (residual, GPTQ loss and Gram routes) equals the exact traces",
                   "[rounding][layer][report]", float, double) {
  using T = TestType;
  const auto p = make_layer<T>(48, 80, 21);
  int_grid<T> q(int_grid_options{.bits = 3});
  // float: the products run in float (as the two-GEMM report did); double: rounding noise only
  const double tol = sizeof(T) == 4 ? 2e-4 : 1e-9;
  for (auto a : {method::rtn, method::gptq, method::ldlq, method::yaqa})
    for (bool with_out : {true, false})
      for (bool rht : {false, true})
        for (int variant = 0; variant < 4; ++variant) {  // plain, act-order/CD, refined grid, W' handover
          if (variant >= 2 && a == method::rtn) continue;
          rounding_options o;
          o.algorithm = a;
          o.incoherence = rht;
          o.seed = 5;
          o.report_baseline = true;
          if (variant == 1) {
            o.act_order = a == method::gptq;
            o.cd_sweeps = a == method::gptq ? 0 : 1;
          }
          if (variant >= 2) {
            o.refine.method = refine_method::lsi;
            o.refine.lwc = true;
            o.refine.steps = 3;
            if (variant == 3) o.refine.handover = refine_handover::weights;
          }
          const auto r = quantize_layer(q, view(p.w), view(p.h_in), with_out ? view(p.h_out) : matrix_view<const T>{}, o);
          const auto [two, one] = naive_report(p, with_out, r.weights, r.report);
          INFO(method_name(a) << " H_out " << with_out << " rht " << rht << " variant " << variant);
          REQUIRE(r.report.feedback);
          CHECK(r.report.relative_proxy == Approx(two).epsilon(tol));
          CHECK(r.report.relative_proxy_one_sided == Approx(one).epsilon(tol));
          // the baseline: RTN's weights (same transform, same grid) under this method's damped factors
          if (variant == 0) {
            rounding_options ro = o;
            ro.algorithm = method::rtn;
            const auto rr = quantize_layer(q, view(p.w), view(p.h_in), with_out ? view(p.h_out) : matrix_view<const T>{}, ro);
            CHECK(r.report.baseline_relative_proxy == Approx(naive_report(p, with_out, rr.weights, r.report).first).epsilon(tol));
            if (a == method::rtn) CHECK(r.report.baseline_relative_proxy == r.report.relative_proxy);
            if (a != method::rtn) CHECK(r.report.baseline_relative_proxy > r.report.relative_proxy);
          }
        }
}

TEMPLATE_TEST_CASE("quantize_layer's report without feedback (a hopeless H_out or H_in) equals the exact traces",
                   "[rounding][layer][report]", float, double) {
  using T = TestType;
  auto p = make_layer<T>(48, 80, 31);
  int_grid<T> q(int_grid_options{.bits = 3});
  const double tol = sizeof(T) == 4 ? 2e-4 : 1e-9;
  for (bool bad_out : {true, false}) {
    layer_problem<T> b = p;
    matrix<T>& h = bad_out ? b.h_out : b.h_in;
    // strongly indefinite: every damp fails
    h = (-h).eval();
    h.diagonal() = h.diagonal().cwiseAbs();
    h(1, 1) = T(1e-3) * h(1, 1);
    h(1, 0) = h(0, 1) = T(20) * h(0, 0);
    rounding_options o;
    o.incoherence = false;
    const auto r = quantize_layer(q, view(b.w), view(b.h_in), view(b.h_out), o);
    INFO("bad " << (bad_out ? "H_out" : "H_in") << ": " << r.report.fallback_reason);
    REQUIRE_FALSE(r.report.feedback);
    CHECK(r.weights == rtn(q, view(b.w)).weights);
    const auto [two, one] = naive_report(b, true, r.weights, r.report);
    CHECK(r.report.relative_proxy == Approx(two).epsilon(tol));
    CHECK(r.report.relative_proxy_one_sided == Approx(one).epsilon(tol));
  }
}
