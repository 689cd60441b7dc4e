// The device Hessian accumulators (yaqa::cuda::second_moment, sketch_b, sketch_a) against the CPU
// classes, on seeded random inputs at sizes that are not multiples of any block or warp size
// (n = 37 features, m = 53 outputs, batches of 101, 64, 0 and 45 tokens, one of them a strided
// view). The CPU oracle computes every product in double (batch_precision::accumulator), so the
// float tolerance measures the device's float rounding. Float and double.
#include <catch2/catch.hpp>

#include <limits>
#include <string>
#include <vector>

#include <cuda/cuda_support.hpp>
#include <support/approx.hpp>
#include <support/generators.hpp>

using namespace yaqa;

namespace {

constexpr yaqa::index kn = 37, km = 53;
const std::vector<yaqa::index> kTokens = {101, 64, 0, 45};

//! Seeded batches (x: t x n, g: t x m), the same on host and device. Batch 3 is uploaded as a
//! block of a larger device matrix, so its views have ld > rows.
template <class T>
struct batches {
  std::vector<matrix<T>> x, g;
  std::vector<cuda::device_matrix<T>> dx, dg;  // dx[3], dg[3] are the larger matrices
  explicit batches(std::uint64_t seed, double g_scale = 1.0) {
    for (std::size_t i = 0; i < kTokens.size(); ++i) {
      const yaqa::index t = kTokens[i];
      x.push_back(test::random_matrix<T>(t, kn, seed + 10 * i));
      g.push_back((test::random_matrix<T>(t, km, seed + 10 * i + 5) * T(g_scale)).eval());
      if (i == 3) {
        matrix<T> bx = test::random_matrix<T>(t + 7, kn + 3, seed + 99), bg = test::random_matrix<T>(t + 5, km + 2, seed + 98);
        bx.block(4, 1, t, kn) = x.back();
        bg.block(2, 2, t, km) = g.back();
        dx.push_back(test::upload(bx));
        dg.push_back(test::upload(bg));
      } else {
        dx.push_back(test::upload(x.back()));
        dg.push_back(test::upload(g.back()));
      }
    }
  }
  [[nodiscard]] std::size_t size() const { return x.size(); }
  cuda::device_view<const T> xv(std::size_t i) const {
    return i == 3 ? dx[i].cview().block(4, 1, kTokens[i], kn) : dx[i].cview();
  }
  cuda::device_view<const T> gv(std::size_t i) const {
    return i == 3 ? dg[i].cview().block(2, 2, kTokens[i], km) : dg[i].cview();
  }
};

constexpr accumulate_options exact_oracle{.precision = batch_precision::accumulator, .path = sketch_b_path::direct};

template <class T>
Eigen::MatrixXd as_double(const matrix<T>& a) {
  return a.template cast<double>();
}

template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const yaqa::error& e) {
    return e.what();
  }
  return "no exception";
}

}  // namespace

TEMPLATE_TEST_CASE("cuda second_moment matches the CPU E[x x^T] and merges", "[cuda][hessian][sketch]", float,
                   double) {
  using T = TestType;
  const auto& b = test::gpu();
  const batches<T> in(1);
  second_moment<double> cpu(kn, exact_oracle);
  cuda::second_moment<T> gpu(b, kn);
  for (std::size_t i = 0; i < in.size(); ++i) {
    cpu.add(view(in.x[i]));
    gpu.add(in.xv(i));
  }
  REQUIRE(gpu.count() == cpu.count());
  REQUIRE(gpu.count() == 101 + 64 + 45);
  REQUIRE(gpu.batches() == 4);
  REQUIRE(gpu.dim() == kn);
  const matrix<T> mean = gpu.mean();
  REQUIRE_THAT(as_double(mean), test::IsClose(cpu.mean(), test::gpu_tol<T>()));
  CHECK(mean == mean.transpose());  // both triangles from one syrk: exactly symmetric
  REQUIRE_THAT(as_double(gpu.sum()), test::IsClose(cpu.sum(), test::gpu_tol<T>()));
  REQUIRE_THAT(as_double(cuda::to_host(b, gpu.device_sum())), test::IsClose(cpu.sum(), test::gpu_tol<T>()));

  // two shards merged: the same mean and counts
  cuda::second_moment<T> s0(b, kn), s1(b, kn);
  s0.add(in.xv(0));
  s0.add(in.xv(2));
  s1.add(in.xv(1));
  s1.add(in.xv(3));
  s0.merge(s1);
  CHECK(s0.count() == cpu.count());
  CHECK(s0.batches() == 4);
  REQUIRE_THAT(as_double(s0.mean()), test::IsClose(cpu.mean(), test::gpu_tol<T>()));
  cuda::second_moment<T> other_n(b, kn + 1);
  CHECK_THROWS_AS(s0.merge(other_n), shape_error);
}

