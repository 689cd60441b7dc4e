// A quantizer whose fit() returns something other than its params_type (here a bare scale) is
// rejected by the Quantizer concept; the conforming variant compiles. Also checks that the
// built-in quantizers satisfy the concept in a translation unit of their own.
#include <cstdint>

#include <yaqa/quantizers/e8p.hpp>
#include <yaqa/quantizers/nonuniform_grid.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>

struct scale_only_quantizer {
  using scalar_type = double;
  using code_type = std::int8_t;
  struct params_type {
    double scale = 1;
  };
  static constexpr yaqa::index unit_rows = 1;
  static constexpr yaqa::index unit_cols = 1;
  yaqa::index group_cols(yaqa::index n) const { return n; }
#if defined(YAQA_SHOULD_FAIL)
  double fit(yaqa::matrix_view<const double>) const { return 1.0; }  // not params_type
#else
  params_type fit(yaqa::matrix_view<const double>) const { return {}; }
#endif
  void quantize(yaqa::matrix_view<const double>, const params_type&, yaqa::index,
                yaqa::matrix_view<double>, yaqa::matrix_view<std::int8_t>) const {}
  double bits_per_weight() const { return 1.58; }
};

template <yaqa::Quantizer Q>
int use(const Q&) {
  return 0;
}

int main() {
  static_assert(yaqa::Quantizer<yaqa::int_grid<float>> && yaqa::Quantizer<yaqa::e8p<double>> &&
                yaqa::Quantizer<yaqa::lloyd_max_grid<float>> && yaqa::Quantizer<yaqa::fp4_e2m1<double>>);
  return use(scale_only_quantizer{});
}
