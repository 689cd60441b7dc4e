// GEMM reference rate: every other benchmark reports its ratio to this number, measured in the
// same run on the same machine. FOM: BM_gemm_eigen<float>/4096.
#include <Eigen/Core>
#include <benchmark/benchmark.h>

#include <yaqa/backend/cpu/ops.hpp>
#include <support/flops.hpp>
#include <support/generators.hpp>

namespace {

// Eigen's own (multithreaded) GEMM: the machine's reference rate.
template <class T>
void BM_gemm_eigen(benchmark::State& state) {
  const auto n = state.range(0);
  const auto a = yaqa::test::random_matrix<T>(n, n, 1);
  const auto b = yaqa::test::random_matrix<T>(n, n, 2);
  yaqa::matrix<T> c(n, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
  }
  yaqa::bench::set_flops(state, 2.0 * double(n) * double(n) * double(n));
}

// The library's deterministic chunked GEMM (backend_ops<cpu_backend>::gemm).
template <class T>
void BM_gemm_backend(benchmark::State& state) {
  const auto n = state.range(0);
  const auto a = yaqa::test::random_matrix<T>(n, n, 1);
  const auto b = yaqa::test::random_matrix<T>(n, n, 2);
  yaqa::matrix<T> c(n, n);
  yaqa::cpu_backend be;
  for (auto _ : state) {
    yaqa::backend_ops<yaqa::cpu_backend>::gemm<T>(be, yaqa::trans::none, yaqa::trans::none, T(1),
                                                 yaqa::view(a), yaqa::view(b), T(0), yaqa::view(c));
    benchmark::DoNotOptimize(c.data());
  }
  yaqa::bench::set_flops(state, 2.0 * double(n) * double(n) * double(n));
}

}  // namespace

BENCHMARK_TEMPLATE(BM_gemm_eigen, float)->Arg(256)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_gemm_eigen, double)->Arg(256)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_gemm_backend, float)->Arg(256)->Arg(2048)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
// The fp64 rate the factorization floors use (bench/cli_floor.py).
BENCHMARK_TEMPLATE(BM_gemm_backend, double)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
