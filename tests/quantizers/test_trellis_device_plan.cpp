// The device trellis algorithm (backend/cuda/kernels/trellis_math.hpp) run on the host: the same
// bodies and launch driver as the CUDA kernels, with plain loops for the launches, against
// trellis<T>::quantize and reconstruct. Checks, without a GPU, everything of the device path
// but the launch wrappers (docs/design/device-plans.md).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include <quantizers/quantizer_checks.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>
#include <yaqa/backend/cuda/kernels/trellis_math.hpp>
#include <yaqa/quantizers/trellis.hpp>

using namespace yaqa;
namespace cd = yaqa::cuda::detail;

namespace {

template <class T>
cd::trellis_args<T> host_args(const trellis<T>& q) {
  const auto& g = q.geometry();
  const auto& tb = q.table();
  return {g.l,           g.k,
          g.v,           g.kv,
          g.steps,       q.code(),
          tb.v0.data(),  tb.v1.empty() ? nullptr : tb.v1.data(),
          tb.lut.empty() ? nullptr : tb.lut.data()};
}

// run_trellis's executor on the host: each launch is a loop over its grid, in index order.
template <class T>
struct host_exec {
  cd::trellis_args<T> a;
  const matrix<T>& target;
  matrix<T>& out;  // the reconstruction
  matrix<trellis_bits>& codes;
  yaqa::index tile_rows, batch;
  std::vector<T> rows;  // trellis_row_factors: reciprocals, amplitudes, scales
  std::vector<T> u, amp, c0, c1;
  std::vector<std::uint8_t> bp;
  std::vector<std::uint32_t> states;
  std::vector<std::int64_t> overlap;
  T* cur = nullptr;
  T* nxt = nullptr;
  yaqa::index tile0 = 0, nt = 0;
  bool bad = false;
  int launches = 0, batches = 0;

  host_exec(cd::trellis_args<T> args, const matrix<T>& t, matrix<T>& r, matrix<trellis_bits>& c, yaqa::index b,
            const std::vector<T>& scale)
      : a(args), target(t), out(r), codes(c), tile_rows(t.rows() / 16), batch(b),
        rows(cd::trellis_row_factors(scale.data(), t.rows())), u(std::size_t(b * 256)), amp(u.size()),
        c0(std::size_t(b * a.states())), c1(c0.size()),
        bp(std::size_t(b * a.steps * a.groups())), states(std::size_t(b * a.steps)), overlap(std::size_t(b)) {}

  void begin(yaqa::index first, yaqa::index count) {
    REQUIRE(count <= batch);
    tile0 = first;
    nt = count;
    cur = c0.data();
    nxt = c1.data();
    ++batches;
  }
  void load() {
    ++launches;
    for (yaqa::index i = 0; i < nt * 256; ++i) {
      bool ok = true;
      const yaqa::index tile = tile0 + i / 256;
      u[std::size_t(i)] = cd::trellis_load(target.data(), target.rows(), tile_rows, tile, int(i % 256), rows.data(), ok);
      amp[std::size_t(i)] = rows[std::size_t(target.rows() + cd::trellis_row(tile_rows, tile, int(i % 256)))];
      bad = bad || !ok;
    }
  }
  // target times amplitude and amplitude of step t, coordinate j (0, 0 for j = 1 when V = 1)
  std::pair<T, T> x(yaqa::index tile, int pass, int t, int j) const {
    T xv = 0, av = 0;
    if (j < a.v) cd::trellis_step_target(u.data() + tile * 256, amp.data() + tile * 256, a.steps, a.v, pass, t, j, xv, av);
    return {xv, av};
  }
  void start(int pass) {
    ++launches;
    const yaqa::index S = a.states();
    for (yaqa::index i = 0; i < nt * S; ++i) {
      const yaqa::index tile = i / S;
      const auto [x0, a0] = x(tile, pass, 0, 0);
      const auto [x1, a1] = x(tile, pass, 0, 1);
      cur[i] = cd::trellis_start(a, i % S, x0, x1, a0, a1, pass == 0 ? std::int64_t{-1} : overlap[std::size_t(tile)]);
    }
  }
  void step(int pass, int t) {
    ++launches;
    const yaqa::index S = a.states(), G = a.groups();
    for (yaqa::index i = 0; i < nt * G; ++i) {
      const yaqa::index tile = i / G;
      const auto [x0, a0] = x(tile, pass, t, 0);
      const auto [x1, a1] = x(tile, pass, t, 1);
      cd::trellis_group(a, cur + tile * S, nxt + tile * S, bp.data() + (tile * a.steps + t) * G, i % G, x0, x1, a0, a1);
    }
    std::swap(cur, nxt);
  }
  void finish(int pass) {
    ++launches;
    for (yaqa::index tile = 0; tile < nt; ++tile) {
      std::uint32_t* st = states.data() + tile * a.steps;
      cd::trellis_finish(a, cur + tile * a.states(), bp.data() + tile * a.steps * a.groups(),
                         pass == 0 ? std::int64_t{-1} : overlap[std::size_t(tile)], st);
      if (pass == 0) overlap[std::size_t(tile)] = cd::trellis_overlap(a, st);
    }
  }
  void pack() {
    ++launches;
    for (yaqa::index i = 0; i < nt * trellis_bits::capacity_words; ++i) {
      const yaqa::index tile = i / trellis_bits::capacity_words, g = tile0 + tile;
      const int w = int(i % trellis_bits::capacity_words);
      codes(g % tile_rows, g / tile_rows).words[std::size_t(w)] =
          w < a.words() ? cd::trellis_word(a, states.data() + tile * a.steps, w) : 0u;
    }
  }
  void recon() {
    ++launches;
    for (yaqa::index i = 0; i < nt * 256; ++i) {
      const yaqa::index tile = i / 256, g = tile0 + tile;
      const int e = int(i % 256), j = e % a.v;
      const std::uint32_t s = states[std::size_t(tile * a.steps + e / a.v)];
      const yaqa::index row = cd::trellis_row(tile_rows, g, e);
      out(row, 16 * (g / tile_rows) + e % 16) =
          cd::mul_rn(rows[std::size_t(2 * target.rows() + row)], j == 0 ? a.v0[s] : a.v1[s]);
    }
  }
};

template <class T>
double tile_err(const matrix<T>& target, const matrix<T>& recon, yaqa::index ti, yaqa::index tj) {
  return (target.block(16 * ti, 16 * tj, 16, 16) - recon.block(16 * ti, 16 * tj, 16, 16))
      .template cast<double>()
      .squaredNorm();
}

}  // namespace

