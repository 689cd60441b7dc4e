// Using backend_ops for a backend whose ops header was not included is a hard error carrying the
// guard message ("no backend_ops<B>: include the backend's header"), never a silent mismatch.
#include <string_view>

#include <yaqa/backend/backend.hpp>
#include <yaqa/backend/cpu/ops.hpp>

struct my_backend {
  using memory_space = yaqa::host_space;
  static constexpr std::string_view name = "mine";
  void synchronize() const {}
};
static_assert(yaqa::Backend<my_backend>);

int main() {
#if defined(YAQA_SHOULD_FAIL)
  using ops = yaqa::backend_ops<my_backend>;
  return sizeof(ops) > 0 ? 0 : 1;
#else
  static_assert(yaqa::BackendFor<yaqa::cpu_backend, float>);
  return 0;
#endif
}
