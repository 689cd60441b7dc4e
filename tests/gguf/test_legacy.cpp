// GGUF Q8_0, Q4_0, Q5_0 (quantizers/gguf/legacy.hpp).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include <gguf/gguf_checks.hpp>
#include <gguf/gguf_reference.hpp>
#include <yaqa/quantizers/gguf/legacy.hpp>

// Inside namespace yaqa: `index` is yaqa::index, not POSIX index().
namespace yaqa {

namespace {

template <class Q>
void generic_checks(index m, index n, std::uint64_t seed) {
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

template <class T>
std::vector<float> row_of(const matrix<T>& w, index i) {
  std::vector<float> r(static_cast<std::size_t>(w.cols()));
  for (index j = 0; j < w.cols(); ++j) r[static_cast<std::size_t>(j)] = static_cast<float>(w(i, j));
  return r;
}

template <class Q>
std::vector<std::uint8_t> encoded_row(const std::vector<std::byte>& bytes, index i, index n) {
  const std::size_t rb = detail::gguf_row_bytes(Q::type, n);
  std::vector<std::uint8_t> out(rb);
  std::memcpy(out.data(), bytes.data() + static_cast<std::size_t>(i) * rb, rb);
  return out;
}

std::vector<std::byte> as_bytes(const std::vector<std::uint8_t>& v) {
  std::vector<std::byte> b(v.size());
  std::memcpy(b.data(), v.data(), v.size());
  return b;
}

}  // namespace

TEMPLATE_TEST_CASE("gguf Q8_0 / Q4_0 / Q5_0: round trip, feedback, bad inputs", "[gguf]", gguf_q8_0<float>,
                   gguf_q8_0<double>, gguf_q4_0<float>, gguf_q4_0<double>, gguf_q5_0<float>, gguf_q5_0<double>) {
  generic_checks<TestType>(5, 96, 11);
  generic_checks<TestType>(13, 160, 12);
}

TEST_CASE("gguf legacy: sizes, bits and the group width", "[gguf]") {
  CHECK(gguf_q8_0<float>{}.bits_per_weight() == 8);
  CHECK(gguf_q4_0<float>{}.bits_per_weight() == 4);
  CHECK(gguf_q5_0<double>{}.bits_per_weight() == 5);
  CHECK(gguf_q8_0<float>{}.storage_bits(3, 64) == 3u * 2 * 34 * 8);
  CHECK(gguf_q4_0<float>{}.storage_bits(3, 64) == 3u * 2 * 18 * 8);
  CHECK(gguf_q5_0<float>{}.storage_bits(7, 96) == 7u * 3 * 22 * 8);
  CHECK(gguf_q4_0<float>{}.group_cols(96) == 32);
  CHECK_THROWS_AS(gguf_q4_0<float>{}.group_cols(48), shape_error);
  CHECK(gguf_q5_0<float>::type == ggml_type::q5_0);
  CHECK(gguf_q8_0<float>::block_size == 32);
}

TEST_CASE("gguf legacy: RTN without importance gives the reference bytes (quantize_row_*_ref)", "[gguf]") {
  const matrix<float> w = test::gguf_test_weights<float>(9, 160, 21);
  auto check = [&]<class Q>(const Q& q, auto&& reference) {
    const auto r = rtn(q, view(w));
    const auto bytes = gguf_encode(q, r);
    for (index i = 0; i < w.rows(); ++i) {
      const auto x = row_of(w, i);
      CHECK(encoded_row<Q>(bytes, i, w.cols()) == reference(x.data(), static_cast<int>(w.cols())));
    }
  };
  check(gguf_q8_0<float>{}, [](const float* x, int k) { return test::ref::q8_0_row(x, k); });
  check(gguf_q4_0<float>{}, [](const float* x, int k) { return test::ref::legacy_row(x, k, 8); });
  check(gguf_q5_0<float>{}, [](const float* x, int k) { return test::ref::legacy_row(x, k, 16); });
  // double input rounds to float first: the same bytes
  const matrix<double> wd = w.cast<double>();
  const gguf_q4_0<double> qd;
  const gguf_q4_0<float> qf;
  CHECK(gguf_encode(qd, rtn(qd, view(wd))) == gguf_encode(qf, rtn(qf, view(w))));
}

TEST_CASE("gguf legacy: hand-built blocks decode to the expected values", "[gguf]") {
  {  // Q4_0: d = 0.5, element j: nibble j (low), element j + 16: nibble 15 - j (high)
    std::vector<std::uint8_t> b(18);
    b[0] = 0x00;
    b[1] = 0x38;
    for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<std::uint8_t>(j | ((15 - j) << 4));
    const auto bytes = as_bytes(b);
    const matrix<float> y = gguf_q4_0<float>::decode(bytes, 1, 32);
    for (int j = 0; j < 16; ++j) {
      CHECK(y(0, j) == 0.5f * float(j - 8));
      CHECK(y(0, j + 16) == 0.5f * float(7 - j));
    }
  }
  {  // Q5_0: d = 0.25, qh = 0xAAAAAAAA (odd elements have bit 4), low nibbles j for both halves
    std::vector<std::uint8_t> b(22);
    b[0] = 0x00;
    b[1] = 0x34;
    for (int k = 0; k < 4; ++k) b[2 + k] = 0xAA;
    for (int j = 0; j < 16; ++j) b[6 + j] = static_cast<std::uint8_t>(j | (j << 4));
    const auto bytes = as_bytes(b);
    const matrix<float> y = gguf_q5_0<float>::decode(bytes, 1, 32);
    for (int k = 0; k < 32; ++k) CHECK(y(0, k) == 0.25f * float(((k % 16) | ((k & 1) << 4)) - 16));
  }
  {  // Q8_0: d = -2, two blocks in a row, bytes 8 j - 128 (as int8)
    std::vector<std::uint8_t> b(68);
    for (int blk = 0; blk < 2; ++blk) {
      b[34 * blk] = 0x00;
      b[34 * blk + 1] = 0xC0;
      for (int j = 0; j < 32; ++j) b[34 * blk + 2 + j] = static_cast<std::uint8_t>(8 * j - 128 + blk);
    }
    const auto bytes = as_bytes(b);
    const matrix<float> y = gguf_q8_0<float>::decode(bytes, 1, 64);
    for (int blk = 0; blk < 2; ++blk)
      for (int j = 0; j < 32; ++j) CHECK(y(0, 32 * blk + j) == -2.f * float(8 * j - 128 + blk));
  }
  CHECK_THROWS_AS(gguf_q4_0<float>::decode(std::vector<std::byte>(17), 1, 32), shape_error);
}

TEST_CASE("gguf legacy: importance fit matches quantize_row_*_impl's scales; codes nearest on the grid", "[gguf]") {
  const index m = 7, n = 160;
  const matrix<float> w = test::gguf_test_weights<float>(m, n, 31);
  gguf_quant_options o;
  o.importance = test::gguf_test_importance(n, 32);
  auto check = [&]<class Q>(const Q& q, int nmax) {
    const auto r = rtn(q, view(w));
    REQUIRE(r.params.size() == static_cast<std::size_t>(n / 32));
    for (index i = 0; i < m; ++i) {
      const auto x = row_of(w, i);
      const auto d = test::ref::legacy_imatrix_scales(x.data(), static_cast<int>(n), nmax, o.importance.data());
      for (index b = 0; b < n / 32; ++b) {
        const auto& p = r.params[static_cast<std::size_t>(b)];
        CHECK(p.nearest);
        CHECK(p.d_bits[static_cast<std::size_t>(i)] == d[static_cast<std::size_t>(b)]);
      }
    }
    // codes: nearest level to x / d (brute force over every code), on W and on a scaled copy
    // (targets out of range clamp)
    for (const double s : {1.0, 1.9}) {
      const matrix<float> t = (w * float(s)).eval();
      for (index b = 0; b < n / 32; ++b) {
        const auto& p = r.params[static_cast<std::size_t>(b)];
        matrix<float> rec(m, 32);
        matrix<std::uint8_t> c(m, 32);
        q.quantize(view(t).col_block(b * 32, 32), p, 0, view(rec), view(c));
        for (index i = 0; i < m; ++i)
          for (index j = 0; j < 32; ++j) {
            const float d = p.scale[static_cast<std::size_t>(i)], x = t(i, b * 32 + j);
            double best = std::numeric_limits<double>::infinity();
            for (int k = 0; k < 2 * nmax; ++k) best = std::min(best, std::abs(double(x) - double(d * float(k - nmax))));
            if (d == 0.f) {
              CHECK(c(i, j) == 0);
            } else {
              CHECK(std::abs(double(x) - double(rec(i, j))) <= best);
              CHECK(rec(i, j) == d * float(int(c(i, j)) - nmax));
            }
          }
      }
    }
  };
  check(gguf_q4_0<float>(o), 8);
  check(gguf_q5_0<float>(o), 16);
}

TEST_CASE("gguf legacy: quantize with fixed params follows the reference formula and clamps", "[gguf]") {
  const matrix<float> w = test::gguf_test_weights<float>(6, 64, 41);
  const matrix<float> t = (w * 1.7f).eval();  // beyond the fitted range: clamped
  SECTION("Q8_0") {
    const gguf_q8_0<float> q;
    const auto ps = q.fit_all(view(w));
    for (index b = 0; b < 2; ++b) {
      matrix<float> rec(6, 32);
      matrix<std::uint8_t> c(6, 32);
      q.quantize(view(t).col_block(32 * b, 32), ps[std::size_t(b)], 0, view(rec), view(c));
      for (index i = 0; i < 6; ++i)
        for (index j = 0; j < 32; ++j) {
          const float v = std::round(test::ref::ref_mul(t(i, 32 * b + j), ps[std::size_t(b)].inv[std::size_t(i)]));
          const int e = int(std::max(-128.f, std::min(127.f, v)));
          CHECK(int(static_cast<std::int8_t>(c(i, j))) == e);
        }
    }
  }
  SECTION("Q4_0, a strided single column at row offset") {
    const gguf_q4_0<float> q;
    const auto ps = q.fit_all(view(w));
    matrix<float> rec(3, 1);
    matrix<std::uint8_t> c(3, 1);
    q.quantize(view(t).block(2, 37, 3, 1), ps[1], 2, view(rec), view(c));
    for (index i = 0; i < 3; ++i) {
      const float v = std::trunc(test::ref::ref_mul(t(2 + i, 37), ps[1].inv[std::size_t(2 + i)]) + 8.5f);
      CHECK(int(c(i, 0)) == int(std::max(0.f, std::min(15.f, v))));
      CHECK(rec(i, 0) == ps[1].scale[std::size_t(2 + i)] * float(int(c(i, 0)) - 8));
    }
  }
  SECTION("non-finite target") {
    const gguf_q5_0<float> q;
    const auto ps = q.fit_all(view(w));
    matrix<float> bad = t.middleCols(0, 32);
    bad(3, 4) = std::numeric_limits<float>::infinity();
    matrix<float> rec(6, 32);
    matrix<std::uint8_t> c(6, 32);
    CHECK_THROWS_AS(q.quantize(view(std::as_const(bad)), ps[0], 0, view(rec), view(c)), non_finite_error);
  }
}

TEST_CASE("gguf legacy: fit() of one block equals fit_all's; other widths throw", "[gguf]") {
  const matrix<double> w = test::gguf_test_weights<double>(5, 96, 51);
  const gguf_q5_0<double> q;
  const auto all = q.fit_all(view(w));
  for (index b = 0; b < 3; ++b) {
    const auto p = q.fit(view(w).col_block(32 * b, 32));
    CHECK(p.d_bits == all[std::size_t(b)].d_bits);
    CHECK(p.scale == all[std::size_t(b)].scale);
    CHECK(p.inv == all[std::size_t(b)].inv);
  }
  CHECK_THROWS_AS(q.fit(view(w).col_block(0, 64)), shape_error);
}

TEST_CASE("gguf legacy: the importance fit lowers the importance-weighted error", "[gguf]") {
  const index m = 24, n = 256;
  const matrix<float> w = test::gguf_test_weights<float>(m, n, 61);
  gguf_quant_options o;
  o.importance = test::gguf_test_importance(n, 62);
  auto weighted = [&](const matrix<float>& r) {
    double e = 0;
    for (index j = 0; j < n; ++j)
      for (index i = 0; i < m; ++i) e += o.importance[std::size_t(j)] * std::pow(double(r(i, j)) - w(i, j), 2);
    return e;
  };
  auto compare = [&]<class Q>(std::type_identity<Q>) {
    const double uni = weighted(rtn(Q{}, view(w)).weights), imp = weighted(rtn(Q(o), view(w)).weights);
    INFO("uniform " << uni << " importance " << imp);
    CHECK(imp < uni);
  };
  compare(std::type_identity<gguf_q4_0<float>>{});
  compare(std::type_identity<gguf_q5_0<float>>{});
  // Q8_0 has no imatrix path: identical results
  CHECK(rtn(gguf_q8_0<float>(o), view(w)).weights == rtn(gguf_q8_0<float>{}, view(w)).weights);
}

}  // namespace yaqa