TEMPLATE_TEST_CASE("cuda sketch_b matches the CPU H_in and H_out and merges", "[cuda][hessian][sketch]", float,
                   double) {
  using T = TestType;
  const auto& b = test::gpu();
  const batches<T> in(2);
  sketch_b<double> cpu(kn, km, exact_oracle);
  cuda::sketch_b<T> gpu(b, kn, km);
  for (std::size_t i = 0; i < in.size(); ++i) {
    cpu.add_sequence(view(in.x[i]), view(in.g[i]));
    gpu.add_sequence(in.xv(i), in.gv(i));
  }
  REQUIRE(gpu.count() == 3);  // the empty sequence is not counted
  REQUIRE(gpu.count() == cpu.count());
  REQUIRE(gpu.tokens() == cpu.tokens());
  const matrix<T> h_in = gpu.h_in(), h_out = gpu.h_out();
  REQUIRE(h_in.rows() == kn);
  REQUIRE(h_out.rows() == km);
  REQUIRE_THAT(as_double(h_in), test::IsClose(cpu.h_in(), test::gpu_tol<T>()));
  REQUIRE_THAT(as_double(h_out), test::IsClose(cpu.h_out(), test::gpu_tol<T>()));
  CHECK(h_in == h_in.transpose());
  CHECK(h_out == h_out.transpose());
  CHECK_FALSE(gpu.h_out_is_zero());
  CHECK(cuda::sketch_b<T>::flops(2048, 4096, 4096) ==
        sketch_b<>::flops(sketch_b_path::direct, 2048, 4096, 4096));

  cuda::sketch_b<T> s0(b, kn, km), s1(b, kn, km);
  s0.add_sequence(in.xv(0), in.gv(0));
  s1.add_sequence(in.xv(1), in.gv(1));
  s1.add_sequence(in.xv(2), in.gv(2));
  s1.add_sequence(in.xv(3), in.gv(3));
  s0.merge(s1);
  CHECK(s0.count() == cpu.count());
  CHECK(s0.tokens() == cpu.tokens());
  REQUIRE_THAT(as_double(s0.h_in()), test::IsClose(cpu.h_in(), test::gpu_tol<T>()));
  REQUIRE_THAT(as_double(s0.h_out()), test::IsClose(cpu.h_out(), test::gpu_tol<T>()));
  cuda::sketch_b<T> other(b, kn, km + 1);
  CHECK_THROWS_AS(s0.merge(other), shape_error);

  // no gradient: H_out (and H_in) exactly zero
  cuda::sketch_b<T> zero(b, kn, km);
  cuda::device_matrix<T> g0(b, 30, km);
  g0.zero();
  zero.add_sequence(in.xv(0).row_block(0, 30), g0.cview());
  CHECK(zero.h_out_is_zero());
  CHECK(zero.h_in().isZero(0));
}

TEMPLATE_TEST_CASE("cuda sketch_a follows the CPU power iteration pass by pass", "[cuda][hessian][sketch]", float,
                   double) {
  using T = TestType;
  const auto& b = test::gpu();
  const batches<T> in(3);
  constexpr int passes = 5;
  sketch_a<double> cpu(kn, km, passes, exact_oracle);
  cuda::sketch_a<T> gpu(b, kn, km, passes);
  CHECK_FALSE(gpu.has_h_in());
  for (int p = 0; p < passes; ++p) {
    INFO("pass " << p);
    cpu.begin_pass();
    gpu.begin_pass();
    REQUIRE(gpu.in_pass());
    REQUIRE(gpu.pass() == p);
    for (std::size_t i = 0; i < in.size(); ++i) {
      cpu.add(view(in.x[i]), view(in.g[i]));
      if (p == 0 && i == 1)
        gpu.add(in.xv(i));  // pass 0 does not need g
      else
        gpu.add(in.xv(i), in.gv(i));
    }
    REQUIRE(gpu.pass_count() == cpu.pass_count());
    cpu.end_pass();
    gpu.end_pass();
    REQUIRE_FALSE(gpu.in_pass());
    REQUIRE_THAT(as_double(gpu.h_in()), test::IsClose(cpu.h_in(), test::gpu_tol<T>()));
    if (p >= 1) REQUIRE_THAT(as_double(gpu.h_out()), test::IsClose(cpu.h_out(), test::gpu_tol<T>()));
    // the device copy of the factors is the host copy
    CHECK(cuda::to_host(b, gpu.device_h_in()) == gpu.h_in());
    if (p >= 1) CHECK(cuda::to_host(b, gpu.device_h_out()) == gpu.h_out());
  }
  CHECK(gpu.done());
  CHECK_FALSE(gpu.h_out_is_zero());
  CHECK(gpu.h_in().rows() == kn);
  CHECK(gpu.h_out().rows() == km);
  CHECK(cuda::sketch_a<T>::flops(1, 8192, 4096, 4096) == sketch_a<>::flops(1, 8192, 4096, 4096));
}

