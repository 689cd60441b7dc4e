#pragma once
//! \file
//! llama.cpp's Q6_K as a Quantizer: 256-weight super-blocks of 16 sub-blocks of 16 weights;
//! each sub-block has an int8 scale sc against the super-block's fp16 d, each weight a 6-bit
//! level q in [-32, 31]; dequantization is (d * sc) * q. block_q6_K (210 bytes): ql[128] (low 4
//! bits of q + 32), qh[64] (high 2 bits), int8 scales[16], d. Within each 128-weight half,
//! ql[l] holds elements l (low nibble) and l + 64 (high), ql[l + 32] elements l + 32 and l + 96,
//! qh[l] the high bits of l, l + 32, l + 64, l + 96 at bits 0, 2, 4, 6. A code is q + 32.
//!
//! Fit (fit_all), per row and super-block, llama.cpp's quantize_row_q6_K_ref (no importance) /
//! quantize_row_q6_K_impl (importance):
//!   - each sub-block's scale s_k = make_qx_quants(16, 32, x, weights) (symmetric_fit.hpp) with
//!     weights x^2, or the importance itself (the reference's impl passes the imatrix as is);
//!   - max_scale = the s_k of largest magnitude; if it is below 1e-15 the super-block is zero
//!     (d = 0, all sc = 0); else iscale = -128 / max_scale, d = fp16(1 / iscale),
//!     sc_k = min(127, nearest_int(iscale s_k)).
//! quantize(), as the reference's final pass: level = nearest_int(x / (fp16(d) sc)) clamped to
//! [-32, 31]; a sub-block whose effective scale is 0 gets code 0 (the lowest level, as the reference
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

struct gguf_q6_k_traits {
  static constexpr const char* name = "yaqa::gguf_q6_k";
  static constexpr ggml_type type = ggml_type::q6_k;
  static constexpr int bits = 6;
  static constexpr int qmin = -32;
  static constexpr int qmax = 31;

  static void fit_super_block(const float* x, const float* qw, std::uint16_t& d_bits, std::uint8_t* sub, float* eff) {
    float scales[16];
    std::int8_t L[16];
    float max_scale = 0.f, max_abs_scale = 0.f;
    for (int ib = 0; ib < 16; ++ib) {
      const float s = gguf_make_qx_quants(16, 32, x + 16 * ib, L, qw ? qw + 16 * ib : nullptr);
      scales[ib] = s;
      if (std::fabs(s) > max_abs_scale) {
        max_abs_scale = std::fabs(s);
        max_scale = s;
      }
    }
    if (max_abs_scale < gguf_group_max_eps) {
      d_bits = to_f16_bits(0.f);
      std::fill(sub, sub + 16, std::uint8_t{0});
      std::fill(eff, eff + 16, 0.f);
      return;
    }
    const float iscale = -128.f / max_scale;
    d_bits = to_f16_bits(1.f / iscale);
    const float d = f16_to_float(d_bits);
    for (int ib = 0; ib < 16; ++ib) {
      const int sc = std::max(-128, std::min(127, gguf_nearest_int(iscale * scales[ib])));
      sub[ib] = static_cast<std::uint8_t>(static_cast<std::int8_t>(sc));
      eff[ib] = d * static_cast<float>(sc);
    }
  }

  static void pack(const std::uint8_t* L, std::uint16_t d_bits, const std::uint8_t* sub, std::byte* blk) {
    std::byte* ql = blk;
    std::byte* qh = blk + 128;
    for (int h = 0; h < 2; ++h) {
      const std::uint8_t* q = L + 128 * h;
      for (int l = 0; l < 32; ++l) {
        ql[64 * h + l] = static_cast<std::byte>((q[l] & 0x0fu) | ((q[l + 64] & 0x0fu) << 4));
        ql[64 * h + l + 32] = static_cast<std::byte>((q[l + 32] & 0x0fu) | ((q[l + 96] & 0x0fu) << 4));
        qh[32 * h + l] = static_cast<std::byte>((q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) |
                                                ((q[l + 96] >> 4) << 6));
      }
    }
    for (int k = 0; k < 16; ++k) blk[192 + k] = static_cast<std::byte>(sub[k]);
    gguf_put_u16(blk + 208, d_bits);
  }

  static void unpack(const std::byte* blk, float* y) {
    const float d = f16_to_float(gguf_get_u16(blk + 208));
    float dl[16];
    for (int k = 0; k < 16; ++k)
      dl[k] = d * static_cast<float>(static_cast<std::int8_t>(gguf_get_u8(blk + 192 + k)));
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, quarter = (e % 128) / 32, l = e % 32;
      const unsigned lo = (gguf_get_u8(blk + 64 * h + l + (quarter & 1) * 32) >> ((quarter >> 1) * 4)) & 0x0fu;
      const unsigned hi = (gguf_get_u8(blk + 128 + 32 * h + l) >> (2 * quarter)) & 0x03u;
      y[e] = dl[e / 16] * static_cast<float>(static_cast<int>(lo | (hi << 4)) - 32);
    }
  }
};

}  // namespace detail

//! GGUF Q6_K (see q6_k.hpp's file comment).
template <Scalar T>
class gguf_q6_k : public detail::gguf_sub_block_quantizer<T, detail::gguf_q6_k_traits> {
 public:
  using detail::gguf_sub_block_quantizer<T, detail::gguf_q6_k_traits>::gguf_sub_block_quantizer;
};

}  // namespace yaqa
