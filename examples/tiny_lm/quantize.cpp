// tiny_lm::quantize_weights: the setting -> the library's layer driver (quantize.hpp).
#include "quantize.hpp"

#include "layer_instances.hpp"  // quantize_layer compiled once in instances/, shared with the CLI

namespace tiny_lm {

layer_outcome quantize_weights(const yaqa::cpu_backend& be, const quant_setting& s, const quant_config& qc,
                               const mat& w, const layer_hessians& h, std::uint64_t seed) {
  yaqa::rounding_options opt;
  opt.tile_rows = qc.tile;
  opt.tile_cols = qc.tile;
  opt.seed = seed;
  opt.damping.sigma = qc.sigma;
  // llama.cpp runs no rotation: GGUF blocks hold W itself.
  opt.incoherence = s.method != method_id::rtn && s.format != format_id::gguf;
  opt.report_baseline = false;
  if (s.cd) opt.cd_sweeps = qc.cd_sweeps;
  if (s.refine != refine_id::none) {
    opt.refine = qc.refine;
    opt.refine.method = s.refine == refine_id::lwc ? yaqa::refine_method::none : yaqa::refine_method::sde;
    opt.refine.lwc = s.refine != refine_id::sde;
  }
  const mat* hin = &h.xtx;
  const mat* hout = nullptr;
  switch (s.method) {
    case method_id::rtn:
    case method_id::rtn_rht: opt.algorithm = yaqa::method::rtn; break;
    case method_id::gptq: opt.algorithm = yaqa::method::gptq; break;
    case method_id::ldlq: opt.algorithm = yaqa::method::ldlq; break;
    case method_id::yaqa_a:
      opt.algorithm = yaqa::method::yaqa;
      hin = &h.a_in;
      hout = &h.a_out;
      break;
    case method_id::yaqa_b:
      opt.algorithm = yaqa::method::yaqa;
      hin = &h.b_in;
      hout = &h.b_out;
      break;
  }
  yaqa::detail::require(hin->size() > 0 && (hout == nullptr || hout->size() > 0),
                        "tiny_lm::quantize_weights: the Hessian for ", method_label(s.method),
                        " was not collected");
  const auto hout_view = hout ? yaqa::view(*hout) : yaqa::matrix_view<const float>{};
  auto run = [&](const auto& q) {
    const auto t = std::chrono::steady_clock::now();
    auto r = yaqa::quantize_layer(be, q, yaqa::view(w), yaqa::view(*hin), hout_view, opt);
    layer_outcome o;
    o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    o.weights = std::move(r.weights);
    o.relative_proxy = r.report.relative_proxy;
    return o;
  };
  if (s.format == format_id::gguf) {
    // Every method fits the block scales as llama-quantize does with an imatrix: weighted by the
    // diagonal of E[xx^T] (what llama-imatrix collects). RTN is then llama.cpp's own result.
    yaqa::gguf_quant_options go;
    go.importance.resize(std::size_t(h.xtx.cols()));
    for (yaqa::index i = 0; i < h.xtx.cols(); ++i) go.importance[std::size_t(i)] = std::max(h.xtx(i, i), 0.0f);
    return run(yaqa::gguf_any<float>(s.gguf_type, go));
  }
  if (s.format == format_id::trellis || s.format == format_id::trellis16) {
    yaqa::trellis_options t;
    t.k = s.bits;
    t.l = s.format == format_id::trellis ? 12 : 16;
    t.code = s.format == format_id::trellis ? yaqa::trellis_code::three_inst : yaqa::trellis_code::hyb;
    t.scale_override = qc.trellis_scale_override;
    return run(yaqa::trellis<float>(t));
  }
  if (s.format == format_id::e8p) {
    yaqa::detail::require(s.bits >= 2 && s.bits <= 4,
                          "tiny_lm::quantize_weights: E8P is 2 bits (3-4 with RVQ), got bits = ", s.bits);
    // Scales per row and group of group_size columns, as the int grid's.
    if (s.bits == 2)
      return run(yaqa::e8p<float>({.scale_override = qc.e8p_scale_override, .group_size = qc.group_size}));
    return run(yaqa::e8p_rvq<float>(
        {.bits = s.bits, .scale_override = qc.e8p_scale_override, .group_size = qc.group_size}));
  }
  yaqa::int_grid_options io;
  io.bits = s.bits;
  io.sym = qc.sym;
  io.group_size = qc.group_size;
  return run(yaqa::int_grid<float>(io));
}

}  // namespace tiny_lm
