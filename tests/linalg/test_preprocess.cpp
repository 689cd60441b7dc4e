#include <limits>
#include <string>

#include <catch2/catch.hpp>

#include <support/approx.hpp>
#include <support/text.hpp>
#include <support/backends.hpp>
#include <support/generators.hpp>
#include <yaqa/linalg/preprocess.hpp>

using namespace yaqa;

namespace {

template <class E>
std::string message_of(E&& f) {
  try {
    f();
  } catch (const yaqa::error& e) {
    return e.what();
  }
  return "(no exception)";
}

using yaqa::test::contains;

}  // namespace

TEMPLATE_TEST_CASE("normalize_factor divides by the mean diagonal of the live inputs", "[linalg][preprocess]",
                   float, double) {
  using T = TestType;
  const yaqa::index n = 37;
  matrix<T> h = test::random_second_moment<T>(n, 80, 3);
  h *= T(7.5);  // an arbitrary scale that normalization removes
  for (yaqa::index d : {4, 19, 36}) {  // dead inputs: an input that was never non-zero
    h.row(d).setZero();
    h.col(d).setZero();
  }
  const Eigen::MatrixXd h0 = h.template cast<double>();
  double sum = 0;
  for (yaqa::index i = 0; i < n; ++i) sum += h0(i, i);
  const double mean = sum / double(n - 3);

  const factor_report rep = normalize_factor(view(h), "H_in");
  CHECK_FALSE(rep.replaced_by_identity);
  CHECK(rep.mean_diagonal == Approx(mean).epsilon(1e-12));
  REQUIRE(rep.dead == std::vector<yaqa::index>{4, 19, 36});

  Eigen::MatrixXd expect = h0 / mean;
  for (yaqa::index d : rep.dead) expect(d, d) = 1.0;
  REQUIRE_THAT(Eigen::MatrixXd(h.template cast<double>()), test::IsClose(expect, sizeof(T) == 4 ? 1e-6 : 1e-14));
  CHECK(h == h.transpose());  // exactly symmetric
  double live_sum = 0;
  for (yaqa::index i = 0; i < n; ++i)
    if (i != 4 && i != 19 && i != 36) live_sum += double(h(i, i));
  CHECK(live_sum / double(n - 3) == Approx(1.0).epsilon(1e-6));
  for (yaqa::index k = 0; k < n; ++k)
    if (k != 19) {
      CHECK(h(19, k) == T(0));
      CHECK(h(k, 19) == T(0));
    }
}

TEMPLATE_TEST_CASE("normalize_factor replaces an all-zero or non-positive-trace factor by I", "[linalg][preprocess]",
                   float, double) {
  using T = TestType;
  matrix<T> z = matrix<T>::Zero(9, 9);
  const factor_report rep = normalize_factor(view(z), "H_out");
  CHECK(rep.replaced_by_identity);
  CHECK(rep.mean_diagonal == 0.0);
  CHECK(rep.dead.empty());  // no weight row gets zeroed for a factor that carries no information
  CHECK(z == matrix<T>::Identity(9, 9));

  matrix<T> neg = -matrix<T>::Identity(5, 5);  // trace < 0: not a second moment of anything
  neg(0, 0) = T(2);                            // sum of diagonal 2 - 4 = -2
  const factor_report r2 = normalize_factor(view(neg), "H_out");
  CHECK(r2.replaced_by_identity);
  CHECK(neg == matrix<T>::Identity(5, 5));

  matrix<T> empty(0, 0);
  const factor_report r3 = normalize_factor(view(empty), "H_in");
  CHECK_FALSE(r3.replaced_by_identity);
  CHECK(r3.dead.empty());
}

