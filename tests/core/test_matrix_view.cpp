#include <type_traits>

#include <catch2/catch.hpp>

#include <support/generators.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/matrix_view.hpp>

using namespace yaqa;

TEST_CASE("matrix_view addresses column-major data with a leading dimension", "[core]") {
  static_assert(std::is_trivially_copyable_v<matrix_view<float>>);
  std::vector<double> buf(7 * 5);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = double(i);
  matrix_view<double> v(buf.data(), 6, 5, 7);  // 6 x 5 inside a 7 x 5 buffer
  CHECK(v(0, 0) == 0.0);
  CHECK(v(5, 0) == 5.0);
  CHECK(v(0, 1) == 7.0);
  CHECK(v(3, 4) == 31.0);
  auto b = v.block(2, 1, 3, 2);
  CHECK(b.rows == 3);
  CHECK(b.cols == 2);
  CHECK(b.ld == 7);
  CHECK(b(0, 0) == v(2, 1));
  CHECK(b(2, 1) == v(4, 2));
  matrix_view<const double> cv = v;  // implicit const conversion
  CHECK(cv(1, 1) == 8.0);
  CHECK_FALSE(v.contiguous());
  CHECK(matrix_view<double>(buf.data(), 7, 5).contiguous());
}

TEST_CASE("Eigen bridges keep the leading dimension", "[core]") {
  matrix<float> m = test::random_matrix<float>(9, 4, 3);
  auto v = view(m);
  CHECK(v.ld == 9);
  auto sub = v.block(1, 1, 5, 2);
  auto e = as_eigen(sub);
  CHECK(e.rows() == 5);
  CHECK(e(4, 1) == m(5, 2));
  e(0, 0) = 42.f;
  CHECK(m(1, 1) == 42.f);
}

TEST_CASE("check_shape and check_finite name the argument and the expectation", "[core]") {
  matrix<double> m = matrix<double>::Zero(3, 4);
  CHECK_NOTHROW(check_shape("f", "H", view(std::as_const(m)), 3, 4));
  try {
    check_shape("yaqa::f", "H_in", view(std::as_const(m)), 4, 4);
    FAIL("expected shape_error");
  } catch (const shape_error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("H_in") != std::string::npos);
    CHECK(msg.find("4x4") != std::string::npos);
    CHECK(msg.find("3x4") != std::string::npos);
  }
  m(2, 1) = std::numeric_limits<double>::quiet_NaN();
  try {
    check_finite("yaqa::f", "W", view(std::as_const(m)));
    FAIL("expected non_finite_error");
  } catch (const non_finite_error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("'W'") != std::string::npos);
    CHECK(msg.find("NaN") != std::string::npos);
    CHECK(msg.find("(2, 1)") != std::string::npos);
  }
  // every library exception is a yaqa::error
  CHECK_THROWS_AS(check_finite("f", "W", view(std::as_const(m))), yaqa::error);
}
