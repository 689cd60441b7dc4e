// The random Hadamard transform on the device at orders that are not powers of two: x <- x U on
// the rows of an m x n matrix (the weight-side rotation), n = K * P with a dense K x K factor G
// (a cuBLAS GEMM) and a Sylvester part of order P (Walsh-Hadamard kernels). 12288 = 12 x 1024
// and 28672 = 28 x 1024 (LLaMA widths). cudaEvent timing; the timed span is one hadamard_apply
// call, including its per-call uploads (signs, G) and its stream-ordered scratch allocation.
// Flops per row: n log2(P) (butterflies) + 2 n K (the GEMM with G) + n (the signed scale).
// Bytes: 2 m n sizeof(T), the one read and one write of an in-place transform (the device makes
// three passes over x, plus the scratch, so the real traffic is about three times that).
#include <benchmark/benchmark.h>

#include <cuda/cuda_bench.cuh>
#include <support/flops.hpp>

namespace {

using yaqa::cuda_backend;
using yaqa::index;

template <class T>
void BM_cuda_hadamard_nonpow2(benchmark::State& state) {
  if (!yaqa::bench::require_device(state)) return;
  const index m = state.range(0), n = state.range(1);
  cuda_backend b;
  const yaqa::random_hadamard u(n, 1);
  yaqa::cuda::device_matrix<T> x(b, m, n);
  yaqa::bench::fill_uniform(b, x.view(), 11, 1.0);
  yaqa::bench::event_timer t;
  for (auto _ : state) {
    t.begin(b.stream());
    yaqa::cuda::hadamard_apply<T>(b, u, yaqa::side::right, yaqa::trans::none, x.view());
    state.SetIterationTime(t.end(b.stream()));
  }
  double lg = 0;
  for (index v = u.sylvester_order(); v > 1; v /= 2) lg += 1;
  const double k = double(u.dense_order());
  yaqa::bench::set_flops(state, double(m) * double(n) * (lg + 2.0 * k + 1.0));
  yaqa::bench::set_bytes(state, 2.0 * double(m) * double(n) * sizeof(T));
  state.SetLabel(u.description());
}

}  // namespace

BENCHMARK_TEMPLATE(BM_cuda_hadamard_nonpow2, float)
    ->Args({512, 768})
    ->Args({4096, 12288})
    ->Args({8192, 28672})
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();
