#include <cmath>
#include <limits>
#include <vector>

#include <catch2/catch.hpp>

#include <quantizers/quantizer_checks.hpp>
#include <support/backends.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>

using namespace yaqa;

static_assert(Quantizer<int_grid<float>>);
static_assert(Quantizer<int_grid<double>>);
static_assert(!quantizer_property<int_grid<float>, device_capable>);
static_assert(!quantizer_property<int_grid<float>, batched_tiles>);

namespace {

// A naive transcription of the GPTQ reference quantizer (find_params + quantize), one row at a
// time, written from its description: every step is a separate statement, in T.
template <class T>
struct gptq_reference {
  int bits;
  bool sym;
  bool mse;
  T norm = T(2.4);
  int grid = 100;
  double maxshrink = 0.8;

  static T quant(T x, T scale, T zero, T maxq) {
    T q = std::nearbyint(x / scale) + zero;
    if (q < T(0)) q = T(0);
    if (q > maxq) q = maxq;
    return q;
  }

  // Params of one row.
  void find_params(const std::vector<T>& row, T& scale, T& zero) const {
    const T maxq = T(std::pow(2.0, bits) - 1);
    T mn = row[0], mx = row[0];
    for (T x : row) {
      if (x < mn) mn = x;
      if (x > mx) mx = x;
    }
    T xmin = mn < T(0) ? mn : T(0);
    T xmax = mx > T(0) ? mx : T(0);
    if (sym) {
      xmax = std::abs(xmin) > xmax ? std::abs(xmin) : xmax;
      if (xmin < T(0)) xmin = -xmax;
    }
    if (xmin == T(0) && xmax == T(0)) {
      xmin = T(-1);
      xmax = T(1);
    }
    scale = (xmax - xmin) / maxq;
    zero = sym ? (maxq + T(1)) / T(2) : std::nearbyint(-xmin / scale);
    if (!mse) return;
    T best = std::numeric_limits<T>::infinity();
    for (int i = 0; i < int(maxshrink * grid); ++i) {
      const T p = T(1.0 - double(i) / grid);
      const T xmin1 = p * xmin, xmax1 = p * xmax;
      const T scale1 = (xmax1 - xmin1) / maxq;
      const T zero1 = sym ? zero : std::nearbyint(-xmin1 / scale1);
      T err = 0;
      for (T x : row) {
        volatile T q = scale1 * (quant(x, scale1, zero1, maxq) - zero1);  // rounded, no FMA
        err += std::pow(std::abs(q - x), norm);
      }
      if (err < best) {
        best = err;
        scale = scale1;
        zero = zero1;
      }
    }
  }
};

template <class T>
void compare_with_reference(const matrix<T>& w, const int_grid_options& o) {
  const int_grid<T> q(o);
  const gptq_reference<T> ref{o.bits, o.sym, o.mse};
  const yaqa::index g = q.group_cols(w.cols());
  const T maxq = T((1 << o.bits) - 1);
  for (yaqa::index c0 = 0; c0 < w.cols(); c0 += g) {
    const auto region = view(w).col_block(c0, g);
    const auto p = q.fit(region);
    const matrix<T> block = w.middleCols(c0, g);
    const auto out = test::run_quantize(q, block, p);
    for (yaqa::index i = 0; i < w.rows(); ++i) {
      std::vector<T> row(static_cast<std::size_t>(g));
      for (yaqa::index j = 0; j < g; ++j) row[j] = w(i, c0 + j);
      T scale, zero;
      ref.find_params(row, scale, zero);
      REQUIRE(p.scale[i] == scale);
      REQUIRE(p.zero[i] == zero);
      for (yaqa::index j = 0; j < g; ++j) {
        const T qq = gptq_reference<T>::quant(row[j], scale, zero, maxq);
        REQUIRE(out.codes(i, j) == static_cast<std::uint8_t>(qq));
        REQUIRE(out.recon(i, j) == scale * (qq - zero));
      }
    }
  }
}

}  // namespace

