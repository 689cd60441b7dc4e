#pragma once
//! \file
//! llama.cpp's "legacy" symmetric 32-weight block formats as Quantizers: Q8_0, Q4_0, Q5_0.
//!
//! A block stores one fp16 scale d and 32 signed integer levels q; dequantization is d * q:
//!   Q8_0  block_q8_0 (34 bytes): d, int8 qs[32]                          q in [-128, 127]
//!   Q4_0  block_q4_0 (18 bytes): d, qs[16] (q + 8: element j low nibble, j + 16 high nibble)
//!                                                                        q in [-8, 7]
//!   Q5_0  block_q5_0 (22 bytes): d, qh (uint32: bit j = bit 4 of q_j + 16), qs[16] (low 4 bits,
//!                                laid out as Q4_0's)                      q in [-16, 15]
//! A code is the block's field for one weight: Q8_0 the int8 byte, Q4_0 q + 8, Q5_0 q + 16.
//!
//! Fit (fit_all), per row and block, llama.cpp's reference algorithms:
//!   - no importance (quantize_row_<type>_ref, and gguf-py's quants.quantize): Q8_0 takes
//!     d = amax / 127; Q4_0 / Q5_0 take the signed value of largest magnitude `max` (the first on
//!     ties) and d = max / -8 (-16), so that max lands on the most negative level. The block
//!     stores fp16(d); codes are picked with the unrounded inverse id = 1 / d (0 when d == 0):
//!     Q8_0 q = roundf(x id) (ties away from zero), Q4_0 code = min(15, trunc(x id + 8.5)),
//!     Q5_0 code = min(31, trunc(x id + 16.5)). RTN therefore reproduces gguf-py's bytes.
//!   - with importance (quantize_row_q4_0_impl / q5_0_impl with quant_weights): sigma2 = the
//!     row's mean x^2, weights qw_j sqrt(sigma2 + x_j^2), d = make_qx_quants(32, 8 (16), x, w)
//!     (see symmetric_fit.hpp). Codes are then picked nearest to x / fp16(d), clamped (code 0
//!     where fp16(d) == 0, as the reference leaves an all-zero block): the
//!     reference keeps the levels of its search (rounded against the unrounded trial scale);
//!     given the stored d, nearest is never worse, and it makes recon a fixed point of quantize().
//!     Q8_0 has no importance path in llama.cpp: its importance is ignored (but checked).
//! quantize() holds the params fixed and picks codes as above for any target (error feedback),
//! clamped to the format's levels; recon = fp16(d) * q in float, as gguf-py's dequantize.
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
#include <yaqa/quantizers/gguf/symmetric_fit.hpp>

namespace yaqa {
namespace detail {

//! What distinguishes Q8_0, Q4_0 and Q5_0.
template <ggml_type Type>
struct gguf_legacy_traits;

template <>
struct gguf_legacy_traits<ggml_type::q8_0> {
  static constexpr const char* name = "yaqa::gguf_q8_0";
  static constexpr int bits = 8;
  static constexpr bool has_imatrix = false;
  static constexpr std::uint8_t zero_code = 0;  // int8 0
  static constexpr int level(std::uint8_t c) { return static_cast<std::int8_t>(c); }
};
template <>
struct gguf_legacy_traits<ggml_type::q4_0> {
  static constexpr const char* name = "yaqa::gguf_q4_0";
  static constexpr int bits = 4;
  static constexpr int nmax = 8;
  static constexpr bool has_imatrix = true;
  static constexpr std::uint8_t zero_code = 8;
  static constexpr int level(std::uint8_t c) { return static_cast<int>(c) - 8; }
};
template <>
struct gguf_legacy_traits<ggml_type::q5_0> {
  static constexpr const char* name = "yaqa::gguf_q5_0";
  static constexpr int bits = 5;
  static constexpr int nmax = 16;
  static constexpr bool has_imatrix = true;
  static constexpr std::uint8_t zero_code = 16;
  static constexpr int level(std::uint8_t c) { return static_cast<int>(c) - 16; }
};

//! The implementation of gguf_q8_0 / gguf_q4_0 / gguf_q5_0 (see the file comment).
template <Scalar T, ggml_type Type>
class gguf_legacy {
  using traits = gguf_legacy_traits<Type>;

