// GGUF Q4_K and Q5_K (quantizers/gguf/q4_k.hpp).
#include <array>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#include <gguf/gguf_checks.hpp>
#include <gguf/k_quant_checks.hpp>
#include <yaqa/quantizers/gguf/q4_k.hpp>

using namespace yaqa;
using namespace yaqa::test;

static_assert(gguf_quantizer<gguf_q4_k<float>> && gguf_quantizer<gguf_q4_k<double>>);
static_assert(gguf_quantizer<gguf_q5_k<float>> && gguf_quantizer<gguf_q5_k<double>>);

TEMPLATE_TEST_CASE("gguf Q4_K / Q5_K: basic properties", "[gguf][q4_k]", gguf_q4_k<float>, gguf_q5_k<double>) {
  const TestType q;
  const bool five = TestType::type == ggml_type::q5_k;
  CHECK(TestType::block_size == 256);
  CHECK(q.bits_per_weight() == (five ? 5.0 : 4.0));
  CHECK(q.group_cols(768) == 32);
  CHECK(q.storage_bits(3, 512) == std::size_t(3 * 2 * (five ? 176 : 144) * 8));
  CHECK_THROWS_AS(q.group_cols(288), shape_error);
  matrix<typename TestType::scalar_type> w = gguf_test_weights<typename TestType::scalar_type>(2, 256, 1);
  CHECK_THROWS_AS(q.fit(view(w).col_block(0, 32)), invalid_argument);
  CHECK_THROWS_WITH(q.fit(view(w).col_block(0, 32)), Catch::Contains("fit_all"));
  w(1, 40) = typename TestType::scalar_type(1e9);  // d = max scale / 63 beyond fp16
  CHECK_THROWS_WITH(q.fit_all(view(w)), Catch::Contains("overflows fp16"));
  if constexpr (std::is_same_v<typename TestType::scalar_type, double>) {
    w(1, 40) = 1e300;
    CHECK_THROWS_AS(q.fit_all(view(w)), non_finite_error);
  }
}

