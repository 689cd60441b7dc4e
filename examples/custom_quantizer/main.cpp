// Writing your own quantizer: a ternary grid {-s, 0, +s} per row, defined entirely in this file
// (nothing in include/ knows about it), checked against yaqa::Quantizer at compile time and used
// end to end with yaqa::rtn on a random layer, next to two built-in 2-bit quantizers.
//
// Output: one line per quantizer (bits per weight, relative Frobenius error), then
// "custom_quantizer: OK" when every self-check passed.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <yaqa/quantizers/nonuniform_grid.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/rounding/rtn.hpp>
#include <yaqa/yaqa.hpp>

namespace {

//! Ternary weights with one scale per row (Ternary Weight Networks' fit): threshold
//! delta = 0.7 * mean|x|, s = mean of |x| over the entries above delta. Rounding is to the
//! nearest of {-s, 0, +s}, so it stays the best choice when a rounding algorithm hands us targets
//! that already carry error feedback.
template <class T>
class ternary {
 public:
  // --- what the Quantizer concept asks for ---------------------------------------------------
  using scalar_type = T;
  using code_type = std::int8_t;  // -1, 0, +1
  struct params_type {
    std::vector<T> scale;  // one per row of the fitted region
  };
  static constexpr yaqa::index unit_rows = 1;  // a code covers one element
  static constexpr yaqa::index unit_cols = 1;

  //! One parameter group per row: the whole row shares s.
  yaqa::index group_cols(yaqa::index n) const { return n; }

  params_type fit(yaqa::matrix_view<const T> w) const {
    yaqa::check_finite("ternary::fit", "w", w);
    params_type p;
    p.scale.assign(static_cast<std::size_t>(w.rows), T(0));
    for (yaqa::index i = 0; i < w.rows; ++i) {
      double mean_abs = 0;
      for (yaqa::index j = 0; j < w.cols; ++j) mean_abs += std::abs(double(w(i, j)));
      const double delta = 0.7 * mean_abs / double(w.cols);
      double sum = 0;
      int count = 0;
      for (yaqa::index j = 0; j < w.cols; ++j)
        if (std::abs(double(w(i, j))) > delta) {
          sum += std::abs(double(w(i, j)));
          ++count;
        }
      p.scale[static_cast<std::size_t>(i)] = count > 0 ? T(sum / count) : T(0);
    }
    return p;
  }

  //! const and free of shared mutable state: rounding drivers call it from several threads.
  //! row0 is the row of W where target starts (params hold every row of the fitted region).
  void quantize(yaqa::matrix_view<const T> target, const params_type& p, yaqa::index row0,
                yaqa::matrix_view<T> recon, yaqa::matrix_view<code_type> codes) const {
    for (yaqa::index j = 0; j < target.cols; ++j)
      for (yaqa::index i = 0; i < target.rows; ++i) {
        const T s = p.scale[static_cast<std::size_t>(row0 + i)];
        const T x = target(i, j);
        if (!std::isfinite(x)) throw yaqa::non_finite_error("ternary::quantize: NaN/Inf in 'target'");
        const code_type c = x > s / 2 ? 1 : (x < -s / 2 ? -1 : 0);
        codes(i, j) = c;
        recon(i, j) = s * T(c);
      }
  }

  double bits_per_weight() const { return std::log2(3.0); }

  // --- optional, but lets users (and the checks below) decode stored codes ------------------
  yaqa::matrix<T> reconstruct(yaqa::matrix_view<const code_type> codes, const params_type& p,
                              yaqa::index row0) const {
    yaqa::matrix<T> out(codes.rows, codes.cols);
    for (yaqa::index j = 0; j < codes.cols; ++j)
      for (yaqa::index i = 0; i < codes.rows; ++i)
        out(i, j) = p.scale[static_cast<std::size_t>(row0 + i)] * T(codes(i, j));
    return out;
  }
};

static_assert(yaqa::Quantizer<ternary<float>>, "ternary<float> must model yaqa::Quantizer");
static_assert(yaqa::Quantizer<ternary<double>>);

int failures = 0;
void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("check FAILED: %s\n", what);
    ++failures;
  }
}

template <class Q>
double relative_error(const Q& q, const yaqa::matrix<float>& w, const char* name) {
  const auto r = yaqa::rtn(q, yaqa::view(w));  // fit per group + quantize every row
  const double err = double((r.weights - w).norm() / w.norm());
  std::printf("  %-22s %6.3f bits/weight   relative error %.3f\n", name, q.bits_per_weight(), err);
  return err;
}

}  // namespace

int main() {
  // A 256 x 512 layer with N(0, 1/512) weights (what a layer looks like after incoherence
  // processing: Gaussian-like rows).
  const yaqa::index m = 256, n = 512;
  std::mt19937_64 rng(2024);
  std::normal_distribution<double> nd(0.0, 1.0 / std::sqrt(double(n)));
  yaqa::matrix<float> w(m, n);
  for (yaqa::index j = 0; j < n; ++j)
    for (yaqa::index i = 0; i < m; ++i) w(i, j) = float(nd(rng));

  std::printf("Round-to-nearest of a %ldx%ld Gaussian layer:\n", long(m), long(n));
  const ternary<float> t;
  const double e_ter = relative_error(t, w, "ternary (this file)");
  const double e_int = relative_error(yaqa::int_grid<float>({.bits = 2, .mse = true}), w, "int_grid 2-bit + MSE");
  const double e_llm = relative_error(yaqa::lloyd_max_grid<float>({.bits = 2}), w, "lloyd_max_grid 2-bit");

  // Self-checks. Gaussian theory: the best 3-level quantizer has relative MSE 0.190 (error 0.436);
  // the 2-bit Lloyd-Max grid 0.1175 (error 0.343). Our ternary fit is close to the optimum.
  expect(e_ter > 0.42 && e_ter < 0.46, "ternary error near the Gaussian optimum 0.436");
  expect(std::abs(e_llm - std::sqrt(yaqa::gaussian_lloyd_max(2).mse)) < 0.01, "Lloyd-Max error ~ 0.343");
  expect(e_llm < e_int && e_llm < e_ter, "Lloyd-Max beats the uniform and ternary grids");
  const auto r = yaqa::rtn(t, yaqa::view(w));
  bool codes_ok = true;
  for (yaqa::index j = 0; j < n; ++j)
    for (yaqa::index i = 0; i < m; ++i) codes_ok = codes_ok && r.codes(i, j) >= -1 && r.codes(i, j) <= 1;
  expect(codes_ok, "codes are -1, 0 or +1");
  expect(t.reconstruct(yaqa::view(std::as_const(r.codes)), r.params.at(0), 0) == r.weights,
         "decode(codes) equals the reconstruction");
  const double zeros = double((r.codes.array() == 0).count()) / double(m * n);
  std::printf("  ternary: %.1f%% of the weights are 0 (Gaussian theory at this threshold: ~45%%)\n",
              100.0 * zeros);
  expect(zeros > 0.40 && zeros < 0.50, "fraction of zeros");

  if (failures == 0) std::printf("custom_quantizer: OK\n");
  return failures == 0 ? 0 : 1;
}
