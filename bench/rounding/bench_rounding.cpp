// Rounding throughput: GPTQ, LDLQ and YAQA on an m x n layer (float, int4 per-channel grid).
// FLOP counters use each algorithm's FLOP floor: YAQA m n (m + n), LDLQ and GPTQ m n^2, so the
// "ratio to GEMM" column of tools/bench_ratio.py is floor_time / wall_time (target >= 0.67,
// i.e. wall time <= 1.5x the floor). GPTQ's time includes its inverse factor (~2n^3/3 flops
// outside the floor); BM_gptq_round_only excludes it. peak_rss_MB is the process's max RSS:
// meaningful only when one benchmark is run alone (--benchmark_filter).
#include <sys/resource.h>

#include <benchmark/benchmark.h>

#include <support/flops.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/rounding/gptq.hpp>
#include <yaqa/rounding/ldlq.hpp>
#include <yaqa/rounding/yaqa.hpp>

namespace {

using yaqa::index;
using yaqa::matrix;

// A unit block-lower-triangular factor with small random entries below the td x td diagonal
// blocks: the rounding cost does not depend on the values, and generating an n x n SPD matrix
// and its LDL for n = 11008 would dominate the setup.
matrix<float> synthetic_l(index n, index td, std::uint64_t seed) {
  matrix<float> l = yaqa::test::random_matrix<float>(n, n, seed, 0.1 / std::sqrt(double(n)));
  for (index j = 0; j < n; ++j) {
    const index blk_end = (j / td + 1) * td;
    for (index i = 0; i < std::min(blk_end, n); ++i) l(i, j) = (i == j) ? 1.f : 0.f;
  }
  return l;
}

// SPD with eigenvalues in about [1, 3]: 2 I + a symmetric Gaussian perturbation.
matrix<float> synthetic_h(index n, std::uint64_t seed) {
  matrix<float> s = yaqa::test::random_matrix<float>(n, n, seed, 0.25 / std::sqrt(double(n)));
  matrix<float> h = s + s.transpose();
  h.diagonal().array() += 2.f;
  return h;
}

void peak_rss(benchmark::State& state) {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  state.counters["peak_rss_MB"] = double(u.ru_maxrss) / 1024.0;
}

void BM_yaqa(benchmark::State& state) {
  const index m = state.range(0), n = state.range(1);
  const auto w = yaqa::test::random_weights<float>(m, n, 1);
  const auto li = synthetic_l(n, 16, 2), lo = synthetic_l(m, 16, 3);
  const yaqa::int_grid<float> q(yaqa::int_grid_options{.bits = 4});
  for (auto _ : state) {
    auto r = yaqa::yaqa_round(q, yaqa::view(w), yaqa::view(li), yaqa::view(lo));
    benchmark::DoNotOptimize(r.weights.data());
  }
  yaqa::bench::set_flops(state, double(m) * double(n) * double(m + n));
  peak_rss(state);
}

void BM_yaqa_wavefront(benchmark::State& state) {
  const index m = state.range(0), n = state.range(1);
  const auto w = yaqa::test::random_weights<float>(m, n, 1);
  const auto li = synthetic_l(n, 16, 2), lo = synthetic_l(m, 16, 3);
  const yaqa::int_grid<float> q(yaqa::int_grid_options{.bits = 4});
  for (auto _ : state) {
    auto r = yaqa::yaqa_round(q, yaqa::view(w), yaqa::view(li), yaqa::view(lo),
                              yaqa::yaqa_options{16, 16, yaqa::yaqa_ordering::wavefront});
    benchmark::DoNotOptimize(r.weights.data());
  }
  yaqa::bench::set_flops(state, double(m) * double(n) * double(m + n));
}

void BM_ldlq(benchmark::State& state) {
  const index m = state.range(0), n = state.range(1);
  const auto w = yaqa::test::random_weights<float>(m, n, 1);
  const auto li = synthetic_l(n, 16, 2);
  const yaqa::int_grid<float> q(yaqa::int_grid_options{.bits = 4});
  for (auto _ : state) {
    auto r = yaqa::ldlq(q, yaqa::view(w), yaqa::view(li), 16);
    benchmark::DoNotOptimize(r.weights.data());
  }
  yaqa::bench::set_flops(state, double(m) * double(n) * double(n));
  peak_rss(state);
}

void BM_gptq(benchmark::State& state) {
  const index m = state.range(0), n = state.range(1);
  const auto w = yaqa::test::random_weights<float>(m, n, 1);
  const auto h = synthetic_h(n, 2);
  const yaqa::int_grid<float> q(yaqa::int_grid_options{.bits = 4});
  for (auto _ : state) {
    auto r = yaqa::gptq(q, yaqa::view(w), yaqa::view(h));
    benchmark::DoNotOptimize(r.weights.data());
  }
  yaqa::bench::set_flops(state, double(m) * double(n) * double(n));
  peak_rss(state);
}

void sizes(benchmark::internal::Benchmark* b) {
  b->Args({256, 256})->Args({1024, 1024})->Args({2048, 2048})->Args({4096, 4096})->Args({4096, 11008});
  b->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
}

}  // namespace

BENCHMARK(BM_gptq)->Apply(sizes);
BENCHMARK(BM_ldlq)->Apply(sizes);
BENCHMARK(BM_yaqa)->Apply(sizes);
BENCHMARK(BM_yaqa_wavefront)->Args({256, 256})->Args({1024, 1024})->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);
