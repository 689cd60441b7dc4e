#pragma once
// Checks every GGUF quantizer must pass (each family's test calls them for its types, in float
// and double): fit_all's group count; encode -> decode reproduces quantize()'s recon bit for bit;
// reconstruct() == recon; re-quantizing recon is a fixed point; LDLQ with error feedback beats
// round-to-nearest on a correlated H with the same scales; bad inputs throw the documented errors.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include <catch2/catch.hpp>

#include <yaqa/linalg/block_ldl.hpp>
#include <yaqa/quantizers/gguf/gguf.hpp>
#include <yaqa/rounding/ldlq.hpp>
#include <yaqa/rounding/rtn.hpp>

namespace yaqa::test {

//! Seeded rows of mixed scale with a few outliers and one all-zero row.
template <class T>
matrix<T> gguf_test_weights(index rows, index cols, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd(0, 1);
  std::uniform_real_distribution<double> ud(0, 1);
  matrix<T> w(rows, cols);
  for (index i = 0; i < rows; ++i) {
    const double s = std::exp(4 * ud(g) - 3);
    for (index j = 0; j < cols; ++j) w(i, j) = T(s * nd(g));
  }
  for (index k = 0; k < rows * cols / 97 + 1; ++k)
    w(static_cast<index>(g() % rows), static_cast<index>(g() % cols)) *= T(8);
  if (rows > 2) w.row(1).setZero();
  return w;
}

//! Seeded positive importance over ~2.6 decades.
inline std::vector<float> gguf_test_importance(index cols, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> ud(0, 1);
  std::vector<float> v(static_cast<std::size_t>(cols));
  for (auto& x : v) x = float(std::exp(6 * ud(g) - 3));
  return v;
}

//! RTN through fit_all, then: encode -> decode == recon bitwise; reconstruct == recon; recon is a
//! fixed point of quantize. Returns the rounded result for further checks.
template <gguf_quantizer Q>
rounded<Q> check_gguf_roundtrip(const Q& q, const matrix<typename Q::scalar_type>& w) {
  using T = typename Q::scalar_type;
  const index m = w.rows(), n = w.cols();
  const index g = q.group_cols(n);
  REQUIRE(n % g == 0);
  const auto r = rtn(cpu_backend{}, q, view(w));
  REQUIRE(r.params.size() == static_cast<std::size_t>(n / g));
  REQUIRE(r.weights.rows() == m);
  REQUIRE(r.weights.cols() == n);
  const auto bytes = gguf_encode(q, r);
  REQUIRE(bytes.size() == static_cast<std::size_t>(m) * detail::gguf_row_bytes(Q::type, n));
  const matrix<float> dec = Q::decode(std::span<const std::byte>(bytes), m, n);
  REQUIRE(dec.rows() == m);
  REQUIRE(dec.cols() == n);
  index mismatches = 0;
  for (index j = 0; j < n; ++j)
    for (index i = 0; i < m; ++i) mismatches += T(dec(i, j)) != r.weights(i, j);
  CHECK(mismatches == 0);
  for (index c = 0; c < n; c += g) {
    const auto rec = q.reconstruct(view(r.codes).col_block(c, g), r.params[static_cast<std::size_t>(c / g)], 0);
    CHECK(rec == r.weights.middleCols(c, g));
    matrix<T> again(m, g);
    matrix<typename Q::code_type> codes(m, g);
    q.quantize(view(r.weights).col_block(c, g), r.params[static_cast<std::size_t>(c / g)], 0, view(again),
               view(codes));
    CHECK(again == r.weights.middleCols(c, g));
  }
  // Rounding error is bounded by the data: never worse than zeroing the matrix.
  CHECK((r.weights - w).squaredNorm() <= w.squaredNorm() * 1.0001 + 1e-30);
  return r;
}

//! tr(dW H dW^T) of LDLQ (block 32, error feedback) vs RTN with the same fitted scales, on a
//! correlated H; LDLQ must be lower.
template <gguf_quantizer Q>
void check_gguf_feedback_helps(const Q& q, const matrix<typename Q::scalar_type>& w, std::uint64_t seed) {
  using T = typename Q::scalar_type;
  const index n = w.cols();
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd(0, 1);
  const index k = n / 4 + 3;  // low-rank + ridge: strongly correlated inputs
  matrix<double> a(n, k);
  for (index j = 0; j < k; ++j)
    for (index i = 0; i < n; ++i) a(i, j) = nd(g);
  matrix<double> h = a * a.transpose() / double(k);
  h.diagonal().array() += 0.05;
  const matrix<T> ht = h.cast<T>();
  const auto f = block_ldl(cpu_backend{}, view(ht), 32).value();
  const auto params = detail::fit_groups(q, view(w), q.group_cols(n));
  const auto r_rtn = rtn(cpu_backend{}, q, view(w), params);
  const auto r_ldlq = ldlq(cpu_backend{}, q, view(w), view(f.L), 32, params);
  auto proxy = [&](const matrix<T>& wh) {
    const matrix<double> d = (wh - w).template cast<double>();
    return (d * h * d.transpose()).trace();
  };
  const double p_rtn = proxy(r_rtn.weights), p_ldlq = proxy(r_ldlq.weights);
  INFO("proxy rtn " << p_rtn << " ldlq " << p_ldlq);
  CHECK(p_ldlq < 0.9 * p_rtn);
  const auto bytes = gguf_encode(q, r_ldlq);  // feedback-rounded codes encode too
  const matrix<float> dec = Q::decode(std::span<const std::byte>(bytes), w.rows(), n);
  CHECK(dec.template cast<T>() == r_ldlq.weights);
}

//! Bad inputs: a width that is not whole blocks, a wrong-length or negative importance, NaN in
//! W, a wrong output buffer.
template <gguf_quantizer Q>
void check_gguf_bad_inputs(const Q& q) {
  using T = typename Q::scalar_type;
  const index bs = Q::block_size;
  CHECK_THROWS_AS(q.group_cols(bs + 16), shape_error);
  matrix<T> w = gguf_test_weights<T>(4, 2 * bs, 5);
  gguf_quant_options o;
  o.importance.assign(static_cast<std::size_t>(bs), 1.f);
  CHECK_THROWS_AS(Q(o).fit_all(view(w)), shape_error);
  o.importance.assign(static_cast<std::size_t>(2 * bs), 1.f);
  o.importance[3] = -1.f;
  CHECK_THROWS_AS(Q(o).fit_all(view(w)), non_finite_error);
  w(2, 7) = std::numeric_limits<T>::quiet_NaN();
  CHECK_THROWS_AS(q.fit_all(view(w)), non_finite_error);
  w(2, 7) = T(0);
  const auto r = rtn(cpu_backend{}, q, view(w));
  std::vector<std::byte> small(detail::gguf_row_bytes(Q::type, 2 * bs) * 4 - 1);
  CHECK_THROWS_AS(q.encode(view(r.codes), r.params, std::span<std::byte>(small)), shape_error);
}

}  // namespace yaqa::test
