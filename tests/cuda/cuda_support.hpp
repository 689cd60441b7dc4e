#pragma once
// Helpers of the CUDA tests: one backend per test binary, host <-> device round trips, and the
// CPU backend as the oracle (itself tested against naive references in tests/core).
#include <cstdint>

#include <yaqa/cuda.hpp>

#include <support/approx.hpp>  // mismatch_fraction

namespace yaqa::test {

//! The backend every [cuda] case uses (created on first use: only when a device is usable).
inline const cuda_backend& gpu() {
  static const cuda_backend b;
  return b;
}

template <class T>
cuda::device_matrix<T> upload(const matrix<T>& h) {
  return cuda::to_device(gpu(), view(h));
}

template <class T>
matrix<T> download(const cuda::device_matrix<T>& d) {
  return cuda::to_host(gpu(), d);
}

//! Relative-Frobenius tolerance of a device result against the CPU backend in scalar T.
template <class T>
constexpr double gpu_tol() {
  return sizeof(T) == 4 ? 1e-5 : 1e-12;
}

}  // namespace yaqa::test
