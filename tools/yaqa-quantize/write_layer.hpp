#pragma once
//! \file
//! yaqa-quantize's per-layer step: quantize one planned layer with one quantizer and add its
//! tensors, metadata and report entry to the output. Included by run.cpp only. The layer driver
//! for every quantizer (every rounding method, refinement and coordinate descent) is the bulk of
//! the tool's compile time: it is compiled once in instances/layers.cpp, shared with the demo and
//! the tests (layer_instances.hpp declares it extern here).
#include <algorithm>
#include <iomanip>
#include <map>
#include <ostream>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cli.hpp"
#include "layer_instances.hpp"  // quantize_layer for these quantizers: compiled in instances/
#include <yaqa/quantizers/gguf/any.hpp>

namespace yaqa::cli {

namespace detail {

//! Rethrows the current yaqa::error with `context` prepended, keeping its type.
[[noreturn]] inline void rethrow_with_context(const std::string& context) {
  try {
    throw;
  } catch (const format_error& e) {
    throw format_error(context + e.what());
  } catch (const io_error& e) {
    throw io_error(context + e.what());
  } catch (const shape_error& e) {
    throw shape_error(context + e.what());
  } catch (const non_finite_error& e) {
    throw non_finite_error(context + e.what());
  } catch (const invalid_argument& e) {
    throw invalid_argument(context + e.what());
  } catch (const numerical_error& e) {
    throw numerical_error(context + e.what());
  } catch (const cuda_error& e) {
    throw cuda_error(context + e.what());
  } catch (const error& e) {
    throw error(context + e.what());
  }
}

//! Calls f(q) with the quantizer the options describe; h_in is the layer's input Hessian (its
//! diagonal is a GGUF quantizer's importance, as llama.cpp uses an imatrix).
template <class F>
void with_quantizer(const options& o, matrix_view<const float> h_in, F&& f) {
  switch (o.quantizer) {
    case quantizer_kind::gguf: {
      gguf_quant_options g;
      if (o.importance) {
        g.importance.resize(std::size_t(h_in.cols));
        for (index i = 0; i < h_in.cols; ++i) g.importance[std::size_t(i)] = std::max(h_in(i, i), 0.0f);
      }
      return f(gguf_any<float>(o.gguf_type, g));
    }
    case quantizer_kind::int_grid:
      return f(int_grid<float>(int_grid_options{.bits = o.bits, .sym = !o.asym, .group_size = o.group_size, .mse = o.mse}));
    case quantizer_kind::lloyd:
      return f(lloyd_max_grid<float>(lloyd_max_options{.bits = o.bits, .group_size = o.group_size}));
    case quantizer_kind::fp4: return f(fp4_e2m1<float>());
    case quantizer_kind::e8p:
      if (o.bits == 2) return f(e8p<float>({.group_size = o.group_size}));
      return f(e8p_rvq<float>({.bits = o.bits, .group_size = o.group_size}));
    case quantizer_kind::trellis: {
      trellis_options t = o.trellis;
      t.threads = o.threads;
      return f(trellis<float>(t));
    }
  }
}

//! The parameters of every group as one F32 tensor [groups, fields, rows] and the field names.
template <class P>
std::pair<std::vector<std::string>, std::vector<float>> params_table(const std::vector<P>& ps, index& rows) {
  std::vector<float> v;
  if constexpr (requires(const P& p) { p.zero; }) {
    rows = ps.empty() ? 0 : index(ps.front().scale.size());
    for (const P& p : ps) {
      v.insert(v.end(), p.scale.begin(), p.scale.end());
      v.insert(v.end(), p.zero.begin(), p.zero.end());
    }
    return {{"scale", "zero"}, v};
  } else if constexpr (requires(const P& p) { p.scale.size(); }) {
    rows = ps.empty() ? 0 : index(ps.front().scale.size());
    for (const P& p : ps) v.insert(v.end(), p.scale.begin(), p.scale.end());
    return {{"scale"}, v};
  } else {
    rows = 1;
    for (const P& p : ps) v.push_back(float(p.scale));
    return {{"scale"}, v};
  }
}

//! Row-major little-endian bytes of an unsigned code matrix.
template <class C>
std::vector<std::byte> code_bytes(const matrix<C>& c) {
  return yaqa::detail::encode_row_major_le(matrix_view<const C>(c.data(), c.rows(), c.cols(), std::max<index>(1, c.rows())));
}

//! The codes as one tensor: [rows, cols] little-endian unsigned integers, or for the trellis
//! [tiles, 32 K] bytes with the tiles in row-major order of the tile grid (to_bytes per tile).
template <class Q>
std::pair<std::vector<index>, std::vector<std::byte>> code_tensor(const Q& q, const matrix<typename Q::code_type>& c) {
  using C = typename Q::code_type;
  if constexpr (std::is_unsigned_v<C>) {
    return {{c.rows(), c.cols()}, code_bytes(c)};
  } else {
    const index per = q.bytes_per_tile();
    std::vector<std::byte> b(std::size_t(c.size() * per));
    std::size_t at = 0;
    for (index i = 0; i < c.rows(); ++i)
      for (index j = 0; j < c.cols(); ++j, at += std::size_t(per))
        q.to_bytes(c(i, j), std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(b.data() + at), std::size_t(per)));
    return {{c.size(), per}, b};
  }
}


//! The refinement figures of one layer (relative to the objective's normalizer).
inline nlohmann::ordered_json refine_json(const refine_report& r) {
  const double z = r.normalizer > 0 ? r.normalizer : 1.0;
  nlohmann::ordered_json trace = nlohmann::ordered_json::array();
  for (const auto& t : r.trace) trace.push_back({{"step", t.step}, {"relative_loss", t.loss / z}, {"d_norm", t.d_norm}});
  return {{"method", refine_method_name(r.method)},
          {"pattern", r.pattern},
          {"lwc", r.lwc},
          {"rank", r.rank},
          {"parameters", r.parameters},
          {"relative_loss_unrefined", r.loss_unrefined / z},
          {"relative_loss_initial", r.loss_initial / z},
          {"relative_loss", r.loss / z},
          {"best_step", r.best_step},
          {"steps_run", r.steps_run},
          {"early_stop", r.early_stop},
          {"d_norm", r.d_norm},
          {"w_norm", r.w_norm},
          {"clip_hi_mean", r.clipping.hi_mean},
          {"clip_hi_min", r.clipping.hi_min},
          {"clip_lo_mean", r.clipping.lo_mean},
          {"clip_lo_min", r.clipping.lo_min},
          {"clipped_fraction", r.clipping.clipped_fraction},
          {"svd_seconds", r.svd_seconds},
          {"seconds", r.seconds},
          {"trace", trace}};
}

inline std::string fmt(double v, int prec = 4) {
  std::ostringstream os;
  os << std::setprecision(prec) << v;
  return os.str();
}

}  // namespace detail

