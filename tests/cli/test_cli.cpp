// yaqa-quantize, in process: option parsing, layer selection, and end-to-end runs whose output
// is checked against quantize_layer called directly and against its own codes + parameters.
#include <nlohmann/json.hpp>

#include "cli/cli_support.hpp"
#include "support/approx.hpp"

using namespace yaqa;
using namespace yaqa::test;

TEST_CASE("parse: defaults and every option", "[cli]") {
  const auto d = cli_parse({"--weights", "w", "--hessians", "h", "--out", "o"});
  CHECK(d.algorithm == method::yaqa);
  CHECK(d.quantizer == cli::quantizer_kind::int_grid);
  CHECK(d.bits == 4);
  CHECK(d.rht);
  CHECK(d.tile_rows == 16);
  CHECK(d.tile_cols == 16);
  CHECK(d.damp == 0.01);
  CHECK(d.seed == 0);

  const auto o = cli_parse({"--weights", "w", "--hessians", "h", "--out", "o", "--method", "ldlq", "--quantizer",
                            "lloyd", "--bits", "3", "--group-size", "64", "--no-rht", "--sketch", "b", "--tile", "8x32",
                            "--damp", "0.1", "--seed", "18446744073709551615", "--threads", "3", "--report", "r.json",
                            "--only", "mlp"});
  CHECK(o.algorithm == method::ldlq);
  CHECK(o.quantizer == cli::quantizer_kind::lloyd);
  CHECK(o.bits == 3);
  CHECK(o.group_size == 64);
  CHECK_FALSE(o.rht);
  CHECK(o.sketch == "b");
  CHECK(o.tile_rows == 8);
  CHECK(o.tile_cols == 32);
  CHECK(o.damp == 0.1);
  CHECK(o.seed == 18446744073709551615ull);
  CHECK(o.threads == 3);
  CHECK(o.report == "r.json");
  CHECK(o.only == "mlp");
  CHECK(cli_parse({"--weights", "w", "--hessians", "h", "--out", "o", "--quantizer", "e8p"}).bits == 2);
  CHECK(cli_parse({"--weights", "w", "--hessians", "h", "--out", "o", "--asym", "--mse"}).asym);

  const auto r = cli_parse({"--weights", "w", "--hessians", "h", "--out", "o", "--refine", "sde", "--sde-pattern",
                            "band:3", "--lwc", "--refine-steps", "7", "--refine-lr", "0.01", "--refine-lambda", "0.5"});
  CHECK(r.refine.method == refine_method::sde);
  CHECK(r.refine.pattern == sde_pattern{sde_shape::band, 3});
  CHECK(r.refine.lwc);
  CHECK(r.refine.steps == 7);
  CHECK(r.refine.lr == 0.01);
  CHECK(r.refine.lambda == 0.5);
  CHECK(cli_parse({"--weights", "w", "--hessians", "h", "--out", "o"}).refine.method == refine_method::none);
  const auto t = cli_parse({"--weights", "w", "--hessians", "h", "--out", "o", "--quantizer", "trellis", "--trellis",
                            "12,3,1,1mad"});
  CHECK(t.quantizer == cli::quantizer_kind::trellis);
  CHECK(t.trellis.l == 12);
  CHECK(t.trellis.k == 3);
  CHECK(t.trellis.v == 1);
  CHECK(t.trellis.code == trellis_code::one_mad);
  CHECK(t.bits == 3);
  CHECK(cli_parse({"--weights", "w", "--hessians", "h", "--out", "o", "--quantizer", "trellis", "--bits", "2"}).trellis.k ==
        2);
  CHECK(cli_parse({"--weights", "w", "--hessians", "h", "--out", "o", "--quantizer", "trellis", "--group-size", "32"})
            .trellis.group_size == 32);
}

