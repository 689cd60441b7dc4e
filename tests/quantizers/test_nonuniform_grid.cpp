#include <cmath>
#include <limits>
#include <vector>

#include <catch2/catch.hpp>

#include <quantizers/quantizer_checks.hpp>
#include <support/backends.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/nonuniform_grid.hpp>

using namespace yaqa;

static_assert(Quantizer<lloyd_max_grid<float>>);
static_assert(Quantizer<lloyd_max_grid<double>>);
static_assert(Quantizer<fp4_e2m1<float>>);
static_assert(Quantizer<fp4_e2m1<double>>);
static_assert(!quantizer_property<lloyd_max_grid<float>, device_capable>);
static_assert(!quantizer_property<fp4_e2m1<float>, device_capable>);

TEST_CASE("Lloyd-Max tables match the known Gaussian quantizers", "[quantizers][lloyd_max]") {
  const auto& t2 = gaussian_lloyd_max(2);
  REQUIRE(t2.levels.size() == 4);
  CHECK(t2.levels[2] == Approx(0.4528).margin(5e-5));
  CHECK(t2.levels[3] == Approx(1.5104).margin(5e-5));
  CHECK(t2.levels[0] == -t2.levels[3]);
  CHECK(t2.levels[1] == -t2.levels[2]);
  CHECK(t2.thresholds[2] == Approx(0.9816).margin(5e-4));
  CHECK(t2.mse == Approx(0.1175).margin(5e-5));
  const auto& t3 = gaussian_lloyd_max(3);
  CHECK(t3.levels[4] == Approx(0.2451).margin(5e-5));
  CHECK(t3.levels[7] == Approx(2.1520).margin(1e-4));
  CHECK(t3.mse == Approx(0.03455).margin(5e-6));
  const auto& t4 = gaussian_lloyd_max(4);
  REQUIRE(t4.levels.size() == 16);
  CHECK(t4.levels[8] == Approx(0.1284).margin(5e-5));
  CHECK(t4.levels[15] == Approx(2.7326).margin(5e-5));
  CHECK(t4.mse == Approx(0.009500).margin(5e-6));
  // Fixed point: every level is the centroid of its cell (to the iteration's 1e-13 tolerance).
  for (int bits : {2, 3, 4}) {
    const auto& t = gaussian_lloyd_max(bits);
    const double inf = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < t.levels.size(); ++i) {
      const double a = i == 0 ? -inf : t.thresholds[i - 1];
      const double b = i + 1 == t.levels.size() ? inf : t.thresholds[i];
      const double c = (detail::normal_pdf(a) - detail::normal_pdf(b)) / detail::normal_cell_probability(a, b);
      CHECK(std::abs(c - t.levels[i]) < 1e-11);
    }
  }
  CHECK_THROWS_WITH(gaussian_lloyd_max(5), Catch::Contains("'bits'"));
}

TEST_CASE("Lloyd-Max MSE on a large Gaussian sample agrees with the closed form", "[quantizers][lloyd_max]") {
  const matrix<double> w = test::random_matrix<double>(64, 4096, 21);
  for (int bits : {2, 3, 4}) {
    const lloyd_max_grid<double> q({.bits = bits});
    auto p = q.fit(view(w));
    for (auto& s : p.scale) s = 1.0;  // the true variance, not the sample RMS
    const auto r = test::run_quantize(q, w, p);
    const double mse = (r.recon - w).squaredNorm() / double(w.size());
    CHECK(mse == Approx(gaussian_lloyd_max(bits).mse).epsilon(0.03));
  }
}

