// GGUF Q3_K (quantizers/gguf/q3_k.hpp).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#include <gguf/gguf_checks.hpp>
#include <gguf/gguf_reference.hpp>
#include <yaqa/quantizers/gguf/q3_k.hpp>
#include <yaqa/rounding/gptq.hpp>

// Inside namespace yaqa: `index` is yaqa::index, not POSIX index().
namespace yaqa {
namespace {

template <class Q>
void q3k_generic_checks(index m, index n, std::uint64_t seed) {
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

TEMPLATE_TEST_CASE("gguf Q3_K: round trip, feedback, bad inputs", "[gguf]", gguf_q3_k<float>, gguf_q3_k<double>) {
  q3k_generic_checks<TestType>(7, 768, 211);
  q3k_generic_checks<TestType>(3, 512, 212);
}

TEST_CASE("gguf Q3_K: sizes, group width, fit() refuses a lone sub-block", "[gguf]") {
  const gguf_q3_k<float> q;
  CHECK(q.bits_per_weight() == 3);
  CHECK(q.storage_bits(2, 512) == 2u * 2 * 110 * 8);
  CHECK(q.group_cols(512) == 16);
  CHECK_THROWS_AS(q.group_cols(128), shape_error);
  const matrix<float> w = test::gguf_test_weights<float>(3, 256, 213);
  CHECK_THROWS_AS(q.fit(view(w).col_block(0, 16)), invalid_argument);
  CHECK_THROWS_WITH(q.fit(view(w).col_block(0, 16)), Catch::Contains("fit_all"));
}

TEST_CASE("gguf Q3_K: RTN gives the bytes of quantize_row_q3_K_ref / _impl", "[gguf]") {
  const index m = 7, n = 768;
  const matrix<float> w = test::gguf_test_weights<float>(m, n, 221);
  const auto imp = test::gguf_test_importance(n, 222);
  for (const bool use_imp : {false, true}) {
    INFO("importance " << use_imp);
    gguf_quant_options o;
    if (use_imp) o.importance = imp;
    const gguf_q3_k<float> q(o);
    const auto r = rtn(q, view(w));
    const auto bytes = gguf_encode(q, r);
    const std::size_t rb = detail::gguf_row_bytes(ggml_type::q3_k, n);
    for (index i = 0; i < m; ++i) {
      std::vector<float> x(static_cast<std::size_t>(n));
      for (index j = 0; j < n; ++j) x[std::size_t(j)] = w(i, j);
      const auto ref = test::ref::q3_k_row(x.data(), int(n), use_imp ? imp.data() : nullptr);
      std::vector<std::uint8_t> ours(rb);
      std::memcpy(ours.data(), bytes.data() + std::size_t(i) * rb, rb);
      CHECK(ours == ref);
    }
    // the 16 sub-block groups of a super-block share its d
    for (std::size_t g = 0; g < r.params.size(); ++g) CHECK(r.params[g].d_bits == r.params[g / 16 * 16].d_bits);
  }
}

TEST_CASE("gguf Q3_K: a hand-built super-block decodes to (d * sc) * q", "[gguf]") {
  std::vector<std::byte> b(110);
  for (int k = 0; k < 32; ++k) b[std::size_t(k)] = std::byte{0xF0};       // hmask: high bit set in the second half
  for (int k = 0; k < 64; ++k) b[std::size_t(32 + k)] = std::byte{0xE4};  // qs: low bits 0, 1, 2, 3 per 32
  // scale fields: sub-block j has l = 24 + j (sc = j - 8): low nibbles, then the top 2 bits
  for (int j = 0; j < 16; ++j) {
    const int l = 24 + j;
    auto& lo = b[std::size_t(96 + j % 8)];
    lo |= static_cast<std::byte>((l & 0xF) << (j < 8 ? 0 : 4));
    auto& hi = b[std::size_t(96 + 8 + j % 4)];
    hi |= static_cast<std::byte>((l >> 4) << (2 * (j / 4)));
  }
  b[108] = std::byte{0x00};
  b[109] = std::byte{0x34};  // d = 0.25
  const matrix<float> y = gguf_q3_k<float>::decode(b, 1, 256);
  for (int e = 0; e < 256; ++e) {
    const int s = (e % 128) / 32, q = e < 128 ? s - 4 : s;
    CHECK(y(0, e) == (0.25f * float(e / 16 - 8)) * float(q));
  }
}

TEST_CASE("gguf Q3_K: quantize with fixed params picks the nearest level, clamped", "[gguf]") {
  const index m = 5, n = 256;
  const matrix<float> w = test::gguf_test_weights<float>(m, n, 231);
  const matrix<float> t = (w * 1.8f).eval();
  const gguf_q3_k<float> q;
  const auto ps = q.fit_all(view(w));
  for (index g = 0; g < n / 16; ++g) {
    const auto& p = ps[std::size_t(g)];
    matrix<float> rec(m, 16);
    matrix<std::uint8_t> c(m, 16);
    q.quantize(view(t).col_block(16 * g, 16), p, 0, view(rec), view(c));
    for (index i = 0; i < m; ++i)
      for (index j = 0; j < 16; ++j) {
        const float d = p.scale[std::size_t(i)], x = t(i, 16 * g + j);
        CHECK(d == f16_to_float(p.d_bits[std::size_t(i)]) * float(int(p.sub[std::size_t(i)]) - 32));
        CHECK(rec(i, j) == d * float(int(c(i, j)) - 4));
        if (d == 0.f) {
          CHECK(c(i, j) == 0);
          continue;
        }
        double best = std::numeric_limits<double>::infinity();
        for (int k = -4; k < 4; ++k) best = std::min(best, std::abs(double(x) - double(d * float(k))));
        CHECK(std::abs(double(x) - double(rec(i, j))) <= best);
      }
  }
}

TEST_CASE("gguf Q3_K: the importance fit lowers the importance-weighted error", "[gguf]") {
  const index m = 16, n = 512;
  const matrix<float> w = test::gguf_test_weights<float>(m, n, 241);
  gguf_quant_options o;
  o.importance = test::gguf_test_importance(n, 242);
  auto weighted = [&](const matrix<float>& r) {
    double e = 0;
    for (index j = 0; j < n; ++j)
      for (index i = 0; i < m; ++i) e += o.importance[std::size_t(j)] * std::pow(double(r(i, j)) - w(i, j), 2);
    return e;
  };
  const double uni = weighted(rtn(gguf_q3_k<float>{}, view(w)).weights);
  const double imp = weighted(rtn(gguf_q3_k<float>(o), view(w)).weights);
  INFO("uniform " << uni << " importance " << imp);
  CHECK(imp < uni);
}

TEST_CASE("gguf Q3_K: GPTQ (with and without act-order) rounds onto the fitted scales and encodes", "[gguf]") {
  const index m = 6, n = 512;
  const matrix<float> w = test::gguf_test_weights<float>(m, n, 251);
  std::mt19937_64 g(252);
  std::normal_distribution<double> nd(0, 1);
  matrix<double> a(n, n / 2);
  for (index j = 0; j < a.cols(); ++j)
    for (index i = 0; i < n; ++i) a(i, j) = nd(g);
  matrix<double> h = a * a.transpose() / double(a.cols());
  h.diagonal().array() += 0.05;
  const matrix<float> hf = h.cast<float>();
  gguf_quant_options o;
  o.importance.resize(std::size_t(n));
  for (index j = 0; j < n; ++j) o.importance[std::size_t(j)] = float(h(j, j));
  const gguf_q3_k<float> q(o);
  const auto r_rtn = rtn(q, view(w));
  auto proxy = [&](const matrix<float>& wh) {
    const matrix<double> d = (wh - w).cast<double>();
    return (d * h * d.transpose()).trace();
  };
  for (const bool act : {false, true}) {
    INFO("act_order " << act);
    gptq_options opt;
    opt.act_order = act;
    const auto r = gptq(q, view(w), view(hf), opt);
    REQUIRE(r.feedback);
    CHECK(r.group_index.empty());
    REQUIRE(r.params.size() == r_rtn.params.size());
    for (std::size_t k = 0; k < r.params.size(); ++k) CHECK(r.params[k].d_bits == r_rtn.params[k].d_bits);
    const auto bytes = gguf_encode(q, r);
    CHECK(gguf_q3_k<float>::decode(bytes, m, n) == r.weights);
    CHECK(proxy(r.weights) < 0.9 * proxy(r_rtn.weights));
  }
  // params of different fits mixed within a super-block are refused
  auto mixed = r_rtn.params;
  const auto other = gguf_q3_k<float>{}.fit_all(view(w));
  mixed[3] = other[3];
  std::vector<std::byte> out(std::size_t(m) * detail::gguf_row_bytes(ggml_type::q3_k, n));
  if (mixed[3].d_bits != mixed[0].d_bits)
    CHECK_THROWS_AS(q.encode(view(r_rtn.codes), mixed, std::span<std::byte>(out)), invalid_argument);
}

}  // namespace yaqa
