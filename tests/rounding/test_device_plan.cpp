// The device rounding algorithms run on the host. rounding_plan.hpp holds everything of the CUDA
// YAQA / LDLQ wavefront and GPTQ loop except the launches and the cuBLAS calls: the step
// drivers, the pointer and leading-dimension arithmetic, the per-element and per-row kernel
// bodies. Here they run with a host executor (plain loops; a batched GEMM with cuBLAS's
// column-major argument meaning, which also checks every operand stays inside its buffer) and
// are compared with the CPU algorithms. This checks the device code's geometry on every CI run;
// tests/cuda checks the rest on a GPU.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <rounding/reference_rounding.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>
#include <yaqa/backend/cuda/kernels/rounding_plan.hpp>
#include <yaqa/quantizers/e8p.hpp>
#include <yaqa/rounding/gptq.hpp>
#include <yaqa/rounding/ldlq.hpp>
#include <yaqa/rounding/proxy.hpp>
#include <yaqa/rounding/rtn.hpp>
#include <yaqa/rounding/yaqa.hpp>

using namespace yaqa;
namespace cd = yaqa::cuda::detail;

namespace {

//! Memory ranges the executor may touch; an access outside all of them fails the test.
template <class T>
struct arena {
  std::vector<std::pair<const T*, const T*>> ranges;
  void add(const T* p, yaqa::index n) { ranges.emplace_back(p, p + n); }
  //! The column-major operand rows x cols at p with leading dimension ld lies inside one range.
  [[nodiscard]] bool holds(const T* p, yaqa::index rows, yaqa::index cols, yaqa::index ld) const {
    if (rows == 0 || cols == 0) return true;
    const T* last = p + (rows - 1) + (cols - 1) * ld;
    for (const auto& [b, e] : ranges)
      if (p >= b && last < e && rows <= ld) return true;
    return false;
  }
};

//! cublas<t>gemmBatched(op(A), N, m, n, k, alpha = 1, ..., beta = 0) on host pointers.
template <class T>
void host_gemm_batched(const cd::batched_gemm_call& c, const T* const* ptrs, T* const* cptrs, const arena<T>& mem,
                       int& out_of_bounds) {
  for (yaqa::index b = 0; b < c.count; ++b) {
    const T* a = ptrs[c.a_slot + b];
    const T* bm = ptrs[c.b_slot + b];
    T* cm = cptrs[c.c_slot + b];
    const bool ok = mem.holds(a, c.trans_a ? c.k : c.m, c.trans_a ? c.m : c.k, c.lda) &&
                    mem.holds(bm, c.k, c.n, c.ldb) && mem.holds(cm, c.m, c.n, c.ldc);
    if (!ok) {
      ++out_of_bounds;
      continue;
    }
    for (yaqa::index j = 0; j < c.n; ++j)
      for (yaqa::index i = 0; i < c.m; ++i) {
        T s = 0;
        for (yaqa::index l = 0; l < c.k; ++l)
          s += (c.trans_a ? a[l + i * c.lda] : a[i + l * c.lda]) * bm[l + j * c.ldb];
        cm[i + j * c.ldc] = s;
      }
  }
}

template <class T, class DQ>
struct host_wave_exec {
  const cd::wave_geometry& geo;
  const cd::wave_buffers<T, typename DQ::code_type>& bf;
  DQ dq;
  const arena<T>& mem;
  std::vector<const T*> ptrs;
  std::vector<T*> cptrs;
  int bad = 0, out_of_bounds = 0, steps = 0, gemms = 0;