TEMPLATE_TEST_CASE("cuda sketch_a handles zero factors like the CPU", "[cuda][hessian][sketch]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  const batches<T> in(4, 0.0);  // g == 0: H_out is exactly zero
  sketch_a<double> cpu(kn, km, 3, exact_oracle);
  cuda::sketch_a<T> gpu(b, kn, km, 3);
  matrix<T> h_in0;
  for (int p = 0; p < 3; ++p) {
    cpu.begin_pass();
    gpu.begin_pass();
    for (std::size_t i = 0; i < in.size(); ++i) {
      cpu.add(view(in.x[i]), view(in.g[i]));
      gpu.add(in.xv(i), in.gv(i));
    }
    cpu.end_pass();
    gpu.end_pass();
    if (p == 0) h_in0 = gpu.h_in();
  }
  REQUIRE(cpu.h_out_is_zero());
  CHECK(gpu.h_out_is_zero());
  CHECK(gpu.h_out().isZero(0));
  CHECK(gpu.h_in() == h_in0);  // pass 2 kept H_in
  REQUIRE_THAT(as_double(gpu.h_in()), test::IsClose(cpu.h_in(), test::gpu_tol<T>()));

  // x == 0: H_in is zero after pass 0, and pass 1 sets H_out to zero
  cuda::device_matrix<T> x0(b, 20, kn);
  x0.zero();
  cuda::sketch_a<T> zx(b, kn, km, 2);
  zx.begin_pass();
  zx.add(x0.cview());
  zx.end_pass();
  CHECK(zx.h_in().isZero(0));
  zx.begin_pass();
  zx.add(x0.cview(), in.gv(0).row_block(0, 20));
  zx.end_pass();
  CHECK(zx.h_out_is_zero());
  CHECK(zx.h_out().rows() == km);
}

