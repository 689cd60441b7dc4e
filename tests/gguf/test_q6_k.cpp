// GGUF Q6_K (quantizers/gguf/q6_k.hpp).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#include <gguf/gguf_checks.hpp>
#include <gguf/gguf_reference.hpp>
#include <yaqa/quantizers/gguf/q6_k.hpp>

// Inside namespace yaqa: `index` is yaqa::index, not POSIX index().
namespace yaqa {
namespace {

template <class Q>
void q6k_generic_checks(index m, index n, std::uint64_t seed) {
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

TEMPLATE_TEST_CASE("gguf Q6_K: round trip, feedback, bad inputs", "[gguf]", gguf_q6_k<float>, gguf_q6_k<double>) {
  q6k_generic_checks<TestType>(7, 768, 111);
  q6k_generic_checks<TestType>(3, 512, 112);
}

TEST_CASE("gguf Q6_K: sizes, group width, fit() refuses a lone sub-block", "[gguf]") {
  const gguf_q6_k<float> q;
  CHECK(q.bits_per_weight() == 6);
  CHECK(q.storage_bits(2, 512) == 2u * 2 * 210 * 8);
  CHECK(q.group_cols(512) == 16);
  CHECK_THROWS_AS(q.group_cols(128), shape_error);
  const matrix<float> w = test::gguf_test_weights<float>(3, 256, 113);
  CHECK_THROWS_AS(q.fit(view(w).col_block(0, 16)), invalid_argument);
  CHECK_THROWS_WITH(q.fit(view(w).col_block(0, 16)), Catch::Contains("fit_all"));
}

TEST_CASE("gguf Q6_K: RTN gives the bytes of quantize_row_q6_K_ref / _impl", "[gguf]") {
  const index m = 7, n = 768;
  const matrix<float> w = test::gguf_test_weights<float>(m, n, 121);
  const auto imp = test::gguf_test_importance(n, 122);
  for (const bool use_imp : {false, true}) {
    INFO("importance " << use_imp);
    gguf_quant_options o;
    if (use_imp) o.importance = imp;
    const gguf_q6_k<float> q(o);
    const auto r = rtn(q, view(w));
    const auto bytes = gguf_encode(q, r);
    const std::size_t rb = detail::gguf_row_bytes(ggml_type::q6_k, n);
    for (index i = 0; i < m; ++i) {
      std::vector<float> x(static_cast<std::size_t>(n));
      for (index j = 0; j < n; ++j) x[std::size_t(j)] = w(i, j);
      const auto ref = test::ref::q6_k_row(x.data(), int(n), use_imp ? imp.data() : nullptr);
      std::vector<std::uint8_t> ours(rb);
      std::memcpy(ours.data(), bytes.data() + std::size_t(i) * rb, rb);
      CHECK(ours == ref);
    }
    // the 16 sub-block groups of a super-block share its d
    for (std::size_t g = 0; g < r.params.size(); ++g) CHECK(r.params[g].d_bits == r.params[g / 16 * 16].d_bits);
  }
}

TEST_CASE("gguf Q6_K: a hand-built super-block decodes to (d * sc) * q", "[gguf]") {
  std::vector<std::byte> b(210);
  for (int k = 0; k < 128; ++k) b[std::size_t(k)] = std::byte{0x21};         // ql: low nibble 1, high 2
  for (int k = 0; k < 64; ++k) b[std::size_t(128 + k)] = std::byte{0xE4};    // qh: 0, 1, 2, 3 per quarter
  for (int k = 0; k < 16; ++k) b[std::size_t(192 + k)] = static_cast<std::byte>(std::uint8_t(std::int8_t(k - 8)));
  b[208] = std::byte{0x00};
  b[209] = std::byte{0x38};  // d = 0.5
  const matrix<float> y = gguf_q6_k<float>::decode(b, 1, 256);
  const int q[4] = {1 - 32, 1 + 16 - 32, 2 + 32 - 32, 2 + 48 - 32};
  for (int e = 0; e < 256; ++e) CHECK(y(0, e) == (0.5f * float(e / 16 - 8)) * float(q[(e % 128) / 32]));
}

TEST_CASE("gguf Q6_K: quantize with fixed params picks the nearest level, clamped", "[gguf]") {
  const index m = 5, n = 256;
  const matrix<float> w = test::gguf_test_weights<float>(m, n, 131);
  const matrix<float> t = (w * 1.8f).eval();
  const gguf_q6_k<float> q;
  const auto ps = q.fit_all(view(w));
  for (index g = 0; g < n / 16; ++g) {
    const auto& p = ps[std::size_t(g)];
    matrix<float> rec(m, 16);
    matrix<std::uint8_t> c(m, 16);
    q.quantize(view(t).col_block(16 * g, 16), p, 0, view(rec), view(c));
    for (index i = 0; i < m; ++i)
      for (index j = 0; j < 16; ++j) {
        const float d = p.scale[std::size_t(i)], x = t(i, 16 * g + j);
        CHECK(d == f16_to_float(p.d_bits[std::size_t(i)]) * float(std::int8_t(p.sub[std::size_t(i)])));
        CHECK(rec(i, j) == d * float(int(c(i, j)) - 32));
        if (d == 0.f) {
          CHECK(c(i, j) == 0);
          continue;
        }
        double best = std::numeric_limits<double>::infinity();
        for (int k = -32; k < 32; ++k) best = std::min(best, std::abs(double(x) - double(d * float(k))));
        CHECK(std::abs(double(x) - double(rec(i, j))) <= best);
      }
  }
}

TEST_CASE("gguf Q6_K: the importance fit lowers the importance-weighted error", "[gguf]") {
  const index m = 16, n = 512;
  const matrix<float> w = test::gguf_test_weights<float>(m, n, 141);
  gguf_quant_options o;
  o.importance = test::gguf_test_importance(n, 142);
  auto weighted = [&](const matrix<float>& r) {
    double e = 0;
    for (index j = 0; j < n; ++j)
      for (index i = 0; i < m; ++i) e += o.importance[std::size_t(j)] * std::pow(double(r(i, j)) - w(i, j), 2);
    return e;
  };
  const double uni = weighted(rtn(gguf_q6_k<float>{}, view(w)).weights);
  const double imp = weighted(rtn(gguf_q6_k<float>(o), view(w)).weights);
  INFO("uniform " << uni << " importance " << imp);
  CHECK(imp < uni);
}

}  // namespace yaqa
