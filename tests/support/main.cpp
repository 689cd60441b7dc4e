// Shared Catch2 main. In a test binary built with CUDA (YAQA_HAS_CUDA), [cuda] tests are excluded
// when no device is usable; a CUDA-only binary (YAQA_TEST_CUDA_ONLY) then exits with 77, which
// CTest maps to "skipped" (Catch2 2.13 has no SKIP and would report "passed").
#define CATCH_CONFIG_RUNNER
#include <Eigen/Core>
#include <catch2/catch.hpp>

#if defined(YAQA_HAS_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace yaqa::test {
bool cuda_device_usable() {
#if defined(YAQA_HAS_CUDA)
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0) {
    cudaGetLastError();  // clear the sticky error, if any
    return false;
  }
  cudaDeviceProp prop{};
  return cudaGetDeviceProperties(&prop, 0) == cudaSuccess;
#else
  return false;
#endif
}
}  // namespace yaqa::test

int main(int argc, char* argv[]) {
  // The tests' oracles are plain Eigen products, which Eigen runs on its own OpenMP team whose
  // threads spin at every barrier: under ctest -j2 on 2 cores two such tests starved each other
  // (a 0.9 s coordinate-descent test took 92 s). The library's heavy products split their work
  // themselves (backend/cpu/ops.hpp), so this changes mainly the oracles.
  Eigen::setNbThreads(1);
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  const bool usable = yaqa::test::cuda_device_usable();
#if defined(YAQA_TEST_CUDA_ONLY)
  if (!usable) {
    std::fputs("no usable CUDA device: skipping (exit 77)\n", stderr);
    return 77;
  }
#endif
  if (!usable) session.configData().testsOrTags.emplace_back("~[cuda]");
  if (!usable) session.useConfigData(session.configData());
  return session.run();
}
