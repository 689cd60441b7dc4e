// One refinement step (LSI / SDE, with LWC) on an m x n layer, int4 grid with groups of 128,
// two-sided Kronecker objective: W' = W + U D V^T, fit + quantize, objective value and gradient
// (2 GEMMs), straight-through backward, dL/dD, Adam. The frame U, V is a random m x r / n x r
// pair (the step's cost does not depend on its values; an SVD of 4096 x 11008 would dominate the
// setup). FLOPS counts the GEMM-shaped work of the step (2 flops per multiply-add):
//   materialize  m r (2K+1) [banded] + m K^2 [dense block] + m r n
//   objective    m n^2 + m^2 n
//   dL/dD        m n r + m r (2K+1) + m K^2
// so tools/bench_ratio.py's ratio to the float GEMM is the step's efficiency; the step's cost in
// "GEMMs of m x n x n" is flops / (2 m n^2).
#include <benchmark/benchmark.h>

#include <support/flops.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/refine/refine.hpp>

namespace {

using yaqa::index;
using yaqa::matrix;

matrix<float> synthetic_spd(index n, std::uint64_t seed) {
  matrix<float> s = yaqa::test::random_matrix<float>(n, n, seed, 0.25 / std::sqrt(double(n)));
  matrix<float> h = s + s.transpose();
  h.diagonal().array() += 2.f;
  return h;
}

void BM_refine_step(benchmark::State& state, const char* pattern, bool lwc) {
  const index m = state.range(0), n = state.range(1), r = std::min(m, n);
  const auto w = yaqa::test::random_weights<float>(m, n, 1);
  const auto hin = synthetic_spd(n, 2), hout = synthetic_spd(m, 3);
  const yaqa::int_grid<float> q({.bits = 4, .group_size = 128});
  const yaqa::kronecker_objective<float> obj(yaqa::view(w), yaqa::view(hin), yaqa::view(hout));
  yaqa::refine_options opt;
  opt.method = yaqa::refine_method::sde;
  opt.pattern = yaqa::parse_sde_pattern(pattern);
  opt.lwc = lwc;
  yaqa::spectral_basis<float> basis;
  basis.u = yaqa::test::random_matrix<float>(m, r, 4, 1.0 / std::sqrt(double(m)));
  basis.v = yaqa::test::random_matrix<float>(n, r, 5, 1.0 / std::sqrt(double(n)));
  basis.sigma = yaqa::vector<double>::Ones(r);
  yaqa::refine_report rep;
  yaqa::detail::refine_stepper<yaqa::cpu_backend, yaqa::int_grid<float>, yaqa::kronecker_objective<float>> st(
      yaqa::cpu_backend{}, q, yaqa::view(w), obj, opt, 0.01, 0.0, rep, std::move(basis));
  {  // one step first: D != 0 from then on, so every timed step materializes W'
    auto e = st.evaluate();
    st.update(e);
  }
  for (auto _ : state) {
    auto e = st.evaluate();
    st.update(e);
    benchmark::DoNotOptimize(e.value.loss);
  }
  const yaqa::sde_pattern p = opt.pattern;
  const double k = p.shape == yaqa::sde_shape::full ? double(r) : p.shape == yaqa::sde_shape::topleft ? double(p.k) : 0;
  const double bw = p.shape == yaqa::sde_shape::band ? double(2 * p.k + 1) : p.shape == yaqa::sde_shape::full ? 0 : 1;
  const double dm = double(m), dn = double(n), dr = double(r);
  const double mads = (dm * dr * bw + dm * k * k + dm * dr * dn) + (dm * dn * dn + dm * dm * dn) +
                      (dm * dn * dr + dm * dr * bw + dm * k * k);
  yaqa::bench::set_flops(state, 2 * mads);
  state.counters["gemm_equivalents"] = mads / (dm * dn * dn);
}

void sizes(benchmark::internal::Benchmark* b) {
  b->Args({256, 384})->Args({4096, 4096})->Args({4096, 11008})->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK_CAPTURE(BM_refine_step, lsi, "diag", false)->Apply(sizes);
BENCHMARK_CAPTURE(BM_refine_step, lsi_lwc, "diag", true)->Apply(sizes);
BENCHMARK_CAPTURE(BM_refine_step, sde_band8_lwc, "band:8", true)->Apply(sizes);
BENCHMARK_CAPTURE(BM_refine_step, sde_full_lwc, "full", true)->Apply(sizes);

}  // namespace
