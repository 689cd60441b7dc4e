#pragma once
// Naive transcriptions of llama.cpp's reference GGUF quantizers (ggml-quants.c: the
// quantize_row_<type>_ref functions, the imatrix paths quantize_row_<type>_impl and their helpers
// make_qx_quants / make_q3_quants / best_index_int8), written plainly, row by row, C style, as
// the oracle of the family tests: they produce the block bytes of one row. Products that are
// summed go through a volatile (ref_mul), so the compiler cannot contract them into FMAs: these
// are the bytes of the reference built without contraction.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <yaqa/io/float16.hpp>

namespace yaqa::test::ref {

inline float ref_mul(float a, float b) {
  volatile float t = a * b;
  return t;
}

// nearest_int: the magic-number rounding (to nearest, ties to even).
inline int nearest_int(float fval) {
  float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}

inline std::uint16_t fp16(float x) { return to_f16_bits(x); }
inline float fp32(std::uint16_t h) { return f16_to_float(h); }

inline void put16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v & 0xff);
  p[1] = static_cast<std::uint8_t>(v >> 8);
}

// make_qx_quants(n, nmax, x, L, rmse_type = 1, qw)
inline float make_qx_quants(int n, int nmax, const float* x, std::int8_t* L, const float* qw) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < 1e-15f) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
    L[i] = static_cast<std::int8_t>(l + nmax);
    float w = qw ? qw[i] : x[i] * x[i];
    sumlx += ref_mul(ref_mul(w, x[i]), static_cast<float>(l));
    suml2 += ref_mul(ref_mul(w, static_cast<float>(l)), static_cast<float>(l));
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + ref_mul(0.1f, static_cast<float>(is))) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
      float w = qw ? qw[i] : x[i] * x[i];
      sumlx += ref_mul(ref_mul(w, x[i]), static_cast<float>(l));
      suml2 += ref_mul(ref_mul(w, static_cast<float>(l)), static_cast<float>(l));
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<std::int8_t>(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// make_q3_quants(n, nmax, x, L, do_rmse = true)
inline float make_q3_quants(int n, int nmax, const float* x, std::int8_t* L) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < 1e-15f) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
    L[i] = static_cast<std::int8_t>(l);
    float w = x[i] * x[i];
    sumlx += ref_mul(ref_mul(w, x[i]), static_cast<float>(l));
    suml2 += ref_mul(ref_mul(w, static_cast<float>(l)), static_cast<float>(l));
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      float w = x[i] * x[i];
      float slx = sumlx - ref_mul(ref_mul(w, x[i]), static_cast<float>(L[i]));
      if (slx > 0) {
        float sl2 = suml2 - ref_mul(ref_mul(w, static_cast<float>(L[i])), static_cast<float>(L[i]));
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = new_l < -nmax ? -nmax : new_l > nmax - 1 ? nmax - 1 : new_l;
        if (new_l != L[i]) {
          slx += ref_mul(ref_mul(w, x[i]), static_cast<float>(new_l));
          sl2 += ref_mul(ref_mul(w, static_cast<float>(new_l)), static_cast<float>(new_l));
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<std::int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

inline float sum_x2(int n, const float* x) {
  float s = 0;
  for (int j = 0; j < n; ++j) s += ref_mul(x[j], x[j]);
  return s;
}

// ---- Q8_0 / Q4_0 / Q5_0 (reference paths), one row of k weights -> k / 32 blocks

inline std::vector<std::uint8_t> q8_0_row(const float* x, int k) {
  std::vector<std::uint8_t> y(static_cast<std::size_t>(k / 32) * 34);
  for (int i = 0; i < k / 32; ++i) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(x[32 * i + j]));
    const float d = amax / 127;
    const float id = d ? 1.0f / d : 0.0f;
    std::uint8_t* b = y.data() + 34 * i;
    put16(b, fp16(d));
    for (int j = 0; j < 32; ++j)
      b[2 + j] = static_cast<std::uint8_t>(static_cast<std::int8_t>(std::round(x[32 * i + j] * id)));
  }
  return y;
}

// Q4_0 (nmax 8, 18-byte blocks) and Q5_0 (nmax 16, 22-byte blocks): d and the 32 codes (level + nmax).
inline void legacy_block_ref(const float* x, int nmax, std::uint16_t& d16, std::uint8_t* codes) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  const float d = max / -nmax;
  const float id = d ? 1.0f / d : 0.0f;
  d16 = fp16(d);
  for (int j = 0; j < 32; ++j) {
    const float v = ref_mul(x[j], id) + (nmax + 0.5f);
    const int c = static_cast<std::int8_t>(v);
    codes[j] = static_cast<std::uint8_t>(c < 2 * nmax - 1 ? c : 2 * nmax - 1);
  }
}

inline void legacy_pack(int nmax, std::uint16_t d16, const std::uint8_t* c, std::uint8_t* b) {
  put16(b, d16);
  if (nmax == 8) {
    for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<std::uint8_t>(c[j] | (c[j + 16] << 4));
  } else {
    std::uint32_t qh = 0;
    for (int j = 0; j < 16; ++j) {
      b[6 + j] = static_cast<std::uint8_t>((c[j] & 0x0F) | ((c[j + 16] & 0x0F) << 4));
      qh |= ((c[j] & 0x10u) >> 4) << j;
      qh |= ((c[j + 16] & 0x10u) >> 4) << (j + 16);
    }
    std::memcpy(b + 2, &qh, 4);
  }
}

