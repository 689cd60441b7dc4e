// The bad-input catalogue (docs/reliability.md): one test per class of bad input, each asserting
// the error type and that the message names the file / tensor / argument and what was expected,
// or, for inputs that are legal but numerically hopeless, what the report says was done.
// Every class goes through yaqa-quantize's run(), the way users meet it.
#include <map>

#include <nlohmann/json.hpp>

#include "cli/cli_support.hpp"

using namespace yaqa;
using namespace yaqa::test;

namespace {

constexpr yaqa::index kOut = 32, kIn = 48;
constexpr const char* kName = "layer.weight";

//! One layer W [32, 48] with H_in / H_out (untagged) and NAME.H; `edit` may change any matrix
//! before it is written (keys "W", "H", "H_in", "H_out"; an empty matrix drops the tensor).
template <class Edit>
void write_layer(const temp_dir& dir, Edit edit) {
  std::map<std::string, matrix<float>> m;
  m["W"] = random_weights<float>(kOut, kIn, 11);
  const matrix<float> hin = random_second_moment<float>(kIn, 4 * kIn, 12);
  const matrix<float> hout = random_second_moment<float>(kOut, 4 * kOut, 13);
  m["H"] = ((hin + hin.transpose()) * 0.5f).eval();
  m["H_in"] = m["H"];
  m["H_out"] = ((hout + hout.transpose()) * 0.5f).eval();
  edit(m);
  safetensors_writer w, h;
  w.add(kName, view(std::as_const(m["W"])), dtype::f32);
  for (const char* k : {"H", "H_in", "H_out"})
    if (m[k].size() > 0) h.add(std::string(kName) + "." + k, view(std::as_const(m[k])), dtype::f32);
  w.write(dir / "W.safetensors");
  h.write(dir / "H.safetensors");
}

void write_layer(const temp_dir& dir) {
  write_layer(dir, [](auto&) {});
}

//! Runs the CLI on dir's files and requires it to throw E; returns the message.
template <class E>
std::string cli_error(const temp_dir& dir, std::vector<std::string> extra) {
  std::ostringstream log;
  const auto entries = dir.entries();
  const std::string msg = thrown_message<E>([&] { (void)cli::run(cli_parse(cli_args(dir.path(), extra)), log); });
  CHECK(dir.entries() == entries);  // nothing written, no temporary left behind
  return msg;
}

//! Runs the CLI with a report and returns the report of the only layer.
nlohmann::json cli_report(const temp_dir& dir, std::vector<std::string> extra) {
  std::ostringstream log;
  extra.insert(extra.end(), {"--report", (dir / "r.json").string()});
  (void)cli::run(cli_parse(cli_args(dir.path(), extra)), log);
  const auto r = nlohmann::json::parse(read_file(dir / "r.json"));
  REQUIRE(r["layers"].size() == 1);
  return r["layers"][0];
}

}  // namespace

TEST_CASE("bad input: NaN or Inf in a weight", "[cli][bad_input]") {
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    temp_dir dir;
    write_layer(dir, [&](auto& m) { m["W"](5, 7) = bad; });
    const auto msg = cli_error<non_finite_error>(dir, {"--method", "ldlq"});
    CHECK_THAT(msg, Catch::Contains("tensor 'layer.weight' in '") && Catch::Contains("W.safetensors'") &&
                        Catch::Contains("at [5, 7]") && Catch::Contains("expected finite weights"));
  }
}

TEST_CASE("bad input: NaN or Inf in a Hessian factor", "[cli][bad_input]") {
  for (const char* which : {"H_in", "H_out"}) {
    temp_dir dir;
    write_layer(dir, [&](auto& m) { m[which](3, 2) = m[which](2, 3) = std::numeric_limits<float>::infinity(); });
    const auto msg = cli_error<non_finite_error>(dir, {"--method", "yaqa"});
    CHECK_THAT(msg, Catch::Contains(std::string("tensor 'layer.weight.") + which + "'") &&
                        Catch::Contains("H.safetensors") && Catch::Contains("expected finite values"));
  }
}