TEMPLATE_LIST_TEST_CASE("lloyd_max_grid: RMS scale, nearest level, decode and idempotence",
                        "[quantizers][lloyd_max]", test::scalar_types) {
  using T = TestType;
  matrix<T> w = test::random_matrix<T>(29, 40, 22, 0.3);
  w.row(4).setZero();
  for (int bits : {2, 3, 4})
    for (yaqa::index gs : {yaqa::index(0), yaqa::index(8)}) {
      CAPTURE(bits, gs);
      const lloyd_max_grid<T> q({.bits = bits, .group_size = gs});
      const yaqa::index g = q.group_cols(w.cols());
      for (yaqa::index c0 = 0; c0 < w.cols(); c0 += g) {
        const matrix<T> block = w.middleCols(c0, g);
        const auto p = q.fit(view(block));
        for (yaqa::index i = 0; i < w.rows(); ++i) {
          const double rms = std::sqrt(block.row(i).template cast<double>().squaredNorm() / double(g));
          CHECK(double(p.scale[i]) == Approx(rms).epsilon(1e-6));
        }
        CHECK(p.scale[4] == T(0));
        test::check_decode_and_idempotence(q, block, p);
        const auto r = test::run_quantize(q, block, p);
        CHECK(r.recon.row(4).isZero());
        // Brute force: no level of the row's grid is strictly closer.
        for (yaqa::index j = 0; j < g; ++j)
          for (yaqa::index i = 0; i < w.rows(); ++i) {
            const T d = std::abs(block(i, j) - r.recon(i, j));
            for (T l : q.levels()) {
              volatile T v = p.scale[i] * l;  // the rounded value, as reconstruct() returns it
              CHECK(d <= std::abs(block(i, j) - v));
            }
          }
      }
    }
  const lloyd_max_grid<T> q3({.bits = 3});
  const auto p = q3.fit(view(w));
  test::check_sub_block(q3, w, p, 5, 13, 2, 1);
}

TEST_CASE("lloyd_max_grid: bit accounting and bad parameters", "[quantizers][lloyd_max][errors]") {
  CHECK(lloyd_max_grid<float>({.bits = 3}).storage_bits(10, 64) == 10u * 64 * 3 + 10u * 16);
  CHECK(lloyd_max_grid<float>({.bits = 4, .group_size = 16}).storage_bits(10, 64) == 10u * 64 * 4 + 10u * 4 * 16);
  CHECK_THROWS_WITH(lloyd_max_grid<float>({.bits = 1}), Catch::Contains("'bits'"));
  CHECK_THROWS_WITH(lloyd_max_grid<float>({.bits = 2, .group_size = 24}).validate(100),
                    Catch::Contains("24") && Catch::Contains("100"));
  matrix<double> w = test::random_matrix<double>(3, 8, 1);
  w(1, 1) = -std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(lloyd_max_grid<double>().fit(view(std::as_const(w))), non_finite_error);
  matrix<std::uint8_t> bad(1, 1);
  bad(0, 0) = 200;
  const lloyd_max_grid<double> q;
  const auto p = q.fit(view(test::random_matrix<double>(1, 4, 2)));
  CHECK_THROWS_AS(q.reconstruct(view(std::as_const(bad)), p, 0), format_error);
}

