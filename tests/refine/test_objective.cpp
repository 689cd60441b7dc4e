// Refinement objectives: values against naive formulas, gradients against finite differences,
// the cross-layer objective's special cases.
#include <catch2/catch.hpp>

#include <support/approx.hpp>
#include <support/generators.hpp>
#include <yaqa/refine/cross_layer.hpp>
#include <yaqa/refine/objective.hpp>

using namespace yaqa;

namespace {
//! Central finite differences of f at x along every entry in a seeded sample (double).
template <class F>
void check_gradient(F&& f, const matrix<double>& x, const matrix<double>& grad, double tol) {
  auto rng = test::make_rng(99);
  std::uniform_int_distribution<yaqa::index> ri(0, x.rows() - 1), rj(0, x.cols() - 1);
  for (int k = 0; k < 25; ++k) {
    const yaqa::index i = ri(rng), j = rj(rng);
    matrix<double> p = x, m = x;
    const double h = 1e-6;
    p(i, j) += h;
    m(i, j) -= h;
    const double fd = (f(p) - f(m)) / (2 * h);
    INFO("entry " << i << "," << j);
    CHECK(grad(i, j) == Approx(fd).epsilon(tol).margin(1e-9));
  }
}

//! A toy next layer: tanh, then a fixed linear map (tokens x m -> tokens x p).
struct toy_next {
  matrix<double> a;  // p x m
  [[nodiscard]] matrix<double> forward(matrix_view<const double> z) const {
    return as_eigen(z).array().tanh().matrix() * a.transpose();
  }
  [[nodiscard]] matrix<double> backward(matrix_view<const double> z, matrix_view<const double> dy) const {
    const matrix<double> t = as_eigen(z).array().tanh().matrix();
    return ((as_eigen(dy) * a).array() * (1.0 - t.array().square())).matrix();
  }
};
static_assert(NextLayer<toy_next, double>);
static_assert(RefineObjective<kronecker_objective<float>>);
static_assert(RefineObjective<output_error_objective<double>>);
static_assert(RefineObjective<cross_layer_objective<double, toy_next>>);
}  // namespace

TEMPLATE_TEST_CASE("kronecker_objective is tr(dW H_in dW^T H_out) with gradient 2 H_out dW H_in", "[refine][objective]",
                   float, double) {
  using T = TestType;
  const yaqa::index m = 37, n = 53;
  const matrix<T> w = test::random_weights<T>(m, n, 1), wh = w + test::random_matrix<T>(m, n, 2, 0.1);
  const matrix<T> hin = test::random_spd<T>(n, 100, 3), hout = test::random_spd<T>(m, 100, 4);
  const Eigen::MatrixXd dw = (wh - w).template cast<double>(), hi = hin.template cast<double>(),
                        ho = hout.template cast<double>();
  const kronecker_objective<T> two(view(w), view(hin), view(hout));
  const auto v = two.value_and_gradient(view(wh));
  CHECK(v.loss == Approx((dw * hi * dw.transpose() * ho).trace()).epsilon(10 * test::tol<T>()));
  CHECK_THAT(Eigen::MatrixXd(v.gradient.template cast<double>()), test::IsClose(2.0 * ho * dw * hi, 10 * test::tol<T>()));
  const Eigen::MatrixXd wd = w.template cast<double>();
  CHECK(two.normalizer() == Approx((wd * hi * wd.transpose() * ho).trace()).epsilon(10 * test::tol<T>()));
  const kronecker_objective<T> one(view(w), view(hin), {});
  const auto v1 = one.value_and_gradient(view(wh));
  CHECK(v1.loss == Approx((dw * hi * dw.transpose()).trace()).epsilon(10 * test::tol<T>()));
  CHECK_THAT(Eigen::MatrixXd(v1.gradient.template cast<double>()), test::IsClose(2.0 * dw * hi, 10 * test::tol<T>()));
  const matrix<T> bad(n, n);
  CHECK_THROWS_AS((kronecker_objective<T>(view(w), view(bad), view(bad))), shape_error);
}

