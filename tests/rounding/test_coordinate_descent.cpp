// Coordinate descent on the Kronecker proxy: against a naive reference (unit by unit, gradient
// and objective recomputed from scratch), monotonicity from every start with scalar, 1x8 and
// 16x16 units, the H_out = I case (one-sided QuantEase), 0 sweeps, determinism and errors.
#include <catch2/catch.hpp>

#include <Eigen/Dense>

#include <rounding/reference_rounding.hpp>
#include <rounding/toy_quantizers.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/e8p.hpp>
#include <yaqa/quantizers/nonuniform_grid.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/rounding/coordinate_descent.hpp>
#include <yaqa/rounding/gptq.hpp>
#include <yaqa/rounding/ldlq.hpp>
#include <yaqa/rounding/rtn.hpp>
#include <yaqa/rounding/yaqa.hpp>

using namespace yaqa;

namespace {

using Eigen::MatrixXd;

//! tr(E H_in E^T H_out) from scratch, in double.
double objective(const MatrixXd& e, const MatrixXd& hin, const MatrixXd& hout) {
  return (e * hin).cwiseProduct(hout * e).sum();
}

//! The naive reference, written from the definition: units visited in the documented order
//! (tiles br x bw, strips left to right, top to bottom in a strip, units column by column in a
//! tile); for each unit the gradient block R_U = H_out[I, :] E H_in[:, J] and the objective after
//! the proposal are recomputed from scratch; the proposal is Q(Ŵ_U - A^+ R_U B^+) and it is kept
//! when the objective drops by more than the documented margin. Returns units changed per sweep.
template <class Q>
std::vector<yaqa::index> naive_cd(const Q& q, const matrix<typename Q::scalar_type>& w, const MatrixXd& hin,
                                  const MatrixXd& hout, rounded<Q>& r, int sweeps, yaqa::index br,
                                  yaqa::index bw) {
  using T = typename Q::scalar_type;
  constexpr yaqa::index ur = Q::unit_rows, uc = Q::unit_cols;
  const yaqa::index m = w.rows(), n = w.cols(), g = q.group_cols(n);
  const MatrixXd wd = w.template cast<double>();
  std::vector<yaqa::index> changed;
  // e = Ŵ - W and its objective, kept equal to what a from-scratch computation gives: a
  // proposal rewrites its block as (rec - W) elementwise, and a rejection restores it.
  MatrixXd e = r.weights.template cast<double>() - wd;
  double before = objective(e, hin, hout);
  for (int s = 0; s < sweeps; ++s) {
    yaqa::index count = 0;
    for (yaqa::index s0 = 0; s0 < n; s0 += bw)
      for (yaqa::index i0 = 0; i0 < m; i0 += br)
        for (yaqa::index j = s0; j < std::min(n, s0 + bw); j += uc)
          for (yaqa::index i = i0; i < std::min(m, i0 + br); i += ur) {
            const MatrixXd ru = hout.middleRows(i, ur) * e * hin.middleCols(j, uc);
            const MatrixXd a = hout.block(i, i, ur, ur), b = hin.block(j, j, uc, uc);
            const MatrixXd step = -(a.completeOrthogonalDecomposition().pseudoInverse() * ru *
                                    b.completeOrthogonalDecomposition().pseudoInverse());
            matrix<T> target = (r.weights.block(i, j, ur, uc).template cast<double>() + step).template cast<T>();
            matrix<T> rec(ur, uc);
            matrix<typename Q::code_type> code(1, 1);
            q.quantize(view(std::as_const(target)), r.params[static_cast<std::size_t>(r.group_of(j, g))], i,
                       view(rec), view(code));
            const MatrixXd delta = rec.template cast<double>() - r.weights.block(i, j, ur, uc).template cast<double>();
            if ((delta.array() == 0).all()) continue;
            const MatrixXd kept = e.block(i, j, ur, uc);
            e.block(i, j, ur, uc) = rec.template cast<double>() - wd.block(i, j, ur, uc);
            const double after = objective(e, hin, hout);
            const double lin = 2 * delta.cwiseProduct(ru).sum(), quad = delta.cwiseProduct(a * delta * b).sum();
            if (after - before < -1e-10 * (std::abs(lin) + std::abs(quad))) {
              r.weights.block(i, j, ur, uc) = rec;
              r.codes(i / ur, j / uc) = code(0, 0);
              before = after;
              ++count;
            } else {
              e.block(i, j, ur, uc) = kept;
            }
          }
    changed.push_back(count);
    if (count == 0) break;
  }
  return changed;
}

//! A start far from optimal: RTN of W + noise (params fitted on the noisy W). The first sweep
//! then changes most units, so the tiles take the dense (GEMM) update path, not the sparse one.
template <class Q>
rounded<Q> noisy_start(const Q& q, const matrix<typename Q::scalar_type>& w, std::uint64_t seed) {
  using T = typename Q::scalar_type;
  const matrix<T> noisy = w + test::random_matrix<T>(w.rows(), w.cols(), seed, 0.5 * std::sqrt(w.squaredNorm() / double(w.size())));
  return rtn(q, view(noisy));
}

template <class T>
MatrixXd dbl(const matrix<T>& a) {
  return a.template cast<double>();
}

template <class Q>
double proxy_of(const rounded<Q>& r, const test::kronecker_layer<typename Q::scalar_type>& p, bool two_sided = true) {
  const MatrixXd hout = two_sided ? dbl(p.h_out) : MatrixXd::Identity(p.w.rows(), p.w.rows());
  return objective(dbl(r.weights) - dbl(p.w), dbl(p.h_in), hout);
}

//! weights == the quantizer's reconstruction of codes, group by group (library quantizers).
template <class Q>
bool weights_match_codes(const Q& q, const rounded<Q>& r) {
  const yaqa::index n = r.weights.cols(), g = q.group_cols(n), uc = Q::unit_cols;
  for (yaqa::index c = 0; c < n; c += (r.group_index.empty() ? g : uc)) {
    const yaqa::index wdt = r.group_index.empty() ? g : uc;
    const auto codes = view(r.codes).block(0, c / uc, r.codes.rows(), wdt / uc);
    const auto rec = q.reconstruct(codes, r.params[static_cast<std::size_t>(r.group_of(c, g))], 0);
    if (rec != r.weights.middleCols(c, wdt)) return false;
  }
  return true;
}

//! Runs `sweeps` single-sweep calls and checks monotonicity against the proxy recomputed from
//! scratch, and the report against it. Returns the proxy after each call (index 0: start).
template <class Q>
std::vector<double> check_monotone(const Q& q, const test::kronecker_layer<typename Q::scalar_type>& p,
                                   rounded<Q> r, const std::string& name, bool strict, cd_options o = {}) {
  INFO(name);
  std::vector<double> trace{proxy_of(r, p)};
  for (int s = 0; s < 3; ++s) {
    o.sweeps = 1;
    const cd_report rep = coordinate_descent(q, view(p.w), view(p.h_in), view(p.h_out), r, o);
    const double now = proxy_of(r, p);
    REQUIRE(rep.sweeps_run() == 1);
    CHECK(now <= trace.back());
    CHECK(rep.sweeps[0].proxy_after <= rep.sweeps[0].proxy_before);
    CHECK(rep.sweeps[0].proxy_before == Approx(trace.back()).epsilon(1e-9));
    CHECK(rep.sweeps[0].proxy_after == Approx(now).epsilon(1e-9));
    if (s == 0 && strict) {
      CHECK(now < trace.back());
      CHECK(rep.units_changed() > 0);
    }
    trace.push_back(now);
  }
  return trace;
}

}  // namespace

