#include <catch2/catch.hpp>

#include <limits>
#include <utility>
#include <vector>

#include <hessian/reference_sketches.hpp>
#include <support/approx.hpp>
#include <support/backends.hpp>
#include <support/generators.hpp>
#include <support/reference.hpp>
#include <yaqa/hessian/kronecker_sketch.hpp>

using namespace yaqa;

namespace {

template <class T>
struct batch {
  matrix<T> x, g;
};

// Token batches with correlated x and g (so the factors are far from identity), rounded to T.
template <class T>
std::vector<batch<T>> make_data(yaqa::index n, yaqa::index m, std::vector<yaqa::index> rows, std::uint64_t seed) {
  const Eigen::MatrixXd mix_x = test::random_matrix<double>(n, n, seed + 1000);
  const Eigen::MatrixXd mix_g = test::random_matrix<double>(m, m, seed + 2000, 0.3);
  std::vector<batch<T>> out;
  for (std::size_t b = 0; b < rows.size(); ++b) {
    const Eigen::MatrixXd x = test::random_matrix<double>(rows[b], n, seed + 3 * b) * mix_x;
    const Eigen::MatrixXd g = test::random_matrix<double>(rows[b], m, seed + 3 * b + 1) * mix_g;
    out.push_back({x.cast<T>(), g.cast<T>()});
  }
  return out;
}

template <class T>
std::vector<test::token_batch> as_reference(const std::vector<batch<T>>& data) {
  std::vector<test::token_batch> r;
  for (const auto& b : data) r.push_back({b.x.template cast<double>(), b.g.template cast<double>()});
  return r;
}

template <class S, class T>
void run_pass(S& s, const std::vector<batch<T>>& data) {
  s.begin_pass();
  for (const auto& b : data) s.add(view(b.x), view(b.g));
  s.end_pass();
}

Eigen::MatrixXd kron(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  Eigen::MatrixXd k(a.rows() * b.rows(), a.cols() * b.cols());
  for (yaqa::index i = 0; i < a.rows(); ++i)
    for (yaqa::index j = 0; j < a.cols(); ++j) k.block(i * b.rows(), j * b.cols(), b.rows(), b.cols()) = a(i, j) * b;
  return k;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Sketch A

TEMPLATE_LIST_TEST_CASE("sketch_a matches the naive per-token power iteration pass by pass",
                        "[hessian][sketch_a]", test::cpu_cases) {
  using T = typename TestType::scalar;
  const yaqa::index n = 71, m = 45;  // several chunks, not multiples of the chunk widths
  const auto data = make_data<T>(n, m, {13, 0, 29, 1, 40}, 10);
  const int passes = 5;
  const auto expect = test::naive_sketch_a(as_reference(data), n, m, passes);
  for (auto prec : {batch_precision::input, batch_precision::accumulator}) {
    sketch_a<double> s(n, m, passes, {.precision = prec});
    CHECK_FALSE(s.has_h_in());
    for (int p = 0; p < passes; ++p) {
      CHECK(s.pass() == p);
      CHECK_FALSE(s.done());
      run_pass(s, data);
      // Each power-iteration step amplifies the previous step's float rounding a little.
      const double tolerance = (prec == batch_precision::input && sizeof(T) == 4) ? 1e-5 * (p + 1) : 1e-12;
      REQUIRE_THAT(Eigen::MatrixXd(s.h_in()), test::IsClose(expect[p].h_in, tolerance));
      if (p >= 1) REQUIRE_THAT(Eigen::MatrixXd(s.h_out()), test::IsClose(expect[p].h_out, tolerance));
    }
    CHECK(s.done());
    CHECK_FALSE(s.h_out_is_zero());
    const matrix<double> hin = s.h_in();
    CHECK(hin == hin.transpose());
  }
}

TEST_CASE("sketch_a pass merges are bitwise one pass; workers are copies", "[hessian][sketch_a][merge]") {
  const yaqa::index n = 33, m = 20;
  const auto data = make_data<double>(n, m, {8, 15, 0, 11}, 20);
  sketch_a<double> one(n, m, 4);
  sketch_a<double> dist(n, m, 4);
  for (int p = 0; p < 4; ++p) {
    run_pass(one, data);
    // distribute: one worker per batch, copied from the coordinator before the pass
    std::vector<sketch_a<double>> workers(data.size(), dist);
    for (std::size_t w = 0; w < data.size(); ++w) {
      workers[w].begin_pass();
      workers[w].add(view(data[w].x), view(data[w].g));
    }
    dist.begin_pass();
    for (const auto& w : workers) dist.merge_pass(w);
    CHECK(dist.pass_count() == 34);
    dist.end_pass();
    CHECK(dist.packed_h_in() == one.packed_h_in());
    if (p >= 1) CHECK(dist.packed_h_out() == one.packed_h_out());
  }
  CHECK(dist.done());
  // thread count does not change anything
  sketch_a<double> threaded(n, m, 4, {}, cpu_backend{3});
  for (int p = 0; p < 4; ++p) run_pass(threaded, data);
  CHECK(threaded.packed_h_in() == one.packed_h_in());
  CHECK(threaded.packed_h_out() == one.packed_h_out());
}

TEST_CASE("sketch_a enforces the pass protocol and names bad batches", "[hessian][sketch_a][errors]") {
  CHECK_THROWS_WITH((sketch_a<double>(4, 3, 1)), Catch::Contains("'passes' must be >= 2") && Catch::Contains("got 1"));
  CHECK_THROWS_AS((sketch_a<double>(0, 3, 2)), yaqa::invalid_argument);
  const yaqa::index n = 6, m = 5;
  const auto data = make_data<float>(n, m, {4, 4, 4}, 30);
  sketch_a<double> s(n, m, 2);
  CHECK_THROWS_WITH(s.add(view(data[0].x), view(data[0].g)), Catch::Contains("sketch_a::add") &&
                                                                   Catch::Contains("begin_pass()"));
  CHECK_THROWS_WITH(s.end_pass(), Catch::Contains("no pass is open"));
  CHECK_THROWS_WITH(s.h_in(), Catch::Contains("pass 0"));
  s.begin_pass();
  CHECK_THROWS_WITH(s.begin_pass(), Catch::Contains("already open"));
  CHECK_THROWS_WITH(s.end_pass(), Catch::Contains("pass 0 saw no tokens"));
  // pass 0: g may be empty, but not of the wrong shape
  s.add(view(data[0].x), matrix_view<const float>{});
  const matrix<float> g_bad(4, 4);
  CHECK_THROWS_WITH(s.add(view(data[1].x), view(g_bad)),
                    Catch::Contains("'g'") && Catch::Contains("batch 1 of sketch_a pass 0") &&
                        Catch::Contains("must be 4x5") && Catch::Contains("got 4x4"));
  const matrix<float> x_bad(4, 7);
  CHECK_THROWS_AS(s.add(view(x_bad), view(data[1].g)), yaqa::shape_error);
  s.add(view(data[1].x), view(data[1].g));
  s.end_pass();
  CHECK_THROWS_WITH(s.h_out(), Catch::Contains("pass 1"));
  s.begin_pass();
  CHECK_THROWS_WITH(s.add(view(data[0].x), matrix_view<const float>{}), Catch::Contains("must be 4x5"));
  s.add(view(data[0].x), view(data[0].g));
  s.add(view(data[1].x), view(data[1].g));
  matrix<float> g_nan = data[2].g;
  g_nan(1, 3) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(s.add(view(data[2].x), view(g_nan)),
                    Catch::Contains("argument 'g' of batch 2 of sketch_a pass 1") && Catch::Contains("NaN at (1, 3)"));
  CHECK_THROWS_AS(s.add(view(data[2].x), view(g_nan)), yaqa::non_finite_error);
  CHECK(s.pass_count() == 8);
  // a worker that did not start from the same factors cannot be merged
  sketch_a<double> stranger(n, m, 2);
  run_pass(stranger, std::vector<batch<float>>{data[2]});
  stranger.begin_pass();
  CHECK_THROWS_WITH(s.merge_pass(stranger), Catch::Contains("different factors"));
  sketch_a<double> closed(n, m, 2);
  CHECK_THROWS_WITH(s.merge_pass(closed), Catch::Contains("must have pass 1 open"));
  s.end_pass();
  CHECK(s.done());
  CHECK_THROWS_WITH(s.begin_pass(), Catch::Contains("all 2 passes are done"));
}

TEST_CASE("sketch_a reports a layer without gradient and keeps E[xx^T]", "[hessian][sketch_a]") {
  const yaqa::index n = 9, m = 4;
  auto data = make_data<double>(n, m, {10, 12}, 40);
  for (auto& b : data) b.g.setZero();
  sketch_a<double> s(n, m, 4);
  run_pass(s, data);
  const matrix<double> h1 = s.h_in();
  run_pass(s, data);
  CHECK(s.h_out_is_zero());
  run_pass(s, data);
  CHECK(s.h_in() == h1);  // not 0/0 = NaN: the even pass keeps H_in
  run_pass(s, data);
  CHECK(s.h_out_is_zero());
  CHECK(s.done());
  std::vector<test::token_batch> ref = as_reference(data);
  REQUIRE_THAT(Eigen::MatrixXd(h1), test::IsClose(Eigen::MatrixXd(test::naive_xtx_sum(ref, n) / 22.0), 1e-13));
}

// ---------------------------------------------------------------------------------------------
// Sketch B

TEMPLATE_LIST_TEST_CASE("sketch_b matches the naive per-sequence G_s, by both contractions",
                        "[hessian][sketch_b]", test::cpu_cases) {
  using T = typename TestType::scalar;
  const yaqa::index n = 67, m = 29;
  const auto seqs = make_data<T>(n, m, {5, 90, 0, 17, 1, 40}, 50);  // T below and above min(m, n)
  const auto [hin, hout] = test::naive_sketch_b(as_reference(seqs));
  matrix<double> first_in[2], first_out[2];  // per precision, from the direct path
  for (auto path : {sketch_b_path::direct, sketch_b_path::gram, sketch_b_path::automatic})
    for (auto prec : {batch_precision::input, batch_precision::accumulator}) {
      sketch_b<double> s(n, m, {.precision = prec, .path = path});
      for (const auto& b : seqs) s.add_sequence(view(b.x), view(b.g));
      CHECK(s.count() == 5);
      CHECK(s.tokens() == 153);
      const double tolerance = (prec == batch_precision::input && sizeof(T) == 4) ? 3e-5 : 1e-12;
      REQUIRE_THAT(Eigen::MatrixXd(s.h_in()), test::IsClose(hin, tolerance));
      REQUIRE_THAT(Eigen::MatrixXd(s.h_out()), test::IsClose(hout, tolerance));
      const int k = prec == batch_precision::input ? 0 : 1;
      if (first_in[k].size() == 0) first_in[k] = s.h_in(), first_out[k] = s.h_out();
      // the two contractions agree with each other (not only with the oracle)
      REQUIRE_THAT(Eigen::MatrixXd(s.h_in()), test::IsClose(Eigen::MatrixXd(first_in[k]), 2 * tolerance));
      REQUIRE_THAT(Eigen::MatrixXd(s.h_out()), test::IsClose(Eigen::MatrixXd(first_out[k]), 2 * tolerance));
    }
}

TEST_CASE("sketch_b picks the cheaper contraction by its FLOP model", "[hessian][sketch_b]") {
  using S = sketch_b<double>;
  CHECK(S::choose_path(8, 512, 512) == sketch_b_path::gram);
  CHECK(S::choose_path(2048, 4096, 4096) == sketch_b_path::gram);
  CHECK(S::choose_path(2048, 1024, 1024) == sketch_b_path::direct);
  CHECK(S::choose_path(4096, 4096, 14336) == sketch_b_path::direct);
  for (yaqa::index t : {1, 100, 1000, 3000})
    CHECK(S::flops(sketch_b_path::automatic, t, 1000, 700) ==
          std::min(S::flops(sketch_b_path::direct, t, 1000, 700), S::flops(sketch_b_path::gram, t, 1000, 700)));
  // direct: 2Tmn + mn(n+1) + nm(m+1)
  CHECK(S::flops(sketch_b_path::direct, 10, 3, 2) == 2 * 10 * 2 * 3 + 2 * 3 * 4 + 3 * 2 * 3);
}

TEST_CASE("sketch_b merge is bitwise one pass, deterministic in threads", "[hessian][sketch_b][merge]") {
  const yaqa::index n = 50, m = 38;
  const auto seqs = make_data<float>(n, m, {12, 70, 3}, 60);
  sketch_b<double> one(n, m), merged(n, m, {}, cpu_backend{3});
  for (const auto& b : seqs) {
    one.add_sequence(view(b.x), view(b.g));
    sketch_b<double> shard(n, m, {}, cpu_backend{2});
    shard.add_sequence(view(b.x), view(b.g));
    merged.merge(shard);
  }
  CHECK(merged.packed_sum_in() == one.packed_sum_in());
  CHECK(merged.packed_sum_out() == one.packed_sum_out());
  CHECK(merged.count() == 3);
  CHECK(merged.tokens() == 85);
}

TEST_CASE("sketch_b rejects bad input and reports zero gradients", "[hessian][sketch_b][errors]") {
  const yaqa::index n = 7, m = 3;
  CHECK_THROWS_AS((sketch_b<double>(7, 0)), yaqa::invalid_argument);
  sketch_b<double> s(n, m);
  CHECK_THROWS_WITH(s.h_in(), Catch::Contains("sketch_b::h_in") && Catch::Contains("count is 0"));
  CHECK_FALSE(s.h_out_is_zero());
  const auto seqs = make_data<double>(n, m, {6, 6}, 70);
  s.add_sequence(view(seqs[0].x), view(seqs[0].g));
  const matrix<double> g_short(5, 3);
  CHECK_THROWS_WITH(s.add_sequence(view(seqs[1].x), view(g_short)),
                    Catch::Contains("'g'") && Catch::Contains("sequence 1 of sketch_b") && Catch::Contains("must be 6x3"));
  matrix<double> x_inf = seqs[1].x;
  x_inf(5, 0) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(s.add_sequence(view(x_inf), view(seqs[1].g)),
                    Catch::Contains("argument 'x' of sequence 1 of sketch_b") && Catch::Contains("Inf at (5, 0)"));
  const matrix<double> ex(0, 7), eg(0, 3);
  s.add_sequence(view(ex), view(eg));  // empty: accepted, not counted
  CHECK(s.count() == 1);
  sketch_b<double> other(n, m + 1);
  CHECK_THROWS_AS(s.merge(other), yaqa::shape_error);

  sketch_b<double> dead(n, m);
  const matrix<double> zero_g = matrix<double>::Zero(6, 3);
  dead.add_sequence(view(seqs[0].x), view(zero_g));
  CHECK(dead.h_out_is_zero());
  CHECK(dead.h_in().isZero(0));
}

TEMPLATE_LIST_TEST_CASE("sketch_b_refinement is one further power-iteration half-step",
                        "[hessian][sketch_b]", test::cpu_cases) {
  using T = typename TestType::scalar;
  const yaqa::index n = 19, m = 11;
  const auto seqs = make_data<T>(n, m, {9, 30, 4}, 80);
  sketch_b<double> b(n, m);
  for (const auto& s : seqs) b.add_sequence(view(s.x), view(s.g));
  const matrix<double> hin = b.h_in(), hout = b.h_out();
  // oracle: mean_s G_s^T H_out G_s / ||H_out||^2 and mean_s G_s H_in G_s^T / ||H_in||^2
  Eigen::MatrixXd e_in = Eigen::MatrixXd::Zero(n, n), e_out = Eigen::MatrixXd::Zero(m, m);
  for (const auto& s : as_reference(seqs)) {
    const Eigen::MatrixXd gs = test::naive_sequence_gradient(s).template cast<double>();
    e_in += test::naive_gemm(test::naive_gemm(gs.transpose(), hout), gs);
    e_out += test::naive_gemm(test::naive_gemm(gs, hin), gs.transpose());
  }
  e_in /= 3.0 * hout.squaredNorm();
  e_out /= 3.0 * hin.squaredNorm();
  const double tolerance = sizeof(T) == 4 ? 3e-5 : 1e-12;
  sketch_b_refinement<double> rin(n, m, kron_factor::h_in, view(hout));
  sketch_b_refinement<double> rout(n, m, kron_factor::h_out, view(hin));
  for (const auto& s : seqs) {
    rin.add_sequence(view(s.x), view(s.g));
    rout.add_sequence(view(s.x), view(s.g));
  }
  REQUIRE_THAT(Eigen::MatrixXd(rin.factor()), test::IsClose(e_in, tolerance));
  REQUIRE_THAT(Eigen::MatrixXd(rout.factor()), test::IsClose(e_out, tolerance));
  // misuse
  CHECK_THROWS_AS((sketch_b_refinement<double>(n, m, kron_factor::h_in, view(hin))), yaqa::shape_error);
  const matrix<double> zero = matrix<double>::Zero(m, m);
  CHECK_THROWS_WITH((sketch_b_refinement<double>(n, m, kron_factor::h_in, view(zero))), Catch::Contains("zero"));
  matrix<double> asym = hout;
  asym(0, 1) += 1.0;
  CHECK_THROWS_WITH((sketch_b_refinement<double>(n, m, kron_factor::h_in, view(std::as_const(asym)))),
                    Catch::Contains("sketch_b_refinement") && Catch::Contains("not symmetric"));
  sketch_b_refinement<double> empty(n, m, kron_factor::h_out, view(hin));
  CHECK_THROWS_WITH(empty.factor(), Catch::Contains("no sequences"));
}

// ---------------------------------------------------------------------------------------------
// The proxy the factors define

TEST_CASE("tr(dW H_in dW^T H_out) equals vec(dW)^T (H_out ⊗ H_in) vec(dW) for row-major vec",
          "[hessian][proxy]") {
  const yaqa::index n = 8, m = 5;
  const auto data = make_data<double>(n, m, {30, 25}, 90);
  sketch_a<double> s(n, m, 2);
  run_pass(s, data);
  run_pass(s, data);
  const Eigen::MatrixXd hin = s.h_in(), hout = s.h_out();
  const Eigen::MatrixXd dw = test::random_matrix<double>(m, n, 91);
  Eigen::VectorXd vec(m * n);  // row-major: vec[a * n + i] = dW(a, i)
  for (yaqa::index a = 0; a < m; ++a)
    for (yaqa::index i = 0; i < n; ++i) vec(a * n + i) = dw(a, i);
  const double quad = vec.dot(kron(hout, hin) * vec);
  const double trace = (dw * hin * dw.transpose() * hout).trace();
  CHECK(trace == Approx(quad).epsilon(1e-12));
  CHECK(test::naive_kron_proxy(dw, hin, hout) == Approx(quad).epsilon(1e-12));
  Eigen::VectorXd vec_cm(m * n);  // column-major vec pairs with H_in ⊗ H_out
  for (yaqa::index i = 0; i < n; ++i)
    for (yaqa::index a = 0; a < m; ++a) vec_cm(i * m + a) = dw(a, i);
  CHECK(vec_cm.dot(kron(hin, hout) * vec_cm) == Approx(quad).epsilon(1e-12));
  // swapping the Kronecker order with row-major vec gives a different (wrong) number
  CHECK(std::abs(vec.dot(kron(hin, hout) * vec) - quad) > 1e-3 * quad);
}

TEST_CASE("float accumulators give the double results to float accuracy", "[hessian][sketch_a][sketch_b]") {
  const yaqa::index n = 26, m = 15;
  const auto data = make_data<float>(n, m, {31, 12, 50}, 95);
  sketch_a<float> af(n, m, 3);
  sketch_a<double> ad(n, m, 3);
  for (int p = 0; p < 3; ++p) {
    run_pass(af, data);
    run_pass(ad, data);
  }
  REQUIRE_THAT(Eigen::MatrixXd(af.h_in().cast<double>()), test::IsClose(Eigen::MatrixXd(ad.h_in()), 2e-5));
  REQUIRE_THAT(Eigen::MatrixXd(af.h_out().cast<double>()), test::IsClose(Eigen::MatrixXd(ad.h_out()), 2e-5));
  sketch_b<float> bf(n, m);
  sketch_b<double> bd(n, m, {.precision = batch_precision::accumulator});  // float inputs, double math
  for (const auto& b : data) {
    bf.add_sequence(view(b.x), view(b.g));
    bd.add_sequence(view(b.x), view(b.g));
  }
  REQUIRE_THAT(Eigen::MatrixXd(bf.h_in().cast<double>()), test::IsClose(Eigen::MatrixXd(bd.h_in()), 2e-5));
  REQUIRE_THAT(Eigen::MatrixXd(bf.h_out().cast<double>()), test::IsClose(Eigen::MatrixXd(bd.h_out()), 2e-5));
}

// Sizes spanning several of the 256-column chunks of the upper-triangle products (and not
// multiples of them): the chunked products equal plain products, and no thread count changes a bit.
TEMPLATE_TEST_CASE("sketches over several column chunks: plain products, bit-identical across threads",
                   "[hessian][sketch_a][sketch_b][determinism]", float, double) {
  using T = TestType;
  const yaqa::index n = 601, m = 530;
  const auto data = make_data<T>(n, m, {300, 45}, 77);
  // references in double, from plain Eigen products
  Eigen::MatrixXd xtx = Eigen::MatrixXd::Zero(n, n), gtg = Eigen::MatrixXd::Zero(m, m);
  Eigen::MatrixXd b_in = Eigen::MatrixXd::Zero(n, n), b_out = Eigen::MatrixXd::Zero(m, m);
  for (const auto& b : data) {
    const Eigen::MatrixXd x = b.x.template cast<double>(), g = b.g.template cast<double>();
    xtx += x.transpose() * x;
    const Eigen::MatrixXd mt = x.transpose() * g;  // M^T = X^T G
    b_in += mt * mt.transpose();
    b_out += mt.transpose() * mt;
  }
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
  auto rel = [](const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) { return (a - b).norm() / b.norm(); };

  sketch_a<double> a1(n, m, 2, {}, cpu_backend{1});
  run_pass(a1, data);
  CHECK(rel(a1.h_in() * double(345), xtx) < tol);
  run_pass(a1, data);
  // pass 1: H_out = sum_t (x_t^T H_in x_t) g_t g_t^T / (count ||H_in||_F^2)
  const Eigen::MatrixXd hin = a1.h_in();
  Eigen::MatrixXd want_out = Eigen::MatrixXd::Zero(m, m);
  for (const auto& b : data) {
    const Eigen::MatrixXd x = b.x.template cast<double>(), g = b.g.template cast<double>();
    const Eigen::VectorXd s = ((x * hin).array() * x.array()).rowwise().sum();
    want_out += g.transpose() * s.asDiagonal() * g;
  }
  want_out /= 345.0 * hin.squaredNorm();
  CHECK(rel(a1.h_out(), want_out) < tol);
  for (int t : {2, 3}) {
    sketch_a<double> at(n, m, 2, {}, cpu_backend{t});
    run_pass(at, data);
    run_pass(at, data);
    CHECK(at.packed_h_in() == a1.packed_h_in());
    CHECK(at.packed_h_out() == a1.packed_h_out());
  }

  for (auto path : {sketch_b_path::direct, sketch_b_path::gram}) {
    CAPTURE(int(path));
    sketch_b<double> b1(n, m, {.path = path}, cpu_backend{1});
    for (const auto& b : data) b1.add_sequence(view(b.x), view(b.g));
    CHECK(rel(b1.h_in() * 2.0, b_in) < tol);
    CHECK(rel(b1.h_out() * 2.0, b_out) < tol);
    for (int t : {2, 3}) {
      sketch_b<double> bt(n, m, {.path = path}, cpu_backend{t});
      for (const auto& b : data) bt.add_sequence(view(b.x), view(b.g));
      CHECK(bt.packed_sum_in() == b1.packed_sum_in());
      CHECK(bt.packed_sum_out() == b1.packed_sum_out());
    }
  }
}
