#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include <catch2/catch.hpp>

#include <quantizers/quantizer_checks.hpp>
#include <support/backends.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/e8p_rvq.hpp>
#include <yaqa/quantizers/nonuniform_grid.hpp>
#include <yaqa/rounding/rtn.hpp>

using namespace yaqa;

static_assert(Quantizer<e8p_rvq<float>>);
static_assert(Quantizer<e8p_rvq<double>>);
static_assert(std::is_same_v<e8p_rvq<float>::code_type, std::uint32_t>);
static_assert(e8p_rvq<float>::unit_cols == 8 && e8p_rvq<float>::unit_rows == 1);

namespace {

using cw = std::array<double, 8>;

const std::vector<cw>& e8p_book() {
  static const std::vector<cw> cb = [] {
    std::vector<cw> v(65536);
    for (int c = 0; c < 65536; ++c) v[std::size_t(c)] = e8p<double>::codeword(std::uint16_t(c));
    return v;
  }();
  return cb;
}

const std::vector<cw>& e81b_book() {
  static const std::vector<cw> cb = [] {
    std::vector<cw> v(256);
    for (unsigned c = 0; c < 256; ++c) v[c] = detail::e81b_decode<double>(c);
    return v;
  }();
  return cb;
}

double dist2(const cw& u, const cw& c) {
  double d = 0;
  for (int i = 0; i < 8; ++i) d += (u[i] - c[i]) * (u[i] - c[i]);
  return d;
}

// Brute force: the smallest distance from u to the book, and how many codewords attain it.
std::pair<double, int> brute(const std::vector<cw>& book, const cw& u) {
  double best = std::numeric_limits<double>::infinity();
  int count = 0;
  for (const auto& c : book) {
    const double d = dist2(u, c);
    if (d < best) {
      best = d;
      count = 1;
    } else if (d == best) {
      ++count;
    }
  }
  return {best, count};
}

template <class T>
cw to_double(const std::array<T, 8>& a) {
  cw r{};
  for (int i = 0; i < 8; ++i) r[i] = double(a[i]);
  return r;
}

// Random vectors at several scales plus ties: codewords, midpoints of two codewords, the origin,
// points of a 1/2 grid.
template <class T>
std::vector<std::array<T, 8>> search_inputs(const std::vector<cw>& book, std::uint64_t seed, int per_scale) {
  auto rng = test::make_rng(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<std::array<T, 8>> in;
  for (double sigma : {0.2, 0.6, 1.0, 1.7, 3.0})
    for (int v = 0; v < per_scale; ++v) {
      std::array<T, 8> u{};
      for (auto& x : u) x = T(sigma * nd(rng));
      in.push_back(u);
    }
  for (int k = 0; k < 25; ++k) {
    const auto& a = book[std::size_t(k * 97 % book.size())];
    const auto& b = book[std::size_t(k * 31 % book.size())];
    std::array<T, 8> c{}, mid{}, half{};
    for (int i = 0; i < 8; ++i) {
      c[i] = T(a[i]);
      mid[i] = T(0.5 * (a[i] + b[i]));
      half[i] = T(std::round(2.0 * nd(rng)) / 2.0);
    }
    in.insert(in.end(), {c, mid, half});
  }
  in.push_back(std::array<T, 8>{});
  return in;
}

}  // namespace

TEST_CASE("e81b codebook: the 240 roots of E8 and the 16 vectors +-2 e_i", "[quantizers][e8p_rvq]") {
  const auto& cb = e81b_book();
  std::set<cw> distinct(cb.begin(), cb.end());
  CHECK(distinct.size() == 256);
  int roots = 0, axis = 0;
  for (const auto& c : cb) {
    const double n2 = dist2(c, cw{});
    roots += n2 == 2.0;
    axis += n2 == 4.0;
    // in E8: all integers or all half-integers, with an even sum
    bool all_int = true, all_half = true;
    double sum = 0;
    for (double x : c) {
      all_int = all_int && x == std::floor(x);
      all_half = all_half && x - std::floor(x) == 0.5;
      sum += x;
    }
    CHECK((all_int || all_half));
    CHECK(std::fmod(std::abs(sum), 2.0) == 0.0);
    // symmetric
    cw neg{};
    for (int i = 0; i < 8; ++i) neg[i] = -c[i];
    CHECK(distinct.count(neg) == 1);
  }
  CHECK(roots == 240);
  CHECK(axis == 16);
  // the documented index layout
  CHECK(cb[0] == cw{1, 1, 0, 0, 0, 0, 0, 0});
  CHECK(cb[4 * 27 + 3] == cw{0, 0, 0, 0, 0, 0, -1, -1});
  CHECK(cb[112] == cw{0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5});
  CHECK(cb[113] == cw{-0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, -0.5});
  CHECK(cb[241] == cw{-2, 0, 0, 0, 0, 0, 0, 0});
  CHECK(cb[254] == cw{0, 0, 0, 0, 0, 0, 0, 2});
}

TEMPLATE_LIST_TEST_CASE("e81b nearest codeword equals a brute-force 256-way search", "[quantizers][e8p_rvq]",
                        test::scalar_types) {
  using T = TestType;
  const double tol = sizeof(T) == 4 ? 2e-5 : 1e-12;
  const auto inputs = search_inputs<T>(e81b_book(), 81, 100);
  int ties = 0;
  for (const auto& u : inputs) {
    const auto code = detail::e81b_nearest<T>(u.data());
    const cw ud = to_double(u);
    const double d = dist2(ud, e81b_book()[code]);
    const auto [best, count] = brute(e81b_book(), ud);
    ties += count > 1;
    CAPTURE(ud[0], ud[1], ud[2], ud[3], ud[4], ud[5], ud[6], ud[7], d, best);
    CHECK(d <= best + tol * (1.0 + best));
  }
  CHECK(ties > 10);
}

TEMPLATE_LIST_TEST_CASE("e8p_rvq: each greedy stage is the exact nearest codeword", "[quantizers][e8p_rvq]",
                        test::scalar_types) {
  using T = TestType;
  // T's arithmetic: the fast searches' scores and the residual round.
  const double tol = sizeof(T) == 4 ? 5e-5 : 1e-12;
  for (int bits : {3, 4}) {
    const e8p_rvq<T> q({.bits = bits});
    const double rho = double(q.rho());
    const auto& book2 = bits == 3 ? e81b_book() : e8p_book();
    const auto inputs = search_inputs<T>(e8p_book(), 90 + std::uint64_t(bits), 40);
    for (const auto& u : inputs) {
      const std::uint32_t code = q.nearest(u);
      if (bits == 3) CHECK((code >> 24) == 0u);
      const cw ud = to_double(u);
      const cw& c1 = e8p_book()[code & 0xFFFFu];
      const double d1 = dist2(ud, c1);
      const double b1 = brute(e8p_book(), ud).first;
      CAPTURE(bits, ud[0], ud[1], ud[2], ud[3], ud[4], ud[5], ud[6], ud[7], d1, b1);
      CHECK(d1 <= b1 + tol * (1.0 + b1));
      // stage 2 on the stage-1 residual, in stage-2 units
      cw r{};
      for (int i = 0; i < 8; ++i) r[i] = (ud[i] - c1[i]) / rho;
      const cw& c2 = book2[bits == 3 ? (code >> 16) & 0xFFu : code >> 16];
      const double d2 = dist2(r, c2);
      const double b2 = brute(book2, r).first;
      CAPTURE(d2, b2);
      CHECK(d2 <= b2 + tol * (1.0 + b2) / (rho * rho));
      // the codeword is c1 + rho c2
      const auto c = to_double(q.codeword(code));
      for (int i = 0; i < 8; ++i) CHECK(c[i] == Approx(c1[i] + rho * c2[i]).epsilon(1e-6).margin(1e-6));
      CHECK(q.nearest(u) == code);  // deterministic
    }
  }
}

TEST_CASE("e8p_rvq calibration: scales and MSE at unit variance, against Lloyd-Max and E8P", "[quantizers][e8p_rvq]") {
  // Independent sample (not the calibration's seed), 2^15 8-vectors: the standard error of an MSE
  // estimate is below 0.5% of it.
  const auto x = detail::gaussian_sample(8u * 32768u, 2024);
  const double mse2 = detail::e8p_mse_at(x, e8p_calibration().scale);
  double prev = mse2;
  for (int bits : {3, 4}) {
    const auto& cal = e8p_rvq_calibration(bits);
    CHECK(cal.bits == bits);
    CHECK(cal.samples == 8192);
    const double mse = detail::e8p_rvq_mse_at(x, bits, cal.scale, cal.rho);
    const double lloyd = gaussian_lloyd_max(bits).mse;
    std::printf("e8p_rvq %d bits: scale %.4f, 1/rho %.3f, calibration MSE %.5f, independent-sample MSE %.5f "
                "(Lloyd-Max %.5f)\n",
                bits, cal.scale, 1.0 / cal.rho, cal.mse, mse, lloyd);
    CHECK(std::abs(mse - cal.mse) < 0.03 * cal.mse);
    // Measured 0.0296 (3 bits) and 0.00834 (4 bits); Lloyd-Max 0.03454 and 0.009497.
    if (bits == 3) {
      CHECK(cal.scale == Approx(1.02).margin(0.02));
      CHECK(1.0 / cal.rho == Approx(2.05).margin(0.1));
      CHECK(mse > 0.0285);
      CHECK(mse < 0.0305);
    } else {
      CHECK(cal.scale == Approx(1.11).margin(0.03));
      CHECK(1.0 / cal.rho == Approx(3.84).margin(0.15));
      CHECK(mse > 0.0080);
      CHECK(mse < 0.0087);
    }
    CHECK(mse < 0.9 * lloyd);  // at least 10% below the best scalar quantizer at equal bits
    CHECK(mse < 0.4 * prev);   // each extra bit divides the MSE by more than 2.5
    prev = mse;
    // (scale, rho) is a minimum: 5% off in either, on the same sample, is worse.
    CHECK(detail::e8p_rvq_mse_at(x, bits, cal.scale * 1.05, cal.rho) > mse);
    CHECK(detail::e8p_rvq_mse_at(x, bits, cal.scale / 1.05, cal.rho) > mse);
    CHECK(detail::e8p_rvq_mse_at(x, bits, cal.scale, cal.rho * 1.05) > mse);
    CHECK(detail::e8p_rvq_mse_at(x, bits, cal.scale, cal.rho / 1.05) > mse);
  }
  CHECK(mse2 < 0.95 * gaussian_lloyd_max(2).mse);
  CHECK_THROWS_WITH(e8p_rvq_calibration(2), Catch::Contains("'bits'"));
}

TEMPLATE_LIST_TEST_CASE("e8p_rvq quantizer: fit, round trip, sub-blocks, per-row scales", "[quantizers][e8p_rvq]",
                        test::scalar_types) {
  using T = TestType;
  matrix<T> w = test::random_matrix<T>(21, 48, 47, 0.05);
  w.row(3) *= T(8);  // rows of different scale
  w.row(11).setZero();
  for (int bits : {3, 4}) {
    CAPTURE(bits);
    const e8p_rvq<T> q({.bits = bits});
    CHECK(q.bits_per_weight() == double(bits));
    CHECK(q.group_cols(48) == 48);
    const auto p = q.fit(view(w));
    REQUIRE(p.rows() == 21);
    for (yaqa::index i = 0; i < 21; ++i) {
      const double rms_i = std::sqrt(w.row(i).template cast<double>().squaredNorm() / 48.0);
      CHECK(double(p.scale[std::size_t(i)]) == Approx(rms_i * e8p_rvq_calibration(bits).scale).epsilon(1e-6));
    }
    const auto r = test::run_quantize(q, w, p);
    // encode/decode round trip, bit for bit, also through sub-blocks addressed with row0
    CHECK(q.reconstruct(view(std::as_const(r.codes)), p, 0) == r.recon);
    test::check_sub_block(q, w, p, 2, 15, 16, 24);
    test::check_sub_block(q, w, p, 0, 21, 40, 8);
    // each unit's reconstruction is scale * (c1 + rho c2) of its code (decoded by hand)
    for (yaqa::index i = 0; i < 21; i += 5)
      for (yaqa::index g = 0; g < 6; ++g) {
        const std::uint32_t code = r.codes(i, g);
        const auto c1 = e8p<T>::codeword(std::uint16_t(code & 0xFFFFu));
        const auto c2 = bits == 3 ? detail::e81b_decode<T>((code >> 16) & 0xFFu)
                                  : e8p<T>::codeword(std::uint16_t(code >> 16));
        for (int t = 0; t < 8; ++t)
          CHECK(double(r.recon(i, 8 * g + t)) ==
                Approx(double(p.scale[std::size_t(i)]) * (double(c1[t]) + double(q.rho()) * double(c2[t])))
                    .epsilon(1e-5)
                    .margin(1e-7));
      }
    CHECK(r.recon.row(11).isZero());
    // relative error of Gaussian rows is about sqrt(MSE): 0.17 (3 bits), 0.09 (4 bits)
    const double rel = (r.recon - w).template cast<double>().norm() / w.template cast<double>().norm();
    CHECK(rel > (bits == 3 ? 0.13 : 0.07));
    CHECK(rel < (bits == 3 ? 0.21 : 0.115));
    // per_matrix and scale_override, as e8p
    const e8p_rvq<T> qm({.bits = bits, .scale_override = 0.9, .scales = e8p_scales::per_matrix});
    const auto pm = qm.fit(view(w));
    const double rms = std::sqrt(w.template cast<double>().squaredNorm() / double(w.size()));
    for (auto s : pm.scale) CHECK(double(s) == Approx(rms * e8p_rvq_calibration(bits).scale / 0.9).epsilon(1e-6));
    const auto rm = test::run_quantize(qm, w, pm);
    CHECK(qm.reconstruct(view(std::as_const(rm.codes)), pm, 0) == rm.recon);
  }
}

TEST_CASE("e8p_rvq: bit accounting and bad options", "[quantizers][e8p_rvq][errors]") {
  CHECK(e8p_rvq<float>({.bits = 3}).storage_bits(256, 512) == 256u * 512 * 3 + 256u * 16);
  CHECK(e8p_rvq<float>({.bits = 4, .scales = e8p_scales::per_matrix}).storage_bits(256, 512) ==
        256u * 512 * 4 + 32);
  CHECK_THROWS_WITH(e8p_rvq<float>({.bits = 2}), Catch::Contains("'bits'") && Catch::Contains("yaqa::e8p"));
  CHECK_THROWS_WITH(e8p_rvq<float>({.bits = 5}), Catch::Contains("'bits'"));
  CHECK_THROWS_AS(e8p_rvq<float>({.bits = 5}), yaqa::invalid_argument);
  CHECK_THROWS_WITH(e8p_rvq<double>({.bits = 3, .scale_override = 0}), Catch::Contains("'scale_override'"));
  CHECK_THROWS_WITH(e8p_rvq<double>({.bits = 3, .scale_override = std::numeric_limits<double>::infinity()}),
                    Catch::Contains("'scale_override'"));
  CHECK_THROWS_WITH(e8p_rvq<float>({.bits = 4, .scales = static_cast<e8p_scales>(3)}), Catch::Contains("'scales'"));
  CHECK_THROWS_WITH(e8p_rvq<float>({.bits = 4, .group_size = 20}), Catch::Contains("'group_size'"));
  CHECK(e8p_rvq<float>({.bits = 4, .group_size = 128}).group_cols(512) == 128);
  CHECK(e8p_rvq<float>({.bits = 3, .group_size = 128}).storage_bits(256, 512) == 256u * 512 * 3 + 256u * 4 * 16);
  const e8p_rvq<float> q({.bits = 3});
  CHECK_THROWS_WITH(q.group_cols(20), Catch::Contains("20") && Catch::Contains("8"));
  matrix<float> w = test::random_matrix<float>(4, 16, 5);
  const auto p = q.fit(view(w));
  matrix<float> recon(4, 16);
  matrix<std::uint32_t> codes(4, 2);
  w(2, 3) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(q.quantize(view(std::as_const(w)), p, 0, view(recon), view(codes)),
                    Catch::Contains("e8p_rvq::quantize") && Catch::Contains("(2, 3)"));
  CHECK_THROWS_AS(q.fit(view(std::as_const(w))), non_finite_error);
  w(2, 3) = 0.f;
  CHECK_THROWS_AS(q.quantize(view(std::as_const(w)), p, 1, view(recon), view(codes)), shape_error);
}
