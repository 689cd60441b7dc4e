#pragma once
//! \file
//! GGUF block quantizers (llama.cpp's formats) as Quantizers: what every family header shares.
//!
//! A GGUF type stores a row of W (the input dimension, ggml's innermost "ne[0]") in blocks of
//! `block_size` weights (32, or a 256-weight "super-block" for the K-quants). The rounding drivers
//! see each type as a scalar quantizer (unit 1x1) whose parameter group is the smallest run of
//! weights that shares one effective scale (and min): the whole 32-block for Q8_0 / Q4_0 / Q5_0 /
//! IQ4_NL, a 32- or 16-weight sub-block for the K-quants. params_type holds, per row, the
//! effective scale exactly as the format's dequantization computes it (in float), plus the raw
//! fields the block stores (fp16 bits, 6-bit sub-scales...), so that
//!   - quantize() picks codes with the fitted scales held fixed (GPTQ / LDLQ / YAQA feed the
//!     error back, which llama.cpp's round-to-nearest quantizer does not), and
//!   - encode() writes the block bytes, and decode() of those bytes gives back, bit for bit,
//!     what quantize() wrote into recon (and what gguf-py's quants.dequantize computes).
//! Scales are fitted by fit_all() (a joint_fit quantizer): a K-quant's sub-block scales are
//! quantized against their super-block's scale, and llama.cpp's importance weights (an imatrix,
//! the diagonal of H_in) are per input column, so fitting needs the whole matrix.
//! No RHT: llama.cpp runs no rotations, so these are used with `--no-rht`.
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <yaqa/core/config.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/io/float16.hpp>
#include <yaqa/io/gguf.hpp>
#include <yaqa/quantizers/common.hpp>
#include <yaqa/quantizers/concepts.hpp>

namespace yaqa {

//! Options shared by the GGUF quantizers.
struct gguf_quant_options {
  //! Importance of each input column (llama.cpp's imatrix entry for the tensor: the diagonal of
  //! H_in, mean of x_j^2 over the calibration tokens), length n; empty: llama.cpp's reference
  //! fit without an imatrix. Read by fit_all() only.
  std::vector<float> importance;
};

//! A GGUF block quantizer: a joint_fit Quantizer that also knows its ggml type and writes / reads
//! the type's exact block bytes.
//! - `Q::type`: the ggml_type; `Q::block_size`: weights per block along a row (32 or 256).
//! - `q.encode(codes, params, out)`: codes (m x n, as a rounding driver returns them, every
//!   column in its own group: no act-order group index) and params (n / group_cols(n) groups)
//!   -> out, m rows of n / block_size blocks (ggml_nbytes bytes). Throws shape_error on sizes.
//! - `Q::decode(bytes, rows, cols)`: the format's dequantization, as float (rows x cols).
template <class Q>
concept gguf_quantizer =
    joint_fit<Q> && requires(const Q& q, matrix_view<const typename Q::code_type> codes,
                             const std::vector<typename Q::params_type>& p, std::span<std::byte> out,
                             std::span<const std::byte> in, index n) {
      { Q::type } -> std::convertible_to<ggml_type>;
      { Q::block_size } -> std::convertible_to<index>;
      { q.encode(codes, p, out) } -> std::same_as<void>;
      { Q::decode(in, n, n) } -> std::same_as<matrix<float>>;
    };

namespace detail {

//! Bytes of an m x n matrix of GGUF type t (n a multiple of the block size; checked by callers).
inline std::size_t gguf_row_bytes(ggml_type t, index n) {
  const ggml_type_traits& tr = ggml_traits(t);
  return static_cast<std::size_t>(n / tr.block_size) * static_cast<std::size_t>(tr.type_size);
}

//! The check every GGUF quantizer's group_cols / fit_all makes: n a positive multiple of the
//! block size (a GGUF row is whole blocks).
inline void check_gguf_columns(const char* what, ggml_type t, index n) {
  const ggml_type_traits& tr = ggml_traits(t);
  require<shape_error>(n >= 1 && n % tr.block_size == 0, what, ": ", tr.name, " stores rows in blocks of ",
                       tr.block_size, " weights; the number of input columns n = ", n,
                       " must be a positive multiple of ", tr.block_size);
}

//! The importance vector's length must be n (or 0).
inline void check_importance(const char* what, const std::vector<float>& importance, index n) {
  require<shape_error>(importance.empty() || static_cast<index>(importance.size()) == n, what,
                       ": option 'importance' has ", importance.size(), " entries; expected one per input column (",
                       n, ") or none");
  for (std::size_t j = 0; j < importance.size(); ++j)
    require<non_finite_error>(std::isfinite(importance[j]) && importance[j] >= 0, what, ": importance[", j,
                              "] = ", importance[j], "; expected a finite value >= 0");
}

//! x rounded to fp16 and back (how a block stores a float scale).
inline float f16_round(float x) { return f16_to_float(to_f16_bits(x)); }

//! a * b rounded to float, never contracted into an FMA with a following add.
inline float gguf_mul(float a, float b) { return round_to_type(a * b); }

//! llama.cpp's nearest_int (to nearest, ties to even), for |v| < 2^22.
inline int gguf_nearest_int(float v) { return static_cast<int>(std::nearbyint(v)); }

//! sum of x[j]^2, left to right, in float.
inline float gguf_sum_squares(index n, const float* x) {
  float s = 0.f;
  for (index j = 0; j < n; ++j) s += gguf_mul(x[j], x[j]);
  return s;
}

//! Little-endian stores and loads of the block fields.
inline void gguf_put_u16(std::byte* p, std::uint16_t v) {
  p[0] = static_cast<std::byte>(v & 0xffu);
  p[1] = static_cast<std::byte>(v >> 8);
}
inline std::uint16_t gguf_get_u16(const std::byte* p) {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) | (std::to_integer<unsigned>(p[1]) << 8));
}
inline std::uint8_t gguf_get_u8(const std::byte* p) { return std::to_integer<std::uint8_t>(*p); }