TEMPLATE_TEST_CASE("cuda sketches validate shapes and the pass protocol on the host", "[cuda][hessian][sketch]",
                   float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  cuda::device_matrix<T> x(b, 11, kn), x_bad(b, 11, kn + 1), g(b, 11, km), g_rows(b, 10, km), g_cols(b, 11, km - 1);
  x.zero();
  g.zero();

  CHECK_THROWS_AS(static_cast<void>(cuda::second_moment<T>(b, 0)), invalid_argument);
  CHECK_THAT(message_of([&] { static_cast<void>(cuda::second_moment<T>(b, 0)); }), Catch::Contains("'n'"));
  cuda::second_moment<T> sm(b, kn);
  CHECK_THAT(message_of([&] { static_cast<void>(sm.mean()); }), Catch::Contains("no tokens"));
  CHECK_THROWS_AS(sm.add(x_bad.cview()), shape_error);
  const std::string sm_msg = message_of([&] { sm.add(x_bad.cview()); });
  CHECK_THAT(sm_msg, Catch::Contains("yaqa::cuda::second_moment::add") && Catch::Contains("'x'") &&
                         Catch::Contains("batch 0 of second_moment") && Catch::Contains("T x 37") &&
                         Catch::Contains("11x38"));
  CHECK(sm.batches() == 0);  // a rejected batch changes nothing
  sm.add(x.view());          // mutable view
  CHECK(sm.batches() == 1);
  CHECK_THAT(message_of([&] { sm.add(x_bad.cview()); }), Catch::Contains("batch 1 of second_moment"));

  CHECK_THAT(message_of([&] { static_cast<void>(cuda::sketch_b<T>(b, kn, 0)); }), Catch::Contains("'m'"));
  cuda::sketch_b<T> sb(b, kn, km);
  CHECK_THROWS_AS(static_cast<void>(sb.h_in()), invalid_argument);
  CHECK_THAT(message_of([&] { static_cast<void>(sb.h_out()); }), Catch::Contains("no sequences"));
  CHECK_THROWS_AS(sb.add_sequence(x_bad.cview(), g.cview()), shape_error);
  CHECK_THAT(message_of([&] { sb.add_sequence(x_bad.cview(), g.cview()); }),
             Catch::Contains("'x'") && Catch::Contains("sequence 0 of sketch_b"));
  CHECK_THAT(message_of([&] { sb.add_sequence(x.cview(), g_rows.cview()); }),
             Catch::Contains("'g'") && Catch::Contains("must be 11x53") && Catch::Contains("got 10x53"));
  CHECK_THAT(message_of([&] { sb.add_sequence(x.cview(), g_cols.cview()); }),
             Catch::Contains("'g'") && Catch::Contains("got 11x52"));
  CHECK(sb.count() == 0);
  sb.add_sequence(x.view(), g.view());
  CHECK(sb.count() == 1);

  CHECK_THAT(message_of([&] { static_cast<void>(cuda::sketch_a<T>(b, kn, km, 1)); }), Catch::Contains("'passes'"));
  CHECK_THAT(message_of([&] { static_cast<void>(cuda::sketch_a<T>(b, 0, km, 2)); }), Catch::Contains("'n'"));
  cuda::sketch_a<T> sa(b, kn, km, 2);
  CHECK_THAT(message_of([&] { sa.add(x.cview(), g.cview()); }), Catch::Contains("no pass is open"));
  CHECK_THAT(message_of([&] { static_cast<void>(sa.h_in()); }), Catch::Contains("pass 0"));
  CHECK_THAT(message_of([&] { sa.end_pass(); }), Catch::Contains("no pass is open"));
  sa.begin_pass();
  CHECK_THAT(message_of([&] { sa.begin_pass(); }), Catch::Contains("already open"));
  CHECK_THAT(message_of([&] { sa.end_pass(); }), Catch::Contains("saw no tokens"));
  CHECK_THAT(message_of([&] { sa.add(x_bad.cview(), g.cview()); }),
             Catch::Contains("'x'") && Catch::Contains("batch 0 of sketch_a pass 0"));
  CHECK_THAT(message_of([&] { sa.add(x.cview(), g_rows.cview()); }),
             Catch::Contains("'g'") && Catch::Contains("or empty in pass 0"));
  sa.add(x.cview());
  sa.end_pass();
  CHECK_THAT(message_of([&] { static_cast<void>(sa.h_out()); }), Catch::Contains("pass 1"));
  sa.begin_pass();
  CHECK_THROWS_AS(sa.add(x.cview()), shape_error);  // pass 1 needs g
  CHECK_THAT(message_of([&] { sa.add(x.cview(), g_cols.cview()); }),
             Catch::Contains("'g'") && Catch::Contains("batch 0 of sketch_a pass 1") &&
                 Catch::Contains("must be 11x53"));
  CHECK(sa.pass_count() == 0);
  sa.add(x.view(), g.view());
  CHECK(sa.pass_count() == 11);
  sa.end_pass();
  CHECK(sa.done());
  CHECK_THAT(message_of([&] { sa.begin_pass(); }), Catch::Contains("all 2 passes are done"));
}

TEMPLATE_TEST_CASE("cuda sketches report a non-finite device input as numerical_error when finalizing",
                   "[cuda][hessian][sketch]", float, double) {
  using T = TestType;
  const auto& b = test::gpu();
  matrix<T> x = test::random_matrix<T>(19, kn, 41);
  const matrix<T> g = test::random_matrix<T>(19, km, 42);
  x(7, 5) = std::numeric_limits<T>::quiet_NaN();
  const auto dx = test::upload(x), dg = test::upload(g);

  cuda::second_moment<T> sm(b, kn);
  sm.add(dx.cview());  // not checked on add (device data)
  CHECK(sm.count() == 19);
  CHECK_THROWS_AS(static_cast<void>(sm.mean()), numerical_error);

  cuda::sketch_b<T> sb(b, kn, km);
  sb.add_sequence(dx.cview(), dg.cview());
  CHECK_THROWS_AS(static_cast<void>(sb.h_in()), numerical_error);
  CHECK_THROWS_AS(static_cast<void>(sb.h_out()), numerical_error);

  cuda::sketch_a<T> sa(b, kn, km, 2);
  sa.begin_pass();
  sa.add(dx.cview());
  CHECK_THAT(message_of([&] { sa.end_pass(); }), Catch::Contains("H_in") && Catch::Contains("NaN"));
  // as on the CPU, the failed pass stays open and no factor is published
  CHECK(sa.in_pass());
  CHECK_FALSE(sa.has_h_in());
  CHECK_THROWS_AS(sa.end_pass(), numerical_error);
}
