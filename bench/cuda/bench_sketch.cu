// CUDA Hessian sketches (yaqa::cuda::sketch_b, sketch_a): one sequence of Sketch B at
// n = m = 4096 with 2048 tokens, and one batch of an odd Sketch A pass (H_out update: weights
// x^T H_in x, then the weighted SYRK over g) at n = m = 4096 with 8192 tokens. FLOPs are counted
// as the CPU classes' flops() functions do. cudaEvent timing of the queued work; the scratch
// allocations inside the ops (stream-ordered cudaMallocAsync) are in the timed span.
#include <benchmark/benchmark.h>

#include <cuda/cuda_bench.cuh>
#include <support/flops.hpp>

namespace {

using yaqa::cuda_backend;
using yaqa::index;

// One add_sequence (args: n, m, tokens): G_s = G^T X, H_in += G_s^T G_s, H_out += G_s G_s^T.
// FLOPs: sketch_b::flops (direct path), 2Tmn + mn(n+1) + nm(m+1).
template <class T>
void BM_cuda_sketch_b(benchmark::State& state) {
  if (!yaqa::bench::require_device(state)) return;
  const index n = state.range(0), m = state.range(1), tokens = state.range(2);
  cuda_backend b;
  yaqa::cuda::device_matrix<T> x(b, tokens, n), g(b, tokens, m);
  yaqa::bench::fill_uniform(b, x.view(), 11, 1.0);
  yaqa::bench::fill_uniform(b, g.view(), 12, 1e-2);
  yaqa::cuda::sketch_b<T> s(b, n, m);
  s.add_sequence(x.cview(), g.cview());  // warm-up: cuBLAS setup and the G_s scratch, not timed
  b.synchronize();
  yaqa::bench::event_timer t;
  for (auto _ : state) {
    t.begin(b.stream());
    s.add_sequence(x.cview(), g.cview());
    state.SetIterationTime(t.end(b.stream()));
  }
  yaqa::bench::set_flops(state, yaqa::cuda::sketch_b<T>::flops(tokens, n, m));
}

// One add of an odd Sketch A pass (args: n, m, tokens): AH = X H_in (GEMM), s_t = (AH)_t . x_t
// (strided-batched 1 x 1 GEMMs), H_out += G^T diag(s) G (weighted SYRK). Pass 0 runs once
// before timing. FLOPs: sketch_a::flops(1, ...) = 2Tn^2 + Tm(m+1) (the 2Tn of the dots not
// counted).
template <class T>
void BM_cuda_sketch_a(benchmark::State& state) {
  if (!yaqa::bench::require_device(state)) return;
  const index n = state.range(0), m = state.range(1), tokens = state.range(2);
  cuda_backend b;
  yaqa::cuda::device_matrix<T> x(b, tokens, n), g(b, tokens, m);
  yaqa::bench::fill_uniform(b, x.view(), 13, 1.0);
  yaqa::bench::fill_uniform(b, g.view(), 14, 1e-2);
  yaqa::cuda::sketch_a<T> s(b, n, m, 2);
  s.begin_pass();
  s.add(x.cview());
  s.end_pass();  // H_in = E[x x^T]
  s.begin_pass();
  s.add(x.cview(), g.cview());  // warm-up of the odd pass (scratch), not timed
  b.synchronize();
  yaqa::bench::event_timer t;
  for (auto _ : state) {
    t.begin(b.stream());
    s.add(x.cview(), g.cview());
    state.SetIterationTime(t.end(b.stream()));
  }
  yaqa::bench::set_flops(state, yaqa::cuda::sketch_a<T>::flops(1, tokens, n, m));
}

}  // namespace

BENCHMARK_TEMPLATE(BM_cuda_sketch_b, float)
    ->Args({512, 512, 256})
    ->Args({4096, 4096, 2048})
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();
BENCHMARK_TEMPLATE(BM_cuda_sketch_a, float)
    ->Args({512, 512, 512})
    ->Args({4096, 4096, 8192})
    ->Unit(benchmark::kMillisecond)
    ->UseManualTime();