  void pointers(const cd::wave_step& s) {
    ++steps;
    CHECK(s.nt >= 1);
    CHECK(s.nt <= geo.cap);
    for (yaqa::index t = 0; t < s.nt; ++t) cd::wave_tile_pointers(s, bf, geo.cap, t, ptrs.data(), cptrs.data());
  }
  void gemm(const cd::batched_gemm_call& c) {
    ++gemms;
    host_gemm_batched(c, ptrs.data(), cptrs.data(), mem, out_of_bounds);
  }
  void quantize(const cd::wave_step& s) {
    for (yaqa::index u = 0; u < s.nt * geo.tile / DQ::unit; ++u)
      if (!cd::wave_quantize_unit(s, bf, dq, u)) ++bad;
  }
};

struct wave_stats {
  int steps, gemms, out_of_bounds, bad;
};

//! The unit policy of a quantizer over host memory (what device_quantizer<Q> holds on the device).
template <class Q>
struct host_unit;
template <class T>
struct host_unit<int_grid<T>> {
  cd::packed_grid_params<T> packed;
  T maxq;
  yaqa::index g;
  host_unit(const int_grid<T>& q, const std::vector<typename int_grid<T>::params_type>& p, yaqa::index gc)
      : packed(cd::pack_grid_params<T>(p, "emulated")), maxq(cd::grid_maxq(q)), g(gc) {}
  [[nodiscard]] cd::grid_unit<T> unit() const { return {{packed.scale.data(), packed.zero.data(), packed.rows, g, maxq}}; }
};
template <class T>
struct host_unit<e8p<T>> {
  std::vector<T> scale;
  yaqa::index rows, g;
  host_unit(const e8p<T>&, const std::vector<typename e8p<T>::params_type>& p, yaqa::index gc)
      : scale(cd::pack_e8p_scales<T>(p, "host_unit")), rows(p.front().rows()), g(gc) {}
  [[nodiscard]] cd::e8p_unit<T> unit() const { return {cd::e8p_host_table(), scale.data(), rows, g}; }
};

//! cuda::yaqa_round's host part, with the device loop emulated on the host.
template <class Q>
rounded<Q> emulated_yaqa_round(const Q& q, const matrix<scalar_of<Q>>& w, const matrix<scalar_of<Q>>& l_in,
                               const matrix<scalar_of<Q>>* l_out, yaqa::index tdx, yaqa::index tdy, wave_stats& st) {
  using T = scalar_of<Q>;
  using DQ = decltype(std::declval<host_unit<Q>>().unit());
  const yaqa::index m = w.rows(), n = w.cols();
  const bool two = l_out != nullptr;
  const yaqa::index g = yaqa::detail::checked_group_cols("emulated", q, m, n);
  auto r = yaqa::detail::make_rounded<Q>(m, n);
  r.params = yaqa::detail::fit_groups(q, view(w), g);
  const host_unit<Q> hu(q, r.params, g);
  const cd::wave_geometry geo = cd::make_wave_geometry(m, n, tdx, tdy, two);
  matrix<T> e = matrix<T>::Zero(two ? m : 0, two ? n : 0), ep = matrix<T>::Zero(m, n);
  std::vector<T> rr(static_cast<std::size_t>(geo.cap * geo.tile)), ff(rr.size());
  const cd::wave_buffers<T, typename Q::code_type> bf{
      w.data(), m,        l_in.data(),      n, two ? l_out->data() : nullptr, two ? m : 1, e.data(), m,
      ep.data(), m,       r.weights.data(), m, r.codes.data(),                m,           rr.data(), ff.data()};
  arena<T> mem;
  mem.add(l_in.data(), n * n);
  if (two) mem.add(l_out->data(), m * m);
  mem.add(e.data(), e.size());
  mem.add(ep.data(), ep.size());
  mem.add(rr.data(), static_cast<yaqa::index>(rr.size()));
  mem.add(ff.data(), static_cast<yaqa::index>(ff.size()));
  host_wave_exec<T, DQ> ex{geo, bf, hu.unit(), mem, std::vector<const T*>(static_cast<std::size_t>(4 * geo.cap)),
                           std::vector<T*>(static_cast<std::size_t>(2 * geo.cap))};
  cd::run_wavefront(geo, bf, ex);
  st = {ex.steps, ex.gemms, ex.out_of_bounds, ex.bad};
  return r;
}

}  // namespace