TEST_CASE("parse: --help documents every option", "[cli]") {
  const auto r = cli_parse_result({"--help"});
  CHECK(r.exit_code == 0);
  CHECK_FALSE(r.opts);
  for (const char* opt : {"--weights", "--hessians", "--out", "--method", "--quantizer", "--bits", "--group-size",
                          "--asym", "--mse", "--rht", "--no-rht", "--sketch", "--tile", "--damp", "--seed", "--threads",
                          "--report", "--only", "--quiet", "--refine", "--sde-pattern", "--lwc", "--refine-steps",
                          "--refine-lr", "--refine-lambda", "--trellis", "--cd-sweeps"})
    CHECK_THAT(r.message, Catch::Contains(opt));
}

TEST_CASE("parse: usage errors exit 2 and name the option", "[cli]") {
  const std::vector<std::string> base{"--weights", "w", "--hessians", "h", "--out", "o"};
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases{
      {{"--hessians", "h", "--out", "o"}, "--weights"},
      {{"--method", "awq"}, "--method"},
      {{"--quantizer", "nf4"}, "--quantizer"},
      {{"--bits", "9"}, "--bits must be 2..8"},
      {{"--bits", "1"}, "--bits must be 2..8"},
      {{"--bits", "x"}, "--bits"},
      {{"--quantizer", "lloyd", "--bits", "5"}, "--bits must be 2, 3 or 4"},
      {{"--quantizer", "fp4", "--bits", "3"}, "fp4 is 4 bits"},
      {{"--quantizer", "fp4", "--group-size", "16"}, "MX blocks of 32"},
      {{"--quantizer", "e8p", "--bits", "5"}, "--bits must be 2, 3 or 4 for --quantizer e8p"},
      {{"--quantizer", "e8p", "--group-size", "12"}, "multiple of 8 for --quantizer e8p"},
      {{"--quantizer", "e8p", "--method", "gptq"}, "gptq needs a scalar quantizer"},
      {{"--quantizer", "lloyd", "--asym"}, "--asym applies to --quantizer int"},
      {{"--group-size", "-4"}, "--group-size must be >= 0"},
      {{"--tile", "16"}, "--tile expects ROWSxCOLS"},
      {{"--tile", "0x16"}, "--tile expects ROWSxCOLS"},
      {{"--tile", "16x-1"}, "--tile expects ROWSxCOLS"},
      {{"--tile", "99999999999x4"}, "--tile expects ROWSxCOLS"},
      {{"--damp", "0"}, "--damp must be finite and > 0"},
      {{"--damp", "nan"}, "--damp"},
      {{"--threads", "-1"}, "--threads must be >= 0"},
      {{"--sketch", "a.b"}, "must not contain '.'"},
      {{"--act-order"}, "--act-order and --static-groups apply to --method gptq only, not yaqa"},
      {{"--method", "ldlq", "--static-groups"}, "apply to --method gptq only, not ldlq"},
      {{"--only", "(["}, "--only '([' is not a valid regular expression"},
      {{"--only", "a\\9999999999"}, "--only holds a number of 10 digits; expected at most 9"},
      {{"--only", "a{1234567890123456789012}"}, "--only holds a number of 22 digits"},
      {{"--only", std::string(1001, 'a')}, "--only is 1001 characters long"},
      {{"--seed", "-1"}, "--seed"},
      {{"--frobnicate"}, "--frobnicate"},
      {{"--refine", "omni"}, "--refine"},
      {{"--refine", "sde", "--sde-pattern", "band"}, "'band' needs a size"},
      {{"--refine", "sde", "--sde-pattern", "topleft:0"}, "needs a block size K >= 1"},
      {{"--refine", "lsi", "--sde-pattern", "full"}, "--sde-pattern applies to --refine sde only"},
      {{"--refine-steps", "-3"}, "--refine-steps must be >= 0"},
      {{"--cd-sweeps", "-1"}, "--cd-sweeps must be >= 0"},
      {{"--refine-lr", "0"}, "--refine-lr must be finite and > 0"},
      {{"--refine-lambda", "-1"}, "--refine-lambda must be finite and >= 0"},
      {{"--quantizer", "e8p", "--lwc"}, "--lwc (learnable clipping) applies to --quantizer int only"},
      {{"--quantizer", "trellis", "--trellis", "16,2"}, "--trellis expects L,K,V,CODE"},
      {{"--quantizer", "trellis", "--trellis", "16,2,0,nf4"}, "--trellis expects L,K,V,CODE"},
      {{"--quantizer", "trellis", "--trellis", "20,2,0,hyb"}, "l"},
      {{"--quantizer", "trellis", "--trellis", "16,2,0,hyb", "--bits", "3"}, "disagrees with K = 2"},
      {{"--quantizer", "trellis", "--bits", "5"}, "--bits must be 1..4 for --quantizer trellis"},
      {{"--quantizer", "trellis", "--method", "gptq"}, "gptq needs a scalar quantizer"},
      {{"--quantizer", "trellis", "--group-size", "24"}, "--group-size a multiple of 16"},
      {{"--trellis", "16,2,0,hyb"}, "--trellis applies to --quantizer trellis only"},
  };
  for (const auto& [extra, expected] : cases) {
    std::vector<std::string> args = extra.front() == "--hessians" ? extra : base;
    if (extra.front() != "--hessians") args.insert(args.end(), extra.begin(), extra.end());
    const auto r = cli_parse_result(args);
    INFO("args: " << Catch::Detail::stringify(args) << "\nmessage: " << r.message);
    CHECK_FALSE(r.opts);
    CHECK(r.exit_code == 2);
    CHECK_THAT(r.message, Catch::Contains(expected));
  }
}

