// The shared pieces of the GGUF quantizers (quantizers/gguf/common.hpp).
#include <catch2/catch.hpp>

#include <yaqa/quantizers/gguf/common.hpp>

using namespace yaqa;

TEST_CASE("gguf quantizer helpers: row bytes, column and importance checks", "[gguf]") {
  CHECK(detail::gguf_row_bytes(ggml_type::q4_k, 512) == 2 * 144);
  CHECK(detail::gguf_row_bytes(ggml_type::q8_0, 96) == 3 * 34);
  CHECK_NOTHROW(detail::check_gguf_columns("t", ggml_type::q4_0, 64));
  CHECK_THROWS_AS(detail::check_gguf_columns("t", ggml_type::q4_k, 128), shape_error);
  CHECK_THROWS_WITH(detail::check_gguf_columns("t", ggml_type::q4_k, 300),
                    Catch::Contains("Q4_K") && Catch::Contains("300") && Catch::Contains("256"));
  CHECK_THROWS_AS(detail::check_gguf_columns("t", ggml_type::q8_0, 0), shape_error);
  CHECK_NOTHROW(detail::check_importance("t", {}, 64));
  CHECK_THROWS_AS(detail::check_importance("t", std::vector<float>(3, 1.f), 64), shape_error);
  CHECK_THROWS_AS(detail::check_importance("t", {1.f, NAN}, 2), non_finite_error);
  CHECK(detail::f16_round(1.0f / 3.0f) == 0.333251953125f);
}