TEMPLATE_LIST_TEST_CASE("int_grid matches a naive GPTQ quantizer bit for bit", "[quantizers][int_grid]",
                        test::scalar_types) {
  using T = TestType;
  // 37 x 96: groups of 32 and 96 (per channel), widths that are not SIMD multiples; a zero row,
  // an all-positive row and an all-negative row exercise the clamps to 0 and the +-1 fallback.
  matrix<T> w = test::random_matrix<T>(37, 96, 11);
  w.row(3).setZero();
  w.row(5) = w.row(5).cwiseAbs();
  w.row(7) = -w.row(7).cwiseAbs();
  w(9, 4) = T(25);  // an outlier makes the MSE search clip
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {false, true})
      for (yaqa::index gs : {yaqa::index(0), yaqa::index(32)})
        for (bool mse : {false, true}) {
          if (mse && bits == 8) continue;  // same code path as 4 bits, just slower
          CAPTURE(bits, sym, gs, mse);
          compare_with_reference(w, int_grid_options{.bits = bits, .sym = sym, .group_size = gs, .mse = mse});
        }
}

TEMPLATE_LIST_TEST_CASE("int_grid: decode, idempotence, sub-blocks and nearest grid point",
                        "[quantizers][int_grid]", test::scalar_types) {
  using T = TestType;
  const matrix<T> w = test::random_matrix<T>(45, 27, 12);
  for (bool sym : {false, true}) {
    const int_grid<T> q({.bits = 3, .sym = sym, .mse = true});
    const auto p = q.fit(view(w));
    test::check_decode_and_idempotence(q, w, p);
    test::check_sub_block(q, w, p, 6, 17, 3, 1);    // a GPTQ-style column of a row range
    test::check_sub_block(q, w, p, 16, 16, 8, 16);  // a YAQA-style 16 x 16 tile
    // Each value is the nearest point of its row's grid scale * (k - zero), k = 0..maxq.
    const auto r = test::run_quantize(q, w, p);
    for (yaqa::index j = 0; j < w.cols(); ++j)
      for (yaqa::index i = 0; i < w.rows(); ++i) {
        double best = std::numeric_limits<double>::infinity();
        for (int k = 0; k <= 7; ++k)
          best = std::min(best, std::abs(double(w(i, j)) - double(p.scale[i]) * (k - double(p.zero[i]))));
        CHECK(std::abs(double(w(i, j)) - double(r.recon(i, j))) <= best + 1e-5 * double(p.scale[i]));
      }
  }
}

TEST_CASE("int_grid: rounding is half to even and the zero row falls back to [-1, 1]",
          "[quantizers][int_grid]") {
  // Asymmetric 2-bit on the row {0, 3}: scale 1, zero 0; 0.5 and 2.5 are ties -> 0 and 2.
  matrix<double> fitrow(1, 2);
  fitrow << 0.0, 3.0;
  const int_grid<double> q({.bits = 2});
  const auto p = q.fit(view(fitrow));
  CHECK(p.scale[0] == 1.0);
  CHECK(p.zero[0] == 0.0);
  matrix<double> t(1, 4);
  t << 0.5, 1.5, 2.5, 7.0;
  const auto r = test::run_quantize(q, t, p);
  CHECK(r.codes(0, 0) == 0);
  CHECK(r.codes(0, 1) == 2);
  CHECK(r.codes(0, 2) == 2);
  CHECK(r.codes(0, 3) == 3);  // clamped to maxq
  // GPTQ quirk: a symmetric row without negatives keeps xmin = 0, so +1.5 clips to 7 * 0.1.
  matrix<double> pos(1, 2);
  pos << 0.0, 1.5;
  const int_grid<double> s4({.bits = 4, .sym = true});
  const auto ps = s4.fit(view(pos));
  CHECK(ps.scale[0] == 1.5 / 15.0);
  CHECK(ps.zero[0] == 8.0);
  const auto rs = test::run_quantize(s4, pos, ps);
  CHECK(rs.codes(0, 1) == 15);
  CHECK(rs.recon(0, 1) == (1.5 / 15.0) * 7.0);
  const matrix<double> z = matrix<double>::Zero(2, 5);
  const auto pz = int_grid<double>({.bits = 4, .sym = true}).fit(view(z));
  CHECK(pz.scale[0] == 2.0 / 15.0);
  CHECK(pz.zero[1] == 8.0);
}