TEMPLATE_TEST_CASE("device int_grid element quantize equals int_grid::quantize", "[device_plan][int_grid]", float,
                   double) {
  using T = TestType;
  const yaqa::index m = 37, n = 60;
  for (bool sym : {false, true}) {
    const int_grid<T> q({.bits = 3, .sym = sym, .group_size = 20});
    const matrix<T> w = test::random_weights<T>(m, n, 11);
    const auto params = yaqa::detail::fit_groups(q, view(w), 20);
    const auto packed = cd::pack_grid_params<T>(params, "test");
    REQUIRE(packed.rows == m);
    REQUIRE(packed.groups == 3);
    const cd::grid_args<T> ga{packed.scale.data(), packed.zero.data(), m, 20, cd::grid_maxq(q)};
    // targets beyond the grid on both sides, so the clamps are exercised
    const matrix<T> target = test::random_weights<T>(m, n, 12) * T(3);
    yaqa::index mismatches = 0, clamped = 0;
    for (yaqa::index gi = 0; gi < 3; ++gi) {
      matrix<T> recon(m, 20);
      matrix<std::uint8_t> codes(m, 20);
      q.quantize(view(target).col_block(gi * 20, 20), params[static_cast<std::size_t>(gi)], 0, view(recon),
                 view(codes));
      for (yaqa::index j = 0; j < 20; ++j)
        for (yaqa::index i = 0; i < m; ++i) {
          std::uint8_t c = 0;
          bool ok = false;
          const T r = cd::grid_quantize(ga, target(i, gi * 20 + j), i, gi * 20 + j, c, ok);
          CHECK(ok);
          mismatches += (r != recon(i, j)) || (c != codes(i, j));
          clamped += c == 0 || c == 7;
        }
    }
    CHECK(mismatches == 0);
    CHECK(clamped > 0);
  }
  // a NaN target: ok = false and code 0, never a NaN conversion
  const int_grid<T> q;
  const matrix<T> w = test::random_weights<T>(4, 8, 13);
  const auto packed = cd::pack_grid_params<T>(yaqa::detail::fit_groups(q, view(w), 8), "test");
  const cd::grid_args<T> ga{packed.scale.data(), packed.zero.data(), 4, 8, cd::grid_maxq(q)};
  std::uint8_t c = 9;
  bool ok = true;
  (void)cd::grid_quantize(ga, std::numeric_limits<T>::quiet_NaN(), 1, 3, c, ok);
  CHECK_FALSE(ok);
  CHECK(c == 0);
}

TEST_CASE("pack_grid_params names the group whose rows differ", "[device_plan][int_grid]") {
  std::vector<int_grid<float>::params_type> p(2);
  p[0].scale = {1, 1, 1};
  p[0].zero = {0, 0, 0};
  p[1].scale = {1, 1};
  p[1].zero = {0, 0};
  CHECK_THROWS_WITH(cd::pack_grid_params<float>(p, "ctx"), Catch::Contains("ctx") && Catch::Contains("group 1"));
  CHECK_THROWS_AS(cd::pack_grid_params<float>({}, "ctx"), invalid_argument);
}

TEST_CASE("wavefront steps cover every tile once, in dependency order", "[device_plan][wavefront]") {
  for (auto [M, N] : {std::pair<yaqa::index, yaqa::index>{1, 1}, {1, 7}, {6, 1}, {5, 9}, {11, 4}}) {
    const auto geo = cd::make_wave_geometry(M * 3, N * 2, 3, 2, true);
    std::vector<int> step_of(static_cast<std::size_t>(M * N), -1);
    for (yaqa::index d = 0; d <= M + N - 2; ++d) {
      const auto s = cd::make_wave_step(geo, d);
      for (yaqa::index t = 0; t < s.nt; ++t) {
        const yaqa::index a = s.a_lo + t, k = s.k_of(a);
        REQUIRE(a >= 0);
        REQUIRE(a < M);
        REQUIRE(k >= 0);
        REQUIRE(k < N);
        CHECK(step_of[static_cast<std::size_t>(a * N + k)] == -1);
        step_of[static_cast<std::size_t>(a * N + k)] = int(d);
        // every tile the feedback of (a, k) needs (below or to the right) is in an earlier step
        if (a + 1 < M) CHECK((M - 1 - (a + 1)) + (N - 1 - k) < d);
        if (k + 1 < N) CHECK((M - 1 - a) + (N - 1 - (k + 1)) < d);
        // the step's strips start at or before the first row / column this tile needs
        CHECK(s.rs <= (a + 1) * 3);
        CHECK(s.cs <= (k + 1) * 2);
      }
    }
    for (int v : step_of) CHECK(v >= 0);
  }
}

