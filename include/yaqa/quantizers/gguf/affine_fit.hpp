#pragma once
//! \file
//! The scale + min searches of llama.cpp's K-quants (Q2_K, Q4_K, Q5_K), shared by their
//! quantizers, and the per-row parameter record those quantizers use.
//!
//! The searches follow llama.cpp's published reference algorithms (ggml-quants.c):
//! - affine_search (make_qkx2_quants / make_qkx3_quants): codes l in [0, nmax] for a block x with
//!   x ~ scale * l - min (min >= 0): start from the block's range, then try nstep + 1 stretched
//!   grids iscale = (rmin + rdelta * is + nmax) / (max - min), each followed by the weighted
//!   least-squares (scale, min) for its codes, keeping the lowest weighted error (squared or
//!   absolute). The "qkx3" variant differs only in guarding its codes against a min that drifted
//!   near the max (same results on ordinary data).
//! - positive_scale_search (make_qp_quants): the sub-block scales (or mins) of a super-block,
//!   all >= 0, quantized to integers in [0, nmax] against one scale: a small stretch search over
//!   the initial grid, then up to 5 rounds of coordinate moves that raise the weighted
//!   correlation, finishing with the least-squares scale.
//! Arithmetic is in float, in the reference's operation order, with every product that feeds an
//! addition rounded to float first (detail::round_to_type): the results are the same for every
//! compiler and -ffp-contract setting (those of llama.cpp built without FMA contraction).
//! Rounding to integers is llama.cpp's nearest_int (round half to even).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <yaqa/core/config.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/io/float16.hpp>
#include <yaqa/quantizers/common.hpp>
#include <yaqa/quantizers/gguf/common.hpp>

