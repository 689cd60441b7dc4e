// The trellis quantizer on the device (kernels/trellis.cuh) against trellis<T>::quantize and
// reconstruct on the CPU: walks, streams, reconstructions, batching, errors. Skipped without a
// GPU (exit 77); it has not run on one yet.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>

#include <cuda/cuda_support.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>

using namespace yaqa;

namespace {

// Squared error of a tile's reconstruction against the target, in double.
template <class T>
double tile_err(const matrix<T>& target, const matrix<T>& recon, yaqa::index ti, yaqa::index tj) {
  return (target.block(16 * ti, 16 * tj, 16, 16) - recon.block(16 * ti, 16 * tj, 16, 16))
      .template cast<double>()
      .squaredNorm();
}

}  // namespace

TEMPLATE_TEST_CASE("cuda trellis quantize gives the CPU walks, streams and reconstructions", "[cuda][quantizers][trellis]",
                   float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  struct cfg {
    int l, k;
    trellis_code code;
    yaqa::index m, n, batch_bytes;
    trellis_scales scales;
  };
  // batch_bytes 0: one tile per batch (many batches); 1 GiB: one batch. Rows of very different
  // RMS and a zero row: per_row runs the weighted walk, per_matrix the unweighted one.
  for (auto c : {cfg{12, 2, trellis_code::hyb, 48, 80, yaqa::index(1) << 30, trellis_scales::per_row},
                 cfg{10, 3, trellis_code::one_mad, 32, 48, 0, trellis_scales::per_row},
                 cfg{11, 4, trellis_code::three_inst, 16, 64, yaqa::index(1) << 30, trellis_scales::per_row},
                 cfg{16, 2, trellis_code::hyb, 16, 32, yaqa::index(1) << 30, trellis_scales::per_row},
                 cfg{10, 2, trellis_code::three_inst, 32, 48, yaqa::index(1) << 30, trellis_scales::per_matrix}}) {
    const trellis<T> q({.l = c.l, .k = c.k, .code = c.code, .scales = c.scales});
    matrix<T> w = test::random_matrix<T>(c.m, c.n, 90 + std::uint64_t(c.l));
    for (yaqa::index i = 0; i < c.m; ++i) w.row(i) *= T(0.1 + 0.25 * double(i % 13));
    w.row(c.m - 3).setZero();
    const auto p = q.fit(view(w));
    matrix<T> recon(c.m, c.n);
    matrix<trellis_bits> codes(c.m / 16, c.n / 16);
    q.quantize(view(w), p, 0, view(recon), view(codes));

    const auto dt = cuda::upload_tables(b, q);
    const auto dw = test::upload(w);
    cuda::device_matrix<T> drecon(b, c.m, c.n);
    cuda::device_matrix<trellis_bits> dcodes(b, c.m / 16, c.n / 16);
    cuda::quantize<T>(b, q, dt, p, dw.cview(), drecon.view(), dcodes.view(), c.batch_bytes);
    const matrix<trellis_bits> gcodes = cuda::to_host(b, dcodes);
    const matrix<T> grecon = test::download(drecon);
    INFO("L=" << c.l << " K=" << c.k << " code " << to_string(c.code) << " " << c.m << "x" << c.n << " scales "
              << int(c.scales));
    // The device rounds every error term separately, the CPU may fuse (x - v)^2 + c: walks can
    // differ where two costs tie to rounding, never by more than that.
    CHECK(test::mismatch_fraction(gcodes, codes) <= 0.1);
    for (yaqa::index tj = 0; tj < codes.cols(); ++tj)
      for (yaqa::index ti = 0; ti < codes.rows(); ++ti) {
        const double ec = tile_err(w, recon, ti, tj), eg = tile_err(w, grecon, ti, tj);
        CHECK(eg == Approx(ec).epsilon(sizeof(T) == 4 ? 1e-4 : 1e-10));
      }
    // the stream decodes to the reconstruction, on the CPU and on the device
    CHECK(q.reconstruct(view(gcodes), p, 0) == grecon);
    cuda::device_matrix<T> dout(b, c.m, c.n);
    cuda::reconstruct<T>(b, q, dt, p, dcodes.cview(), dout.view());
    CHECK(test::download(dout) == grecon);
    // and the device decodes CPU streams as the CPU does
    const auto dcpu = cuda::to_device(b, view(std::as_const(codes)));
    cuda::reconstruct<T>(b, q, dt, p, dcpu.cview(), dout.view());
    CHECK(test::download(dout) == recon);
  }
}

TEST_CASE("cuda trellis: bad shapes, mismatched tables, non-finite targets", "[cuda][quantizers][trellis]") {
  const auto& b = test::gpu();
  const trellis<float> q({.l = 10, .k = 2, .code = trellis_code::one_mad});
  const trellis<float> other({.l = 11, .k = 2, .code = trellis_code::one_mad});
  matrix<float> w = test::random_matrix<float>(16, 32, 7);
  const auto p = q.fit(view(w));
  const auto dt = cuda::upload_tables(b, q);
  cuda::device_matrix<float> r(b, 16, 32);
  cuda::device_matrix<trellis_bits> c(b, 1, 2), c_wrong(b, 1, 1);
  CHECK_THROWS_AS(cuda::quantize<float>(b, q, dt, p, test::upload(w).cview(), r.view(), c_wrong.view()),
                  shape_error);
  CHECK_THROWS_WITH(cuda::quantize<float>(b, other, dt, p, test::upload(w).cview(), r.view(), c.view()),
                    Catch::Contains("'tables'"));
  // params fitted on other rows: one scale per target row is required
  const auto p32 = q.fit(view(matrix<float>(test::random_matrix<float>(32, 32, 8))));
  CHECK_THROWS_WITH(cuda::quantize<float>(b, q, dt, p32, test::upload(w).cview(), r.view(), c.view()),
                    Catch::Contains("'p'"));
  CHECK_THROWS_AS(cuda::reconstruct<float>(b, q, dt, p32, c.cview(), r.view()), shape_error);
  w(5, 20) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(cuda::quantize<float>(b, q, dt, p, test::upload(w).cview(), r.view(), c.view()), non_finite_error);
}
