#pragma once
//! \file
//! GGUF Q2_K (llama.cpp's 2.625 bits-per-weight K-quant) as a Quantizer.
//!
//! A 256-weight super-block holds sixteen bytes of 4-bit sub-block scales sc_j (low nibble) and
//! mins m_j (high nibble), 2-bit codes, and fp16 d and dmin; weight k of sub-block j = k / 16
//! dequantizes to
//!     (fp16(d) * sc_j) * q - fp16(dmin) * m_j          (in float, the product rounded first).
//! The parameter group is the 16-weight sub-block.
//!
//! fit_all follows llama.cpp's reference:
//! - no importance (quantize_row_q2_K_ref): each sub-block's (scale, min) from make_qkx2_quants
//!   with weights |x| and the absolute error (16 grids from nmax - 0.5, step 0.1), then
//!   d = max scale / 15, dmin = max min / 15 (fp16), sc_j = nearest_int(15 * scale_j / max scale),
//!   m_j likewise.
//! - importance (quantize_row_q2_K_impl): weights imp * sqrt(sigma2 + x^2) with sigma2 = mean x^2
//!   over the super-block, make_qkx3_quants (37 grids from nmax - 0.9, step 0.05, squared
//!   error), then the scales and mins quantized to 4 bits by make_qp_quants, weighted by each
//!   sub-block's total weight; d and dmin are their results in fp16.
//! quantize() then picks each code with the scales held fixed, as the reference's last pass
//! does: nearest_int((x + min) / scale), clamped to [0, 3].
#include <array>
#include <cstddef>
#include <cstdint>

#include <yaqa/core/concepts.hpp>
#include <yaqa/io/float16.hpp>
#include <yaqa/io/gguf.hpp>
#include <yaqa/quantizers/gguf/affine_fit.hpp>
#include <yaqa/quantizers/gguf/common.hpp>

namespace yaqa {
namespace detail {

struct q2_k_format {
  static constexpr ggml_type type = ggml_type::q2_k;
  static constexpr int bits = 2;
  static constexpr int sub = 16;
  static constexpr int sc_max = 15;
  static constexpr const char* name = "yaqa::gguf_q2_k";
  static constexpr const char* quantize_what = "yaqa::gguf_q2_k::quantize";

  static void fit_superblock(const float* x, const float* imp, k_superblock& out) {
    std::array<std::uint8_t, 16> L{}, Laux{}, bytes{};
    std::array<float, 16> weights{}, scales{}, mins{}, sw{};
    if (imp == nullptr) {  // quantize_row_q2_K_ref
      const float q4scale = 15.f;
      float max_scale = 0, max_min = 0;
      for (int j = 0; j < 16; ++j) {
        const float* xb = x + 16 * j;
        for (int l = 0; l < 16; ++l) weights[l] = std::fabs(xb[l]);
        scales[j] = affine_search(16, 3, xb, weights.data(), L.data(), &mins[j], Laux.data(), -0.5f, 0.1f, 15, true,
                                  false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
      }
      // The byte arithmetic of the reference (an int stored into a byte wraps).
      if (max_scale > 0) {
        const float iscale = q4scale / max_scale;
        for (int j = 0; j < 16; ++j) bytes[j] = static_cast<std::uint8_t>(gguf_nearest_int(iscale * scales[j]));
        out.d = to_f16_bits(max_scale / q4scale);
      } else {
        bytes.fill(0);
        out.d = to_f16_bits(0.f);
      }
      if (max_min > 0) {
        const float iscale = q4scale / max_min;
        for (int j = 0; j < 16; ++j)
          bytes[j] = static_cast<std::uint8_t>(bytes[j] |
                                               static_cast<std::uint8_t>(gguf_nearest_int(iscale * mins[j]) << 4));
        out.dmin = to_f16_bits(max_min / q4scale);
      } else {
        out.dmin = to_f16_bits(0.f);
      }
    } else {  // quantize_row_q2_K_impl with quant_weights
      const float sigma2 = gguf_sum_squares(256, x) / 256;
      for (int j = 0; j < 16; ++j) {
        const float* xb = x + 16 * j;
        const float* qw = imp + 16 * j;
        for (int l = 0; l < 16; ++l) weights[l] = qw[l] * std::sqrt(sigma2 + gguf_mul(xb[l], xb[l]));
        float sumw = 0;
        for (int l = 0; l < 16; ++l) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = affine_search(16, 3, xb, weights.data(), L.data(), &mins[j], Laux.data(), -0.9f, 0.05f, 36, false,
                                  true);
      }
      std::array<std::uint8_t, 16> ls{}, lm{};
      const float dm = positive_scale_search(16, 15, scales.data(), ls.data(), sw.data());
      const float mm = positive_scale_search(16, 15, mins.data(), lm.data(), sw.data());
      out.d = to_f16_bits(dm);
      out.dmin = to_f16_bits(mm);
      for (int j = 0; j < 16; ++j) bytes[j] = static_cast<std::uint8_t>(ls[j] | (lm[j] << 4));
    }
    for (int j = 0; j < 16; ++j) {
      out.sc[j] = bytes[j] & 0xF;
      out.m[j] = static_cast<std::uint8_t>(bytes[j] >> 4);
    }
  }

  //! block_q2_K: scales[16] (sc | m << 4), qs[64], d, dmin (fp16). qs byte 32h + l holds the
  //! codes 128h + 32s + l in bits 2s..2s+1 (s = 0..3).
  static void encode_block(const k_superblock& s, const std::uint8_t* q, std::byte* out) {
    for (int j = 0; j < 16; ++j) out[j] = static_cast<std::byte>(s.sc[j] | (s.m[j] << 4));
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const std::uint8_t* c = q + 128 * h + l;
        out[16 + 32 * h + l] =
            static_cast<std::byte>((c[0] & 3) | ((c[32] & 3) << 2) | ((c[64] & 3) << 4) | ((c[96] & 3) << 6));
      }
    gguf_put_u16(out + 80, s.d);
    gguf_put_u16(out + 82, s.dmin);
  }

  static void decode_block(const std::byte* in, float* out) {
    const float d = f16_to_float(gguf_get_u16(in + 80));
    const float dmin = f16_to_float(gguf_get_u16(in + 82));
    for (int j = 0; j < 16; ++j) {
      const unsigned sc = std::to_integer<unsigned>(in[j]);
      const float dl = d * static_cast<float>(sc & 0xF);
      const float ml = dmin * static_cast<float>(sc >> 4);
      for (int l = 0; l < 16; ++l) {
        const int k = 16 * j + l;  // k = 128h + 32s + l'
        const int h = k / 128, s = (k % 128) / 32, lp = k % 32;
        const unsigned c = (std::to_integer<unsigned>(in[16 + 32 * h + lp]) >> (2 * s)) & 3u;
        out[k] = round_to_type(dl * static_cast<float>(c)) - ml;
      }
    }
  }
};

}  // namespace detail

//! GGUF Q2_K: 2-bit codes, per 16-weight sub-block a 4-bit scale and min against the 256-weight
//! super-block's fp16 d and dmin (84 bytes per 256 weights, 2.625 bits per weight). See the file
//! comment for fit_all; quantize() rounds to the nearest level with the fitted scales fixed.
template <Scalar T>
class gguf_q2_k : public detail::gguf_scale_min_quantizer<T, detail::q2_k_format> {
  using base = detail::gguf_scale_min_quantizer<T, detail::q2_k_format>;

 public:
  using base::base;
};

}  // namespace yaqa