inline std::vector<std::uint8_t> legacy_row(const float* x, int k, int nmax) {
  const int ts = nmax == 8 ? 18 : 22;
  std::vector<std::uint8_t> y(static_cast<std::size_t>(k / 32 * ts));
  for (int i = 0; i < k / 32; ++i) {
    std::uint16_t d16;
    std::uint8_t c[32];
    legacy_block_ref(x + 32 * i, nmax, d16, c);
    legacy_pack(nmax, d16, c, y.data() + ts * i);
  }
  return y;
}

// quantize_row_q4_0_impl / q5_0_impl's scale per block (fp16 bits), with importance qw (length k).
inline std::vector<std::uint16_t> legacy_imatrix_scales(const float* x, int k, int nmax, const float* qw) {
  const float sigma2 = sum_x2(k, x) / k;
  std::vector<std::uint16_t> d(static_cast<std::size_t>(k / 32));
  for (int ib = 0; ib < k / 32; ++ib) {
    float weight[32];
    std::int8_t L[32];
    for (int j = 0; j < 32; ++j)
      weight[j] = qw[32 * ib + j] * std::sqrt(sigma2 + ref_mul(x[32 * ib + j], x[32 * ib + j]));
    d[static_cast<std::size_t>(ib)] = fp16(make_qx_quants(32, nmax, x + 32 * ib, L, weight));
  }
  return d;
}

// ---- IQ4_NL (quantize_row_iq4_nl_impl with super block = block = 32, ntry 7)

inline constexpr std::int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                  1,    13,   25,  38,  53,  69,  89,  113};

// best_index_int8, written as a plain search for the nearest value (ties to the upper one).
inline int best_index_iq4nl(float x) {
  int best = 0;
  for (int i = 1; i < 16; ++i)
    if (x + x >= static_cast<float>(kvalues_iq4nl[i - 1] + kvalues_iq4nl[i])) best = i;
  return best;
}

inline std::vector<std::uint8_t> iq4_nl_row(const float* x0, int k, const float* qw0) {
  std::vector<std::uint8_t> y(static_cast<std::size_t>(k / 32 * 18));
  for (int ib = 0; ib < k / 32; ++ib) {
    const float* x = x0 + 32 * ib;
    const float* qw = qw0 ? qw0 + 32 * ib : nullptr;
    float weight[32];
    std::uint8_t L[32];
    float sigma2 = 0;
    for (int j = 0; j < 32; ++j) sigma2 += ref_mul(x[j], x[j]);
    sigma2 *= 2.f / 32;
    for (int j = 0; j < 32; ++j) weight[j] = qw ? qw[j] * std::sqrt(sigma2 + ref_mul(x[j], x[j])) : x[j] * x[j];
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j)
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    float dfin = 0;
    if (amax >= 1e-15f) {
      float d = -max / kvalues_iq4nl[0];
      float id = 1 / d;
      float sumqx = 0, sumq2 = 0;
      for (int j = 0; j < 32; ++j) {
        const float q = kvalues_iq4nl[best_index_iq4nl(id * x[j])];
        sumqx += ref_mul(ref_mul(weight[j], q), x[j]);
        sumq2 += ref_mul(ref_mul(weight[j], q), q);
      }
      d = sumqx / sumq2;
      float best = d * sumqx;
      for (int itry = -7; itry <= 7; ++itry) {
        id = (itry + kvalues_iq4nl[0]) / max;
        sumqx = sumq2 = 0;
        for (int j = 0; j < 32; ++j) {
          const float q = kvalues_iq4nl[best_index_iq4nl(id * x[j])];
          sumqx += ref_mul(ref_mul(weight[j], q), x[j]);
          sumq2 += ref_mul(ref_mul(weight[j], q), q);
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
          d = sumqx / sumq2;
          best = d * sumqx;
        }
      }
      dfin = d;
    }
    const float id = dfin ? 1 / dfin : 0;
    for (int j = 0; j < 32; ++j) L[j] = static_cast<std::uint8_t>(best_index_iq4nl(id * x[j]));
    std::uint8_t* b = y.data() + 18 * ib;
    put16(b, fp16(dfin));
    for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<std::uint8_t>(L[j] | (L[j + 16] << 4));
  }
  return y;
}

// ---- Q6_K (quantize_row_q6_K_ref, and _impl with qw)

