// The CUDA kernels against their CPU counterparts: random Hadamard transform, int_grid quantize,
// and YAQA / LDLQ rounding (wavefront on the device vs the CPU drivers). Sizes are not multiples
// of the 256-thread blocks, and the layers have tile counts that are not powers of two.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>

#include <cuda/cuda_support.hpp>
#include <rounding/reference_rounding.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>

using namespace yaqa;

TEMPLATE_TEST_CASE("cuda hadamard_apply matches random_hadamard::apply (power-of-two orders)",
                   "[cuda][linalg][hadamard]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  // 64 and 2048: shared-memory kernel; 16384: one global pass per stage (over 48 KiB per vector)
  for (yaqa::index n : {64, 2048, 16384}) {
    const random_hadamard u(n, 1000 + std::uint64_t(n));
    const yaqa::index other = n > 4096 ? 5 : 37;
    for (int s = 0; s < 2; ++s)
      for (int t = 0; t < 2; ++t) {
        const side sd = s ? side::right : side::left;
        const trans tr = t ? trans::transpose : trans::none;
        // a strided view: the matrix is a block of a larger one
        const yaqa::index rows = s ? other : n, cols = s ? n : other;
        matrix<T> big = test::random_matrix<T>(rows + 3, cols, 40 + std::uint64_t(n));
        auto dbig = test::upload(big);
        cuda::hadamard_apply<T>(b, u, sd, tr, dbig.view().block(1, 0, rows, cols));
        matrix<T> x = big.block(1, 0, rows, cols);
        u.apply<T>(sd, tr, view(x));
        const matrix<T> g = test::download(dbig);
        INFO("n=" << n << " side=" << s << " trans=" << t);
        REQUIRE_THAT(Eigen::MatrixXd(g.block(1, 0, rows, cols).template cast<double>()),
                     test::IsClose(x, sizeof(T) == 4 ? 1e-6 : 1e-14));
        CHECK(g.row(0) == big.row(0));  // rows outside the view untouched
        CHECK(g.row(rows + 2) == big.row(rows + 2));
      }
  }
  // other orders (hadamard(12) x sylvester(8) here) are tested in test_hadamard_orders.cu
  cuda::device_matrix<T> x(b, 96, 3);
  CHECK_THROWS_AS(cuda::hadamard_apply<T>(b, random_hadamard(64, 1), side::left, trans::none, x.view()),
                  shape_error);
}

TEMPLATE_TEST_CASE("cuda int_grid quantize gives the CPU codes and reconstruction for the same parameters",
                   "[cuda][quantizers]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  const yaqa::index m = 75, n = 150;
  for (auto opt : {int_grid_options{.bits = 3, .sym = false, .group_size = 50},
                   int_grid_options{.bits = 4, .sym = true, .group_size = 0},
                   int_grid_options{.bits = 2, .sym = false, .group_size = 25, .mse = true}}) {
    const int_grid<T> q(opt);
    const matrix<T> w = test::random_weights<T>(m, n, 50);
    const matrix<T> target = w + test::random_matrix<T>(m, n, 51, 0.05);  // beyond the range too
    const yaqa::index g = q.group_cols(n);
    std::vector<typename int_grid<T>::params_type> params;
    for (yaqa::index c = 0; c < n; c += g) params.push_back(q.fit(view(w).col_block(c, g)));
    matrix<T> recon(m, n);
    matrix<std::uint8_t> codes(m, n);
    for (yaqa::index c = 0; c < n; c += g)
      q.quantize(view(target).col_block(c, g), params[std::size_t(c / g)], 0, view(recon).col_block(c, g),
                 view(codes).col_block(c, g));

    const auto p = cuda::upload_params<T>(b, params, g);
    const auto dt = test::upload(target);
    cuda::device_matrix<T> drecon(b, m, n);
    cuda::device_matrix<std::uint8_t> dcodes(b, m, n);
    cuda::quantize<T>(b, q, p, dt.cview(), 0, 0, drecon.view(), dcodes.view());
    INFO("bits=" << opt.bits << " sym=" << opt.sym << " group=" << opt.group_size);
    CHECK(test::mismatch_fraction(cuda::to_host(b, dcodes), codes) == 0.0);
    CHECK(test::download(drecon) == recon);

    // a block with an offset: rows 10.., columns 30.. use their own rows' and groups' parameters
    cuda::device_matrix<T> brecon(b, 40, 70);
    cuda::device_matrix<std::uint8_t> bcodes(b, 40, 70);
    cuda::quantize<T>(b, q, p, dt.cview().block(10, 30, 40, 70), 10, 30, brecon.view(), bcodes.view());
    CHECK(cuda::to_host(b, bcodes) == codes.block(10, 30, 40, 70));
    CHECK(test::download(brecon) == recon.block(10, 30, 40, 70));
  }
  // non-finite targets are reported, out-of-range blocks rejected
  const int_grid<T> q;
  const matrix<T> w = test::random_weights<T>(8, 16, 52);
  const auto p = cuda::upload_params<T>(b, {q.fit(view(w))}, 16);
  matrix<T> bad = w;
  bad(3, 5) = std::numeric_limits<T>::infinity();
  cuda::device_matrix<T> r(b, 8, 16);
  cuda::device_matrix<std::uint8_t> c(b, 8, 16);
  CHECK_THROWS_AS(cuda::quantize<T>(b, q, p, test::upload(bad).cview(), 0, 0, r.view(), c.view()),
                  non_finite_error);
  CHECK_THROWS_AS(cuda::quantize<T>(b, q, p, test::upload(w).cview(), 1, 0, r.view(), c.view()), shape_error);
}

