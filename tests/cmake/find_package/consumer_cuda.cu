// Built with nvcc against an installed yaqa::cuda: the CUDA umbrella compiles as C++20 and the
// backend type is usable (constructing it needs a device, so only when one exists).
#include <cstdio>

#include <yaqa/cuda.hpp>

static_assert(yaqa::Backend<yaqa::cuda_backend>);

int main() {
  if (!yaqa::cuda::device_usable()) {
    std::puts("no CUDA device; yaqa::cuda compiled and linked");
    return 0;
  }
  yaqa::cuda_backend b;
  b.synchronize();
  std::puts("cuda_backend created");
  return 0;
}
