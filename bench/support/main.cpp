// Shared Google Benchmark main: records the context every result needs to be compared
// (yaqa version, git sha, backend, threads, CPU model, Eigen version, compiler).
#include <fstream>
#include <string>
#include <thread>

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <yaqa/backend/cpu/backend.hpp>
#include <yaqa/core/config.hpp>

#if defined(YAQA_BENCH_CUDA)
#include <cuda_runtime_api.h>
#endif

#ifndef YAQA_GIT_SHA
#define YAQA_GIT_SHA "unknown"
#endif

namespace {
std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown";
}
}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("yaqa_version", yaqa::version_string);
  benchmark::AddCustomContext("git_sha", YAQA_GIT_SHA);
#if defined(YAQA_BENCH_CUDA)
  // yaqa-bench-cuda: the device, driver and runtime the numbers belong to.
  benchmark::AddCustomContext("backend", "cuda");
  int dev_count = 0, driver = 0, runtime = 0;
  cudaDeviceProp prop{};
  if (cudaGetDeviceCount(&dev_count) == cudaSuccess && dev_count > 0 &&
      cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    benchmark::AddCustomContext("cuda_device", prop.name);
  else
    benchmark::AddCustomContext("cuda_device", "none usable");
  cudaGetLastError();
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  benchmark::AddCustomContext("cuda_driver", std::to_string(driver));
  benchmark::AddCustomContext("cuda_runtime", std::to_string(runtime));
#else
  benchmark::AddCustomContext("backend", std::string(yaqa::cpu_backend::name));
#endif
  benchmark::AddCustomContext("threads", std::to_string(yaqa::cpu_backend{}.thread_count()));
  benchmark::AddCustomContext("cpu_model", cpu_model());
  benchmark::AddCustomContext("eigen_version", std::to_string(EIGEN_WORLD_VERSION) + "." +
                                                   std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                                   std::to_string(EIGEN_MINOR_VERSION));
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
#if defined(__VERSION__)
  benchmark::AddCustomContext("compiler", __VERSION__);
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