namespace {

// Brute-force MX FP4: exponent from frexp in long double; every one of the 16 codes tried, the
// nearest kept, ties to the even magnitude code, zero stored as +0.
template <class T>
void fp4_brute(const matrix<T>& block, std::vector<int>& exps, matrix<std::uint8_t>& codes) {
  const double mags[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  exps.assign(std::size_t(block.rows()), 0);
  codes.resize(block.rows(), block.cols());
  for (yaqa::index i = 0; i < block.rows(); ++i) {
    long double amax = 0;
    for (yaqa::index j = 0; j < block.cols(); ++j) amax = std::max(amax, std::fabs((long double)block(i, j)));
    int e2 = 0;
    if (amax > 0) {
      std::frexp(amax, &e2);  // amax = f * 2^e2 with f in [0.5, 1): floor(log2 amax) = e2 - 1
      exps[i] = std::max(-127, std::min(127, e2 - 1 - 2));
    }
    const long double s = std::ldexp(1.0L, exps[i]);
    for (yaqa::index j = 0; j < block.cols(); ++j) {
      const long double x = block(i, j);
      int best = 0;
      long double bd = std::numeric_limits<long double>::infinity();
      for (int c = 0; c < 16; ++c) {
        const long double v = (c & 8 ? -1 : 1) * mags[c & 7] * s;
        const long double d = std::fabs(x - v);
        if (d < bd || (d == bd && (c & 1) == 0 && (best & 1) == 1)) {
          bd = d;
          best = c;
        }
      }
      if ((best & 7) == 0) best = 0;
      codes(i, j) = std::uint8_t(best);
    }
  }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("fp4_e2m1 matches a brute-force MX FP4 quantizer", "[quantizers][fp4]",
                        test::scalar_types) {
  using T = TestType;
  // 23 rows x 96 columns = 3 blocks; rows with very different ranges, exact ties and zeros.
  matrix<T> w = test::random_matrix<T>(23, 96, 31);
  for (yaqa::index i = 0; i < w.rows(); ++i) w.row(i) *= T(std::ldexp(1.0, int(i) - 11));
  w.row(2).setZero();
  w.block(3, 0, 1, 32).setZero();
  const T ties[] = {0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, -0.25, -5, 6, 7, -100, 0.1, -0.1};
  for (int k = 0; k < 14; ++k) w(5, 32 + k) = ties[k];  // amax 100 -> e = 4; scaled below
  for (int k = 0; k < 14; ++k) w(6, 64 + k) = ties[k] * T(0.25);
  w(6, 64) = T(0.375);
  const fp4_e2m1<T> q;
  REQUIRE(q.group_cols(96) == 32);
  for (yaqa::index c0 = 0; c0 < 96; c0 += 32) {
    const matrix<T> block = w.middleCols(c0, 32);
    const auto p = q.fit(view(block));
    std::vector<int> exps;
    matrix<std::uint8_t> want;
    fp4_brute(block, exps, want);
    for (yaqa::index i = 0; i < w.rows(); ++i) CHECK(int(p.exponent[i]) == exps[i]);
    const auto r = test::run_quantize(q, block, p);
    CHECK(r.codes == want);
    test::check_decode_and_idempotence(q, block, p);
  }
  // The tie row at scale 1 (row 6 has amax 1.5 * ... : check directly with a unit exponent).
  typename fp4_e2m1<T>::params_type unit;
  unit.exponent.assign(1, 0);
  unit = fp4_e2m1<T>::with_scales(unit);
  matrix<T> t(1, 9);
  t << T(0.25), T(0.75), T(1.25), T(1.75), T(2.5), T(3.5), T(5), T(-0.1), T(-5);
  const auto r = test::run_quantize(q, t, unit);
  const int want[] = {0, 2, 2, 4, 4, 6, 6, 0, 8 | 6};
  for (int k = 0; k < 9; ++k) CHECK(int(r.codes(0, k)) == want[k]);
}

TEST_CASE("fp4_e2m1: bit accounting, group rule and bad input", "[quantizers][fp4][errors]") {
  const fp4_e2m1<float> q;
  CHECK(q.bits_per_weight() == 4.0);
  CHECK(q.storage_bits(4096, 4096) == 4096u * 4096 * 4 + 4096u * 128 * 8);
  CHECK_THROWS_AS(q.group_cols(100), yaqa::invalid_argument);
  CHECK_THROWS_WITH(q.validate(100), Catch::Contains("32") && Catch::Contains("100"));
  matrix<float> w = test::random_matrix<float>(4, 32, 5);
  const auto p = q.fit(view(w));
  w(3, 31) = std::numeric_limits<float>::quiet_NaN();
  matrix<float> recon(4, 32);
  matrix<std::uint8_t> codes(4, 32);
  CHECK_THROWS_AS(q.quantize(view(std::as_const(w)), p, 0, view(recon), view(codes)), non_finite_error);
  CHECK_THROWS_AS(q.fit(view(std::as_const(w))), non_finite_error);
}
