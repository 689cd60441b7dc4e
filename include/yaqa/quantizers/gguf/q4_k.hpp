#pragma once
//! \file
//! GGUF Q4_K and Q5_K (llama.cpp's 4.5 and 5.5 bits-per-weight K-quants) as Quantizers.
//!
//! A 256-weight super-block holds fp16 d and dmin, eight 6-bit sub-block scales sc_j and mins
//! m_j (12 packed bytes) and one 4-bit (Q4_K) or 5-bit (Q5_K) code per weight; weight k of
//! sub-block j = k / 32 dequantizes to
//!     (fp16(d) * sc_j) * q - fp16(dmin) * m_j          (in float, the product rounded first).
//! The parameter group is the 32-weight sub-block.
//!
//! fit_all follows llama.cpp's reference:
//! - no importance (quantize_row_q4_K_ref / q5_K_ref): each sub-block's (scale, min) from
//!   make_qkx2_quants with weights sqrt(mean x^2) + |x| (Q4_K: 21 grids from nmax - 1,
//!   step 0.1; Q5_K: 16 grids from nmax - 0.5), then d = max scale / 63, dmin = max min / 63
//!   (fp16), sc_j = nearest_int(63 * scale_j / max scale) and the same for the mins.
//! - importance (quantize_row_q4_K_impl / q5_K_impl, llama.cpp's imatrix path): weights
//!   imp * sqrt(sigma2 + x^2) with sigma2 = 2 mean x^2 over the super-block, make_qkx3_quants
//!   (37 grids from nmax - 0.9, step 0.05), then the sub-block scales and mins are quantized to
//!   6 bits by make_qp_quants, weighted by each sub-block's total weight.
//! quantize() then picks each code with the scales held fixed, as the reference's last pass
//! does: nearest_int((x + min) / scale), clamped.
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

//! The 12-byte packing of eight 6-bit scales and mins of Q4_K / Q5_K (ggml-common.h's
//! block_q4_K::scales): bytes 0-3 hold sc_0..3 (low 6 bits) and the top 2 bits of sc_4..7,
//! bytes 4-7 the same for the mins, bytes 8-11 the low 4 bits of sc_4..7 and m_4..7.
inline void pack_scales_k4(const std::uint8_t* ls, const std::uint8_t* lm, std::uint8_t* q) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      q[j] = ls[j];
      q[j + 4] = lm[j];
    } else {
      q[j + 4] = static_cast<std::uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      q[j - 4] = static_cast<std::uint8_t>(q[j - 4] | ((ls[j] >> 4) << 6));
      q[j] = static_cast<std::uint8_t>(q[j] | ((lm[j] >> 4) << 6));
    }
  }
}