TEST_CASE("int_grid: exact bit accounting", "[quantizers][int_grid]") {
  CHECK(int_grid<float>({.bits = 4}).storage_bits(4096, 4096) == 4096u * 4096 * 4 + 4096u * (16 + 4));
  CHECK(int_grid<float>({.bits = 3, .group_size = 128}).storage_bits(100, 1024) ==
        100u * 1024 * 3 + 100u * 8 * (16 + 3));
  CHECK(int_grid<float>({.bits = 2, .sym = true, .group_size = 64}).storage_bits(7, 128) ==
        7u * 128 * 2 + 7u * 2 * 16);
  CHECK(int_grid<double>({.bits = 8}).bits_per_weight() == 8.0);
}

TEST_CASE("int_grid rejects bad parameters with messages naming them", "[quantizers][int_grid][errors]") {
  CHECK_THROWS_AS(int_grid<float>({.bits = 1}), yaqa::invalid_argument);
  CHECK_THROWS_WITH(int_grid<float>({.bits = 9}), Catch::Contains("'bits'") && Catch::Contains("9"));
  CHECK_THROWS_WITH(int_grid<float>({.group_size = -5}), Catch::Contains("'group_size'"));
  CHECK_THROWS_WITH(int_grid<float>({.mse = true, .norm = 0}), Catch::Contains("'norm'"));
  CHECK_THROWS_WITH(int_grid<float>({.grid = 0}), Catch::Contains("'grid'"));
  CHECK_THROWS_WITH(int_grid<float>({.maxshrink = 1.5}), Catch::Contains("'maxshrink'"));
  const int_grid<float> g128({.group_size = 128});
  CHECK(g128.group_cols(4096) == 128);
  CHECK(int_grid<float>({.group_size = -1}).group_cols(300) == 300);
  CHECK_THROWS_AS(g128.group_cols(300), yaqa::invalid_argument);
  CHECK_THROWS_WITH(g128.validate(300), Catch::Contains("128") && Catch::Contains("300"));

  matrix<float> w = test::random_matrix<float>(8, 16, 3);
  const int_grid<float> q;
  const auto p = q.fit(view(w));
  w(2, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(q.fit(view(std::as_const(w))), non_finite_error);
  CHECK_THROWS_WITH(q.fit(view(std::as_const(w))), Catch::Contains("int_grid::fit") && Catch::Contains("(2, 5)"));
  matrix<float> recon(8, 16);
  matrix<std::uint8_t> codes(8, 16);
  CHECK_THROWS_WITH(q.quantize(view(std::as_const(w)), p, 0, view(recon), view(codes)),
                    Catch::Contains("'target'") && Catch::Contains("NaN") && Catch::Contains("(2, 5)"));
  w(2, 5) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(q.quantize(view(std::as_const(w)), p, 0, view(recon), view(codes)), non_finite_error);
  w(2, 5) = 0.f;
  matrix<std::uint8_t> small(8, 15);
  CHECK_THROWS_WITH(q.quantize(view(std::as_const(w)), p, 0, view(recon), view(small)),
                    Catch::Contains("'codes'") && Catch::Contains("8x16"));
  CHECK_THROWS_AS(q.quantize(view(std::as_const(w)), p, 1, view(recon), view(codes)), shape_error);
  const matrix<float> empty(4, 0);
  CHECK_THROWS_AS(q.fit(view(empty)), shape_error);
}