TEMPLATE_TEST_CASE("coordinate_descent matches the naive reference for scalar units", "[rounding][cd]", float,
                   double) {
  using T = TestType;
  struct blocks {
    yaqa::index br, bw;
  };
  for (blocks bl : {blocks{16, 16}, blocks{8, 24}, blocks{64, 64}}) {
    INFO("blocks " << bl.br << "x" << bl.bw);
    const cd_options o{.sweeps = 2, .block_rows = bl.br, .block_cols = bl.bw};
    {  // int grid, groups of 12 columns (n = 60), two-sided
      const auto p = test::make_kronecker_layer<T>(37, 60, 1, 12, 11);
      const int_grid<T> q(int_grid_options{.bits = 3, .group_size = 12});
      auto fast = rtn(q, view(p.w)), slow = fast;
      const cd_report rep = coordinate_descent(q, view(p.w), view(p.h_in), view(p.h_out), fast, o);
      const auto counts = naive_cd(q, p.w, dbl(p.h_in), dbl(p.h_out), slow, 2, bl.br, bl.bw);
      CHECK(fast.codes == slow.codes);
      CHECK(fast.weights == slow.weights);
      REQUIRE(static_cast<std::size_t>(rep.sweeps_run()) == counts.size());
      for (std::size_t s = 0; s < counts.size(); ++s) CHECK(rep.sweeps[s].units_changed == counts[s]);
      CHECK(counts[0] > 0);
      CHECK(weights_match_codes(q, fast));
    }
    {  // the same from a noisy start: most tiles take the dense path
      const auto p = test::make_kronecker_layer<T>(37, 60, 1, 12, 13);
      const int_grid<T> q(int_grid_options{.bits = 3, .group_size = 12});
      auto fast = noisy_start(q, p.w, 14), slow = fast;
      coordinate_descent(q, view(p.w), view(p.h_in), view(p.h_out), fast, o);
      const auto counts = naive_cd(q, p.w, dbl(p.h_in), dbl(p.h_out), slow, 2, bl.br, bl.bw);
      CHECK(counts[0] > 37 * 60 / 3);
      CHECK(fast.codes == slow.codes);
      CHECK(fast.weights == slow.weights);
    }
    {  // Lloyd-Max 2-bit, 37 x 53, two-sided
      const auto p = test::make_kronecker_layer<T>(37, 53, 1, 1, 12);
      const lloyd_max_grid<T> q(lloyd_max_options{.bits = 2});
      auto fast = rtn(q, view(p.w)), slow = fast;
      coordinate_descent(q, view(p.w), view(p.h_in), view(p.h_out), fast, o);
      naive_cd(q, p.w, dbl(p.h_in), dbl(p.h_out), slow, 2, bl.br, bl.bw);
      CHECK(fast.codes == slow.codes);
      CHECK(fast.weights == slow.weights);
      CHECK(weights_match_codes(q, fast));
    }
  }
}

