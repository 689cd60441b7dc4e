// Factor solvers: damped block LDL (YAQA / LDLQ) and GPTQ's inverse factor, fp64 inside.
// FOM: BM_damped_block_ldl<double>/4096/16 (GFLOP/s and ratio to the float GEMM of the same run).
#include <cstdint>
#include <random>

#include <benchmark/benchmark.h>

#include <support/flops.hpp>
#include <yaqa/linalg/block_ldl.hpp>

namespace {

// SPD by diagonal dominance: cheap to generate at n = 8192 (the factorization's cost does not
// depend on the values; random_spd's n^3 generation would dominate the benchmark's setup).
template <class T>
yaqa::matrix<T> dominant_spd(yaqa::index n, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  yaqa::matrix<T> h(n, n);
  for (yaqa::index j = 0; j < n; ++j)
    for (yaqa::index i = j; i < n; ++i) {
      const T v = T(double(g() >> 11) * 0x1.0p-53 - 0.5);
      h(i, j) = v;
      h(j, i) = v;
    }
  h.diagonal().array() += T(n);
  return h;
}

// Cholesky n^3/3, plus forming L = C blockdiag(C_kk)^{-1} (n^2 b / 2) and D (n b^2).
template <class T>
void BM_damped_block_ldl(benchmark::State& state) {
  const yaqa::index n = state.range(0), b = state.range(1);
  const auto h = dominant_spd<T>(n, 1);
  for (auto _ : state) {
    auto r = yaqa::damped_block_ldl(yaqa::view(h), b);
    if (!r.has_value()) state.SkipWithError("factorization failed");
    benchmark::DoNotOptimize(r->L.data());
  }
  const double nd = double(n), bd = double(b);
  yaqa::bench::set_flops(state, nd * nd * nd / 3.0 + nd * nd * bd / 2.0 + nd * bd * bd);
}

// The same in place, as quantize_layer runs it (H's fp64 copy becomes L; the copy is not timed).
template <class T>
void BM_damped_block_ldl_in_place(benchmark::State& state) {
  const yaqa::index n = state.range(0), b = state.range(1);
  const auto h = dominant_spd<T>(n, 1);
  yaqa::matrix<double> work(n, n);
  for (auto _ : state) {
    state.PauseTiming();
    work = h.template cast<double>();
    state.ResumeTiming();
    auto r = yaqa::damped_block_ldl_in_place(yaqa::cpu_backend{}, work, b);
    if (!r.has_value()) state.SkipWithError("factorization failed");
    benchmark::DoNotOptimize(r->L.data());
    state.PauseTiming();
    work = std::move(r->L);  // the next copy reuses the buffer (no fresh pages)
    state.ResumeTiming();
  }
  const double nd = double(n), bd = double(b);
  yaqa::bench::set_flops(state, nd * nd * nd / 3.0 + nd * nd * bd / 2.0 + nd * bd * bd);
}

// Cholesky of the reversed H (n^3/3) plus the triangular inverse (n^3/3).
template <class T>
void BM_gptq_inverse_factor(benchmark::State& state) {
  const yaqa::index n = state.range(0);
  const auto h = dominant_spd<T>(n, 2);
  for (auto _ : state) {
    auto r = yaqa::gptq_inverse_factor(yaqa::view(h));
    if (!r.has_value()) state.SkipWithError("factorization failed");
    benchmark::DoNotOptimize(r->U.data());
  }
  const double nd = double(n);
  yaqa::bench::set_flops(state, 2.0 * nd * nd * nd / 3.0);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_damped_block_ldl, double)
    ->Args({768, 16})->Args({1024, 16})->Args({2048, 16})->Args({4096, 16})->Args({8192, 16})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_damped_block_ldl_in_place, double)
    ->Args({2048, 16})->Args({4096, 16})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_gptq_inverse_factor, double)
    ->Arg(768)->Arg(1024)->Arg(2048)->Arg(4096)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
