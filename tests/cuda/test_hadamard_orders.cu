// The device random Hadamard transform at orders that are not powers of two (a dense Hadamard
// or seeded orthogonal factor G next to the Sylvester part) against random_hadamard::apply. The
// dense part is a cuBLAS GEMM, so the comparison is to a tolerance, not bitwise (see
// kernels/hadamard.cuh). Other dimensions are not multiples of 8; views are strided (ld > rows)
// and contiguous (the one-GEMM path of side::right).
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include <cuda/cuda_support.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>

using namespace yaqa;

TEMPLATE_TEST_CASE("cuda hadamard_apply matches random_hadamard::apply at non-power-of-two orders",
                   "[cuda][linalg][hadamard]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  struct order {
    yaqa::index n;
    const char* description;
  };
  for (const order& o : std::vector<order>{
           {12, "hadamard(12)"},                       // P = 1: G alone
           {28, "hadamard(28)"},                       // P = 1 (Paley I, q = 27 = 3^3)
           {96, "hadamard(12) x sylvester(8)"},        // formerly rejected on the device
           {640, "hadamard(20) x sylvester(32)"},
           {768, "hadamard(12) x sylvester(64)"},
           {14336, "hadamard(28) x sylvester(512)"},   // a LLaMA width
           {92, "orthogonal(23) x sylvester(4)"},      // 4 x 23 = 92: no Paley construction
           {2752, "orthogonal(43) x sylvester(64)"},   // 172 x 16: 172 unreachable
           {42, "orthogonal(21) x sylvester(2)"},
           {257, "orthogonal(257)"},                   // a prime: a dense random rotation
           {196608, "hadamard(12) x sylvester(16384)"}  // P over 48 KiB: global FWHT passes
       }) {
    const random_hadamard u(o.n, 500 + std::uint64_t(o.n));
    REQUIRE(u.description() == o.description);
    const yaqa::index other = o.n > 20000 ? 3 : (o.n > 4096 ? 5 : 37);
    for (int s = 0; s < 2; ++s)
      for (int t = 0; t < 2; ++t)
        for (yaqa::index pad : {0, 3}) {
          const side sd = s ? side::right : side::left;
          const trans tr = t ? trans::transpose : trans::none;
          const yaqa::index rows = s ? other : o.n, cols = s ? o.n : other;
          const yaqa::index r0 = pad > 0 ? 1 : 0;
          const matrix<T> big = test::random_matrix<T>(rows + pad, cols, 60 + std::uint64_t(o.n));
          auto dbig = test::upload(big);
          cuda::hadamard_apply<T>(b, u, sd, tr, dbig.view().block(r0, 0, rows, cols));
          matrix<T> x = big.block(r0, 0, rows, cols);
          u.apply<T>(sd, tr, view(x));
          const matrix<T> g = test::download(dbig);
          INFO(o.description << " side=" << s << " trans=" << t << " pad=" << pad);
          REQUIRE_THAT(Eigen::MatrixXd(g.block(r0, 0, rows, cols).template cast<double>()),
                       test::IsClose(x, test::gpu_tol<T>()));
          if (pad > 0) {  // rows outside the view untouched
            CHECK(g.row(0) == big.row(0));
            CHECK(g.row(rows + pad - 1) == big.row(rows + pad - 1));
          }
        }
  }
}

TEMPLATE_TEST_CASE("cuda hadamard_apply: U^T undoes U at non-power-of-two orders", "[cuda][linalg][hadamard]",
                   float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  for (yaqa::index n : {768, 2752}) {
    const random_hadamard u(n, 3);
    const matrix<T> x0 = test::random_matrix<T>(11, n, 4);
    auto d = test::upload(x0);
    cuda::hadamard_apply<T>(b, u, side::right, trans::none, d.view());
    cuda::hadamard_apply<T>(b, u, side::right, trans::transpose, d.view());
    INFO("n=" << n);
    REQUIRE_THAT(Eigen::MatrixXd(test::download(d).template cast<double>()), test::IsClose(x0, test::gpu_tol<T>()));
  }
  cuda::device_matrix<T> x(b, 96, 3);
  CHECK_THROWS_AS(cuda::hadamard_apply<T>(b, random_hadamard(768, 1), side::left, trans::none, x.view()),
                  shape_error);
  CHECK_THROWS_AS(cuda::hadamard_apply<T>(b, random_hadamard(96, 1), side::right, trans::none, x.view()),
                  shape_error);
}
