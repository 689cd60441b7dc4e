#include <catch2/catch.hpp>

#include <limits>
#include <utility>
#include <vector>

#include <hessian/reference_sketches.hpp>
#include <support/approx.hpp>
#include <support/backends.hpp>
#include <support/generators.hpp>
#include <yaqa/hessian/accumulator.hpp>
#include <yaqa/hessian/diagonal.hpp>

using namespace yaqa;

namespace {

// Batches of uneven sizes (an empty one included), generated in double and rounded to T so the
// oracle sees exactly the values the accumulator sees.
template <class T>
std::vector<matrix<T>> make_batches(yaqa::index n, std::vector<yaqa::index> rows, std::uint64_t seed) {
  std::vector<matrix<T>> out;
  for (std::size_t b = 0; b < rows.size(); ++b)
    out.push_back(test::random_matrix<T>(rows[b], n, seed + b, 1.0 + 0.5 * double(b)));
  return out;
}

template <class T>
std::vector<test::token_batch> as_reference(const std::vector<matrix<T>>& xs) {
  std::vector<test::token_batch> r;
  for (const auto& x : xs) r.push_back({x.template cast<double>(), Eigen::MatrixXd()});
  return r;
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("second_moment matches the naive per-token sum", "[hessian][second_moment]",
                        test::cpu_cases) {
  using T = typename TestType::scalar;
  for (yaqa::index n : {37, 130}) {  // 130 spans several GEMM chunks and is not a multiple of them
    const auto xs = make_batches<T>(n, {7, 0, 40, 1, 33}, 100 + n);
    const Eigen::MatrixXd expect = test::naive_xtx_sum(as_reference(xs), n);
    for (auto prec : {batch_precision::input, batch_precision::accumulator}) {
      second_moment<double> h(n, {.precision = prec});
      for (const auto& x : xs) h.add(view(x));
      CHECK(h.count() == 81);
      CHECK(h.batches() == 5);
      const matrix<double> s = h.sum();
      CHECK(s == s.transpose());
      // float products of float inputs are exact in double: the accumulator path is as exact as
      // double summation, the input path carries float rounding.
      const double tolerance = prec == batch_precision::accumulator ? 1e-13 : test::tol<T>();
      REQUIRE_THAT(Eigen::MatrixXd(s), test::IsClose(expect, tolerance));
      REQUIRE_THAT(Eigen::MatrixXd(h.mean()), test::IsClose(Eigen::MatrixXd(expect / 81.0), tolerance));
      // the packed sum is the tril-ordered lower triangle of sum()
      CHECK(h.packed_sum().to_full() == s);
    }
    // float accumulators work too (tolerance of float sums)
    second_moment<float> hf(n);
    for (const auto& x : xs) hf.add(view(x));
    REQUIRE_THAT(Eigen::MatrixXd(hf.mean().template cast<double>()),
                 test::IsClose(Eigen::MatrixXd(expect / 81.0), 2e-5));
  }
}

TEMPLATE_LIST_TEST_CASE("second_moment reads strided views", "[hessian][second_moment]", test::cpu_cases) {
  using T = typename TestType::scalar;
  const matrix<T> big = test::random_matrix<T>(50, 30, 7);
  const auto x = view(big).block(3, 2, 40, 21);  // ld 50, not contiguous
  second_moment<double> h(21);
  h.add(x);
  const matrix<T> dense = big.block(3, 2, 40, 21);
  const Eigen::MatrixXd expect = test::naive_xtx_sum(as_reference(std::vector<matrix<T>>{dense}), 21);
  REQUIRE_THAT(Eigen::MatrixXd(h.sum()), test::IsClose(expect, test::tol<T>()));
}

TEMPLATE_LIST_TEST_CASE("second_moment merge of single-batch shards is bitwise one pass",
                        "[hessian][second_moment][merge]", test::scalar_types) {
  using T = TestType;
  const yaqa::index n = 75;
  const auto xs = make_batches<T>(n, {20, 13, 0, 31, 9}, 300);
  second_moment<double> one(n);
  for (const auto& x : xs) one.add(view(x));
  second_moment<double> merged(n);
  for (const auto& x : xs) {
    second_moment<double> shard(n);
    shard.add(view(x));
    merged.merge(shard);
  }
  CHECK(merged.packed_sum() == one.packed_sum());  // bitwise, fp64 sums in a fixed order
  CHECK(merged.count() == one.count());
  CHECK(merged.batches() == one.batches());

  // shards of several batches: equal up to the reassociation of the sums
  second_moment<double> a(n), b(n);
  for (std::size_t k = 0; k < xs.size(); ++k) (k < 2 ? a : b).add(view(xs[k]));
  a.merge(b);
  CHECK(a.count() == one.count());
  REQUIRE_THAT(Eigen::MatrixXd(a.sum()), test::IsClose(Eigen::MatrixXd(one.sum()), 1e-14));

  // exactly representable data: any grouping is exact
  std::vector<matrix<double>> ints;
  for (int k = 0; k < 4; ++k) ints.push_back(test::random_matrix<double>(11, n, 400 + k).array().round().matrix());
  second_moment<double> all(n), s1(n), s2(n);
  for (int k = 0; k < 4; ++k) {
    all.add(view(ints[k]));
    (k % 2 ? s1 : s2).add(view(ints[k]));
  }
  s2.merge(s1);
  CHECK(s2.packed_sum() == all.packed_sum());
}

TEST_CASE("second_moment is bit-identical for 1, 2 and 3 threads", "[hessian][second_moment][determinism]") {
  const yaqa::index n = 301;
  const auto xs = make_batches<float>(n, {257, 100}, 500);
  second_moment<double> ref(n, {}, cpu_backend{1});
  for (const auto& x : xs) ref.add(view(x));
  for (int t : {2, 3}) {
    second_moment<double> h(n, {}, cpu_backend{t});
    for (const auto& x : xs) h.add(view(x));
    CHECK(h.packed_sum() == ref.packed_sum());
  }
}

TEST_CASE("second_moment rejects bad input with messages naming the batch", "[hessian][second_moment][errors]") {
  CHECK_THROWS_AS(second_moment<double>(0), yaqa::invalid_argument);
  second_moment<double> h(8);
  CHECK_THROWS_WITH(h.mean(), Catch::Contains("second_moment::mean") && Catch::Contains("count is 0"));
  const matrix<float> ok = test::random_matrix<float>(5, 8, 1);
  h.add(view(ok));
  h.add(view(ok));
  const matrix<float> wide = test::random_matrix<float>(5, 9, 2);
  CHECK_THROWS_WITH(h.add(view(wide)), Catch::Contains("second_moment::add") && Catch::Contains("'x'") &&
                                           Catch::Contains("batch 2") && Catch::Contains("T x 8") &&
                                           Catch::Contains("5x9"));
  CHECK_THROWS_AS(h.add(view(wide)), yaqa::shape_error);
  matrix<float> nan = ok;
  nan(3, 6) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(h.add(view(nan)), Catch::Contains("batch 2 of second_moment") &&
                                          Catch::Contains("NaN at (3, 6)"));
  nan(3, 6) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(h.add(view(nan)), yaqa::non_finite_error);
  // rejected batches left no trace; an empty batch is a counted no-op
  const matrix<double> before = h.sum();
  const matrix<float> empty(0, 8);
  h.add(view(empty));
  CHECK(h.count() == 10);
  CHECK(h.batches() == 3);
  CHECK(h.sum() == before);
  second_moment<double> other(9);
  CHECK_THROWS_AS(h.merge(other), yaqa::shape_error);
}

TEMPLATE_LIST_TEST_CASE("diagonal_second_moment matches the naive sum of squares and diag(E[xx^T])",
                        "[hessian][diagonal]", test::cpu_cases) {
  using T = typename TestType::scalar;
  const yaqa::index n = 131;
  const auto xs = make_batches<T>(n, {9, 0, 64, 3}, 600);
  const Eigen::MatrixXd full = test::naive_xtx_sum(as_reference(xs), n);
  for (auto prec : {batch_precision::input, batch_precision::accumulator}) {
    diagonal_second_moment<double> d(n, {.precision = prec});
    second_moment<double> h(n, {.precision = prec});
    for (const auto& x : xs) {
      d.add(view(x));
      h.add(view(x));
    }
    CHECK(d.count() == 76);
    const double tolerance = prec == batch_precision::accumulator ? 1e-13 : test::tol<T>();
    REQUIRE_THAT(Eigen::MatrixXd(d.sum()), test::IsClose(Eigen::MatrixXd(full.diagonal()), tolerance));
    REQUIRE_THAT(Eigen::MatrixXd(d.mean()), test::IsClose(Eigen::MatrixXd(h.mean().diagonal()), tolerance));
  }
}

TEST_CASE("diagonal_second_moment merges exactly and rejects bad input", "[hessian][diagonal][merge]") {
  const yaqa::index n = 40;
  const auto xs = make_batches<double>(n, {5, 17, 2}, 700);
  diagonal_second_moment<double> one(n), merged(n);
  for (const auto& x : xs) {
    one.add(view(x));
    diagonal_second_moment<double> shard(n, {}, cpu_backend{2});
    shard.add(view(x));
    merged.merge(shard);
  }
  CHECK(merged.sum() == one.sum());
  CHECK(merged.count() == 24);

  diagonal_second_moment<double> d(n);
  CHECK_THROWS_WITH(d.mean(), Catch::Contains("count is 0"));
  matrix<double> bad = xs[1];
  bad(16, 39) = -std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(d.add(view(bad)), Catch::Contains("batch 0 of diagonal_second_moment") &&
                                          Catch::Contains("Inf at (16, 39)"));
  const matrix<double> narrow(3, 39);
  CHECK_THROWS_AS(d.add(view(narrow)), yaqa::shape_error);
  diagonal_second_moment<double> other(41);
  CHECK_THROWS_AS(d.merge(other), yaqa::shape_error);
}