inline std::vector<std::uint8_t> q6_k_row(const float* x, int k, const float* qw0) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(k / 256 * 210));
  for (int i = 0; i < k / 256; ++i, x += 256) {
    std::uint8_t* y = out.data() + 210 * i;
    std::int8_t L[256];
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, qw0 ? qw0 + 256 * i + 16 * ib : nullptr);
      scales[ib] = scale;
      if (std::fabs(scale) > max_abs_scale) {
        max_abs_scale = std::fabs(scale);
        max_scale = scale;
      }
    }
    if (max_abs_scale < 1e-15f) continue;  // all bytes 0 (d = +0)
    const float iscale = -128.f / max_scale;
    put16(y + 208, fp16(1 / iscale));
    std::int8_t sc[16];
    for (int ib = 0; ib < 16; ++ib) {
      const int v = nearest_int(iscale * scales[ib]);
      sc[ib] = static_cast<std::int8_t>(v < 127 ? v : 127);
      y[192 + ib] = static_cast<std::uint8_t>(sc[ib]);
    }
    for (int j = 0; j < 16; ++j) {
      const float d = fp32(static_cast<std::uint16_t>(y[208] | (y[209] << 8))) * sc[j];
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / d);
        l = l < -32 ? -32 : l > 31 ? 31 : l;
        L[16 * j + ii] = static_cast<std::int8_t>(l + 32);
      }
    }
    std::uint8_t* ql = y;
    std::uint8_t* qh = y + 128;
    for (int j = 0; j < 256; j += 128) {
      for (int l = 0; l < 32; ++l) {
        const int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
        ql[l] = static_cast<std::uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<std::uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<std::uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                          ((L[j + l + 96] >> 4) << 6));
      }
      ql += 64;
      qh += 32;
    }
  }
  return out;
}

// ---- Q3_K (quantize_row_q3_K_ref without qw, quantize_row_q3_K_impl with)

inline std::vector<std::uint8_t> q3_k_row(const float* x, int k, const float* qw0) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(k / 256 * 110), 0);
  for (int i = 0; i < k / 256; ++i, x += 256) {
    std::uint8_t* y = out.data() + 110 * i;
    std::uint8_t* hmask = y;
    std::uint8_t* qs = y + 32;
    std::uint8_t* sc = y + 96;
    std::int8_t L[256];
    float scales[16];
    std::uint16_t d16;
    if (!qw0) {
      float max_scale = 0, amax = 0;
      for (int j = 0; j < 16; ++j) {
        scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
        if (std::fabs(scales[j]) > amax) {
          amax = std::fabs(scales[j]);
          max_scale = scales[j];
        }
      }
      if (max_scale) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < 16; ++j) {
          int l = static_cast<std::int8_t>(nearest_int(iscale * scales[j]));
          l = (l < -32 ? -32 : l > 31 ? 31 : l) + 32;
          if (j < 8)
            sc[j] = static_cast<std::uint8_t>(l & 0xF);
          else
            sc[j - 8] = static_cast<std::uint8_t>(sc[j - 8] | ((l & 0xF) << 4));
          sc[j % 4 + 8] = static_cast<std::uint8_t>(sc[j % 4 + 8] | ((l >> 4) << (2 * (j / 4))));
        }
        d16 = fp16(1 / iscale);
      } else {
        d16 = fp16(0.f);
      }
    } else {
      const float* qwb = qw0 + 256 * i;
      const float sigma2 = 2 * sum_x2(256, x) / 256;
      float weight[16], sw[16];
      for (int j = 0; j < 16; ++j) {
        for (int l = 0; l < 16; ++l)
          weight[l] = qwb[16 * j + l] * std::sqrt(sigma2 + ref_mul(x[16 * j + l], x[16 * j + l]));
        float sumw = 0;
        for (int l = 0; l < 16; ++l) sumw += weight[l];
        sw[j] = sumw;
        scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
      }
      std::int8_t Ls[16];
      const float d_block = make_qx_quants(16, 32, scales, Ls, sw);
      for (int j = 0; j < 16; ++j) {
        int l = Ls[j];
        if (j < 8)
          sc[j] = static_cast<std::uint8_t>(l & 0xF);
        else
          sc[j - 8] = static_cast<std::uint8_t>(sc[j - 8] | ((l & 0xF) << 4));
        sc[j % 4 + 8] = static_cast<std::uint8_t>(sc[j % 4 + 8] | ((l >> 4) << (2 * (j / 4))));
      }
      d16 = fp16(d_block);
    }
    put16(y + 108, d16);
    for (int j = 0; j < 16; ++j) {
      int s = j < 8 ? sc[j] & 0xF : sc[j - 8] >> 4;
      s = (s | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
      const float d = fp32(d16) * s;
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / d);
        l = l < -4 ? -4 : l > 3 ? 3 : l;
        L[16 * j + ii] = static_cast<std::int8_t>(l + 4);
      }
    }
    int m = 0;
    std::uint8_t hm = 1;
    for (int j = 0; j < 256; ++j) {
      if (L[j] > 3) {
        hmask[m] = static_cast<std::uint8_t>(hmask[m] | hm);
        L[j] = static_cast<std::int8_t>(L[j] - 4);
      }
      if (++m == 32) {
        m = 0;
        hm = static_cast<std::uint8_t>(hm << 1);
      }
    }
    for (int j = 0; j < 256; j += 128)
      for (int l = 0; l < 32; ++l)
        qs[j / 4 + l] =
            static_cast<std::uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
  }
  return out;
}

}  // namespace yaqa::test::ref
