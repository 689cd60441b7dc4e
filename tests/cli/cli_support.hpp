#pragma once
// A small generated "model" for the CLI tests: two linear layers with calibration-like Hessians
// (X^T X of correlated inputs, and an output factor), a bias that must be copied through, and
// helpers to run the CLI in process.
#include <functional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <layer_instances.hpp>  // quantize_layer<int_grid<float>> etc.: compiled once, in instances/
#include "cli.hpp"
#include "io/io_support.hpp"
#include "support/generators.hpp"

namespace yaqa::test {

struct cli_model {
  // layer name -> (rows = out, cols = in)
  struct layer {
    std::string name;
    yaqa::index out, in;
  };
  std::vector<layer> layers{{"blk.0.up.weight", 48, 32}, {"blk.0.down.weight", 32, 48}};
};

//! Writes W.safetensors (the two weights + a bias + an int tensor) and H.safetensors with NAME.H,
//! NAME.H_in/H_out (untagged), NAME.b.H_in/H_out (tag b); `packed` stores the factors packed.
inline void write_cli_model(const fs::path& dir, bool packed = false, std::uint64_t seed = 1) {
  safetensors_writer w, h;
  std::uint64_t s = seed;
  auto add_factor = [&](const std::string& name, matrix<float> a) {
    a = ((a + a.transpose()) * 0.5f).eval();  // exactly symmetric, so full and packed agree bitwise
    if (!packed) return h.add(name, view(a), dtype::f32);
    std::vector<float> v;
    for (yaqa::index i = 0; i < a.rows(); ++i)
      for (yaqa::index j = 0; j <= i; ++j) v.push_back(a(i, j));
    h.add(name, {yaqa::index(v.size())}, v, dtype::f32);
  };
  for (const auto& l : cli_model{}.layers) {
    const matrix<float> wt = random_weights<float>(l.out, l.in, s++);
    w.add(l.name, view(wt), dtype::f32);
    const matrix<float> xtx = random_second_moment<float>(l.in, 4 * l.in, s++);
    const matrix<float> hout = random_second_moment<float>(l.out, 4 * l.out, s++);
    add_factor(l.name + ".H", xtx);
    add_factor(l.name + ".H_in", xtx);
    add_factor(l.name + ".H_out", hout);
    add_factor(l.name + ".b.H_in", xtx);
    add_factor(l.name + ".b.H_out", hout);
  }
  w.add("blk.0.up.bias", {48}, std::vector<float>(48, 0.25f));
  const std::vector<std::int32_t> ids{1, 2, 3};
  w.add("blk.0.ids", dtype::i32, {3}, std::as_bytes(std::span(ids)));
  w.metadata()["format"] = "pt";
  w.write(dir / "W.safetensors");
  h.write(dir / "H.safetensors");
}

//! With YAQA_FUZZ_SEED_DIR set, saves the command line as a seed of fuzz/fuzz_cli.cpp (its
//! format: a first byte with bit 0 clear, then the arguments one per line).
inline void export_cli_seed(const std::vector<std::string>& args) {
  if (!fuzz_seeds_wanted()) return;
  std::string image(1, '\0');
  for (std::size_t i = 0; i < args.size(); ++i) image += (i ? "\n" : "") + args[i];
  export_fuzz_seed("cli", "argv-" + std::to_string(std::hash<std::string>{}(image)), image);
}

//! Parses `args` (without the program name).
inline cli::parse_result cli_parse_result(std::vector<std::string> args) {
  export_cli_seed(args);
  std::vector<const char*> argv{"yaqa-quantize"};
  for (const auto& a : args) argv.push_back(a.c_str());
  return cli::parse_command_line(int(argv.size()), argv.data());
}

//! Parses `args` and requires success.
inline cli::options cli_parse(std::vector<std::string> args) {
  const cli::parse_result r = cli_parse_result(std::move(args));
  INFO(r.message);
  REQUIRE(r.opts.has_value());
  return *r.opts;
}

//! Options reading dir/W and dir/H, writing dir/out.
inline std::vector<std::string> cli_args(const fs::path& dir, std::vector<std::string> extra,
                                         const std::string& out = "Q.safetensors") {
  std::vector<std::string> a{"--weights", (dir / "W.safetensors").string(), "--hessians",
                             (dir / "H.safetensors").string(), "--out", (dir / out).string(), "--quiet"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

}  // namespace yaqa::test