namespace {

template <class T>
double proxy_of(const test::kronecker_layer<T>& p, const matrix<T>& w_hat, bool two_sided) {
  const matrix<T> d = p.w - w_hat;
  return kronecker_proxy(view(d), view(p.h_in), two_sided ? view(p.h_out) : matrix_view<const T>{});
}

}  // namespace

TEMPLATE_TEST_CASE("cuda YAQA rounding (wavefront) matches the CPU result", "[cuda][rounding][yaqa]", float,
                   double) {
  using T = TestType;
  const auto& b = test::gpu();
  struct cfg {
    yaqa::index m, n, tdx, tdy, group;
  };
  // 17 x 13 and 7 x 10 tiles; non-square tiles; groups narrower and wider than a tile
  for (auto c : {cfg{272, 208, 16, 16, 0}, cfg{56, 40, 8, 4, 8}, cfg{96, 160, 16, 16, 32}}) {
    const auto p = test::make_kronecker_layer<T>(c.m, c.n, c.tdx, c.tdy, 200 + std::uint64_t(c.m));
    const int_grid<T> q({.bits = 3, .sym = false, .group_size = c.group});
    yaqa_options o;
    o.tile_rows = c.tdx;
    o.tile_cols = c.tdy;
    const auto cpu = yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), o);
    const auto gpu = cuda::yaqa_round(b, q, view(p.w), view(p.l_in), view(p.l_out), o);
    INFO("m=" << c.m << " n=" << c.n << " tile " << c.tdx << "x" << c.tdy << " group " << c.group);
    REQUIRE(gpu.weights.rows() == c.m);
    REQUIRE(gpu.codes.cols() == c.n);
    REQUIRE(gpu.params.size() == cpu.params.size());
    const double mis = test::mismatch_fraction(gpu.codes, cpu.codes);
    const double pc = proxy_of(p, cpu.weights, true), pg = proxy_of(p, gpu.weights, true);
    INFO("code mismatch " << mis << ", proxy cpu " << pc << " gpu " << pg);
    CHECK(mis <= 0.01);
    CHECK(std::abs(pg - pc) <= 0.02 * pc);
    // the reconstruction is the grid value of each code
    const matrix<T> rec = q.reconstruct(view(gpu.codes).col_block(0, q.group_cols(c.n)), gpu.params[0], 0);
    CHECK(rec == gpu.weights.leftCols(q.group_cols(c.n)));
    // and it beats plain RTN on the two-sided proxy
    const auto r = rtn(q, view(p.w));
    CHECK(pg < proxy_of(p, r.weights, true));
  }
}

TEMPLATE_TEST_CASE("cuda LDLQ and one-sided YAQA match the CPU LDLQ", "[cuda][rounding][ldlq]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  const yaqa::index m = 88, n = 176, block = 16;  // 11 column blocks
  const auto p = test::make_kronecker_layer<T>(m, n, 8, block, 300);
  const int_grid<T> q({.bits = 4, .sym = true, .group_size = 0});
  const auto cpu = ldlq(q, view(p.w), view(p.l_in), block);
  const auto gpu = cuda::ldlq(b, q, view(p.w), view(p.l_in), block);
  yaqa_options o;
  o.tile_rows = 8;
  o.tile_cols = block;
  const auto one_sided = cuda::yaqa_round(b, q, view(p.w), view(p.l_in), matrix_view<const T>{}, o);
  const double pc = proxy_of(p, cpu.weights, false);
  for (const auto* g : {&gpu, &one_sided}) {
    const double mis = test::mismatch_fraction(g->codes, cpu.codes);
    const double pg = proxy_of(p, g->weights, false);
    INFO("code mismatch " << mis << ", proxy cpu " << pc << " gpu " << pg);
    CHECK(mis <= 0.01);
    CHECK(std::abs(pg - pc) <= 0.02 * pc);
  }
}

TEST_CASE("cuda YAQA rounding validates its inputs on the host", "[cuda][rounding][yaqa]") {
  const auto& b = test::gpu();
  const auto p = test::make_kronecker_layer<float>(32, 48, 16, 16, 400);
  const int_grid<float> q;
  yaqa_options o;
  o.tile_rows = 16;
  o.tile_cols = 10;  // does not divide 48
  CHECK_THROWS_AS(cuda::yaqa_round(b, q, view(p.w), view(p.l_in), view(p.l_out), o), shape_error);
  matrix<float> w = p.w;
  w(1, 2) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(cuda::yaqa_round(b, q, view(w), view(p.l_in), view(p.l_out)), non_finite_error);
  CHECK_THROWS_AS(cuda::yaqa_round(b, q, view(p.w), view(p.l_out), view(p.l_out)), shape_error);
}

