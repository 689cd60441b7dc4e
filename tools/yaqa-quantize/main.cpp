// yaqa-quantize: see cli.hpp and docs/cli.md.
#include <cstdlib>
#include <exception>
#include <iostream>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "cli.hpp"

namespace {

//! Big matrices from the heap, kept for reuse: glibc serves every allocation over 32 MB with a
//! fresh mmap and unmaps it on free, so each n x n temporary of every stage and layer pays its
//! page faults again (about 0.45 ms per MB on the VMs measured). Without mmap and trimming the
//! freed blocks are reused: a 4096 x 4096 YAQA run 3.98 -> 3.50 s, five mixed layers 10.2 ->
//! 9.1 s, for 3-6 % more peak RSS (docs/benchmarks.md, "Whole CLI run"). A process started with
//! GLIBC_TUNABLES set keeps glibc's settings (its defaults and the user's tunables).
void tune_allocator() {
#if defined(__GLIBC__)
  if (std::getenv("GLIBC_TUNABLES") != nullptr) return;
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

int run_main(const yaqa::cli::options& o) {
  try {
    yaqa::cli::run(o, std::cerr);
    return 0;
  } catch (const yaqa::error& e) {
    // Under mpiexec every rank fails with the same message: rank 0 prints it.
    if (yaqa::cli::parallel_rank() == 0) std::cerr << "error: " << e.what() << "\n";
  } catch (const std::bad_alloc&) {
    std::cerr << "error: yaqa-quantize: out of memory\n";
  } catch (const std::exception& e) {
    if (yaqa::cli::parallel_rank() == 0) std::cerr << "error: yaqa-quantize: unexpected failure: " << e.what() << "\n";
  }
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  tune_allocator();
  const yaqa::cli::parse_result p = yaqa::cli::parse_command_line(argc, argv);
  if (!p.opts) {
    (p.exit_code == 0 ? std::cout : std::cerr) << p.message;
    return p.exit_code;
  }
  const int rc = run_main(*p.opts);
  yaqa::cli::finish_parallel();
  return rc;
}