TEMPLATE_TEST_CASE("device trellis bodies: values, streams and decoding equal the CPU's", "[device_plan][trellis]",
                   float, double) {
  using T = TestType;
  for (const trellis_code code : {trellis_code::one_mad, trellis_code::three_inst, trellis_code::hyb}) {
    const trellis<T> q({.l = 12, .k = 3, .code = code});
    const auto a = host_args(q);
    INFO("code " << to_string(code));
    int bad = 0;
    for (std::uint32_t s = 0; s < 4096; ++s)
      for (int j = 0; j < q.v(); ++j) bad += cd::trellis_value(a, s, j) != q.value(s, j);
    CHECK(bad == 0);
    // a stream from the CPU: words from the walk, states from the words, elements decoded
    const matrix<T> w = test::random_matrix<T>(16, 16, 3);
    const auto p = q.fit(view(w));
    const auto r = test::run_quantize(q, w, p);
    std::vector<std::uint32_t> st(std::size_t(a.steps));
    for (int t = 0; t < a.steps; ++t) st[std::size_t(t)] = q.state_at(r.codes(0, 0), t);
    for (int wd = 0; wd < a.words(); ++wd)
      CHECK(cd::trellis_word(a, st.data(), wd) == r.codes(0, 0).words[std::size_t(wd)]);
    bool same_states = true, same_values = true;
    for (int t = 0; t < a.steps; ++t)
      same_states &= cd::trellis_state_from_words(r.codes(0, 0).words.data(), a.l, a.kv, a.words(), t) == st[std::size_t(t)];
    for (int e = 0; e < 256; ++e)
      same_values &= cd::trellis_decode(a, r.codes(0, 0).words.data(), p.scale[std::size_t(e / 16)], e) ==
                     r.recon(e / 16, e % 16);
    CHECK(same_states);
    CHECK(same_values);
  }
}