 public:
  using scalar_type = T;
  using code_type = std::uint8_t;
  using params_type = gguf_block_params;
  static constexpr index unit_rows = 1;
  static constexpr index unit_cols = 1;
  static constexpr ggml_type type = Type;
  static constexpr index block_size = 32;

  explicit gguf_legacy(const gguf_quant_options& o = {}) : opt_(o) {}

  [[nodiscard]] const gguf_quant_options& options() const { return opt_; }
  //! Code bits per weight (the fp16 scale adds 0.5; see storage_bits).
  [[nodiscard]] double bits_per_weight() const { return traits::bits; }
  //! Exact bits of a rows x cols tensor: rows * cols / 32 blocks of type_size bytes.
  [[nodiscard]] std::size_t storage_bits(index rows, index cols) const {
    (void)group_cols(cols);
    return static_cast<std::size_t>(rows) * gguf_row_bytes(Type, cols) * 8;
  }
  //! 32: the block shares one scale. Throws shape_error unless n is a positive multiple of 32.
  [[nodiscard]] index group_cols(index n) const {
    check_gguf_columns(traits::name, Type, n);
    return block_size;
  }
  void validate(index n) const { (void)group_cols(n); }

  //! The params of one block column group (w has exactly 32 columns), by the reference path
  //! without importance (importance needs the whole row: fit_all).
  [[nodiscard]] params_type fit(matrix_view<const T> w) const {
    check_fit_input(traits::name, w);
    require<shape_error>(w.cols == block_size, traits::name, "::fit: argument 'w' has ", w.cols,
                         " columns; one block has ", block_size, " (fit_all fits whole rows)");
    params_type p = make_params(w.rows, false);
    gguf_for_each_row(w, [&](index i, const float* x) { fit_ref(x, p, i); });
    return p;
  }

  //! One params per 32-column block (see the file comment).
  [[nodiscard]] std::vector<params_type> fit_all(matrix_view<const T> w) const {
    check_fit_input(traits::name, w);
    const index m = w.rows, n = w.cols;
    check_gguf_columns(traits::name, Type, n);
    check_importance(traits::name, opt_.importance, n);
    const bool imp = traits::has_imatrix && !opt_.importance.empty();
    std::vector<params_type> ps(static_cast<std::size_t>(n / block_size), make_params(m, imp));
    gguf_for_each_row(w, [&](index i, const float* x) {
      if (!imp) {
        for (index b = 0; b < n / block_size; ++b) fit_ref(x + b * block_size, ps[static_cast<std::size_t>(b)], i);
        return;
      }
      if constexpr (traits::has_imatrix) {
        const float sigma2 = gguf_sum_squares(n, x) / static_cast<float>(n);
        float weight[block_size];
        std::int8_t L[block_size];
        for (index b = 0; b < n / block_size; ++b) {
          const float* xb = x + b * block_size;
          gguf_importance_weights(block_size, xb, opt_.importance.data() + b * block_size, sigma2, weight);
          const float d = gguf_make_qx_quants(block_size, traits::nmax, xb, L, weight);
          set_scale(ps[static_cast<std::size_t>(b)], i, d, 0.f);
        }
      }
    });
    return ps;
  }

  //! Codes for target (rows [row0, ...) of the params' rows) with the params held fixed; recon is
  //! the dequantized value. Thread-safe. Throws non_finite_error on NaN / Inf in target.
  void quantize(matrix_view<const T> target, const params_type& p, index row0, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    check_quantize_args<1, 1>(traits::name, target, row0, p.rows(), recon, codes);
    gguf_quantize_loop(
        traits::name, target, row0, recon, codes, traits::zero_code,
        [&](float x, index r) { return pick(x, p, r); },
        [&](code_type c, index r) { return value(c, p, r); });
  }