TEST_CASE("plan: 2-D weights with Hessians, filtered by --only; names follow the convention", "[cli]") {
  temp_dir dir;
  write_cli_model(dir.path());
  const safetensors_file w(dir / "W.safetensors"), h(dir / "H.safetensors");

  auto plan = cli::plan_layers(cli_parse(cli_args(dir.path(), {"--method", "ldlq"})), w, h);
  REQUIRE(plan.size() == 2);  // sorted by name: down before up
  CHECK(plan[0].weight->name == "blk.0.down.weight");
  CHECK(plan[0].hessians.h_in->name == "blk.0.down.weight.H");
  CHECK(plan[0].hessians.h_out == nullptr);

  plan = cli::plan_layers(cli_parse(cli_args(dir.path(), {"--sketch", "b", "--only", "up"})), w, h);
  REQUIRE(plan.size() == 1);
  CHECK(plan[0].weight->name == "blk.0.up.weight");
  CHECK(plan[0].hessians.h_in->name == "blk.0.up.weight.b.H_in");
  CHECK(plan[0].hessians.h_out->name == "blk.0.up.weight.b.H_out");

  plan = cli::plan_layers(cli_parse(cli_args(dir.path(), {})), w, h);
  REQUIRE(plan.size() == 2);
  CHECK(plan[1].hessians.h_out->name == "blk.0.up.weight.H_out");

  const auto msg = thrown_message<invalid_argument>(
      [&] { (void)cli::plan_layers(cli_parse(cli_args(dir.path(), {"--only", "^attn"})), w, h); });
  CHECK_THAT(msg, Catch::Contains("matching --only '^attn'"));
  CHECK_THAT(msg, Catch::Contains("W.safetensors"));

  const auto tag = thrown_message<format_error>(
      [&] { (void)cli::plan_layers(cli_parse(cli_args(dir.path(), {"--sketch", "c"})), w, h); });
  CHECK_THAT(tag, Catch::Contains("sketch tag 'c' is missing"));
  CHECK_THAT(tag, Catch::Contains("blk.0.down.weight.c.H_in"));
  CHECK_THAT(tag, Catch::Contains("sketch tags present for it: b"));
  CHECK_THAT(tag, Catch::Contains("H.safetensors"));
}

