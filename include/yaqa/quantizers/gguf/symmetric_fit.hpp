#pragma once
//! \file
//! What the symmetric GGUF quantizers (Q8_0, Q4_0, Q5_0, IQ4_NL, Q6_K, Q3_K) share: their params
//! types and llama.cpp's scale searches for a symmetric integer grid, written once.
//!
//! The searches follow llama.cpp's published reference algorithms (ggml-quants.c):
//!   - gguf_make_qx_quants: `make_qx_quants` with rmse_type 1 (the only kind the quantizers
//!     use): start from iscale = -nmax / max (max the signed value of largest magnitude), round,
//!     take the weighted least-squares scale sum(w x l) / sum(w l^2), then try the 18 neighbouring
//!     iscale = -(nmax + 0.1 is) / max, is = -9..9, keeping the one with the largest
//!     sum(w x l)^2 / sum(w l^2) (the least weighted squared error). Weights default to x^2.
//!   - gguf_make_q3_quants: `make_q3_quants` with do_rmse: the same start, then up to five
//!     passes of coordinate descent over the levels, each change kept when it raises
//!     sum(w x l)^2 / sum(w l^2) (w = x^2). As in the reference, a pass only moves an element
//!     while the running sum(w x l) without it is positive.
//! Everything is computed in float in the reference's operation order. Every product that is
//! added to something goes through detail::round_to_type, so the compiler never contracts it into
//! an FMA: the results are those of the reference compiled without contraction, on every CPU.
//! round is llama.cpp's nearest_int: to nearest, ties to even.
//!
//! Also here: detail::gguf_sub_block_quantizer, the Quantizer that Q6_K and Q3_K are (fit_all over
//! super-blocks, fixed-scale quantize, encode / decode through the type's traits), and the
//! quantize() loop and byte helpers all six types use. fit_all runs rows in parallel (OpenMP; each
//! row is fitted on its own, so the results do not depend on the thread count).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/config.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/io/float16.hpp>
#include <yaqa/io/gguf.hpp>
#include <yaqa/quantizers/common.hpp>
#include <yaqa/quantizers/gguf/common.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace yaqa {

//! Params of one 32-weight block column group (Q8_0, Q4_0, Q5_0, IQ4_NL), per row of the matrix.
struct gguf_block_params {
  std::vector<float> scale;           //!< the block's scale d as dequantization uses it (fp16 value)
  std::vector<std::uint16_t> d_bits;  //!< fp16 bits of d (what the block stores)
  //! The reference's inverse scale, 1 / d before d was rounded to fp16 (0 when d == 0): how
  //! quantize() picks codes on the reference path (Q8_0, Q4_0, Q5_0 without importance; IQ4_NL).
  std::vector<float> inv;
  //! Pick codes nearest to x / scale instead (Q4_0 / Q5_0 fitted with importance).
  bool nearest = false;
  [[nodiscard]] index rows() const { return static_cast<index>(scale.size()); }
};

//! Params of one 16-weight K-quant sub-block column group (Q6_K, Q3_K), per row of the matrix.
struct gguf_sub_block_params {
  std::vector<float> scale;           //!< effective scale d * sub-scale, as dequantization computes it
  std::vector<std::uint16_t> d_bits;  //!< fp16 bits of the super-block's d (the same for its 16 groups)
  //! The quantized sub-block scale as stored: Q6_K the int8 scale (two's complement byte),
  //! Q3_K the 6-bit field (sub-scale + 32).
  std::vector<std::uint8_t> sub;
  [[nodiscard]] index rows() const { return static_cast<index>(scale.size()); }
};