  //! The dequantized values of codes (rows [row0, ...) of the params' rows).
  [[nodiscard]] matrix<T> reconstruct(matrix_view<const code_type> codes, const params_type& p, index row0) const {
    check_reconstruct_args(traits::name, codes.rows, 1, row0, p.rows());
    matrix<T> out(codes.rows, codes.cols);
    for (index j = 0; j < codes.cols; ++j)
      for (index i = 0; i < codes.rows; ++i) out(i, j) = static_cast<T>(value(codes(i, j), p, row0 + i));
    return out;
  }

  //! The ggml blocks of codes (m x n) with params (one per block column): m rows of n / 32 blocks.
  void encode(matrix_view<const code_type> codes, const std::vector<params_type>& p, std::span<std::byte> out) const {
    const index m = codes.rows, n = codes.cols;
    check_gguf_encode(traits::name, Type, m, n, p.size(), static_cast<std::size_t>(n / block_size), out.size());
    gguf_check_param_rows(traits::name, p, m);
    const std::size_t ts = static_cast<std::size_t>(ggml_traits(Type).type_size);
    const index nb = n / block_size;
    for (index i = 0; i < m; ++i)
      for (index b = 0; b < nb; ++b) {
        std::byte* blk = out.data() + (static_cast<std::size_t>(i * nb + b)) * ts;
        std::uint8_t c[block_size];
        for (index k = 0; k < block_size; ++k) {
          c[k] = codes(i, b * block_size + k);
          require(traits::bits == 8 || c[k] < (1u << traits::bits), traits::name, "::encode: code ", int(c[k]),
                  " at (", i, ", ", b * block_size + k, ") does not fit in ", traits::bits, " bits");
        }
        gguf_put_u16(blk, p[static_cast<std::size_t>(b)].d_bits[static_cast<std::size_t>(i)]);
        if constexpr (Type == ggml_type::q8_0) {
          for (index k = 0; k < block_size; ++k) blk[2 + k] = static_cast<std::byte>(c[k]);
        } else if constexpr (Type == ggml_type::q4_0) {
          for (index k = 0; k < 16; ++k) blk[2 + k] = static_cast<std::byte>(c[k] | (c[k + 16] << 4));
        } else {
          std::uint32_t qh = 0;
          for (index k = 0; k < block_size; ++k) qh |= static_cast<std::uint32_t>((c[k] >> 4) & 1u) << k;
          for (int k = 0; k < 4; ++k) blk[2 + k] = static_cast<std::byte>((qh >> (8 * k)) & 0xffu);
          for (index k = 0; k < 16; ++k)
            blk[6 + k] = static_cast<std::byte>((c[k] & 0x0fu) | ((c[k + 16] & 0x0fu) << 4));
        }
      }
  }

  //! The format's dequantization (gguf-py's dequantize, bit for bit): rows x cols floats.
  [[nodiscard]] static matrix<float> decode(std::span<const std::byte> in, index rows, index cols) {
    gguf_check_decode(traits::name, Type, in.size(), rows, cols);
    const std::size_t ts = static_cast<std::size_t>(ggml_traits(Type).type_size);
    const index nb = cols / block_size;
    matrix<float> out(rows, cols);
    for (index i = 0; i < rows; ++i)
      for (index b = 0; b < nb; ++b) {
        const std::byte* blk = in.data() + (static_cast<std::size_t>(i * nb + b)) * ts;
        const float d = f16_to_float(gguf_get_u16(blk));
        for (index k = 0; k < block_size; ++k) {
          std::uint8_t c;
          if constexpr (Type == ggml_type::q8_0) {
            c = gguf_get_u8(blk + 2 + k);
          } else if constexpr (Type == ggml_type::q4_0) {
            c = static_cast<std::uint8_t>((gguf_get_u8(blk + 2 + k % 16) >> (k < 16 ? 0 : 4)) & 0x0fu);
          } else {
            const std::uint32_t qh = std::uint32_t(gguf_get_u8(blk + 2)) | (std::uint32_t(gguf_get_u8(blk + 3)) << 8) |
                                     (std::uint32_t(gguf_get_u8(blk + 4)) << 16) |
                                     (std::uint32_t(gguf_get_u8(blk + 5)) << 24);
            c = static_cast<std::uint8_t>(((gguf_get_u8(blk + 6 + k % 16) >> (k < 16 ? 0 : 4)) & 0x0fu) |
                                          (((qh >> k) & 1u) << 4));
          }
          out(i, b * block_size + k) = d * static_cast<float>(traits::level(c));
        }
      }
    return out;
  }

