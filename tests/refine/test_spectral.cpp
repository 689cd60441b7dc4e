// The spectral frame of LSI / SDE: SVD basis, W' - W = U D V^T for every pattern, the gradient
// P o (U^T G V) against a naive product and against finite differences.
#include <catch2/catch.hpp>

#include <support/approx.hpp>
#include <support/generators.hpp>
#include <yaqa/refine/objective.hpp>
#include <yaqa/refine/spectral.hpp>

using namespace yaqa;

namespace {
const sde_pattern patterns[] = {{sde_shape::diag, 0}, {sde_shape::band, 2}, {sde_shape::topleft, 5},
                                {sde_shape::full, 0}};

//! D with seeded random values on the pattern (and zeros elsewhere).
template <class T>
spectral_params<T> random_d(const sde_pattern& p, yaqa::index r, std::uint64_t seed) {
  auto d = spectral_params<T>::zeros(p, r);
  auto rng = test::make_rng(seed);
  std::normal_distribution<double> nd;
  const yaqa::index h = d.half_width();
  for (yaqa::index c = 0; c < d.bands.cols(); ++c)
    for (yaqa::index j = 0; j < r; ++j) {
      const yaqa::index i = j + c - h;
      if (i >= 0 && i < r) d.bands(j, c) = T(nd(rng));
    }
  for (yaqa::index j = 0; j < d.block.cols(); ++j)
    for (yaqa::index i = 0; i < d.block.rows(); ++i)
      if (p.shape == sde_shape::full || i != j) d.block(i, j) = T(nd(rng));
  return d;
}
}  // namespace

TEMPLATE_TEST_CASE("the spectral basis is a sign-normalized thin SVD", "[refine][spectral]", float, double) {
  using T = TestType;
  for (auto [m, n] : {std::pair<yaqa::index, yaqa::index>{37, 53}, {53, 37}}) {
    const matrix<T> w = test::random_weights<T>(m, n, 3);
    const auto b = make_spectral_basis(view(w));
    const yaqa::index r = std::min(m, n);
    REQUIRE(b.rank() == r);
    const Eigen::MatrixXd u = b.u.template cast<double>(), v = b.v.template cast<double>();
    CHECK_THAT(u.transpose() * u, test::IsClose(Eigen::MatrixXd::Identity(r, r), 10 * test::tol<T>()));
    CHECK_THAT(v.transpose() * v, test::IsClose(Eigen::MatrixXd::Identity(r, r), 10 * test::tol<T>()));
    CHECK_THAT(u * b.sigma.asDiagonal() * v.transpose(), test::IsClose(w.template cast<double>(), 10 * test::tol<T>()));
    for (yaqa::index i = 0; i + 1 < r; ++i) CHECK(b.sigma(i) >= b.sigma(i + 1));
    for (yaqa::index i = 0; i < r; ++i) {
      yaqa::index arg = 0;
      u.col(i).cwiseAbs().maxCoeff(&arg);
      CHECK(u(arg, i) > 0);
    }
    const auto t = make_spectral_basis(view(w), 9);
    CHECK(t.rank() == 9);
    CHECK(t.u == b.u.leftCols(9));
  }
  const matrix<T> w = test::random_weights<T>(10, 12, 1);
  CHECK_THROWS_AS(make_spectral_basis(view(w), 11), invalid_argument);
  CHECK_THROWS_AS(make_spectral_basis(view(w), 0), invalid_argument);
}