namespace detail {

//! One quantized tensor of a GGUF output.
struct gguf_blocks {
  ggml_type type = ggml_type::f32;
  std::vector<std::byte> bytes;
};

//! Everything write_layer needs from run(): the options, the layer and its factors, and where
//! the results go.
struct layer_job {
  const options& o;
  const cpu_backend& backend;
  const rounding_options& ro;
  const planned_layer& pl;
  const std::string& name;
  const matrix<float>& w;
  const matrix<float>& h_in;
  const matrix<float>& h_out;  //!< empty: H_out = I
  safetensors_writer& out;
  nlohmann::ordered_json& report;  //!< the run's report; write_layer appends to report["layers"]
  std::ostream& log;
  std::size_t position = 0;  //!< 1-based place of this layer in the plan (progress line)
  std::size_t planned = 0;   //!< layers in the plan
  //! GGUF output: a GGUF quantizer's blocks go here (by name), not into `out`.
  std::map<std::string, gguf_blocks>* gguf_out = nullptr;
  //! --format gptq / compressed-tensors: the int grid's results go here, packed by run().
  std::vector<std::pair<std::string, layer_result<int_grid<float>>>>* checkpoint = nullptr;
};

//! Quantizes j's layer with q and writes its tensors, metadata and report entry.
template <class Q>
void write_layer(const Q& q, layer_job& j) {
  const options& o = j.o;
  const index m = j.w.rows(), n = j.w.cols();
  auto& meta = j.out.metadata();
  auto res = quantize_layer(j.backend, q, view(j.w), view(j.h_in), view(j.h_out), j.ro);
  const auto& lr = res.report;
  nlohmann::ordered_json layer_meta = {{"method", method_name(o.algorithm)},
                                       {"quantizer", quantizer_label(o)},
                                       {"bits", o.bits},
                                       {"group_cols", q.group_cols(n)},
                                       {"unit", {std::decay_t<decltype(q)>::unit_rows, std::decay_t<decltype(q)>::unit_cols}}};
  if constexpr (std::is_same_v<Q, gguf_any<float>>) {
    // The blocks themselves: the GGUF tensor, or NAME.qblocks [rows, bytes per row] beside the
    // dequantized weights in a safetensors output.
    std::vector<std::byte> blocks = gguf_encode(q, res);
    layer_meta["ggml_type"] = std::string(ggml_type_name(q.type()));
    layer_meta["importance"] = o.importance;
    if (j.gguf_out) {
      (*j.gguf_out)[j.name] = {q.type(), std::move(blocks)};
    } else {
      j.out.add(j.name, view(std::as_const(res.weights)), dtype::f32);
      const index row_bytes = m > 0 ? index(blocks.size()) / m : 0;
      j.out.add(j.name + ".qblocks", dtype::u8, {m, row_bytes}, std::move(blocks));
      layer_meta["qblocks_layout"] = "ggml blocks of " + std::string(ggml_type_name(q.type())) + ", one row of W per row";
    }
  } else if (j.checkpoint) {
    // packed by run() once every layer is done (nothing is written for a run that fails)
  } else {
    j.out.add(j.name, view(std::as_const(res.weights)), dtype::f32);
    using C = typename std::decay_t<decltype(q)>::code_type;
    const dtype ct = !std::is_unsigned_v<C> || sizeof(C) == 1 ? dtype::u8 : sizeof(C) == 2 ? dtype::u16 : dtype::u32;
    auto [code_shape, code_data] = detail::code_tensor(q, res.codes);
    j.out.add(j.name + ".qcodes", ct, code_shape, std::move(code_data));
    index prow = 0;
    auto [fields, values] = detail::params_table(res.params, prow);
    j.out.add(j.name + ".qparams", {index(res.params.size()), index(fields.size()), prow}, values, dtype::f32);
    if (!res.group_index.empty()) {
      std::vector<double> g(res.group_index.begin(), res.group_index.end());
      j.out.add(j.name + ".qgroup", {index(g.size())}, g, dtype::f32);
    }
    layer_meta["qparams_fields"] = fields;
    layer_meta["qcodes_layout"] = std::is_unsigned_v<typename std::decay_t<decltype(q)>::code_type>
                                      ? "one code per unit, [unit rows, unit cols] row-major"
                                      : "one bitstream per 16x16 tile, [tiles (tile-grid row-major), 32 K bytes]";
  }
  layer_meta["rotated"] = res.rotated;
  layer_meta["feedback"] = lr.feedback;
  if constexpr (requires { q.v(); })
    layer_meta["trellis"] = {{"l", o.trellis.l}, {"k", o.trellis.k}, {"v", q.v()}, {"code", to_string(o.trellis.code)},
                             {"bytes_per_tile", q.bytes_per_tile()}};
  if (o.algorithm == method::gptq) {
    layer_meta["act_order"] = o.act_order;
    layer_meta["static_groups"] = o.static_groups;
  }
  if (res.rotated) {
    layer_meta["seed_in"] = std::to_string(res.seed_in);
    layer_meta["seed_out"] = std::to_string(res.seed_out);
    layer_meta["transform_in"] = res.transform_in;
    layer_meta["transform_out"] = res.transform_out;
    layer_meta["basis"] = "qcodes/qparams quantize U_out^T W U_in; " + j.name + " = U_out Q U_in^T";
  }
  if (o.refine.enabled())
    layer_meta["refine"] = {{"method", refine_method_name(lr.refine.method)}, {"pattern", lr.refine.pattern},
                            {"lwc", lr.refine.lwc}, {"best_step", lr.refine.best_step}};
  meta["yaqa.layer." + j.name] = layer_meta.dump();

  nlohmann::ordered_json times = nlohmann::ordered_json::object();
  for (const auto& st : lr.times) times[st.stage] = st.seconds;
  j.report["layers"].push_back({{"name", j.name},
                           {"shape", {m, n}},
                           {"method", method_name(lr.algorithm)},
                           {"h_in", j.pl.diagonal ? "imatrix:" + j.pl.diagonal->name : std::string(j.pl.hessians.h_in->name)},
                           {"h_out", j.pl.hessians.h_out ? std::string(j.pl.hessians.h_out->name) : std::string()},
                           {"relative_proxy", lr.relative_proxy},
                           {"relative_proxy_one_sided", lr.relative_proxy_one_sided},
                           {"rtn_relative_proxy", o.rtn_baseline ? nlohmann::ordered_json(lr.baseline_relative_proxy)
                                                                 : nlohmann::ordered_json(nullptr)},
                           {"damp_in", lr.damp_in},
                           {"damp_out", lr.damp_out},
                           {"attempts_in", lr.attempts_in},
                           {"attempts_out", lr.attempts_out},
                           {"feedback", lr.feedback},
                           {"fallback_reason", lr.fallback_reason},
                           {"dead_inputs", lr.in.dead.size()},
                           {"dead_outputs", lr.out.dead.size()},
                           {"h_in_replaced_by_identity", lr.in.replaced_by_identity},
                           {"h_out_replaced_by_identity", lr.out.replaced_by_identity},
                           {"seconds", lr.seconds},
                           {"stages", times}});
  if (o.refine.enabled()) j.report["layers"].back()["refine"] = detail::refine_json(lr.refine);
  if (lr.cd_sweeps_run > 0)
    j.report["layers"].back()["cd"] = {{"sweeps", lr.cd_sweeps_run},
                                  {"units_changed", lr.cd_units_changed},
                                  {"relative_proxy_before", lr.cd_relative_proxy_before},
                                  {"relative_proxy_after", lr.cd_relative_proxy_after}};
  if (!o.quiet) {
    j.log << "[" << j.position << "/" << j.planned << "] " << j.name << " [" << m << "x" << n << "] "
        << method_name(lr.algorithm) << " proxy " << detail::fmt(lr.relative_proxy)
        << (o.rtn_baseline ? " (rtn " + detail::fmt(lr.baseline_relative_proxy) + ")" : std::string()) << " damp " << detail::fmt(lr.damp_in, 3) << "/"
        << detail::fmt(lr.damp_out, 3) << (lr.feedback ? "" : " NO FEEDBACK: " + lr.fallback_reason)
        << (o.refine.enabled() ? " refine " + detail::fmt(lr.refine.loss_unrefined / lr.refine.normalizer) + " -> " +
                                     detail::fmt(lr.refine.loss / lr.refine.normalizer)
                               : std::string())
        << " "
        << std::fixed << std::setprecision(2) << lr.seconds << " s" << std::defaultfloat << std::endl;
  }
  if constexpr (std::is_same_v<Q, int_grid<float>>)
    if (j.checkpoint) j.checkpoint->emplace_back(j.name, std::move(res));
}

}  // namespace detail
}  // namespace yaqa::cli
