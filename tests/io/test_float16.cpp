// F16 / BF16 / F8 conversions against exact references: every bit pattern for widening, random
// and adversarial values (ties, neighbours of ties, overflow edges, subnormals, NaN) for
// narrowing from float and from double.
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include <io/io_support.hpp>
#include <yaqa/io/float16.hpp>

using namespace yaqa;
using yaqa::test::ref_encoder;

namespace {

bool same_value(double got, double want) {
  if (std::isnan(want)) return std::isnan(got);
  return got == want && std::signbit(got) == std::signbit(want);
}

// Values that stress a narrowing to a format with `ebits`/`mbits`: every midpoint between
// neighbours and the doubles/floats right next to it, the overflow edge, tiny values, specials,
// plus random values over the whole float range and concentrated in the format's range.
std::vector<double> narrowing_inputs(const ref_encoder& ref, int ebits, bool as_float, std::uint64_t seed) {
  std::vector<double> xs;
  auto add = [&](double v) {
    if (as_float) v = double(float(v));
    xs.push_back(v);
    xs.push_back(-v);
  };
  auto next_up = [&](double v) { return as_float ? double(std::nextafter(float(v), INFINITY)) : std::nextafter(v, INFINITY); };
  auto next_down = [&](double v) { return as_float ? double(std::nextafter(float(v), 0.0f)) : std::nextafter(v, 0.0); };
  // Every midpoint (exact ties) for F16; a stride for BF16 (32k midpoints either way is fine).
  for (std::size_t k = 0; k < ref.finite_count(); k += (ebits == 5 ? 1 : 3)) {
    const double m = ref.midpoint(k);
    add(m);
    add(next_up(m));
    add(next_down(m));
  }
  const double inf = std::numeric_limits<double>::infinity();
  for (double v : {0.0, inf, std::numeric_limits<double>::quiet_NaN(), double(std::numeric_limits<float>::max()),
                   double(std::numeric_limits<float>::denorm_min()), double(std::numeric_limits<float>::min()),
                   1e-300, 1e300, std::numeric_limits<double>::denorm_min(), std::numeric_limits<double>::max()})
    add(v);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::uint32_t> bits32;
  std::uniform_real_distribution<double> mant(1.0, 2.0);
  const int emax = (1 << (ebits - 1));
  std::uniform_int_distribution<int> expo(-emax - 14, emax + 2);
  for (int i = 0; i < 60000; ++i) {
    const float f = std::bit_cast<float>(bits32(rng));  // all exponents, NaNs included
    xs.push_back(double(f));
    add(std::ldexp(mant(rng), expo(rng)));
  }
  return xs;
}

}  // namespace

TEST_CASE("F16 -> float is exact for all 65536 bit patterns", "[io][float16]") {
  int nans = 0;
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto h = std::uint16_t(b);
    const float got = f16_to_float(h);
    const double want = yaqa::test::ref_f16(h);
    if (!same_value(got, want)) FAIL("pattern " << b << ": got " << got << ", want " << want);
    if (std::isnan(want)) {
      ++nans;
      // payload and sign preserved: the 10 payload bits become the top of float's 23
      const auto fb = std::bit_cast<std::uint32_t>(got);
      REQUIRE((fb >> 13 & 0x3ffu) == (b & 0x3ffu));
      REQUIRE((fb >> 31) == (b >> 15));
    }
  }
  CHECK(nans == 2 * 1023);
  CHECK(f16_to_float(0x3c00) == 1.0f);
  CHECK(f16_to_float(0x7bff) == 65504.0f);
  CHECK(f16_to_float(0x0001) == std::ldexp(1.0f, -24));
  CHECK(std::signbit(f16_to_float(0x8000)));
}

TEST_CASE("BF16 -> float is exact for all 65536 bit patterns", "[io][float16]") {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto h = std::uint16_t(b);
    const float got = bf16_to_float(h);
    if (!same_value(got, yaqa::test::ref_bf16(h))) FAIL("pattern " << b);
  }
  CHECK(bf16_to_float(0x3f80) == 1.0f);
  CHECK(bf16_to_float(0x0001) == std::ldexp(1.0f, -133));  // smallest subnormal
}

TEST_CASE("F8 E4M3FN and E5M2 -> float are exact for all 256 bit patterns", "[io][float16]") {
  for (std::uint32_t b = 0; b < 256; ++b) {
    const auto v = std::uint8_t(b);
    if (!same_value(f8_e4m3_to_float(v), yaqa::test::ref_small_float(b, 4, 3, false))) FAIL("E4M3 pattern " << b);
    if (!same_value(f8_e5m2_to_float(v), yaqa::test::ref_small_float(b, 5, 2, true))) FAIL("E5M2 pattern " << b);
  }
  CHECK(f8_e4m3_to_float(0x7e) == 448.0f);  // E4M3FN max: no Inf, S.1111.111 is NaN
  CHECK(std::isnan(f8_e4m3_to_float(0x7f)));
  CHECK(f8_e4m3_to_float(0x78) == 256.0f);
  CHECK(std::isinf(f8_e5m2_to_float(0x7c)));
  CHECK(f8_e5m2_to_float(0x7b) == 57344.0f);
}