TEMPLATE_TEST_CASE("device YAQA wavefront, run on the host, matches yaqa_round", "[device_plan][wavefront]", float,
                   double) {
  using T = TestType;
  struct cfg {
    yaqa::index m, n, tdx, tdy, group;
  };
  for (auto c : {cfg{272, 208, 16, 16, 0}, cfg{56, 40, 8, 4, 8}, cfg{96, 160, 16, 16, 32}, cfg{24, 90, 8, 6, 0}}) {
    const auto p = test::make_kronecker_layer<T>(c.m, c.n, c.tdx, c.tdy, 200 + std::uint64_t(c.m));
    const int_grid<T> q({.bits = 3, .sym = false, .group_size = c.group});
    yaqa_options o;
    o.tile_rows = c.tdx;
    o.tile_cols = c.tdy;
    const auto cpu = yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), o);
    wave_stats st{};
    const auto dev = emulated_yaqa_round(q, p.w, p.l_in, &p.l_out, c.tdx, c.tdy, st);
    INFO("m=" << c.m << " n=" << c.n << " tile " << c.tdx << "x" << c.tdy << " group " << c.group);
    const yaqa::index M = c.m / c.tdx, N = c.n / c.tdy;
    CHECK(st.steps == M + N - 1);
    CHECK(st.out_of_bounds == 0);
    CHECK(st.bad == 0);
    CHECK(st.gemms <= 2 * (M + N - 1));
    const double mis = test::mismatch_fraction(dev.codes, cpu.codes);
    const double pc = kronecker_proxy(view(matrix<T>(p.w - cpu.weights)), view(p.h_in), view(p.h_out));
    const double pd = kronecker_proxy(view(matrix<T>(p.w - dev.weights)), view(p.h_in), view(p.h_out));
    INFO("code mismatch " << mis << ", proxy cpu " << pc << " device plan " << pd);
    // only the GEMM summation order differs from the CPU: codes agree but for near-ties
    CHECK(mis <= 0.005);
    CHECK(std::abs(pd - pc) <= 0.01 * pc);
    const auto r = rtn(q, view(p.w));
    CHECK(pd < kronecker_proxy(view(matrix<T>(p.w - r.weights)), view(p.h_in), view(p.h_out)));
  }
}

TEMPLATE_TEST_CASE("device one-sided wavefront (LDLQ), run on the host, matches ldlq", "[device_plan][wavefront]",
                   float, double) {
  using T = TestType;
  const yaqa::index m = 88, n = 176, block = 16;
  const auto p = test::make_kronecker_layer<T>(m, n, 8, block, 300);
  const int_grid<T> q({.bits = 4, .sym = true, .group_size = 0});
  const auto cpu = ldlq(q, view(p.w), view(p.l_in), block);
  wave_stats st{};
  // cuda::ldlq's tiling: one tile row (m x block); also 8-row tiles, which must give the same
  for (yaqa::index tdx : {m, yaqa::index(8)}) {
    const auto dev = emulated_yaqa_round(q, p.w, p.l_in, nullptr, tdx, block, st);
    CHECK(st.out_of_bounds == 0);
    CHECK(st.steps == m / tdx + n / block - 1);
    const double mis = test::mismatch_fraction(dev.codes, cpu.codes);
    INFO("tile rows " << tdx << ", code mismatch " << mis);
    CHECK(mis <= 0.005);
  }
}

