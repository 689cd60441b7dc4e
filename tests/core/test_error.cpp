#include <catch2/catch.hpp>

#include <new>
#include <stdexcept>
#include <string>

#include <yaqa/core/error.hpp>

using namespace yaqa;

TEST_CASE("classify_error and throw_error_class round-trip every class", "[core][error]") {
  for (int k = 1; k <= 10; ++k) {
    const auto c = error_class(k);
    try {
      throw_error_class(c, "message " + std::to_string(k));
    } catch (const std::exception& e) {
      CHECK(classify_error(e) == c);
      if (c != error_class::bad_alloc) CHECK(std::string(e.what()) == "message " + std::to_string(k));
      CHECK(std::string(error_class_name(c)).size() > 5);
    }
  }
  // the most derived class wins; a foreign exception is "other"
  CHECK(classify_error(format_error("x")) == error_class::format_error);
  CHECK(classify_error(shape_error("x")) == error_class::shape_error);
  CHECK(classify_error(std::out_of_range("x")) == error_class::other);
  CHECK_THROWS_AS(throw_error_class(error_class(77), "x"), std::runtime_error);
  CHECK(std::string(error_class_name(error_class::non_finite_error)) == "yaqa::non_finite_error");
}
