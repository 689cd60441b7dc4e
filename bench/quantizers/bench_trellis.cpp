// Trellis (QTIP bitshift trellis) throughput, float: weights quantized per second
// (items_per_second) for one quantize() call on a 16 x n row of tiles with the calibrated scale,
// as a rounding driver hands it a block. Arguments: L, K, code (0 = 1MAD, 1 = 3INST, 2 = HYB),
// threads (0 = all), weights per call. Also: one Viterbi pass with L fixed at compile time
// against L at run time (the quantizer's choice), and decoding.
// BYTES counts the target read, the reconstruction and the codes written.
// FOM: BM_trellis_quantize/16/2/2/1/4096 (weights/s at L = 16, K = 2, HYB, one thread; per-row
// scales since they were added, one scale per matrix before).
#include <array>
#include <cstdint>
#include <vector>

#include <benchmark/benchmark.h>

#include <support/flops.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/trellis.hpp>

namespace {

yaqa::trellis_code code_of(std::int64_t i) {
  return i == 0 ? yaqa::trellis_code::one_mad : i == 1 ? yaqa::trellis_code::three_inst : yaqa::trellis_code::hyb;
}

template <yaqa::trellis_scales Scales>
void trellis_quantize(benchmark::State& state) {
  const int l = static_cast<int>(state.range(0)), k = static_cast<int>(state.range(1));
  const int threads = static_cast<int>(state.range(3));
  const yaqa::index weights = state.range(4), n = weights / 16;
  const yaqa::trellis<float> q({.l = l, .k = k, .code = code_of(state.range(2)), .scales = Scales, .threads = threads});
  const auto w = yaqa::test::random_matrix<float>(16, n, 3);
  const auto p = q.fit(yaqa::view(w));  // the calibration (first use of a configuration) is not timed
  yaqa::matrix<float> recon(16, n);
  yaqa::matrix<yaqa::trellis_bits> codes(1, n / 16);
  for (auto _ : state) {
    q.quantize(yaqa::view(w), p, 0, yaqa::view(recon), yaqa::view(codes));
    benchmark::DoNotOptimize(recon.data());
    benchmark::DoNotOptimize(codes.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * weights);
  yaqa::bench::set_bytes(state, double(weights) * 2 * sizeof(float) + double(codes.size()) * q.bytes_per_tile());
}

// The default per-row scales: rows of (slightly) different RMS, so every tile's walk is weighted.
void BM_trellis_quantize(benchmark::State& state) { trellis_quantize<yaqa::trellis_scales::per_row>(state); }
// One scale per matrix (QTIP's): the unweighted walk, as before per-row scales.
void BM_trellis_quantize_per_matrix(benchmark::State& state) {
  trellis_quantize<yaqa::trellis_scales::per_matrix>(state);
}

// One unconstrained Viterbi pass over a tile (half of what a tail-biting tile costs), K = 2,
// L given at compile time (LC) or at run time (LC = 0, what the quantizer runs).
template <int LC>
void BM_trellis_pass(benchmark::State& state) {
  const int l = LC > 0 ? LC : static_cast<int>(state.range(0));
  const int v = static_cast<int>(state.range(1));
  const auto code = v == 1 ? yaqa::trellis_code::one_mad : yaqa::trellis_code::hyb;
  const auto tb = yaqa::detail::trellis_values<float>(code, l);
  const auto pass = yaqa::detail::trellis_pass_for<float, LC>(2, v);
  const auto x = yaqa::test::random_matrix<float>(256, 1, 4);
  std::vector<std::uint32_t> st(256);
  auto& ws = yaqa::detail::trellis_scratch<float>();
  for (auto _ : state) {
    const float c = pass(tb->v0.data(), tb->v1.empty() ? nullptr : tb->v1.data(), l, x.data(), nullptr, 256 / v, -1,
                         ws, st.data());
    benchmark::DoNotOptimize(c);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * 256);
}

// Decoding n x n weights from their streams (reconstruct: state extraction and the code recipe).
void BM_trellis_reconstruct(benchmark::State& state) {
  const yaqa::index n = state.range(0);
  const yaqa::trellis<float> q({.l = 16, .k = 2, .code = code_of(state.range(1))});
  yaqa::matrix<yaqa::trellis_bits> codes(n / 16, n / 16);
  auto g = yaqa::test::make_rng(5);
  for (yaqa::index i = 0; i < codes.size(); ++i)
    for (int wd = 0; wd < 8 * q.k(); ++wd) codes.data()[i].words[static_cast<std::size_t>(wd)] = static_cast<std::uint32_t>(g());
  const yaqa::trellis<float>::params_type p{std::vector<float>(static_cast<std::size_t>(n), 0.5f)};
  for (auto _ : state) {
    auto out = q.reconstruct(yaqa::view(std::as_const(codes)), p, 0);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n * n);
}

}  // namespace

// L = 12: 64 tiles per call; L = 16: 16 tiles. K = 2, 3, 4; 1MAD (V = 1) and HYB (V = 2); one
// thread, then all threads (last argument >= 1000: not in the smoke run).
BENCHMARK(BM_trellis_quantize)
    ->ArgsProduct({{12}, {2, 3, 4}, {0, 2}, {1, 0}, {16384}})
    ->ArgsProduct({{16}, {2, 3, 4}, {0, 2}, {1, 0}, {4096}})
    ->Args({16, 2, 1, 1, 4096})  // 3INST: V = 1 like 1MAD
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// Smoke size (all arguments < 1000): one tile at L = 10.
BENCHMARK(BM_trellis_quantize)->Args({10, 2, 2, 1, 256})->Unit(benchmark::kMillisecond)->UseRealTime();
// One scale per matrix (QTIP's): the unweighted walk, for comparison with the weighted one.
BENCHMARK(BM_trellis_quantize_per_matrix)
    ->ArgsProduct({{12}, {2, 4}, {0, 2}, {1}, {16384}})
    ->Args({16, 2, 2, 1, 4096})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// Compile-time against run-time L.
BENCHMARK_TEMPLATE(BM_trellis_pass, 12)->Args({12, 1})->Args({12, 2})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_trellis_pass, 16)->Args({16, 1})->Args({16, 2})->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_trellis_pass, 0)
    ->Args({12, 1})
    ->Args({12, 2})
    ->Args({16, 1})
    ->Args({16, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_trellis_reconstruct)->Args({256, 0})->Args({256, 2})->Unit(benchmark::kMillisecond)->UseRealTime();
