// Quantizer throughput: elements quantized per second (counter ELEMS), float, for an n x n matrix
// quantized in n x 128 column blocks with parameters fitted up front ("static groups"), one
// thread, as a rounding driver calls quantize() per block. BYTES counts the target read, the
// reconstruction written and the codes written. FOM: BM_quantize<e8p_2bit>/4096.
#include <cstdint>

#include <benchmark/benchmark.h>

#include <support/flops.hpp>
#include <support/generators.hpp>
#include <yaqa/quantizers/e8p.hpp>
#include <yaqa/quantizers/nonuniform_grid.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>

namespace {

struct int4_per_channel {
  static auto make() { return yaqa::int_grid<float>({.bits = 4}); }
};
struct int4_g128 {
  static auto make() { return yaqa::int_grid<float>({.bits = 4, .group_size = 128}); }
};
struct int3_mse {
  static auto make() { return yaqa::int_grid<float>({.bits = 3, .mse = true}); }
};
struct lloyd_max_4bit {
  static auto make() { return yaqa::lloyd_max_grid<float>({.bits = 4}); }
};
struct lloyd_max_2bit {
  static auto make() { return yaqa::lloyd_max_grid<float>({.bits = 2}); }
};
struct fp4_mx {
  static auto make() { return yaqa::fp4_e2m1<float>(); }
};
struct e8p_2bit {
  static auto make() { return yaqa::e8p<float>(); }
};

void set_elems(benchmark::State& state, double elems) {
  state.counters["ELEMS"] = benchmark::Counter(elems, benchmark::Counter::kIsIterationInvariantRate,
                                               benchmark::Counter::kIs1000);
}

template <class Kind>
void BM_quantize(benchmark::State& state) {
  const yaqa::index n = state.range(0);
  const yaqa::index block = 128;
  const auto q = Kind::make();
  using Q = decltype(q);
  using code = typename std::remove_cvref_t<Q>::code_type;
  constexpr yaqa::index ucols = std::remove_cvref_t<Q>::unit_cols;
  const auto w = yaqa::test::random_weights<float>(n, n, 1);
  const yaqa::index g = q.group_cols(n);
  std::vector<typename std::remove_cvref_t<Q>::params_type> params;
  for (yaqa::index c = 0; c < n; c += g) params.push_back(q.fit(yaqa::view(w).col_block(c, g)));
  yaqa::matrix<float> recon(n, n);
  yaqa::matrix<code> codes(n, n / ucols);
  for (auto _ : state) {
    for (yaqa::index c0 = 0; c0 < n; c0 += block)
      for (yaqa::index c = c0; c < c0 + block;) {  // split the block at group boundaries
        const yaqa::index width = std::min(c0 + block - c, g - c % g);
        q.quantize(yaqa::view(w).col_block(c, width), params[std::size_t(c / g)], 0,
                   yaqa::view(recon).col_block(c, width), yaqa::view(codes).col_block(c / ucols, width / ucols));
        c += width;
      }
    benchmark::DoNotOptimize(recon.data());
    benchmark::DoNotOptimize(codes.data());
  }
  const double elems = double(n) * double(n);
  set_elems(state, elems);
  yaqa::bench::set_bytes(state, elems * (2 * sizeof(float)) + double(codes.size()) * sizeof(code));
}

// fit() of one n x 128 group (the GPTQ MSE search is the only expensive fit).
template <class Kind>
void BM_fit(benchmark::State& state) {
  const yaqa::index n = state.range(0);
  const auto q = Kind::make();
  const auto w = yaqa::test::random_weights<float>(n, 128, 2);
  for (auto _ : state) {
    auto p = q.fit(yaqa::view(w));
    benchmark::DoNotOptimize(p);
  }
  set_elems(state, double(n) * 128.0);
}

}  // namespace

#define YAQA_BENCH_QUANTIZE(kind) \
  BENCHMARK_TEMPLATE(BM_quantize, kind)->Arg(256)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime()
YAQA_BENCH_QUANTIZE(int4_per_channel);
YAQA_BENCH_QUANTIZE(int4_g128);
YAQA_BENCH_QUANTIZE(lloyd_max_2bit);
YAQA_BENCH_QUANTIZE(lloyd_max_4bit);
YAQA_BENCH_QUANTIZE(fp4_mx);
YAQA_BENCH_QUANTIZE(e8p_2bit);
BENCHMARK_TEMPLATE(BM_fit, int3_mse)->Arg(256)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_TEMPLATE(BM_fit, e8p_2bit)->Arg(256)->Arg(4096)->Unit(benchmark::kMillisecond)->UseRealTime();