namespace {

//! Rebuilds a layer's dequantized weights from NAME.qcodes, NAME.qparams and the transform seeds
//! in the metadata, as a user of the output file would (int quantizer).
matrix<double> rebuild_int(const safetensors_file& q, const std::string& name) {
  const auto meta = nlohmann::json::parse(q.metadata().at("yaqa.layer." + name));
  const tensor_view& codes = q.at(name + ".qcodes");
  const tensor_view& params = q.at(name + ".qparams");
  REQUIRE(codes.type == dtype::u8);
  REQUIRE(params.shape.size() == 3);
  REQUIRE(params.shape[1] == 2);
  const matrix<double> c = to_matrix<double>(codes);
  const vector<double> p = to_vector<double>(params);
  const yaqa::index m = c.rows(), n = c.cols(), g = meta["group_cols"].get<yaqa::index>();
  REQUIRE(params.shape[0] == n / g);
  REQUIRE(params.shape[2] == m);
  // NAME.qgroup, when present, gives each column's group (GPTQ act-order with lazy groups)
  std::vector<yaqa::index> group(static_cast<std::size_t>(n));
  for (yaqa::index j = 0; j < n; ++j) group[std::size_t(j)] = j / g;
  if (q.contains(name + ".qgroup")) {
    const vector<double> qg = to_vector<double>(q.at(name + ".qgroup"));
    REQUIRE(qg.size() == n);
    for (yaqa::index j = 0; j < n; ++j) group[std::size_t(j)] = yaqa::index(qg[j]);
  }
  matrix<double> w(m, n);
  for (yaqa::index j = 0; j < n; ++j)
    for (yaqa::index i = 0; i < m; ++i) {
      const yaqa::index base = group[std::size_t(j)] * 2 * m;
      w(i, j) = float(p[base + i]) * (float(c(i, j)) - float(p[base + m + i]));
    }
  if (meta["rotated"].get<bool>()) {
    const random_hadamard u_in(n, std::stoull(meta["seed_in"].get<std::string>()));
    const random_hadamard u_out(m, std::stoull(meta["seed_out"].get<std::string>()));
    u_out.apply(side::left, trans::none, view(w));
    u_in.apply(side::right, trans::transpose, view(w));
  }
  return w;
}

}  // namespace

TEST_CASE("run: every method matches quantize_layer, and codes + params rebuild the weights", "[cli]") {
  temp_dir dir;
  write_cli_model(dir.path());
  const safetensors_file wf(dir / "W.safetensors"), hf(dir / "H.safetensors");
  for (const char* m : {"rtn", "gptq", "ldlq", "yaqa"})
    for (const bool rht : {true, false}) {
      DYNAMIC_SECTION(m << (rht ? " rht" : " no-rht")) {
        std::vector<std::string> extra{"--method", m, "--bits", "3", "--group-size", "16", "--seed", "7",
                                       "--tile", "16x16"};
        if (!rht) extra.push_back("--no-rht");
        const auto opts = cli_parse(cli_args(dir.path(), extra));
        std::ostringstream log;
        const auto s = cli::run(opts, log);
        CHECK(s.layers == 2);
        CHECK(s.copied == 2);
        const safetensors_file q(dir / "Q.safetensors");
        CHECK(q.metadata().at("format") == "pt");  // input metadata kept
        CHECK(q.metadata().at("yaqa.seed") == "7");
        CHECK(q.metadata().at("yaqa.method") == m);
        // pass-through tensors are byte-identical
        for (const char* t : {"blk.0.up.bias", "blk.0.ids"}) {
          REQUIRE(q.contains(t));
          CHECK(q.at(t).type == wf.at(t).type);
          CHECK(std::equal(q.at(t).bytes.begin(), q.at(t).bytes.end(), wf.at(t).bytes.begin(), wf.at(t).bytes.end()));
        }
        for (const auto& l : cli_model{}.layers) {
          const tensor_view& out = q.at(l.name);
          CHECK(out.type == dtype::f32);
          REQUIRE(out.rank() == 2);
          CHECK(out.shape[0] == l.out);
          CHECK(out.shape[1] == l.in);
          const matrix<float> got = to_matrix<float>(out);
          // the same layer through the library, directly
          const matrix<float> w = to_matrix<float>(wf.at(l.name));
          const bool two = std::string(m) == "yaqa";
          const matrix<float> hin = to_matrix<float>(hf.at(two ? l.name + ".H_in" : l.name + ".H"));
          const matrix<float> hout = two ? to_matrix<float>(hf.at(l.name + ".H_out")) : matrix<float>();
          rounding_options ro;
          ro.algorithm = opts.algorithm;
          ro.incoherence = rht;
          ro.seed = 7;
          const auto ref = quantize_layer(int_grid<float>({.bits = 3, .sym = true, .group_size = 16}), view(w),
                                          view(hin), view(hout), ro);
          CHECK(got == ref.weights);
          // and from the stored codes + parameters (+ seeds)
          const matrix<double> rebuilt = rebuild_int(q, l.name);
          CHECK(rel_frobenius(rebuilt, got.cast<double>()) < 1e-5);
        }
      }
    }
}

