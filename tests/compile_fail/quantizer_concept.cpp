// A type missing quantize() must be rejected by the Quantizer concept with a readable
// "constraints not satisfied" diagnostic; the conforming variant compiles.
#include <cstdint>

#include <yaqa/quantizers/concepts.hpp>

struct my_quantizer {
  using scalar_type = float;
  using code_type = std::uint8_t;
  struct params_type {};
  static constexpr yaqa::index unit_rows = 1;
  static constexpr yaqa::index unit_cols = 1;
  yaqa::index group_cols(yaqa::index n) const { return n; }
  params_type fit(yaqa::matrix_view<const float>) const { return {}; }
#if !defined(YAQA_SHOULD_FAIL)
  void quantize(yaqa::matrix_view<const float>, const params_type&, yaqa::index,
                yaqa::matrix_view<float>, yaqa::matrix_view<std::uint8_t>) const {}
#endif
  double bits_per_weight() const { return 2.0; }
};

template <yaqa::Quantizer Q>
void use(const Q&) {}

int main() { use(my_quantizer{}); }
