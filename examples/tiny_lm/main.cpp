// yaqa-demo: train a byte-level language model on the repository's own text, collect its
// Hessian sketches, quantize every linear layer with RTN / GPTQ / LDLQ / YAQA at 2-4 bits and
// report KL(original || quantized) per byte on held-out text. See docs/demo.md.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <fstream>
#include <iostream>
#include <regex>
#include <string>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "corpus.hpp"
#include "cross_layer.hpp"
#include "evaluate.hpp"
#include "hessians.hpp"
#include "model.hpp"
#include "progress.hpp"
#include "quantize.hpp"
#include "report.hpp"
#include "train.hpp"

namespace fs = std::filesystem;
using namespace tiny_lm;

namespace {

struct options {
  std::string corpus_file;
  fs::path out = fs::path(TINY_LM_BUILD_DIR) / "demo";
  bool quick = false;
  bool retrain = false;
  bool check_order = false;
  int threads = 0;
  tiny_lm::index steps = -1;
  tiny_lm::index sequences = -1;
  int passes = -1;
  std::string rows;       //!< regex over row labels ("YAQA-B", "RTN+LWC", "INT2", ...)
  int refine_steps = -1;
  double refine_lr = -1;
  double lwc_lr = -1;
  std::string sde_pattern;
  std::string handover;
};

void usage() {
  std::fprintf(stderr,
               "usage: yaqa-demo [--corpus FILE] [--quick] [--out DIR] [--retrain] [--threads N]\n"
               "                 [--steps N] [--sequences N] [--passes P] [--check-order]\n"
               "                 [--rows REGEX] [--refine-steps N] [--refine-lr X] [--lwc-lr X]\n"
               "                 [--sde-pattern diag|band:K|topleft:K|full] [--refine-handover grid|weights]\n"
               "  --corpus FILE  train and evaluate on FILE (default: the repository's text)\n"
               "  --quick        shrunken configuration (tiny model, few steps; seconds)\n"
               "  --out DIR      results and cached weights (default: <build>/demo)\n"
               "  --retrain      ignore cached weights\n"
               "  --threads N    OpenMP threads (default: all; 1 with --quick)\n"
               "  --steps N      training steps (default: the configuration's)\n"
               "  --sequences N  calibration sequences for the Hessians (default: 256; quick 128)\n"
               "  --passes P     Sketch A passes, >= 2 (default: 3)\n"
               "  --check-order  only check KL(YAQA-B) < KL(LDLQ) < KL(RTN) at 3 bits, averaged\n"
               "                 over seeds; exit status 1 when it does not hold\n"
               "  --rows REGEX   only the rows whose 'method setting' label matches (e.g. 'YAQA-B.*INT2')\n"
               "  --refine-steps N, --refine-lr X, --lwc-lr X, --sde-pattern P\n"
               "  --refine-handover grid|weights\n"
               "                 the refinement rows' settings (defaults: docs/refine.md)\n");
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "yaqa-demo: option %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--corpus") o.corpus_file = value();
    else if (a == "--out") o.out = value();
    else if (a == "--quick") o.quick = true;
    else if (a == "--retrain") o.retrain = true;
    else if (a == "--check-order") o.check_order = true;
    else if (a == "--threads") o.threads = std::stoi(value());
    else if (a == "--steps") o.steps = std::stoll(value());
    else if (a == "--sequences") o.sequences = std::stoll(value());
    else if (a == "--passes") o.passes = std::stoi(value());
    else if (a == "--rows") o.rows = value();
    else if (a == "--refine-steps") o.refine_steps = std::stoi(value());
    else if (a == "--refine-lr") o.refine_lr = std::stod(value());
    else if (a == "--lwc-lr") o.lwc_lr = std::stod(value());
    else if (a == "--sde-pattern") o.sde_pattern = value();
    else if (a == "--refine-handover") o.handover = value();
    else if (a == "--help" || a == "-h") {
      usage();
      std::exit(0);
    } else {
      std::fprintf(stderr, "yaqa-demo: unknown option '%s'\n", a.c_str());
      usage();
      std::exit(2);
    }
  }
  return o;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

std::string command_line(int argc, char** argv) {
  std::string s = "yaqa-demo";
  for (int i = 1; i < argc; ++i) s += std::string(" ") + argv[i];
  return s;
}

//! Quantizes every linear layer of p with setting s (Hessians hs); returns the quantized model,
//! the driver's relative proxies summed over layers and the time spent rounding.
struct quantized_model {
  params p;
  double proxy = 0;
  double proxy_b = 0;
  double seconds = 0;
};

