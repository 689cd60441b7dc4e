// Hessian accumulation: the per-batch cost of E[x x^T], of a Sketch A odd pass (weights by one
// GEMM + a weighted SYRK) and of Sketch B per sequence. Float inputs, double accumulators (the
// defaults), T = 2048 tokens per batch/sequence. FLOP counters count the algorithm actually run
// (symmetric products count n(n+1) per token, not 2n^2); compare with BM_gemm_eigen<float>/4096
// through tools/bench_ratio.py.
#include <benchmark/benchmark.h>

#include <yaqa/hessian/accumulator.hpp>
#include <yaqa/hessian/kronecker_sketch.hpp>
#include <support/flops.hpp>
#include <support/generators.hpp>

namespace {

// second_moment::add of one T x n batch.
void BM_second_moment_add(benchmark::State& state) {
  const auto t = state.range(0), n = state.range(1);
  const auto x = yaqa::test::random_matrix<float>(t, n, 1);
  yaqa::second_moment<double> h(n);
  h.add(yaqa::view(x));  // steady state: scratch buffers sized
  for (auto _ : state) {
    h.add(yaqa::view(x));
    benchmark::DoNotOptimize(h.packed_sum().data());
  }
  yaqa::bench::set_flops(state, double(t) * double(n) * double(n + 1));
}

// The same shape as one batch's X^T X as a plain GEMM (2 T n^2 FLOPs, both triangles) through
// the library's deterministic GEMM: what "the GEMM rate" means at these sizes.
void BM_gemm_tn(benchmark::State& state) {
  const auto t = state.range(0), n = state.range(1);
  const auto x = yaqa::test::random_matrix<float>(t, n, 1);
  yaqa::matrix<float> c(n, n);
  for (auto _ : state) {
    yaqa::backend_ops<yaqa::cpu_backend>::gemm<float>(yaqa::cpu_backend{}, yaqa::trans::transpose, yaqa::trans::none,
                                                      1.f, yaqa::view(x), yaqa::view(x), 0.f, yaqa::view(c));
    benchmark::DoNotOptimize(c.data());
  }
  yaqa::bench::set_flops(state, 2.0 * double(t) * double(n) * double(n));
}

// sketch_a::add in pass 1 (odd): s = rowsum((X H_in) ∘ X), H_out += G^T diag(s) G.
void BM_sketch_a_odd_pass(benchmark::State& state) {
  const auto t = state.range(0), n = state.range(1), m = state.range(2);
  const auto x = yaqa::test::random_matrix<float>(t, n, 1);
  const auto g = yaqa::test::random_matrix<float>(t, m, 2);
  yaqa::sketch_a<double> s(n, m, 2);
  s.begin_pass();
  s.add(yaqa::view(x), yaqa::view(g));
  s.end_pass();
  s.begin_pass();
  // steady state: the first add of a pass also builds the pass's full float copy of H_in (once per
  // pass, amortized over its batches) and sizes the scratch buffers
  s.add(yaqa::view(x), yaqa::view(g));
  for (auto _ : state) {
    s.add(yaqa::view(x), yaqa::view(g));
    benchmark::DoNotOptimize(&s);
  }
  yaqa::bench::set_flops(state, yaqa::sketch_a<double>::flops(1, t, n, m));
}

// sketch_b::add_sequence of one T-token sequence; path 0 = automatic, 1 = direct, 2 = gram.
void BM_sketch_b_sequence(benchmark::State& state) {
  const auto t = state.range(0), n = state.range(1), m = state.range(2);
  const auto path = static_cast<yaqa::sketch_b_path>(state.range(3));
  const auto x = yaqa::test::random_matrix<float>(t, n, 1);
  const auto g = yaqa::test::random_matrix<float>(t, m, 2);
  yaqa::sketch_b<double> s(n, m, {.path = path});
  s.add_sequence(yaqa::view(x), yaqa::view(g));  // steady state: scratch buffers sized
  for (auto _ : state) {
    s.add_sequence(yaqa::view(x), yaqa::view(g));
    benchmark::DoNotOptimize(&s);
  }
  yaqa::bench::set_flops(state, yaqa::sketch_b<double>::flops(path, t, n, m));
  const auto used = path == yaqa::sketch_b_path::automatic ? yaqa::sketch_b<double>::choose_path(t, n, m) : path;
  state.SetLabel(used == yaqa::sketch_b_path::direct ? "direct" : "gram");
}

}  // namespace

BENCHMARK(BM_gemm_tn)->Args({2048, 1024})->Args({2048, 2048})->Args({2048, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_second_moment_add)
    ->Args({512, 384})  // smoke size
    ->Args({2048, 1024})
    ->Args({2048, 2048})
    ->Args({2048, 4096})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_sketch_a_odd_pass)
    ->Args({512, 384, 256})
    ->Args({2048, 1024, 1024})
    ->Args({2048, 2048, 2048})
    ->Args({2048, 4096, 1024})
    ->Args({2048, 1024, 4096})
    ->Args({2048, 4096, 4096})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_sketch_b_sequence)
    ->Args({512, 384, 256, 0})
    ->Args({2048, 1024, 1024, 0})
    ->Args({2048, 2048, 2048, 0})
    ->Args({2048, 4096, 1024, 0})
    ->Args({2048, 1024, 4096, 0})
    ->Args({2048, 4096, 4096, 0})
    ->Args({2048, 4096, 4096, 1})  // both paths at the largest size, for the record
    ->Args({2048, 4096, 4096, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