TEMPLATE_TEST_CASE("gguf Q4_K / Q5_K: generic checks, float and double, with and without importance",
                   "[gguf][q4_k]", gguf_q4_k<float>, gguf_q4_k<double>, gguf_q5_k<float>, gguf_q5_k<double>) {
  using T = typename TestType::scalar_type;
  const std::array<std::array<yaqa::index, 2>, 3> shapes{{{7, 768}, {3, 256}, {13, 512}}};
  std::uint64_t seed = 11;
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

TEMPLATE_TEST_CASE("gguf Q4_K / Q5_K: codes are the nearest levels of the fitted scales", "[gguf][q4_k]",
                   gguf_q4_k<float>, gguf_q4_k<double>, gguf_q5_k<float>) {
  using T = typename TestType::scalar_type;
  const int bits = TestType::type == ggml_type::q5_k ? 5 : 4;
  const matrix<T> w = gguf_test_weights<T>(6, 512, 3);
  check_k_nearest_codes(TestType{}, w, bits);
  gguf_quant_options o;
  o.importance = gguf_test_importance(512, 4);
  check_k_nearest_codes(TestType(o), w, bits);
}

TEST_CASE("gguf Q4_K / Q5_K: fitted scales equal a transcription of llama.cpp's fit", "[gguf][q4_k]") {
  for (const bool imp : {false, true}) {
    INFO((imp ? "importance (quantize_row_q*_K_impl)" : "reference (quantize_row_q*_K_ref)"));
    gguf_quant_options o;
    if (imp) o.importance = gguf_test_importance(768, 8);
    const matrix<float> w = gguf_test_weights<float>(5, 768, 9);
    check_k_fit_matches_reference(gguf_q4_k<float>(o), w,
                                  [](const float* x, const float* qw) { return kref::fit_k4(x, qw, 4); });
    check_k_fit_matches_reference(gguf_q5_k<float>(o), w,
                                  [](const float* x, const float* qw) { return kref::fit_k4(x, qw, 5); });
    // Double input: fitted from the values rounded to float, as llama.cpp sees them.
    const matrix<double> wd = w.cast<double>();
    check_k_fit_matches_reference(gguf_q4_k<double>(o), wd,
                                  [](const float* x, const float* qw) { return kref::fit_k4(x, qw, 4); });
  }
}

TEST_CASE("gguf Q4_K / Q5_K: importance-weighted error drops with the importance fit", "[gguf][q4_k]") {
  check_k_importance_helps<gguf_q4_k>(8, 512);
  check_k_importance_helps<gguf_q5_k>(8, 512);
}

namespace {

// A Q4_K / Q5_K block built by hand from ggml-common.h's layout: d = 0.5, dmin = 0.25, sub-block
// scales and mins above 15 in sub-blocks 4..7 (their top 2 bits live in bytes 0-7).
struct hand_block {
  std::array<int, 8> sc{3, 17, 63, 0, 45, 50, 61, 33};
  std::array<int, 8> mn{60, 5, 12, 31, 16, 63, 2, 47};
  std::array<int, 256> q{};
  std::vector<std::byte> bytes;
  explicit hand_block(int bits) {
    for (int k = 0; k < 256; ++k) q[k] = (k * 7 + k / 32) % (1 << bits);
    std::array<std::uint8_t, 12> s{};
    // Bit diagram of the 12 scale bytes (gguf-py's get_scale_min):
    //  0..3  EEAAAAAA: sc_j (j < 4) low 6 bits, top 2 bits of sc_{j+4}
    //  4..7  eeaaaaaa: m_j  (j < 4) low 6 bits, top 2 bits of m_{j+4}
    //  8..11 eeeeEEEE: low 4 bits of sc_{j+4} (low nibble) and of m_{j+4} (high nibble)
    for (int j = 0; j < 4; ++j) {
      s[j] = std::uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
      s[4 + j] = std::uint8_t(mn[j] | ((mn[j + 4] >> 4) << 6));
      s[8 + j] = std::uint8_t((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
    }
    bytes.assign(bits == 4 ? 144 : 176, std::byte{0});
    bytes[0] = std::byte{0x00};  // d = 0.5 = 0x3800
    bytes[1] = std::byte{0x38};
    bytes[2] = std::byte{0x00};  // dmin = 0.25 = 0x3400
    bytes[3] = std::byte{0x34};
    for (int k = 0; k < 12; ++k) bytes[4 + k] = std::byte{s[k]};
    const int qs = bits == 4 ? 16 : 48;
    for (int k = 0; k < 256; ++k) {
      const int j = k / 32, l = k % 32;
      // sub-block 2c in the low nibbles of qs[32c..32c+31], 2c+1 in the high nibbles
      const int byte = qs + 32 * (j / 2) + l;
      bytes[byte] |= std::byte(std::uint8_t((q[k] & 15) << (j % 2 ? 4 : 0)));
      if (bits == 5 && q[k] >= 16) bytes[16 + l] |= std::byte(std::uint8_t(1u << j));  // qh bit j of byte l
    }
  }
  float expected(int k) const {
    const int j = k / 32;
    const float d1 = 0.5f * float(sc[j]), m1 = 0.25f * float(mn[j]);
    return float(double(d1) * q[k]) - m1;
  }
};

}  // namespace

TEST_CASE("gguf Q4_K / Q5_K: decode of a hand-built block", "[gguf][q4_k]") {
  for (const int bits : {4, 5}) {
    INFO("bits " << bits);
    const hand_block h(bits);
    // Spot check of the packing: sub-block 5's scale 50 = 0b110010 puts 0b0010 in byte 9's low
    // nibble and 0b11 in byte 1's top bits.
    CHECK((std::to_integer<int>(h.bytes[4 + 9]) & 15) == 2);
    CHECK((std::to_integer<int>(h.bytes[4 + 1]) >> 6) == 3);
    const matrix<float> d = bits == 4 ? gguf_q4_k<float>::decode(std::span<const std::byte>(h.bytes), 1, 256)
                                      : gguf_q5_k<float>::decode(std::span<const std::byte>(h.bytes), 1, 256);
    yaqa::index bad = 0;
    for (int k = 0; k < 256; ++k) bad += d(0, k) != h.expected(k);
    CHECK(bad == 0);
    CHECK(d(0, 0) == -15.f);                                  // sub 0: 0.5*3*0 - 0.25*60
    CHECK(d(0, 32 * 6 + 1) == h.expected(32 * 6 + 1));       // sub 6: scale 61, min 2
    // encode() writes the same bytes from codes + params.
    std::vector<gguf_scale_min_params> ps(8);
    matrix<std::uint8_t> codes(1, 256);
    for (int k = 0; k < 256; ++k) codes(0, k) = std::uint8_t(h.q[k]);
    for (int j = 0; j < 8; ++j) {
      ps[j].resize(1);
      detail::set_scale_min_row(ps[j], 0, 0x3800, 0x3400, std::uint8_t(h.sc[j]), std::uint8_t(h.mn[j]));
    }
    std::vector<std::byte> out(h.bytes.size());
    if (bits == 4)
      gguf_q4_k<float>{}.encode(view(codes), ps, std::span<std::byte>(out));
    else
      gguf_q5_k<float>{}.encode(view(codes), ps, std::span<std::byte>(out));
    CHECK(out == h.bytes);
    // Sub-blocks of one super-block must share d / dmin.
    ps[3].d[0] = 0x3c00;
    if (bits == 4)
      CHECK_THROWS_WITH(gguf_q4_k<float>{}.encode(view(codes), ps, std::span<std::byte>(out)),
                        Catch::Contains("d / dmin"));
    else
      CHECK_THROWS_WITH(gguf_q5_k<float>{}.encode(view(codes), ps, std::span<std::byte>(out)),
                        Catch::Contains("d / dmin"));
  }
}