TEST_CASE("run: gptq --act-order / --static-groups match quantize_layer; NAME.qgroup maps columns to groups", "[cli]") {
  temp_dir dir;
  write_cli_model(dir.path());
  const safetensors_file wf(dir / "W.safetensors"), hf(dir / "H.safetensors");
  struct gcase {
    bool act_order, static_groups, rht;
  };
  for (const auto c : {gcase{true, false, false}, gcase{true, false, true}, gcase{true, true, false},
                       gcase{false, true, false}}) {
    DYNAMIC_SECTION("act_order " << c.act_order << " static " << c.static_groups << " rht " << c.rht) {
      std::vector<std::string> extra{"--method", "gptq", "--bits", "3", "--group-size", "16", "--seed", "5"};
      if (c.act_order) extra.push_back("--act-order");
      if (c.static_groups) extra.push_back("--static-groups");
      if (!c.rht) extra.push_back("--no-rht");
      const auto opts = cli_parse(cli_args(dir.path(), extra));
      CHECK(opts.act_order == c.act_order);
      CHECK(opts.static_groups == c.static_groups);
      std::ostringstream log;
      (void)cli::run(opts, log);
      const safetensors_file q(dir / "Q.safetensors");
      for (const auto& l : cli_model{}.layers) {
        const matrix<float> got = to_matrix<float>(q.at(l.name));
        const matrix<float> w = to_matrix<float>(wf.at(l.name));
        const matrix<float> h = to_matrix<float>(hf.at(l.name + ".H"));
        rounding_options ro;
        ro.algorithm = method::gptq;
        ro.incoherence = c.rht;
        ro.seed = 5;
        ro.act_order = c.act_order;
        ro.static_groups = c.static_groups;
        const auto ref = quantize_layer(int_grid<float>({.bits = 3, .sym = true, .group_size = 16}), view(w), view(h),
                                        matrix_view<const float>{}, ro);
        CHECK(got == ref.weights);
        // lazy groups under act-order reorder the groups: only then is NAME.qgroup written
        const bool reordered = c.act_order && !c.static_groups;
        CHECK(q.contains(l.name + ".qgroup") == reordered);
        if (reordered) {
          const vector<double> qg = to_vector<double>(q.at(l.name + ".qgroup"));
          REQUIRE(qg.size() == l.in);
          bool permuted = false;
          for (yaqa::index j = 0; j < l.in; ++j) permuted = permuted || yaqa::index(qg[j]) != j / 16;
          CHECK(permuted);
        }
        const auto meta = nlohmann::json::parse(q.metadata().at("yaqa.layer." + l.name));
        CHECK(meta["act_order"].get<bool>() == c.act_order);
        CHECK(meta["static_groups"].get<bool>() == c.static_groups);
        CHECK(rel_frobenius(rebuild_int(q, l.name), got.cast<double>()) < 1e-5);
      }
    }
  }
}