TEMPLATE_TEST_CASE("coordinate_descent matches the naive reference for 1x8 and 16x16 units", "[rounding][cd]",
                   float, double) {
  using T = TestType;
  {
    const auto p = test::make_kronecker_layer<T>(24, 40, 8, 8, 21);
    const e8p<T> q;
    auto fast = rtn(q, view(p.w)), slow = fast;
    const cd_report rep = coordinate_descent(q, view(p.w), view(p.h_in), view(p.h_out), fast,
                                             cd_options{.sweeps = 2, .block_rows = 16, .block_cols = 16});
    const auto counts = naive_cd(q, p.w, dbl(p.h_in), dbl(p.h_out), slow, 2, 16, 16);
    CHECK(fast.codes == slow.codes);
    CHECK(fast.weights == slow.weights);
    CHECK(rep.sweeps[0].units_changed == counts[0]);
    CHECK(counts[0] > 0);
    CHECK(weights_match_codes(q, fast));
  }
  {
    const auto p = test::make_kronecker_layer<T>(48, 64, 16, 16, 22);
    test::d256_tiles<T> q;
    q.step = T(0.25);
    auto fast = rtn(q, view(p.w)), slow = fast;
    coordinate_descent(q, view(p.w), view(p.h_in), view(p.h_out), fast,
                       cd_options{.sweeps = 2, .block_rows = 32, .block_cols = 32});
    const auto counts = naive_cd(q, p.w, dbl(p.h_in), dbl(p.h_out), slow, 2, 32, 32);
    CHECK(fast.codes == slow.codes);
    CHECK(fast.weights == slow.weights);
    CHECK(counts[0] > 0);
  }
}