TEST_CASE("bad input: Hessian shape does not match the weight", "[cli][bad_input]") {
  {
    temp_dir dir;  // H_in of the output dimension (a transposed weight, a swapped factor)
    write_layer(dir, [&](auto& m) { m["H_in"] = m["H_out"]; });
    const auto msg = cli_error<shape_error>(dir, {"--method", "yaqa"});
    CHECK_THAT(msg, Catch::Contains("tensor 'layer.weight.H_in'") && Catch::Contains("[32, 32]") &&
                        Catch::Contains("expected [48, 48] (full) or [1176] (packed lower triangle)"));
  }
  {
    temp_dir dir;
    write_layer(dir, [&](auto& m) { m["H_out"] = m["H_in"]; });
    const auto msg = cli_error<shape_error>(dir, {"--method", "yaqa"});
    CHECK_THAT(msg, Catch::Contains("tensor 'layer.weight.H_out'") && Catch::Contains("expected [32, 32]"));
  }
  {
    temp_dir dir;  // a Hessian for a weight that is not 2-D
    safetensors_writer w, h;
    w.add(kName, {kIn}, std::vector<float>(kIn, 1.0f));
    const matrix<float> eye = matrix<float>::Identity(kIn, kIn);
    h.add(std::string(kName) + ".H", view(eye));
    w.write(dir / "W.safetensors");
    h.write(dir / "H.safetensors");
    const auto msg = cli_error<format_error>(dir, {"--method", "ldlq"});
    CHECK_THAT(msg, Catch::Contains("tensor 'layer.weight'") && Catch::Contains("has shape [48]") &&
                        Catch::Contains("expected a 2-D weight [out, in]"));
  }
}

TEST_CASE("bad input: non-symmetric Hessian", "[cli][bad_input]") {
  temp_dir dir;
  write_layer(dir, [&](auto& m) { m["H"](7, 1) += 0.5f * m["H"](7, 7); });
  const auto msg = cli_error<invalid_argument>(dir, {"--method", "gptq"});
  CHECK_THAT(msg, Catch::Contains("tensor 'layer.weight.H'") && Catch::Contains("is not symmetric") &&
                      Catch::Contains("H[7, 1] - H[1, 7]") && Catch::Contains("expected at most"));
}

TEST_CASE("bad input: indefinite, singular and all-zero Hessians are damped or replaced, and reported",
          "[cli][bad_input]") {
  SECTION("indefinite: the damping ladder climbs until LDL succeeds") {
    temp_dir dir;
    write_layer(dir, [&](auto& m) {
      Eigen::SelfAdjointEigenSolver<matrix<float>> es(m["H_in"]);
      vector<float> ev = es.eigenvalues();
      ev(0) = -0.05f * ev.maxCoeff();  // one clearly negative eigenvalue
      m["H_in"] = es.eigenvectors() * ev.asDiagonal() * es.eigenvectors().transpose();
      m["H_in"] = ((m["H_in"] + m["H_in"].transpose()) * 0.5f).eval();
    });
    const auto r = cli_report(dir, {"--method", "yaqa", "--rtn-baseline"});
    CHECK(r["feedback"].get<bool>());
    CHECK(r["attempts_in"].get<int>() > 1);
    CHECK(r["damp_in"].get<double>() > 0.01);
    CHECK(r["relative_proxy"].get<double>() < r["rtn_relative_proxy"].get<double>());
  }
  SECTION("singular (rank 8 of 48): the first damp suffices") {
    temp_dir dir;
    write_layer(dir, [&](auto& m) {
      const matrix<float> x = random_matrix<float>(8, kIn, 5);
      m["H_in"] = (x.transpose() * x).eval();
      m["H_in"] = ((m["H_in"] + m["H_in"].transpose()) * 0.5f).eval();
    });
    const auto r = cli_report(dir, {"--method", "yaqa"});
    CHECK(r["feedback"].get<bool>());
    CHECK(r["attempts_in"].get<int>() == 1);
  }
  SECTION("all zero: replaced by the identity, said so") {
    temp_dir dir;
    write_layer(dir, [&](auto& m) { m["H_out"].setZero(); });
    const auto r = cli_report(dir, {"--method", "yaqa"});
    CHECK(r["h_out_replaced_by_identity"].get<bool>());
    CHECK_FALSE(r["h_in_replaced_by_identity"].get<bool>());
    CHECK(r["feedback"].get<bool>());
  }
}

