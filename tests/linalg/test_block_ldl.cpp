#include <cmath>
#include <limits>
#include <string>

#include <catch2/catch.hpp>
#include <Eigen/Cholesky>

#include <linalg/reference_linalg.hpp>
#include <support/approx.hpp>
#include <support/text.hpp>
#include <support/backends.hpp>
#include <support/generators.hpp>
#include <yaqa/linalg/block_ldl.hpp>
#include <yaqa/linalg/preprocess.hpp>

using namespace yaqa;

namespace {

using yaqa::test::contains;

//! Symmetric n x n matrix with eigenvalues `ev` in a random orthogonal basis.
template <class T>
matrix<T> with_spectrum(const Eigen::VectorXd& ev, std::uint64_t seed) {
  const Eigen::MatrixXd q = test::random_orthogonal(ev.size(), seed);
  Eigen::MatrixXd h = q * ev.asDiagonal() * q.transpose();
  h = (0.5 * (h + h.transpose())).eval();
  return h.cast<T>();
}

//! L unit block-lower-triangular with exact identity diagonal blocks and exact zeros above; D
//! exactly block diagonal, exactly symmetric, each block SPD; last block = remainder.
template <class T>
void check_structure(const ldl_factors<T>& f, yaqa::index n, yaqa::index b) {
  REQUIRE(f.L.rows() == n);
  REQUIRE(f.D.rows() == n);
  REQUIRE(f.D.block_count() == (n + b - 1) / b);
  const matrix<T> D = f.D.dense();
  CHECK(f.block == b);
  CHECK(f.L.allFinite());
  CHECK(f.D.allFinite());
  bool l_ok = true, d_ok = true;
  for (yaqa::index j = 0; j < n; ++j) {
    const yaqa::index s = j / b * b, e = std::min(n, s + b);
    for (yaqa::index i = 0; i < e; ++i) l_ok = l_ok && f.L(i, j) == (i == j ? T(1) : T(0));
    for (yaqa::index i = 0; i < n; ++i)
      d_ok = d_ok && (i < s || i >= e ? D(i, j) == T(0) : D(i, j) == f.D(i, j));
  }
  CHECK(l_ok);
  CHECK(d_ok);
  CHECK(D == D.transpose());
  for (yaqa::index s = 0; s < n; s += b) {
    const yaqa::index bs = std::min(b, n - s);
    REQUIRE(f.D[s / b].rows() == bs);
    const Eigen::MatrixXd dk = f.D[s / b].template cast<double>();
    CHECK(Eigen::LLT<Eigen::MatrixXd>(dk).info() == Eigen::Success);
  }
}

template <class T>
Eigen::MatrixXd reconstruct(const ldl_factors<T>& f) {
  const Eigen::MatrixXd l = f.L.template cast<double>(), d = f.D.dense().template cast<double>();
  return l * d * l.transpose();
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("block_ldl matches the naive block LDL recurrence", "[linalg][ldl]", test::cpu_cases) {
  using T = typename TestType::scalar;
  using B = typename TestType::backend;
  for (yaqa::index n : {37, 130}) {
    const matrix<T> h = test::random_second_moment<T>(n, 3 * n, 10 + n);
    const Eigen::MatrixXd hd = h.template cast<double>();
    for (yaqa::index b : {1, 8, 16, 32}) {
      auto r = block_ldl(B{}, view(h), b);
      REQUIRE(r.has_value());
      CHECK(r->damp == 0.0);
      CHECK(r->attempts == 1);
      check_structure(*r, n, b);
      const auto [l_ref, d_ref] = test::naive_block_ldl(hd, b);
      const double tol = sizeof(T) == 4 ? 2e-6 : 1e-11;
      CHECK_THAT(Eigen::MatrixXd(r->L.template cast<double>()), test::IsClose(l_ref, tol));
      CHECK_THAT(Eigen::MatrixXd(r->D.dense().template cast<double>()), test::IsClose(d_ref, tol));
    }
  }
}

TEMPLATE_LIST_TEST_CASE("L D L^T reconstructs H for block sizes that do not divide n", "[linalg][ldl]",
                        test::cpu_cases) {
  using T = typename TestType::scalar;
  for (yaqa::index n : {37, 130, 250}) {
    const matrix<T> h = test::random_spd<T>(n, 1e4, 40 + n, 3.0);
    for (yaqa::index b : {1, 8, 16, 32}) {
      auto r = block_ldl(view(h), b);
      REQUIRE(r.has_value());
      check_structure(*r, n, b);
      CHECK_THAT(reconstruct(*r), test::IsClose(h.template cast<double>(), sizeof(T) == 4 ? 1e-6 : 1e-12));
    }
  }
}

TEST_CASE("block_ldl: the last block is the remainder; b >= n gives L = I, D = H", "[linalg][ldl]") {
  const yaqa::index n = 37;
  const matrix<double> h = test::random_spd<double>(n, 100.0, 7);
  auto r = block_ldl(view(h), 16);  // blocks [0,16), [16,32), [32,37)
  REQUIRE(r.has_value());
  CHECK(r->D(31, 32) == 0.0);
  CHECK(r->D(32, 36) != 0.0);
  CHECK(r->D(36, 36) > 0.0);
  CHECK(r->L(36, 32) == 0.0);  // inside the 5 x 5 last diagonal block
  CHECK(r->L(36, 31) != 0.0);  // below block [16, 32)
  CHECK(r->L(20, 15) != 0.0);
  CHECK(r->L(20, 16) == 0.0);

  for (yaqa::index b : {37, 64}) {
    auto one = block_ldl(view(h), b);
    REQUIRE(one.has_value());
    CHECK(one->L == matrix<double>::Identity(n, n));
    CHECK_THAT(Eigen::MatrixXd(one->D.dense()), test::IsClose(h, 1e-15));
  }
  auto empty = block_ldl(view(matrix<double>(0, 0)), 4);
  REQUIRE(empty.has_value());
  CHECK(empty->L.size() == 0);
}

TEST_CASE("block_ldl rejects programming errors with exceptions naming the argument", "[linalg][ldl]") {
  const matrix<double> h = test::random_spd<double>(10, 10.0, 1);
  for (yaqa::index b : {0, -3}) {
    try {
      (void)block_ldl(view(h), b);
      FAIL("expected invalid_argument");
    } catch (const yaqa::invalid_argument& e) {
      CHECK(contains(e.what(), "yaqa::block_ldl"));
      CHECK(contains(e.what(), "'block'"));
      CHECK(contains(e.what(), ">= 1"));
    }
  }
  const matrix<double> rect(10, 11);
  CHECK_THROWS_AS(block_ldl(view(rect), 4), shape_error);
  CHECK_THROWS_AS(damped_block_ldl(view(rect), 4), shape_error);
  CHECK_THROWS_AS(gptq_inverse_factor(view(rect)), shape_error);
  damping_options bad;
  bad.sigma = -1;
  try {
    (void)damped_block_ldl(view(h), 4, bad);
    FAIL("expected invalid_argument");
  } catch (const yaqa::invalid_argument& e) {
    CHECK(contains(e.what(), "yaqa::damped_block_ldl"));
    CHECK(contains(e.what(), "'sigma'"));
  }
}

TEMPLATE_LIST_TEST_CASE("damped_block_ldl: a clear outcome for every kind of bad factor", "[linalg][ldl][damping]",
                        test::cpu_cases) {
  using T = typename TestType::scalar;
  using B = typename TestType::backend;
  const yaqa::index n = 37, b = 8;
  const double rec_tol = sizeof(T) == 4 ? 1e-6 : 1e-12;

  SECTION("SPD: first attempt, damp = sigma * mean diagonal") {
    const matrix<T> h = test::random_spd<T>(n, 100.0, 2, 4.0);
    const double mean = h.template cast<double>().diagonal().mean();
    auto r = damped_block_ldl(B{}, view(h), b);
    REQUIRE(r.has_value());
    CHECK(r->attempts == 1);
    CHECK(r->damp == Approx(0.01 * mean).epsilon(1e-12));
    check_structure(*r, n, b);
    Eigen::MatrixXd hd = h.template cast<double>();
    hd.diagonal().array() += r->damp;
    CHECK_THAT(reconstruct(*r), test::IsClose(hd, rec_tol));
  }
  SECTION("singular (a dead input): undamped fails at that column, damped succeeds at once") {
    matrix<T> h = test::random_spd<T>(n, 100.0, 3);
    h.row(0).setZero();
    h.col(0).setZero();
    auto plain = block_ldl(B{}, view(h), b);
    REQUIRE_FALSE(plain.has_value());
    CHECK(plain.error().failed_column == 0);
    CHECK(plain.error().attempts == 1);
    CHECK(contains(plain.error().reason, "not positive definite"));
    CHECK(contains(plain.error().reason, "37x37"));
    CHECK_THROWS_AS(plain.value(), numerical_error);  // value() on a failure throws, with the reason
    auto r = damped_block_ldl(B{}, view(h), b);
    REQUIRE(r.has_value());
    CHECK(r->attempts == 1);
    check_structure(*r, n, b);
  }
  SECTION("rank-deficient second moment (fewer samples than inputs): damped succeeds at once") {
    const matrix<T> h = test::random_second_moment<T>(n, 12, 5);  // rank 12
    auto r = damped_block_ldl(B{}, view(h), b);
    REQUIRE(r.has_value());
    CHECK(r->attempts == 1);
    check_structure(*r, n, b);
    Eigen::MatrixXd hd = h.template cast<double>();
    hd.diagonal().array() += r->damp;
    CHECK_THAT(reconstruct(*r), test::IsClose(hd, rec_tol));
  }
  SECTION("slightly indefinite: the ladder climbs until H + damp I is positive definite") {
    Eigen::VectorXd ev = Eigen::VectorXd::LinSpaced(n, -0.05, 2.0);  // mean eigenvalue = mean diag
    const double mean = ev.mean();
    ev(0) = -0.025 * mean;  // needs a damp above 2.5 sigma * mean: the 3rd YAQA step
    const matrix<T> h = with_spectrum<T>(ev, 9);
    const double hmean = h.template cast<double>().diagonal().mean();
    auto r = damped_block_ldl(B{}, view(h), b);
    REQUIRE(r.has_value());
    CHECK(r->attempts == 3);
    CHECK(r->damp == Approx(0.03 * hmean).epsilon(1e-12));
    check_structure(*r, n, b);

    damping_options g;  // GPTQModel-like: 0.008, 0.018, 0.028 x mean
    g.accumulate = false;
    g.sigma = 0.008;
    auto r2 = damped_block_ldl(B{}, view(h), b, g);
    REQUIRE(r2.has_value());
    CHECK(r2->attempts == 3);
    CHECK(r2->damp == Approx(0.028 * hmean).epsilon(1e-12));
  }
  SECTION("indefinite with a huge diagonal entry: the floor steps rescue it") {
    Eigen::MatrixXd hd = Eigen::MatrixXd::Identity(n, n);
    hd(0, 0) = 1000.0;
    hd(1, 2) = hd(2, 1) = 8.0;  // eigenvalues 9 and -7 in the (1, 2) plane
    const double mean = hd.diagonal().mean(), last = 20 * 0.01 * mean;  // last ladder damp < 7
    REQUIRE(last < 7.0);
    const matrix<T> h = hd.cast<T>();
    auto r = damped_block_ldl(B{}, view(h), b);
    REQUIRE(r.has_value());
    CHECK(r->attempts == 25);  // 20 ladder steps, floors 1e-3, 1e-2, 1e-1, 1 fail, 10 succeeds
    CHECK(r->damp == Approx(last + 1e-6 * 1000.0 * 1e4).epsilon(1e-12));
    check_structure(*r, n, b);
  }
  SECTION("strongly indefinite: a failure after every step, naming the size and the last damp") {
    Eigen::VectorXd ev = Eigen::VectorXd::LinSpaced(n, 0.5, 2.0);
    ev(3) = -5.0 * ev.mean();
    const matrix<T> h = with_spectrum<T>(ev, 11);
    auto r = damped_block_ldl(B{}, view(h), b);
    REQUIRE_FALSE(r.has_value());
    const failure& f = r.error();
    CHECK(f.attempts == 26);
    const Eigen::MatrixXd hd = h.template cast<double>();
    const std::vector<double> sched = damping_schedule(hd.diagonal().mean(), hd.diagonal().cwiseAbs().maxCoeff());
    CHECK(f.last_damp == Approx(sched.back()).epsilon(1e-12));
    CHECK(f.failed_column >= 0);
    CHECK(contains(f.reason, "yaqa::damped_block_ldl"));
    CHECK(contains(f.reason, "37x37"));
    CHECK(contains(f.reason, "26 damping attempts"));
    CHECK(contains(f.reason, "last damp"));
  }
  SECTION("all zero: a failure without any attempt (normalize_factor turns it into I first)") {
    matrix<T> z = matrix<T>::Zero(n, n);
    auto r = damped_block_ldl(B{}, view(z), b);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().attempts == 0);
    CHECK(contains(r.error().reason, "mean diagonal"));
    const factor_report rep = normalize_factor(view(z), "H_in");
    CHECK(rep.replaced_by_identity);
    auto ok = damped_block_ldl(B{}, view(z), b);
    REQUIRE(ok.has_value());
    CHECK(ok->attempts == 1);
    CHECK(ok->damp == Approx(0.01));
  }
  SECTION("NaN or Inf: a failure without any attempt, never NaN factors") {
    for (T bad : {std::numeric_limits<T>::quiet_NaN(), std::numeric_limits<T>::infinity()}) {
      matrix<T> h = test::random_spd<T>(n, 10.0, 12);
      h(20, 5) = bad;
      auto r = damped_block_ldl(B{}, view(h), b);
      REQUIRE_FALSE(r.has_value());
      CHECK(r.error().attempts == 0);
      CHECK(contains(r.error().reason, std::isnan(bad) ? "NaN" : "Inf"));
      CHECK(contains(r.error().reason, "(20, 5)"));
      CHECK_FALSE(block_ldl(B{}, view(h), b).has_value());
      CHECK_FALSE(gptq_inverse_factor(B{}, view(h)).has_value());
      CHECK_THROWS_AS(normalize_factor(view(h), "H_in"), non_finite_error);
    }
  }
}

TEST_CASE("block_ldl and gptq_inverse_factor are bit-identical for 1, 2 and 3 threads", "[linalg][ldl][determinism]") {
  const matrix<double> h = test::random_second_moment<double>(300, 700, 21);
  const auto ref = damped_block_ldl(cpu_backend{1}, view(h), 16);
  const auto uref = gptq_inverse_factor(cpu_backend{1}, view(h));
  REQUIRE(ref.has_value());
  REQUIRE(uref.has_value());
  for (int t : {2, 3}) {
    const auto r = damped_block_ldl(cpu_backend{t}, view(h), 16);
    REQUIRE(r.has_value());
    CHECK(r->L == ref->L);
    CHECK(r->D == ref->D);
    const auto u = gptq_inverse_factor(cpu_backend{t}, view(h));
    REQUIRE(u.has_value());
    CHECK(u->U == uref->U);
  }
}

TEMPLATE_LIST_TEST_CASE("gptq_inverse_factor: U^T U = (H + damp I)^-1, U upper with positive diagonal",
                        "[linalg][gptq]", test::cpu_cases) {
  using T = typename TestType::scalar;
  using B = typename TestType::backend;
  for (yaqa::index n : {37, 130}) {
    const matrix<T> h = test::random_second_moment<T>(n, 2 * n, 30 + n);
    const Eigen::MatrixXd hd = h.template cast<double>();
    auto r = gptq_inverse_factor(B{}, view(h));
    REQUIRE(r.has_value());
    CHECK(r->attempts == 1);
    CHECK(r->damp == Approx(0.01 * hd.diagonal().mean()).epsilon(1e-12));
    const Eigen::MatrixXd u = r->U.template cast<double>();
    CHECK(u.isUpperTriangular(0));
    CHECK((u.diagonal().array() > 0).all());
    Eigen::MatrixXd damped = hd;
    damped.diagonal().array() += r->damp;
    const Eigen::MatrixXd inv = test::naive_inverse(damped);
    const double tol = sizeof(T) == 4 ? 1e-5 : 1e-11;
    CHECK_THAT(Eigen::MatrixXd(u.transpose() * u), test::IsClose(inv, tol));
    // GPTQ's literal recipe (invert, then the upper Cholesky factor of the inverse) gives the same U.
    const Eigen::MatrixXd u_ref = Eigen::LLT<Eigen::MatrixXd>(inv).matrixU();
    CHECK_THAT(u, test::IsClose(u_ref, tol));
  }
  // A singular H (a dead input) needs the damping; a slightly indefinite one climbs the ladder.
  const yaqa::index n = 37;
  matrix<T> h = test::random_spd<T>(n, 10.0, 8);
  h.row(5).setZero();
  h.col(5).setZero();
  auto r = gptq_inverse_factor(B{}, view(h));
  REQUIRE(r.has_value());
  CHECK(r->attempts == 1);
  Eigen::VectorXd ev = Eigen::VectorXd::LinSpaced(n, 0.1, 2.0);
  ev(0) = -0.015 * ev.mean();
  const matrix<T> hi = with_spectrum<T>(ev, 13);
  auto ri = gptq_inverse_factor(B{}, view(hi));
  REQUIRE(ri.has_value());
  CHECK(ri->attempts == 2);
  Eigen::VectorXd strong = Eigen::VectorXd::LinSpaced(n, 0.1, 2.0);
  strong(0) = -10.0 * strong.mean();
  const matrix<T> hs = with_spectrum<T>(strong, 14);
  auto rs = gptq_inverse_factor(B{}, view(hs));
  REQUIRE_FALSE(rs.has_value());
  CHECK(rs.error().attempts == 26);
  CHECK(contains(rs.error().reason, "yaqa::gptq_inverse_factor"));
  CHECK(contains(rs.error().reason, "37x37"));
}

TEST_CASE("damped_block_ldl_in_place: the same factors bit for bit, H restored on failure",
          "[linalg][ldl][in_place]") {
  for (yaqa::index n : {37, 130, 300}) {
    Eigen::VectorXd ev = Eigen::VectorXd::LinSpaced(n, -0.05, 2.0);
    ev(0) = -0.025 * ev.mean();  // first attempts fail: the retries must reload H from the upper triangle
    Eigen::VectorXd hopeless = Eigen::VectorXd::LinSpaced(n, 0.5, 2.0);
    hopeless(3) = -5.0 * hopeless.mean();
    const matrix<double> spd = test::random_second_moment<double>(n, 3 * n, 40 + n);
    const matrix<double> indefinite = with_spectrum<double>(ev, 41), strong = with_spectrum<double>(hopeless, 42);
    for (const matrix<double>* h : {&spd, &indefinite, &strong})
      for (yaqa::index b : {16, 7})
        for (int t : {1, 2}) {
          INFO("n " << n << " block " << b << " threads " << t);
          const cpu_backend be{t};
          const auto ref = damped_block_ldl(be, view(*h), b);
          // the copy path reads only the lower triangle: make the in-place input's upper differ
          matrix<double> work = *h;
          work.triangularView<Eigen::StrictlyUpper>().setConstant(12345.0);
          const auto got = damped_block_ldl_in_place(be, work, b);
          REQUIRE(got.has_value() == ref.has_value());
          if (ref) {
            CHECK(got->L == ref->L);
            CHECK(got->D == ref->D);
            CHECK(got->damp == ref->damp);
            CHECK(got->attempts == ref->attempts);
            CHECK(work.size() == 0);  // consumed
          } else {
            CHECK(got.error().reason == ref.error().reason);
            matrix<double> sym = *h;
            sym.triangularView<Eigen::StrictlyUpper>() = sym.transpose();
            CHECK(work == sym);  // H again: lower triangle mirrored, diagonal undamped
          }
        }
  }
}

TEMPLATE_TEST_CASE("the factorizations' NaN/Inf scan names the first bad entry in column-major order, whatever the threads",
                   "[linalg][ldl][errors]", float, double) {
  using T = TestType;
  const yaqa::index n = 301;  // several 64-wide column chunks of the parallel scan, last one partial
  for (int threads : {1, 2, 3}) {
    matrix<T> h = test::random_spd<T>(n, 10.0, 31);
    h(250, 70) = std::numeric_limits<T>::infinity();   // chunk 1
    h(10, 200) = std::numeric_limits<T>::quiet_NaN();  // a later chunk, earlier row
    h(300, 300) = std::numeric_limits<T>::quiet_NaN(); // the last, partial chunk
    const auto r = damped_block_ldl(cpu_backend{threads}, view(h), 16);
    REQUIRE_FALSE(r.has_value());
    CHECK(r.error().attempts == 0);
    CHECK(contains(r.error().reason, "Inf at (250, 70)"));
    const auto u = gptq_inverse_factor(cpu_backend{threads}, view(h));
    REQUIRE_FALSE(u.has_value());
    CHECK(contains(u.error().reason, "Inf at (250, 70)"));
    h(250, 70) = T(0);
    h(70, 250) = T(0);
    CHECK(contains(damped_block_ldl(cpu_backend{threads}, view(h), 16).error().reason, "NaN at (10, 200)"));
    h(10, 200) = T(0);
    CHECK(contains(damped_block_ldl(cpu_backend{threads}, view(h), 16).error().reason, "NaN at (300, 300)"));
  }
}
