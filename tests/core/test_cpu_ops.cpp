#include <catch2/catch.hpp>

#include <support/approx.hpp>
#include <support/backends.hpp>
#include <support/generators.hpp>
#include <support/reference.hpp>
#include <yaqa/backend/cpu/ops.hpp>

using namespace yaqa;
using ops = backend_ops<cpu_backend>;

static_assert(Backend<cpu_backend>);
static_assert(BackendFor<cpu_backend, float>);
static_assert(BackendFor<cpu_backend, double>);
static_assert(accessible_from<cpu_backend, host_space>);

TEMPLATE_LIST_TEST_CASE("gemm matches the naive product for every transpose combination", "[core][ops]",
                        test::cpu_cases) {
  using T = typename TestType::scalar;
  const yaqa::index m = 67, n = 131, k = 45;  // not multiples of any chunk or SIMD width
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const matrix<T> a = ta ? test::random_matrix<T>(k, m, 1) : test::random_matrix<T>(m, k, 1);
      const matrix<T> b = tb ? test::random_matrix<T>(n, k, 2) : test::random_matrix<T>(k, n, 2);
      matrix<T> c = test::random_matrix<T>(m, n, 3);
      const Eigen::MatrixXd c0 = c.template cast<double>();
      const Eigen::MatrixXd ad = a.template cast<double>(), bd = b.template cast<double>();
      const Eigen::MatrixXd expect =
          0.5 * test::naive_gemm(ta ? Eigen::MatrixXd(ad.transpose()) : ad,
                                 tb ? Eigen::MatrixXd(bd.transpose()) : bd) -
          2.0 * c0;
      ops::gemm<T>(cpu_backend{}, ta ? trans::transpose : trans::none,
                   tb ? trans::transpose : trans::none, T(0.5), view(a), view(b), T(-2), view(c));
      REQUIRE_THAT(Eigen::MatrixXd(c.template cast<double>()), test::IsClose(expect, test::tol<T>()));
    }
  // tall output (row chunks) as well as wide
  const matrix<T> a = test::random_matrix<T>(300, 20, 4), b = test::random_matrix<T>(20, 7, 5);
  matrix<T> c(300, 7);
  c.setConstant(std::numeric_limits<T>::quiet_NaN());  // beta = 0 must ignore NaN garbage
  ops::gemm<T>(cpu_backend{}, trans::none, trans::none, T(1), view(a), view(b), T(0), view(c));
  REQUIRE_THAT(Eigen::MatrixXd(c.template cast<double>()),
               test::IsClose(test::naive_gemm(a.template cast<double>(), b.template cast<double>()),
                             test::tol<T>()));
}

TEST_CASE("gemm rejects mismatched shapes with a message naming the shapes", "[core][ops]") {
  matrix<double> a(3, 4), b(5, 2), c(3, 2);
  CHECK_THROWS_AS(ops::gemm<double>(cpu_backend{}, trans::none, trans::none, 1.0, view(std::as_const(a)),
                                    view(std::as_const(b)), 0.0, view(c)),
                  shape_error);
}

TEST_CASE("cpu ops are bit-identical for 1, 2 and 3 threads", "[core][ops][determinism]") {
  const matrix<float> a = test::random_matrix<float>(517, 389, 7);
  const matrix<float> b = test::random_matrix<float>(389, 611, 8);
  matrix<float> ref(517, 611);
  ops::gemm<float>(cpu_backend{1}, trans::none, trans::none, 1.f, view(a), view(b), 0.f, view(ref));
  matrix<double> s_ref = matrix<double>::Zero(389, 389);
  const matrix<double> ad = a.cast<double>();
  ops::syrk_accumulate<double>(cpu_backend{1}, view(ad), 1.0, view(s_ref));
  for (int t : {2, 3}) {
    matrix<float> c(517, 611);
    ops::gemm<float>(cpu_backend{t}, trans::none, trans::none, 1.f, view(a), view(b), 0.f, view(c));
    CHECK(c == ref);
    matrix<double> s = matrix<double>::Zero(389, 389);
    ops::syrk_accumulate<double>(cpu_backend{t}, view(ad), 1.0, view(s));
    CHECK(s == s_ref);
  }
}