namespace {
//! One quantizer through the CLI: its codes' type and unit and its params table. (One TEST_CASE
//! per group below, so ctest runs them side by side: the E8P ones take a minute under ASan.)
struct quantizer_codes_case {
  std::vector<std::string> args;
  dtype code_type;
  yaqa::index unit_cols;
  yaqa::index fields;
};

void check_quantizer_codes(const std::vector<quantizer_codes_case>& cases) {
  temp_dir dir;
  write_cli_model(dir.path());
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.args[1] << " " << c.args.size()) {
      std::ostringstream log;
      (void)cli::run(cli_parse(cli_args(dir.path(), c.args)), log);
      const safetensors_file q(dir / "Q.safetensors");
      const tensor_view& codes = q.at("blk.0.up.weight.qcodes");
      CHECK(codes.type == c.code_type);
      CHECK(codes.shape[0] == 48);
      CHECK(codes.shape[1] == 32 / c.unit_cols);
      CHECK(q.at("blk.0.up.weight.qparams").shape[1] == c.fields);
      const auto meta = nlohmann::json::parse(q.metadata().at("yaqa.layer.blk.0.up.weight"));
      CHECK(meta["unit"][1].get<yaqa::index>() == c.unit_cols);
      CHECK(meta["qparams_fields"].size() == std::size_t(c.fields));
    }
  }
}
}  // namespace

TEST_CASE("run: every scalar quantizer writes codes of its unit and a params table", "[cli]") {
  check_quantizer_codes({{{"--quantizer", "int", "--asym"}, dtype::u8, 1, 2},
                         {{"--quantizer", "lloyd", "--bits", "2"}, dtype::u8, 1, 1},
                         {{"--quantizer", "fp4", "--only", "up"}, dtype::u8, 1, 1}});  // in = 32
}

TEST_CASE("run: e8p (2 bits) writes codes of its unit and a params table", "[cli]") {
  check_quantizer_codes({{{"--quantizer", "e8p"}, dtype::u16, 8, 1}});
}

TEST_CASE("run: e8p residual (3, 4 bits) writes codes of its unit and a params table", "[cli]") {
  check_quantizer_codes({{{"--quantizer", "e8p", "--bits", "3", "--group-size", "16"}, dtype::u32, 8, 1},
                         {{"--quantizer", "e8p", "--bits", "4"}, dtype::u32, 8, 1}});
}

TEST_CASE("run: --quantizer trellis writes one bitstream per tile that rebuilds the weights", "[cli]") {
  temp_dir dir;
  write_cli_model(dir.path());
  std::ostringstream log;
  const auto opts = cli_parse(cli_args(dir.path(), {"--quantizer", "trellis", "--trellis", "10,2,0,3inst", "--method",
                                                    "ldlq", "--no-rht"}));
  (void)cli::run(opts, log);
  const safetensors_file q(dir / "Q.safetensors");
  const trellis<float> tq(opts.trellis);
  for (const auto& l : cli_model{}.layers) {
    const tensor_view& codes = q.at(l.name + ".qcodes");
    CHECK(codes.type == dtype::u8);
    REQUIRE(codes.rank() == 2);
    CHECK(codes.shape[0] == (l.out / 16) * (l.in / 16));
    CHECK(codes.shape[1] == 2 * 32);  // 32 K bytes
    const auto meta = nlohmann::json::parse(q.metadata().at("yaqa.layer." + l.name));
    CHECK(meta["trellis"]["l"] == 10);
    CHECK(meta["trellis"]["code"] == "3inst");
    const vector<float> params = to_vector<float>(q.at(l.name + ".qparams"));
    REQUIRE(params.size() == yaqa::index(l.out));  // one scale per row
    // decode every tile from its bytes
    matrix<trellis_bits> bits(l.out / 16, l.in / 16);
    const auto* b = reinterpret_cast<const std::uint8_t*>(codes.bytes.data());
    for (yaqa::index i = 0, t = 0; i < bits.rows(); ++i)
      for (yaqa::index j = 0; j < bits.cols(); ++j, ++t)
        bits(i, j) = tq.from_bytes(std::span<const std::uint8_t>(b + t * 64, 64));
    const trellis<float>::params_type tp{std::vector<float>(params.begin(), params.end())};
    const matrix<float> rebuilt = tq.reconstruct(view(std::as_const(bits)), tp, 0);
    CHECK(rebuilt == to_matrix<float>(q.at(l.name)));
  }
}

