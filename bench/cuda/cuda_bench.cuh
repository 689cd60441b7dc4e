#pragma once
// Helpers of the CUDA benchmarks: cudaEvent timing of work queued on a backend's stream (reported
// through UseManualTime), a device-usable guard, and seeded device-side fills (no host round trip
// for the multi-GiB operands of the large cases).
#include <cstdint>

#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <yaqa/cuda.hpp>

namespace yaqa::bench {

//! Times the work queued on a stream between begin() and end() with CUDA events.
class event_timer {
 public:
  event_timer() {
    cuda::check(cudaEventCreate(&start_), "event_timer: cudaEventCreate");
    cuda::check(cudaEventCreate(&stop_), "event_timer: cudaEventCreate");
  }
  ~event_timer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  event_timer(const event_timer&) = delete;
  event_timer& operator=(const event_timer&) = delete;

  void begin(cuda::stream_t s) { cuda::check(cudaEventRecord(start_, s), "event_timer: record"); }
  //! Seconds between begin() and now on stream s (waits for the stream's work to finish).
  double end(cuda::stream_t s) {
    cuda::check(cudaEventRecord(stop_, s), "event_timer: record");
    cuda::check(cudaEventSynchronize(stop_), "event_timer: synchronize");
    float ms = 0;
    cuda::check(cudaEventElapsedTime(&ms, start_, stop_), "event_timer: elapsed");
    return double(ms) * 1e-3;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

//! False (and the benchmark marked as errored) when no CUDA device can be used.
inline bool require_device(benchmark::State& state) {
  if (cuda::device_usable()) return true;
  state.SkipWithError("no usable CUDA device");
  return false;
}

namespace detail {

__device__ inline double hash_uniform(std::uint64_t seed, std::uint64_t i) {  // [-1, 1)
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ull + i + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return double(z >> 11) * 0x1.0p-52 - 1.0;
}

//! kind 0: uniform(-scale, scale) everywhere. kind 1: unit block-lower-triangular with `block`
//! blocks: identity diagonal blocks, uniform(-scale, scale) strictly below them, zero above.
template <class T>
__global__ void fill_kernel(matrix_view<T, cuda::device_space> x, std::uint64_t seed, double scale, int kind,
                            index block) {
  const index total = x.rows * x.cols;
  for (index e = index(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += index(gridDim.x) * blockDim.x) {
    const index i = e % x.rows, j = e / x.rows;
    double v = scale * hash_uniform(seed, std::uint64_t(e));
    if (kind == 1) {
      const index bi = i / block, bj = j / block;
      v = bi > bj ? v : (i == j ? 1.0 : 0.0);
    }
    x.data[i + j * x.ld] = T(v);
  }
}

}  // namespace detail

template <class T>
void fill_uniform(const cuda_backend& b, cuda::device_view<T> x, std::uint64_t seed, double scale) {
  detail::fill_kernel<T><<<cuda::detail::blocks_for(x.size()), 256, 0, b.stream()>>>(x, seed, scale, 0, 1);
  cuda::detail::check_launch("fill_uniform");
}

template <class T>
void fill_unit_block_lower(const cuda_backend& b, cuda::device_view<T> x, index block, std::uint64_t seed,
                           double scale) {
  detail::fill_kernel<T><<<cuda::detail::blocks_for(x.size()), 256, 0, b.stream()>>>(x, seed, scale, 1, block);
  cuda::detail::check_launch("fill_unit_block_lower");
}

}  // namespace yaqa::bench