TEMPLATE_TEST_CASE("coordinate_descent with H_out = I is one-sided QuantEase", "[rounding][cd]", float, double) {
  using T = TestType;
  const auto p = test::make_kronecker_layer<T>(37, 60, 1, 12, 31);
  const int_grid<T> q(int_grid_options{.bits = 3, .group_size = 12});
  const matrix<T> eye = matrix<T>::Identity(37, 37);
  const auto start = rtn(q, view(p.w));
  for (yaqa::index br : {16, 64}) {
    INFO("block_rows " << br);
    const cd_options o{.sweeps = 3, .block_rows = br, .block_cols = 16};
    auto none = start, ident = start, slow = start;
    const cd_report rn = coordinate_descent(q, view(p.w), view(p.h_in), {}, none, o);
    coordinate_descent(q, view(p.w), view(p.h_in), view(eye), ident, o);
    const auto counts = naive_cd(q, p.w, dbl(p.h_in), MatrixXd::Identity(37, 37), slow, 3, br, 16);
    CHECK(none.codes == slow.codes);
    CHECK(none.weights == slow.weights);
    CHECK(none.codes == ident.codes);  // an explicit identity gives the same result bit for bit
    CHECK(none.weights == ident.weights);
    REQUIRE(static_cast<std::size_t>(rn.sweeps_run()) == counts.size());
    for (std::size_t s = 0; s < counts.size(); ++s) CHECK(rn.sweeps[s].units_changed == counts[s]);
    for (const auto& s : rn.sweeps) CHECK(s.proxy_after <= s.proxy_before);
    CHECK(rn.proxy_after() == Approx(proxy_of(none, p, false)).epsilon(1e-9));
  }
  // dense path (noisy start), scalar and 1x8 units
  {
    auto none = noisy_start(q, p.w, 32), slow = none;
    const cd_report rn = coordinate_descent(q, view(p.w), view(p.h_in), {}, none, cd_options{.sweeps = 2, .block_rows = 16, .block_cols = 16});
    naive_cd(q, p.w, dbl(p.h_in), MatrixXd::Identity(37, 37), slow, 2, 16, 16);
    CHECK(rn.sweeps[0].units_changed > 37 * 60 / 3);
    CHECK(none.codes == slow.codes);
    CHECK(none.weights == slow.weights);
  }
  {
    const auto pv = test::make_kronecker_layer<T>(24, 40, 8, 8, 33);
    const e8p<T> v;
    auto none = rtn(v, view(pv.w)), slow = none;
    const cd_report rn = coordinate_descent(v, view(pv.w), view(pv.h_in), {}, none, cd_options{.sweeps = 2, .block_rows = 8, .block_cols = 16});
    naive_cd(v, pv.w, dbl(pv.h_in), MatrixXd::Identity(24, 24), slow, 2, 8, 16);
    CHECK(rn.sweeps[0].units_changed > 0);
    CHECK(none.codes == slow.codes);
    CHECK(none.weights == slow.weights);
  }
  // QuantEase's order is column by column for every row: the row blocks do not matter
  auto a = start, b = start;
  coordinate_descent(q, view(p.w), view(p.h_in), {}, a, cd_options{.sweeps = 2, .block_rows = 8, .block_cols = 16});
  coordinate_descent(q, view(p.w), view(p.h_in), {}, b, cd_options{.sweeps = 2, .block_rows = 40, .block_cols = 16});
  CHECK(a.codes == b.codes);
}

