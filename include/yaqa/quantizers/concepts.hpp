#pragma once
//! \file
//! The Quantizer concept: the only thing rounding algorithms (RTN, GPTQ, LDLQ, YAQA) ask of a
//! quantizer is "round this target block and tell me the reconstruction and the codes".
//!
//! Vocabulary
//! - unit: the elements one code covers, `unit_rows x unit_cols` (scalar grid 1x1, E8P 1x8 along
//!   the input dimension, a trellis tile 16x16). Target blocks handed to quantize() always have
//!   rows % unit_rows == 0 and cols % unit_cols == 0.
//! - group: `group_cols(n)` consecutive input columns share one params_type value (per-channel
//!   scales: group_cols(n) == n; g128: 128). It must divide n; the driver checks.
//! - params: per-row (or global) scales/zeros/codebook scale fitted by fit() from a rows x
//!   group-columns region of W. Rounding drivers fit either up front ("static groups") or
//!   lazily on the first touch of a group (GPTQ).
//! - codes: one code_type per unit; for a target of r x c the codes are a
//!   (r / unit_rows) x (c / unit_cols) column-major matrix.
#include <concepts>
#include <type_traits>
#include <vector>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/config.hpp>
#include <yaqa/core/matrix_view.hpp>

namespace yaqa {

//! Required expressions, for `const Q& q`, target/recon views of Q::scalar_type, params `p`,
//! codes view of Q::code_type, and `row0` (the row of W at which the target starts):
//! - `Q::scalar_type`: float or double.       - `Q::code_type`, `Q::params_type`: regular types.
//! - `Q::unit_rows`, `Q::unit_cols`: the unit shape (compile-time constants).
//! - `q.group_cols(n)`: columns per parameter group for a matrix with n columns.
//! - `q.fit(w)`: params for the rows of w, fitted from w (all of w's columns form one group).
//! - `q.quantize(target, p, row0, recon, codes)`: writes the reconstruction (same shape as
//!   target) and the codes. Must be const and reentrant: drivers call it from several threads.
//!   p was fitted on a region whose first row is row 0 of W; row0 selects the target's rows.
//! - `q.bits_per_weight()`: code bits per weight (parameters excluded).
template <class Q>
concept Quantizer =
    std::copy_constructible<Q> &&
    requires(const Q& q, matrix_view<const typename Q::scalar_type> target,
             const typename Q::params_type& p, index row0,
             matrix_view<typename Q::scalar_type> recon,
             matrix_view<typename Q::code_type> codes) {
      requires Scalar<typename Q::scalar_type>;
      requires std::semiregular<typename Q::code_type>;
      requires std::copy_constructible<typename Q::params_type>;
      { Q::unit_rows } -> std::convertible_to<index>;
      { Q::unit_cols } -> std::convertible_to<index>;
      { q.group_cols(index{}) } -> std::convertible_to<index>;
      { q.fit(target) } -> std::same_as<typename Q::params_type>;
      { q.quantize(target, p, row0, recon, codes) } -> std::same_as<void>;
      { q.bits_per_weight() } -> std::convertible_to<double>;
    };

// ---------------------------------------------------------------------------------------------
// Capability properties (libcu++ resource_with style): a quantizer opts in by specializing
// quantizer_property<Q, Prop> to true. The base concept never grows.

//! Quantizing many independent tiles in one call is efficient (trellis / Viterbi, GPU batches);
//! such a quantizer provides `q.quantize_batch(...)` (see docs/concepts.md).
struct batched_tiles {};
//! The quantizer can run on a CUDA device (trivially copyable, device-callable quantize).
struct device_capable {};
//! The quantizer's range can be learned (OmniQuant's learnable weight clipping, LWC): it provides
//! `q.fit_clipped(w, c_hi, c_lo)` and `q.clip_backward(w, p, c_hi, c_lo, g, d_hi, d_lo)` (see
//! docs/refine.md and the ClippableQuantizer concept in <yaqa/refine/clipping.hpp>).
struct learnable_clipping {};

template <class Q, class Prop>
inline constexpr bool quantizer_property = false;

//! The quantizer fits all parameter groups of a matrix at once: `q.fit_all(w)` (w the whole
//! m x n matrix) returns one params_type per group of group_cols(n) columns. For quantizers whose
//! groups share state (GGUF K-quants: the sub-block scales of a 256-wide super-block are
//! quantized against one super-block scale) or read per-column data (an importance vector).
//! Drivers fit through it whenever it exists, and GPTQ then fits its groups up front (static
//! groups) instead of lazily.
template <class Q>
concept joint_fit = Quantizer<Q> && requires(const Q& q, matrix_view<const typename Q::scalar_type> w) {
  { q.fit_all(w) } -> std::same_as<std::vector<typename Q::params_type>>;
};

template <class Q, class... Props>
concept quantizer_with = Quantizer<Q> && (quantizer_property<Q, Props> && ...);

}  // namespace yaqa
