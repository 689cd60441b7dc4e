#pragma once
//! \file
//! Quantizes every linear layer of tiny_lm with the library's layer driver
//! (yaqa::quantize_layer), for one (method, format, bits) setting.
//!
//! Which Hessian each method gets:
//! - RTN: none for rounding; no incoherence (the plain baseline). "RTN+RHT" is the same rounding
//!   after the random Hadamard transform (isolates what incoherence alone buys).
//! - GPTQ, LDLQ: H_in = E[x x^T], H_out = I.
//! - YAQA-A / YAQA-B: the Sketch A / Sketch B Kronecker factors.
//! The Hessian methods run with the incoherence transform on.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <yaqa/quantizers/e8p.hpp>
#include <yaqa/quantizers/gguf/any.hpp>
#include <yaqa/quantizers/e8p_rvq.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/quantizers/trellis.hpp>
#include <yaqa/rounding/layer.hpp>
#include <yaqa/rounding/proxy.hpp>

#include "hessians.hpp"
#include "model.hpp"

namespace tiny_lm {

enum class method_id { rtn, rtn_rht, gptq, ldlq, yaqa_a, yaqa_b };
//! trellis: QTIP's bitshift trellis at the demo's affordable L = 12 (3INST, V = 1);
//! trellis16: QTIP's shipped configuration, L = 16 HYB V = 2 (about 60x the Viterbi cost).
//! gguf: one of llama.cpp's block types (quant_setting::gguf_type), rounded without RHT, the
//! block scales fitted with the diagonal of E[xx^T] as llama.cpp's imatrix.
enum class format_id { int_grid, e8p, trellis, trellis16, gguf };

//! The format's name in the tables ("int", "e8p", "qtip12", "qtip16").
inline const char* format_name(format_id f) {
  switch (f) {
    case format_id::int_grid: return "int";
    case format_id::e8p: return "e8p";
    case format_id::trellis: return "qtip12";
    case format_id::trellis16: return "qtip16";
    case format_id::gguf: return "gguf";
  }
  return "?";
}
//! Refinement before rounding (docs/refine.md): learnable clipping, SDE, both, or SDE + LWC on
//! the cross-layer objective (cross_layer.hpp; RTN only, original basis, activations).
enum class refine_id { none, lwc, sde, sde_lwc, cl };

inline const char* method_label(method_id m) {
  switch (m) {
    case method_id::rtn: return "RTN";
    case method_id::rtn_rht: return "RTN+RHT";
    case method_id::gptq: return "GPTQ";
    case method_id::ldlq: return "LDLQ";
    case method_id::yaqa_a: return "YAQA-A";
    case method_id::yaqa_b: return "YAQA-B";
  }
  return "?";
}

struct quant_setting {
  method_id method = method_id::rtn;
  format_id format = format_id::int_grid;
  int bits = 3;
  refine_id refine = refine_id::none;
  bool cd = false;  //!< coordinate-descent sweeps (quant_config::cd_sweeps) after rounding
  yaqa::ggml_type gguf_type = yaqa::ggml_type::q4_k;  //!< format gguf: the block type
};

//! The format column of a setting: "int", ..., "gguf:Q4_K".
inline std::string format_label(const quant_setting& s) {
  return s.format == format_id::gguf ? "gguf:" + std::string(yaqa::ggml_type_name(s.gguf_type))
                                     : std::string(format_name(s.format));
}

//! "RTN", "YAQA-B+LWC", "RTN+SDE+LWC", "SDE+LWC+CL", ...
inline std::string setting_label(const quant_setting& s) {
  std::string l = method_label(s.method);
  switch (s.refine) {
    case refine_id::none: break;
    case refine_id::lwc: l += "+LWC"; break;
    case refine_id::sde: l += "+SDE"; break;
    case refine_id::sde_lwc: l += "+SDE+LWC"; break;
    case refine_id::cl: l = "SDE+LWC+CL"; break;
  }
  if (s.cd) l += "+CD";
  return l;
}

//! Quantizer and rounding knobs shared by every setting.
struct quant_config {
  index group_size = 128;       //!< int grid and E8P: input columns per scale group
  bool sym = false;             //!< int grid: asymmetric (GPTQ's default)
  double e8p_scale_override = 0.9;  //!< QTIP's choice (yaqa-algorithm.md §3.1 step 6)
  double trellis_scale_override = 0.9;  //!< QTIP's --scale_override
  index tile = 16;              //!< td_x = td_y (YAQA) and the LDLQ block
  double sigma = 1e-2;          //!< damping, relative to the mean diagonal
  yaqa::index cd_sweeps = 3;    //!< "+CD" rows: coordinate-descent sweeps after rounding
  yaqa::refine_options refine = default_refine();  //!< LWC / SDE rows (method and lwc set per row)
  static yaqa::refine_options default_refine() {
    yaqa::refine_options r;
    r.pattern = {yaqa::sde_shape::full, 0};
    r.steps = 100;
    return r;
  }
  [[nodiscard]] std::string describe() const {
    return yaqa::detail::concat("int grid: asymmetric=", sym ? "no" : "yes", ", group ", group_size,
                                "; E8P: 2 bits, RVQ (E8P + E81B / E8P) 3-4 bits, per-row scales, group ",
                                group_size, ", scale_override ", e8p_scale_override,
                                "; QTIP trellis: qtip12 = L 12 3INST V 1, qtip16 = L 16 HYB V 2, K = bits, per-row scales, "
                                "scale_override ",
                                trellis_scale_override,
                                "; tiles ", tile, "x", tile, "; damping ", sigma,
                                " x mean diagonal; RHT on for GPTQ/LDLQ/YAQA; +CD: ", cd_sweeps,
                                " coordinate-descent sweeps; refinement: SDE ",
                                yaqa::to_string(refine.pattern), ", ", refine.steps, " Adam steps, lr ", refine.lr,
                                " x grid step, LWC lr ", refine.lwc_lr, ", handover to YAQA: ",
                                refine.handover == yaqa::refine_handover::grid ? "grid" : "weights");
  }
};

//! True when the library can run the setting (GPTQ needs a scalar quantizer: no E8P).
inline bool supported(const quant_setting& s) {
  if (s.format == format_id::gguf) return s.refine == refine_id::none && s.method != method_id::rtn_rht;
  return !(s.method == method_id::gptq && s.format != format_id::int_grid) &&
         !(s.refine != refine_id::none && s.refine != refine_id::sde && s.format != format_id::int_grid);
}

//! Outcome for one layer.
struct layer_outcome {
  mat weights;                //!< dequantized, original basis
  double relative_proxy = 0;  //!< the driver's report, with the Hessian the method used
  double seconds = 0;
};

//! Quantizes W (out x in) of one layer. `seed` drives the random Hadamard transform. Defined in
//! quantize.cpp, compiled once for the demo and its tests (tiny_lm_quantize): it instantiates
//! the layer driver for every quantizer, most of the demo's compile time.
layer_outcome quantize_weights(const yaqa::cpu_backend& be, const quant_setting& s, const quant_config& qc,
                               const mat& w, const layer_hessians& h, std::uint64_t seed);

//! tr(dW H_in dW^T H_out) / tr(W H_in W^T H_out) with the given factors (original basis): the
//! common yardstick for all methods (the driver's own proxy uses each method's Hessian).
inline double relative_kron_proxy(const yaqa::cpu_backend& be, const mat& w, const mat& w_hat,
                                  const mat& h_in, const mat& h_out) {
  const mat dw = w - w_hat;
  const double den = yaqa::kronecker_proxy(be, yaqa::view(w), yaqa::view(h_in), yaqa::view(h_out));
  return yaqa::kronecker_proxy(be, yaqa::view(dw), yaqa::view(h_in), yaqa::view(h_out)) / den;
}

}  // namespace tiny_lm