namespace yaqa {

//! Per-row parameters of one K-quant sub-block (Q2_K, Q4_K, Q5_K): the effective scale and min
//! exactly as the format's dequantization computes them in float, value = scale * q - min with
//!   scale = fp16(d) * sc,  min = fp16(dmin) * m,
//! and the raw fields the block stores: the fp16 bits of the super-block's d and dmin (the same
//! for all sub-blocks of a super-block) and the sub-block's integer scale sc and min m (6 bits
//! for Q4_K / Q5_K, 4 bits for Q2_K).
struct gguf_scale_min_params {
  std::vector<float> scale;          //!< fp16(d) * sc, per row
  std::vector<float> min;            //!< fp16(dmin) * m, per row
  std::vector<std::uint16_t> d;      //!< fp16 bits of the super-block scale
  std::vector<std::uint16_t> dmin;   //!< fp16 bits of the super-block min scale
  std::vector<std::uint8_t> sc;      //!< the sub-block's integer scale
  std::vector<std::uint8_t> m;       //!< the sub-block's integer min
  [[nodiscard]] index rows() const { return static_cast<index>(scale.size()); }
  void resize(index rows) {
    const auto r = static_cast<std::size_t>(rows);
    scale.resize(r);
    min.resize(r);
    d.resize(r);
    dmin.resize(r);
    sc.resize(r);
    m.resize(r);
  }
};

namespace detail {

//! make_qkx2_quants (qkx3 = false) / make_qkx3_quants (qkx3 = true) of ggml-quants.c: returns the
//! scale, writes the codes of the best fit to L and -min (>= 0) to the_min. weights: n entries.
inline float affine_search(int n, int nmax, const float* x, const float* weights, std::uint8_t* L,
                           float* the_min, std::uint8_t* Laux, float rmin, float rdelta, int nstep,
                           bool use_mad, bool qkx3) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = gguf_mul(sum_w, x[0]);
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += gguf_mul(w, x[i]);
  }
  if (min > 0) min = 0;
  if (qkx3 ? max <= min : max == min) {
    std::fill(L, L + n, std::uint8_t{0});
    *the_min = -min;
    return 0.f;
  }
  const float fmax_l = static_cast<float>(nmax);
  // Codes of iscale * (x - min), clamped to [0, nmax] before rounding (the reference's qkx3 guard
  // against Inf / NaN; the same codes as its clamp after rounding for finite values).
  auto code = [&](float iscale, float xi, float mn) {
    const float v = iscale * (xi - mn);
    return v > 0 ? gguf_nearest_int(std::min(v, fmax_l)) : 0;
  };
  float iscale = fmax_l / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<std::uint8_t>(code(iscale, x[i], min));
    float diff = gguf_mul(scale, float(L[i])) + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += gguf_mul(weights[i], diff);
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + gguf_mul(rdelta, float(is)) + fmax_l) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = code(iscale, x[i], min);
      Laux[i] = static_cast<std::uint8_t>(l);
      const float w = weights[i];
      sum_l += gguf_mul(w, float(l));
      sum_l2 += gguf_mul(w * float(l), float(l));
      sum_xl += gguf_mul(w * float(l), x[i]);
    }
    const float D = gguf_mul(sum_w, sum_l2) - gguf_mul(sum_l, sum_l);
    if (D > 0) {
      float this_scale = (gguf_mul(sum_w, sum_xl) - gguf_mul(sum_x, sum_l)) / D;
      float this_min = (gguf_mul(sum_l2, sum_x) - gguf_mul(sum_l, sum_xl)) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = gguf_mul(this_scale, float(Laux[i])) + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += gguf_mul(weights[i], diff);
      }
      if (cur_error < best_error) {
        std::copy(Laux, Laux + n, L);
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

//! make_qp_quants of ggml-quants.c: x >= 0 (n sub-block scales or mins) quantized to integers
//! L in [0, nmax] against one returned scale, weighted by quant_weights. Codes are stored in
//! bytes as the reference stores them.
inline float positive_scale_search(int n, int nmax, const float* x, std::uint8_t* L, const float* quant_weights) {
  constexpr float group_max_eps = 1e-15f;  // GROUP_MAX_EPS
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < group_max_eps) {
    std::fill(L, L + n, std::uint8_t{0});
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::uint8_t>(gguf_nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - gguf_mul(scale, float(L[i]));
    best_mse += gguf_mul(quant_weights[i] * diff, diff);
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (gguf_mul(0.1f, float(is)) + float(nmax)) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, gguf_nearest_int(iscale_is * x[i]));
      const float diff = x[i] - gguf_mul(scale_is, float(l));
      mse += gguf_mul(quant_weights[i] * diff, diff);
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, gguf_nearest_int(iscale * x[i]));
    L[i] = static_cast<std::uint8_t>(l);
    const float w = quant_weights[i];
    sumlx += gguf_mul(w * x[i], float(l));
    suml2 += gguf_mul(w * float(l), float(l));
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      float slx = sumlx - gguf_mul(w * x[i], float(L[i]));
      float sl2 = suml2 - gguf_mul(w * float(L[i]), float(L[i]));
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, gguf_nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += gguf_mul(w * x[i], float(new_l));
          sl2 += gguf_mul(w * float(new_l), float(new_l));
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<std::uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}


//! The hot loop shared by the K-quant quantizers: codes nearest_int((x + min) / scale) clamped
//! to [0, maxq] (code 0 where scale == 0), recon = the format's float dequantization
//! round(scale * q) - min, then cast to T. Returns false when the target holds NaN / Inf.
template <class T>
bool scale_min_quantize(matrix_view<const T> target, const gguf_scale_min_params& p, index row0, int maxq,
                        matrix_view<T> recon, matrix_view<std::uint8_t> codes) {
  const float* sc = p.scale.data() + row0;
  const float* mn = p.min.data() + row0;
  const T tmax = static_cast<T>(maxq);
  int bad = 0;
  for (index j = 0; j < target.cols; ++j) {
    const T* x = target.data + j * target.ld;
    T* out = recon.data + j * recon.ld;
    std::uint8_t* c = codes.data + j * codes.ld;
    for (index i = 0; i < target.rows; ++i) {
      const T xv = x[i];
      bad |= !finite_flag(xv);
      T v = (xv + static_cast<T>(mn[i])) / static_cast<T>(sc[i]);
      v = v >= T(0) ? v : T(0);  // also NaN -> 0
      v = v <= tmax ? v : tmax;
      const int q = sc[i] != 0.f ? static_cast<int>(std::nearbyint(v)) : 0;
      out[i] = static_cast<T>(round_to_type(sc[i] * static_cast<float>(q)) - mn[i]);
      c[i] = static_cast<std::uint8_t>(q);
    }
  }
  return bad == 0;
}

