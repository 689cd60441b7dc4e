// yaqa-quantize's run(): read, plan, quantize every layer (write_layer.hpp), write atomically.
#include <algorithm>
#include <chrono>
#include <ostream>
#include <string>
#include <vector>

#include "write_layer.hpp"

namespace yaqa::cli {

run_summary run(const options& o, std::ostream& log) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  for (const std::string* in : {&o.weights, &o.hessians}) {
    check_not_forbidden("yaqa-quantize: --out", o.out, {*in});
    if (!o.report.empty()) check_not_forbidden("yaqa-quantize: --report", o.report, {*in});
  }
  if (!o.report.empty()) check_not_forbidden("yaqa-quantize: --report", o.report, {o.out});

  const safetensors_file wf(o.weights), hf(o.hessians);
  const std::vector<planned_layer> plan = plan_layers(o, wf, hf);

  rounding_options ro;
  ro.algorithm = o.algorithm;
  ro.tile_rows = o.tile_rows;
  ro.tile_cols = o.tile_cols;
  ro.incoherence = o.rht;
  ro.seed = o.seed;
  ro.damping.sigma = o.damp;
  ro.act_order = o.act_order;
  ro.static_groups = o.static_groups;
  ro.refine = o.refine;
  ro.cd_sweeps = o.cd_sweeps;
  ro.report_baseline = o.rtn_baseline;
  const cpu_backend backend{o.threads};

  safetensors_writer out;
  out.forbid_path(o.weights);
  out.forbid_path(o.hessians);
  if (!o.report.empty()) out.forbid_path(o.report);
  out.metadata() = wf.metadata();
  auto& meta = out.metadata();
  meta["yaqa.version"] = YAQA_VERSION_STRING;
  meta["yaqa.method"] = method_name(o.algorithm);
  meta["yaqa.quantizer"] = quantizer_name(o.quantizer);
  meta["yaqa.bits"] = std::to_string(o.bits);
  meta["yaqa.seed"] = std::to_string(o.seed);
  meta["yaqa.rht"] = o.rht ? "true" : "false";
  if (!o.sketch.empty()) meta["yaqa.sketch"] = o.sketch;

  run_summary s;
  auto& rep = s.report;
  rep["tool"] = "yaqa-quantize";
  rep["version"] = YAQA_VERSION_STRING;
  rep["options"] = {{"weights", o.weights},       {"hessians", o.hessians}, {"out", o.out},
                    {"method", method_name(o.algorithm)}, {"quantizer", quantizer_name(o.quantizer)},
                    {"bits", o.bits},             {"group_size", o.group_size}, {"asym", o.asym},
                    {"mse", o.mse},               {"rht", o.rht},           {"sketch", o.sketch},
                    {"tile", {o.tile_rows, o.tile_cols}}, {"damp", o.damp}, {"seed", o.seed},
                    {"threads", backend.thread_count()}, {"only", o.only},
                    {"trellis", o.quantizer == quantizer_kind::trellis
                                    ? concat_trellis(o.trellis) : std::string()},
                    {"cd_sweeps", o.cd_sweeps}, {"rtn_baseline", o.rtn_baseline},
                    {"refine", refine_method_name(o.refine.method)}, {"sde_pattern", to_string(o.refine.pattern)},
                    {"lwc", o.refine.lwc}, {"refine_steps", o.refine.steps}, {"refine_lr", o.refine.lr},
                    {"refine_lambda", o.refine.lambda}};
  rep["layers"] = nlohmann::ordered_json::array();

  std::vector<std::string> quantized;
  for (const planned_layer& pl : plan) {
    const tensor_view& wt = *pl.weight;
    const std::string name(wt.name);
    const std::string context = "yaqa-quantize: layer '" + name + "': ";
    try {
      const matrix<float> w = to_matrix<float>(wt);
      const index m = w.rows(), n = w.cols();
      yaqa::detail::check_finite(wt, w, "finite weights");
      const matrix<float> h_in = to_symmetric_matrix<float>(*pl.hessians.h_in, n);
      const matrix<float> h_out = pl.hessians.h_out ? to_symmetric_matrix<float>(*pl.hessians.h_out, m) : matrix<float>();

      detail::layer_job job{o, backend, ro, pl, name, w, h_in, h_out, out, rep, log, quantized.size() + 1, plan.size()};
      detail::with_quantizer(o, [&](const auto& q) { detail::write_layer(q, job); });
    } catch (const yaqa::error&) {
      detail::rethrow_with_context(context);
    }
    quantized.push_back(name);
  }
  // Pass everything else through; a name the tool writes itself must not already be an input.
  for (const tensor_view& t : wf.tensors()) {
    if (std::find(quantized.begin(), quantized.end(), t.name) != quantized.end()) continue;
    yaqa::detail::require<format_error>(!out.contains(t.name), "yaqa-quantize: '", o.weights, "' has a tensor '",
                                        t.name, "', a name the output uses for a quantized layer's codes/params");
    out.add_borrowed(t);
    ++s.copied;
  }
  s.layers = int(quantized.size());
  out.write(o.out);
  rep["copied_tensors"] = s.copied;
  rep["total_seconds"] = std::chrono::duration<double>(clock::now() - t0).count();
  if (!o.report.empty()) {
    atomic_output_file f(o.report, "yaqa-quantize: --report");
    f.write(rep.dump(2) + "\n");
    f.commit();
  }
  if (!o.quiet)
    log << "wrote " << o.out << ": " << s.layers << " quantized, " << s.copied << " copied ("
        << detail::fmt(rep["total_seconds"].get<double>(), 3) << " s)" << std::endl;
  return s;
}

}  // namespace yaqa::cli
