#include <catch2/catch.hpp>

#include <limits>
#include <utility>
#include <vector>

#include <support/backends.hpp>
#include <support/generators.hpp>
#include <yaqa/hessian/packed_symmetric.hpp>

using namespace yaqa;

TEMPLATE_LIST_TEST_CASE("packed_symmetric uses torch.tril_indices order", "[hessian][packed]",
                        test::scalar_types) {
  using T = TestType;
  // torch.tril_indices(4, 4) = rows [0,1,1,2,2,2,3,3,3,3], cols [0,0,1,0,1,2,0,1,2,3], by hand.
  const std::vector<std::pair<int, int>> tril = {{0, 0}, {1, 0}, {1, 1}, {2, 0}, {2, 1},
                                                 {2, 2}, {3, 0}, {3, 1}, {3, 2}, {3, 3}};
  matrix<T> a(4, 4);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) a(i, j) = T(10 * std::max(i, j) + std::min(i, j));  // a(i,j) = "ij"
  const auto p = packed_symmetric<T>::from_full(view(std::as_const(a)));
  REQUIRE(p.dim() == 4);
  REQUIRE(p.size() == 10);
  for (std::size_t k = 0; k < tril.size(); ++k) {
    const auto [i, j] = tril[k];
    CHECK(p.data()[k] == T(10 * i + j));
    CHECK(packed_symmetric<T>::offset(i, j) == k);
    CHECK(p(i, j) == a(i, j));
    CHECK(p(j, i) == a(i, j));
  }
  CHECK(p.to_full() == a);
}

TEMPLATE_LIST_TEST_CASE("packed_symmetric round-trips full and packed forms", "[hessian][packed]",
                        test::scalar_types) {
  using T = TestType;
  for (yaqa::index n : {0, 1, 2, 37, 130}) {
    const matrix<T> h = n > 0 ? test::random_spd<T>(n, 100.0, 40 + n) : matrix<T>(0, 0);
    const auto p = packed_symmetric<T>::from_full(view(h));
    REQUIRE(p.size() == std::size_t(n * (n + 1) / 2));
    const matrix<T> back = p.to_full();
    // random_spd is symmetric to rounding only; the lower triangle must come back exactly
    CHECK(back.template triangularView<Eigen::Lower>().toDenseMatrix() ==
          h.template triangularView<Eigen::Lower>().toDenseMatrix());
    CHECK(back == back.transpose());
    const auto q = packed_symmetric<T>::from_packed(p.data(), p.size());
    CHECK(q.dim() == n);
    CHECK(q == p);
    const auto d = p.template cast<double>();
    CHECK(d.dim() == n);
    if (n > 0) CHECK(d.data()[p.size() - 1] == double(p.data()[p.size() - 1]));
  }
  // unpack into a strided view
  const auto p = packed_symmetric<T>::from_full(view(test::random_spd<T>(5, 10.0, 3)));
  matrix<T> big = matrix<T>::Constant(8, 6, T(-7));
  p.to_full(view(big).block(1, 0, 5, 5));
  CHECK(big.block(1, 0, 5, 5) == p.to_full());
  CHECK(big(0, 0) == T(-7));
  CHECK(big(6, 0) == T(-7));
}

TEST_CASE("packed_symmetric::from_packed deduces n and rejects non-triangular counts", "[hessian][packed]") {
  std::vector<float> v(15, 1.f);
  for (std::size_t count : {0u, 1u, 3u, 6u, 10u, 15u}) {
    const auto p = packed_symmetric<float>::from_packed(v.data(), count);
    CHECK(packed_symmetric<float>::packed_size(p.dim()) == count);
  }
  CHECK(packed_symmetric<float>::from_packed(nullptr, 0).dim() == 0);
  CHECK_THROWS_WITH(packed_symmetric<float>::from_packed(v.data(), 11),
                    Catch::Contains("from_packed") && Catch::Contains("'count'") &&
                        Catch::Contains("triangular") && Catch::Contains("got 11"));
  CHECK_THROWS_AS(packed_symmetric<float>::from_packed(v.data(), 2), yaqa::invalid_argument);
  CHECK_THROWS_AS(packed_symmetric<float>::from_packed(nullptr, 3), yaqa::invalid_argument);
  // large counts (n = 28672, a Llama down_proj input): the count is rejected before any read
  const std::size_t big = packed_symmetric<double>::packed_size(28672);
  CHECK(big == std::size_t(28672) * 28673 / 2);
  CHECK_THROWS_WITH(packed_symmetric<float>::from_packed(v.data(), big + 1), Catch::Contains("n = 28672"));
  CHECK_THROWS_AS(packed_symmetric<float>(-1), yaqa::invalid_argument);
}

TEST_CASE("packed_symmetric::from_full checks shape, finiteness and symmetry", "[hessian][packed]") {
  matrix<double> rect(3, 4);
  rect.setZero();
  CHECK_THROWS_AS(packed_symmetric<double>::from_full(view(std::as_const(rect))), yaqa::shape_error);

  matrix<double> h = test::random_spd<double>(6, 10.0, 1);
  h(4, 1) += 1e-3;  // clearly not symmetric
  CHECK_THROWS_WITH(packed_symmetric<double>::from_full(view(std::as_const(h))),
                    Catch::Contains("from_full") && Catch::Contains("symmetric") &&
                        Catch::Contains("a(4,1)"));
  // a looser tolerance accepts it, and infinity skips the check; the lower triangle is kept
  const auto p = packed_symmetric<double>::from_full(view(std::as_const(h)), 1e-2);
  CHECK(p(4, 1) == h(4, 1));
  CHECK(p(1, 4) == h(4, 1));
  CHECK_NOTHROW(packed_symmetric<double>::from_full(view(std::as_const(h)),
                                                    std::numeric_limits<double>::infinity()));
  // rounding-level asymmetry (a plain GEMM X^T X) passes the default tolerance
  const matrix<float> x = test::random_matrix<float>(300, 40, 2);
  const matrix<float> xtx = x.transpose() * x;
  CHECK_NOTHROW(packed_symmetric<float>::from_full(view(xtx)));

  matrix<double> bad = test::random_spd<double>(4, 10.0, 2);
  bad(2, 2) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(packed_symmetric<double>::from_full(view(std::as_const(bad))), yaqa::non_finite_error);
}