quantized_model quantize_model(const yaqa::cpu_backend& be, const params& p, const model_config& mc,
                               const std::vector<layer_hessians>& hs, const quant_setting& s,
                               const quant_config& qc, std::uint64_t seed, const batch* cl_batch) {
  quantized_model out{p, 0.0, 0.0, 0.0};
  if (s.refine == refine_id::cl) {
    // Layer by layer on the quantized stream (cross_layer.hpp); "own H" = the X^T X proxy.
    auto r = quantize_cross_layer(be, p, mc, *cl_batch, qc, s.bits, cross_layer_config{});
    out.p = std::move(r.p);
    out.seconds = r.seconds;
    for (tiny_lm::index l = 0; l < mc.linear_count(); ++l) {
      const auto& h = hs[std::size_t(l)];
      const mat eye = mat::Identity(linear_at(p, l).w.rows(), linear_at(p, l).w.rows());
      out.proxy += relative_kron_proxy(be, linear_at(p, l).w, linear_at(out.p, l).w, h.xtx, eye);
      out.proxy_b += relative_kron_proxy(be, linear_at(p, l).w, linear_at(out.p, l).w, h.b_in, h.b_out);
    }
    return out;
  }
  for (tiny_lm::index l = 0; l < mc.linear_count(); ++l) {
    // A different transform per layer, as the reference seeds the RHT with the layer index.
    const auto o = quantize_weights(be, s, qc, linear_at(p, l).w, hs[std::size_t(l)],
                                    seed * 1000 + std::uint64_t(l));
    const auto& h = hs[std::size_t(l)];
    out.proxy_b += relative_kron_proxy(be, linear_at(p, l).w, o.weights, h.b_in, h.b_out);
    linear_at(out.p, l).w = o.weights;
    out.proxy += o.relative_proxy;
    out.seconds += o.seconds;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  options opt = parse(argc, argv);
  const auto t0 = clock_type::now();
  // The quick model's products are too small to gain from threads, and OpenMP barriers on a
  // loaded machine cost more than they save: one thread unless asked otherwise.
  if (opt.quick && opt.threads == 0) opt.threads = 1;
#if defined(_OPENMP)
  if (opt.threads > 0) omp_set_num_threads(opt.threads);
#endif
  const yaqa::cpu_backend be{opt.threads};
  report_context ctx;
  ctx.machine = yaqa::detail::concat(cpu_model(), ", ", be.thread_count(), " threads");
  ctx.command = command_line(argc, argv);

  model_config mc;
  train_config tc;
  hessian_config hc;
  quant_config qc;
  tiny_lm::index eval_limit = 48 * 1024;
  tiny_lm::index chunk = 4096;
  if (opt.quick) {
    mc = {16, 16, 128, 256, 2};
    tc.steps = 1500;
    tc.batch = 128;
    hc.calibration = {128, 64, 16, 7};
    hc.sketch_a_passes = 3;
    eval_limit = 8 * 1024;
    chunk = 1024;
  }
  if (opt.steps > 0) tc.steps = opt.steps;
  if (opt.sequences > 0) hc.calibration.sequences = opt.sequences;
  if (opt.passes > 0) hc.sketch_a_passes = opt.passes;

  corpus c = opt.corpus_file.empty() ? repository_corpus(TINY_LM_SOURCE_DIR) : file_corpus(opt.corpus_file);
  split(c, chunk);
  ctx.corpus = yaqa::detail::concat(opt.corpus_file.empty() ? "repository text" : opt.corpus_file,
                                    " (", c.files.size(), " files, ", c.text.size(),
                                    " bytes): train ", c.train_bytes(), " bytes, held out ",
                                    c.heldout_bytes(), " bytes (every 10th ", chunk, "-byte chunk)");
  note(t0, "corpus: " + ctx.corpus);

  // ---- model: cached or trained ----
  const std::uint64_t key = cache_key(c, mc, tc);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(key));
  fs::create_directories(opt.out);
  const fs::path cache = opt.out / (std::string("tiny_lm-") + hex + ".bin");
  params p;
  bool cached = false;
  if (!opt.retrain && load_params(cache, mc, key, p)) {
    cached = true;
    note(t0, "model: loaded cached weights " + cache.string());
  } else {
    note(t0, yaqa::detail::concat("model: ", mc.describe(), "; training ", tc.steps, " steps of ",
                                  tc.batch, " bytes"));
    const auto ts = clock_type::now();
    p = train(be, c, mc, tc, t0);
    ctx.stage_seconds["train"] = seconds_since(ts);
    save_params(cache, p, key);
    note(t0, "model: saved " + cache.string());
  }
  ctx.model = yaqa::detail::concat(mc.describe(), " (", parameter_count(p), " parameters, ",
                                   mc.linear_count(), " quantized linear layers), Adam ", tc.steps,
                                   " steps x ", tc.batch, " bytes",
                                   cached ? " (weights from the cache: training skipped)" : "");

  // ---- reference distribution on held-out text ----
  const eval_set es = make_eval_set(c, mc.context, eval_limit);
  const auto targets = targets_of(es);
  const mat ref = log_probs(be, p, es);
  ctx.original_bpb = compare_log_probs(ref, ref, targets).bpb;
  ctx.heldout_bytes = es.size();
  note(t0, yaqa::detail::concat("eval: ", es.size(), " held-out bytes; original model ",
                                fixed(ctx.original_bpb, 4), " bits/byte"));

  if (opt.check_order) {
    // KL(YAQA-B) < KL(LDLQ) < KL(RTN) at 3 bits, averaged over seeds: each seed draws its own
    // calibration sequences, sampled labels and Hadamard signs.
    const int seeds = 3;
    const method_id methods[] = {method_id::rtn, method_id::ldlq, method_id::yaqa_b};
    double kl[3] = {0, 0, 0};
    hessian_config hck = hc;
    hck.sketch_a = false;
    for (int sd = 1; sd <= seeds; ++sd) {
      hck.calibration.seed = std::uint64_t(sd);
      const auto hs = collect_hessians(be, p, c, mc, hck, t0, true);
      for (int k = 0; k < 3; ++k) {
        const quant_setting s{methods[k], format_id::int_grid, 3};
        const auto qm = quantize_model(be, p, mc, hs, s, qc, std::uint64_t(sd), nullptr);
        const double v = evaluate(be, qm.p, es, ref, targets).kl;
        kl[k] += v / seeds;
        note(t0, yaqa::detail::concat("check: seed ", sd, " ", method_label(methods[k]),
                                      " INT3 KL ", sig4(v)));
      }
    }
    const bool ok = kl[2] < kl[1] && kl[1] < kl[0];
    std::printf("INT3, mean KL over %d seeds: RTN %.5g, LDLQ %.5g, YAQA-B %.5g -> %s\n", seeds, kl[0],
                kl[1], kl[2], ok ? "ordering holds (YAQA-B < LDLQ < RTN)" : "ORDERING VIOLATED");
    return ok ? 0 : 1;
  }

  // ---- Hessians ----
  const auto th = clock_type::now();
  const auto hs = collect_hessians(be, p, c, mc, hc, t0);
  ctx.stage_seconds["hessians"] = seconds_since(th);
  ctx.hessians = yaqa::detail::concat(
      hc.calibration.sequences, " train sequences x ", hc.calibration.length,
      " positions, labels sampled from the model; E[xx^T]; Sketch A ", hc.sketch_a_passes,
      " passes; Sketch B 1 pass");

  // ---- quantize and evaluate ----
  std::vector<quant_setting> settings;
  const method_id methods[] = {method_id::rtn, method_id::rtn_rht, method_id::gptq,
                               method_id::ldlq, method_id::yaqa_a, method_id::yaqa_b};
  if (opt.refine_steps >= 0) qc.refine.steps = opt.refine_steps;
  if (opt.refine_lr > 0) qc.refine.lr = opt.refine_lr;
  if (opt.lwc_lr > 0) qc.refine.lwc_lr = opt.lwc_lr;
  if (!opt.sde_pattern.empty()) qc.refine.pattern = yaqa::parse_sde_pattern(opt.sde_pattern);
  if (!opt.handover.empty()) {
    yaqa::detail::require(opt.handover == "grid" || opt.handover == "weights",
                          "yaqa-demo: --refine-handover expects grid or weights, got '", opt.handover, "'");
    qc.refine.handover = opt.handover == "grid" ? yaqa::refine_handover::grid : yaqa::refine_handover::weights;
  }
  ctx.quantizers = qc.describe();
  for (int bits : {2, 3, 4}) {
    for (method_id m : methods) settings.push_back({m, format_id::int_grid, bits});
    // Refinement rows (issue #15): RTN with LWC / SDE / both; the best combination with YAQA.
    for (refine_id r : {refine_id::lwc, refine_id::sde, refine_id::sde_lwc})
      settings.push_back({method_id::rtn, format_id::int_grid, bits, r});
    settings.push_back({method_id::rtn, format_id::int_grid, bits, refine_id::cl});
    for (refine_id r : {refine_id::lwc, refine_id::sde_lwc})
      settings.push_back({method_id::yaqa_b, format_id::int_grid, bits, r});
  }
  // E8P at 2 bits, residual E8P (RVQ) at 3 and 4 bits.
  for (int bits : {2, 3, 4})
    for (method_id m : methods)
      if (supported({m, format_id::e8p, bits})) settings.push_back({m, format_id::e8p, bits});
  // QTIP trellis (issue #16): L = 12 at 2/3/4 bits; QTIP's own L = 16 HYB for YAQA-B at 2 bits.
  for (int bits : {2, 3, 4})
    for (method_id m : {method_id::rtn_rht, method_id::ldlq, method_id::yaqa_a, method_id::yaqa_b})
      settings.push_back({m, format_id::trellis, bits});
  settings.push_back({method_id::yaqa_b, format_id::trellis16, 2});
  // Coordinate descent after YAQA (issue #16): every format at 2 bits, the int grid at 3 and 4.
  for (method_id m : {method_id::yaqa_a, method_id::yaqa_b}) {
    for (int bits : {2, 3, 4}) settings.push_back({m, format_id::int_grid, bits, refine_id::none, true});
    settings.push_back({m, format_id::e8p, 2, refine_id::none, true});
    settings.push_back({m, format_id::trellis, 2, refine_id::none, true});
  }
  // The combinations: learned grid + CD; SDE (identity straight-through) with E8P. (SDE with the
  // L = 12 trellis was measured once, 2026-12-06: KL 0.04925 vs 0.04832 without, for 88 s of
  // Viterbi walks per setting; left out of the default rows, see docs/refine.md.)
  for (int bits : {2, 3, 4}) settings.push_back({method_id::yaqa_b, format_id::int_grid, bits, refine_id::lwc, true});
  settings.push_back({method_id::yaqa_b, format_id::e8p, 2, refine_id::sde});
  // llama.cpp's GGUF block types (issue #18), no RHT, scales fitted with the imatrix (diag of
  // E[xx^T]): RTN is llama-quantize's own result, then the same blocks with error feedback.
  for (const auto& [t, bits] : std::initializer_list<std::pair<yaqa::ggml_type, int>>{
           {yaqa::ggml_type::q2_k, 2}, {yaqa::ggml_type::q3_k, 3}, {yaqa::ggml_type::q4_k, 4},
           {yaqa::ggml_type::q4_0, 4}, {yaqa::ggml_type::iq4_nl, 4}})
    for (method_id m : {method_id::rtn, method_id::gptq, method_id::ldlq, method_id::yaqa_b})
      settings.push_back({m, format_id::gguf, bits, refine_id::none, false, t});
  if (!opt.rows.empty()) {
    const std::regex re(opt.rows);
    std::erase_if(settings, [&](const quant_setting& s) {
      result_row r;
      r.format = format_label(s);
      r.bits = s.bits;
      const std::string label = setting_label(s) + " " + r.setting();
      return !std::regex_search(label, re);
    });
  }
  const batch cl_batch = cross_layer_batch(c, hc.calibration, cross_layer_config{}.sequences, mc.context);
  std::vector<result_row> rows;
  const auto tq = clock_type::now();
  progress pr("quantize", tiny_lm::index(settings.size()), t0, false, 0.0);
  for (std::size_t i = 0; i < settings.size(); ++i) {
    const auto& s = settings[i];
    const auto qm = quantize_model(be, p, mc, hs, s, qc, 1, &cl_batch);
    const eval_result e = evaluate(be, qm.p, es, ref, targets);
    result_row r;
    r.method = setting_label(s);
    r.format = format_label(s);
    r.bits = s.bits;
    r.kl = e.kl;
    r.bpb = e.bpb;
    r.proxy = qm.proxy;
    r.proxy_b = qm.proxy_b;
    r.seconds = qm.seconds;
    rows.push_back(r);
    pr.update(tiny_lm::index(i + 1), yaqa::detail::concat(r.method, " ", r.setting(), ": KL ",
                                                          sig4(r.kl), ", ", fixed(r.bpb, 3),
                                                          " bits/byte"));
  }
  ctx.stage_seconds["quantize+eval"] = seconds_since(tq);
  ctx.stage_seconds["total"] = seconds_since(t0);

  const std::string md = markdown(rows, ctx);
  std::fputs(md.c_str(), stdout);
  write_text(opt.out / "results.md", md);
  write_text(opt.out / "results.json", to_json(rows, ctx).dump(2) + "\n");
  const std::string chart = write_chart(opt.out, rows);
  note(t0, chart.empty() ? "wrote " + (opt.out / "results.md").string() + ", results.json, kl.svg"
                         : chart);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "yaqa-demo: error: %s\n", e.what());
  return 1;
}
