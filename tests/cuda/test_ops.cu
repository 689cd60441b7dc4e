// backend_ops<cuda_backend> and device memory against the CPU backend, on seeded random inputs at
// sizes that are not multiples of any block or warp size. Float and double.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>

#include <cuda/cuda_support.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>

using namespace yaqa;
using gops = backend_ops<cuda_backend>;
using cops = backend_ops<cpu_backend>;

static_assert(Backend<cuda_backend>);
static_assert(BackendFor<cuda_backend, float>);
static_assert(BackendFor<cuda_backend, double>);
static_assert(accessible_from<cuda_backend, cuda::device_space>);
static_assert(!accessible_from<cuda_backend, host_space>);  // host views cannot reach the device ops

TEST_CASE("CUDA, cuBLAS and cuSOLVER failures become cuda_error naming the status", "[cuda][core]") {
  auto message = [](auto status) {
    try {
      cuda::check(status, "probe");
    } catch (const cuda_error& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  CHECK_THAT(message(cudaErrorInvalidValue), Catch::Contains("probe") && Catch::Contains("cudaErrorInvalidValue"));
  CHECK_THAT(message(CUBLAS_STATUS_INVALID_VALUE), Catch::Contains("CUBLAS_STATUS_INVALID_VALUE"));
  CHECK_THAT(message(CUSOLVER_STATUS_EXECUTION_FAILED), Catch::Contains("CUSOLVER_STATUS_EXECUTION_FAILED"));
  CHECK_NOTHROW(cuda::check(cudaSuccess, "probe"));
}

TEMPLATE_TEST_CASE("device matrices round-trip through views with a leading dimension", "[cuda][core]", float,
                   double) {
  using T = TestType;
  const auto& b = test::gpu();
  const matrix<T> big = test::random_matrix<T>(71, 53, 1);
  const matrix_view<const T> sub = view(big).block(3, 5, 61, 40);  // ld 71 != rows 61
  const auto d = cuda::to_device(b, sub);
  REQUIRE(d.rows() == 61);
  REQUIRE(d.cols() == 40);
  const matrix<T> back = cuda::to_host(b, d);
  CHECK(back == big.block(3, 5, 61, 40));
  // device -> device into a strided block of a larger device matrix, then back
  cuda::device_matrix<T> dst(b, 70, 45);
  dst.zero();
  cuda::copy<T>(b, d.cview(), dst.view().block(2, 1, 61, 40));
  const matrix<T> h = cuda::to_host(b, dst);
  CHECK(h.block(2, 1, 61, 40) == big.block(3, 5, 61, 40));
  CHECK(h.col(0).isZero(0));
  CHECK(h.row(0).isZero(0));
  // shape mismatch is reported before any copy
  matrix<T> wrong(60, 40);
  CHECK_THROWS_AS(cuda::copy<T>(b, d.cview(), view(wrong)), shape_error);
}

TEMPLATE_TEST_CASE("cuda gemm matches the CPU backend for every transpose combination", "[cuda][core][ops]", float,
                   double) {
  using T = TestType;
  const auto& b = test::gpu();
  const yaqa::index m = 67, n = 131, k = 45;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      const matrix<T> a = ta ? test::random_matrix<T>(k, m, 1) : test::random_matrix<T>(m, k, 1);
      const matrix<T> bm = tb ? test::random_matrix<T>(n, k, 2) : test::random_matrix<T>(k, n, 2);
      matrix<T> c = test::random_matrix<T>(m, n, 3);
      const auto da = test::upload(a), db = test::upload(bm);
      auto dc = test::upload(c);
      const trans opa = ta ? trans::transpose : trans::none, opb = tb ? trans::transpose : trans::none;
      gops::gemm<T>(b, opa, opb, T(0.5), da.cview(), db.cview(), T(-2), dc.view());
      cops::gemm<T>(cpu_backend{}, opa, opb, T(0.5), view(a), view(bm), T(-2), view(c));
      INFO("ta=" << ta << " tb=" << tb);
      REQUIRE_THAT(Eigen::MatrixXd(test::download(dc).template cast<double>()),
                   test::IsClose(c, test::gpu_tol<T>()));
    }
  // beta == 0 ignores NaN garbage in C
  const matrix<T> a = test::random_matrix<T>(300, 20, 4), bm = test::random_matrix<T>(20, 7, 5);
  matrix<T> nan(300, 7);
  nan.setConstant(std::numeric_limits<T>::quiet_NaN());
  auto dc = test::upload(nan);
  gops::gemm<T>(b, trans::none, trans::none, T(1), test::upload(a).cview(), test::upload(bm).cview(), T(0),
                dc.view());
  matrix<T> c(300, 7);
  cops::gemm<T>(cpu_backend{}, trans::none, trans::none, T(1), view(a), view(bm), T(0), view(c));
  REQUIRE_THAT(Eigen::MatrixXd(test::download(dc).template cast<double>()), test::IsClose(c, test::gpu_tol<T>()));
  // shapes are checked on the host
  cuda::device_matrix<T> x(b, 3, 4), y(b, 5, 2), z(b, 3, 2);
  CHECK_THROWS_AS(gops::gemm<T>(b, trans::none, trans::none, T(1), x.cview(), y.cview(), T(0), z.view()),
                  shape_error);
}

TEMPLATE_TEST_CASE("cuda syrk and weighted syrk accumulate X^T diag(w) X into both triangles",
                   "[cuda][core][ops]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  const yaqa::index t = 203, n = 149;
  const matrix<T> x = test::random_matrix<T>(t, n, 11);
  const matrix<T> wv = test::random_matrix<T>(t, 1, 12).cwiseAbs();
  const matrix<T> a0 = test::random_spd<T>(n, 10.0, 13);
  const auto dx = test::upload(x), dw = test::upload(wv);

  matrix<T> a = a0;
  auto da = test::upload(a0);
  gops::syrk_accumulate<T>(b, dx.cview(), T(0.25), da.view());
  cops::syrk_accumulate<T>(cpu_backend{}, view(x), T(0.25), view(a));
  const matrix<T> ga = test::download(da);
  REQUIRE_THAT(Eigen::MatrixXd(ga.template cast<double>()), test::IsClose(a, test::gpu_tol<T>()));
  CHECK((ga - ga.transpose()).cwiseAbs().maxCoeff() <= T(0));  // exactly symmetric

  matrix<T> aw = a0;
  auto daw = test::upload(a0);
  gops::weighted_syrk_accumulate<T>(b, dx.cview(), dw.data(), T(-0.5), daw.view());
  cops::weighted_syrk_accumulate<T>(cpu_backend{}, view(x), wv.data(), T(-0.5), view(aw));
  const matrix<T> gw = test::download(daw);
  REQUIRE_THAT(Eigen::MatrixXd(gw.template cast<double>()), test::IsClose(aw, test::gpu_tol<T>()));
  CHECK((gw - gw.transpose()).cwiseAbs().maxCoeff() <= T(0));

  // strided operands: X as a block of a larger matrix
  const matrix<T> xbig = test::random_matrix<T>(t + 9, n + 4, 14);
  const auto dxbig = test::upload(xbig);
  matrix<T> as = a0;
  auto das = test::upload(a0);
  gops::syrk_accumulate<T>(b, dxbig.cview().block(5, 2, t, n), T(1), das.view());
  cops::syrk_accumulate<T>(cpu_backend{}, view(xbig).block(5, 2, t, n), T(1), view(as));
  REQUIRE_THAT(Eigen::MatrixXd(test::download(das).template cast<double>()), test::IsClose(as, test::gpu_tol<T>()));

  cuda::device_matrix<T> wrong(b, n + 1, n + 1);
  CHECK_THROWS_AS(gops::syrk_accumulate<T>(b, dx.cview(), T(1), wrong.view()), shape_error);
}

TEMPLATE_TEST_CASE("cuda potrf_lower matches the CPU factor and reports the failing pivot",
                   "[cuda][core][ops]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  const yaqa::index n = 181;
  const matrix<T> h = test::random_spd<T>(n, 1e3, 21);
  matrix<T> c = h;
  auto dh = test::upload(h);
  REQUIRE(gops::potrf_lower<T>(b, dh.view()) == 0);
  REQUIRE(cops::potrf_lower<T>(cpu_backend{}, view(c)) == 0);
  const matrix<T> g = test::download(dh);
  const matrix<T> gl = g.template triangularView<Eigen::Lower>();
  const matrix<T> cl = c.template triangularView<Eigen::Lower>();
  REQUIRE_THAT(Eigen::MatrixXd(gl.template cast<double>()), test::IsClose(cl, sizeof(T) == 4 ? 1e-4 : 1e-10));
  const matrix<T> gu = g.template triangularView<Eigen::StrictlyUpper>();
  const matrix<T> hu = h.template triangularView<Eigen::StrictlyUpper>();
  CHECK(gu == hu);  // upper triangle not referenced

  // not positive definite at column 37: both backends report 38
  matrix<T> bad = h;
  bad(37, 37) = T(-1);
  matrix<T> badc = bad;
  auto dbad = test::upload(bad);
  const yaqa::index cpu_info = cops::potrf_lower<T>(cpu_backend{}, view(badc));
  REQUIRE(cpu_info == 38);
  CHECK(gops::potrf_lower<T>(b, dbad.view()) == cpu_info);
}

TEMPLATE_TEST_CASE("cuda trsm_lower matches the CPU solve for every side, transpose and diagonal",
                   "[cuda][core][ops]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  const yaqa::index n = 97, k = 45;
  matrix<T> l = test::random_spd<T>(n, 10.0, 31);
  REQUIRE(cops::potrf_lower<T>(cpu_backend{}, view(l)) == 0);
  const auto dl = test::upload(l);
  for (int s = 0; s < 2; ++s)
    for (int t = 0; t < 2; ++t)
      for (int u = 0; u < 2; ++u) {
        const side sd = s ? side::right : side::left;
        const trans tr = t ? trans::transpose : trans::none;
        matrix<T> rhs = s ? test::random_matrix<T>(k, n, 32) : test::random_matrix<T>(n, k, 32);
        auto drhs = test::upload(rhs);
        gops::trsm_lower<T>(b, sd, tr, u != 0, dl.cview(), drhs.view());
        cops::trsm_lower<T>(cpu_backend{}, sd, tr, u != 0, view(l), view(rhs));
        INFO("side=" << s << " trans=" << t << " unit=" << u);
        REQUIRE_THAT(Eigen::MatrixXd(test::download(drhs).template cast<double>()),
                     test::IsClose(rhs, sizeof(T) == 4 ? 1e-4 : 1e-10));
      }
  cuda::device_matrix<T> wrong(b, n + 1, k);
  CHECK_THROWS_AS(gops::trsm_lower<T>(b, side::left, trans::none, false, dl.cview(), wrong.view()), shape_error);
}