TEMPLATE_LIST_TEST_CASE("syrk and weighted syrk accumulate X^T diag(w) X", "[core][ops]", test::cpu_cases) {
  using T = typename TestType::scalar;
  const yaqa::index t = 53, n = 149;
  const matrix<T> x = test::random_matrix<T>(t, n, 11);
  vector<T> w = test::random_matrix<T>(t, 1, 12).col(0);
  matrix<T> a = test::random_spd<T>(n, 10.0, 13);
  const Eigen::MatrixXd a0 = a.template cast<double>();
  const Eigen::MatrixXd xd = x.template cast<double>();
  ops::syrk_accumulate<T>(cpu_backend{}, view(x), T(0.25), view(a));
  Eigen::MatrixXd expect = a0 + 0.25 * test::naive_gemm(xd.transpose(), xd);
  REQUIRE_THAT(Eigen::MatrixXd(a.template cast<double>()), test::IsClose(expect, test::tol<T>()));
  ops::weighted_syrk_accumulate<T>(cpu_backend{}, view(x), w.data(), T(2), view(a));
  expect += 2.0 * test::naive_gemm(xd.transpose(), w.template cast<double>().asDiagonal() * xd);
  REQUIRE_THAT(Eigen::MatrixXd(a.template cast<double>()), test::IsClose(expect, test::tol<T>()));
  CHECK(a == a.transpose());  // both triangles written, exactly symmetric
}

TEMPLATE_LIST_TEST_CASE("potrf_lower factors SPD matrices and reports the failing column", "[core][ops]",
                        test::cpu_cases) {
  using T = typename TestType::scalar;
  for (yaqa::index n : {1, 5, 127, 129, 300}) {
    const matrix<T> h = test::random_spd<T>(n, 1e3, 20 + n);
    matrix<T> l = h;
    REQUIRE(ops::potrf_lower<T>(cpu_backend{}, view(l)) == 0);
    const Eigen::MatrixXd ld = l.template cast<double>().template triangularView<Eigen::Lower>();
    REQUIRE_THAT(Eigen::MatrixXd(test::naive_gemm(ld, ld.transpose())),
                 test::IsClose(h.template cast<double>(), sizeof(T) == 4 ? 1e-5 : 1e-12));
  }
  // indefinite: negative eigen-direction makes column j fail; info is 1-based
  matrix<T> bad = test::random_spd<T>(200, 10.0, 5);
  bad(150, 150) = T(-1);
  const yaqa::index info = ops::potrf_lower<T>(cpu_backend{}, view(bad));
  CHECK(info > 0);
  CHECK(info <= 151);
  matrix<T> nan = test::random_spd<T>(10, 10.0, 6);
  nan(3, 3) = std::numeric_limits<T>::quiet_NaN();
  CHECK(ops::potrf_lower<T>(cpu_backend{}, view(nan)) == 4);
}

TEMPLATE_LIST_TEST_CASE("trsm_lower solves from both sides, transposed or not", "[core][ops]", test::cpu_cases) {
  using T = typename TestType::scalar;
  const yaqa::index n = 97;
  matrix<T> l = test::random_spd<T>(n, 10.0, 30);
  REQUIRE(ops::potrf_lower<T>(cpu_backend{}, view(l)) == 0);
  const Eigen::MatrixXd L = l.template cast<double>().template triangularView<Eigen::Lower>();
  Eigen::MatrixXd Lunit = L;
  Lunit.diagonal().setOnes();
  for (int unit = 0; unit < 2; ++unit)
    for (int tr = 0; tr < 2; ++tr)
      for (int sd = 0; sd < 2; ++sd) {
        const Eigen::MatrixXd& base = unit ? Lunit : L;
        const Eigen::MatrixXd op = tr ? Eigen::MatrixXd(base.transpose()) : base;
        matrix<T> b = sd == 0 ? test::random_matrix<T>(n, 13, 31) : test::random_matrix<T>(13, n, 31);
        const Eigen::MatrixXd b0 = b.template cast<double>();
        ops::trsm_lower<T>(cpu_backend{}, sd == 0 ? side::left : side::right,
                           tr ? trans::transpose : trans::none, unit == 1, view(std::as_const(l)), view(b));
        const Eigen::MatrixXd x = b.template cast<double>();
        const Eigen::MatrixXd back = sd == 0 ? test::naive_gemm(op, x) : test::naive_gemm(x, op);
        REQUIRE_THAT(back, test::IsClose(b0, sizeof(T) == 4 ? 1e-4 : 1e-10));
      }
}
