#pragma once
//! \file
//! yaqa-quantize: quantizes every weight of a safetensors file that has Hessian factors in a
//! second file (naming convention: <yaqa/io/hessian_file.hpp>), writes the dequantized weights,
//! codes and parameters, and reports the proxy loss per layer.
//!
//! Split in three so each part can be tested (and fuzzed) alone:
//!   parse_command_line  argv -> options (never throws; usage errors become exit code 2)
//!   plan_layers         files + options -> the layers to quantize (naming convention, --only)
//!   run                 everything, writing the output atomically (run.cpp)
//! parse_command_line and plan_layers are inline here; run (run.cpp, write_layer.hpp) is compiled
//! once, in the yaqa_cli library, so the tests and the tool do not each instantiate every
//! rounding method for every quantizer.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <optional>
#include <ostream>
#include <regex>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <yaqa/yaqa.hpp>

#include "gguf_presets.hpp"

namespace yaqa::cli {

enum class quantizer_kind { int_grid, lloyd, fp4, e8p, trellis, gguf };

inline const char* quantizer_name(quantizer_kind k) {
  switch (k) {
    case quantizer_kind::int_grid: return "int";
    case quantizer_kind::lloyd: return "lloyd";
    case quantizer_kind::fp4: return "fp4";
    case quantizer_kind::e8p: return "e8p";
    case quantizer_kind::trellis: return "trellis";
    case quantizer_kind::gguf: return "gguf";
  }
  return "?";
}

//! The GGUF block types --quantizer gguf:TYPE accepts (ggml type names), with their code bits.
struct gguf_cli_type {
  ggml_type type;
  int bits;
};
inline constexpr std::array<gguf_cli_type, 9> gguf_cli_types{{{ggml_type::q8_0, 8},
                                                             {ggml_type::q4_0, 4},
                                                             {ggml_type::q5_0, 5},
                                                             {ggml_type::iq4_nl, 4},
                                                             {ggml_type::q2_k, 2},
                                                             {ggml_type::q3_k, 3},
                                                             {ggml_type::q4_k, 4},
                                                             {ggml_type::q5_k, 5},
                                                             {ggml_type::q6_k, 6}}};

//! "Q8_0, Q4_0, ..." for messages and --help.
inline std::string gguf_cli_type_list() {
  std::string s;
  for (const auto& t : gguf_cli_types) s += (s.empty() ? "" : ", ") + std::string(ggml_type_name(t.type));
  return s;
}

//! "Q2_K, Q3_K_S, ..." for messages and --help.
inline std::string gguf_preset_list() {
  std::string s;
  for (const auto& p : gguf_presets) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

//! What --quantizer gguf:X / gguf-mix:X names: one block type for every weight, or a recipe.
struct gguf_choice {
  const gguf_cli_type* type = nullptr;  //!< gguf:TYPE
  const gguf_preset* preset = nullptr;  //!< gguf-mix:NAME, or gguf:NAME for a recipe-only name (Q4_K_M)
};

//! "gguf:Q4_K" (case-insensitive) -> the type; "gguf:Q4_K_M" / "gguf-mix:Q2_K" -> the recipe.
//! Throws invalid_argument naming --quantizer and the accepted names.
inline gguf_choice parse_gguf_quantizer(const std::string& s) {
  const bool mix = s.rfind("gguf-mix:", 0) == 0;
  std::string name = s.substr(s.find(':') + 1);
  for (char& c : name) c = char(std::toupper(static_cast<unsigned char>(c)));
  gguf_choice c;
  if (!mix)
    for (const auto& t : gguf_cli_types)
      if (ggml_type_name(t.type) == name) c.type = &t;
  if (!c.type) c.preset = find_gguf_preset(name);
  if (!c.type && !c.preset)
    throw invalid_argument("yaqa-quantize: --quantizer '" + s + "': expected gguf:TYPE with TYPE one of " +
                           gguf_cli_type_list() + ", or a llama.cpp recipe gguf:NAME / gguf-mix:NAME with NAME one of " +
                           gguf_preset_list());
  return c;
}

//! The code bits of a GGUF block type.
inline int gguf_code_bits(ggml_type t) {
  for (const auto& c : gguf_cli_types)
    if (c.type == t) return c.bits;
  return 0;
}

//! True when `path` names a GGUF output (extension .gguf, any case).
inline bool is_gguf_path(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".gguf";
}

//! What --out holds (--format; automatic: GGUF for a .gguf name, else safetensors).
enum class output_format { automatic, safetensors, gguf, gptq, compressed_tensors };

inline const char* output_format_name(output_format f) {
  switch (f) {
    case output_format::automatic: return "auto";
    case output_format::safetensors: return "safetensors";
    case output_format::gguf: return "gguf";
    case output_format::gptq: return "gptq";
    case output_format::compressed_tensors: return "compressed-tensors";
  }
  return "?";
}

struct options {
  std::string weights, hessians, out;
  output_format format = output_format::automatic;  //!< resolved by parse_command_line (never automatic after)
  method algorithm = method::yaqa;
  quantizer_kind quantizer = quantizer_kind::int_grid;
  int bits = 4;
  index group_size = 0;  //!< 0: one group per output row (per channel)
  bool asym = false;
  bool mse = false;
  bool rht = true;
  bool act_order = false;      //!< gptq: columns by descending diag(H_in) (writes NAME.qgroup with groups)
  bool static_groups = false;  //!< gptq: fit every group up front from the original W
  std::string sketch;    //!< sketch tag; empty: untagged names
  index tile_rows = 16, tile_cols = 16;
  double damp = 0.01;
  std::uint64_t seed = 0;
  int threads = 0;       //!< 0: all cores
  std::string report;    //!< JSON report path; empty: none
  std::string only;      //!< ECMAScript regex searched in weight names; empty: all
  bool quiet = false;
  bool rtn_baseline = false;  //!< --rtn-baseline: also measure RTN's proxy per layer (report "rtn_relative_proxy")
  index cd_sweeps = 0;        //!< --cd-sweeps: coordinate-descent sweeps after rounding
  trellis_options trellis{};  //!< --trellis L,K,V,CODE (K is --bits)
  ggml_type gguf_type = ggml_type::q4_k;  //!< --quantizer gguf:TYPE (with a recipe: its base type)
  std::string gguf_preset;    //!< --quantizer gguf-mix:NAME: llama.cpp's recipe NAME (Q4_K_M, ...); empty: one type
  bool importance = true;     //!< gguf: fit the block scales weighted by diag(H_in) (llama.cpp's imatrix use)
  refine_options refine{};  //!< --refine, --sde-pattern, --lwc, --refine-steps, --refine-lr, --refine-lambda
};

//! What parse_command_line decided: run with `opts`, or exit with `exit_code` after printing
//! `message` (help text on stdout for 0, usage error on stderr for 2).
struct parse_result {
  std::optional<options> opts;
  int exit_code = 0;
  std::string message;
};

//! "16x16" -> {16, 16}. Throws invalid_argument naming --tile otherwise.
inline std::pair<index, index> parse_tile(const std::string& s) {
  auto bad = [&] {
    return invalid_argument("yaqa-quantize: option --tile expects ROWSxCOLS with positive integers (e.g. 16x16), got '" +
                            s + "'");
  };
  const auto x = s.find('x');
  if (x == std::string::npos || x == 0 || x + 1 == s.size()) throw bad();
  auto number = [&](const std::string& t) {
    if (t.size() > 6 || t.find_first_not_of("0123456789") != std::string::npos) throw bad();
    const index v = std::stoll(t);
    if (v < 1) throw bad();
    return v;
  };
  return {number(s.substr(0, x)), number(s.substr(x + 1))};
}

//! A decimal integer in [0, 2^64 - 1]. Throws invalid_argument naming --seed otherwise.
inline std::uint64_t parse_seed(const std::string& s) {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc{} || end != s.data() + s.size())
    throw invalid_argument("yaqa-quantize: option --seed expects a decimal integer in [0, 2^64 - 1], got '" + s + "'");
  return v;
}

//! "L,K,V,CODE" of trellis options (V as given: 0 = the code's own).
inline std::string concat_trellis(const trellis_options& t) {
  return yaqa::detail::concat(t.l, ",", t.k, ",", t.v, ",", to_string(t.code));
}

//! "L,K,V,CODE" (e.g. 16,2,2,hyb; V 0 = the code's own) -> trellis options. Throws
//! invalid_argument naming --trellis otherwise; the ranges are checked by yaqa::trellis.
inline trellis_options parse_trellis_spec(const std::string& s) {
  auto bad = [&] {
    return invalid_argument("yaqa-quantize: option --trellis expects L,K,V,CODE (e.g. 16,2,2,hyb; CODE 1mad, 3inst or "
                            "hyb; V 0 = the code's own), got '" + s + "'");
  };
  std::vector<std::string> f;
  std::size_t b = 0;
  for (std::size_t e; (e = s.find(',', b)) != std::string::npos; b = e + 1) f.push_back(s.substr(b, e - b));
  f.push_back(s.substr(b));
  if (f.size() != 4) throw bad();
  auto number = [&](const std::string& t) {
    int v = 0;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (t.empty() || ec != std::errc{} || end != t.data() + t.size()) throw bad();
    return v;
  };
  trellis_options o;
  o.l = number(f[0]);
  o.k = number(f[1]);
  o.v = number(f[2]);
  try {
    o.code = parse_trellis_code(f[3]);
  } catch (const invalid_argument&) {
    throw bad();
  }
  return o;
}

namespace detail {

//! Cross-option rules CLI11 cannot express; throws invalid_argument naming the options.
inline void validate(options& o, bool bits_given, bool group_given, bool trellis_given, bool rht_given = false) {
  using yaqa::detail::require;
  const char* q = quantizer_name(o.quantizer);
  switch (o.quantizer) {
    case quantizer_kind::int_grid:
      require(o.bits >= 2 && o.bits <= 8, "yaqa-quantize: --bits must be 2..8 for --quantizer int, got ", o.bits);
      break;
    case quantizer_kind::lloyd:
      require(o.bits >= 2 && o.bits <= 4, "yaqa-quantize: --bits must be 2, 3 or 4 for --quantizer lloyd, got ",
              o.bits);
      break;
    case quantizer_kind::fp4:
      require(!bits_given || o.bits == 4, "yaqa-quantize: --quantizer fp4 is 4 bits, got --bits ", o.bits);
      require(!group_given || o.group_size == 32, "yaqa-quantize: --quantizer fp4 uses MX blocks of 32 columns, got --group-size ",
              o.group_size);
      o.bits = 4;
      break;
    case quantizer_kind::e8p:
      if (!bits_given) o.bits = 2;
      require(o.bits >= 2 && o.bits <= 4,
              "yaqa-quantize: --bits must be 2, 3 or 4 for --quantizer e8p (3 and 4: residual E8P), got ", o.bits);
      require(o.group_size % 8 == 0, "yaqa-quantize: --group-size must be a multiple of 8 for --quantizer e8p, got ",
              o.group_size);
      break;
    case quantizer_kind::trellis:
      require(!group_given || o.group_size % 16 == 0, "yaqa-quantize: --quantizer trellis needs --group-size a multiple "
              "of 16 (the tile width), or 0 for whole rows; got ", o.group_size);
      o.trellis.group_size = o.group_size;
      if (trellis_given) {
        require(!bits_given || o.bits == o.trellis.k, "yaqa-quantize: --bits ", o.bits,
                " disagrees with K = ", o.trellis.k, " of --trellis");
        o.bits = o.trellis.k;
      } else {
        require(o.bits >= 1 && o.bits <= 4, "yaqa-quantize: --bits must be 1..4 for --quantizer trellis, got ", o.bits);
        o.trellis.k = o.bits;
      }
      trellis<float>::check_options(o.trellis);  // the library's range checks (no tables built)
      break;
    case quantizer_kind::gguf: {
      const std::string tn = o.gguf_preset.empty() ? std::string(ggml_type_name(o.gguf_type)) : o.gguf_preset;
      const int code_bits = gguf_code_bits(o.gguf_type);
      require(!bits_given || (o.gguf_preset.empty() && o.bits == code_bits), "yaqa-quantize: --quantizer gguf:", tn,
              " fixes the bits (", code_bits, "-bit codes", o.gguf_preset.empty() ? "" : " in its base type",
              "), got --bits ", o.bits);
      o.bits = code_bits;
      require(!group_given, "yaqa-quantize: --group-size does not apply to --quantizer gguf:", tn,
              " (its block layout fixes the groups)");
      // llama.cpp applies no rotation at inference: the blocks must hold W itself.
      require(!(rht_given && o.rht), "yaqa-quantize: --rht does not apply to --quantizer gguf:", tn,
              " (llama.cpp runs no Hadamard transform, so GGUF blocks store W unrotated)");
      o.rht = false;
      break;
    }
  }
  require(o.importance || o.quantizer == quantizer_kind::gguf,
          "yaqa-quantize: --no-importance applies to --quantizer gguf:TYPE only, not ", q);
  if (o.format == output_format::automatic)
    o.format = is_gguf_path(o.out) ? output_format::gguf : output_format::safetensors;
  require(o.format != output_format::gguf || o.quantizer == quantizer_kind::gguf,
          "yaqa-quantize: --out '", o.out, "' is a GGUF file, which stores llama.cpp block types: use --quantizer "
          "gguf:TYPE (", gguf_cli_type_list(), ")");
  if (o.format == output_format::gptq || o.format == output_format::compressed_tensors) {
    const char* f = output_format_name(o.format);
    require(o.quantizer == quantizer_kind::int_grid, "yaqa-quantize: --format ", f,
            " stores the integer grid's codes: use --quantizer int, not ", q);
    // vLLM / transformers kernels apply no rotation: the codes must be those of W itself.
    require(!(rht_given && o.rht), "yaqa-quantize: --rht does not apply to --format ", f,
            " (its kernels run no Hadamard transform; the codes must quantize W itself)");
    o.rht = false;
    require(!o.refine.lwc, "yaqa-quantize: --lwc learns clip factors per group that the ", f,
            " layout stores as plain scales; it is not supported with --format ", f);
    require(!is_gguf_path(o.out), "yaqa-quantize: --format ", f, " writes safetensors, but --out '", o.out,
            "' ends in .gguf");
  }
  require(trellis_given == false || o.quantizer == quantizer_kind::trellis,
          "yaqa-quantize: --trellis applies to --quantizer trellis only, not ", q);
  require(o.group_size >= 0, "yaqa-quantize: --group-size must be >= 0 (0 = per output channel), got ", o.group_size);
  require(!o.asym || o.quantizer == quantizer_kind::int_grid, "yaqa-quantize: --asym applies to --quantizer int only, not ", q);
  require(!o.mse || o.quantizer == quantizer_kind::int_grid, "yaqa-quantize: --mse applies to --quantizer int only, not ", q);
  require(o.algorithm != method::gptq || (o.quantizer != quantizer_kind::e8p && o.quantizer != quantizer_kind::trellis),
          "yaqa-quantize: --method gptq needs a scalar quantizer; ", q, " rounds ",
          o.quantizer == quantizer_kind::e8p ? "8 weights" : "a 16x16 tile", " at a time (use ldlq or yaqa)");
  require(o.algorithm == method::gptq || !(o.act_order || o.static_groups),
          "yaqa-quantize: --act-order and --static-groups apply to --method gptq only, not ", method_name(o.algorithm));
  require(!o.refine.lwc || o.quantizer == quantizer_kind::int_grid,
          "yaqa-quantize: --lwc (learnable clipping) applies to --quantizer int only, not ", q);
  require(o.cd_sweeps >= 0, "yaqa-quantize: --cd-sweeps must be >= 0, got ", o.cd_sweeps);
  require(o.refine.steps >= 0, "yaqa-quantize: --refine-steps must be >= 0, got ", o.refine.steps);
  require(std::isfinite(o.refine.lr) && o.refine.lr > 0, "yaqa-quantize: --refine-lr must be finite and > 0, got ",
          o.refine.lr);
  require(std::isfinite(o.refine.lambda) && o.refine.lambda >= 0,
          "yaqa-quantize: --refine-lambda must be finite and >= 0, got ", o.refine.lambda);
  require(std::isfinite(o.damp) && o.damp > 0, "yaqa-quantize: --damp must be finite and > 0, got ", o.damp);
  require(o.threads >= 0, "yaqa-quantize: --threads must be >= 0 (0 = all cores), got ", o.threads);
  require(o.sketch.find('.') == std::string::npos, "yaqa-quantize: --sketch TAG must not contain '.', got '", o.sketch,
          "'");
  if (!o.only.empty()) {
    // Bounds for libstdc++'s regex compiler: it recurses per nesting level, and it reads the
    // digits of a backreference or repetition count into a long without an overflow check (UB,
    // found by fuzz_cli). Names never need either.
    require(o.only.size() <= 1000, "yaqa-quantize: --only is ", o.only.size(),
            " characters long; expected a regular expression of at most 1000");
    for (std::size_t i = 0; i < o.only.size();) {
      std::size_t j = i;
      while (j < o.only.size() && o.only[j] >= '0' && o.only[j] <= '9') ++j;
      require(j - i <= 9, "yaqa-quantize: --only holds a number of ", j - i,
              " digits; expected at most 9 (a longer backreference or repetition count overflows the regex parser)");
      i = j > i ? j : i + 1;
    }
    try {
      (void)std::regex(o.only);
    } catch (const std::regex_error& e) {
      throw invalid_argument("yaqa-quantize: --only '" + o.only + "' is not a valid regular expression: " + e.what());
    }
  }
}

}  // namespace detail

//! Parses argv. Never throws: a usage error gives exit_code 2 and a message naming the option.
inline parse_result parse_command_line(int argc, const char* const* argv) {
  options o;
  CLI::App app{
      "Quantizes the weights of a safetensors file with Hessian-aware rounding (RTN, GPTQ, LDLQ, YAQA).\n"
      "Weights NAME [out, in] are quantized when the Hessian file has factors for them:\n"
      "  NAME.H [in, in] (gptq/ldlq), NAME.H_in [in, in] + NAME.H_out [out, out] (yaqa),\n"
      "  or NAME.TAG.H_in / NAME.TAG.H_out with --sketch TAG; full or packed lower triangle, F32/F64.\n"
      "Output: NAME (F32, dequantized, original basis), NAME.qcodes, NAME.qparams; other tensors copied.",
      "yaqa-quantize"};
  app.set_help_flag("-h,--help", "Print this help and exit");
  std::string method_s = "yaqa", quant_s = "int", tile_s = "16x16";
  app.add_option("--weights", o.weights, "Input weights (safetensors, or GGUF with F32/F16/BF16 weights)")->required();
  app.add_option("--hessians", o.hessians,
                 "Hessian factors (safetensors, naming convention above), or a llama.cpp imatrix (GGUF or legacy "
                 ".dat: diagonal H_in per weight, methods rtn/gptq/ldlq)")
      ->required();
  app.add_option("--out", o.out,
                 "Output file: safetensors, or GGUF (.gguf; with --quantizer gguf:TYPE); written atomically, never one "
                 "of the inputs")
      ->required();
  app.add_option("--method", method_s, "Rounding: rtn, gptq, ldlq or yaqa (two-sided, needs H_in and H_out)")
      ->check(CLI::IsMember({"rtn", "gptq", "ldlq", "yaqa"}))
      ->capture_default_str();
  app.add_option("--quantizer", quant_s,
                 "Quantizer: int (uniform grid), lloyd (Gaussian Lloyd-Max), fp4 (E2M1, MX blocks of 32), e8p (E8 "
                 "lattice, 2 bits; 3-4 bits residual E8P), trellis (QTIP bitshift trellis on 16x16 tiles), gguf:TYPE (llama.cpp's "
                 "block formats: " + gguf_cli_type_list() + "; no RHT; docs/gguf.md), gguf-mix:NAME (llama-quantize's "
                 "recipes: " + gguf_preset_list() + "; gguf:NAME also works for the _S/_M/_L ones)")
      ->check([](const std::string& v) -> std::string {
        if (v == "int" || v == "lloyd" || v == "fp4" || v == "e8p" || v == "trellis") return {};
        if (v.rfind("gguf:", 0) == 0 || v.rfind("gguf-mix:", 0) == 0) {
          try {
            (void)parse_gguf_quantizer(v);
            return {};
          } catch (const invalid_argument& e) {
            return e.what();
          }
        }
        return "'" + v + "' is not one of int, lloyd, fp4, e8p, trellis, gguf:TYPE, gguf-mix:NAME";
      })
      ->capture_default_str();
  app.add_option("--bits", o.bits, "Bits per weight: int 2..8, lloyd 2..4, e8p 2..4 (default 2), trellis 1..4 (fp4 is 4)")
      ->capture_default_str();
  std::string trellis_s;
  app.add_option("--trellis", trellis_s,
                 "trellis: L,K,V,CODE = state bits 8..16, bits per weight 1..4, weights per step (0: the code's own), "
                 "1mad|3inst|hyb (default 16,<bits>,0,hyb)");
  app.add_option("--group-size", o.group_size, "Input columns per scale group; 0 = one group per output row")
      ->capture_default_str();
  std::string format_s = "auto";
  app.add_option("--format", format_s,
                 "Output layout: auto (GGUF for a .gguf --out, else safetensors), safetensors (dequantized weights + "
                 "NAME.qcodes / NAME.qparams), gguf, gptq (qweight/qzeros/scales/g_idx + quantize_config.json; "
                 "--quantizer int, no RHT) or compressed-tensors (pack-quantized + quantization_config.json)")
      ->check(CLI::IsMember({"auto", "safetensors", "gguf", "gptq", "compressed-tensors"}))
      ->capture_default_str();
  app.add_flag("--asym", o.asym, "int: asymmetric grid with a fitted zero point (default symmetric)");
  app.add_flag("--mse", o.mse, "int: search a clipped range per row (GPTQ's --mse)");
  CLI::Option* rht_opt =
      app.add_flag("--rht,!--no-rht", o.rht, "Two-sided random Hadamard transform (incoherence); default on (off for gguf:TYPE)");
  bool no_importance = false;
  app.add_flag("--no-importance", no_importance,
               "gguf: fit the block scales without importance weights (llama.cpp without an imatrix); default: "
               "weighted by diag(H_in)");
  app.add_flag("--act-order", o.act_order,
               "gptq: process columns by descending diag(H) (GPTQ's --act-order; with groups writes NAME.qgroup)");
  app.add_flag("--static-groups", o.static_groups, "gptq: fit every group up front from the original W (GPTQ's --static-groups)");
  app.add_option("--sketch", o.sketch, "Read NAME.TAG.H_in / NAME.TAG.H_out (e.g. a or b)");
  app.add_option("--tile", tile_s, "YAQA tile ROWSxCOLS (rows divide out, cols divide in); cols is the LDLQ block")
      ->capture_default_str();
  app.add_option("--damp", o.damp, "First damp, relative to the mean diagonal (a ladder follows on failure)")
      ->capture_default_str();
  std::string seed_s = "0";  // parsed by hand: CLI11 wraps "-1" into 2^64 - 1
  app.add_option("--seed", seed_s, "Seed of the random Hadamard transforms, 0..2^64-1 (stored in the output)")
      ->capture_default_str();
  app.add_option("--threads", o.threads, "Threads; 0 = all cores (results do not depend on it)")->capture_default_str();
  app.add_option("--report", o.report, "Write the per-layer report as JSON to this file");
  app.add_option("--only", o.only, "Quantize only weights whose name matches this regex (searched, ECMAScript)");
  app.add_flag("-q,--quiet", o.quiet, "No progress lines on stderr");
  app.add_flag("--rtn-baseline", o.rtn_baseline,
               "Also measure round-to-nearest's proxy per layer (report: rtn_relative_proxy; costs about one GEMM pair "
               "per layer)");
  app.add_option("--cd-sweeps", o.cd_sweeps,
                 "Coordinate-descent sweeps after rounding (QuantEase-style, monotone on the proxy); 0 = off")
      ->capture_default_str();
  std::string refine_s = "none", pattern_s = "diag";
  app.add_option("--refine", refine_s,
                 "Refine W before rounding (CQE+, docs/refine.md): none, lsi (learnable singular-value increment) "
                 "or sde (singular-value diagonal expansion, see --sde-pattern)")
      ->check(CLI::IsMember({"none", "lsi", "sde"}))
      ->capture_default_str();
  app.add_option("--sde-pattern", pattern_s, "SDE pattern of D: diag, band:K, topleft:K or full")->capture_default_str();
  app.add_flag("--lwc", o.refine.lwc, "Learn the clip range of the int grid per row and group (OmniQuant's LWC)");
  app.add_option("--refine-steps", o.refine.steps, "Adam steps of the refinement")->capture_default_str();
  app.add_option("--refine-lr", o.refine.lr,
                 "Refinement step: per-weight RMS move per step, relative to the grid step")->capture_default_str();
  app.add_option("--refine-lambda", o.refine.lambda,
                 "Weight of the relative drift ||W'-W||^2/||W||^2 in units of the relative proxy")->capture_default_str();

  parse_result r;
  try {
    app.parse(argc, argv);
    o.algorithm = method_s == "rtn" ? method::rtn : method_s == "gptq" ? method::gptq
                : method_s == "ldlq" ? method::ldlq : method::yaqa;
    o.quantizer = quant_s == "int" ? quantizer_kind::int_grid : quant_s == "lloyd" ? quantizer_kind::lloyd
                : quant_s == "fp4" ? quantizer_kind::fp4 : quant_s == "e8p" ? quantizer_kind::e8p
                : quant_s == "trellis" ? quantizer_kind::trellis : quantizer_kind::gguf;
    if (o.quantizer == quantizer_kind::gguf) {
      const gguf_choice c = parse_gguf_quantizer(quant_s);
      o.gguf_type = c.type ? c.type->type : c.preset->base;
      if (c.preset) o.gguf_preset = std::string(c.preset->name);
    }
    o.importance = !no_importance;
    o.format = format_s == "safetensors" ? output_format::safetensors : format_s == "gguf" ? output_format::gguf
             : format_s == "gptq" ? output_format::gptq : format_s == "compressed-tensors"
             ? output_format::compressed_tensors : output_format::automatic;
    std::tie(o.tile_rows, o.tile_cols) = parse_tile(tile_s);
    o.seed = parse_seed(seed_s);
    o.refine.method = parse_refine_method(refine_s);
    o.refine.pattern = parse_sde_pattern(pattern_s);
    if (o.refine.method != refine_method::sde && app.count("--sde-pattern") > 0)
      throw invalid_argument("yaqa-quantize: --sde-pattern applies to --refine sde only");
    if (!trellis_s.empty()) o.trellis = parse_trellis_spec(trellis_s);
    detail::validate(o, app.count("--bits") > 0, app.count("--group-size") > 0, !trellis_s.empty(), rht_opt->count() > 0);
    r.opts = o;
  } catch (const CLI::ParseError& e) {
    std::ostringstream out, err;
    r.exit_code = app.exit(e, out, err) == 0 ? 0 : 2;  // CLI11 uses 1xx codes; ours: 2 = usage
    r.message = out.str() + err.str();
    if (r.exit_code == 0 && r.message.empty()) r.message = app.help();
  } catch (const yaqa::error& e) {
    r.exit_code = 2;
    r.message = std::string(e.what()) + "\nRun with --help for more information.\n";
  } catch (const std::exception& e) {  // a CLI11 conversion corner we did not anticipate
    r.exit_code = 2;
    r.message = std::string("yaqa-quantize: bad command line: ") + e.what() + "\n";
  }
  return r;
}

//! One weight to quantize, and where its factors are.
struct planned_layer {
  const tensor_view* weight = nullptr;
  layer_hessian_tensors hessians;  //!< h_in set (safetensors factors); h_out set for yaqa
  const imatrix_entry* diagonal = nullptr;  //!< set instead of hessians.h_in with an imatrix
};

//! The label of the quantizer in metadata and reports: "int", ..., "gguf:Q4_K".
inline std::string quantizer_label(const options& o) {
  if (o.quantizer != quantizer_kind::gguf) return quantizer_name(o.quantizer);
  return o.gguf_preset.empty() ? "gguf:" + std::string(ggml_type_name(o.gguf_type)) : "gguf-mix:" + o.gguf_preset;
}

//! The weights to plan from: tensor views of a safetensors file, or of a GGUF file's plain
//! (F32/F16/BF16/F64/integer) tensors, and the file name for messages.
struct weight_tensors {
  std::span<const tensor_view> tensors;
  std::string path;
};
inline weight_tensors weights_of(const safetensors_file& w) { return {w.tensors(), w.path().string()}; }

//! The layers `o` selects from a llama.cpp imatrix: the 2-D weights with an entry, filtered by
//! --only. Throws invalid_argument for --method yaqa (an imatrix has no H_out), format_error
//! when an entry's length is not the weight's input dimension or it has several experts.
inline std::vector<planned_layer> plan_layers(const options& o, const weight_tensors& w, const imatrix& im) {
  yaqa::detail::require(o.algorithm != method::yaqa, "yaqa-quantize: '", im.source,
                        "' is an importance matrix (a diagonal H_in per weight, no H_out); --method yaqa needs H_in and "
                        "H_out: use --method ldlq, gptq or rtn");
  std::optional<std::regex> only;
  if (!o.only.empty()) only.emplace(o.only);
  std::vector<planned_layer> plan;
  for (const tensor_view& t : w.tensors) {
    if (only && !std::regex_search(t.name.begin(), t.name.end(), *only)) continue;
    const imatrix_entry* e = im.find(t.name);
    if (!e) continue;
    yaqa::detail::require<format_error>(t.rank() == 2, "yaqa-quantize: ", yaqa::detail::describe(t), " has shape ",
                                        yaqa::detail::shape_string(t.shape), " but '", im.source,
                                        "' has an importance entry for it; expected a 2-D weight [out, in]");
    yaqa::detail::require<format_error>(e->experts() == 1 && e->diagonals.front().size() == t.shape[1],
                                        "yaqa-quantize: '", im.source, "' entry '", e->name, "' has ", e->experts(),
                                        " expert(s) of length ", e->diagonals.front().size(), "; weight ",
                                        yaqa::detail::describe(t), " needs one diagonal of length ", t.shape[1]);
    plan.push_back({&t, {}, e});
  }
  if (plan.empty()) {
    std::string why = o.only.empty() ? "" : " matching --only '" + o.only + "'";
    throw invalid_argument("yaqa-quantize: no weight in '" + w.path + "'" + why + " has an entry in the importance matrix '" +
                           im.source + "' (" + std::to_string(im.entries.size()) + " entries, e.g. '" +
                           (im.entries.empty() ? std::string() : im.entries.front().name) + "')");
  }
  return plan;
}

//! The layers `o` selects: the 2-D weights with factors in `h` (naming convention), filtered by
//! --only. Throws format_error (naming file and tensor) when a selected weight is not 2-D or its
//! factors are incomplete, and invalid_argument when nothing is selected.
inline std::vector<planned_layer> plan_layers(const options& o, const weight_tensors& w, const safetensors_file& h) {
  std::optional<std::regex> only;
  if (!o.only.empty()) only.emplace(o.only);
  std::vector<planned_layer> plan;
  for (const tensor_view& t : w.tensors) {
    if (only && !std::regex_search(t.name.begin(), t.name.end(), *only)) continue;
    auto f = find_layer_hessians(h, t.name, o.sketch, o.algorithm == method::yaqa);
    if (!f) continue;
    yaqa::detail::require<format_error>(t.rank() == 2, "yaqa-quantize: ", yaqa::detail::describe(t), " has shape ",
                                        yaqa::detail::shape_string(t.shape), " but '", h.path().string(),
                                        "' has Hessian factors for it; expected a 2-D weight [out, in]");
    plan.push_back({&t, *f});
  }
  if (plan.empty()) {
    std::string why = o.only.empty() ? "" : " matching --only '" + o.only + "'";
    throw invalid_argument("yaqa-quantize: no weight in '" + w.path + "'" + why +
                           " has Hessian factors in '" + h.path().string() + "' (expected tensors named NAME.H, NAME" +
                           (o.sketch.empty() ? "" : "." + o.sketch) + ".H_in and NAME" +
                           (o.sketch.empty() ? "" : "." + o.sketch) + ".H_out for a weight NAME)");
  }
  return plan;
}
inline std::vector<planned_layer> plan_layers(const options& o, const safetensors_file& w, const safetensors_file& h) {
  return plan_layers(o, weights_of(w), h);
}

//! The outcome of run(): the per-layer reports (also written with --report).
struct run_summary {
  nlohmann::ordered_json report;
  int layers = 0, copied = 0;
};


//! Quantizes, writes o.out atomically (nothing is left behind on failure) and, with --report,
//! the JSON report. Progress lines go to `log` unless o.quiet. Every error is a yaqa::error whose
//! message names the file and the tensor.
//! Under mpiexec -n R (R > 1, a build with MPI): the layers are split across the ranks, rank 0
//! writes the same bytes a single process would, every rank fails with the first failed layer's
//! message (docs/distributed.md). MPI is initialized only when a launcher started the process.
run_summary run(const options& o, std::ostream& log);

//! This process's MPI rank once run() started MPI, else 0 (main() prints errors on rank 0 only).
int parallel_rank();
//! MPI_Finalize when run() initialized MPI; a no-op otherwise. Call once, before exiting.
void finish_parallel();


}  // namespace yaqa::cli
