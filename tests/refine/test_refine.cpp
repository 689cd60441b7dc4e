// The refinement loop (LSI / SDE / LWC): the unrefined start is RTN bit for bit, LSI is SDE's
// diagonal, the result never loses to the start and is consistent (codes + params = weights,
// Q(W') = weights), determinism across threads, option checks, and the layer driver's stage.
#include <catch2/catch.hpp>

#include <layer_instances.hpp>  // quantize_layer<int_grid<float>> etc.: compiled once, in instances/
#include <rounding/reference_rounding.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/e8p.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/refine/refine.hpp>
#include <yaqa/rounding/layer.hpp>

using namespace yaqa;

namespace {
template <class T>
struct problem {
  matrix<T> w, h_in, h_out;
};
template <class T>
problem<T> make_problem(yaqa::index m, yaqa::index n, std::uint64_t seed) {
  problem<T> p;
  p.w = test::random_weights<T>(m, n, seed);
  p.h_in = test::random_second_moment<double>(n, 2 * n, seed + 1).cast<T>();
  p.h_out = test::random_spd<double>(m, 100, seed + 2).cast<T>();
  return p;
}
}  // namespace

TEMPLATE_TEST_CASE("0 steps, or no refinement, is exactly RTN", "[refine]", float, double) {
  using T = TestType;
  const auto p = make_problem<T>(37, 56, 1);
  const int_grid<T> q({.bits = 3, .group_size = 8});
  const kronecker_objective<T> obj(view(p.w), view(p.h_in), view(p.h_out));
  const auto r0 = rtn(q, view(p.w));
  for (auto o : {refine_options{.method = refine_method::sde, .lwc = true, .steps = 0},
                 refine_options{.method = refine_method::none, .lwc = false, .steps = 50}}) {
    const auto r = refine(q, view(p.w), obj, o);
    CHECK(r.weights == r0.weights);
    CHECK(r.codes == r0.codes);
    CHECK(r.report.best_step == -1);
    CHECK(r.report.loss == r.report.loss_unrefined);
    CHECK(r.refined == p.w);
  }
}

TEMPLATE_TEST_CASE("refinement never loses to the unrefined quantizer and its result is consistent", "[refine]", float,
                   double) {
  using T = TestType;
  const int_grid<T> q({.bits = 3, .group_size = 8});
  int improved = 0, cases = 0;
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    const auto p = make_problem<T>(37, 56, 10 * seed);
    const kronecker_objective<T> obj(view(p.w), view(p.h_in), view(p.h_out));
    for (const char* pat : {"diag", "band:2", "topleft:6", "full"})
      for (bool lwc : {false, true}) {
        INFO("seed " << seed << " pattern " << pat << " lwc " << lwc);
        refine_options o{.method = refine_method::sde, .pattern = parse_sde_pattern(pat), .lwc = lwc, .steps = 40};
        const auto r = refine(q, view(p.w), obj, o);
        ++cases;
        CHECK(r.report.loss <= r.report.loss_unrefined);
        improved += r.report.loss < r.report.loss_unrefined ? 1 : 0;
        // the reported loss is the objective of the returned weights
        CHECK(obj.value_and_gradient(view(r.weights)).loss == Approx(r.report.loss).epsilon(1e-12));
        // weights = decode(codes, params) and = Q(W') with those params
        const yaqa::index g = q.group_cols(p.w.cols());
        for (yaqa::index k = 0; k < p.w.cols() / g; ++k) {
          const matrix<T> rec = q.reconstruct(view(r.codes).col_block(k * g, g), r.params[std::size_t(k)], 0);
          CHECK(rec == r.weights.middleCols(k * g, g));
        }
        CHECK(rtn(q, view(r.refined), r.params).weights == r.weights);
        CHECK(r.report.d_norm == Approx((r.refined - p.w).template cast<double>().norm()).epsilon(1e-3).margin(1e-6));
        CHECK(r.report.trace.front().step == 0);
        CHECK(r.report.trace.back().step == r.report.steps_run);
      }
  }
  CHECK(improved >= cases * 3 / 4);  // the loop does find better roundings on these problems
}

TEMPLATE_TEST_CASE("LSI is SDE with the diagonal pattern", "[refine]", float, double) {
  using T = TestType;
  const auto p = make_problem<T>(29, 48, 4);
  const int_grid<T> q({.bits = 2});
  const kronecker_objective<T> obj(view(p.w), view(p.h_in), {});
  const auto a = refine(q, view(p.w), obj, {.method = refine_method::lsi, .pattern = {sde_shape::full, 0}, .steps = 30});
  const auto b = refine(q, view(p.w), obj, {.method = refine_method::sde, .pattern = {sde_shape::diag, 0}, .steps = 30});
  CHECK(a.weights == b.weights);
  CHECK(a.refined == b.refined);
  CHECK(a.report.pattern == "diag");
  CHECK(a.report.parameters == 29);
}