TEMPLATE_TEST_CASE("device trellis quantize, run on the host, matches trellis::quantize", "[device_plan][trellis]",
                   float, double) {
  using T = TestType;
  struct cfg {
    int l, k;
    trellis_code code;
    yaqa::index m, n, batch;
    trellis_scales scales;
  };
  // several batches (including a short last one), and one batch for the whole target; rows of
  // very different RMS (the weighted walk) and the per_matrix scale (the unweighted one)
  for (auto c : {cfg{10, 2, trellis_code::hyb, 48, 80, 4, trellis_scales::per_row},
                 cfg{9, 3, trellis_code::one_mad, 32, 48, 6, trellis_scales::per_row},
                 cfg{11, 1, trellis_code::three_inst, 16, 64, 1, trellis_scales::per_row},
                 cfg{8, 4, trellis_code::hyb, 32, 32, 16, trellis_scales::per_row},
                 cfg{9, 2, trellis_code::three_inst, 32, 48, 4, trellis_scales::per_matrix}}) {
    const trellis<T> q({.l = c.l, .k = c.k, .code = c.code, .scales = c.scales});
    matrix<T> w = test::random_matrix<T>(c.m, c.n, 40 + std::uint64_t(c.l));
    for (yaqa::index i = 0; i < c.m; ++i) w.row(i) *= T(0.1 + 0.25 * double(i % 13));
    if (c.m > 16) w.row(17).setZero();
    const auto p = q.fit(view(w));
    const auto cpu = test::run_quantize(q, w, p);
    matrix<T> recon = matrix<T>::Zero(c.m, c.n);
    matrix<trellis_bits> codes(c.m / 16, c.n / 16);
    host_exec<T> ex(host_args(q), w, recon, codes, c.batch, p.scale);
    const yaqa::index total = (c.m / 16) * (c.n / 16);
    cd::run_trellis(q.geometry().steps, total, c.batch, ex);
    INFO("L=" << c.l << " K=" << c.k << " code " << to_string(c.code) << " batch " << c.batch << " scales "
              << int(c.scales));
    // the amplitudes are the CPU's: s_row / the largest scale of the tile's rows
    for (yaqa::index r0 = 0; r0 < c.m; r0 += 16) {
      T smax = 0;
      for (yaqa::index i = r0; i < r0 + 16; ++i) smax = std::max(smax, p.scale[std::size_t(i)]);
      for (yaqa::index i = r0; i < r0 + 16; ++i)
        CHECK(ex.rows[std::size_t(c.m + i)] == (c.scales == trellis_scales::per_matrix ? T(1) : p.scale[std::size_t(i)] / smax));
    }
    CHECK(ex.batches == (total + c.batch - 1) / c.batch);
    CHECK(ex.launches == ex.batches * (2 * q.geometry().steps + 5));
    CHECK_FALSE(ex.bad);
    // Same walks up to ties within rounding (the host compiler may fuse what the device rounds).
    CHECK(test::mismatch_fraction(codes, cpu.codes) <= 0.1);
    for (yaqa::index tj = 0; tj < codes.cols(); ++tj)
      for (yaqa::index ti = 0; ti < codes.rows(); ++ti)
        CHECK(tile_err(w, recon, ti, tj) == Approx(tile_err(w, cpu.recon, ti, tj)).epsilon(sizeof(T) == 4 ? 1e-4 : 1e-10));
    CHECK(q.reconstruct(view(std::as_const(codes)), p, 0) == recon);
  }
  // a non-finite target sets the flag
  const trellis<T> q({.l = 8, .k = 2, .code = trellis_code::one_mad});
  matrix<T> w = test::random_matrix<T>(16, 16, 5);
  const auto p = q.fit(view(w));
  w(3, 4) = std::numeric_limits<T>::infinity();
  matrix<T> recon(16, 16);
  matrix<trellis_bits> codes(1, 1);
  host_exec<T> ex(host_args(q), w, recon, codes, 1, p.scale);
  cd::run_trellis(q.geometry().steps, 1, 1, ex);
  CHECK(ex.bad);
  // the per-row factors: reciprocal (0 for a zero scale), amplitude in the tile band, scale
  std::vector<T> sc(32, T(2));
  sc[3] = T(4);
  sc[20] = T(0);
  for (yaqa::index i = 16; i < 32; ++i) sc[std::size_t(i)] = T(0);
  const auto f = cd::trellis_row_factors(sc.data(), 32);
  REQUIRE(f.size() == 96);
  CHECK(f[0] == T(0.5));
  CHECK(f[3] == T(0.25));
  CHECK(f[20] == T(0));
  CHECK(f[32 + 0] == T(0.5));
  CHECK(f[32 + 3] == T(1));
  CHECK(f[32 + 20] == T(1));  // an all-zero band: unweighted
  CHECK(f[64 + 3] == T(4));
}

TEST_CASE("device trellis batches fit the scratch budget", "[device_plan][trellis]") {
  const trellis<float> q16({.l = 16, .k = 2, .code = trellis_code::one_mad});
  const auto a = host_args(q16);
  // 2 x 256 KiB of costs, 256 steps x 16384 one-byte back pointers, 1 KiB targets, 1 KiB amplitudes,
  // 1 KiB states, 8 bytes
  CHECK(cd::trellis_tile_scratch(a) == 2 * 262144 + 256 * 16384 + 1024 + 1024 + 1024 + 8);
  CHECK(cd::trellis_batch_tiles(a, 10000, yaqa::index(1) << 30) == (yaqa::index(1) << 30) / cd::trellis_tile_scratch(a));
  CHECK(cd::trellis_batch_tiles(a, 5, yaqa::index(1) << 30) == 5);
  CHECK(cd::trellis_batch_tiles(a, 5, 0) == 1);
}
