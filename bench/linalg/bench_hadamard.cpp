// The random Hadamard transform applied to an n x n float matrix from the left (columns, in place)
// and from the right (rows, through a lane-interleaved buffer).
// FOM: BM_rht_apply_left<float>/4096 (GB/s, bytes = 2 n^2 sizeof(float): one read, one write).
#include <cmath>

#include <benchmark/benchmark.h>

#include <support/flops.hpp>
#include <support/generators.hpp>
#include <yaqa/linalg/hadamard.hpp>

namespace {

// Per vector of length n = K 2^p: n p butterfly adds, 2 n K for the dense K x K factor (K > 1),
// n for the sign-and-scale pass.
double rht_flops_per_vector(const yaqa::random_hadamard& rh) {
  const double n = double(rh.dim()), k = double(rh.dense_order());
  const double p = std::log2(double(rh.sylvester_order()));
  return n * p + (k > 1 ? 2.0 * n * k : 0.0) + n;
}

template <class T>
void run(benchmark::State& state, yaqa::side s) {
  const yaqa::index n = state.range(0);
  const yaqa::random_hadamard rh(n, 1);
  auto x = yaqa::test::random_matrix<T>(n, n, 3);
  for (auto _ : state) {
    rh.apply(s, yaqa::trans::none, yaqa::view(x));
    benchmark::DoNotOptimize(x.data());
  }
  state.SetLabel(rh.description());
  yaqa::bench::set_flops(state, double(n) * rht_flops_per_vector(rh));
  yaqa::bench::set_bytes(state, 2.0 * double(n) * double(n) * sizeof(T));
}

template <class T>
void BM_rht_apply_left(benchmark::State& state) {
  run<T>(state, yaqa::side::left);
}
template <class T>
void BM_rht_apply_right(benchmark::State& state) {
  run<T>(state, yaqa::side::right);
}

}  // namespace

BENCHMARK_TEMPLATE(BM_rht_apply_left, float)
    ->Arg(768)->Arg(1024)->Arg(4096)->Arg(5376)->Arg(8192)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_rht_apply_right, float)
    ->Arg(768)->Arg(1024)->Arg(4096)->Arg(5376)->Arg(8192)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
