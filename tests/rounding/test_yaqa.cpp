// YAQA two-sided rounding and one-sided LDLQ: orderings against the naive reference, the
// degenerate cases (H_out = I is LDLQ, H = I is RTN), the whitened-error identity, proxy
// ordering, determinism and bad input.
#include <catch2/catch.hpp>

#include <rounding/reference_rounding.hpp>
#include <rounding/toy_quantizers.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>
#include <yaqa/rounding/ldlq.hpp>
#include <yaqa/rounding/rtn.hpp>
#include <yaqa/rounding/yaqa.hpp>

using namespace yaqa;
using yaqa::test::naive_block_ldl_L;

TEMPLATE_TEST_CASE("YAQA row sweep and wavefront equal the naive reference ordering", "[rounding][yaqa]",
                   float, double) {
  using T = TestType;
  struct cfg { yaqa::index m, n, tdx, tdy; };
  // sizes not multiples of the 128 super-blocks; non-square tiles
  for (auto c : {cfg{80, 144, 16, 16}, cfg{272, 208, 16, 16}, cfg{56, 40, 8, 4}, cfg{36, 150, 12, 10}}) {
    auto p = test::make_kronecker_layer<T>(c.m, c.n, c.tdx, c.tdy, 100 + c.m);
    test::uniform_grid<T> q;
    q.step = T(0.25);
    const auto ref = test::reference_yaqa(q, p.w, p.l_in, p.l_out, c.tdx, c.tdy);
    yaqa_options o;
    o.tile_rows = c.tdx;
    o.tile_cols = c.tdy;
    o.ordering = yaqa_ordering::row_sweep;
    const auto rs = yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), o);
    o.ordering = yaqa_ordering::wavefront;
    const auto wf = yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), o);
    INFO("m=" << c.m << " n=" << c.n << " tile " << c.tdx << "x" << c.tdy);
    if constexpr (std::is_same_v<T, double>) {
      CHECK(rs.codes == ref.codes);  // bit for bit
      CHECK(wf.codes == ref.codes);
      CHECK(rs.weights == ref.weights);
      CHECK(wf.weights == ref.weights);
    } else {
      // float: summation order differs from the reference, so a target within ~1e-6 of a
      // rounding boundary may flip; that must stay rare.
      CHECK(test::mismatch_fraction(rs.codes, ref.codes) < 2e-3);
      CHECK(test::mismatch_fraction(wf.codes, ref.codes) < 2e-3);
    }
  }
}

TEMPLATE_TEST_CASE("YAQA orderings agree with vector and grouped quantizers", "[rounding][yaqa]", float, double) {
  using T = TestType;
  auto p = test::make_kronecker_layer<T>(64, 96, 16, 16, 7);
  test::d2_pairs<T> vq;
  vq.step = T(0.3);
  const auto ref = test::reference_yaqa(vq, p.w, p.l_in, p.l_out, 16, 16);
  yaqa_options o;
  o.ordering = yaqa_ordering::row_sweep;
  const auto rs = yaqa_round(vq, view(p.w), view(p.l_in), view(p.l_out), o);
  CHECK(rs.codes.rows() == 64);
  CHECK(rs.codes.cols() == 48);
  CHECK(test::mismatch_fraction(rs.codes, ref.codes) <= (std::is_same_v<T, double> ? 0.0 : 2e-3));
  for (yaqa::index group : {8, 32}) {  // groups narrower and wider than the 16-column tiles
    test::row_scaled_grid<T> gq;
    gq.group = group;
    const auto gref = test::reference_yaqa(gq, p.w, p.l_in, p.l_out, 16, 16);
    o.ordering = yaqa_ordering::wavefront;
    const auto wf = yaqa_round(gq, view(p.w), view(p.l_in), view(p.l_out), o);
    REQUIRE(wf.params.size() == std::size_t(96 / group));
    CHECK(test::mismatch_fraction(wf.codes, gref.codes) <= (std::is_same_v<T, double> ? 0.0 : 2e-3));
  }
}

TEMPLATE_TEST_CASE("YAQA with H_out = I is LDLQ bit for bit, and LDLQ with H = I is RTN", "[rounding][yaqa][ldlq]",
                   float, double) {
  using T = TestType;
  for (auto [m, n] : {std::pair<yaqa::index, yaqa::index>{80, 144}, {272, 208}}) {
    auto p = test::make_kronecker_layer<T>(m, n, 16, 16, 11 + m);
    const matrix<T> eye_out = matrix<T>::Identity(m, m);
    test::row_scaled_grid<T> q;
    q.group = 16;
    for (auto ord : {yaqa_ordering::row_sweep, yaqa_ordering::wavefront}) {
      yaqa_options o;
      o.ordering = ord;
      const auto y = yaqa_round(q, view(p.w), view(p.l_in), view(eye_out), o);
      const auto l = ldlq(q, view(p.w), view(p.l_in), 16);
      CHECK(y.codes == l.codes);
      CHECK(y.weights == l.weights);
    }
    const matrix<T> eye_in = matrix<T>::Identity(n, n);
    const auto l = ldlq(q, view(p.w), view(eye_in), 16);
    const auto r = rtn(q, view(p.w));
    CHECK(l.codes == r.codes);
    CHECK(l.weights == r.weights);
  }
}

