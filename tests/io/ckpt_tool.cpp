// yaqa_ckpt_tool OUTDIR: writes GPTQ and compressed-tensors checkpoints of seeded int_grid results
// (tests/io/ckpt_support.hpp) for tests/python/test_gptq_checkpoint.py, and prints a JSON manifest.
//
// For case k it writes OUTDIR/<format>_k.safetensors (the layer "model.layers.0.mlp.down_proj"
// plus a pass-through "model.norm.weight") and OUTDIR/ref_<format>_k.safetensors with the F32
// tensors "exact" (dequantize_* exact), "storage" (dequantize_*, rounded to the scale type) and
// "recon" (yaqa's reconstruction), all [m, n]. The manifest lists, per case, the files, the grid,
// the layout and the quantization_config JSON.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <io/ckpt_support.hpp>
#include <yaqa/io/gptq_checkpoint.hpp>
#include <yaqa/io/safetensors.hpp>

namespace {

using namespace yaqa;
using yaqa::test::ckpt_case;

template <class T>
nlohmann::json write_case(const std::filesystem::path& dir, const std::string& tag, const ckpt_case& c,
                          const checkpoint_options& opt, std::uint64_t seed) {
  const auto r = yaqa::test::random_int_grid_result<T>(c, seed, opt.format == checkpoint_format::gptq ? 1 : 0);
  const auto o = yaqa::test::grid_options(c);
  const std::string name = "model.layers.0.mlp.down_proj";
  safetensors_writer w;
  const matrix<float> norm = matrix<float>::Constant(c.n, 1, 1.5f);
  w.add("model.norm.weight", norm);
  const std::vector<quantized_linear<T>> layers{{name, r}};
  const auto file = dir / (tag + ".safetensors");
  const auto j = write_quantized_checkpoint<T>(w, file, layers, o, opt);

  matrix<T> exact, storage;
  if (opt.format == checkpoint_format::gptq) {
    const auto L = pack_gptq(r, o, name);
    exact = dequantize_gptq<T>(L, dequant_precision::exact);
    storage = dequantize_gptq<T>(L, dequant_precision::storage);
  } else {
    const auto L = pack_compressed_tensors(r, o, name, opt.scale_type);
    exact = dequantize_compressed_tensors<T>(L, dequant_precision::exact);
    storage = dequantize_compressed_tensors<T>(L, dequant_precision::storage);
  }
  safetensors_writer ref;
  ref.add("exact", exact, dtype::f32);
  ref.add("storage", storage, dtype::f32);
  ref.add("recon", r.weights, dtype::f32);
  const auto ref_file = dir / ("ref_" + tag + ".safetensors");
  ref.write(ref_file);
  return {{"file", file.string()},
          {"ref", ref_file.string()},
          {"layer", name},
          {"format", checkpoint_format_name(opt.format)},
          {"scalar", sizeof(T) == 4 ? "float" : "double"},
          {"m", c.m},
          {"n", c.n},
          {"bits", c.bits},
          {"sym", c.sym},
          {"group_size", c.group_size},
          {"act_order", c.act_order},
          {"scale_type", std::string(safetensors_name(opt.scale_type))},
          {"quantization_config", j.quantization_config}};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
    return 2;
  }
  try {
    const std::filesystem::path dir = argv[1];
    std::filesystem::create_directories(dir);
    nlohmann::json cases = nlohmann::json::array();
    std::uint64_t seed = 1000;
    int k = 0;
    // GPTQ: 2/3/4/8 bits, sym/asym, per channel / groups / act-order, sizes not multiples of 32
    // where the layout allows (3 bits needs multiples of 32).
    const std::vector<ckpt_case> gptq_cases = {
        {40, 264, 4, false, 0, false},  {40, 264, 4, true, 24, false},  {40, 264, 4, false, 24, true},
        {72, 384, 4, true, 128, true},  {48, 272, 2, false, 68, false}, {48, 272, 2, true, 0, true},
        {36, 132, 8, false, 44, false}, {36, 132, 8, true, 0, false},   {96, 288, 3, false, 32, false},
        {64, 256, 3, true, 128, true},  {64, 160, 3, false, 0, false}};
    for (const auto& c : gptq_cases) {
      checkpoint_options opt;
      opt.format = checkpoint_format::gptq;
      cases.push_back(write_case<float>(dir, "gptq_" + std::to_string(k++), c, opt, seed++));
    }
    cases.push_back(write_case<double>(dir, "gptq_" + std::to_string(k++), {40, 264, 4, false, 24, true},
                                       checkpoint_options{}, seed++));
    // compressed-tensors: every bit width 2..8, sym/asym, channel/group, F16/BF16, any size.
    k = 0;
    for (int bits = 2; bits <= 8; ++bits)
      for (int v = 0; v < 4; ++v) {
        const bool sym = v & 1, group = v & 2;
        const yaqa::index m = 29 + 3 * bits, n = 2 * (35 + 2 * v + bits);
        const ckpt_case c{m, n, bits, sym, group ? n / 2 : 0, false};
        checkpoint_options opt;
        opt.format = checkpoint_format::compressed_tensors;
        opt.scale_type = ((bits + v) % 2) ? dtype::bf16 : dtype::f16;
        cases.push_back(write_case<float>(dir, "ct_" + std::to_string(k++), c, opt, seed++));
      }
    {
      checkpoint_options opt;
      opt.format = checkpoint_format::compressed_tensors;
      cases.push_back(write_case<double>(dir, "ct_" + std::to_string(k++), {40, 256, 4, false, 128, false}, opt, seed++));
    }
    std::cout << cases.dump(1) << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "yaqa_ckpt_tool: %s\n", e.what());
    return 1;
  }
  return 0;
}
