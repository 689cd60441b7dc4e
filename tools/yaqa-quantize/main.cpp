// yaqa-quantize: see cli.hpp and docs/cli.md.
#include <exception>
#include <iostream>

#include "cli.hpp"

namespace {

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
  const yaqa::cli::parse_result p = yaqa::cli::parse_command_line(argc, argv);
  if (!p.opts) {
    (p.exit_code == 0 ? std::cout : std::cerr) << p.message;
    return p.exit_code;
  }
  const int rc = run_main(*p.opts);
  yaqa::cli::finish_parallel();
  return rc;
}
