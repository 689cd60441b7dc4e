// The report's proxies: the LDL-factor route (ldl_proxy, times_lower, lower_transpose_times) and
// the Gram route (gram_proxy) against naive traces in double, at sizes that are not multiples of
// the blocks or the 256-wide product chunks, in float and double, for several thread counts.
#include <catch2/catch.hpp>

#include <support/generators.hpp>
#include <yaqa/linalg/block_ldl.hpp>
#include <yaqa/rounding/proxy.hpp>

using namespace yaqa;

TEMPLATE_TEST_CASE("times_lower and lower_transpose_times equal the dense products", "[rounding][proxy]", float,
                   double) {
  using T = TestType;
  for (auto [m, n] : {std::pair<yaqa::index, yaqa::index>{37, 300}, {300, 53}, {1, 1}}) {
    const matrix<T> w = test::random_weights<T>(m, n, 3);
    matrix<T> l = test::random_weights<T>(n, n, 4);
    l.template triangularView<Eigen::StrictlyUpper>().setZero();
    matrix<T> lo = test::random_weights<T>(m, m, 5);
    lo.template triangularView<Eigen::StrictlyUpper>().setZero();
    const Eigen::MatrixXd x_ref = w.template cast<double>() * l.template cast<double>();
    const Eigen::MatrixXd y_ref = lo.template cast<double>().transpose() * w.template cast<double>();
    const double tol = sizeof(T) == 4 ? 1e-5 : 1e-13;
    for (int t : {1, 2, 3}) {
      const matrix<T> x = times_lower(cpu_backend{t}, view(w), view(std::as_const(l)));
      const matrix<T> y = lower_transpose_times(cpu_backend{t}, view(std::as_const(lo)), view(w));
      CHECK((x.template cast<double>() - x_ref).norm() <= tol * x_ref.norm());
      CHECK((y.template cast<double>() - y_ref).norm() <= tol * y_ref.norm());
    }
  }
}

TEMPLATE_TEST_CASE("ldl_proxy and gram_proxy equal tr(dW H_in dW^T H_out)", "[rounding][proxy]", float, double) {
  using T = TestType;
  const yaqa::index m = 45, n = 70;  // blocks 16 and 8: remainders 13 and 5 (n) / 6 (m)
  const matrix<double> hin = test::random_second_moment<double>(n, 3 * n, 11);
  const matrix<double> hout = test::random_spd<double>(m, 50.0, 12);
  const matrix<T> d = test::random_weights<T>(m, n, 13);
  const Eigen::MatrixXd dd = d.template cast<double>();
  const double shift = 0.25;
  const matrix<double> hin_s = hin + shift * matrix<double>::Identity(n, n);
  const double one_ref = (dd * hin_s * dd.transpose()).trace();
  const double two_ref = (dd * hin_s * dd.transpose() * hout).trace();
  const double tol = sizeof(T) == 4 ? 1e-5 : 1e-12;
  for (yaqa::index bi : {16, 8}) {
    const auto fi = block_ldl(view(hin_s), bi);
    const auto fo = block_ldl(view(hout), 6 + bi / 8);
    REQUIRE(fi);
    REQUIRE(fo);
    const matrix<T> li = fi->L.template cast<T>(), lo = fo->L.template cast<T>();
    for (int t : {1, 2, 3}) {
      const cpu_backend b{t};
      const matrix<T> x = times_lower(b, view(d), view(std::as_const(li)));
      const matrix<T> y = lower_transpose_times(b, view(std::as_const(lo)), view(std::as_const(x)));
      const double one = ldl_proxy(b, view(std::as_const(x)), fi->D);
      const double two = ldl_proxy(b, view(std::as_const(y)), fi->D, &fo->D);
      CHECK(one == Approx(one_ref).epsilon(tol));
      CHECK(two == Approx(two_ref).epsilon(tol));
      CHECK(gram_proxy(b, view(d), hin, shift) == Approx(one_ref).epsilon(tol));
      // the same bits for every thread count
      CHECK(one == ldl_proxy(cpu_backend{1}, view(std::as_const(x)), fi->D));
      CHECK(gram_proxy(b, view(d), hin, shift) == gram_proxy(cpu_backend{1}, view(d), hin, shift));
    }
  }
  const auto f = block_ldl(view(hin_s), 16);
  REQUIRE(f);
  CHECK_THROWS_AS(ldl_proxy(cpu_backend{}, view(matrix<T>(m, n + 1)), f->D), shape_error);
  CHECK_THROWS_AS(times_lower(cpu_backend{}, view(d), view(matrix<T>(n + 1, n + 1))), shape_error);
}

TEMPLATE_TEST_CASE("ldl_proxy_dense_out equals tr(dW H_in dW^T H_out) with a dense H_out", "[rounding][proxy]",
                   float, double) {
  using T = TestType;
  const yaqa::index m = 45, n = 70;
  const matrix<double> hin = test::random_second_moment<double>(n, 3 * n, 21);
  const matrix<T> hout = test::random_spd<double>(m, 50.0, 22).template cast<T>();
  const matrix<T> d = test::random_weights<T>(m, n, 23);
  const Eigen::MatrixXd dd = d.template cast<double>();
  const double ref = (dd * hin * dd.transpose() * hout.template cast<double>()).trace();
  const auto f = block_ldl(view(hin), 16);
  REQUIRE(f);
  const matrix<T> li = f->L.template cast<T>();
  for (int t : {1, 3}) {
    const cpu_backend b{t};
    const matrix<T> x = times_lower(b, view(d), view(std::as_const(li)));
    CHECK(ldl_proxy_dense_out(b, view(x), f->D, view(hout)) == Approx(ref).epsilon(sizeof(T) == 4 ? 1e-5 : 1e-12));
  }
  CHECK_THROWS_AS(ldl_proxy_dense_out(cpu_backend{}, view(d), f->D, view(matrix<T>(m + 1, m + 1))), shape_error);
}