TEST_CASE("run: --refine matches quantize_layer and reports the refinement", "[cli]") {
  temp_dir dir;
  write_cli_model(dir.path());
  const safetensors_file wf(dir / "W.safetensors"), hf(dir / "H.safetensors");
  for (const char* m : {"rtn", "yaqa"}) {
    DYNAMIC_SECTION(m) {
      const auto opts = cli_parse(cli_args(dir.path(), {"--method", m, "--bits", "2", "--group-size", "16", "--refine",
                                                        "sde", "--sde-pattern", "full", "--lwc", "--refine-steps", "30",
                                                        "--report", (dir / "r.json").string()}));
      std::ostringstream log;
      (void)cli::run(opts, log);
      const safetensors_file q(dir / "Q.safetensors");
      const auto r = nlohmann::json::parse(read_file(dir / "r.json"));
      CHECK(r["options"]["refine"] == "sde");
      CHECK(r["options"]["lwc"] == true);
      const cli_model model;
      for (std::size_t k = 0; k < model.layers.size(); ++k) {
        const auto& l = model.layers[k];
        const bool two = std::string(m) == "yaqa";
        const matrix<float> w = to_matrix<float>(wf.at(l.name));
        const matrix<float> hin = to_matrix<float>(hf.at(two ? l.name + ".H_in" : l.name + ".H"));
        const matrix<float> hout = two ? to_matrix<float>(hf.at(l.name + ".H_out")) : matrix<float>();
        rounding_options ro;
        ro.algorithm = opts.algorithm;
        ro.refine = opts.refine;
        const auto ref = quantize_layer(int_grid<float>({.bits = 2, .sym = true, .group_size = 16}), view(w),
                                        view(hin), view(hout), ro);
        CHECK(to_matrix<float>(q.at(l.name)) == ref.weights);
        nlohmann::json layer;
        for (const auto& x : r["layers"])
          if (x["name"] == l.name) layer = x;
        const auto& lr = layer["refine"];
        INFO(lr.dump());
        CHECK(lr["pattern"] == "full");
        CHECK(lr["relative_loss"].get<double>() <= lr["relative_loss_unrefined"].get<double>());
        CHECK(lr["relative_loss"].get<double>() == Approx(ref.report.refine.loss / ref.report.refine.normalizer));
        CHECK(lr["trace"].size() >= 2);
        CHECK(layer["stages"].contains("refine"));
        const auto meta = nlohmann::json::parse(q.metadata().at("yaqa.layer." + l.name));
        CHECK(meta["refine"]["method"] == "sde");
        CHECK(rel_frobenius(rebuild_int(q, l.name), to_matrix<float>(q.at(l.name)).cast<double>()) < 1e-5);
      }
    }
  }
}

TEST_CASE("run: --cd-sweeps matches quantize_layer and lowers the proxy", "[cli]") {
  temp_dir dir;
  write_cli_model(dir.path());
  const safetensors_file wf(dir / "W.safetensors"), hf(dir / "H.safetensors");
  const auto opts = cli_parse(cli_args(dir.path(), {"--method", "yaqa", "--bits", "2", "--cd-sweeps", "2", "--report",
                                                    (dir / "r.json").string()}));
  CHECK(opts.cd_sweeps == 2);
  std::ostringstream log;
  (void)cli::run(opts, log);
  const safetensors_file q(dir / "Q.safetensors");
  const auto r = nlohmann::json::parse(read_file(dir / "r.json"));
  const cli_model model;
  for (const auto& l : model.layers) {
    const matrix<float> w = to_matrix<float>(wf.at(l.name));
    const matrix<float> hin = to_matrix<float>(hf.at(l.name + ".H_in")), hout = to_matrix<float>(hf.at(l.name + ".H_out"));
    rounding_options ro;
    ro.cd_sweeps = 2;
    const auto ref = quantize_layer(int_grid<float>({.bits = 2, .sym = true}), view(w), view(hin), view(hout), ro);
    CHECK(to_matrix<float>(q.at(l.name)) == ref.weights);
    for (const auto& x : r["layers"])
      if (x["name"] == l.name) {
        INFO(x.dump());
        CHECK(x["cd"]["relative_proxy_after"].get<double>() < x["cd"]["relative_proxy_before"].get<double>());
        CHECK(x["relative_proxy"].get<double>() == Approx(x["cd"]["relative_proxy_after"].get<double>()));
      }
  }
}

