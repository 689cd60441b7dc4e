#pragma once
// Helpers shared by the benchmarks: FLOP and byte counters. Shown as e.g. "FLOPS=80.3G/s";
// the JSON output holds the raw rate (flop/s), which tools/bench_ratio.py divides by the GEMM rate.
#include <benchmark/benchmark.h>

namespace yaqa::bench {

//! Reports the FLOP rate for `flops_per_iteration` floating-point operations per iteration.
inline void set_flops(benchmark::State& state, double flops_per_iteration) {
  state.counters["FLOPS"] = benchmark::Counter(flops_per_iteration, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
}

//! Reports the byte rate for `bytes_per_iteration` bytes moved per iteration.
inline void set_bytes(benchmark::State& state, double bytes_per_iteration) {
  state.counters["BYTES"] = benchmark::Counter(bytes_per_iteration, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
}

}  // namespace yaqa::bench
