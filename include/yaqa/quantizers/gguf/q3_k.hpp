#pragma once
//! \file
//! llama.cpp's Q3_K as a Quantizer: 256-weight super-blocks of 16 sub-blocks of 16 weights;
//! each sub-block has a 6-bit scale field l (sub-scale sc = l - 32) against the super-block's
//! fp16 d, each weight a 3-bit level q in [-4, 3]; dequantization is (d * sc) * q.
//! block_q3_K (110 bytes): hmask[32] (bit 2 of q + 4: element e at bit e / 32 of hmask[e % 32]),
//! qs[64] (low 2 bits: within each 128-weight half, qs[l] holds elements l, l + 32, l + 64,
//! l + 96 at bits 0, 2, 4, 6), scales[12] (the 16 fields: low nibbles in bytes 0..7, sub-block
//! j < 8 low half, j >= 8 high half of byte j - 8; the top 2 bits of field j at bits 2 (j / 4) of
//! byte 8 + j % 4), d. A code is q + 4.
//!
//! Fit (fit_all), per row and super-block:
//!   - no importance, quantize_row_q3_K_ref: s_k = make_q3_quants(16, 4, x) (symmetric_fit.hpp)
//!     per sub-block; max_scale = the s_k of largest magnitude; if it is nonzero,
//!     iscale = -32 / max_scale, l_k = clamp(nearest_int(iscale s_k), -32, 31) + 32,
//!     d = fp16(1 / iscale); else d = 0 and every l_k = 0 (sc = -32, effective scale 0).
//!   - with importance, quantize_row_q3_K_impl: sigma2 = 2 mean(x^2) over the super-block,
//!     weights qw_j sqrt(sigma2 + x_j^2), s_k = make_qx_quants(16, 4, x, weights), and the
//!     sub-scales themselves by d = make_qx_quants(16, 32, s, sw) (sw_k = the sub-block's weight
//!     sum), l_k its levels + 32, the block storing fp16(d).
//! quantize(), as the reference's final pass: level = nearest_int(x / (fp16(d) sc)) clamped to
//! [-4, 3]; a sub-block whose effective scale is 0 gets code 0 (the lowest level, as the reference
//! leaves an all-zero sub-block; every level dequantizes to 0 there).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/config.hpp>
#include <yaqa/io/float16.hpp>
#include <yaqa/io/gguf.hpp>
#include <yaqa/quantizers/gguf/common.hpp>
#include <yaqa/quantizers/gguf/symmetric_fit.hpp>

namespace yaqa {
namespace detail {

struct gguf_q3_k_traits {
  static constexpr const char* name = "yaqa::gguf_q3_k";
  static constexpr ggml_type type = ggml_type::q3_k;
  static constexpr int bits = 3;
  static constexpr int qmin = -4;
  static constexpr int qmax = 3;

  static void fit_super_block(const float* x, const float* qw, std::uint16_t& d_bits, std::uint8_t* sub, float* eff) {
    float scales[16];
    std::int8_t L[16];
    if (!qw) {
      float max_scale = 0.f, amax = 0.f;
      for (int j = 0; j < 16; ++j) {
        scales[j] = gguf_make_q3_quants(16, 4, x + 16 * j, L);
        const float s = std::fabs(scales[j]);
        if (s > amax) {
          amax = s;
          max_scale = scales[j];
        }
      }
      if (max_scale != 0.f) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < 16; ++j)
          sub[j] = static_cast<std::uint8_t>(std::max(-32, std::min(31, gguf_nearest_int(iscale * scales[j]))) + 32);
        d_bits = to_f16_bits(1.f / iscale);
      } else {
        std::fill(sub, sub + 16, std::uint8_t{0});
        d_bits = to_f16_bits(0.f);
      }
    } else {
      const float sigma2 = gguf_sum_squares(256, x) * 2.f / 256.f;
      float weight[16], sw[16];
      for (int j = 0; j < 16; ++j) {
        gguf_importance_weights(16, x + 16 * j, qw + 16 * j, sigma2, weight);
        float sumw = 0.f;
        for (int l = 0; l < 16; ++l) sumw += weight[l];
        sw[j] = sumw;
        scales[j] = gguf_make_qx_quants(16, 4, x + 16 * j, L, weight);
      }
      std::int8_t Ls[16];
      const float d_block = gguf_make_qx_quants(16, 32, scales, Ls, sw);
      for (int j = 0; j < 16; ++j) sub[j] = static_cast<std::uint8_t>(Ls[j]);
      d_bits = to_f16_bits(d_block);
    }
    const float d = f16_to_float(d_bits);
    for (int j = 0; j < 16; ++j) eff[j] = d * static_cast<float>(static_cast<int>(sub[j]) - 32);
  }

  static void pack(const std::uint8_t* L, std::uint16_t d_bits, const std::uint8_t* sub, std::byte* blk) {
    std::uint8_t hmask[32] = {}, qs[64] = {}, sc[12] = {};
    for (int e = 0; e < 256; ++e)
      hmask[e % 32] = static_cast<std::uint8_t>(hmask[e % 32] | (((L[e] >> 2) & 1u) << (e / 32)));
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const std::uint8_t* q = L + 128 * h;
        qs[32 * h + l] = static_cast<std::uint8_t>((q[l] & 3u) | ((q[l + 32] & 3u) << 2) | ((q[l + 64] & 3u) << 4) |
                                                   ((q[l + 96] & 3u) << 6));
      }
    for (int j = 0; j < 16; ++j) {
      const unsigned l = sub[j] & 63u;
      if (j < 8)
        sc[j] = static_cast<std::uint8_t>(sc[j] | (l & 0x0fu));
      else
        sc[j - 8] = static_cast<std::uint8_t>(sc[j - 8] | ((l & 0x0fu) << 4));
      sc[8 + j % 4] = static_cast<std::uint8_t>(sc[8 + j % 4] | ((l >> 4) << (2 * (j / 4))));
    }
    for (int k = 0; k < 32; ++k) blk[k] = static_cast<std::byte>(hmask[k]);
    for (int k = 0; k < 64; ++k) blk[32 + k] = static_cast<std::byte>(qs[k]);
    for (int k = 0; k < 12; ++k) blk[96 + k] = static_cast<std::byte>(sc[k]);
    gguf_put_u16(blk + 108, d_bits);
  }

  static void unpack(const std::byte* blk, float* y) {
    const float d = f16_to_float(gguf_get_u16(blk + 108));
    float dl[16];
    for (int j = 0; j < 16; ++j) {
      const unsigned lo = (gguf_get_u8(blk + 96 + j % 8) >> (j < 8 ? 0 : 4)) & 0x0fu;
      const unsigned hi = (gguf_get_u8(blk + 104 + j % 4) >> (2 * (j / 4))) & 0x03u;
      dl[j] = d * static_cast<float>(static_cast<int>(lo | (hi << 4)) - 32);
    }
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, s = (e % 128) / 32, l = e % 32;
      const int low = (gguf_get_u8(blk + 32 + 32 * h + l) >> (2 * s)) & 3;
      const int high = (gguf_get_u8(blk + l) >> (4 * h + s)) & 1;
      y[e] = dl[e / 16] * static_cast<float>(low - (high ? 0 : 4));
    }
  }
};

}  // namespace detail

//! GGUF Q3_K (see q3_k.hpp's file comment).
template <Scalar T>
class gguf_q3_k : public detail::gguf_sub_block_quantizer<T, detail::gguf_q3_k_traits> {
 public:
  using detail::gguf_sub_block_quantizer<T, detail::gguf_q3_k_traits>::gguf_sub_block_quantizer;
};

}  // namespace yaqa
