#pragma once
// Relative-Frobenius comparisons and Catch2 matchers for matrices.
#include <sstream>
#include <string>

#include <catch2/catch.hpp>
#include <Eigen/Core>

namespace yaqa::test {

//! ||a - b||_F / max(||b||_F, tiny), computed in double.
template <class A, class B>
double rel_frobenius(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  const Eigen::MatrixXd da = a.template cast<double>();
  const Eigen::MatrixXd db = b.template cast<double>();
  const double den = db.norm();
  return (da - db).norm() / (den > 1e-300 ? den : 1.0);
}

//! Catch2 matcher: REQUIRE_THAT(actual, IsClose(expected, 1e-10)).
class rel_frobenius_matcher : public Catch::MatcherBase<Eigen::MatrixXd> {
 public:
  rel_frobenius_matcher(Eigen::MatrixXd expected, double tol) : expected_(std::move(expected)), tol_(tol) {}
  bool match(const Eigen::MatrixXd& actual) const override {
    if (actual.rows() != expected_.rows() || actual.cols() != expected_.cols()) return false;
    last_ = rel_frobenius(actual, expected_);
    return last_ <= tol_;
  }
  std::string describe() const override {
    std::ostringstream os;
    os << "is within relative Frobenius distance " << tol_ << " of the expected " << expected_.rows()
       << "x" << expected_.cols() << " matrix (got " << last_ << ")";
    return os.str();
  }

 private:
  Eigen::MatrixXd expected_;
  double tol_;
  mutable double last_ = -1;
};

template <class E>
rel_frobenius_matcher IsClose(const Eigen::MatrixBase<E>& expected, double tol) {
  return rel_frobenius_matcher(expected.template cast<double>(), tol);
}

//! Default tolerance for a routine's result in scalar type T.
template <class T>
constexpr double tol() {
  return sizeof(T) == 4 ? 2e-5 : 1e-11;
}

//! Fraction of entries where a and b differ (codes of two implementations).
template <class A, class B>
double mismatch_fraction(const A& a, const B& b) {
  return a.size() == 0 ? 0.0 : double((a.array() != b.array()).count()) / double(a.size());
}

}  // namespace yaqa::test
