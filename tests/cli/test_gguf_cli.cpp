// yaqa-quantize with GGUF: --quantizer gguf:TYPE, GGUF input and output (metadata and untouched
// tensors copied byte for byte, quantized tensors in their ggml type), safetensors output with
// NAME.qblocks, and --hessians from a llama.cpp imatrix (legacy .dat).
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "cli/cli_support.hpp"

using namespace yaqa;
using namespace yaqa::test;

namespace {

struct gguf_layer {
  std::string name;
  yaqa::index out, in;
};
// Few rows: the K-quant fits are the cost, and the sanitizer build runs these tests at -O0.
const std::vector<gguf_layer> gguf_layers{{"blk.0.attn_q.weight", 8, 256}, {"blk.0.ffn_down.weight", 6, 512}};

//! dir/M.gguf (F32 weights, an F32 norm, an F16 tensor, KVs of several types), dir/H.safetensors
//! (NAME.H per weight) and dir/M.imatrix.dat (the same H's diagonals, legacy format, ncall 2).
void write_gguf_model(const fs::path& dir) {
  gguf_writer g;
  g.set("general.architecture", gguf_value("llama"));
  g.set("general.name", gguf_value("tiny"));
  g.set("llama.block_count", gguf_value(std::uint32_t{1}));
  g.set("tokenizer.ggml.scores", gguf_value::array_of(std::vector<float>{0.5f, -1.0f}));
  safetensors_writer h;
  std::string dat;
  auto i32 = [&](std::int32_t v) { dat.append(reinterpret_cast<const char*>(&v), 4); };
  i32(std::int32_t(gguf_layers.size()));
  std::uint64_t s = 11;
  for (const auto& l : gguf_layers) {
    const matrix<float> w = random_weights<float>(l.out, l.in, s++);
    g.add(l.name, view(w));
    matrix<float> xtx = random_second_moment<float>(l.in, 2 * l.in, s++);
    xtx = ((xtx + xtx.transpose()) * 0.5f).eval();
    h.add(l.name + ".H", view(xtx), dtype::f32);
    i32(std::int32_t(l.name.size()));
    dat += l.name;
    i32(2);  // ncall: the values are stored times ncall
    i32(std::int32_t(l.in));
    for (yaqa::index j = 0; j < l.in; ++j) {
      const float v = xtx(j, j) * 2.0f;
      dat.append(reinterpret_cast<const char*>(&v), 4);
    }
  }
  g.add("blk.0.attn_norm.weight", matrix<float>::Constant(1, 256, 0.5f));
  g.add("token_embd.weight", view(random_weights<float>(8, 256, 99)), ggml_type::f16);
  g.write(dir / "M.gguf");
  h.write(dir / "H.safetensors");
  std::ofstream(dir / "M.imatrix.dat", std::ios::binary) << dat;
}

std::vector<std::string> gguf_args(const fs::path& dir, const std::string& hessians, const std::string& out,
                                   std::vector<std::string> extra) {
  std::vector<std::string> a{"--weights", (dir / "M.gguf").string(), "--hessians", (dir / hessians).string(),
                             "--out", (dir / out).string(), "--quiet"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

//! The layer through the library: quantize_layer with the CLI's quantizer, encoded.
std::vector<std::byte> library_blocks(ggml_type t, const std::string& method, const matrix<float>& w,
                                      const matrix<float>& h, bool importance, matrix<float>* weights = nullptr) {
  gguf_quant_options go;
  if (importance)
    for (yaqa::index i = 0; i < h.cols(); ++i) go.importance.push_back(std::max(h(i, i), 0.0f));
  const gguf_any<float> q(t, go);
  rounding_options ro;
  ro.algorithm = method == "gptq" ? method::gptq : method == "ldlq" ? method::ldlq : method::rtn;
  ro.incoherence = false;
  const auto r = quantize_layer(q, view(w), view(h), matrix_view<const float>{}, ro);
  if (weights) *weights = r.weights;
  return gguf_encode(q, r);
}

}  // namespace

TEST_CASE("parse: --quantizer gguf:TYPE and its rules", "[cli][gguf]") {
  auto o = cli_parse({"--weights", "a", "--hessians", "b", "--out", "c.gguf", "--quantizer", "gguf:q4_k"});
  CHECK(o.quantizer == cli::quantizer_kind::gguf);
  CHECK(o.gguf_type == ggml_type::q4_k);
  CHECK(o.bits == 4);
  CHECK_FALSE(o.rht);  // GGUF blocks are unrotated
  CHECK(o.importance);
  CHECK(cli::quantizer_label(o) == "gguf:Q4_K");
  o = cli_parse({"--weights", "a", "--hessians", "b", "--out", "c", "--quantizer", "gguf:Q6_K", "--no-importance"});
  CHECK(o.bits == 6);
  CHECK_FALSE(o.importance);
  auto fails = [](std::vector<std::string> a, const std::string& needle) {
    const auto r = cli_parse_result(std::move(a));
    CHECK_FALSE(r.opts.has_value());
    CHECK(r.exit_code == 2);
    INFO(r.message);
    CHECK(r.message.find(needle) != std::string::npos);
  };
  const std::vector<std::string> base{"--weights", "a", "--hessians", "b", "--out", "c"};
  auto with = [&](std::vector<std::string> extra) {
    auto a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  fails(with({"--quantizer", "gguf:Q7_K"}), "Q4_K");
  fails(with({"--quantizer", "gguf:Q4_K", "--rht"}), "--rht");
  fails(with({"--quantizer", "gguf:Q4_K", "--group-size", "32"}), "--group-size");
  fails(with({"--quantizer", "gguf:Q4_K", "--bits", "3"}), "--bits");
  fails(with({"--quantizer", "int", "--no-importance"}), "--no-importance");
  fails({"--weights", "a", "--hessians", "b", "--out", "c.gguf", "--quantizer", "int"}, "gguf:TYPE");
}

namespace {
//! GGUF in, GGUF out for (type, method) pairs: every KV and untouched tensor copied, the layers'
//! blocks equal to quantize_layer + gguf_encode. (Split over TEST_CASEs so that ctest runs them
//! side by side: a minute each under ASan.)
void check_gguf_roundtrip(const std::vector<std::pair<std::string, std::string>>& runs) {
  temp_dir dir;
  write_gguf_model(dir.path());
  const gguf_file in(dir / "M.gguf");
  const safetensors_file hf(dir / "H.safetensors");
  for (const auto& [type, method] : runs) {
    DYNAMIC_SECTION(type << " " << method) {
      const auto opts = cli_parse(gguf_args(dir.path(), "H.safetensors", "Q.gguf",
                                            {"--quantizer", "gguf:" + type, "--method", method}));
      std::ostringstream log;
      const auto s = cli::run(opts, log);
      CHECK(s.layers == 2);
      CHECK(s.copied == 2);
      const gguf_file out(dir / "Q.gguf");
      // every input KV, in order, then the ones the tool sets
      const auto keys = out.keys();
      const auto in_keys = in.keys();
      REQUIRE(keys.size() > in_keys.size());
      for (std::size_t k = 0; k < in_keys.size(); ++k) {
        CHECK(keys[k] == in_keys[k]);
        CHECK(out.value(keys[k]) == in.value(in_keys[k]));
      }
      CHECK(out.get<std::uint32_t>("general.file_type") == (type == "Q8_0" ? 7u : 14u));
      CHECK(out.get<std::uint32_t>("general.quantization_version") == 2u);
      CHECK(out.get<std::string>("yaqa.quantizer") == "gguf:" + type);
      // tensors in input order; untouched ones byte for byte
      REQUIRE(out.size() == in.size());
      for (std::size_t t = 0; t < in.size(); ++t) CHECK(out.tensors()[t].name == in.tensors()[t].name);
      for (const char* t : {"blk.0.attn_norm.weight", "token_embd.weight"}) {
        CHECK(out.at(t).type == in.at(t).type);
        CHECK(std::equal(out.at(t).bytes.begin(), out.at(t).bytes.end(), in.at(t).bytes.begin(), in.at(t).bytes.end()));
      }
      for (const auto& l : gguf_layers) {
        const auto& t = out.at(l.name);
        CHECK(ggml_type_name(t.type) == type);
        CHECK(t.shape == std::vector<yaqa::index>{l.out, l.in});
        const matrix<float> w = to_matrix<float>(in.view(l.name));
        const auto ref = library_blocks(t.type, method, w, to_matrix<float>(hf.at(l.name + ".H")), true);
        CHECK(std::equal(t.bytes.begin(), t.bytes.end(), ref.begin(), ref.end()));
      }
    }
  }
}
}  // namespace

TEST_CASE("run: GGUF in, GGUF out (Q8_0, every method): metadata and other tensors copied, layers in their ggml type",
          "[cli][gguf]") {
  check_gguf_roundtrip({{"Q8_0", "rtn"}, {"Q8_0", "gptq"}, {"Q8_0", "ldlq"}});
}

TEST_CASE("run: GGUF in, GGUF out (Q4_K, its super-block fit): layers in their ggml type", "[cli][gguf]") {
  check_gguf_roundtrip({{"Q4_K", "gptq"}});
}

TEST_CASE("run: --hessians from a llama.cpp imatrix is a diagonal H_in; yaqa is refused", "[cli][gguf]") {
  temp_dir dir;
  write_gguf_model(dir.path());
  const gguf_file in(dir / "M.gguf");
  const safetensors_file hf(dir / "H.safetensors");
  const auto opts = cli_parse(gguf_args(dir.path(), "M.imatrix.dat", "Q.gguf", {"--quantizer", "gguf:Q4_K", "--method", "ldlq"}));
  std::ostringstream log;
  CHECK(cli::run(opts, log).layers == 2);
  const gguf_file out(dir / "Q.gguf");
  for (const auto& l : gguf_layers) {
    const matrix<float> full = to_matrix<float>(hf.at(l.name + ".H"));
    matrix<float> diag = matrix<float>::Zero(l.in, l.in);
    for (yaqa::index j = 0; j < l.in; ++j) diag(j, j) = float(double(full(j, j) * 2.0f) / 2.0);
    const auto ref = library_blocks(ggml_type::q4_k, "ldlq", to_matrix<float>(in.view(l.name)), diag, true);
    const auto& t = out.at(l.name);
    CHECK(std::equal(t.bytes.begin(), t.bytes.end(), ref.begin(), ref.end()));
  }
  const auto y = cli_parse(gguf_args(dir.path(), "M.imatrix.dat", "Y.gguf", {"--quantizer", "gguf:Q4_K", "--method", "yaqa"}));
  CHECK_THROWS_WITH(cli::run(y, log), Catch::Contains("--method yaqa") && Catch::Contains("imatrix.dat"));
  CHECK_FALSE(fs::exists(dir / "Y.gguf"));
}

TEST_CASE("run: gguf quantizer with safetensors output writes the weights and NAME.qblocks", "[cli][gguf]") {
  temp_dir dir;
  write_gguf_model(dir.path());
  const gguf_file in(dir / "M.gguf");
  const safetensors_file hf(dir / "H.safetensors");
  const auto opts = cli_parse(gguf_args(dir.path(), "H.safetensors", "Q.safetensors",
                                        {"--quantizer", "gguf:Q8_0", "--method", "gptq", "--no-importance"}));
  std::ostringstream log;
  CHECK(cli::run(opts, log).layers == 2);
  const safetensors_file out(dir / "Q.safetensors");
  for (const auto& l : gguf_layers) {
    matrix<float> weights;
    const auto ref = library_blocks(ggml_type::q8_0, "gptq", to_matrix<float>(in.view(l.name)),
                                    to_matrix<float>(hf.at(l.name + ".H")), false, &weights);
    CHECK(to_matrix<float>(out.at(l.name)) == weights);
    const auto& b = out.at(l.name + ".qblocks");
    CHECK(b.type == dtype::u8);
    CHECK(std::equal(b.bytes.begin(), b.bytes.end(), ref.begin(), ref.end()));
    CHECK(gguf_any<float>(ggml_type::q8_0).decode(b.bytes, l.out, l.in) == weights);
  }
  CHECK(out.at("blk.0.attn_norm.weight").type == dtype::f32);
  CHECK(out.at("token_embd.weight").type == dtype::f16);
}

TEST_CASE("run: --format gptq / compressed-tensors write the packed layers, other tensors and the config JSON",
          "[cli][checkpoint]") {
  temp_dir dir;
  write_cli_model(dir.path());
  const safetensors_file wf(dir / "W.safetensors"), hf(dir / "H.safetensors");
  for (const char* format : {"gptq", "compressed-tensors"}) {
    DYNAMIC_SECTION(format) {
      std::vector<std::string> extra{"--method", "gptq", "--bits", "4", "--group-size", "16", "--format", format};
      if (std::string(format) == "compressed-tensors") extra.push_back("--asym");
      const auto opts = cli_parse(cli_args(dir.path(), extra));
      CHECK_FALSE(opts.rht);
      std::ostringstream log;
      const auto s = cli::run(opts, log);
      CHECK(s.layers == 2);
      const safetensors_file q(dir / "Q.safetensors");
      for (const char* t : {"blk.0.up.bias", "blk.0.ids"}) {
        REQUIRE(q.contains(t));
        CHECK(std::equal(q.at(t).bytes.begin(), q.at(t).bytes.end(), wf.at(t).bytes.begin(), wf.at(t).bytes.end()));
      }
      const int_grid_options grid{.bits = 4, .sym = std::string(format) == "gptq", .group_size = 16};
      for (const auto& l : cli_model{}.layers) {
        const std::string prefix = l.name.substr(0, l.name.size() - 7);
        CHECK_FALSE(q.contains(l.name));  // the packed layer replaces the float weight
        rounding_options ro;
        ro.algorithm = method::gptq;
        ro.incoherence = false;
        const auto ref = quantize_layer(int_grid<float>(grid), view(to_matrix<float>(wf.at(l.name))),
                                        view(to_matrix<float>(hf.at(l.name + ".H"))), matrix_view<const float>{}, ro);
        if (std::string(format) == "gptq") {
          const gptq_layer L = pack_gptq(ref, grid, l.name);
          const auto want = yaqa::detail::le_bytes(L.qweight);
          const auto& got = q.at(prefix + ".qweight").bytes;
          CHECK(std::equal(got.begin(), got.end(), want.begin(), want.end()));
          CHECK(q.contains(prefix + ".qzeros"));
          CHECK(q.contains(prefix + ".scales"));
          CHECK(q.contains(prefix + ".g_idx"));
        } else {
          const compressed_tensors_layer L = pack_compressed_tensors(ref, grid, l.name);
          const auto want = yaqa::detail::le_bytes(L.weight_packed);
          const auto& got = q.at(prefix + ".weight_packed").bytes;
          CHECK(std::equal(got.begin(), got.end(), want.begin(), want.end()));
          CHECK(q.contains(prefix + ".weight_zero_point"));
        }
      }
      const fs::path cfg = dir / (std::string(format) == "gptq" ? "quantize_config.json" : "quantization_config.json");
      REQUIRE(fs::exists(cfg));
      std::ifstream in(cfg);
      const auto j = nlohmann::json::parse(in);
      if (std::string(format) == "gptq") {
        CHECK(j.at("bits") == 4);
        CHECK(j.at("group_size") == 16);
        CHECK(j.at("quant_method") == "gptq");
      } else {
        CHECK(j.at("format") == "pack-quantized");
        CHECK(j.at("ignore").empty());
      }
    }
  }
  auto fails = [&](std::vector<std::string> extra, const std::string& needle) {
    const auto r = cli_parse_result(cli_args(dir.path(), std::move(extra)));
    CHECK_FALSE(r.opts.has_value());
    INFO(r.message);
    CHECK(r.message.find(needle) != std::string::npos);
  };
  fails({"--format", "gptq", "--quantizer", "lloyd"}, "--quantizer int");
  fails({"--format", "gptq", "--rht"}, "--rht");
  // RHT-free but not representable: 5 bits in the GPTQ layout, named with the layer
  const auto bad = cli_parse(cli_args(dir.path(), {"--format", "gptq", "--bits", "5", "--method", "rtn"}, "B.safetensors"));
  std::ostringstream log;
  CHECK_THROWS_WITH(cli::run(bad, log), Catch::Contains("blk.0") && Catch::Contains("5"));
  CHECK_FALSE(fs::exists(dir / "B.safetensors"));
}

TEST_CASE("gguf recipes: llama-quantize's per-tensor types", "[cli][gguf]") {
  std::vector<cli::gguf_weight> w;
  const int layers = 8;
  for (int l = layers - 1; l >= 0; --l)  // any input order: the rules walk layer order
    for (const char* t : {"attn_q", "attn_v", "attn_output", "ffn_down", "ffn_up"})
      w.push_back({"blk." + std::to_string(l) + "." + t + ".weight", 512});
  w.push_back({"output.weight", 512});
  w.push_back({"token_embd.weight", 512});
  w.push_back({"blk.0.odd.weight", 96});  // rows of 96: no 256-block type fits
  auto types = [&](const char* preset, int n_gqa = 1) {
    return cli::gguf_preset_types(*cli::find_gguf_preset(preset), w, {n_gqa, false});
  };
  auto at = [](const std::map<std::string, ggml_type>& m, const std::string& n) { return ggml_type_name(m.at(n)); };
  const auto m = types("Q4_K_M");
  CHECK(at(m, "output.weight") == "Q6_K");
  CHECK(at(m, "token_embd.weight") == "Q4_K");
  CHECK(at(m, "blk.3.attn_q.weight") == "Q4_K");
  CHECK(at(m, "blk.0.odd.weight") == "Q5_0");  // llama.cpp's Q4_K fallback
  // use_more_bits(i, 8): i < 1, i >= 7, (i - 1) % 3 == 2 -> layers 0, 3, 6, 7
  for (int l = 0; l < layers; ++l) {
    const bool more = l == 0 || l == 3 || l == 6 || l == 7;
    CHECK(at(m, "blk." + std::to_string(l) + ".attn_v.weight") == (more ? "Q6_K" : "Q4_K"));
    CHECK(at(m, "blk." + std::to_string(l) + ".ffn_down.weight") == (more ? "Q6_K" : "Q4_K"));
  }
  const auto q3 = types("Q3_K_M");
  CHECK(at(q3, "blk.0.attn_v.weight") == "Q5_K");
  CHECK(at(q3, "blk.1.attn_v.weight") == "Q5_K");
  CHECK(at(q3, "blk.2.attn_v.weight") == "Q4_K");
  CHECK(at(q3, "blk.5.attn_output.weight") == "Q4_K");
  CHECK(at(q3, "blk.5.ffn_down.weight") == "Q4_K");  // i >= n/16 = 0
  CHECK(at(q3, "blk.5.ffn_up.weight") == "Q3_K");
  CHECK(at(q3, "blk.0.odd.weight") == "IQ4_NL");
  const auto q2 = types("Q2_K", 4);
  CHECK(at(q2, "blk.4.attn_v.weight") == "Q4_K");  // n_gqa >= 4
  CHECK(at(q2, "blk.4.ffn_down.weight") == "Q3_K");
  CHECK(at(types("Q2_K"), "blk.4.attn_v.weight") == "Q3_K");
  const auto s = types("Q4_K_S");
  CHECK(at(s, "blk.3.attn_v.weight") == "Q5_K");
  CHECK(at(s, "blk.4.attn_v.weight") == "Q4_K");
  CHECK(at(s, "blk.0.ffn_down.weight") == "Q5_K");
  CHECK(at(s, "blk.1.ffn_down.weight") == "Q4_K");
  CHECK(at(types("Q8_0"), "output.weight") == "Q8_0");
  CHECK(at(types("Q8_0"), "blk.0.odd.weight") == "Q8_0");
}

TEST_CASE("run: a recipe (gguf:Q4_K_M) and a safetensors model into a GGUF", "[cli][gguf]") {
  temp_dir dir;
  write_gguf_model(dir.path());
  const auto opts = cli_parse(gguf_args(dir.path(), "H.safetensors", "Q.gguf", {"--quantizer", "gguf:q4_k_m", "--method", "ldlq"}));
  CHECK(opts.gguf_preset == "Q4_K_M");
  std::ostringstream log;
  CHECK(cli::run(opts, log).layers == 2);
  const gguf_file out(dir / "Q.gguf");
  CHECK(out.get<std::uint32_t>("general.file_type") == 15u);
  CHECK(ggml_type_name(out.at("blk.0.attn_q.weight").type) == "Q4_K");
  CHECK(ggml_type_name(out.at("blk.0.ffn_down.weight").type) == "Q6_K");  // use_more_bits(0, 1)
  // safetensors weights -> GGUF: every tensor, the plain ones in their GGUF types
  safetensors_writer st;
  const gguf_file in(dir / "M.gguf");
  for (const auto& l : gguf_layers) st.add(l.name, view(to_matrix<float>(in.view(l.name))), dtype::f32);
  st.add("norm", {3}, std::vector<float>{1.f, 2.f, 3.f}, dtype::bf16);
  st.write(dir / "W.safetensors");
  auto a = gguf_args(dir.path(), "H.safetensors", "S.gguf", {"--quantizer", "gguf:Q8_0", "--method", "gptq"});
  a[1] = (dir / "W.safetensors").string();
  const auto so = cli_parse(a);
  CHECK(cli::run(so, log).copied == 1);
  const gguf_file sg(dir / "S.gguf");
  CHECK(sg.at("norm").type == ggml_type::bf16);
  CHECK(sg.at("norm").shape == std::vector<yaqa::index>{3});
  CHECK(ggml_type_name(sg.at("blk.0.attn_q.weight").type) == "Q8_0");
  CHECK(sg.get<std::uint32_t>("general.file_type") == 7u);
}