TEMPLATE_TEST_CASE("coordinate_descent never increases the proxy, from every start and quantizer",
                   "[rounding][cd]", float, double) {
  using T = TestType;
  SECTION("int grid, groups of 12 (37 x 60)") {
    const auto p = test::make_kronecker_layer<T>(37, 60, 1, 12, 41);
    const int_grid<T> q(int_grid_options{.bits = 2, .group_size = 12});
    check_monotone(q, p, rtn(q, view(p.w)), "rtn", true);
    check_monotone(q, p, rounded<int_grid<T>>(gptq(q, view(p.w), view(p.h_in))), "gptq", false);
    gptq_options go;
    go.act_order = true;  // lazily fitted groups in act order: r.group_index
    const rounded<int_grid<T>> ga = gptq(q, view(p.w), view(p.h_in), go);
    REQUIRE_FALSE(ga.group_index.empty());
    auto ga_cd = ga;
    coordinate_descent(q, view(p.w), view(p.h_in), view(p.h_out), ga_cd, cd_options{.sweeps = 2});
    CHECK(proxy_of(ga_cd, p) < proxy_of(ga, p));
    CHECK(weights_match_codes(q, ga_cd));
    CHECK(ga_cd.group_index == ga.group_index);
    check_monotone(q, p, ga, "gptq act-order", false);
    check_monotone(q, p, ldlq(q, view(p.w), view(p.l_in), 12), "ldlq", false);
    check_monotone(q, p, yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), yaqa_options{1, 12}), "yaqa", false);
  }
  SECTION("Lloyd-Max 3-bit (37 x 53)") {
    const auto p = test::make_kronecker_layer<T>(37, 53, 1, 1, 42);
    const lloyd_max_grid<T> q(lloyd_max_options{.bits = 3});
    check_monotone(q, p, rtn(q, view(p.w)), "rtn", true, cd_options{.block_rows = 16, .block_cols = 16});
    check_monotone(q, p, rounded<lloyd_max_grid<T>>(gptq(q, view(p.w), view(p.h_in))), "gptq", false);
    check_monotone(q, p, ldlq(q, view(p.w), view(p.l_in), 1), "ldlq", false);
    check_monotone(q, p, yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), yaqa_options{1, 1}), "yaqa", false);
  }
  SECTION("E8P (24 x 40, 1x8 units)") {
    const auto p = test::make_kronecker_layer<T>(24, 40, 8, 8, 43);
    const e8p<T> q;
    check_monotone(q, p, rtn(q, view(p.w)), "rtn", true);
    check_monotone(q, p, ldlq(q, view(p.w), view(p.l_in), 8), "ldlq", false, cd_options{.block_rows = 8, .block_cols = 16});
    check_monotone(q, p, yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), yaqa_options{8, 8}), "yaqa", false);
  }
  SECTION("16x16 tile quantizer (48 x 80)") {
    const auto p = test::make_kronecker_layer<T>(48, 80, 16, 16, 44);
    test::d256_tiles<T> q;
    q.step = T(0.25);
    check_monotone(q, p, rtn(q, view(p.w)), "rtn", true);
    check_monotone(q, p, ldlq(q, view(p.w), view(p.l_in), 16), "ldlq", false, cd_options{.block_rows = 32, .block_cols = 48});
    check_monotone(q, p, yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), yaqa_options{16, 16}), "yaqa", false);
  }
}

TEMPLATE_TEST_CASE("coordinate_descent: several sweeps, convergence and the report", "[rounding][cd]", float, double) {
  using T = TestType;
  const auto p = test::make_kronecker_layer<T>(37, 60, 1, 12, 51);
  const int_grid<T> q(int_grid_options{.bits = 3, .group_size = 20});
  auto r = rtn(q, view(p.w));
  const double start = proxy_of(r, p);
  const cd_report rep = coordinate_descent(q, view(p.w), view(p.h_in), view(p.h_out), r, cd_options{.sweeps = 50});
  INFO("sweeps run " << rep.sweeps_run() << ", proxy " << rep.proxy_before() << " -> " << rep.proxy_after());
  CHECK(rep.converged);  // a finite problem: CD stops when a sweep changes nothing
  CHECK(rep.sweeps_run() < 50);
  CHECK(rep.sweeps.back().units_changed == 0);
  CHECK(rep.units == 37 * 60);
  CHECK(rep.proxy_before() == Approx(start).epsilon(1e-9));
  CHECK(rep.proxy_after() == Approx(proxy_of(r, p)).epsilon(1e-9));
  CHECK(rep.proxy_after() < 0.9 * rep.proxy_before());
  for (std::size_t s = 0; s + 1 < rep.sweeps.size(); ++s) {
    CHECK(rep.sweeps[s].proxy_after <= rep.sweeps[s].proxy_before);
    CHECK(rep.sweeps[s + 1].proxy_before == rep.sweeps[s].proxy_after);
  }
  CHECK(rep.seconds >= rep.setup_seconds);
  // a second call finds nothing to do
  auto again = r;
  const cd_report rep2 = coordinate_descent(q, view(p.w), view(p.h_in), view(p.h_out), again, cd_options{.sweeps = 5});
  CHECK(rep2.sweeps_run() == 1);
  CHECK(rep2.units_changed() == 0);
  CHECK(again.weights == r.weights);
}

