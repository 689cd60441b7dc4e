// Coordinate descent (rounding/coordinate_descent.hpp) on an m x n layer: float weights, int4
// per-channel grid (scalar units), correlated SPD factors (G G^T / k + 0.1 I, k = n / 4: the
// first sweep from RTN changes ~12 % of the units, like a sweep after GPTQ/LDLQ), from RTN.
// - BM_cd_sweep: the first sweep alone (manual time = cd_report::sweeps[0].seconds), FLOP
//   counter 2 m n (m + n), the dense sweep's GEMM floor (P += H_out[:, I] D per tile,
//   R += P H_in[S, :] per strip; sparse tiles do less, see coordinate_descent.hpp).
// - BM_cd_second_sweep: the second sweep of a two-sweep call (few changes: sparse tiles).
// - BM_cd_call: the whole call with sweeps = 1 (checks, fp64 copies of the factors, the initial
//   R = H_out E H_in, which costs another 2 m n (m + n), then the sweep); same counter, so its
//   ratio to GEMM is the sweep floor over the wall time of a one-sweep call.
// - BM_cd_sweep_one_sided: H_out = I (GPTQ/LDLQ's objective), first sweep, counter 2 m n^2.
// Counter "changed": fraction of the units the timed sweep changed.
// All R arithmetic is fp64: the ceiling is the double GEMM rate, about half the float reference.
#include <algorithm>

#include <benchmark/benchmark.h>

#include <support/flops.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/rounding/coordinate_descent.hpp>
#include <yaqa/rounding/rtn.hpp>

namespace {

using yaqa::index;
using yaqa::matrix;

// G G^T + 0.1 I with G n x (n / 4) Gaussian of variance 4 / n: a correlated SPD factor.
matrix<float> spd_factor(index n, std::uint64_t seed) {
  const index k = std::max<index>(n / 4, 1);
  const matrix<float> g = yaqa::test::random_matrix<float>(n, k, seed, 1.0 / std::sqrt(double(k)));
  matrix<float> h = g * g.transpose();
  h = (0.5f * (h + h.transpose())).eval();
  h.diagonal().array() += 0.1f;
  return h;
}

struct cd_problem {
  matrix<float> w, h_in, h_out;
  yaqa::int_grid<float> q{yaqa::int_grid_options{.bits = 4}};
  yaqa::rounded<yaqa::int_grid<float>> start;
  cd_problem(index m, index n) : w(yaqa::test::random_weights<float>(m, n, 1)), h_in(spd_factor(n, 2)), h_out(spd_factor(m, 3)) {
    start = yaqa::rtn(q, yaqa::view(w));
  }
};

// sweep: 0 = time the whole one-sweep call, k = time sweep k alone (manual time)
void run(benchmark::State& state, bool two_sided, int sweep) {
  const index m = state.range(0), n = state.range(1);
  const cd_problem p(m, n);
  const auto h_out = two_sided ? yaqa::view(p.h_out) : yaqa::matrix_view<const float>{};
  double changed = 0;
  for (auto _ : state) {
    auto r = p.start;
    const auto rep = yaqa::coordinate_descent(p.q, yaqa::view(p.w), yaqa::view(p.h_in), h_out, r,
                                              yaqa::cd_options{.sweeps = std::max(sweep, 1)});
    const auto& sw = rep.sweeps.at(static_cast<std::size_t>(std::max(sweep, 1) - 1));
    if (sweep > 0) state.SetIterationTime(sw.seconds);
    changed = double(sw.units_changed) / double(rep.units);
    benchmark::DoNotOptimize(r.weights.data());
  }
  state.counters["changed"] = changed;  // fraction of units changed by the sweep
  yaqa::bench::set_flops(state, 2.0 * double(m) * double(n) * (two_sided ? double(m + n) : double(n)));
}

void BM_cd_sweep(benchmark::State& state) { run(state, true, 1); }
void BM_cd_second_sweep(benchmark::State& state) { run(state, true, 2); }
void BM_cd_call(benchmark::State& state) { run(state, true, 0); }
void BM_cd_sweep_one_sided(benchmark::State& state) { run(state, false, 1); }

void sizes(benchmark::internal::Benchmark* b) {
  b->Args({256, 256})->Args({1024, 1024})->Args({2048, 2048})->Args({4096, 4096});
  b->Unit(benchmark::kMillisecond)->Iterations(1);
}

}  // namespace

BENCHMARK(BM_cd_sweep)->Apply(sizes)->UseManualTime();
BENCHMARK(BM_cd_second_sweep)->Args({256, 256})->Args({4096, 4096})->Unit(benchmark::kMillisecond)->Iterations(1)->UseManualTime();
BENCHMARK(BM_cd_call)->Apply(sizes)->UseRealTime();
BENCHMARK(BM_cd_sweep_one_sided)->Args({256, 256})->Args({4096, 4096})->Unit(benchmark::kMillisecond)->Iterations(1)->UseManualTime();