//! decode()'s size check: `bytes` must hold exactly a rows x cols matrix of type t.
inline void gguf_check_decode(const char* what, ggml_type t, std::size_t bytes, index rows, index cols) {
  check_gguf_columns(what, t, cols);
  require<shape_error>(rows >= 0, what, ": rows must be >= 0, got ", rows);
  const std::size_t need = static_cast<std::size_t>(rows) * gguf_row_bytes(t, cols);
  require<shape_error>(bytes == need, what, ": got ", bytes, " bytes; a ", rows, "x", cols, " ",
                       ggml_traits(t).name, " tensor has ", need);
}

//! encode()'s size check: out must hold exactly the m x n matrix of type t.
inline void check_gguf_encode(const char* what, ggml_type t, index m, index n, std::size_t groups,
                              std::size_t expected_groups, std::size_t out_bytes) {
  check_gguf_columns(what, t, n);
  require<shape_error>(groups == expected_groups, what, ": got ", groups, " parameter groups; expected ",
                       expected_groups);
  const std::size_t need = static_cast<std::size_t>(m) * gguf_row_bytes(t, n);
  require<shape_error>(out_bytes == need, what, ": output buffer has ", out_bytes, " bytes; a ", m, "x", n, " ",
                       ggml_traits(t).name, " tensor needs ", need);
}

}  // namespace detail

//! The GGUF bytes of a rounded matrix (see gguf_quantizer::encode).
template <gguf_quantizer Q, class R>
std::vector<std::byte> gguf_encode(const Q& q, const R& r) {
  detail::require<invalid_argument>(r.group_index.empty(), "yaqa::gguf_encode: the rounding used per-column groups "
                            "(GPTQ act-order with lazy groups); GGUF blocks need each column in its own block's group");
  const index m = r.codes.rows(), n = r.codes.cols();
  std::vector<std::byte> out(static_cast<std::size_t>(m) * detail::gguf_row_bytes(Q::type, n));
  q.encode(view(r.codes), r.params, std::span<std::byte>(out));
  return out;
}

}  // namespace yaqa