TEMPLATE_TEST_CASE("coordinate_descent with 0 sweeps is a no-op", "[rounding][cd]", float, double) {
  using T = TestType;
  const auto p = test::make_kronecker_layer<T>(24, 40, 8, 8, 61);
  const int_grid<T> q(int_grid_options{.bits = 2, .group_size = 8});
  const auto start = rtn(q, view(p.w));
  auto r = start;
  const cd_report rep = coordinate_descent(q, view(p.w), view(p.h_in), view(p.h_out), r, cd_options{.sweeps = 0});
  CHECK(r.weights == start.weights);
  CHECK(r.codes == start.codes);
  CHECK(r.params.size() == start.params.size());
  CHECK(rep.sweeps.empty());
  CHECK(rep.units_changed() == 0);
  CHECK(std::isnan(rep.proxy_before()));
  const e8p<T> v;
  const auto sv = rtn(v, view(p.w));
  auto rv = sv;
  coordinate_descent(v, view(p.w), view(p.h_in), {}, rv, cd_options{.sweeps = 0});
  CHECK(rv.weights == sv.weights);
  CHECK(rv.codes == sv.codes);
}

TEST_CASE("coordinate_descent is bit-identical across thread counts", "[rounding][cd][determinism]") {
  const auto p = test::make_kronecker_layer<float>(96, 160, 16, 16, 71);
  const int_grid<float> q(int_grid_options{.bits = 3, .group_size = 32});
  const auto start = rtn(q, view(p.w));
  for (bool two_sided : {true, false}) {
    INFO("two-sided " << two_sided);
    const auto h_out = two_sided ? view(p.h_out) : matrix_view<const float>{};
    const cd_options o{.sweeps = 2, .block_rows = 32, .block_cols = 48};
    auto ref = start;
    const cd_report rr = coordinate_descent(cpu_backend{1}, q, view(p.w), view(p.h_in), h_out, ref, o);
    CHECK(rr.units_changed() > 0);
    for (int t : {2, 3}) {
      auto r = start;
      const cd_report rt = coordinate_descent(cpu_backend{t}, q, view(p.w), view(p.h_in), h_out, r, o);
      CHECK(r.weights == ref.weights);
      CHECK(r.codes == ref.codes);
      REQUIRE(rt.sweeps_run() == rr.sweeps_run());
      for (std::size_t s = 0; s < rr.sweeps.size(); ++s) {
        CHECK(rt.sweeps[s].proxy_after == rr.sweeps[s].proxy_after);
        CHECK(rt.sweeps[s].units_changed == rr.sweeps[s].units_changed);
      }
    }
  }
  // vector units too
  test::d256_tiles<float> t16;
  t16.step = 0.25f;
  const auto p2 = test::make_kronecker_layer<float>(48, 64, 16, 16, 72);
  auto a = rtn(t16, view(p2.w)), b = a;
  coordinate_descent(cpu_backend{1}, t16, view(p2.w), view(p2.h_in), view(p2.h_out), a, cd_options{.sweeps = 2});
  coordinate_descent(cpu_backend{2}, t16, view(p2.w), view(p2.h_in), view(p2.h_out), b, cd_options{.sweeps = 2});
  CHECK(a.codes == b.codes);
  CHECK(a.weights == b.weights);
}

