#pragma once
//! \file
//! llama.cpp's IQ4_NL as a Quantizer: 32-weight blocks of one fp16 scale d and 4-bit indices into
//! the fixed non-linear table kvalues_iq4nl = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13,
//! 25, 38, 53, 69, 89, 113}; dequantization is d * kvalues[index]. block_iq4_nl (18 bytes): d,
//! qs[16] (element j in the low nibble of qs[j], element j + 16 in the high nibble). A code is
//! the index.
//!
//! Fit (fit_all), per row and block, llama.cpp's quantize_row_iq4_nl_impl (block 32, ntry 7),
//! which quantize_iq4_nl runs with and without an imatrix:
//!   - weights w_j = x_j^2, or with importance qw_j sqrt(sigma2 + x_j^2), sigma2 = 2 mean(x^2)
//!     over the block;
//!   - start from d = max / 127 (max the signed value of largest magnitude), map each x / d to
//!     the nearest table value, take the weighted least-squares scale sum(w q x) / sum(w q^2);
//!     then try id = (t - 127) / max for t = -7..7 and keep the least-squares scale of the trial
//!     with the largest sum(w q x)^2 / sum(w q^2);
//!   - the block stores fp16(d); codes are the nearest table values to x / d with the
//!     unrounded d (llama.cpp's best_index_int8: the upper value on a tie).
//! An all-zero block (max |x| < 1e-15) gets d = 0. Deviation, for robustness: where the start's
//! sum(w q^2) is 0 (importance 0 on the whole block) the reference divides 0 by 0 and stores
//! NaN; here the start scale max / 127 is kept instead.
//! quantize() holds the params fixed and picks the nearest table value to x / d (unrounded d)
//! for any target; recon = fp16(d) * kvalue in float, as gguf-py's dequantize.
#include <array>
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
//! llama.cpp's kvalues_iq4nl (ggml-common.h).
inline constexpr std::array<std::int8_t, 16> gguf_iq4nl_values{-127, -104, -83, -65, -49, -35, -22, -10,
                                                                1,    13,   25,  38,  53,  69,  89,  113};

//! Index of the table value nearest to x (llama.cpp's best_index_int8: x picks value i once
//! 2 x >= values[i - 1] + values[i], so ties go up). NaN gives 0.
inline int gguf_iq4nl_index(float x) {
  const float x2 = x + x;
  int idx = 0;
  for (int step = 8; step > 0; step >>= 1) {
    const int j = idx + step;
    idx = x2 >= static_cast<float>(gguf_iq4nl_values[j - 1] + gguf_iq4nl_values[j]) ? j : idx;
  }
  return idx;
}
}  // namespace detail

//! GGUF IQ4_NL (see the file comment).
template <Scalar T>
class gguf_iq4_nl {
 public:
  using scalar_type = T;
  using code_type = std::uint8_t;
  using params_type = gguf_block_params;
  static constexpr index unit_rows = 1;
  static constexpr index unit_cols = 1;
  static constexpr ggml_type type = ggml_type::iq4_nl;
  static constexpr index block_size = 32;

  explicit gguf_iq4_nl(const gguf_quant_options& o = {}) : opt_(o) {}

  [[nodiscard]] const gguf_quant_options& options() const { return opt_; }
  [[nodiscard]] double bits_per_weight() const { return 4; }
  [[nodiscard]] std::size_t storage_bits(index rows, index cols) const {
    (void)group_cols(cols);
    return static_cast<std::size_t>(rows) * detail::gguf_row_bytes(type, cols) * 8;
  }
  //! 32: the block shares one scale. Throws shape_error unless n is a positive multiple of 32.
  [[nodiscard]] index group_cols(index n) const {
    detail::check_gguf_columns(what, type, n);
    return block_size;
  }
  void validate(index n) const { (void)group_cols(n); }

  //! The params of one block column group (w has exactly 32 columns), without importance.
  [[nodiscard]] params_type fit(matrix_view<const T> w) const {
    detail::check_fit_input(what, w);
    detail::require<shape_error>(w.cols == block_size, what, "::fit: argument 'w' has ", w.cols,
                                 " columns; one block has ", block_size, " (fit_all fits whole rows)");
    params_type p = make_params(w.rows);
    detail::gguf_for_each_row(w, [&](index i, const float* x) { fit_block(x, nullptr, p, i); });
    return p;
  }

  //! One params per 32-column block (see the file comment).
  [[nodiscard]] std::vector<params_type> fit_all(matrix_view<const T> w) const {
    detail::check_fit_input(what, w);
    const index m = w.rows, n = w.cols;
    detail::check_gguf_columns(what, type, n);
    detail::check_importance(what, opt_.importance, n);
    std::vector<params_type> ps(static_cast<std::size_t>(n / block_size), make_params(m));
    const float* imp = opt_.importance.empty() ? nullptr : opt_.importance.data();
    detail::gguf_for_each_row(w, [&](index i, const float* x) {
      for (index b = 0; b < n / block_size; ++b)
        fit_block(x + b * block_size, imp ? imp + b * block_size : nullptr, ps[static_cast<std::size_t>(b)], i);
    });
    return ps;
  }

  //! Codes for target with the params held fixed (nearest table value to x / d, d unrounded);
  //! recon = fp16(d) * kvalue. Thread-safe. Throws non_finite_error on NaN / Inf in target.
  void quantize(matrix_view<const T> target, const params_type& p, index row0, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    detail::check_quantize_args<1, 1>(what, target, row0, p.rows(), recon, codes);
    detail::gguf_quantize_loop(
        what, target, row0, recon, codes, code_type{8},
        [&](float x, index r) {
          const float a = detail::gguf_mul(p.inv[static_cast<std::size_t>(r)], x);
          return static_cast<code_type>(detail::gguf_iq4nl_index(a));
        },
        [&](code_type c, index r) { return value(c, p, r); });
  }