TEMPLATE_TEST_CASE("device E8P unit equals e8p::quantize", "[device_plan][e8p]", float, double) {
  using T = TestType;
  const yaqa::index m = 29, n = 64;
  const e8p<T> q;
  const matrix<T> w = test::random_weights<T>(m, n, 21);
  const auto p = q.fit(view(w));
  // targets at several scales, including ones far outside the codebook
  matrix<T> target = test::random_weights<T>(m, n, 22);
  target.topRows(5) *= T(20);
  matrix<T> recon(m, n);
  matrix<std::uint16_t> codes(m, n / 8);
  q.quantize(view(target), p, 0, view(recon), view(codes));
  const std::vector<T> scale = cd::pack_e8p_scales<T>(std::vector{p}, "test");
  REQUIRE(scale.size() == std::size_t(m));
  const cd::e8p_unit<T> u{cd::e8p_host_table(), scale.data(), m, n};
  yaqa::index code_mismatch = 0, recon_mismatch = 0;
  for (yaqa::index i = 0; i < m; ++i)
    for (yaqa::index g = 0; g < n / 8; ++g) {
      T x[8], r[8];
      for (int t = 0; t < 8; ++t) x[t] = target(i, 8 * g + t);
      std::uint16_t c = 0;
      CHECK(u(x, r, i, 8 * g, c));
      code_mismatch += c != codes(i, g);
      for (int t = 0; t < 8; ++t) recon_mismatch += c == codes(i, g) && r[t] != recon(i, 8 * g + t);
      // the scan's codeword is never farther than the CPU's (both exact up to rounding)
      double dd = 0, dc = 0;
      for (int t = 0; t < 8; ++t) {
        dd += std::pow(double(x[t]) - double(r[t]), 2);
        dc += std::pow(double(x[t]) - double(recon(i, 8 * g + t)), 2);
      }
      CHECK(dd <= dc * (1 + 1e-5) + 1e-12);
    }
  INFO("code mismatches " << code_mismatch << " of " << m * n / 8);
  CHECK(code_mismatch <= m * n / 8 / 100);
  CHECK(recon_mismatch == 0);
  // column groups: scale[group * rows + row], as e8p::quantize with each group's params
  {
    const e8p<T> qg({.group_size = 16});
    std::vector<typename e8p<T>::params_type> pg;
    for (yaqa::index c = 0; c < n; c += 16) pg.push_back(qg.fit(view(w).col_block(c, 16)));
    const std::vector<T> sg = cd::pack_e8p_scales<T>(pg, "test");
    const cd::e8p_unit<T> ug{cd::e8p_host_table(), sg.data(), m, 16};
    for (yaqa::index g = 0; g < n / 16; ++g) {
      matrix<T> rg(m, 16);
      matrix<std::uint16_t> cg(m, 2);
      qg.quantize(view(target).col_block(16 * g, 16), pg[std::size_t(g)], 0, view(rg), view(cg));
      for (yaqa::index i = 0; i < m; i += 3) {
        T x[8], r[8];
        for (int t = 0; t < 8; ++t) x[t] = target(i, 16 * g + 8 + t);
        std::uint16_t c = 0;
        CHECK(ug(x, r, i, 16 * g + 8, c));
        if (c == cg(i, 1))
          for (int t = 0; t < 8; ++t) CHECK(r[t] == rg(i, 8 + t));
        CHECK(double(r[0]) == Approx(double(pg[std::size_t(g)].scale[std::size_t(i)]) *
                                     double(e8p<T>::codeword(c)[0])).epsilon(1e-6).margin(1e-12));
      }
    }
  }
  // a non-finite target: false and code 0
  T x[8] = {0, 0, std::numeric_limits<T>::infinity(), 0, 0, 0, 0, 0}, r[8];
  std::uint16_t c = 7;
  CHECK_FALSE(u(x, r, 0, 0, c));
  CHECK(c == 0);
}