TEST_CASE("coordinate_descent validates its arguments", "[rounding][cd][errors]") {
  const auto p = test::make_kronecker_layer<double>(24, 40, 8, 8, 81);
  const int_grid<double> q(int_grid_options{.bits = 3, .group_size = 8});
  const auto start = rtn(q, view(p.w));
  using cv = matrix_view<const double>;
  auto call = [&](cv w, cv hi, cv ho, rounded<int_grid<double>> r, cd_options o = {}) {
    coordinate_descent(q, w, hi, ho, r, o);
  };
  CHECK_THROWS_WITH(call(view(p.w), view(p.h_in), view(p.h_out), start, cd_options{.sweeps = -1}),
                    Catch::Contains("yaqa::coordinate_descent") && Catch::Contains("'sweeps'"));
  CHECK_THROWS_AS(call(view(p.w), view(p.h_in), view(p.h_out), start, cd_options{.sweeps = -1}), invalid_argument);
  CHECK_THROWS_AS(call(view(p.w), view(p.h_out), view(p.h_out), start), shape_error);
  CHECK_THROWS_WITH(call(view(p.w), view(p.h_out), view(p.h_out), start), Catch::Contains("'H_in' must be 40x40"));
  CHECK_THROWS_WITH(call(view(p.w), view(p.h_in), view(p.h_in), start), Catch::Contains("'H_out' must be 24x24"));
  const matrix<double> w2 = p.w.topRows(16);
  CHECK_THROWS_WITH(call(view(w2), view(p.h_in), {}, start), Catch::Contains("'r.weights' must be 16x40"));
  auto bad_codes = start;
  bad_codes.codes.resize(3, 3);
  CHECK_THROWS_AS(call(view(p.w), view(p.h_in), {}, bad_codes), shape_error);
  auto few = start;
  few.params.pop_back();
  CHECK_THROWS_WITH(call(view(p.w), view(p.h_in), {}, few), Catch::Contains("'r.params'"));
  auto gi = start;
  gi.group_index.assign(7, 0);
  CHECK_THROWS_WITH(call(view(p.w), view(p.h_in), {}, gi), Catch::Contains("'r.group_index'"));
  matrix<double> nan_h = p.h_in;
  nan_h(3, 5) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(call(view(p.w), view(std::as_const(nan_h)), {}, start), non_finite_error);
  CHECK_THROWS_WITH(call(view(p.w), view(std::as_const(nan_h)), {}, start), Catch::Contains("'H_in'"));
  matrix<double> inf_w = p.w;
  inf_w(1, 1) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(call(view(std::as_const(inf_w)), view(p.h_in), {}, start), Catch::Contains("'W'"));
  auto nan_r = start;
  nan_r.weights(0, 0) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(call(view(p.w), view(p.h_in), {}, nan_r), Catch::Contains("'r.weights'"));
  matrix<double> asym = p.h_out;
  asym(0, 5) += 1.0;
  CHECK_THROWS_WITH(call(view(p.w), view(p.h_in), view(std::as_const(asym)), start),
                    Catch::Contains("'H_out' must be symmetric"));
  CHECK_THROWS_WITH(call(view(p.w), view(p.h_in), {}, start, cd_options{.block_rows = -2}),
                    Catch::Contains("'block_rows'"));
  const e8p<double> v;
  const auto sv = rtn(v, view(p.w));
  auto rv = sv;
  CHECK_THROWS_WITH(coordinate_descent(v, view(p.w), view(p.h_in), {}, rv, cd_options{.block_cols = 12}),
                    Catch::Contains("'block_cols'") && Catch::Contains("unit width 8"));
  // a failed call changes nothing
  auto kept = start;
  CHECK_THROWS(coordinate_descent(q, view(p.w), view(p.h_in), view(std::as_const(asym)), kept));
  CHECK(kept.weights == start.weights);
}

TEST_CASE("coordinate_descent copes with singular and indefinite factors", "[rounding][cd]") {
  const auto p = test::make_kronecker_layer<double>(24, 40, 8, 8, 91);
  const int_grid<double> q(int_grid_options{.bits = 3});
  // a dead input (zero row and column of H_in) and a dead output: those units are left alone
  matrix<double> hi = p.h_in, ho = p.h_out;
  hi.row(7).setZero();
  hi.col(7).setZero();
  ho.row(3).setZero();
  ho.col(3).setZero();
  const auto start = rtn(q, view(p.w));
  auto r = start;
  const cd_report rep = coordinate_descent(q, view(p.w), view(std::as_const(hi)), view(std::as_const(ho)), r,
                                           cd_options{.sweeps = 3});
  CHECK(rep.units_changed() > 0);
  CHECK(r.weights.col(7) == start.weights.col(7));
  CHECK(r.weights.row(3) == start.weights.row(3));
  for (const auto& s : rep.sweeps) CHECK(s.proxy_after <= s.proxy_before);
  // an indefinite H_in: still monotone on the (meaningless) objective, all finite
  matrix<double> ind = p.h_in;
  ind(5, 5) = -2.0;
  auto ri = start;
  const cd_report rep2 = coordinate_descent(q, view(p.w), view(std::as_const(ind)), view(p.h_out), ri,
                                            cd_options{.sweeps = 2});
  for (const auto& s : rep2.sweeps) CHECK(s.proxy_after <= s.proxy_before);
  CHECK(ri.weights.allFinite());
  // the same with 1x8 units (pseudo-inverse of a singular 8x8 block)
  const e8p<double> v;
  auto rv = rtn(v, view(p.w));
  const cd_report rep3 = coordinate_descent(v, view(p.w), view(std::as_const(hi)), view(std::as_const(ho)), rv,
                                            cd_options{.sweeps = 2});
  for (const auto& s : rep3.sweeps) CHECK(s.proxy_after <= s.proxy_before);
  CHECK(rv.weights.allFinite());
}
