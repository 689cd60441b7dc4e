#pragma once
// A plain, loop-by-loop transcription of llama.cpp's K-quant scale fits (ggml-quants.c:
// make_qkx2_quants, make_qkx3_quants, make_qp_quants, and the scale parts of
// quantize_row_{q2,q4,q5}_K_ref / _impl), written from the published algorithm as the oracle for
// the fitted scales of gguf_q2_k / gguf_q4_k / gguf_q5_k. Compiled without FMA contraction (as
// the library computes), so the two agree bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <yaqa/io/float16.hpp>

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

namespace yaqa::test::kref {

inline int nearest_int(float v) {
  // ggml's trick: adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits.
  float val = v + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}

// make_qkx2_quants / make_qkx3_quants (weights always given here).
inline float qkx(int n, int nmax, const float* x, const float* weights, std::uint8_t* L, float* the_min,
                 float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * (x[i] - min));
    L[i] = (std::uint8_t)std::max(0, std::min(nmax, l));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  std::vector<std::uint8_t> Laux(n);
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = (std::uint8_t)l;
      float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// make_qp_quants
inline float qp(int n, int nmax, const float* x, std::uint8_t* L, const float* qw) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < 1e-15f) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = (std::uint8_t)nearest_int(iscale * x[i]);
  float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    float diff = x[i] - scale * L[i];
    best_mse += qw[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    float iscale_is = (0.1f * is + nmax) / max;
    float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      float diff = x[i] - scale_is * l;
      mse += qw[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = (std::uint8_t)l;
    sumlx += qw[i] * x[i] * l;
    suml2 += qw[i] * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      float w = qw[i];
      float slx = sumlx - w * x[i] * L[i];
      float sl2 = suml2 - w * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = (std::uint8_t)new_l;
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

// The fitted fields of one super-block.
struct block_fit {
  std::uint16_t d = 0, dmin = 0;
  int sc[16] = {}, m[16] = {};
};

// Q4_K (bits 4) / Q5_K (bits 5): reference (qw == nullptr) or imatrix path.
inline block_fit fit_k4(const float* x, const float* qw, int bits) {
  const int nmax = (1 << bits) - 1;
  float scales[8], mins[8], sw[8], weights[32];
  std::uint8_t L[32], Ls[8], Lm[8];
  block_fit out;
  if (!qw) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = bits == 4 ? qkx(32, nmax, x + 32 * j, weights, L, &mins[j], -1.f, 0.1f, 20, false)
                            : qkx(32, nmax, x + 32 * j, weights, L, &mins[j], -0.5f, 0.1f, 15, false);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
      out.sc[j] = std::min(63, nearest_int(inv_scale * scales[j]));
      out.m[j] = std::min(63, nearest_int(inv_min * mins[j]));
    }
    out.d = to_f16_bits(max_scale / 63.f);
    out.dmin = to_f16_bits(max_min / 63.f);
  } else {
    float sum_x2 = 0;
    for (int l = 0; l < 256; ++l) sum_x2 += x[l] * x[l];
    float sigma2 = 2 * sum_x2 / 256;
    for (int j = 0; j < 8; ++j) {
      for (int l = 0; l < 32; ++l) weights[l] = qw[32 * j + l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 32; ++l) sumw += weights[l];
      sw[j] = sumw;
      scales[j] = qkx(32, nmax, x + 32 * j, weights, L, &mins[j], -0.9f, 0.05f, 36, false);
    }
    out.d = to_f16_bits(qp(8, 63, scales, Ls, sw));
    out.dmin = to_f16_bits(qp(8, 63, mins, Lm, sw));
    for (int j = 0; j < 8; ++j) {
      out.sc[j] = Ls[j];
      out.m[j] = Lm[j];
    }
  }
  return out;
}

// Q2_K: reference (qw == nullptr) or imatrix path.
inline block_fit fit_q2(const float* x, const float* qw) {
  float scales[16], mins[16], sw[16], weights[16];
  std::uint8_t L[16], Ls[16], Lm[16];
  block_fit out;
  if (!qw) {
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = qkx(16, 3, x + 16 * j, weights, L, &mins[j], -0.5f, 0.1f, 15, true);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    for (int j = 0; j < 16; ++j) {
      out.sc[j] = max_scale > 0 ? nearest_int(15.f / max_scale * scales[j]) : 0;
      out.m[j] = max_min > 0 ? nearest_int(15.f / max_min * mins[j]) : 0;
    }
    out.d = to_f16_bits(max_scale > 0 ? max_scale / 15.f : 0.f);
    out.dmin = to_f16_bits(max_min > 0 ? max_min / 15.f : 0.f);
  } else {
    float sumx2 = 0;
    for (int j = 0; j < 256; ++j) sumx2 += x[j] * x[j];
    float sigma2 = sumx2 / 256;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = qw[16 * j + l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weights[l];
      sw[j] = sumw;
      scales[j] = qkx(16, 3, x + 16 * j, weights, L, &mins[j], -0.9f, 0.05f, 36, false);
    }
    out.d = to_f16_bits(qp(16, 15, scales, Ls, sw));
    out.dmin = to_f16_bits(qp(16, 15, mins, Lm, sw));
    for (int j = 0; j < 16; ++j) {
      out.sc[j] = Ls[j];
      out.m[j] = Lm[j];
    }
  }
  return out;
}

}  // namespace yaqa::test::kref

#if defined(__clang__)
#pragma clang fp contract(on)
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif
