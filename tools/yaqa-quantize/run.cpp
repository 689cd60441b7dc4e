// yaqa-quantize's run(): read, plan, quantize every layer (write_layer.hpp), write atomically.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "write_layer.hpp"

namespace yaqa::cli {

namespace {

//! True when the file starts with GGUF's magic (unreadable files are left to the real reader).
bool starts_with_gguf_magic(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char magic[4] = {};
  return f.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

//! A --hessians file in llama.cpp's imatrix formats: GGUF content, or the legacy .dat extension.
bool is_imatrix_file(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".dat" || starts_with_gguf_magic(path);
}

//! llama.cpp's general.file_type (enum llama_ftype) for a model quantized to one block type: the
//! "_S" variant for the K-quants (llama.cpp's _M/_L variants mix types).
std::uint32_t llama_file_type(ggml_type t) {
  switch (t) {
    case ggml_type::q4_0: return 2;
    case ggml_type::q8_0: return 7;
    case ggml_type::q5_0: return 8;
    case ggml_type::q2_k: return 10;
    case ggml_type::q3_k: return 11;
    case ggml_type::q4_k: return 14;
    case ggml_type::q5_k: return 16;
    case ggml_type::q6_k: return 18;
    case ggml_type::iq4_nl: return 25;
    default: return 0;
  }
}

}  // namespace

run_summary run(const options& o, std::ostream& log) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  for (const std::string* in : {&o.weights, &o.hessians}) {
    check_not_forbidden("yaqa-quantize: --out", o.out, {*in});
    if (!o.report.empty()) check_not_forbidden("yaqa-quantize: --report", o.report, {*in});
  }
  if (!o.report.empty()) check_not_forbidden("yaqa-quantize: --report", o.report, {o.out});

  // Inputs: safetensors or GGUF weights; safetensors factors or a llama.cpp imatrix.
  std::optional<safetensors_file> wst, hst;
  std::optional<gguf_file> wgg;
  std::optional<imatrix> him;
  std::vector<tensor_view> gguf_views;  // the GGUF's plain tensors (block types cannot be re-quantized)
  weight_tensors wts;
  if (starts_with_gguf_magic(o.weights)) {
    wgg.emplace(o.weights);
    for (const gguf_tensor_info& t : wgg->tensors())
      if (ggml_traits(t.type).element) gguf_views.push_back(wgg->view(t));
    wts = {gguf_views, o.weights};
  } else {
    wst.emplace(o.weights);
    wts = weights_of(*wst);
  }
  if (is_imatrix_file(o.hessians))
    him.emplace(read_imatrix(o.hessians));
  else
    hst.emplace(o.hessians);
  const std::vector<planned_layer> plan = him ? plan_layers(o, wts, *him) : plan_layers(o, wts, *hst);
  const bool gguf_out = o.format == output_format::gguf;
  const bool checkpoint_out = o.format == output_format::gptq || o.format == output_format::compressed_tensors;
  yaqa::detail::require(!checkpoint_out || wst.has_value(), "yaqa-quantize: --format ", output_format_name(o.format),
                        " needs safetensors weights (the checkpoint keeps the model's other tensors as they are); '",
                        o.weights, "' is a GGUF file");
  std::vector<std::pair<std::string, layer_result<int_grid<float>>>> checkpoint_layers;
  checkpoint_layers.reserve(plan.size());

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
  if (wst) out.metadata() = wst->metadata();
  auto& meta = out.metadata();
  meta["yaqa.version"] = YAQA_VERSION_STRING;
  meta["yaqa.method"] = method_name(o.algorithm);
  meta["yaqa.quantizer"] = quantizer_label(o);
  meta["yaqa.bits"] = std::to_string(o.bits);
  meta["yaqa.seed"] = std::to_string(o.seed);
  meta["yaqa.rht"] = o.rht ? "true" : "false";
  if (!o.sketch.empty()) meta["yaqa.sketch"] = o.sketch;
  std::map<std::string, detail::gguf_blocks> gguf_tensors;  // GGUF output: each quantized layer's blocks

  // A llama.cpp recipe (gguf-mix:NAME): the type of every 2-D weight of the model, by its rules.
  std::map<std::string, ggml_type> recipe;
  const gguf_preset* preset = o.gguf_preset.empty() ? nullptr : find_gguf_preset(o.gguf_preset);
  if (preset) {
    std::vector<gguf_weight> all;
    for (const tensor_view& t : wts.tensors)
      if (t.rank() == 2) all.push_back({std::string(t.name), t.shape[1]});
    if (wgg)  // block-typed weights of the input also count in llama.cpp's layer counters
      for (const gguf_tensor_info& t : wgg->tensors())
        if (!ggml_traits(t.type).element && t.shape.size() == 2) all.push_back({t.name, t.shape[1]});
    gguf_model_facts facts;
    facts.has_imatrix = him.has_value();
    if (wgg)
      if (const gguf_value* a = wgg->find_value("general.architecture"); a && a->is<std::string>()) {
        const std::string arch = a->as<std::string>();
        const gguf_value* h = wgg->find_value(arch + ".attention.head_count");
        const gguf_value* hk = wgg->find_value(arch + ".attention.head_count_kv");
        if (h && hk && h->is<std::uint32_t>() && hk->is<std::uint32_t>() && hk->as<std::uint32_t>() > 0)
          facts.n_gqa = int(h->as<std::uint32_t>() / hk->as<std::uint32_t>());
      }
    recipe = gguf_preset_types(*preset, std::move(all), facts);
  }

  run_summary s;
  auto& rep = s.report;
  rep["tool"] = "yaqa-quantize";
  rep["version"] = YAQA_VERSION_STRING;
  rep["options"] = {{"weights", o.weights},       {"hessians", o.hessians}, {"out", o.out},
                    {"method", method_name(o.algorithm)}, {"quantizer", quantizer_label(o)},
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
      matrix<float> h_in;
      if (pl.diagonal) {  // an imatrix: H_in = diag(mean x^2)
        h_in.setZero(n, n);
        h_in.diagonal() = pl.diagonal->diagonals.front().cast<float>();
      } else {
        h_in = to_symmetric_matrix<float>(*pl.hessians.h_in, n);
      }
      const matrix<float> h_out = pl.hessians.h_out ? to_symmetric_matrix<float>(*pl.hessians.h_out, m) : matrix<float>();

      options lo = o;  // a recipe picks the type per weight
      if (preset) {
        const auto t = recipe.find(name);
        yaqa::detail::require<shape_error>(t != recipe.end(), "yaqa-quantize: recipe ", o.gguf_preset, ": the rows of ",
                                           name, " (", n, " weights) fit no GGUF block type (32 or 256 per block)");
        lo.gguf_type = t->second;
        lo.bits = gguf_code_bits(t->second);
      }
      detail::layer_job job{lo, backend, ro, pl, name, w, h_in, h_out, out, rep, log, quantized.size() + 1, plan.size(),
                            gguf_out ? &gguf_tensors : nullptr, checkpoint_out ? &checkpoint_layers : nullptr};
      detail::with_quantizer(lo, view(h_in), [&](const auto& q) { detail::write_layer(q, job); });
    } catch (const yaqa::error&) {
      detail::rethrow_with_context(context);
    }
    quantized.push_back(name);
  }
  s.layers = int(quantized.size());
  if (checkpoint_out) {
    // GPTQ / compressed-tensors: every other tensor as it is, the layers packed, the config JSON
    // beside the file (quantize_config.json: what GPTQ loaders read; quantization_config.json:
    // the block that goes into the model's config.json).
    safetensors_writer w;
    w.forbid_path(o.weights);
    w.forbid_path(o.hessians);
    if (!o.report.empty()) w.forbid_path(o.report);
    w.metadata() = meta;
    for (const tensor_view& t : wst->tensors())
      if (std::find(quantized.begin(), quantized.end(), t.name) == quantized.end()) {
        w.add_borrowed(t);
        ++s.copied;
      }
    std::vector<quantized_linear<float>> layers;
    for (const auto& [name, r] : checkpoint_layers) layers.emplace_back(name, r);
    checkpoint_options co;
    co.format = o.format == output_format::gptq ? checkpoint_format::gptq : checkpoint_format::compressed_tensors;
    co.act_order = o.act_order;
    co.ignore.clear();  // the modules whose 2-D weight stays unquantized (e.g. lm_head without a Hessian)
    for (const tensor_view& t : wst->tensors()) {
      const std::string nm(t.name);
      if (t.rank() == 2 && nm.size() > 7 && nm.ends_with(".weight") &&
          std::find(quantized.begin(), quantized.end(), nm) == quantized.end())
        co.ignore.push_back(nm.substr(0, nm.size() - 7));
    }
    const int_grid_options grid{.bits = o.bits, .sym = !o.asym, .group_size = o.group_size, .mse = o.mse};
    const std::filesystem::path dir = std::filesystem::absolute(o.out).parent_path();
    const std::filesystem::path cfg = dir / (o.format == output_format::gptq ? "quantize_config.json"
                                                                             : "quantization_config.json");
    for (const std::string* in : {&o.weights, &o.hessians}) check_not_forbidden("yaqa-quantize: the config", cfg, {*in});
    const checkpoint_json j = write_quantized_checkpoint<float>(w, o.out, layers, grid, co);
    atomic_output_file f(cfg, "yaqa-quantize: the checkpoint's config");
    f.write((o.format == output_format::gptq ? j.quantize_config : j.quantization_config).dump(2) + "\n");
    f.commit();
    rep["checkpoint_config"] = {{"path", cfg.string()}, {"quantization_config", j.quantization_config}};
  } else if (gguf_out) {
    // Every KV pair and every tensor of a GGUF input in file order, quantized ones replaced by
    // their blocks; a safetensors input's tensors in its order as plain GGUF types.
    gguf_writer g;
    g.forbid_path(o.weights);
    g.forbid_path(o.hessians);
    if (!o.report.empty()) g.forbid_path(o.report);
    if (wgg) g.copy_from(*wgg, false);
    g.set("general.file_type", gguf_value(preset ? preset->file_type : llama_file_type(o.gguf_type)));
    g.set("general.quantization_version", gguf_value(std::uint32_t{2}));
    for (const auto& [k, v] : meta)
      if (k.rfind("yaqa.", 0) == 0) g.set(k, gguf_value(v));
    auto add = [&](std::string_view name, std::vector<index> shape, auto&& pass_through) {
      const auto q = gguf_tensors.find(std::string(name));
      if (q != gguf_tensors.end()) {
        g.add_borrowed(std::string(name), q->second.type, std::move(shape), q->second.bytes);
      } else {
        pass_through();
        ++s.copied;
      }
    };
    if (wgg) {
      for (const gguf_tensor_info& t : wgg->tensors()) add(t.name, t.shape, [&] { g.add_borrowed(t); });
    } else {
      for (const tensor_view& t : wst->tensors())
        add(t.name, {t.shape.begin(), t.shape.end()}, [&] {
          const auto gt = ggml_type_of(t.type);
          yaqa::detail::require<format_error>(gt.has_value(), "yaqa-quantize: ", yaqa::detail::describe(t), " is ",
                                              safetensors_name(t.type), ", which GGUF cannot store; expected F32, F16, BF16, "
                                              "F64 or I8..I64");
          g.add_borrowed(std::string(t.name), *gt, {t.shape.begin(), t.shape.end()}, t.bytes);
        });
    }
    g.write(o.out);
  } else {
    // Pass everything else through; a name the tool writes itself must not already be an input.
    auto pass = [&](const tensor_view& t) {
      if (std::find(quantized.begin(), quantized.end(), t.name) != quantized.end()) return;
      yaqa::detail::require<format_error>(!out.contains(t.name), "yaqa-quantize: '", o.weights, "' has a tensor '",
                                          t.name, "', a name the output uses for a quantized layer's codes/params");
      out.add_borrowed(t);
      ++s.copied;
    };
    if (wgg) {
      for (const gguf_tensor_info& t : wgg->tensors()) {
        yaqa::detail::require<format_error>(
            ggml_traits(t.type).element.has_value() ||
                std::find(quantized.begin(), quantized.end(), t.name) != quantized.end(),
            "yaqa-quantize: '", o.weights, "' tensor '", t.name, "' is ", ggml_type_name(t.type),
            ", a GGUF block type that safetensors cannot store; write a GGUF (--out NAME.gguf) to copy it");
        pass(wgg->view(t));
      }
    } else {
      for (const tensor_view& t : wst->tensors()) pass(t);
    }
    out.write(o.out);
  }
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
