#pragma once
// Type lists for TEMPLATE_LIST_TEST_CASE: one test body instantiated per backend and scalar.
#include <tuple>

#include <yaqa/backend/cpu/backend.hpp>
#include <yaqa/backend/cpu/ops.hpp>

namespace yaqa::test {

template <class Backend, class T>
struct tcase {
  using backend = Backend;
  using scalar = T;
};

using cpu_cases = std::tuple<tcase<cpu_backend, float>, tcase<cpu_backend, double>>;
using scalar_types = std::tuple<float, double>;

}  // namespace yaqa::test
