#pragma once
// Checks of the K-quants with a scale and a min per sub-block (Q2_K, Q4_K, Q5_K) against naive
// references: brute-force nearest codes, the transcribed llama.cpp scale fit, and the benefit of
// the importance-weighted fit.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <catch2/catch.hpp>

#include <gguf/gguf_checks.hpp>
#include <gguf/k_quant_reference.hpp>
#include <yaqa/rounding/rtn.hpp>

namespace yaqa::test {

//! The value of code q under row r of p, computed naively (double product of the float fields,
//! rounded to float once: exact, since both factors have few significant bits).
inline float k_naive_value(const gguf_scale_min_params& p, std::size_t r, int q) {
  const float d1 = f16_to_float(p.d[r]) * float(p.sc[r]);
  const float m1 = f16_to_float(p.dmin[r]) * float(p.m[r]);
  return float(double(d1) * q) - m1;
}

//! Every code quantize() picks is a nearest level (brute force over all 2^bits codes), on a
//! strided sub-range target starting at row row0 of one group, and the recon is that level.
template <class Q>
void check_k_nearest_codes(const Q& q, const matrix<typename Q::scalar_type>& w, int bits) {
  using T = typename Q::scalar_type;
  const index m = w.rows(), n = w.cols(), g = q.group_cols(n);
  const auto params = q.fit_all(view(w));
  REQUIRE(params.size() == static_cast<std::size_t>(n / g));
  // Perturbed targets (not the fitted data): as error feedback hands them over.
  std::mt19937_64 rng(77);
  std::normal_distribution<double> nd(0, 1);
  index checked = 0, off = 0;
  for (index grp = 0; grp < n / g; grp += 3) {
    const auto& p = params[static_cast<std::size_t>(grp)];
    const index row0 = m > 2 ? 1 : 0, rows = m - row0;
    const index c0 = grp * g + 1, cols = g - 2;  // a column sub-range of the group
    matrix<T> t = w.block(row0, c0, rows, cols);
    for (index j = 0; j < cols; ++j)
      for (index i = 0; i < rows; ++i) t(i, j) += T(0.3 * std::abs(double(w(i + row0, c0 + j))) * nd(rng));
    matrix<T> recon(rows, cols);
    matrix<std::uint8_t> codes(rows, cols);
    q.quantize(view(t), p, row0, view(recon), view(codes));
    for (index j = 0; j < cols; ++j)
      for (index i = 0; i < rows; ++i) {
        const auto r = static_cast<std::size_t>(row0 + i);
        const double x = double(t(i, j));
        const int c = codes(i, j);
        REQUIRE(c < (1 << bits));
        double best = std::numeric_limits<double>::infinity();
        for (int k = 0; k < (1 << bits); ++k) best = std::min(best, std::abs(x - double(k_naive_value(p, r, k))));
        const double mine = std::abs(x - double(k_naive_value(p, r, c)));
        const double scale = std::abs(double(p.scale[r])) + std::abs(double(p.min[r]));
        // The quotient (x + min) / scale rounds once more than the distance: ties may go either way.
        const bool ok = mine <= best + 1e-5 * scale + 1e-30;
        off += !ok;
        CHECK(T(k_naive_value(p, r, c)) == recon(i, j));
        ++checked;
      }
  }
  CHECK(off == 0);
  CHECK(checked > 0);
}

//! fit_all's fields equal the transcribed reference fit on every super-block of w.
template <class Q, class Ref>
void check_k_fit_matches_reference(const Q& q, const matrix<typename Q::scalar_type>& w, const Ref& ref) {
  const index m = w.rows(), n = w.cols(), g = q.group_cols(n), spb = 256 / g;
  const auto params = q.fit_all(view(w));
  const auto& imp = q.options().importance;
  index mismatches = 0;
  for (index i = 0; i < m; ++i)
    for (index b = 0; b < n / 256; ++b) {
      std::vector<float> x(256);
      for (index k = 0; k < 256; ++k) x[static_cast<std::size_t>(k)] = float(w(i, b * 256 + k));
      const kref::block_fit f = ref(x.data(), imp.empty() ? nullptr : imp.data() + b * 256);
      const auto r = static_cast<std::size_t>(i);
      for (index k = 0; k < spb; ++k) {
        const auto& p = params[static_cast<std::size_t>(b * spb + k)];
        const bool same = p.d[r] == f.d && p.dmin[r] == f.dmin && int(p.sc[r]) == f.sc[k] && int(p.m[r]) == f.m[k];
        if (!same) {
          UNSCOPED_INFO("row " << i << " super-block " << b << " sub " << k << ": d " << p.d[r] << "/" << f.d
                                << " dmin " << p.dmin[r] << "/" << f.dmin << " sc " << int(p.sc[r]) << "/"
                                << f.sc[k] << " m " << int(p.m[r]) << "/" << f.m[k]);
        }
        mismatches += !same;
        CHECK(p.scale[r] == f16_to_float(f.d) * float(f.sc[k]));
        CHECK(p.min[r] == f16_to_float(f.dmin) * float(f.m[k]));
      }
    }
  CHECK(mismatches == 0);
}

//! Averaged over seeds, the importance-weighted error sum_ij imp_j (w - what)^2 of RTN with the
//! importance fit is below that of the uniform fit.
template <template <class> class QT>
void check_k_importance_helps(index rows, index cols) {
  double with = 0, without = 0;
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    const matrix<float> w = gguf_test_weights<float>(rows, cols, 100 + seed);
    gguf_quant_options o;
    o.importance = gguf_test_importance(cols, 200 + seed);
    const QT<float> qi(o), qu;
    const auto ri = rtn(cpu_backend{}, qi, view(w));
    const auto ru = rtn(cpu_backend{}, qu, view(w));
    for (index j = 0; j < cols; ++j) {
      const double s = o.importance[static_cast<std::size_t>(j)];
      with += s * (ri.weights.col(j) - w.col(j)).template cast<double>().squaredNorm();
      without += s * (ru.weights.col(j) - w.col(j)).template cast<double>().squaredNorm();
    }
  }
  INFO("importance-weighted error: importance fit " << with << ", uniform fit " << without);
  CHECK(with < without);
}

}  // namespace yaqa::test