//! reconstruct() of the K-quant quantizers: round(scale * code) - min in float, cast to T.
template <class T>
matrix<T> scale_min_reconstruct(matrix_view<const std::uint8_t> codes, const gguf_scale_min_params& p, index row0) {
  matrix<T> out(codes.rows, codes.cols);
  for (index j = 0; j < codes.cols; ++j)
    for (index i = 0; i < codes.rows; ++i) {
      const auto r = static_cast<std::size_t>(row0 + i);
      out(i, j) = static_cast<T>(round_to_type(p.scale[r] * static_cast<float>(codes(i, j))) - p.min[r]);
    }
  return out;
}

//! Fills p's row r from the raw fields (scale and min computed as the dequantization does).
inline void set_scale_min_row(gguf_scale_min_params& p, index r, std::uint16_t d, std::uint16_t dmin,
                              std::uint8_t sc, std::uint8_t m) {
  const auto k = static_cast<std::size_t>(r);
  p.d[k] = d;
  p.dmin[k] = dmin;
  p.sc[k] = sc;
  p.m[k] = m;
  p.scale[k] = f16_to_float(d) * static_cast<float>(sc);
  p.min[k] = f16_to_float(dmin) * static_cast<float>(m);
}

//! One fitted super-block of a K-quant with scale and min: the fp16 bits of d and dmin and the
//! integer scale and min of each sub-block (8 used by Q4_K / Q5_K, 16 by Q2_K).
struct k_superblock {
  std::uint16_t d = 0;
  std::uint16_t dmin = 0;
  std::array<std::uint8_t, 16> sc{};
  std::array<std::uint8_t, 16> m{};
};


//! The Quantizer machinery shared by the K-quants with a scale and a min per sub-block (Q2_K,
//! Q4_K, Q5_K). F describes the format:
//! - `F::type`, `F::bits` (code bits), `F::sub` (sub-block width), `F::sc_max` (largest
//!   sub-block scale / min: 63 or 15), `F::name` ("yaqa::gguf_q4_k"), `F::quantize_what`
//!   ("yaqa::gguf_q4_k::quantize");
//! - `F::fit_superblock(x, imp, out)`: llama.cpp's fit of one super-block (x: 256 floats; imp:
//!   its 256 importance values, or null for the reference fit without an imatrix);
//! - `F::encode_block(sb, codes, out)` / `F::decode_block(in, out)`: one block's bytes.
template <Scalar T, class F>
class gguf_scale_min_quantizer {
 public:
  using scalar_type = T;
  using code_type = std::uint8_t;
  using params_type = gguf_scale_min_params;
  static constexpr index unit_rows = 1;
  static constexpr index unit_cols = 1;
  static constexpr ggml_type type = F::type;
  static constexpr index block_size = 256;

  explicit gguf_scale_min_quantizer(const gguf_quant_options& o = {}) : opt_(o) {}

  [[nodiscard]] const gguf_quant_options& options() const { return opt_; }
  [[nodiscard]] double bits_per_weight() const { return F::bits; }

  //! Exact bits of a rows x cols tensor: rows * cols / 256 blocks of the type's size.
  [[nodiscard]] std::size_t storage_bits(index rows, index cols) const {
    check_gguf_columns(what("storage_bits").c_str(), type, cols);
    return static_cast<std::size_t>(rows) * gguf_row_bytes(type, cols) * 8;
  }

  //! The sub-block width (the columns sharing one effective scale and min). Throws shape_error
  //! unless n is a positive multiple of 256.
  [[nodiscard]] index group_cols(index n) const {
    check_gguf_columns(what("group_cols").c_str(), type, n);
    return F::sub;
  }
  void validate(index n) const { (void)group_cols(n); }

  //! A lone sub-block is not a GGUF block: always throws invalid_argument (use fit_all).
  [[nodiscard]] params_type fit(matrix_view<const T> w) const {
    throw invalid_argument(concat(F::name, "::fit: got a ", w.rows, "x", w.cols, " region; ", ggml_traits(type).name,
                                  " fits the ", F::sub, "-column sub-block scales of each 256-column super-block "
                                  "together (and reads per-column importance): use fit_all(w) on the whole matrix"));
  }