TEST_CASE("refinement works for any quantizer (identity straight-through estimator)", "[refine]") {
  const auto p = make_problem<float>(24, 40, 5);
  const e8p<float> q;
  const kronecker_objective<float> obj(view(p.w), view(p.h_in), view(p.h_out));
  const auto r = refine(q, view(p.w), obj, {.method = refine_method::sde, .pattern = {sde_shape::full, 0}, .steps = 30});
  CHECK(r.report.loss <= r.report.loss_unrefined);
  CHECK(rtn(q, view(r.refined), r.params).weights == r.weights);
  CHECK_THROWS_WITH(refine(q, view(p.w), obj, {.lwc = true}), Catch::Contains("learnable_clipping"));
}

TEST_CASE("refinement is bit-identical for 1, 2 and 3 threads", "[refine][determinism]") {
  const auto p = make_problem<float>(96, 80, 6);
  const int_grid<float> q({.bits = 2, .group_size = 16});
  const kronecker_objective<float> o1(cpu_backend{1}, view(p.w), view(p.h_in), view(p.h_out));
  const refine_options o{.method = refine_method::sde, .pattern = {sde_shape::band, 3}, .lwc = true, .steps = 25};
  const auto ref = refine(cpu_backend{1}, q, view(p.w), o1, o);
  for (int t : {2, 3}) {
    const kronecker_objective<float> ot(cpu_backend{t}, view(p.w), view(p.h_in), view(p.h_out));
    const auto r = refine(cpu_backend{t}, q, view(p.w), ot, o);
    CHECK(r.weights == ref.weights);
    CHECK(r.refined == ref.refined);
    CHECK(r.report.loss == ref.report.loss);
  }
}

TEST_CASE("bad refinement options give clear errors", "[refine]") {
  const auto p = make_problem<float>(20, 24, 7);
  const int_grid<float> q({.bits = 3});
  const kronecker_objective<float> obj(view(p.w), view(p.h_in), {});
  auto fails = [&](refine_options o, const char* text) {
    INFO(text);
    CHECK_THROWS_WITH(refine(q, view(p.w), obj, o), Catch::Contains(text));
  };
  fails({.method = refine_method::sde, .steps = -1}, "'steps' must be >= 0");
  fails({.method = refine_method::sde, .pattern = {sde_shape::band, 20}}, "band:20");
  fails({.method = refine_method::sde, .pattern = {sde_shape::topleft, 21}}, "topleft:21");
  fails({.method = refine_method::sde, .rank = 21}, "'rank' must be in [1, 20]");
  fails({.method = refine_method::sde, .lr = 0}, "'lr' must be finite and > 0");
  fails({.method = refine_method::sde, .lambda = -1}, "'lambda'");
  fails({.method = refine_method::sde, .patience = -2}, "'patience'");
  CHECK_THROWS_AS(parse_refine_method("sdf"), invalid_argument);
  const matrix<float> other = test::random_weights<float>(20, 16, 1);
  CHECK_THROWS_AS(refine(q, view(other), obj, {.method = refine_method::sde}), shape_error);
}

TEST_CASE("early stop and the trace", "[refine]") {
  const auto p = make_problem<double>(24, 32, 8);
  const int_grid<double> q({.bits = 2});
  const kronecker_objective<double> obj(view(p.w), view(p.h_in), view(p.h_out));
  const auto r = refine(q, view(p.w), obj,
                        {.method = refine_method::sde, .pattern = {sde_shape::full, 0}, .lwc = true, .steps = 400,
                         .patience = 5, .trace_every = 7});
  CHECK(r.report.early_stop);
  CHECK(r.report.steps_run < 400);
  CHECK(r.report.steps_run - std::max(r.report.best_step, 0) == 5);
  for (std::size_t i = 1; i < r.report.trace.size(); ++i) CHECK(r.report.trace[i].best <= r.report.trace[i - 1].best);
}

TEMPLATE_TEST_CASE("the layer driver's refine stage", "[refine][layer]", float, double) {
  using T = TestType;
  const auto p = make_problem<T>(48, 64, 9);
  const int_grid<T> q({.bits = 2, .group_size = 16});
  for (method a : {method::rtn, method::gptq, method::ldlq, method::yaqa}) {
    INFO(method_name(a));
    rounding_options o;
    o.algorithm = a;
    const auto plain = quantize_layer(q, view(p.w), view(p.h_in), view(p.h_out), o);
    o.refine = {.method = refine_method::sde, .lwc = true, .steps = 0};
    const auto zero = quantize_layer(q, view(p.w), view(p.h_in), view(p.h_out), o);
    CHECK(zero.weights == plain.weights);  // 0 steps: the unrefined grid, bit for bit
    o.refine.steps = 60;
    const auto r = quantize_layer(q, view(p.w), view(p.h_in), view(p.h_out), o);
    CHECK(r.report.refine.method == refine_method::sde);
    CHECK(r.report.refine.loss <= r.report.refine.loss_unrefined);
    if (a == method::rtn) {  // RTN rounds W' on the learned grid: the report's proxy is refine's loss
      CHECK(r.report.relative_proxy == Approx(r.report.refine.loss / r.report.refine.normalizer).epsilon(1e-3));
      CHECK(r.report.relative_proxy < plain.report.relative_proxy);
    }
  }
}