TEST_CASE("run: report JSON; YAQA's proxy is below RTN's on every layer", "[cli]") {
  temp_dir dir;
  write_cli_model(dir.path());
  std::ostringstream log;
  (void)cli::run(cli_parse(cli_args(dir.path(), {"--method", "yaqa", "--bits", "2", "--rtn-baseline", "--report",
                                                 (dir / "r.json").string()})),
                 log);
  CHECK(log.str().empty());  // --quiet
  const auto r = nlohmann::json::parse(read_file(dir / "r.json"));
  REQUIRE(r["layers"].size() == 2);
  for (const auto& l : r["layers"]) {
    INFO(l.dump());
    CHECK(l["feedback"].get<bool>());
    CHECK(l["relative_proxy"].get<double>() < 0.9 * l["rtn_relative_proxy"].get<double>());
    CHECK(l["relative_proxy"].get<double>() > 0);
    CHECK(l["stages"].contains("round"));
  }
  CHECK(r["options"]["method"] == "yaqa");
  CHECK(r["copied_tensors"] == 2);
}

TEST_CASE("run: progress line per layer on the log", "[cli]") {
  temp_dir dir;
  write_cli_model(dir.path());
  auto o = cli_parse(cli_args(dir.path(), {"--method", "ldlq"}));
  o.quiet = false;
  std::ostringstream log;
  (void)cli::run(o, log);
  const std::string s = log.str();
  CHECK_THAT(s, Catch::Contains("[1/2] blk.0.down.weight [32x48] ldlq proxy "));
  CHECK_THAT(s, Catch::Contains("[2/2] blk.0.up.weight [48x32] ldlq proxy "));
  CHECK_THAT(s, Catch::Contains("2 quantized, 2 copied"));
}

TEST_CASE("run: packed and full Hessians give byte-identical output", "[cli]") {
  temp_dir full, packed;
  write_cli_model(full.path(), false);
  write_cli_model(packed.path(), true);
  for (const char* m : {"ldlq", "yaqa"}) {
    std::ostringstream log;
    (void)cli::run(cli_parse(cli_args(full.path(), {"--method", m})), log);
    (void)cli::run(cli_parse(cli_args(packed.path(), {"--method", m})), log);
    CHECK(read_file(full / "Q.safetensors") == read_file(packed / "Q.safetensors"));
  }
}

TEST_CASE("run: byte-identical output for 1, 2 and 4 threads and across runs", "[cli][determinism]") {
  temp_dir dir;
  write_cli_model(dir.path());
  for (const char* m : {"gptq", "ldlq", "yaqa"}) {
    std::string first;
    for (const char* t : {"1", "2", "4", "1"}) {
      std::ostringstream log;
      (void)cli::run(cli_parse(cli_args(dir.path(), {"--method", m, "--threads", t, "--seed", "3"})), log);
      const std::string bytes = read_file(dir / "Q.safetensors");
      if (first.empty()) first = bytes;
      INFO(m << " threads " << t);
      CHECK(bytes == first);
    }
  }
}

// Not run by default ([.]): writes the generated model to $YAQA_CLI_MODEL_DIR for the process-level
// determinism test (tests/cli/determinism.cmake), which runs the real binary on it.
TEST_CASE("write the generated model for process-level tests", "[.][cli_model]") {
  const char* dir = std::getenv("YAQA_CLI_MODEL_DIR");
  if (dir == nullptr) return;  // a utility, not a test: the runner's "~[cuda]" filter selects it too
  fs::create_directories(dir);
  write_cli_model(dir);
}
