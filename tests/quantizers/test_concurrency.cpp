#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include <quantizers/quantizer_checks.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/e8p.hpp>
#include <yaqa/quantizers/e8p_rvq.hpp>
#include <yaqa/quantizers/nonuniform_grid.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>

using namespace yaqa;

namespace {

// quantize() is const and reentrant: four threads quantizing interleaved row blocks of the same
// matrix with the same quantizer object and params give exactly the serial result.
template <Quantizer Q>
void check_concurrent(const Q& q, yaqa::index m, yaqa::index n) {
  using T = typename Q::scalar_type;
  const matrix<T> w = test::random_matrix<T>(m, n, 77);
  const auto p = q.fit(view(w));
  const auto serial = test::run_quantize(q, w, p);
  matrix<T> recon = matrix<T>::Zero(m, n);
  matrix<typename Q::code_type> codes(m, n / Q::unit_cols);
  codes.setZero();
  const yaqa::index rows = 8;
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&, t] {
      for (yaqa::index r0 = rows * t; r0 < m; r0 += 4 * rows) {
        const yaqa::index h = std::min(rows, m - r0);
        q.quantize(view(w).row_block(r0, h), p, r0, view(recon).row_block(r0, h),
                   view(codes).row_block(r0, h));
      }
    });
  for (auto& th : pool) th.join();
  CHECK(recon == serial.recon);
  CHECK(codes == serial.codes);
}

}  // namespace

TEST_CASE("quantize is reentrant: concurrent row blocks equal the serial result", "[quantizers][threads]") {
  check_concurrent(int_grid<float>({.bits = 3, .mse = true}), 101, 48);
  check_concurrent(lloyd_max_grid<double>({.bits = 4}), 101, 48);
  check_concurrent(fp4_e2m1<float>(), 101, 64);
  check_concurrent(e8p<float>(), 101, 48);
  check_concurrent(e8p<double>({.scale_override = 0.9}), 77, 24);
  check_concurrent(e8p_rvq<float>({.bits = 3}), 45, 32);
  check_concurrent(e8p_rvq<double>({.bits = 4, .scales = e8p_scales::per_matrix}), 37, 16);
}

TEST_CASE("int_grid's parallel MSE search is independent of the thread count", "[quantizers][threads]") {
  // 300 x 200 x 80 steps is above the parallel threshold; row chunks are fixed by the shape.
  const matrix<float> w = test::random_matrix<float>(300, 200, 78);
  const int_grid<float> q({.bits = 2, .mse = true});
  const auto p = q.fit(view(w));
  // Fitting row slices alone (serially, smaller than the threshold) gives the same params.
  for (yaqa::index r0 : {0, 64, 250}) {
    const matrix<float> slice = w.middleRows(r0, 50);
    const auto ps = q.fit(view(slice));
    for (yaqa::index i = 0; i < 50; ++i) {
      CHECK(ps.scale[i] == p.scale[r0 + i]);
      CHECK(ps.zero[i] == p.zero[r0 + i]);
    }
  }
}
