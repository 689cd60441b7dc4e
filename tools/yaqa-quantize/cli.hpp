#pragma once
//! \file
//! yaqa-quantize: quantizes every weight of a safetensors file that has Hessian factors in a
//! second file (naming convention: <yaqa/io/hessian_file.hpp>), writes the dequantized weights,
//! codes and parameters, and reports the proxy loss per layer.
//!
//! Split in three so each part can be tested (and fuzzed) alone:
//!   parse_command_line  argv -> options (never throws; usage errors become exit code 2)
//!   plan_layers         files + options -> the layers to quantize (naming convention, --only)
//!   run                 everything, writing the output atomically
#include <CLI/CLI.hpp>

#include <algorithm>
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

namespace yaqa::cli {

enum class quantizer_kind { int_grid, lloyd, fp4, e8p, trellis };

inline const char* quantizer_name(quantizer_kind k) {
  switch (k) {
    case quantizer_kind::int_grid: return "int";
    case quantizer_kind::lloyd: return "lloyd";
    case quantizer_kind::fp4: return "fp4";
    case quantizer_kind::e8p: return "e8p";
    case quantizer_kind::trellis: return "trellis";
  }
  return "?";
}

struct options {
  std::string weights, hessians, out;
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
  index cd_sweeps = 0;        //!< --cd-sweeps: coordinate-descent sweeps after rounding
  trellis_options trellis{};  //!< --trellis L,K,V,CODE (K is --bits)
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
inline void validate(options& o, bool bits_given, bool group_given, bool trellis_given) {
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
  app.add_option("--weights", o.weights, "Input weights (safetensors)")->required();
  app.add_option("--hessians", o.hessians, "Hessian factors (safetensors, naming convention above)")->required();
  app.add_option("--out", o.out, "Output file (safetensors; written atomically, never one of the inputs)")->required();
  app.add_option("--method", method_s, "Rounding: rtn, gptq, ldlq or yaqa (two-sided, needs H_in and H_out)")
      ->check(CLI::IsMember({"rtn", "gptq", "ldlq", "yaqa"}))
      ->capture_default_str();
  app.add_option("--quantizer", quant_s,
                 "Quantizer: int (uniform grid), lloyd (Gaussian Lloyd-Max), fp4 (E2M1, MX blocks of 32), e8p (E8 "
                 "lattice, 2 bits; 3-4 bits residual E8P), trellis (QTIP bitshift trellis on 16x16 tiles)")
      ->check(CLI::IsMember({"int", "lloyd", "fp4", "e8p", "trellis"}))
      ->capture_default_str();
  app.add_option("--bits", o.bits, "Bits per weight: int 2..8, lloyd 2..4, e8p 2..4 (default 2), trellis 1..4 (fp4 is 4)")
      ->capture_default_str();
  std::string trellis_s;
  app.add_option("--trellis", trellis_s,
                 "trellis: L,K,V,CODE = state bits 8..16, bits per weight 1..4, weights per step (0: the code's own), "
                 "1mad|3inst|hyb (default 16,<bits>,0,hyb)");
  app.add_option("--group-size", o.group_size, "Input columns per scale group; 0 = one group per output row")
      ->capture_default_str();
  app.add_flag("--asym", o.asym, "int: asymmetric grid with a fitted zero point (default symmetric)");
  app.add_flag("--mse", o.mse, "int: search a clipped range per row (GPTQ's --mse)");
  app.add_flag("--rht,!--no-rht", o.rht, "Two-sided random Hadamard transform (incoherence); default on");
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
                : quantizer_kind::trellis;
    std::tie(o.tile_rows, o.tile_cols) = parse_tile(tile_s);
    o.seed = parse_seed(seed_s);
    o.refine.method = parse_refine_method(refine_s);
    o.refine.pattern = parse_sde_pattern(pattern_s);
    if (o.refine.method != refine_method::sde && app.count("--sde-pattern") > 0)
      throw invalid_argument("yaqa-quantize: --sde-pattern applies to --refine sde only");
    if (!trellis_s.empty()) o.trellis = parse_trellis_spec(trellis_s);
    detail::validate(o, app.count("--bits") > 0, app.count("--group-size") > 0, !trellis_s.empty());
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
  layer_hessian_tensors hessians;  //!< h_in always set; h_out set for yaqa
};

//! The layers `o` selects: the 2-D weights with factors in `h` (naming convention), filtered by
//! --only. Throws format_error (naming file and tensor) when a selected weight is not 2-D or its
//! factors are incomplete, and invalid_argument when nothing is selected.
inline std::vector<planned_layer> plan_layers(const options& o, const safetensors_file& w, const safetensors_file& h) {
  std::optional<std::regex> only;
  if (!o.only.empty()) only.emplace(o.only);
  std::vector<planned_layer> plan;
  for (const tensor_view& t : w.tensors()) {
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
    throw invalid_argument("yaqa-quantize: no weight in '" + w.path().string() + "'" + why +
                           " has Hessian factors in '" + h.path().string() + "' (expected tensors named NAME.H, NAME" +
                           (o.sketch.empty() ? "" : "." + o.sketch) + ".H_in and NAME" +
                           (o.sketch.empty() ? "" : "." + o.sketch) + ".H_out for a weight NAME)");
  }
  return plan;
}

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

//! Calls f(q) with the quantizer the options describe.
template <class F>
void with_quantizer(const options& o, F&& f) {
  switch (o.quantizer) {
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
  std::vector<std::byte> b(std::size_t(c.size()) * sizeof(C));
  std::byte* p = b.data();
  for (index i = 0; i < c.rows(); ++i)
    for (index j = 0; j < c.cols(); ++j, p += sizeof(C)) yaqa::detail::store_le(p, c(i, j));
  return b;
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

//! The outcome of run(): the per-layer reports (also written with --report).
struct run_summary {
  nlohmann::ordered_json report;
  int layers = 0, copied = 0;
};

//! Quantizes, writes o.out atomically (nothing is left behind on failure) and, with --report,
//! the JSON report. Progress lines go to `log` unless o.quiet. Every error is a yaqa::error whose
//! message names the file and the tensor.
inline run_summary run(const options& o, std::ostream& log) {
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
                    {"cd_sweeps", o.cd_sweeps},
                    {"refine", refine_method_name(o.refine.method)}, {"sde_pattern", to_string(o.refine.pattern)},
                    {"lwc", o.refine.lwc}, {"refine_steps", o.refine.steps}, {"refine_lr", o.refine.lr},
                    {"refine_lambda", o.refine.lambda}};
  rep["layers"] = nlohmann::ordered_json::array();

  std::vector<std::string> quantized;
  int k = 0;
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

      detail::with_quantizer(o, [&](const auto& q) {
        auto res = quantize_layer(backend, q, view(w), view(h_in), view(h_out), ro);
        const auto& lr = res.report;
        out.add(name, view(std::as_const(res.weights)), dtype::f32);
        using C = typename std::decay_t<decltype(q)>::code_type;
        const dtype ct = !std::is_unsigned_v<C> || sizeof(C) == 1 ? dtype::u8 : sizeof(C) == 2 ? dtype::u16 : dtype::u32;
        auto [code_shape, code_data] = detail::code_tensor(q, res.codes);
        out.add(name + ".qcodes", ct, code_shape, std::move(code_data));
        index prow = 0;
        auto [fields, values] = detail::params_table(res.params, prow);
        out.add(name + ".qparams", {index(res.params.size()), index(fields.size()), prow}, values, dtype::f32);
        if (!res.group_index.empty()) {
          std::vector<double> g(res.group_index.begin(), res.group_index.end());
          out.add(name + ".qgroup", {index(g.size())}, g, dtype::f32);
        }
        nlohmann::ordered_json layer_meta = {
            {"method", method_name(o.algorithm)},
            {"quantizer", quantizer_name(o.quantizer)},
            {"bits", o.bits},
            {"group_cols", q.group_cols(n)},
            {"unit", {std::decay_t<decltype(q)>::unit_rows, std::decay_t<decltype(q)>::unit_cols}},
            {"qparams_fields", fields},
            {"rotated", res.rotated},
            {"qcodes_layout", std::is_unsigned_v<typename std::decay_t<decltype(q)>::code_type>
                                  ? "one code per unit, [unit rows, unit cols] row-major"
                                  : "one bitstream per 16x16 tile, [tiles (tile-grid row-major), 32 K bytes]"},
            {"feedback", lr.feedback}};
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
          layer_meta["basis"] = "qcodes/qparams quantize U_out^T W U_in; " + name + " = U_out Q U_in^T";
        }
        if (o.refine.enabled())
          layer_meta["refine"] = {{"method", refine_method_name(lr.refine.method)}, {"pattern", lr.refine.pattern},
                                  {"lwc", lr.refine.lwc}, {"best_step", lr.refine.best_step}};
        meta["yaqa.layer." + name] = layer_meta.dump();

        nlohmann::ordered_json times = nlohmann::ordered_json::object();
        for (const auto& st : lr.times) times[st.stage] = st.seconds;
        rep["layers"].push_back({{"name", name},
                                 {"shape", {m, n}},
                                 {"method", method_name(lr.algorithm)},
                                 {"h_in", std::string(pl.hessians.h_in->name)},
                                 {"h_out", pl.hessians.h_out ? std::string(pl.hessians.h_out->name) : std::string()},
                                 {"relative_proxy", lr.relative_proxy},
                                 {"relative_proxy_one_sided", lr.relative_proxy_one_sided},
                                 {"rtn_relative_proxy", lr.baseline_relative_proxy},
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
        if (o.refine.enabled()) rep["layers"].back()["refine"] = detail::refine_json(lr.refine);
        if (lr.cd_sweeps_run > 0)
          rep["layers"].back()["cd"] = {{"sweeps", lr.cd_sweeps_run},
                                        {"units_changed", lr.cd_units_changed},
                                        {"relative_proxy_before", lr.cd_relative_proxy_before},
                                        {"relative_proxy_after", lr.cd_relative_proxy_after}};
        ++k;
        if (!o.quiet) {
          log << "[" << k << "/" << plan.size() << "] " << name << " [" << m << "x" << n << "] "
              << method_name(lr.algorithm) << " proxy " << detail::fmt(lr.relative_proxy) << " (rtn "
              << detail::fmt(lr.baseline_relative_proxy) << ") damp " << detail::fmt(lr.damp_in, 3) << "/"
              << detail::fmt(lr.damp_out, 3) << (lr.feedback ? "" : " NO FEEDBACK: " + lr.fallback_reason)
              << (o.refine.enabled() ? " refine " + detail::fmt(lr.refine.loss_unrefined / lr.refine.normalizer) + " -> " +
                                           detail::fmt(lr.refine.loss / lr.refine.normalizer)
                                     : std::string())
              << " "
              << std::fixed << std::setprecision(2) << lr.seconds << " s" << std::defaultfloat << std::endl;
        }
      });
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
