// CUDA dense ops: the cuBLAS SGEMM reference rate of this run (FOM: BM_cuda_sgemm/4096), Hessian
// sketch accumulation (X^T X and X^T diag(w) X through backend_ops<cuda_backend>, 4096 features x
// 8192 tokens) and the Cholesky factor of the LDL step (cuSOLVER potrf, 4096). cudaEvent timing.
#include <benchmark/benchmark.h>

#include <cuda/cuda_bench.cuh>
#include <support/flops.hpp>

namespace {

using yaqa::cuda_backend;
using yaqa::index;
using ops = yaqa::backend_ops<cuda_backend>;

// cuBLAS SGEMM n^3: the reference every CUDA result is compared with (tools/bench_ratio.py).
void BM_cuda_sgemm(benchmark::State& state) {
  if (!yaqa::bench::require_device(state)) return;
  const index n = state.range(0);
  cuda_backend b;
  yaqa::cuda::device_matrix<float> a(b, n, n), bm(b, n, n), c(b, n, n);
  yaqa::bench::fill_uniform(b, a.view(), 1, 1.0);
  yaqa::bench::fill_uniform(b, bm.view(), 2, 1.0);
  yaqa::bench::event_timer t;
  for (auto _ : state) {
    t.begin(b.stream());
    ops::gemm<float>(b, yaqa::trans::none, yaqa::trans::none, 1.f, a.cview(), bm.cview(), 0.f, c.view());
    state.SetIterationTime(t.end(b.stream()));
  }
  yaqa::bench::set_flops(state, 2.0 * double(n) * double(n) * double(n));
}

// H += X^T X (args: features n, tokens t); flops of the symmetric product, t n (n + 1).
template <class T>
void BM_cuda_syrk_accumulate(benchmark::State& state) {
  if (!yaqa::bench::require_device(state)) return;
  const index n = state.range(0), tokens = state.range(1);
  cuda_backend b;
  yaqa::cuda::device_matrix<T> x(b, tokens, n), h(b, n, n);
  yaqa::bench::fill_uniform(b, x.view(), 3, 1.0);
  h.zero();
  yaqa::bench::event_timer t;
  for (auto _ : state) {
    t.begin(b.stream());
    ops::syrk_accumulate<T>(b, x.cview(), T(1), h.view());
    state.SetIterationTime(t.end(b.stream()));
  }
  yaqa::bench::set_flops(state, double(tokens) * double(n) * double(n + 1));
}

// H += X^T diag(w) X (Sketch A/B's weighted accumulation); same flop count plus the scaling.
template <class T>
void BM_cuda_weighted_syrk_accumulate(benchmark::State& state) {
  if (!yaqa::bench::require_device(state)) return;
  const index n = state.range(0), tokens = state.range(1);
  cuda_backend b;
  yaqa::cuda::device_matrix<T> x(b, tokens, n), h(b, n, n), w(b, tokens, 1);
  yaqa::bench::fill_uniform(b, x.view(), 4, 1.0);
  yaqa::bench::fill_uniform(b, w.view(), 5, 1.0);
  h.zero();
  yaqa::bench::event_timer t;
  for (auto _ : state) {
    t.begin(b.stream());
    ops::weighted_syrk_accumulate<T>(b, x.cview(), w.data(), T(1), h.view());
    state.SetIterationTime(t.end(b.stream()));
  }
  yaqa::bench::set_flops(state, double(tokens) * double(n) * double(n + 1));
}

// Cholesky of an SPD n x n matrix (X^T X / t + I, rebuilt from a copy each iteration, the copy
// not timed); n^3 / 3 flops. potrf_lower synchronizes (it returns info), inside the timed span.
template <class T>
void BM_cuda_potrf(benchmark::State& state) {
  if (!yaqa::bench::require_device(state)) return;
  const index n = state.range(0);
  cuda_backend b;
  yaqa::cuda::device_matrix<T> x(b, 2 * n, n), spd(b, n, n), a(b, n, n), eye(b, n, n);
  yaqa::bench::fill_uniform(b, x.view(), 6, 1.0);
  yaqa::bench::fill_unit_block_lower(b, eye.view(), n, 0, 0.0);  // one block: the identity
  yaqa::cuda::copy<T>(b, eye.cview(), spd.view());
  ops::syrk_accumulate<T>(b, x.cview(), T(1) / T(2 * n), spd.view());
  yaqa::bench::event_timer t;
  for (auto _ : state) {
    yaqa::cuda::copy<T>(b, spd.cview(), a.view());
    t.begin(b.stream());
    const index info = ops::potrf_lower<T>(b, a.view());
    state.SetIterationTime(t.end(b.stream()));
    if (info != 0) {
      state.SkipWithError("potrf_lower failed");
      break;
    }
  }
  yaqa::bench::set_flops(state, double(n) * double(n) * double(n) / 3.0);
}

}  // namespace

BENCHMARK(BM_cuda_sgemm)->Arg(512)->Arg(4096)->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK_TEMPLATE(BM_cuda_syrk_accumulate, float)
    ->Args({512, 512})
    ->Args({4096, 8192})
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();
BENCHMARK_TEMPLATE(BM_cuda_weighted_syrk_accumulate, float)
    ->Args({512, 512})
    ->Args({4096, 8192})
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();
BENCHMARK_TEMPLATE(BM_cuda_potrf, float)->Arg(512)->Arg(4096)->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK_TEMPLATE(BM_cuda_potrf, double)->Arg(512)->Arg(4096)->Unit(benchmark::kMillisecond)->UseManualTime();