TEST_CASE("narrowing round-trips every F16 and BF16 value", "[io][float16]") {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto h = std::uint16_t(b);
    const float f = f16_to_float(h);
    if (std::isnan(f)) {
      // NaN stays NaN, same sign, quiet bit set, payload's top bits kept
      const auto r = to_f16_bits(f);
      REQUIRE(std::isnan(f16_to_float(r)));
      REQUIRE((r & 0x8000u) == (h & 0x8000u));
      REQUIRE((r & 0x3ffu) == ((h & 0x3ffu) | 0x200u));
      REQUIRE(to_f16_bits(double(f)) == r);
    } else {
      if (to_f16_bits(f) != h || to_f16_bits(double(f)) != h) FAIL("F16 pattern " << b);
    }
    const float g = bf16_to_float(h);
    if (std::isnan(g)) {
      const auto r = to_bf16_bits(g);
      REQUIRE(std::isnan(bf16_to_float(r)));
      REQUIRE((r & 0x8000u) == (h & 0x8000u));
      REQUIRE((r & 0x7fu) == ((h & 0x7fu) | 0x40u));
    } else {
      if (to_bf16_bits(g) != h || to_bf16_bits(double(g)) != h) FAIL("BF16 pattern " << b);
    }
  }
}

TEST_CASE("float and double -> F16 round to nearest even, matching an exact reference", "[io][float16]") {
  const ref_encoder ref(5, 10);
  for (bool from_float : {true, false}) {
    const auto xs = narrowing_inputs(ref, 5, from_float, from_float ? 11 : 12);
    std::size_t checked = 0;
    for (double x : xs) {
      const std::uint16_t got = from_float ? to_f16_bits(float(x)) : to_f16_bits(x);
      const std::uint16_t want = ref.encode(x);
      if (std::isnan(x)) {
        REQUIRE(std::isnan(f16_to_float(got)));
        REQUIRE((got >> 15) == (want >> 15));
      } else if (got != want) {
        FAIL((from_float ? "float " : "double ") << x << " (bits " << std::bit_cast<std::uint64_t>(x) << "): got "
                                                  << got << ", want " << want);
      }
      ++checked;
    }
    CHECK(checked > 300000);
  }
  // Spot checks a reader can verify by hand.
  CHECK(to_f16_bits(65504.0f) == 0x7bff);
  CHECK(to_f16_bits(65519.99f) == 0x7bff);
  CHECK(to_f16_bits(65520.0f) == 0x7c00);  // tie between 65504 (odd) and 2^16: rounds to Inf
  CHECK(to_f16_bits(std::ldexp(1.0f, -25)) == 0x0000);  // tie between 0 and min subnormal: even
  CHECK(to_f16_bits(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
  CHECK(to_f16_bits(-0.0f) == 0x8000);
  CHECK(to_f16_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie to even (down)
  CHECK(to_f16_bits(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);  // tie to even (up)
}

TEST_CASE("double -> F16/BF16 rounds once (no double rounding through float)", "[io][float16]") {
  // 1 + 2^-11 + 2^-40 is just above an F16 tie; rounded to float first it would become the tie
  // 1 + 2^-11 and then round down to 1. Correct single rounding goes up.
  const double x = 1.0 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  CHECK(to_f16_bits(float(x)) == 0x3c00);
  CHECK(to_f16_bits(x) == 0x3c01);
  const double y = 1.0 + std::ldexp(1.0, -8) + std::ldexp(1.0, -40);  // BF16 analogue
  CHECK(to_bf16_bits(float(y)) == 0x3f80);
  CHECK(to_bf16_bits(y) == 0x3f81);
}

TEST_CASE("float and double -> BF16 round to nearest even, matching an exact reference", "[io][float16]") {
  const ref_encoder ref(8, 7);
  for (bool from_float : {true, false}) {
    const auto xs = narrowing_inputs(ref, 8, from_float, from_float ? 21 : 22);
    for (double x : xs) {
      const std::uint16_t got = from_float ? to_bf16_bits(float(x)) : to_bf16_bits(x);
      const std::uint16_t want = ref.encode(x);
      if (std::isnan(x)) {
        REQUIRE(std::isnan(bf16_to_float(got)));
        REQUIRE((got >> 15) == (want >> 15));
      } else if (got != want) {
        FAIL((from_float ? "float " : "double ") << x << ": got " << got << ", want " << want);
      }
    }
  }
  CHECK(to_bf16_bits(std::numeric_limits<float>::max()) == 0x7f80);  // rounds past the max: Inf
  CHECK(to_bf16_bits(std::numeric_limits<float>::denorm_min()) == 0x0000);
  CHECK(to_bf16_bits(std::ldexp(1.0f, -133)) == 0x0001);  // float subnormal -> BF16 subnormal
  CHECK(to_bf16_bits(std::ldexp(3.0f, -134)) == 0x0002);  // 1.5 ulp: tie, to even (2)
}
