// Learnable weight clipping on int_grid: fit_clipped's range, and clip_backward's straight-through
// gradients against finite differences of the STE surrogate (round's residual and the zero point
// frozen, as the estimator assumes).
#include <catch2/catch.hpp>

#include <support/generators.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/refine/clipping.hpp>

using namespace yaqa;

static_assert(ClippableQuantizer<int_grid<float>>);
static_assert(ClippableQuantizer<int_grid<double>>);

TEMPLATE_TEST_CASE("fit_clipped with factors 1 is fit, and shrinks the range otherwise", "[refine][clipping]", float,
                   double) {
  using T = TestType;
  const yaqa::index m = 13, n = 29;
  const matrix<T> w = test::random_weights<T>(m, n, 1);
  for (bool sym : {false, true}) {
    const int_grid<T> q({.bits = 3, .sym = sym});
    const std::vector<T> ones(m, T(1)), half(m, T(0.5));
    const auto a = q.fit(view(w)), b = q.fit_clipped(view(w), ones.data(), ones.data());
    CHECK(a.scale == b.scale);
    CHECK(a.zero == b.zero);
    const auto c = q.fit_clipped(view(w), half.data(), half.data());
    for (yaqa::index i = 0; i < m; ++i) CHECK(c.scale[i] == Approx(a.scale[i] / 2).epsilon(1e-5));
    const std::vector<T> zero(m, T(0));
    CHECK_THROWS_AS(q.fit_clipped(view(w), zero.data(), ones.data()), invalid_argument);
  }
}

TEMPLATE_TEST_CASE("clip_backward is the gradient of the straight-through surrogate", "[refine][clipping]", float,
                   double) {
  using T = TestType;
  const yaqa::index m = 11, n = 37;
  const matrix<T> w = test::random_weights<T>(m, n, 3);
  const matrix<T> g0 = test::random_matrix<T>(m, n, 4);
  for (bool sym : {false, true}) {
    INFO("sym " << sym);
    const int_grid<T> q({.bits = 3, .sym = sym});
    const T maxq = T(7);
    std::vector<T> hi(m), lo(m);
    auto rng = test::make_rng(5);
    std::uniform_real_distribution<double> u(0.6, 0.95);
    for (yaqa::index i = 0; i < m; ++i) {
      hi[std::size_t(i)] = T(u(rng));
      lo[std::size_t(i)] = T(u(rng));
    }
    const auto p = q.fit_clipped(view(w), hi.data(), lo.data());
    matrix<T> g = g0;
    std::vector<T> dh(m, T(0)), dl(m, T(0));
    q.clip_backward(view(w), p, hi.data(), lo.data(), view(g), dh.data(), dl.data());
    // the STE mask: gradient kept where the code is inside [0, maxq] before clamping
    int clamped = 0;
    for (yaqa::index j = 0; j < n; ++j)
      for (yaqa::index i = 0; i < m; ++i) {
        const T r = std::nearbyint(w(i, j) / p.scale[i]) + p.zero[i];
        const bool in = r >= 0 && r <= maxq;
        clamped += in ? 0 : 1;
        CHECK(g(i, j) == (in ? g0(i, j) : T(0)));
      }
    CHECK(clamped > 0);  // factors < 1 clip some weights: the test sees both branches
    // surrogate: Qs(c) = s(c) (x / s(c) + rho) inside the range, s(c) (maxq - z) or s(c) (-z) where
    // the code was clamped: rho = round(x / s) - x / s, z and the clamp state frozen at c (the
    // estimator's linearization), in double
    auto surrogate = [&](yaqa::index row, double ch, double cl) {
      std::vector<double> h1(hi.begin(), hi.end()), l1(lo.begin(), lo.end());
      h1[std::size_t(row)] = ch;
      l1[std::size_t(row)] = cl;
      const matrix<double> wd = w.template cast<double>();
      const auto p1 = int_grid<double>({.bits = 3, .sym = sym}).fit_clipped(view(wd), h1.data(), l1.data());
      const double s = p1.scale[row], z = p.zero[row], s0 = p.scale[row];
      double sum = 0;
      for (yaqa::index j = 0; j < n; ++j) {
        const double x = w(row, j);
        const double r0 = std::nearbyint(x / s0) + z;
        const double v = r0 > maxq ? double(maxq) - z : r0 < 0 ? -z : x / s + (std::nearbyint(x / s0) - x / s0);
        sum += double(g0(row, j)) * s * v;
      }
      return sum;
    };
    for (yaqa::index i = 0; i < m; ++i) {
      const double h = 1e-6, ch = hi[std::size_t(i)], cl = lo[std::size_t(i)];
      const double fd_hi = (surrogate(i, ch + h, cl) - surrogate(i, ch - h, cl)) / (2 * h);
      const double tol = sizeof(T) == 4 ? 2e-3 : 1e-6;
      CHECK(dh[std::size_t(i)] == Approx(fd_hi).epsilon(tol).margin(tol));
      if (!sym) {
        const double fd_lo = (surrogate(i, ch, cl + h) - surrogate(i, ch, cl - h)) / (2 * h);
        CHECK(dl[std::size_t(i)] == Approx(fd_lo).epsilon(tol).margin(tol));
      } else {
        CHECK(dl[std::size_t(i)] == 0);  // symmetric grids clip by c_hi only
      }
    }
  }
}