TEST_CASE("YAQA's whitened error L_out^T dW L_in is the per-tile quantizer error", "[rounding][yaqa]") {
  const yaqa::index m = 96, n = 80, td = 16;
  auto p = test::make_kronecker_layer<double>(m, n, td, td, 5);
  test::uniform_grid<double> q;
  q.step = 0.5;
  const auto r = yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out));
  const Eigen::MatrixXd dw = p.w - r.weights;
  const Eigen::MatrixXd f = p.l_out.transpose() * dw * p.l_in;  // full unit L's
  // F = T - Q(T) with T the target of each tile: T = What + F must round back to What, and the
  // error of a round-to-grid quantizer is at most half a step.
  const Eigen::MatrixXd t = r.weights + f;
  for (yaqa::index j = 0; j < n; ++j)
    for (yaqa::index i = 0; i < m; ++i) {
      REQUIRE(std::abs(f(i, j)) <= 0.25 + 1e-9);
      REQUIRE(std::nearbyint(t(i, j) / 0.5) * 0.5 == Approx(r.weights(i, j)).margin(1e-12));
    }
  // and the proxy decomposes as sum_{a,k} tr(F D_I F^T D_O)
  Eigen::MatrixXd d_in, d_out;
  naive_block_ldl_L(p.h_in, td, &d_in);
  naive_block_ldl_L(p.h_out, td, &d_out);
  CHECK(test::proxy(dw, p.h_in, p.h_out) == Approx((f * d_in * f.transpose() * d_out).trace()).epsilon(1e-9));
}

TEMPLATE_TEST_CASE("averaged over seeds, proxy(YAQA) < proxy(LDLQ) < proxy(RTN)", "[rounding][yaqa]", float, double) {
  using T = TestType;
  const yaqa::index m = 64, n = 96;
  double s_rtn = 0, s_ldlq = 0, s_yaqa = 0;
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    auto p = test::make_kronecker_layer<T>(m, n, 16, 16, 1000 + seed);
    test::row_scaled_grid<T> q;
    const auto r = rtn(q, view(p.w));
    const auto l = ldlq(q, view(p.w), view(p.l_in), 16);
    const auto y = yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out));
    const double base = test::proxy(p.w, p.h_in, p.h_out);
    s_rtn += test::proxy(matrix<T>(p.w - r.weights), p.h_in, p.h_out) / base;
    s_ldlq += test::proxy(matrix<T>(p.w - l.weights), p.h_in, p.h_out) / base;
    s_yaqa += test::proxy(matrix<T>(p.w - y.weights), p.h_in, p.h_out) / base;
  }
  INFO("relative proxy: RTN " << s_rtn / 5 << ", LDLQ " << s_ldlq / 5 << ", YAQA " << s_yaqa / 5);
  CHECK(s_yaqa < s_ldlq);
  CHECK(s_ldlq < s_rtn);
}

TEST_CASE("rounding is bit-identical for 1, 2 and 3 threads", "[rounding][determinism]") {
  auto p = test::make_kronecker_layer<float>(272, 208, 16, 16, 3);
  test::row_scaled_grid<float> q;
  const auto ref = yaqa_round(cpu_backend{1}, q, view(p.w), view(p.l_in), view(p.l_out));
  const auto ref_wf = yaqa_round(cpu_backend{1}, q, view(p.w), view(p.l_in), view(p.l_out),
                                 yaqa_options{16, 16, yaqa_ordering::wavefront});
  const auto ref_l = ldlq(cpu_backend{1}, q, view(p.w), view(p.l_in), 16);
  for (int t : {2, 3}) {
    CHECK(yaqa_round(cpu_backend{t}, q, view(p.w), view(p.l_in), view(p.l_out)).weights == ref.weights);
    CHECK(yaqa_round(cpu_backend{t}, q, view(p.w), view(p.l_in), view(p.l_out),
                     yaqa_options{16, 16, yaqa_ordering::wavefront}).weights == ref_wf.weights);
    CHECK(ldlq(cpu_backend{t}, q, view(p.w), view(p.l_in), 16).weights == ref_l.weights);
  }
}

TEST_CASE("rounding rejects bad input with messages naming the argument", "[rounding][errors]") {
  auto p = test::make_kronecker_layer<double>(32, 48, 16, 16, 9);
  test::uniform_grid<double> q;
  auto msg_of = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const yaqa::error& e) {
      return e.what();
    }
    return "no exception";
  };
  matrix<double> bad = p.w;
  bad(3, 4) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(yaqa_round(q, view(bad), view(p.l_in), view(p.l_out)), non_finite_error);
  CHECK(msg_of([&] { ldlq(q, view(bad), view(p.l_in), 16); }).find("'W'") != std::string::npos);
  // H/L of the wrong size
  const std::string s = msg_of([&] { yaqa_round(q, view(p.w), view(p.l_out), view(p.l_out)); });
  CHECK(s.find("L_in") != std::string::npos);
  CHECK(s.find("48x48") != std::string::npos);
  CHECK_THROWS_AS(yaqa_round(q, view(p.w), view(p.l_in), view(p.l_in)), shape_error);
  // tile sizes that do not divide the dims: the message names both numbers
  const std::string t = msg_of([&] { yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), yaqa_options{16, 20}); });
  CHECK(t.find("td_y = 20") != std::string::npos);
  CHECK(t.find("n = 48") != std::string::npos);
  CHECK_THROWS_AS(yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), yaqa_options{12, 16}), shape_error);
  CHECK_THROWS_AS(ldlq(q, view(p.w), view(p.l_in), 0), invalid_argument);
  // a vector quantizer needs tiles that are multiples of its unit
  test::d2_pairs<double> vq;
  CHECK_THROWS_AS(ldlq(vq, view(p.w), view(matrix<double>(matrix<double>::Identity(48, 48))), 3), yaqa::error);
}
