// GGUF IQ4_NL (quantizers/gguf/iq4_nl.hpp).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#include <gguf/gguf_checks.hpp>
#include <gguf/gguf_reference.hpp>
#include <yaqa/quantizers/gguf/iq4_nl.hpp>

// Inside namespace yaqa: `index` is yaqa::index, not POSIX index().
namespace yaqa {
namespace {

template <class Q>
void iq4_generic_checks(index m, index n, std::uint64_t seed) {
  using T = typename Q::scalar_type;
  const matrix<T> w = test::gguf_test_weights<T>(m, n, seed);
  for (const bool imp : {false, true}) {
    INFO("importance " << imp);
    gguf_quant_options o;
    if (imp) o.importance = test::gguf_test_importance(n, seed + 1);
    const Q q(o);
    test::check_gguf_roundtrip(q, w);
    test::check_gguf_feedback_helps(q, w, seed + 2);
  }
  test::check_gguf_bad_inputs(Q{});
}

}  // namespace

TEMPLATE_TEST_CASE("gguf IQ4_NL: round trip, feedback, bad inputs", "[gguf]", gguf_iq4_nl<float>,
                   gguf_iq4_nl<double>) {
  iq4_generic_checks<TestType>(5, 96, 71);
  iq4_generic_checks<TestType>(13, 160, 72);
}

TEST_CASE("gguf IQ4_NL: sizes and the table index", "[gguf]") {
  CHECK(gguf_iq4_nl<float>{}.bits_per_weight() == 4);
  CHECK(gguf_iq4_nl<float>{}.storage_bits(3, 64) == 3u * 2 * 18 * 8);
  CHECK(gguf_iq4_nl<float>{}.group_cols(64) == 32);
  // best_index_int8 against a brute-force nearest value (ties: the upper one)
  for (float x = -140.f; x <= 130.f; x += 0.25f) {
    const int k = detail::gguf_iq4nl_index(x);
    CHECK(k == test::ref::best_index_iq4nl(x));
    double best = std::numeric_limits<double>::infinity();
    for (int j = 0; j < 16; ++j) best = std::min(best, std::abs(double(x) - detail::gguf_iq4nl_values[std::size_t(j)]));
    CHECK(std::abs(double(x) - detail::gguf_iq4nl_values[std::size_t(k)]) == best);
  }
}

TEST_CASE("gguf IQ4_NL: RTN gives the bytes of quantize_iq4_nl, with and without importance", "[gguf]") {
  const index m = 9, n = 160;
  const matrix<float> w = test::gguf_test_weights<float>(m, n, 81);
  const auto imp = test::gguf_test_importance(n, 82);
  for (const bool use_imp : {false, true}) {
    INFO("importance " << use_imp);
    gguf_quant_options o;
    if (use_imp) o.importance = imp;
    const gguf_iq4_nl<float> q(o);
    const auto bytes = gguf_encode(q, rtn(q, view(w)));
    const std::size_t rb = detail::gguf_row_bytes(ggml_type::iq4_nl, n);
    for (index i = 0; i < m; ++i) {
      std::vector<float> x(static_cast<std::size_t>(n));
      for (index j = 0; j < n; ++j) x[std::size_t(j)] = w(i, j);
      const auto ref = test::ref::iq4_nl_row(x.data(), int(n), use_imp ? imp.data() : nullptr);
      std::vector<std::uint8_t> ours(rb);
      std::memcpy(ours.data(), bytes.data() + std::size_t(i) * rb, rb);
      CHECK(ours == ref);
    }
  }
}

TEST_CASE("gguf IQ4_NL: a hand-built block decodes to d * kvalues", "[gguf]") {
  std::vector<std::byte> b(18);
  b[0] = std::byte{0x00};
  b[1] = std::byte{0x3c};  // d = 1
  for (int j = 0; j < 16; ++j) b[std::size_t(2 + j)] = static_cast<std::byte>(j | ((15 - j) << 4));
  const matrix<float> y = gguf_iq4_nl<float>::decode(b, 1, 32);
  for (int j = 0; j < 16; ++j) {
    CHECK(y(0, j) == float(test::ref::kvalues_iq4nl[j]));
    CHECK(y(0, j + 16) == float(test::ref::kvalues_iq4nl[15 - j]));
  }
}

TEST_CASE("gguf IQ4_NL: quantize with fixed params picks the nearest table value to x / d", "[gguf]") {
  const matrix<float> w = test::gguf_test_weights<float>(6, 64, 91);
  const matrix<float> t = (w * 1.6f).eval();
  const gguf_iq4_nl<float> q;
  const auto ps = q.fit_all(view(w));
  for (index b = 0; b < 2; ++b) {
    const auto& p = ps[std::size_t(b)];
    matrix<float> rec(6, 32);
    matrix<std::uint8_t> c(6, 32);
    q.quantize(view(t).col_block(32 * b, 32), p, 0, view(rec), view(c));
    for (index i = 0; i < 6; ++i)
      for (index j = 0; j < 32; ++j) {
        const float a = test::ref::ref_mul(p.inv[std::size_t(i)], t(i, 32 * b + j));
        CHECK(int(c(i, j)) == test::ref::best_index_iq4nl(a));
        CHECK(rec(i, j) == p.scale[std::size_t(i)] * float(test::ref::kvalues_iq4nl[c(i, j)]));
      }
  }
  // fit() of one block equals fit_all's
  const auto p1 = q.fit(view(w).col_block(32, 32));
  CHECK(p1.d_bits == ps[1].d_bits);
  CHECK(p1.inv == ps[1].inv);
  CHECK_THROWS_AS(q.fit(view(w)), shape_error);
}

TEST_CASE("gguf IQ4_NL: the importance fit lowers the importance-weighted error", "[gguf]") {
  const index m = 24, n = 256;
  const matrix<float> w = test::gguf_test_weights<float>(m, n, 101);
  gguf_quant_options o;
  o.importance = test::gguf_test_importance(n, 102);
  auto weighted = [&](const matrix<float>& r) {
    double e = 0;
    for (index j = 0; j < n; ++j)
      for (index i = 0; i < m; ++i) e += o.importance[std::size_t(j)] * std::pow(double(r(i, j)) - w(i, j), 2);
    return e;
  };
  const double uni = weighted(rtn(gguf_iq4_nl<float>{}, view(w)).weights);
  const double imp = weighted(rtn(gguf_iq4_nl<float>(o), view(w)).weights);
  INFO("uniform " << uni << " importance " << imp);
  CHECK(imp < uni);
}

}  // namespace yaqa