TEMPLATE_TEST_CASE("normalize_factor rejects bad factors with messages naming the factor", "[linalg][preprocess]",
                   float, double) {
  using T = TestType;
  matrix<T> h = test::random_spd<T>(12, 10.0, 4);
  h(3, 7) = std::numeric_limits<T>::quiet_NaN();
  std::string msg = message_of([&] { normalize_factor(view(h), "H_in"); });
  CHECK(contains(msg, "yaqa::normalize_factor"));
  CHECK(contains(msg, "'H_in'"));
  CHECK(contains(msg, "NaN"));
  CHECK(contains(msg, "(3, 7)"));
  CHECK_THROWS_AS(normalize_factor(view(h), "H_in"), non_finite_error);

  h = test::random_spd<T>(12, 10.0, 4);
  h(5, 5) = std::numeric_limits<T>::infinity();
  CHECK_THROWS_AS(normalize_factor(view(h), "H_out"), non_finite_error);
  CHECK(contains(message_of([&] { normalize_factor(view(h), "H_out"); }), "Inf"));

  matrix<T> rect(4, 5);
  rect.setOnes();
  CHECK_THROWS_AS(normalize_factor(view(rect), "H_in"), shape_error);
  msg = message_of([&] { normalize_factor(view(rect), "H_in"); });
  CHECK(contains(msg, "'H_in'"));
  CHECK(contains(msg, "square"));
  CHECK(contains(msg, "4x5"));

  // A non-symmetric matrix (e.g. a weight passed by mistake) is refused ...
  matrix<T> asym = test::random_spd<T>(12, 10.0, 4);
  asym(8, 2) += T(0.1) * asym.cwiseAbs().maxCoeff();
  msg = message_of([&] { normalize_factor(view(asym), "H_out"); });
  CHECK(contains(msg, "'H_out'"));
  CHECK(contains(msg, "symmetric"));
  CHECK(contains(msg, "h(8, 2)"));
  CHECK_THROWS_AS(normalize_factor(view(asym), "H_out"), yaqa::invalid_argument);
  // ... but fp32 accumulation noise is accepted and averaged away.
  matrix<T> noisy = test::random_spd<T>(12, 10.0, 4);
  noisy(8, 2) *= T(1 + 1e-6);
  const T avg = T(0.5 * (double(noisy(8, 2)) + double(noisy(2, 8))));
  const double m = double(noisy.diagonal().template cast<double>().mean());
  REQUIRE_NOTHROW(normalize_factor(view(noisy), "H_out"));
  CHECK(noisy(8, 2) == noisy(2, 8));
  CHECK(double(noisy(8, 2)) == Approx(double(avg) / m).epsilon(1e-6));
}

TEMPLATE_TEST_CASE("zero_columns and zero_rows clear exactly the listed lines", "[linalg][preprocess]", float,
                   double) {
  using T = TestType;
  const matrix<T> w0 = test::random_weights<T>(13, 29, 5);
  matrix<T> w = w0;
  zero_columns(view(w), {0, 7, 28});
  for (yaqa::index j = 0; j < 29; ++j) {
    const bool dead = j == 0 || j == 7 || j == 28;
    CHECK((dead ? w.col(j).isZero(0) : w.col(j) == w0.col(j)));
  }
  matrix<T> v = w0;
  zero_rows(view(v), {3, 12});
  for (yaqa::index i = 0; i < 13; ++i) {
    const bool dead = i == 3 || i == 12;
    CHECK((dead ? v.row(i).isZero(0) : v.row(i) == w0.row(i)));
  }
  // a view with a leading dimension: only the viewed block is touched
  matrix<T> big = w0;
  auto sub = view(big).block(2, 3, 6, 10);
  zero_columns(sub, {1});
  CHECK(big.col(4).segment(2, 6).isZero(0));
  CHECK(big.col(4).head(2) == w0.col(4).head(2));
  CHECK(big.col(4).tail(5) == w0.col(4).tail(5));

  const std::string msg = message_of([&] { zero_columns(view(w), {29}); });
  CHECK(contains(msg, "yaqa::zero_columns"));
  CHECK(contains(msg, "29"));
  CHECK_THROWS_AS(zero_rows(view(v), {-1}), yaqa::invalid_argument);
  CHECK_THROWS_AS(zero_rows(view(v), {13}), yaqa::invalid_argument);
}
