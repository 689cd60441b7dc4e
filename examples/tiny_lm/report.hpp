#pragma once
//! \file
//! The result table (Markdown), the raw numbers (JSON) and the KL chart (gnuplot SVG).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <yaqa/core/error.hpp>

#include "model.hpp"

namespace tiny_lm {

//! One quantization setting's outcome (every linear layer quantized the same way).
struct result_row {
  std::string method;     //!< "RTN", "GPTQ", "LDLQ", "YAQA-A", "YAQA-B"
  std::string format;     //!< "int", "e8p", "qtip12", "qtip16" or "gguf:TYPE"
  int bits = 0;
  double kl = 0;          //!< KL(original || quantized), nats per byte, held out
  double bpb = 0;         //!< bits per byte of the quantized model, held out
  double proxy = 0;       //!< relative proxy loss with the method's own Hessian, summed over layers
  double proxy_b = 0;     //!< relative proxy loss with the Sketch B Hessian (common yardstick), summed
  double seconds = 0;     //!< quantization time, all layers
  [[nodiscard]] std::string setting() const {
    if (format == "int") return "INT" + std::to_string(bits);
    if (format == "e8p") return "E8P " + std::to_string(bits) + "-bit";
    if (format == "qtip12") return "QTIP-L12 " + std::to_string(bits) + "-bit";
    if (format == "qtip16") return "QTIP-L16 " + std::to_string(bits) + "-bit";
    if (format.rfind("gguf:", 0) == 0) return "GGUF " + format.substr(5);
    return format + " " + std::to_string(bits) + "-bit";
  }
};

//! Everything the report shows besides the rows.
struct report_context {
  std::string machine;       //!< CPU model and thread count
  std::string command;       //!< how the run was started
  std::string model;         //!< model_config::describe()
  std::string corpus;        //!< what was trained on, split sizes
  std::string hessians;      //!< calibration sizes
  std::string quantizers;    //!< grid / E8P settings
  index heldout_bytes = 0;
  double original_bpb = 0;
  std::map<std::string, double> stage_seconds;
};

inline std::string fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

//! KL to 4 significant digits (values span 1e-4 .. 1).
inline std::string sig4(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

inline std::vector<std::string> unique_in_order(const std::vector<result_row>& rows,
                                                std::string (*key)(const result_row&)) {
  std::vector<std::string> out;
  for (const auto& r : rows) {
    const std::string k = key(r);
    if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  }
  return out;
}
inline std::string method_key(const result_row& r) { return r.method; }
inline std::string setting_key(const result_row& r) { return r.setting(); }

inline const result_row* find_row(const std::vector<result_row>& rows, const std::string& method,
                                  const std::string& setting) {
  for (const auto& r : rows)
    if (r.method == method && r.setting() == setting) return &r;
  return nullptr;
}

//! Markdown: a KL pivot (method x setting) and the full table.
inline std::string markdown(const std::vector<result_row>& rows, const report_context& ctx) {
  std::ostringstream os;
  os << "## tiny_lm: KL(original || quantized) per byte on held-out text\n\n";
  os << "- model: " << ctx.model << "\n- corpus: " << ctx.corpus << "\n- Hessians: " << ctx.hessians
     << "\n- quantizers: " << ctx.quantizers << "\n- original model: " << fixed(ctx.original_bpb, 4)
     << " bits/byte on " << ctx.heldout_bytes << " held-out bytes\n- machine: " << ctx.machine
     << "\n- command: `" << ctx.command << "`\n\n";
  const auto methods = unique_in_order(rows, method_key);
  const auto settings = unique_in_order(rows, setting_key);
  os << "KL (nats/byte, lower is better):\n\n| method |";
  for (const auto& s : settings) os << " " << s << " |";
  os << "\n|---|";
  for (std::size_t i = 0; i < settings.size(); ++i) os << "---:|";
  os << "\n";
  for (const auto& m : methods) {
    os << "| " << m << " |";
    for (const auto& s : settings) {
      const result_row* r = find_row(rows, m, s);
      os << " " << (r ? sig4(r->kl) : std::string("-")) << " |";
    }
    os << "\n";
  }
  os << "\nAll settings (relative proxy tr(dW H_in dW^T H_out) / tr(W H_in W^T H_out) summed over "
        "layers: \"own H\" with the Hessian the method rounds with, in the driver's rotated and damped "
        "basis, H_out = I for RTN/GPTQ/LDLQ; \"Sketch-B H\" with the Sketch B factors for every method; "
        "time = rounding all layers):\n\n| method | format | bits | KL (nats/byte) | bits/byte | "
        "rel. proxy, own H | rel. proxy, Sketch-B H | time (s) |\n|---|---|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& r : rows)
    os << "| " << r.method << " | " << r.format << " | " << r.bits << " | " << sig4(r.kl) << " | "
       << fixed(r.bpb, 4) << " | " << sig4(r.proxy) << " | " << sig4(r.proxy_b) << " | "
       << fixed(r.seconds, 2) << " |\n";
  if (!ctx.stage_seconds.empty()) {
    os << "\nStage times:";
    for (const auto& [k, v] : ctx.stage_seconds) os << " " << k << " " << fixed(v, 1) << " s;";
    os << "\n";
  }
  return os.str();
}

inline nlohmann::json to_json(const std::vector<result_row>& rows, const report_context& ctx) {
  nlohmann::json j;
  j["machine"] = ctx.machine;
  j["command"] = ctx.command;
  j["model"] = ctx.model;
  j["corpus"] = ctx.corpus;
  j["hessians"] = ctx.hessians;
  j["quantizers"] = ctx.quantizers;
  j["heldout_bytes"] = ctx.heldout_bytes;
  j["original_bits_per_byte"] = ctx.original_bpb;
  j["stage_seconds"] = ctx.stage_seconds;
  j["results"] = nlohmann::json::array();
  for (const auto& r : rows)
    j["results"].push_back({{"method", r.method},
                            {"format", r.format},
                            {"bits", r.bits},
                            {"kl_nats_per_byte", r.kl},
                            {"bits_per_byte", r.bpb},
                            {"relative_proxy_own_sum", r.proxy},
                            {"relative_proxy_sketch_b_sum", r.proxy_b},
                            {"quantize_seconds", r.seconds}});
  return j;
}

inline void write_text(const std::filesystem::path& path, const std::string& s) {
  std::ofstream f(path, std::ios::binary);
  f << s;
  yaqa::detail::require<yaqa::io_error>(bool(f), "tiny_lm::write_text: cannot write '",
                                        path.string(), "'");
}

//! Writes kl.dat and kl.gp into dir and runs gnuplot to make kl.svg: clustered bars, one cluster
//! per setting, one bar per method, log-scale KL. Returns an empty string on success, else why
//! the chart was skipped (gnuplot missing or failing is not an error of the demo).
inline std::string write_chart(const std::filesystem::path& dir, const std::vector<result_row>& rows) {
  const auto methods = unique_in_order(rows, method_key);
  const auto settings = unique_in_order(rows, setting_key);
  std::ostringstream dat;
  dat << "setting";
  for (const auto& m : methods) dat << "\t\"" << m << "\"";
  dat << "\n";
  for (const auto& s : settings) {
    dat << "\"" << s << "\"";
    for (const auto& m : methods) {
      const result_row* r = find_row(rows, m, s);
      dat << "\t" << (r ? std::to_string(r->kl) : std::string("NaN"));
    }
    dat << "\n";
  }
  write_text(dir / "kl.dat", dat.str());
  std::ostringstream gp;
  gp << "set terminal svg size 900,500 dynamic font 'sans,12'\n"
     << "set output '" << (dir / "kl.svg").string() << "'\n"
     << "set title 'tiny\\_lm: KL(original || quantized) per byte, held-out text'\n"
     << "set ylabel 'KL (nats/byte, log scale)'\nset logscale y\nset grid ytics\n"
     << "set style data histograms\nset style histogram clustered gap 1\n"
     << "set style fill solid 0.85 border -1\nset boxwidth 0.9\nset key top left\n"
     << "set datafile missing 'NaN'\n"
     << "plot for [i=2:" << methods.size() + 1 << "] '" << (dir / "kl.dat").string()
     << "' using i:xtic(1) title columnheader(i)\n";
  write_text(dir / "kl.gp", gp.str());
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0)
    return "gnuplot not found: chart skipped (kl.dat and kl.gp written; install gnuplot-nox)";
  const std::string cmd = "gnuplot '" + (dir / "kl.gp").string() + "' 2>/dev/null";
  if (std::system(cmd.c_str()) != 0) return "gnuplot failed: chart skipped (see kl.gp)";
  return {};
}

}  // namespace tiny_lm