TEMPLATE_TEST_CASE("device wavefront with E8P, run on the host, matches yaqa_round and ldlq", "[device_plan][e8p]",
                   float, double) {
  using T = TestType;
  const e8p<T> q;
  for (auto [m, n, tdx, tdy] : {std::array<yaqa::index, 4>{48, 80, 8, 16}, {40, 72, 8, 8}}) {
    const auto p = test::make_kronecker_layer<T>(m, n, tdx, tdy, 700 + std::uint64_t(n));
    yaqa_options o;
    o.tile_rows = tdx;
    o.tile_cols = tdy;
    const auto cpu = yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), o);
    wave_stats st{};
    const auto dev = emulated_yaqa_round(q, p.w, p.l_in, &p.l_out, tdx, tdy, st);
    INFO("m=" << m << " n=" << n << " tile " << tdx << "x" << tdy);
    CHECK(st.out_of_bounds == 0);
    CHECK(st.steps == m / tdx + n / tdy - 1);
    REQUIRE(dev.codes.rows() == m);
    REQUIRE(dev.codes.cols() == n / 8);
    const double mis = test::mismatch_fraction(dev.codes, cpu.codes);
    const double pc = kronecker_proxy(view(matrix<T>(p.w - cpu.weights)), view(p.h_in), view(p.h_out));
    const double pd = kronecker_proxy(view(matrix<T>(p.w - dev.weights)), view(p.h_in), view(p.h_out));
    INFO("code mismatch " << mis << ", proxy cpu " << pc << " device plan " << pd);
    CHECK(mis <= 0.02);
    CHECK(std::abs(pd - pc) <= 0.02 * pc);
    CHECK(q.reconstruct(view(dev.codes), dev.params[0], 0) == dev.weights);
    // one-sided, as cuda::ldlq runs it (one tile row)
    const auto lc = ldlq(q, view(p.w), view(p.l_in), tdy);
    const auto ld = emulated_yaqa_round(q, p.w, p.l_in, nullptr, m, tdy, st);
    CHECK(st.out_of_bounds == 0);
    CHECK(test::mismatch_fraction(ld.codes, lc.codes) <= 0.02);
  }
}

namespace {

template <class T>
struct host_gptq_exec {
  const int_grid<T>& q;
  yaqa::detail::gptq_setup<int_grid<T>>& s;
  cd::packed_grid_params<T>& packed;
  cd::gptq_buffers<T> bf;
  matrix<T>& err;
  std::vector<yaqa::index> fitted;
  int bad = 0;