namespace detail {

//! llama.cpp's GROUP_MAX_EPS: a group whose largest magnitude is below it is all zero.
inline constexpr float gguf_group_max_eps = 1e-15f;


//! nearest_int(v) clamped to [lo, hi], safe for any v (NaN gives lo).
inline int gguf_nearest_clamped(float v, int lo, int hi) {
  float r = std::nearbyint(v);
  r = r >= static_cast<float>(lo) ? r : static_cast<float>(lo);
  r = r <= static_cast<float>(hi) ? r : static_cast<float>(hi);
  return static_cast<int>(r);
}

//! The signed value of largest magnitude (the first one on ties) and that magnitude.
inline void gguf_signed_max(int n, const float* x, float& max, float& amax) {
  max = 0.f;
  amax = 0.f;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
}

//! llama.cpp's make_qx_quants(n, nmax, x, L, rmse_type = 1, qw): the weighted least-squares
//! scale of the best of 19 trial grids (see the file comment). L receives levels + nmax, in
//! [0, 2 nmax). qw null: weights x^2. An all-zero group (max |x| < 1e-15) returns 0 with L = 0.
inline float gguf_make_qx_quants(int n, int nmax, const float* x, std::int8_t* L, const float* qw) {
  float max = 0.f, amax = 0.f;
  gguf_signed_max(n, x, max, amax);
  if (amax < gguf_group_max_eps) {
    std::fill(L, L + n, std::int8_t{0});
    return 0.f;
  }
  auto weight = [&](int i) { return qw ? qw[i] : x[i] * x[i]; };
  auto level = [&](float iscale, int i) {
    return std::max(-nmax, std::min(nmax - 1, gguf_nearest_int(iscale * x[i])));
  };
  float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0.f, suml2 = 0.f;
  for (int i = 0; i < n; ++i) {
    const int l = level(iscale, i);
    L[i] = static_cast<std::int8_t>(l + nmax);
    const float w = weight(i), fl = static_cast<float>(l);
    sumlx += gguf_mul(gguf_mul(w, x[i]), fl);
    suml2 += gguf_mul(gguf_mul(w, fl), fl);
  }
  float scale = suml2 != 0.f ? sumlx / suml2 : 0.f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + gguf_mul(0.1f, static_cast<float>(is))) / max;
    sumlx = suml2 = 0.f;
    for (int i = 0; i < n; ++i) {
      const float w = weight(i), fl = static_cast<float>(level(iscale, i));
      sumlx += gguf_mul(gguf_mul(w, x[i]), fl);
      suml2 += gguf_mul(gguf_mul(w, fl), fl);
    }
    if (suml2 > 0.f && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(nmax + level(iscale, i));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

//! llama.cpp's make_q3_quants(n, nmax, x, L, do_rmse = true) (see the file comment). L receives
//! levels + nmax. An all-zero group returns 0 with L = 0.
inline float gguf_make_q3_quants(int n, int nmax, const float* x, std::int8_t* L) {
  float max = 0.f, amax = 0.f;
  gguf_signed_max(n, x, max, amax);
  if (amax < gguf_group_max_eps) {
    std::fill(L, L + n, std::int8_t{0});
    return 0.f;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0.f, suml2 = 0.f;
  for (int i = 0; i < n; ++i) {
    const int l = std::max(-nmax, std::min(nmax - 1, gguf_nearest_int(iscale * x[i])));
    L[i] = static_cast<std::int8_t>(l);
    const float w = x[i] * x[i], fl = static_cast<float>(l);
    sumlx += gguf_mul(gguf_mul(w, x[i]), fl);
    suml2 += gguf_mul(gguf_mul(w, fl), fl);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i], li = static_cast<float>(L[i]);
      float slx = sumlx - gguf_mul(gguf_mul(w, x[i]), li);
      if (slx > 0.f) {
        float sl2 = suml2 - gguf_mul(gguf_mul(w, li), li);
        const int nl = std::max(-nmax, std::min(nmax - 1, gguf_nearest_int(x[i] * sl2 / slx)));
        if (nl != L[i]) {
          const float fn = static_cast<float>(nl);
          slx += gguf_mul(gguf_mul(w, x[i]), fn);
          sl2 += gguf_mul(gguf_mul(w, fn), fn);
          if (sl2 > 0.f && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<std::int8_t>(nl);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(L[i] + nmax);
  return suml2 > 0.f ? sumlx / suml2 : 0.f;
}

//! llama.cpp's importance weights of the imatrix paths: qw[j] * sqrt(sigma2 + x[j]^2).
inline void gguf_importance_weights(int n, const float* x, const float* qw, float sigma2, float* out) {
  for (int j = 0; j < n; ++j) out[j] = qw[j] * std::sqrt(sigma2 + gguf_mul(x[j], x[j]));
}


//! Calls f(i, row) for every row i of w, with row the n values of row i as float. Rows are
//! independent, so they run in parallel (OpenMP; serial when small or inside a parallel region).
template <class T, class F>
void gguf_for_each_row(matrix_view<const T> w, F&& f) {
  const index m = w.rows, n = w.cols;
  const bool parallel = m > 1 && static_cast<double>(m) * static_cast<double>(n) > 1e5;
  (void)parallel;
#if defined(_OPENMP)
#pragma omp parallel if (parallel)
#endif
  {
    std::vector<float> row(static_cast<std::size_t>(n));
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (index i = 0; i < m; ++i) {
      for (index j = 0; j < n; ++j) row[static_cast<std::size_t>(j)] = static_cast<float>(w(i, j));
      f(i, static_cast<const float*>(row.data()));
    }
  }
}

//! The quantize() loop every symmetric GGUF type shares: for each element, code = pick(x, r)
//! (x as float, r the row of the params), recon = value(code, r) (already a float), with the
//! hot-loop finiteness flag (a non-finite x gets code `zero_code`, then the call throws).
template <class T, class C, class Pick, class Value>
void gguf_quantize_loop(const char* what, matrix_view<const T> target, index row0, matrix_view<T> recon,
                        matrix_view<C> codes, C zero_code, Pick&& pick, Value&& value) {
  int bad = 0;
  for (index j = 0; j < target.cols; ++j) {
    const T* x = target.data + j * target.ld;
    T* out = recon.data + j * recon.ld;
    C* c = codes.data + j * codes.ld;
    for (index i = 0; i < target.rows; ++i) {
      const T xv = x[i];
      const bool ok = finite_flag(xv);
      bad |= !ok;
      const C code = ok ? pick(static_cast<float>(xv), row0 + i) : zero_code;
      c[i] = code;
      out[i] = static_cast<T>(value(code, row0 + i));
    }
  }
  if (bad) throw_non_finite_target(what, target);
}



//! The params' rows must cover the m rows of the codes (encode()).
template <class P>
void gguf_check_param_rows(const char* what, const std::vector<P>& p, index m) {
  for (std::size_t g = 0; g < p.size(); ++g)
    require<shape_error>(p[g].rows() == m, what, ": parameter group ", g, " has ", p[g].rows(),
                         " rows; the codes have ", m);
}


//! The quantizer of a symmetric K-quant (Q6_K, Q3_K): 256-weight super-blocks of 16 sub-blocks of
//! 16 weights, each sub-block with its own quantized scale against the super-block's fp16 d. The
//! group is the 16-weight sub-block. Traits supply the format:
//!   name, type, bits, qmin, qmax (the signed levels; code = level - qmin),
//!   fit_super_block(x[256], qw[256] or null, d_bits, sub[16], eff[16]): the super-block's
//!     scales (eff = the effective sub-block scales as dequantization computes them),
//!   pack(codes[256], d_bits, sub[16], block bytes), unpack(block bytes, float out[256]).
//! Codes are picked as the reference does once the scales are known: level = nearest_int(x / eff)
//! clamped to [qmin, qmax]; a sub-block with eff == 0 gets code 0 (level qmin), as the reference
//! leaves an all-zero sub-block or super-block. recon = eff * level.
template <Scalar T, class Traits>
class gguf_sub_block_quantizer {
 public:
  using scalar_type = T;
  using code_type = std::uint8_t;
  using params_type = gguf_sub_block_params;
  static constexpr index unit_rows = 1;
  static constexpr index unit_cols = 1;
  static constexpr ggml_type type = Traits::type;
  static constexpr index block_size = 256;
  static constexpr index sub_block = 16;

  explicit gguf_sub_block_quantizer(const gguf_quant_options& o = {}) : opt_(o) {}

  [[nodiscard]] const gguf_quant_options& options() const { return opt_; }
  //! Code bits per weight (the scales add the rest; see storage_bits).
  [[nodiscard]] double bits_per_weight() const { return Traits::bits; }
  //! Exact bits of a rows x cols tensor: rows * cols / 256 super-blocks of type_size bytes.
  [[nodiscard]] std::size_t storage_bits(index rows, index cols) const {
    (void)group_cols(cols);
    return static_cast<std::size_t>(rows) * gguf_row_bytes(type, cols) * 8;
  }
  //! 16: a sub-block shares one effective scale. Throws shape_error unless n is a positive
  //! multiple of 256.
  [[nodiscard]] index group_cols(index n) const {
    check_gguf_columns(Traits::name, type, n);
    return sub_block;
  }
  void validate(index n) const { (void)group_cols(n); }

  //! Not available: a lone 16-column sub-block is not a GGUF block (its scale is quantized
  //! against the super-block's). Throws invalid_argument; fit through fit_all (the rounding
  //! drivers always do).
  [[nodiscard]] params_type fit(matrix_view<const T> w) const {
    (void)w;
    throw invalid_argument(concat(Traits::name, "::fit: a ", sub_block, "-column sub-block's scale is quantized "
                                  "against its 256-column super-block; fit the whole matrix with fit_all"));
  }

  //! One params per 16-column sub-block, all super-blocks of a row fitted together.
  [[nodiscard]] std::vector<params_type> fit_all(matrix_view<const T> w) const {
    check_fit_input(Traits::name, w);
    const index m = w.rows, n = w.cols;
    check_gguf_columns(Traits::name, type, n);
    check_importance(Traits::name, opt_.importance, n);
    params_type proto;
    proto.scale.assign(static_cast<std::size_t>(m), 0.f);
    proto.d_bits.assign(static_cast<std::size_t>(m), 0);
    proto.sub.assign(static_cast<std::size_t>(m), 0);
    std::vector<params_type> ps(static_cast<std::size_t>(n / sub_block), proto);
    const float* imp = opt_.importance.empty() ? nullptr : opt_.importance.data();
    gguf_for_each_row(w, [&](index i, const float* x) {
      const auto r = static_cast<std::size_t>(i);
      for (index b = 0; b < n / block_size; ++b) {
        std::uint16_t d_bits = 0;
        std::uint8_t sub[16];
        float eff[16];
        Traits::fit_super_block(x + b * block_size, imp ? imp + b * block_size : nullptr, d_bits, sub, eff);
        for (index k = 0; k < 16; ++k) {
          params_type& p = ps[static_cast<std::size_t>(b * 16 + k)];
          p.d_bits[r] = d_bits;
          p.sub[r] = sub[k];
          p.scale[r] = eff[k];
        }
      }
    });
    return ps;
  }

  //! Codes for target with the params held fixed; recon = eff * level. Thread-safe. Throws
  //! non_finite_error on NaN / Inf in target.
  void quantize(matrix_view<const T> target, const params_type& p, index row0, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    check_quantize_args<1, 1>(Traits::name, target, row0, p.rows(), recon, codes);
    constexpr int qmin = Traits::qmin, qmax = Traits::qmax;
    gguf_quantize_loop(
        Traits::name, target, row0, recon, codes, code_type{0},
        [&](float x, index r) {
          const float d = p.scale[static_cast<std::size_t>(r)];
          if (d == 0.f) return code_type{0};
          return static_cast<code_type>(gguf_nearest_clamped(x / d, qmin, qmax) - qmin);
        },
        [&](code_type c, index r) { return value(c, p, r); });
  }

  //! The dequantized values of codes (rows [row0, ...) of the params' rows).
  [[nodiscard]] matrix<T> reconstruct(matrix_view<const code_type> codes, const params_type& p, index row0) const {
    check_reconstruct_args(Traits::name, codes.rows, 1, row0, p.rows());
    matrix<T> out(codes.rows, codes.cols);
    for (index j = 0; j < codes.cols; ++j)
      for (index i = 0; i < codes.rows; ++i) out(i, j) = static_cast<T>(value(codes(i, j), p, row0 + i));
    return out;
  }

  //! The ggml super-blocks of codes (m x n) with params (one per 16-column sub-block).
  void encode(matrix_view<const code_type> codes, const std::vector<params_type>& p, std::span<std::byte> out) const {
    const index m = codes.rows, n = codes.cols;
    check_gguf_encode(Traits::name, type, m, n, p.size(), static_cast<std::size_t>(n / sub_block), out.size());
    gguf_check_param_rows(Traits::name, p, m);
    const std::size_t ts = static_cast<std::size_t>(ggml_traits(type).type_size);
    const index nb = n / block_size;
    constexpr int levels = Traits::qmax - Traits::qmin + 1;
    for (index i = 0; i < m; ++i) {
      const auto r = static_cast<std::size_t>(i);
      for (index b = 0; b < nb; ++b) {
        std::uint8_t L[256], sub[16];
        for (index e = 0; e < block_size; ++e) {
          L[e] = codes(i, b * block_size + e);
          require(L[e] < levels, Traits::name, "::encode: code ", int(L[e]), " at (", i, ", ", b * block_size + e,
                  ") is outside [0, ", levels, ")");
        }
        const std::uint16_t d_bits = p[static_cast<std::size_t>(b * 16)].d_bits[r];
        for (index k = 0; k < 16; ++k) {
          const params_type& pk = p[static_cast<std::size_t>(b * 16 + k)];
          require(pk.d_bits[r] == d_bits, Traits::name, "::encode: row ", i, " of parameter group ", b * 16 + k,
                  " has another super-block scale than group ", b * 16,
                  "; the 16 sub-block groups of a super-block must come from one fit_all");
          sub[k] = pk.sub[r];
        }
        Traits::pack(L, d_bits, sub,
                     out.data() + static_cast<std::size_t>(i * nb + b) * ts);
      }
    }
  }

  //! The format's dequantization (gguf-py's dequantize, bit for bit).
  [[nodiscard]] static matrix<float> decode(std::span<const std::byte> in, index rows, index cols) {
    gguf_check_decode(Traits::name, type, in.size(), rows, cols);
    const std::size_t ts = static_cast<std::size_t>(ggml_traits(type).type_size);
    const index nb = cols / block_size;
    matrix<float> out(rows, cols);
    float y[256];
    for (index i = 0; i < rows; ++i)
      for (index b = 0; b < nb; ++b) {
        Traits::unpack(in.data() + static_cast<std::size_t>(i * nb + b) * ts, y);
        for (index e = 0; e < block_size; ++e) out(i, b * block_size + e) = y[e];
      }
    return out;
  }

 private:
  static float value(code_type c, const params_type& p, index r) {
    return p.scale[static_cast<std::size_t>(r)] * static_cast<float>(static_cast<int>(c) + Traits::qmin);
  }

  gguf_quant_options opt_;
};

}  // namespace detail
}  // namespace yaqa