  [[nodiscard]] matrix<T> reconstruct(matrix_view<const code_type> codes, const params_type& p, index row0) const {
    detail::check_reconstruct_args(what, codes.rows, 1, row0, p.rows());
    matrix<T> out(codes.rows, codes.cols);
    for (index j = 0; j < codes.cols; ++j)
      for (index i = 0; i < codes.rows; ++i) out(i, j) = static_cast<T>(value(codes(i, j), p, row0 + i));
    return out;
  }

  //! The block_iq4_nl bytes of codes (m x n) with params (one per block column).
  void encode(matrix_view<const code_type> codes, const std::vector<params_type>& p, std::span<std::byte> out) const {
    const index m = codes.rows, n = codes.cols;
    detail::check_gguf_encode(what, type, m, n, p.size(), static_cast<std::size_t>(n / block_size), out.size());
    detail::gguf_check_param_rows(what, p, m);
    const std::size_t ts = static_cast<std::size_t>(ggml_traits(type).type_size);
    const index nb = n / block_size;
    for (index i = 0; i < m; ++i)
      for (index b = 0; b < nb; ++b) {
        std::byte* blk = out.data() + static_cast<std::size_t>(i * nb + b) * ts;
        std::uint8_t c[block_size];
        for (index k = 0; k < block_size; ++k) {
          c[k] = codes(i, b * block_size + k);
          detail::require(c[k] < 16, what, "::encode: code ", int(c[k]), " at (", i, ", ", b * block_size + k,
                          ") is not a 4-bit index");
        }
        detail::gguf_put_u16(blk, p[static_cast<std::size_t>(b)].d_bits[static_cast<std::size_t>(i)]);
        for (index k = 0; k < 16; ++k) blk[2 + k] = static_cast<std::byte>(c[k] | (c[k + 16] << 4));
      }
  }

  //! The format's dequantization (gguf-py's dequantize, bit for bit).
  [[nodiscard]] static matrix<float> decode(std::span<const std::byte> in, index rows, index cols) {
    detail::gguf_check_decode(what, type, in.size(), rows, cols);
    const std::size_t ts = static_cast<std::size_t>(ggml_traits(type).type_size);
    const index nb = cols / block_size;
    matrix<float> out(rows, cols);
    for (index i = 0; i < rows; ++i)
      for (index b = 0; b < nb; ++b) {
        const std::byte* blk = in.data() + static_cast<std::size_t>(i * nb + b) * ts;
        const float d = f16_to_float(detail::gguf_get_u16(blk));
        for (index k = 0; k < block_size; ++k) {
          const unsigned c = (detail::gguf_get_u8(blk + 2 + k % 16) >> (k < 16 ? 0 : 4)) & 0x0fu;
          out(i, b * block_size + k) = d * static_cast<float>(detail::gguf_iq4nl_values[c]);
        }
      }
    return out;
  }

 private:
  static constexpr const char* what = "yaqa::gguf_iq4_nl";

  static params_type make_params(index m) {
    params_type p;
    const auto mm = static_cast<std::size_t>(m);
    p.scale.assign(mm, 0.f);
    p.d_bits.assign(mm, 0);
    p.inv.assign(mm, 0.f);
    return p;
  }

  static float value(code_type c, const params_type& p, index r) {
    return p.scale[static_cast<std::size_t>(r)] * static_cast<float>(detail::gguf_iq4nl_values[c & 0x0fu]);
  }

  //! quantize_row_iq4_nl_impl's scale of one block x[0..32) (qw: its importance, or null).
  static void fit_block(const float* x, const float* qw, params_type& p, index i) {
    using detail::gguf_mul;
    constexpr int n = static_cast<int>(block_size);
    const auto& values = detail::gguf_iq4nl_values;
    float weight[n];
    if (qw) {
      const float sigma2 = detail::gguf_sum_squares(n, x) * (2.f / static_cast<float>(n));
      detail::gguf_importance_weights(n, x, qw, sigma2, weight);
    } else {
      for (int j = 0; j < n; ++j) weight[j] = x[j] * x[j];
    }
    float max = 0.f, amax = 0.f;
    detail::gguf_signed_max(n, x, max, amax);
    float d = 0.f;
    if (amax >= detail::gguf_group_max_eps) {
      auto sums = [&](float id, float& sumqx, float& sumq2) {
        sumqx = sumq2 = 0.f;
        for (int j = 0; j < n; ++j) {
          const int k = detail::gguf_iq4nl_index(gguf_mul(id, x[j]));
          const float q = static_cast<float>(values[static_cast<std::size_t>(k)]);
          sumqx += gguf_mul(gguf_mul(weight[j], q), x[j]);
          sumq2 += gguf_mul(gguf_mul(weight[j], q), q);
        }
      };
      d = -max / static_cast<float>(values[0]);
      float sumqx, sumq2;
      sums(1.f / d, sumqx, sumq2);
      if (sumq2 > 0.f) d = sumqx / sumq2;  // the reference divides unconditionally (see the file comment)
      float best = d * sumqx;
      for (int itry = -7; itry <= 7; ++itry) {
        sums(static_cast<float>(itry + values[0]) / max, sumqx, sumq2);
        if (sumq2 > 0.f && sumqx * sumqx > best * sumq2) {
          d = sumqx / sumq2;
          best = d * sumqx;
        }
      }
    }
    const auto r = static_cast<std::size_t>(i);
    p.d_bits[r] = to_f16_bits(d);
    p.scale[r] = f16_to_float(p.d_bits[r]);
    p.inv[r] = d != 0.f ? 1.f / d : 0.f;
  }

  gguf_quant_options opt_;
};

}  // namespace yaqa