TEST_CASE("bad input: dead input columns are zeroed (GPTQ's rule) and counted", "[cli][bad_input]") {
  temp_dir dir;
  write_layer(dir, [&](auto& m) {
    for (const yaqa::index d : {3, 20, 47}) {
      m["H_in"].row(d).setZero();
      m["H_in"].col(d).setZero();
    }
  });
  const auto r = cli_report(dir, {"--method", "yaqa", "--no-rht"});
  CHECK(r["dead_inputs"].get<int>() == 3);
  CHECK(r["feedback"].get<bool>());
  const safetensors_file q(dir / "Q.safetensors");
  const matrix<float> w = to_matrix<float>(q.at(kName));
  for (const yaqa::index d : {3, 20, 47}) CHECK(w.col(d).cwiseAbs().maxCoeff() == 0.0f);
}

TEST_CASE("bad input: tile or group sizes that do not divide the dimensions", "[cli][bad_input]") {
  temp_dir dir;
  write_layer(dir);
  auto msg = cli_error<shape_error>(dir, {"--method", "yaqa", "--tile", "16x32"});
  CHECK_THAT(msg, Catch::Contains("layer 'layer.weight'") && Catch::Contains("the tile 16x32 must divide the layer 32x48"));
  msg = cli_error<shape_error>(dir, {"--method", "ldlq", "--tile", "16x20"});
  CHECK_THAT(msg, Catch::Contains("the LDLQ block tile_cols = 20 must divide n = 48"));
  msg = cli_error<invalid_argument>(dir, {"--method", "gptq", "--group-size", "20"});
  CHECK_THAT(msg, Catch::Contains("layer 'layer.weight'") && Catch::Contains("group") && Catch::Contains("20") &&
                      Catch::Contains("48"));
  msg = cli_error<invalid_argument>(dir, {"--method", "rtn", "--quantizer", "fp4"});  // 48 % 32 != 0
  CHECK_THAT(msg, Catch::Contains("layer 'layer.weight'") && Catch::Contains("32") && Catch::Contains("48"));
}

TEST_CASE("bad input: dimensions with no Hadamard matrix use a seeded orthogonal factor, recorded in the output",
          "[cli][bad_input]") {
  // The smallest odd c whose order 4c none of our constructions reaches (92 = 4 * 23); out = 16 c.
  yaqa::index c = 1;
  while (hadamard_constructible(4 * c)) c += 2;
  const yaqa::index out = 16 * c;
  temp_dir dir;
  safetensors_writer w, h;
  const matrix<float> wt = random_weights<float>(out, 32, 21);
  const matrix<float> hin = random_second_moment<float>(32, 128, 22), hout = random_second_moment<float>(out, 2 * out, 23);
  w.add(kName, view(wt));
  h.add(std::string(kName) + ".H_in", ((hin + hin.transpose()) * 0.5f).eval());
  h.add(std::string(kName) + ".H_out", ((hout + hout.transpose()) * 0.5f).eval());
  w.write(dir / "W.safetensors");
  h.write(dir / "H.safetensors");
  const auto r = cli_report(dir, {"--method", "yaqa", "--rtn-baseline"});
  CHECK(r["relative_proxy"].get<double>() < r["rtn_relative_proxy"].get<double>());
  const safetensors_file q(dir / "Q.safetensors");
  const auto meta = nlohmann::json::parse(q.metadata().at(std::string("yaqa.layer.") + kName));
  CHECK(meta["transform_out"].get<std::string>() == "orthogonal(" + std::to_string(c) + ") x sylvester(16)");
  CHECK(meta["transform_in"].get<std::string>() == "sylvester(32)");
}

