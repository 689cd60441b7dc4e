// yaqa-quantize: see cli.hpp and docs/cli.md.
#include <exception>
#include <iostream>

#include "cli.hpp"

int main(int argc, char** argv) {
  const yaqa::cli::parse_result p = yaqa::cli::parse_command_line(argc, argv);
  if (!p.opts) {
    (p.exit_code == 0 ? std::cout : std::cerr) << p.message;
    return p.exit_code;
  }
  try {
    yaqa::cli::run(*p.opts, std::cerr);
    return 0;
  } catch (const yaqa::error& e) {
    std::cerr << "error: " << e.what() << "\n";
  } catch (const std::bad_alloc&) {
    std::cerr << "error: yaqa-quantize: out of memory\n";
  } catch (const std::exception& e) {
    std::cerr << "error: yaqa-quantize: unexpected failure: " << e.what() << "\n";
  }
  return 1;
}
