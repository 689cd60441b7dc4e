// Built against an *installed* yaqa through find_package(yaqa): uses the umbrella header and a
// backend op, and checks the answer.
#include <cstdio>

#include <yaqa/yaqa.hpp>

int main() {
  yaqa::matrix<double> x(3, 2), h = yaqa::matrix<double>::Zero(2, 2);
  x << 1, 2, 3, 4, 5, 6;
  yaqa::backend_ops<yaqa::cpu_backend>::syrk_accumulate<double>(yaqa::cpu_backend{}, yaqa::view(std::as_const(x)), 1.0,
                                                                 yaqa::view(h));
  std::printf("yaqa %s: X^T X = [%g %g; %g %g]\n", yaqa::version_string, h(0, 0), h(0, 1), h(1, 0), h(1, 1));
  return (h(0, 0) == 35 && h(0, 1) == 44 && h(1, 1) == 56) ? 0 : 1;
}
