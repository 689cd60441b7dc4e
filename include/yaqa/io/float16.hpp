#pragma once
//! \file
//! Bit-exact conversions between float/double and the storage formats of checkpoints: IEEE
//! binary16 (F16), bfloat16 (BF16) and, for reading only, the two 8-bit float formats
//! (F8_E4M3 "FN" and F8_E5M2). Written here rather than relying on _Float16 or F16C so the
//! results are identical on every compiler and CPU.
//!
//! Widening (F16/BF16/F8 -> float) is exact. Narrowing (float or double -> F16/BF16) rounds to
//! nearest, ties to even, in one step from the source value: double is never rounded to float
//! first, because that double rounding can land exactly on a tie and then round the wrong way.
//! Overflow gives Inf; values below half the smallest subnormal give a signed zero; NaN stays
//! NaN (sign and the leading payload bits kept, quiet bit set so the payload is never zero).
#include <bit>
#include <cstdint>

namespace yaqa {
namespace detail {

//! IEEE-style narrowing of a source float bit pattern (exp_bits/man_bits of the source given by
//! the template) to a destination format with dst_exp exponent bits and dst_man mantissa bits.
//! Every intermediate fits in 64-bit integers for sources up to double.
template <int src_exp, int src_man, int dst_exp, int dst_man, class Out, class In>
constexpr Out narrow_float_bits(In x) {
  static_assert(src_man > dst_man && src_exp >= dst_exp);
  using u64 = std::uint64_t;
  constexpr int shift = src_man - dst_man;
  constexpr u64 src_exp_max = (u64{1} << src_exp) - 1;
  constexpr std::int64_t src_bias = (std::int64_t{1} << (src_exp - 1)) - 1;
  constexpr std::int64_t dst_bias = (std::int64_t{1} << (dst_exp - 1)) - 1;
  constexpr u64 dst_exp_max = (u64{1} << dst_exp) - 1;
  constexpr u64 dst_inf = dst_exp_max << dst_man;

  const u64 bits = static_cast<u64>(x);
  const u64 sign = (bits >> (src_exp + src_man)) & 1u;
  const u64 e = (bits >> src_man) & src_exp_max;
  const u64 m = bits & ((u64{1} << src_man) - 1);
  const u64 out_sign = sign << (dst_exp + dst_man);

  if (e == src_exp_max) {
    if (m == 0) return static_cast<Out>(out_sign | dst_inf);
    // NaN: keep the top payload bits and force the quiet bit, so the result is still a NaN.
    return static_cast<Out>(out_sign | dst_inf | (u64{1} << (dst_man - 1)) | (m >> shift));
  }
  // value = sig * 2^(unbiased - src_man), with sig carrying the implicit bit for normals.
  const bool src_normal = e != 0;
  const u64 sig = src_normal ? (m | (u64{1} << src_man)) : m;
  const std::int64_t unbiased = src_normal ? std::int64_t(e) - src_bias : 1 - src_bias;
  const std::int64_t dst_e = unbiased + dst_bias;  // destination biased exponent if normal
  if (dst_e >= std::int64_t(dst_exp_max)) return static_cast<Out>(out_sign | dst_inf);

  u64 base = 0;
  std::int64_t total_shift = shift;
  if (dst_e >= 1 && src_normal) {
    // Normal result: (dst_e - 1) << dst_man plus the shifted significand (whose implicit bit
    // lands on bit dst_man and so adds the final 1 to the exponent field).
    base = u64(dst_e - 1) << dst_man;
  } else {
    // Subnormal (or zero) result: the significand is shifted further right by 1 - dst_e.
    total_shift = shift + 1 - dst_e;
    if (total_shift > src_man + 1) return static_cast<Out>(out_sign);  // below half the min
  }
  const u64 kept = sig >> total_shift;
  const u64 rest = sig & ((u64{1} << total_shift) - 1);
  const u64 half = u64{1} << (total_shift - 1);
  u64 r = base + kept;
  if (rest > half || (rest == half && (r & 1u))) ++r;  // a carry may reach Inf: correct
  return static_cast<Out>(out_sign | r);
}

}  // namespace detail

//! Exact value of an IEEE binary16 bit pattern (NaN payloads and signed zeros preserved).
//! The three cases are all computed and then selected with masks (no branches), so array loops
//! vectorize.
constexpr float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1fu;
  const std::uint32_t m = h & 0x3ffu;
  const std::uint32_t normal = ((e + 112u) << 23) | (m << 13);  // rebias 15 -> 127
  const std::uint32_t special = 0x7f800000u | (m << 13);       // Inf / NaN
  const std::uint32_t subnormal = std::bit_cast<std::uint32_t>(float(m) * 0x1p-24f);  // exact
  const std::uint32_t is_special = 0u - std::uint32_t(e == 0x1f);  // all ones or zero
  const std::uint32_t is_sub = 0u - std::uint32_t(e == 0);
  const std::uint32_t mag = (special & is_special) | (subnormal & is_sub) | (normal & ~(is_special | is_sub));
  return std::bit_cast<float>(sign | mag);
}

//! Exact value of a bfloat16 bit pattern (the top half of a float).
constexpr float bf16_to_float(std::uint16_t b) {
  return std::bit_cast<float>(std::uint32_t(b) << 16);
}

//! IEEE binary16 bit pattern nearest to x (ties to even; overflow to Inf; NaN stays NaN).
constexpr std::uint16_t to_f16_bits(float x) {
  return detail::narrow_float_bits<8, 23, 5, 10, std::uint16_t>(std::bit_cast<std::uint32_t>(x));
}
constexpr std::uint16_t to_f16_bits(double x) {
  return detail::narrow_float_bits<11, 52, 5, 10, std::uint16_t>(std::bit_cast<std::uint64_t>(x));
}

//! bfloat16 bit pattern nearest to x (ties to even; overflow to Inf; NaN stays NaN).
constexpr std::uint16_t to_bf16_bits(float x) {
  return detail::narrow_float_bits<8, 23, 8, 7, std::uint16_t>(std::bit_cast<std::uint32_t>(x));
}
constexpr std::uint16_t to_bf16_bits(double x) {
  return detail::narrow_float_bits<11, 52, 8, 7, std::uint16_t>(std::bit_cast<std::uint64_t>(x));
}

//! Exact value of an F8_E4M3 ("E4M3FN": bias 7, no infinities, S.1111.111 is NaN) pattern.
constexpr float f8_e4m3_to_float(std::uint8_t v) {
  const std::uint32_t sign = std::uint32_t(v & 0x80u) << 24;
  const std::uint32_t e = (v >> 3) & 0xfu;
  const std::uint32_t m = v & 0x7u;
  if (e == 0xf && m == 0x7) return std::bit_cast<float>(sign | 0x7fc00000u);
  if (e != 0) return std::bit_cast<float>(sign | ((e + 120u) << 23) | (m << 20));
  const float mag = float(m) * 0x1p-9f;  // subnormal: m * 2^(1 - 7 - 3)
  return std::bit_cast<float>(sign | std::bit_cast<std::uint32_t>(mag));
}

//! Exact value of an F8_E5M2 pattern (IEEE-like: bias 15, with Inf and NaN; the top byte of F16).
constexpr float f8_e5m2_to_float(std::uint8_t v) { return f16_to_float(std::uint16_t(v) << 8); }

}  // namespace yaqa
