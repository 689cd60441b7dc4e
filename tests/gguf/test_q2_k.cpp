// GGUF Q2_K (quantizers/gguf/q2_k.hpp).
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include <catch2/catch.hpp>

#include <gguf/gguf_checks.hpp>
#include <gguf/k_quant_checks.hpp>
#include <yaqa/quantizers/gguf/q2_k.hpp>

using namespace yaqa;
using namespace yaqa::test;

static_assert(gguf_quantizer<gguf_q2_k<float>> && gguf_quantizer<gguf_q2_k<double>>);

TEST_CASE("gguf Q2_K: basic properties", "[gguf][q2_k]") {
  const gguf_q2_k<float> q;
  CHECK(gguf_q2_k<float>::block_size == 256);
  CHECK(q.bits_per_weight() == 2.0);
  CHECK(q.group_cols(512) == 16);
  CHECK(q.storage_bits(5, 768) == std::size_t(5 * 3 * 84 * 8));
  CHECK_THROWS_AS(q.group_cols(272), shape_error);
  const matrix<float> w = gguf_test_weights<float>(2, 256, 1);
  CHECK_THROWS_AS(q.fit(view(w).col_block(0, 16)), invalid_argument);
}

TEMPLATE_TEST_CASE("gguf Q2_K: generic checks, float and double, with and without importance", "[gguf][q2_k]",
                   gguf_q2_k<float>, gguf_q2_k<double>) {
  using T = typename TestType::scalar_type;
  const std::array<std::array<yaqa::index, 2>, 3> shapes{{{7, 768}, {3, 256}, {13, 512}}};
  std::uint64_t seed = 21;
  for (const auto& s : shapes) {
    for (const bool imp : {false, true}) {
      INFO(s[0] << "x" << s[1] << (imp ? " importance" : " uniform"));
      gguf_quant_options o;
      if (imp) o.importance = gguf_test_importance(s[1], seed + 1);
      const TestType q(o);
      const matrix<T> w = gguf_test_weights<T>(s[0], s[1], seed);
      check_gguf_roundtrip(q, w);
      check_gguf_feedback_helps(q, w, seed + 2);
      seed += 10;
    }
  }
  check_gguf_bad_inputs(TestType{});
}

TEMPLATE_TEST_CASE("gguf Q2_K: codes are the nearest levels of the fitted scales", "[gguf][q2_k]", gguf_q2_k<float>,
                   gguf_q2_k<double>) {
  using T = typename TestType::scalar_type;
  const matrix<T> w = gguf_test_weights<T>(6, 512, 3);
  check_k_nearest_codes(TestType{}, w, 2);
  gguf_quant_options o;
  o.importance = gguf_test_importance(512, 4);
  check_k_nearest_codes(TestType(o), w, 2);
}

TEST_CASE("gguf Q2_K: fitted scales equal a transcription of llama.cpp's fit", "[gguf][q2_k]") {
  for (const bool imp : {false, true}) {
    INFO((imp ? "importance (quantize_row_q2_K_impl)" : "reference (quantize_row_q2_K_ref)"));
    gguf_quant_options o;
    if (imp) o.importance = gguf_test_importance(768, 8);
    const matrix<float> w = gguf_test_weights<float>(5, 768, 9);
    check_k_fit_matches_reference(gguf_q2_k<float>(o), w,
                                  [](const float* x, const float* qw) { return kref::fit_q2(x, qw); });
  }
}

TEST_CASE("gguf Q2_K: importance-weighted error drops with the importance fit", "[gguf][q2_k]") {
  check_k_importance_helps<gguf_q2_k>(8, 512);
}

TEST_CASE("gguf Q2_K: decode of a hand-built block", "[gguf][q2_k]") {
  // block_q2_K: scales[16] (scale low nibble, min high nibble), qs[64], d, dmin (fp16).
  std::array<int, 16> sc{}, mn{};
  std::array<int, 256> q{};
  for (int j = 0; j < 16; ++j) {
    sc[j] = (j * 5 + 1) % 16;
    mn[j] = (j * 3 + 7) % 16;
  }
  for (int k = 0; k < 256; ++k) q[k] = (k * 5 + k / 16) % 4;
  std::vector<std::byte> bytes(84, std::byte{0});
  for (int j = 0; j < 16; ++j) bytes[j] = std::byte(std::uint8_t(sc[j] | (mn[j] << 4)));
  // qs byte 16 + 32h + l: codes 128h + l, +32, +64, +96 in bit pairs 0, 2, 4, 6.
  for (int k = 0; k < 256; ++k) {
    const int h = k / 128, s = (k % 128) / 32, l = k % 32;
    bytes[16 + 32 * h + l] |= std::byte(std::uint8_t(q[k] << (2 * s)));
  }
  bytes[80] = std::byte{0x00};  // d = 2.0 = 0x4000
  bytes[81] = std::byte{0x40};
  bytes[82] = std::byte{0x00};  // dmin = 0.125 = 0x3000
  bytes[83] = std::byte{0x30};
  const matrix<float> d = gguf_q2_k<float>::decode(std::span<const std::byte>(bytes), 1, 256);
  yaqa::index bad = 0;
  for (int k = 0; k < 256; ++k) {
    const int j = k / 16;
    const float v = float(2.0 * sc[j] * q[k]) - 0.125f * float(mn[j]);
    bad += d(0, k) != v;
  }
  CHECK(bad == 0);
  CHECK(d(0, 17) == float(2.0 * 6 * ((17 * 5 + 1) % 4)) - 0.125f * 10);  // sub-block 1: scale 6, min 10
  std::vector<gguf_scale_min_params> ps(16);
  matrix<std::uint8_t> codes(1, 256);
  for (int k = 0; k < 256; ++k) codes(0, k) = std::uint8_t(q[k]);
  for (int j = 0; j < 16; ++j) {
    ps[j].resize(1);
    detail::set_scale_min_row(ps[j], 0, 0x4000, 0x3000, std::uint8_t(sc[j]), std::uint8_t(mn[j]));
  }
  std::vector<std::byte> out(84);
  gguf_q2_k<float>{}.encode(view(codes), ps, std::span<std::byte>(out));
  CHECK(out == bytes);
  codes(0, 5) = 4;  // not a 2-bit code
  CHECK_THROWS_AS(gguf_q2_k<float>{}.encode(view(codes), ps, std::span<std::byte>(out)), invalid_argument);
}