TEMPLATE_TEST_CASE("spectral_delta is U D V^T and spectral_gradient is P o (U^T G V)", "[refine][spectral]", float,
                   double) {
  using T = TestType;
  for (auto [m, n, rank] : {std::tuple<yaqa::index, yaqa::index, yaqa::index>{37, 53, -1}, {53, 37, -1}, {45, 29, 17}}) {
    const matrix<T> w = test::random_weights<T>(m, n, 5);
    const auto b = make_spectral_basis(view(w), rank);
    const yaqa::index r = b.rank();
    const matrix<T> g = test::random_matrix<T>(m, n, 6);
    for (const sde_pattern& p : patterns) {
      INFO(to_string(p) << " " << m << "x" << n << " rank " << r);
      const auto d = random_d<T>(p, r, 7);
      const Eigen::MatrixXd dd = d.dense().template cast<double>();
      for (yaqa::index i = 0; i < r; ++i)
        for (yaqa::index j = 0; j < r; ++j)
          if (!p.contains(i, j)) CHECK(dd(i, j) == 0);
      const Eigen::MatrixXd u = b.u.template cast<double>(), v = b.v.template cast<double>();
      const Eigen::MatrixXd naive = u * dd * v.transpose();
      const matrix<T> delta = spectral_delta(cpu_backend{}, b, d);
      CHECK_THAT(Eigen::MatrixXd(delta.template cast<double>()), test::IsClose(naive, 10 * test::tol<T>()));
      CHECK(delta.template cast<double>().norm() == Approx(d.norm()).epsilon(10 * test::tol<T>()));
      Eigen::MatrixXd full = u.transpose() * g.template cast<double>() * v;
      for (yaqa::index i = 0; i < r; ++i)
        for (yaqa::index j = 0; j < r; ++j)
          if (!p.contains(i, j)) full(i, j) = 0;
      const auto gd = spectral_gradient(cpu_backend{}, b, d, view(g));
      CHECK_THAT(Eigen::MatrixXd(gd.dense().template cast<double>()), test::IsClose(full, 10 * test::tol<T>()));
    }
  }
}

TEST_CASE("the SDE gradient matches central finite differences of the relaxed objective", "[refine][spectral]") {
  // L(D) = tr(dW H_in dW^T H_out) at What = W' = W + U D V^T + C (no rounding: the chain rule of
  // the spectral map alone), in double.
  const yaqa::index m = 23, n = 31;
  const matrix<double> w = test::random_weights<double>(m, n, 11);
  const matrix<double> c = test::random_matrix<double>(m, n, 12, 0.05);
  const matrix<double> hin = test::random_spd<double>(n, 50, 13), hout = test::random_spd<double>(m, 50, 14);
  const kronecker_objective<double> obj(view(w), view(hin), view(hout));
  const auto b = make_spectral_basis(view(w));
  for (const sde_pattern& p : patterns) {
    INFO(to_string(p));
    auto d = random_d<double>(p, b.rank(), 15);
    d.bands *= 0.01;
    d.block *= 0.01;
    auto loss = [&](const spectral_params<double>& x) {
      const matrix<double> what = w + spectral_delta(cpu_backend{}, b, x) + c;
      return obj.value_and_gradient(view(what));
    };
    const auto v0 = loss(d);
    const auto gd = spectral_gradient(cpu_backend{}, b, d, view(v0.gradient));
    const Eigen::MatrixXd gdense = gd.dense();
    const Eigen::MatrixXd d0 = d.dense();
    int checked = 0;
    for (yaqa::index j = 0; j < b.rank(); j += 3)
      for (yaqa::index i = 0; i < b.rank(); i += 2) {
        if (!p.contains(i, j)) continue;
        // perturb entry (i, j) through the storage: find it in bands or block
        auto plus = d, minus = d;
        const double h = 1e-6;
        auto bump = [&](spectral_params<double>& x, double s) {
          const yaqa::index off = i - j, hw = x.half_width();
          if (x.bands.size() > 0 && off >= -hw && off <= hw) x.bands(j, off + hw) += s;
          else x.block(i, j) += s;
        };
        bump(plus, h);
        bump(minus, -h);
        const double fd = (loss(plus).loss - loss(minus).loss) / (2 * h);
        CHECK(gdense(i, j) == Approx(fd).epsilon(1e-6).margin(1e-8));
        ++checked;
      }
    CHECK(checked > 0);
    (void)d0;
  }
}