 private:
  static params_type make_params(index m, bool nearest) {
    params_type p;
    const auto mm = static_cast<std::size_t>(m);
    p.scale.assign(mm, 0.f);
    p.d_bits.assign(mm, 0);
    p.inv.assign(mm, 0.f);
    p.nearest = nearest;
    return p;
  }

  static void set_scale(params_type& p, index i, float d, float id) {
    const auto r = static_cast<std::size_t>(i);
    p.d_bits[r] = to_f16_bits(d);
    p.scale[r] = f16_to_float(p.d_bits[r]);
    p.inv[r] = id;
  }

  //! quantize_row_<type>_ref's scale for one block x[0..32).
  static void fit_ref(const float* x, params_type& p, index i) {
    float d;
    if constexpr (Type == ggml_type::q8_0) {
      float amax = 0.f;
      for (index k = 0; k < block_size; ++k) amax = std::max(amax, std::fabs(x[k]));
      d = amax / 127.f;
    } else {
      float max = 0.f, amax = 0.f;
      gguf_signed_max(static_cast<int>(block_size), x, max, amax);
      d = max / static_cast<float>(-traits::nmax);
    }
    set_scale(p, i, d, d != 0.f ? 1.f / d : 0.f);
  }

  static code_type pick(float x, const params_type& p, index r) {
    const auto rr = static_cast<std::size_t>(r);
    if constexpr (Type == ggml_type::q8_0) {
      float q = std::round(gguf_mul(x, p.inv[rr]));  // roundf: ties away from zero
      q = q >= -128.f ? q : -128.f;
      q = q <= 127.f ? q : 127.f;
      return static_cast<code_type>(static_cast<std::int8_t>(q));
    } else {
      constexpr int nmax = traits::nmax;
      if (p.nearest) {
        const float d = p.scale[rr];
        if (d == 0.f) return code_type{0};  // as the reference, whose search leaves an all-zero block at level -nmax
        return static_cast<code_type>(gguf_nearest_clamped(x / d, -nmax, nmax - 1) + nmax);
      }
      float q = std::trunc(gguf_mul(x, p.inv[rr]) + (static_cast<float>(nmax) + 0.5f));
      q = q >= 0.f ? q : 0.f;
      q = q <= static_cast<float>(2 * nmax - 1) ? q : static_cast<float>(2 * nmax - 1);
      return static_cast<code_type>(q);
    }
  }

  static float value(code_type c, const params_type& p, index r) {
    return p.scale[static_cast<std::size_t>(r)] * static_cast<float>(traits::level(c));
  }

  gguf_quant_options opt_;
};

}  // namespace detail

//! GGUF Q8_0: 32-weight blocks, fp16 scale, int8 levels (see legacy.hpp's file comment).
template <Scalar T>
class gguf_q8_0 : public detail::gguf_legacy<T, ggml_type::q8_0> {
 public:
  using detail::gguf_legacy<T, ggml_type::q8_0>::gguf_legacy;
};

//! GGUF Q4_0: 32-weight blocks, fp16 scale, 4-bit levels -8..7 (see legacy.hpp's file comment).
template <Scalar T>
class gguf_q4_0 : public detail::gguf_legacy<T, ggml_type::q4_0> {
 public:
  using detail::gguf_legacy<T, ggml_type::q4_0>::gguf_legacy;
};

//! GGUF Q5_0: 32-weight blocks, fp16 scale, 5-bit levels -16..15 (see legacy.hpp's file comment).
template <Scalar T>
class gguf_q5_0 : public detail::gguf_legacy<T, ggml_type::q5_0> {
 public:
  using detail::gguf_legacy<T, ggml_type::q5_0>::gguf_legacy;
};

}  // namespace yaqa
