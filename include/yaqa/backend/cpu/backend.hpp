#pragma once
//! \file
//! The CPU backend: Eigen kernels, parallelized with OpenMP over a partition that does not depend
//! on the thread count, so results are bit-identical for any number of threads.
#include <string_view>

#include <yaqa/core/memory_space.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace yaqa {

struct cpu_backend {
  using memory_space = host_space;
  static constexpr std::string_view name = "cpu";

  //! Threads to use; 0 means OpenMP's default (omp_get_max_threads()).
  int threads = 0;

  void synchronize() const {}

  //! The thread count this backend will actually use (1 without OpenMP).
  [[nodiscard]] int thread_count() const {
#if defined(_OPENMP)
    return threads > 0 ? threads : omp_get_max_threads();
#else
    return 1;
#endif
  }

  friend bool operator==(const cpu_backend&, const cpu_backend&) = default;
};

//! The backend algorithms use when none is given.
using default_backend = cpu_backend;

}  // namespace yaqa