  [[nodiscard]] cd::grid_args<T> grid() const {
    return {packed.scale.data(), packed.zero.data(), s.W.rows(), s.g, cd::grid_maxq(q)};
  }
  void fit_group(yaqa::index group, yaqa::index first_col) {
    fitted.push_back(group);
    auto& pg = s.params[static_cast<std::size_t>(group)];
    pg = q.fit(view(std::as_const(s.W)).col_block(first_col, s.g));
    const yaqa::index m = s.W.rows();
    std::copy(pg.scale.begin(), pg.scale.end(), packed.scale.begin() + group * m);
    std::copy(pg.zero.begin(), pg.zero.end(), packed.zero.begin() + group * m);
  }
  void round_block(yaqa::index i1, yaqa::index count) {
    for (yaqa::index r = 0; r < s.W.rows(); ++r)
      if (!cd::gptq_row_block(bf, grid(), r, i1, count)) ++bad;
  }
  void update(yaqa::index i1, yaqa::index count, yaqa::index i2) {
    const yaqa::index n = s.W.cols();
    backend_ops<cpu_backend>::gemm<T>(cpu_backend{}, trans::none, trans::none, T(-1),
                                      view(std::as_const(err)).col_block(0, count),
                                      view(std::as_const(s.U)).block(i1, i2, count, n - i2), T(1),
                                      view(s.W).col_block(i2, n - i2));
  }
};

//! cuda::gptq with the device loop emulated on the host.
template <class T>
gptq_result<int_grid<T>> emulated_gptq(const int_grid<T>& q, const matrix<T>& w, const matrix<T>& h,
                                       const gptq_options& opt, std::vector<yaqa::index>* fitted = nullptr) {
  auto s = yaqa::detail::gptq_prepare("emulated", cpu_backend{}, q, view(w), view(h), opt);
  const yaqa::index m = w.rows(), n = w.cols();
  std::vector<yaqa::index> group_of(static_cast<std::size_t>(n));
  for (yaqa::index c = 0; c < n; ++c) group_of[static_cast<std::size_t>(c)] = s.group_of(c);
  cd::packed_grid_params<T> packed;
  if (s.lazy) {
    packed.rows = m;
    packed.groups = n / s.g;
    packed.scale.assign(static_cast<std::size_t>(m * packed.groups), T(0));
    packed.zero = packed.scale;
  } else {
    packed = cd::pack_grid_params<T>(s.params, "emulated");
  }
  matrix<T> qm(m, n), err(m, std::min(opt.block, n));
  matrix<std::uint8_t> codes(m, n);
  std::vector<double> loss(static_cast<std::size_t>(m), 0.0);
  const cd::gptq_buffers<T> bf{s.W.data(), m,   s.U.data(),      n,         qm.data(),   m,
                               codes.data(), m, err.data(),      m,         group_of.data(), loss.data()};
  host_gptq_exec<T> ex{q, s, packed, bf, err, {}};
  cd::run_gptq(n, opt.block, s.g, s.lazy, ex);
  CHECK(ex.bad == 0);
  if (fitted) *fitted = ex.fitted;
  for (double l : loss) s.res.loss += l;
  return yaqa::detail::gptq_finish(std::move(s), std::move(qm), std::move(codes));
}

}  // namespace

TEMPLATE_TEST_CASE("device GPTQ loop, run on the host, matches gptq", "[device_plan][gptq]", float, double) {
  using T = TestType;
  const yaqa::index m = 83, n = 200;
  const matrix<T> w = test::random_weights<T>(m, n, 500) * T(2);
  matrix<T> h = test::random_second_moment<double>(n, 2 * n, 501).cast<T>();
  h.row(7).setZero();  // a dead column
  h.col(7).setZero();
  struct cfg {
    yaqa::index group, block;
    bool act_order, static_groups;
  };
  // lazy groups starting mid-block, act-order with lazy and static groups, per channel
  for (auto c : {cfg{40, 32, false, false}, cfg{40, 32, true, false}, cfg{40, 64, true, true}, cfg{0, 48, false, false},
                 cfg{20, 200, true, false}}) {
    const int_grid<T> q({.bits = 3, .sym = false, .group_size = c.group});
    gptq_options o;
    o.block = c.block;
    o.act_order = c.act_order;
    o.static_groups = c.static_groups;
    const auto cpu = gptq(q, view(w), view(h), o);
    std::vector<yaqa::index> fitted;
    const auto dev = emulated_gptq(q, w, h, o, &fitted);
    INFO("group " << c.group << " block " << c.block << " act_order " << c.act_order << " static " << c.static_groups);
    const double mis = test::mismatch_fraction(dev.codes, cpu.codes);
    INFO("code mismatch " << mis);
    CHECK(mis <= 0.005);
    CHECK(dev.perm == cpu.perm);
    CHECK(dev.dead == cpu.dead);
    CHECK(dev.group_index == cpu.group_index);
    CHECK(dev.params.size() == cpu.params.size());
    CHECK(dev.loss == Approx(cpu.loss).epsilon(1e-3));
    CHECK((dev.weights.col(7).array() == 0).all());
    if (c.group != 0 && !c.static_groups) CHECK(fitted.size() == std::size_t(n / c.group));
    else CHECK(fitted.empty());
  }
}