TEMPLATE_TEST_CASE("cuda GPTQ matches the CPU gptq", "[cuda][rounding][gptq]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  const yaqa::index m = 83, n = 200;  // 83 rows: not a multiple of the 64-thread blocks
  const matrix<T> w = test::random_weights<T>(m, n, 500) * T(2);
  matrix<T> h = test::random_second_moment<double>(n, 2 * n, 501).cast<T>();
  h.row(7).setZero();  // a dead column
  h.col(7).setZero();
  struct cfg {
    yaqa::index group, block;
    bool act_order, static_groups;
  };
  // lazy groups starting mid-block (device -> host fit -> device), act-order lazy and static,
  // per channel, one block
  for (auto c : {cfg{40, 32, false, false}, cfg{40, 32, true, false}, cfg{40, 64, true, true}, cfg{0, 48, false, false},
                 cfg{20, 200, true, false}}) {
    const int_grid<T> q({.bits = 3, .sym = false, .group_size = c.group});
    gptq_options o;
    o.block = c.block;
    o.act_order = c.act_order;
    o.static_groups = c.static_groups;
    const auto cpu = gptq(q, view(w), view(h), o);
    const auto gpu = cuda::gptq<T>(b, q, view(w), view(h), o);
    INFO("group " << c.group << " block " << c.block << " act_order " << c.act_order << " static " << c.static_groups);
    const double mis = test::mismatch_fraction(gpu.codes, cpu.codes);
    INFO("code mismatch " << mis << ", loss cpu " << cpu.loss << " gpu " << gpu.loss);
    CHECK(mis <= 0.01);
    CHECK(gpu.perm == cpu.perm);
    CHECK(gpu.dead == cpu.dead);
    CHECK(gpu.group_index == cpu.group_index);
    CHECK(gpu.damp == cpu.damp);
    CHECK(std::abs(gpu.loss - cpu.loss) <= 0.02 * cpu.loss);
    CHECK((gpu.weights.col(7).array() == 0).all());
    // the reconstruction is the grid value of each code (first group)
    const yaqa::index g = q.group_cols(n);
    std::vector<yaqa::index> cols;
    for (yaqa::index j = 0; j < n; ++j)
      if ((gpu.group_index.empty() ? j / g : gpu.group_index[std::size_t(j)]) == 0) cols.push_back(j);
    for (yaqa::index j : cols) {
      const matrix<T> rec = q.reconstruct(view(gpu.codes).col_block(j, 1), gpu.params[0], 0);
      CHECK(rec == gpu.weights.col(j));
    }
  }
  // non-finite input: the host checks name W
  matrix<T> bad = w;
  bad(3, 4) = std::numeric_limits<T>::infinity();
  CHECK_THROWS_AS(cuda::gptq<T>(b, int_grid<T>(), view(bad), view(h)), non_finite_error);
}

TEMPLATE_TEST_CASE("cuda YAQA and LDLQ with the E8P quantizer match the CPU", "[cuda][rounding][e8p]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  const e8p<T> q;
  for (auto [m, n, tdx, tdy] : {std::array<yaqa::index, 4>{48, 80, 8, 16}, {40, 72, 8, 8}}) {
    const auto p = test::make_kronecker_layer<T>(m, n, tdx, tdy, 700 + std::uint64_t(n));
    yaqa_options o;
    o.tile_rows = tdx;
    o.tile_cols = tdy;
    const auto cpu = yaqa_round(q, view(p.w), view(p.l_in), view(p.l_out), o);
    const auto gpu = cuda::yaqa_round(b, q, view(p.w), view(p.l_in), view(p.l_out), o);
    INFO("m=" << m << " n=" << n << " tile " << tdx << "x" << tdy);
    REQUIRE(gpu.codes.rows() == m);
    REQUIRE(gpu.codes.cols() == n / 8);
    const double mis = test::mismatch_fraction(gpu.codes, cpu.codes);
    const double pc = proxy_of(p, cpu.weights, true), pg = proxy_of(p, gpu.weights, true);
    INFO("code mismatch " << mis << ", proxy cpu " << pc << " gpu " << pg);
    CHECK(mis <= 0.02);
    CHECK(std::abs(pg - pc) <= 0.02 * pc);
    CHECK(q.reconstruct(view(gpu.codes), gpu.params[0], 0) == gpu.weights);
    const auto lc = ldlq(q, view(p.w), view(p.l_in), tdy);
    const auto lg = cuda::ldlq(b, q, view(p.w), view(p.l_in), tdy);
    CHECK(test::mismatch_fraction(lg.codes, lc.codes) <= 0.02);
  }
  // the tile width must hold whole 1 x 8 units
  const auto p = test::make_kronecker_layer<float>(16, 32, 8, 4, 710);
  yaqa_options o;
  o.tile_rows = 8;
  o.tile_cols = 4;
  CHECK_THROWS_AS(cuda::yaqa_round(b, e8p<float>(), view(p.w), view(p.l_in), view(p.l_out), o), yaqa::error);
}