//! Sub-block j's scale and min from the 12 packed bytes (get_scale_min_k4).
inline void unpack_scale_min_k4(int j, const std::uint8_t* q, std::uint8_t& sc, std::uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = static_cast<std::uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = static_cast<std::uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

//! Q4_K (bits 4) and Q5_K (bits 5).
template <int code_bits>
struct k4_format {
  static_assert(code_bits == 4 || code_bits == 5);
  static constexpr int bits = code_bits;
  static constexpr ggml_type type = bits == 4 ? ggml_type::q4_k : ggml_type::q5_k;
  static constexpr int sub = 32;
  static constexpr int sc_max = 63;
  static constexpr const char* name = bits == 4 ? "yaqa::gguf_q4_k" : "yaqa::gguf_q5_k";
  static constexpr const char* quantize_what = bits == 4 ? "yaqa::gguf_q4_k::quantize" : "yaqa::gguf_q5_k::quantize";
  static constexpr int nmax = (1 << bits) - 1;

  static void fit_superblock(const float* x, const float* imp, k_superblock& out) {
    std::array<std::uint8_t, 32> L{}, Laux{};
    std::array<float, 32> weights{};
    std::array<float, 8> scales{}, mins{}, sw{};
    std::array<std::uint8_t, 8> ls{}, lm{};
    float d_block = 0, m_block = 0;
    if (imp == nullptr) {  // quantize_row_q{4,5}_K_ref
      float max_scale = 0, max_min = 0;
      for (int j = 0; j < 8; ++j) {
        const float* xb = x + 32 * j;
        const float av_x = std::sqrt(gguf_sum_squares(32, xb) / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xb[l]);
        scales[j] = bits == 4 ? affine_search(32, nmax, xb, weights.data(), L.data(), &mins[j], Laux.data(), -1.f,
                                              0.1f, 20, false, false)
                              : affine_search(32, nmax, xb, weights.data(), L.data(), &mins[j], Laux.data(), -0.5f,
                                              0.1f, 15, false, false);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
      }
      const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
      const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
      for (int j = 0; j < 8; ++j) {
        // As the reference: the int lands in a byte (wrapping), then is capped at 63.
        const auto s = static_cast<std::uint8_t>(gguf_nearest_int(inv_scale * scales[j]));
        const auto mm = static_cast<std::uint8_t>(gguf_nearest_int(inv_min * mins[j]));
        ls[j] = std::min<std::uint8_t>(63, s);
        lm[j] = std::min<std::uint8_t>(63, mm);
      }
      d_block = max_scale / 63.f;
      m_block = max_min / 63.f;
    } else {  // quantize_row_q{4,5}_K_impl with quant_weights
      const float sigma2 = 2 * gguf_sum_squares(256, x) / 256;
      for (int j = 0; j < 8; ++j) {
        const float* xb = x + 32 * j;
        const float* qw = imp + 32 * j;
        for (int l = 0; l < 32; ++l) weights[l] = qw[l] * std::sqrt(sigma2 + gguf_mul(xb[l], xb[l]));
        float sumw = 0;
        for (int l = 0; l < 32; ++l) sumw += weights[l];
        sw[j] = sumw;
        scales[j] = affine_search(32, nmax, xb, weights.data(), L.data(), &mins[j], Laux.data(), -0.9f, 0.05f, 36,
                                  false, true);
      }
      d_block = positive_scale_search(8, 63, scales.data(), ls.data(), sw.data());
      m_block = positive_scale_search(8, 63, mins.data(), lm.data(), sw.data());
      if (bits == 5)  // q5_K_impl caps the levels at 63 (q4_K_impl packs them as they are)
        for (int j = 0; j < 8; ++j) {
          ls[j] = std::min<std::uint8_t>(63, ls[j]);
          lm[j] = std::min<std::uint8_t>(63, lm[j]);
        }
    }
    std::array<std::uint8_t, 12> packed{};
    pack_scales_k4(ls.data(), lm.data(), packed.data());
    out.d = to_f16_bits(d_block);
    out.dmin = to_f16_bits(m_block);
    for (int j = 0; j < 8; ++j) unpack_scale_min_k4(j, packed.data(), out.sc[j], out.m[j]);
  }

  //! block_q4_K: d, dmin (fp16), scales[12], qs[128]; block_q5_K: d, dmin, scales[12], qh[32],
  //! qs[128]. qs byte 32c + l holds code 64c + l (low nibble) and 64c + 32 + l (high nibble);
  //! qh byte l holds the 5th bit of code 32j + l in bit j.
  static void encode_block(const k_superblock& s, const std::uint8_t* q, std::byte* out) {
    gguf_put_u16(out, s.d);
    gguf_put_u16(out + 2, s.dmin);
    std::array<std::uint8_t, 12> packed{};
    pack_scales_k4(s.sc.data(), s.m.data(), packed.data());
    for (int k = 0; k < 12; ++k) out[4 + k] = static_cast<std::byte>(packed[k]);
    std::byte* qs = out + 16;
    if constexpr (bits == 5) {
      std::byte* qh = out + 16;
      qs = out + 48;
      for (int l = 0; l < 32; ++l) {
        unsigned h = 0;
        for (int j = 0; j < 8; ++j) h |= unsigned(q[32 * j + l] >> 4) << j;
        qh[l] = static_cast<std::byte>(h);
      }
    }
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        qs[32 * c + l] = static_cast<std::byte>((q[64 * c + l] & 0xF) | ((q[64 * c + 32 + l] & 0xF) << 4));
  }

  static void decode_block(const std::byte* in, float* out) {
    const float d = f16_to_float(gguf_get_u16(in));
    const float dmin = f16_to_float(gguf_get_u16(in + 2));
    std::array<std::uint8_t, 12> packed{};
    for (int k = 0; k < 12; ++k) packed[k] = std::to_integer<std::uint8_t>(in[4 + k]);
    const std::byte* qs = in + (bits == 5 ? 48 : 16);
    const std::byte* qh = in + 16;
    for (int j = 0; j < 8; ++j) {
      std::uint8_t sc = 0, m = 0;
      unpack_scale_min_k4(j, packed.data(), sc, m);
      const float d1 = d * static_cast<float>(sc);
      const float m1 = dmin * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) {
        const unsigned byte = std::to_integer<unsigned>(qs[32 * (j / 2) + l]);
        unsigned c = (j % 2 == 0 ? byte : byte >> 4) & 0xF;
        if constexpr (bits == 5) c |= ((std::to_integer<unsigned>(qh[l]) >> j) & 1u) << 4;
        out[32 * j + l] = round_to_type(d1 * static_cast<float>(c)) - m1;
      }
    }
  }
};

}  // namespace detail

//! GGUF Q4_K: 4-bit codes, per 32-weight sub-block a 6-bit scale and min against the 256-weight
//! super-block's fp16 d and dmin (144 bytes per 256 weights, 4.5 bits per weight). See the file
//! comment for fit_all; quantize() rounds to the nearest level with the fitted scales fixed.
template <Scalar T>
class gguf_q4_k : public detail::gguf_scale_min_quantizer<T, detail::k4_format<4>> {
  using base = detail::gguf_scale_min_quantizer<T, detail::k4_format<4>>;

 public:
  using base::base;
};

//! GGUF Q5_K: Q4_K's scale structure with 5-bit codes (176 bytes per 256 weights, 5.5 bits
//! per weight).
template <Scalar T>
class gguf_q5_k : public detail::gguf_scale_min_quantizer<T, detail::k4_format<5>> {
  using base = detail::gguf_scale_min_quantizer<T, detail::k4_format<5>>;

 public:
  using base::base;
};

}  // namespace yaqa