TEST_CASE("bad input: corrupt weight or Hessian files name the file and the problem", "[cli][bad_input]") {
  temp_dir dir;
  write_layer(dir);
  const std::string good = read_file(dir / "W.safetensors");
  const std::uint64_t hlen = [&] {
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | std::uint8_t(good[std::size_t(i)]);
    return n;
  }();
  const std::string header = good.substr(8, hlen);
  auto with_header = [&](std::string h) {
    h.resize(std::max(h.size(), header.size()), ' ');
    return safetensors_image(h, good.substr(8 + hlen));
  };
  auto replace = [&](std::string from, std::string to) {
    std::string h = header;
    const auto p = h.find(from);
    REQUIRE(p != std::string::npos);
    return h.replace(p, from.size(), to);
  };
  const std::vector<std::pair<std::string, std::string>> cases{
      {"truncated", good.substr(0, good.size() - 100)},
      {"header past EOF", u64_le(good.size()) + good.substr(8)},
      {"oversized header", u64_le(std::uint64_t(1) << 40) + good.substr(8)},
      {"wrong dtype", with_header(replace("\"F32\"", "\"Q32\""))},
      {"overlapping offsets", with_header(replace("\"data_offsets\":[0,", "\"data_offsets\":[4,"))},
      {"bad JSON", with_header(replace("{", "["))},
  };
  for (const auto& [what, image] : cases) {
    INFO(what);
    write_file(dir / "W.safetensors", image);
    const auto msg = cli_error<format_error>(dir, {"--method", "ldlq"});
    CHECK_THAT(msg, Catch::Contains("W.safetensors"));
  }
  write_file(dir / "W.safetensors", good);
  write_file(dir / "H.safetensors", read_file(dir / "H.safetensors").substr(0, 50));
  CHECK_THAT(cli_error<format_error>(dir, {"--method", "ldlq"}), Catch::Contains("H.safetensors"));
}

TEST_CASE("bad input: missing sketch tag", "[cli][bad_input]") {
  temp_dir dir;
  write_cli_model(dir.path());
  const auto msg = cli_error<format_error>(dir, {"--method", "yaqa", "--sketch", "a"});
  CHECK_THAT(msg, Catch::Contains("sketch tag 'a' is missing") && Catch::Contains("sketch tags present for it: b") &&
                      Catch::Contains("H.safetensors"));
}

TEST_CASE("bad input: output path equal to an input", "[cli][bad_input]") {
  temp_dir dir;
  write_layer(dir);
  const std::string w_before = read_file(dir / "W.safetensors"), h_before = read_file(dir / "H.safetensors");
  std::ostringstream log;
  auto o = cli_parse(cli_args(dir.path(), {"--method", "ldlq"}));
  for (const fs::path& out : {dir / "W.safetensors", dir / "." / "H.safetensors"}) {
    o.out = out.string();
    const auto msg = thrown_message<invalid_argument>([&] { (void)cli::run(o, log); });
    CHECK_THAT(msg, Catch::Contains("--out") && Catch::Contains(out.filename().string()));
  }
  fs::create_symlink(dir / "W.safetensors", dir / "link.safetensors");
  o.out = (dir / "link.safetensors").string();
  CHECK_THAT(thrown_message<invalid_argument>([&] { (void)cli::run(o, log); }), Catch::Contains("--out"));
  o = cli_parse(cli_args(dir.path(), {"--report", (dir / "W.safetensors").string()}));
  CHECK_THAT(thrown_message<invalid_argument>([&] { (void)cli::run(o, log); }), Catch::Contains("--report"));
  CHECK(read_file(dir / "W.safetensors") == w_before);
  CHECK(read_file(dir / "H.safetensors") == h_before);
}

TEST_CASE("bad input: unwritable output location leaves nothing behind", "[cli][bad_input]") {
  temp_dir dir;
  write_layer(dir);
  // (permission bits do not stop root, who runs CI; these locations fail for every user)
  for (const std::string out : {"W.safetensors/sub/Q.safetensors", "no-such-dir/Q.safetensors"}) {
    INFO(out);
    std::ostringstream log;
    const auto entries = dir.entries();
    const auto m = thrown_message<io_error>(
        [&] { (void)cli::run(cli_parse(cli_args(dir.path(), {"--method", "ldlq"}, out)), log); });
    CHECK_THAT(m, Catch::Contains("Q.safetensors"));
    CHECK(dir.entries() == entries);
  }
  // a directory as the output
  fs::create_directory(dir / "adir");
  std::ostringstream log;
  const auto m = thrown_message<io_error>(
      [&] { (void)cli::run(cli_parse(cli_args(dir.path(), {"--method", "ldlq"}, "adir")), log); });
  CHECK_THAT(m, Catch::Contains("it is a directory"));
}