TEST_CASE("objective gradients match finite differences", "[refine][objective]") {
  const yaqa::index m = 19, n = 27, t = 41;
  const matrix<double> w = test::random_weights<double>(m, n, 5);
  const matrix<double> wh = w + test::random_matrix<double>(m, n, 6, 0.1);
  const matrix<double> hin = test::random_spd<double>(n, 30, 7), hout = test::random_spd<double>(m, 30, 8);
  const matrix<double> x = test::random_matrix<double>(t, n, 9);
  {
    const kronecker_objective<double> o(view(w), view(hin), view(hout));
    check_gradient([&](const matrix<double>& a) { return o.value_and_gradient(view(a)).loss; }, wh,
                   o.value_and_gradient(view(wh)).gradient, 1e-6);
  }
  {
    const output_error_objective<double> o(view(w), view(x));
    const Eigen::MatrixXd e = wh - w;
    CHECK(o.value_and_gradient(view(wh)).loss == Approx((x * e.transpose()).squaredNorm()).epsilon(1e-12));
    check_gradient([&](const matrix<double>& a) { return o.value_and_gradient(view(a)).loss; }, wh,
                   o.value_and_gradient(view(wh)).gradient, 1e-6);
  }
  {
    const yaqa::index p = 13;
    const matrix<double> xq = x + test::random_matrix<double>(t, n, 10, 0.05);  // the quantized stream
    const matrix<double> y = x * w.transpose();
    toy_next next{test::random_matrix<double>(p, m, 11)};
    const matrix<double> y2 = next.forward(view(y));
    const cross_layer_objective<double, toy_next> o(cpu_backend{}, view(w), view(xq), view(y), next, view(y2),
                                                    {.lambda_self = 0.7, .lambda_next = 1.3});
    const matrix<double> z = xq * wh.transpose();
    const double expect = 0.7 * (z - y).squaredNorm() + 1.3 * (next.forward(view(z)) - y2).squaredNorm();
    CHECK(o.value_and_gradient(view(wh)).loss == Approx(expect).epsilon(1e-12));
    check_gradient([&](const matrix<double>& a) { return o.value_and_gradient(view(a)).loss; }, wh,
                   o.value_and_gradient(view(wh)).gradient, 1e-6);
    CHECK(o.normalizer() == Approx(0.7 * y.squaredNorm() + 1.3 * y2.squaredNorm()));
  }
}

TEST_CASE("cross-layer without the next layer on the full-precision stream is the output error", "[refine][objective]") {
  const yaqa::index m = 16, n = 24, t = 50;
  const matrix<float> w = test::random_weights<float>(m, n, 1), wh = w + test::random_matrix<float>(m, n, 2, 0.1);
  const matrix<float> x = test::random_matrix<float>(t, n, 3);
  const matrix<float> y = x * w.transpose();
  struct identity_next {
    [[nodiscard]] matrix<float> forward(matrix_view<const float> z) const { return as_eigen(z); }
    [[nodiscard]] matrix<float> backward(matrix_view<const float>, matrix_view<const float> dy) const {
      return as_eigen(dy);
    }
  };
  const cross_layer_objective<float, identity_next> cl(cpu_backend{}, view(w), view(x), view(y), identity_next{},
                                                       view(y), {.lambda_self = 1, .lambda_next = 0});
  const output_error_objective<float> oe(view(w), view(x));
  const auto a = cl.value_and_gradient(view(wh)), b = oe.value_and_gradient(view(wh));
  CHECK(a.loss == Approx(b.loss).epsilon(1e-5));
  CHECK_THAT(Eigen::MatrixXd(a.gradient.cast<double>()), test::IsClose(b.gradient, 1e-5));
  // identity next layer with both weights 1: twice the output error
  const cross_layer_objective<float, identity_next> both(cpu_backend{}, view(w), view(x), view(y), identity_next{},
                                                         view(y));
  CHECK(both.value_and_gradient(view(wh)).loss == Approx(2 * b.loss).epsilon(1e-5));
  CHECK_THROWS_AS((cross_layer_objective<float, identity_next>(cpu_backend{}, view(w), view(x), view(y),
                                                              identity_next{}, view(y), {.lambda_self = 0, .lambda_next = 0})),
                  invalid_argument);
  const matrix<float> short_y = y.topRows(t - 1);
  CHECK_THROWS_AS((cross_layer_objective<float, identity_next>(cpu_backend{}, view(w), view(x), view(short_y),
                                                              identity_next{}, view(y))),
                  shape_error);
}
