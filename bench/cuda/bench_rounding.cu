// YAQA two-sided rounding on the device (int_grid 4 bits, g128, 16 x 16 tiles, wavefront):
// 4096 x 4096 and 8192 x 28672 (an MLP projection; issue target: under 3 s on an H100), one-sided
// LDLQ, GPTQ's device loop, and the random Hadamard transform. Operands are generated on the device; the timed span
// is yaqa::cuda::yaqa_round_device (its scratch allocation included). Flops: m n (m + n), the
// feedback GEMMs of the algorithm (the wavefront's uniform strips do up to twice that).
#include <cstdint>
#include <vector>

#include <benchmark/benchmark.h>

#include <cuda/cuda_bench.cuh>
#include <support/flops.hpp>

namespace {

using yaqa::cuda_backend;
using yaqa::index;

// Parameters of a 4-bit asymmetric grid for weights in (-0.05, 0.05): the same for every row and
// group (the rounding cost does not depend on them).
template <class T>
yaqa::cuda::int_grid_device_params<T> flat_params(const cuda_backend& b, const yaqa::int_grid<T>& q, index m,
                                                  index n) {
  const index g = q.group_cols(n);
  typename yaqa::int_grid<T>::params_type p;
  p.scale.assign(static_cast<std::size_t>(m), T(0.1) / T(15));
  p.zero.assign(static_cast<std::size_t>(m), T(8));
  const std::vector<typename yaqa::int_grid<T>::params_type> all(static_cast<std::size_t>(n / g), p);
  return yaqa::cuda::upload_params<T>(b, all, g);
}

// args: m, n, two-sided (1) or one-sided LDLQ (0)
void BM_cuda_yaqa_round(benchmark::State& state) {
  if (!yaqa::bench::require_device(state)) return;
  using T = float;
  const index m = state.range(0), n = state.range(1), td = 16;
  const bool two = state.range(2) != 0;
  cuda_backend b;
  const yaqa::int_grid<T> q({.bits = 4, .sym = false, .group_size = 128});
  const auto p = flat_params<T>(b, q, m, n);
  yaqa::cuda::device_matrix<T> w(b, m, n), lin(b, n, n), lout(b, two ? m : 0, two ? m : 0), what(b, m, n);
  yaqa::cuda::device_matrix<std::uint8_t> codes(b, m, n);
  yaqa::bench::fill_uniform(b, w.view(), 7, 0.05);
  // small off-diagonal feedback keeps the targets bounded for any size
  yaqa::bench::fill_unit_block_lower(b, lin.view(), td, 8, 1.0 / double(n));
  if (two) yaqa::bench::fill_unit_block_lower(b, lout.view(), td, 9, 1.0 / double(m));
  yaqa::bench::event_timer t;
  for (auto _ : state) {
    t.begin(b.stream());
    yaqa::cuda::yaqa_round_device<T>(b, q, p, w.cview(), lin.cview(), lout.cview(), what.view(), codes.view(),
                                     two ? td : m, td);
    state.SetIterationTime(t.end(b.stream()));
  }
  const double md = double(m), nd = double(n);
  yaqa::bench::set_flops(state, two ? md * nd * (md + nd) : md * nd * nd);
  state.counters["steps"] = double(two ? m / td + n / td - 1 : n / td);
}

// Random Hadamard transform of the rows of an m x n matrix (x <- x U, the weight-side rotation).
template <class T>
void BM_cuda_hadamard(benchmark::State& state) {
  if (!yaqa::bench::require_device(state)) return;
  const index m = state.range(0), n = state.range(1);
  cuda_backend b;
  const yaqa::random_hadamard u(n, 1);
  yaqa::cuda::device_matrix<T> x(b, m, n);
  yaqa::bench::fill_uniform(b, x.view(), 10, 1.0);
  yaqa::bench::event_timer t;
  for (auto _ : state) {
    t.begin(b.stream());
    yaqa::cuda::hadamard_apply<T>(b, u, yaqa::side::right, yaqa::trans::none, x.view());
    state.SetIterationTime(t.end(b.stream()));
  }
  double lg = 0;
  for (index v = n; v > 1; v /= 2) lg += 1;
  yaqa::bench::set_flops(state, double(m) * double(n) * (lg + 1));
  yaqa::bench::set_bytes(state, 2.0 * double(m) * double(n) * sizeof(T));
}

// GPTQ's device loop (int_grid 4 bits, g128 fitted lazily on the host, block 128) on an m x n
// layer. The host preparation (dead columns, the inverse factor U in double) runs once, outside
// the timing; the timed span is detail::gptq_device_loop: uploads of W and U, the n / 128 blocks
// (row kernel + GEMM + lazy group fits through the host), downloads. Flops: m n^2, the block
// GEMMs W[:, i2:] -= Err U[i1:i2, i2:] summed over blocks.
void BM_cuda_gptq(benchmark::State& state) {
  if (!yaqa::bench::require_device(state)) return;
  using T = float;
  const index m = state.range(0), n = state.range(1);
  cuda_backend b;
  const yaqa::int_grid<T> q({.bits = 4, .sym = false, .group_size = 128});
  const yaqa::matrix<T> w = yaqa::matrix<T>::Random(m, n) * T(0.05);
  // SPD with a dense inverse factor: I + 0.5 * 11^T / n
  const yaqa::matrix<T> h = yaqa::matrix<T>::Identity(n, n) + yaqa::matrix<T>::Constant(n, n, T(0.5) / T(n));
  const auto prepared = yaqa::detail::gptq_prepare("BM_cuda_gptq", yaqa::cpu_backend{}, q, yaqa::view(w),
                                                   yaqa::view(h), yaqa::gptq_options{});
  yaqa::bench::event_timer t;
  for (auto _ : state) {
    auto s = prepared;  // the loop writes the lazily fitted parameters
    t.begin(b.stream());
    auto out = yaqa::cuda::detail::gptq_device_loop<T>(b, q, s, 128, "BM_cuda_gptq");
    state.SetIterationTime(t.end(b.stream()));
    benchmark::DoNotOptimize(out.loss);
  }
  yaqa::bench::set_flops(state, double(m) * double(n) * double(n));
}

}  // namespace

BENCHMARK(BM_cuda_yaqa_round)
    ->Args({512, 512, 1})
    ->Args({4096, 4096, 1})
    ->Args({8192, 28672, 1})
    ->Args({4096, 4096, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();
BENCHMARK_TEMPLATE(BM_cuda_hadamard, float)
    ->Args({512, 512})
    ->Args({4096, 4096})
    ->Args({4096, 16384})
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();
BENCHMARK(BM_cuda_gptq)->Args({4096, 4096})->Args({28672, 8192})->Unit(benchmark::kMillisecond)->UseManualTime();