  //! One params per sub-block of w (m x n, n a multiple of 256), fitted super-block by
  //! super-block in float as llama.cpp does (w rounded to float first). Throws shape_error on
  //! the width or the importance length, non_finite_error on NaN / Inf in w or a bad importance.
  [[nodiscard]] std::vector<params_type> fit_all(matrix_view<const T> w) const {
    const std::string what_s = what("fit_all");
    const char* w_what = what_s.c_str();
    check_gguf_columns(w_what, type, w.cols);
    check_finite(w_what, "w", w);
    check_importance(w_what, opt_.importance, w.cols);
    const index m = w.rows, n = w.cols, nb = n / block_size, spb = block_size / F::sub;
    if constexpr (!std::is_same_v<T, float>) {
      for (index j = 0; j < n; ++j)
        for (index i = 0; i < m; ++i)
          require<non_finite_error>(std::abs(w(i, j)) <= T(std::numeric_limits<float>::max()), w_what, ": w(", i,
                                    ", ", j, ") = ", w(i, j), " is beyond float's range (the fit runs in float)");
    }
    std::vector<params_type> p(static_cast<std::size_t>(n / F::sub));
    for (auto& g : p) g.resize(m);
    const float* imp = opt_.importance.empty() ? nullptr : opt_.importance.data();
    const bool parallel = m > 1 && double(m) * double(n) >= 65536.0;
    (void)parallel;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) if (parallel)
#endif
    for (index i = 0; i < m; ++i) {
      std::vector<float> x(static_cast<std::size_t>(n));
      for (index j = 0; j < n; ++j) x[static_cast<std::size_t>(j)] = static_cast<float>(w(i, j));
      for (index b = 0; b < nb; ++b) {
        k_superblock s;
        F::fit_superblock(x.data() + b * block_size, imp ? imp + b * block_size : nullptr, s);
        for (index k = 0; k < spb; ++k)
          set_scale_min_row(p[static_cast<std::size_t>(b * spb + k)], i, s.d, s.dmin, s.sc[static_cast<std::size_t>(k)],
                            s.m[static_cast<std::size_t>(k)]);
      }
    }
    // fp16 d / dmin overflow (|w| beyond about 65504 times the largest code): no usable block.
    for (index g = 0; g < n / F::sub; ++g)
      for (index i = 0; i < m; ++i) {
        const params_type& pg = p[static_cast<std::size_t>(g)];
        const auto r = static_cast<std::size_t>(i);
        require<non_finite_error>((pg.d[r] & 0x7c00u) != 0x7c00u && (pg.dmin[r] & 0x7c00u) != 0x7c00u, w_what,
                                  ": row ", i, ", columns [", g * F::sub, ", ", (g + 1) * F::sub, "): the super-block "
                                  "scale d or dmin overflows fp16; the weights are too large for ",
                                  ggml_traits(type).name);
      }
    return p;
  }

  //! With p held fixed: code = nearest_int((x + min) / scale) clamped to [0, 2^bits - 1] (0 where
  //! scale == 0), recon = the format's float dequantization round(scale * code) - min. target:
  //! rows [row0, ...) of the params' rows, any columns of one sub-block. Thread-safe.
  void quantize(matrix_view<const T> target, const params_type& p, index row0, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    check_quantize_args<1, 1>(F::quantize_what, target, row0, p.rows(), recon, codes);
    if (!scale_min_quantize(target, p, row0, (1 << F::bits) - 1, recon, codes))
      throw_non_finite_target(F::quantize_what, target);
  }

  //! The dequantized values of codes (rows [row0, ...) of the params' rows).
  [[nodiscard]] matrix<T> reconstruct(matrix_view<const code_type> codes, const params_type& p, index row0) const {
    check_reconstruct_args(what("reconstruct").c_str(), codes.rows, 1, row0, p.rows());
    return scale_min_reconstruct<T>(codes, p, row0);
  }

  //! codes (m x n) and params (n / sub-block groups, m rows each) -> m rows of n / 256 blocks.
  //! Throws shape_error on sizes, invalid_argument on a code or sub-block scale out of range or
  //! sub-blocks of one super-block with different d / dmin.
  void encode(matrix_view<const code_type> codes, const std::vector<params_type>& p, std::span<std::byte> out) const {
    const std::string what_s = what("encode");
    const char* e_what = what_s.c_str();
    const index m = codes.rows, n = codes.cols;
    check_gguf_encode(e_what, type, m, n, p.size(), static_cast<std::size_t>(n / F::sub), out.size());
    for (std::size_t g = 0; g < p.size(); ++g)
      require<shape_error>(p[g].rows() == m && p[g].min.size() == p[g].scale.size() &&
                               p[g].d.size() == p[g].scale.size() && p[g].dmin.size() == p[g].scale.size() &&
                               p[g].sc.size() == p[g].scale.size() && p[g].m.size() == p[g].scale.size(),
                           e_what, ": parameter group ", g, " has ", p[g].rows(),
                           " rows (or fields of different lengths); the codes have ", m);
    const index nb = n / block_size, spb = block_size / F::sub;
    const auto tsize = static_cast<std::size_t>(ggml_traits(type).type_size);
    const int maxq = (1 << F::bits) - 1;
    std::array<std::uint8_t, 256> q{};
    for (index i = 0; i < m; ++i)
      for (index b = 0; b < nb; ++b) {
        const auto r = static_cast<std::size_t>(i);
        k_superblock s;
        s.d = p[static_cast<std::size_t>(b * spb)].d[r];
        s.dmin = p[static_cast<std::size_t>(b * spb)].dmin[r];
        for (index k = 0; k < spb; ++k) {
          const params_type& g = p[static_cast<std::size_t>(b * spb + k)];
          require(g.d[r] == s.d && g.dmin[r] == s.dmin, e_what, ": row ", i, ", sub-block ", b * spb + k,
                  " has a different super-block d / dmin than sub-block ", b * spb,
                  " (the sub-blocks of a super-block share them)");
          require(g.sc[r] <= F::sc_max && g.m[r] <= F::sc_max, e_what, ": row ", i, ", sub-block ", b * spb + k,
                  ": sub-block scale ", int(g.sc[r]), " / min ", int(g.m[r]), " exceed ", F::sc_max);
          s.sc[static_cast<std::size_t>(k)] = g.sc[r];
          s.m[static_cast<std::size_t>(k)] = g.m[r];
        }
        for (index k = 0; k < block_size; ++k) {
          const code_type c = codes(i, b * block_size + k);
          require(int(c) <= maxq, e_what, ": code ", int(c), " at (", i, ", ", b * block_size + k, ") exceeds ", maxq);
          q[static_cast<std::size_t>(k)] = c;
        }
        const std::size_t blk = r * static_cast<std::size_t>(nb) + static_cast<std::size_t>(b);
        F::encode_block(s, q.data(), out.data() + blk * tsize);
      }
  }

  //! The format's dequantization of rows x cols values (as gguf-py and llama.cpp compute it).
  //! Throws shape_error unless cols is a multiple of 256 and `in` holds exactly the tensor.
  [[nodiscard]] static matrix<float> decode(std::span<const std::byte> in, index rows, index cols) {
    const std::string what_s = what("decode");
    gguf_check_decode(what_s.c_str(), type, in.size(), rows, cols);
    const index nb = cols / block_size;
    const auto tsize = static_cast<std::size_t>(ggml_traits(type).type_size);
    matrix<float> out(rows, cols);
    std::array<float, 256> v{};
    for (index i = 0; i < rows; ++i)
      for (index b = 0; b < nb; ++b) {
        const auto blk = static_cast<std::size_t>(i * nb + b);
        F::decode_block(in.data() + blk * tsize, v.data());
        for (index k = 0; k < block_size; ++k) out(i, b * block_size + k) = v[static_cast<std::size_t>(k)];
      }
    return out;
  }

 private:
  static std::string what(const char* fn) { return concat(F::name, "::", fn); }

  gguf_quant_options opt_;
};

}  // namespace detail
}  // namespace yaqa
