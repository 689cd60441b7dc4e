// GPTQ and compressed-tensors checkpoint export (include/yaqa/io/gptq_checkpoint.hpp): packing
// against naive references written from the formats' definitions (AutoGPTQ's per-word loops,
// including its three-word 3-bit scheme, for GPTQ; a bit-by-bit stream for compressed-tensors),
// unpacking, dequantization against scale_f16 * (q - zero), the distance to the float
// reconstruction, the safetensors file and JSON, and every rejection.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <layer_instances.hpp>  // quantize_layer<int_grid<float>> etc.: compiled once, in instances/
#include <io/ckpt_support.hpp>
#include <io/io_support.hpp>
#include <support/generators.hpp>
#include <yaqa/io/gptq_checkpoint.hpp>
#include <yaqa/io/safetensors.hpp>
#include <yaqa/rounding/gptq.hpp>
#include <yaqa/rounding/layer.hpp>

namespace ckpt_test {

using namespace yaqa;
using yaqa::index;  // not POSIX's index() from <strings.h>
using yaqa::test::ckpt_case;

namespace {

// AutoGPTQ's packing of a column of values v[0..count) (count * bits / 32 words): 32 / bits
// values per word for 2/4/8 bits; for 3 bits, 32 values in 3 words as 10 + (2 | 1) + 10 + (1 | 2) + 10.
std::vector<std::uint32_t> autogptq_pack(const std::vector<std::uint32_t>& v, int bits) {
  std::vector<std::uint32_t> out(v.size() * static_cast<std::size_t>(bits) / 32, 0u);
  std::size_t i = 0, row = 0;
  while (row < out.size()) {
    if (bits != 3) {
      for (std::size_t j = i; j < i + 32 / bits; ++j) out[row] |= v[j] << (bits * (j - i));
      i += 32 / bits;
      ++row;
    } else {
      for (std::size_t j = i; j < i + 10; ++j) out[row] |= v[j] << (3 * (j - i));
      i += 10;
      out[row] |= v[i] << 30;
      ++row;
      out[row] |= (v[i] >> 2) & 1u;
      ++i;
      for (std::size_t j = i; j < i + 10; ++j) out[row] |= v[j] << (3 * (j - i) + 1);
      i += 10;
      out[row] |= v[i] << 31;
      ++row;
      out[row] |= (v[i] >> 1) & 3u;
      ++i;
      for (std::size_t j = i; j < i + 10; ++j) out[row] |= v[j] << (3 * (j - i) + 2);
      i += 10;
      ++row;
    }
  }
  return out;
}

// compressed-tensors' dense packing, bit by bit: bit t of value k is bit (k bits + t) of the stream.
std::vector<std::uint32_t> stream_pack(const std::vector<std::uint32_t>& v, int bits) {
  std::vector<std::uint32_t> out((v.size() * static_cast<std::size_t>(bits) + 31) / 32, 0u);
  for (std::size_t k = 0; k < v.size(); ++k)
    for (int t = 0; t < bits; ++t)
      if ((v[k] >> t) & 1u) {
        const std::size_t b = k * static_cast<std::size_t>(bits) + static_cast<std::size_t>(t);
        out[b / 32] |= 1u << (b % 32);
      }
  return out;
}

template <class T>
double max_rel_diff(const matrix<T>& a, const matrix<T>& b) {
  double worst = 0;
  for (index j = 0; j < a.cols(); ++j)
    for (index i = 0; i < a.rows(); ++i)
      if (b(i, j) != T(0)) worst = std::max(worst, std::abs(double(a(i, j)) - double(b(i, j))) / std::abs(double(b(i, j))));
      else worst = std::max(worst, std::abs(double(a(i, j))));
  return worst;
}

template <class T>
std::string what_of(const auto& f) {
  try {
    f();
  } catch (const yaqa::error& e) {
    return e.what();
  }
  return "<no exception>";
}

const std::vector<ckpt_case> gptq_cases = {
    // m, n (multiples of 32 / bits, not of 32, except 3 bits), bits, sym, group size, act-order
    {40, 264, 4, false, 0, false},   {40, 264, 4, true, 24, false},   {40, 264, 4, false, 24, true},
    {72, 384, 4, false, 128, false}, {72, 384, 4, true, 128, true},   {48, 272, 2, false, 68, false},
    {48, 272, 2, true, 0, true},     {36, 132, 8, false, 44, false},  {36, 132, 8, true, 0, false},
    {36, 132, 8, false, 44, true},   {96, 288, 3, false, 32, false},  {64, 160, 3, true, 0, false},
    {64, 256, 3, false, 128, true}};

}  // namespace

TEMPLATE_TEST_CASE("gptq_checkpoint: GPTQ layout: packing matches AutoGPTQ's loops; unpack and dequantize invert it", "[io][gptq_checkpoint]",
                   float, double) {
  using T = TestType;
  std::uint64_t seed = 1;
  for (const auto& c : gptq_cases) {
    INFO("m " << c.m << " n " << c.n << " bits " << c.bits << " sym " << c.sym << " group " << c.group_size
              << " act-order " << c.act_order);
    const auto r = yaqa::test::random_int_grid_result<T>(c, seed++);
    const auto o = yaqa::test::grid_options(c);
    const gptq_layer L = pack_gptq(r, o, "layer");
    const index gc = c.group_size <= 0 ? c.n : c.group_size, G = c.n / gc;
    REQUIRE(L.groups == G);
    REQUIRE(L.qweight.size() == std::size_t(c.n * c.bits / 32 * c.m));
    REQUIRE(L.qzeros.size() == std::size_t(G * c.m * c.bits / 32));
    // qweight: column i of [n b / 32, m] packs row i of the codes along the input dim.
    bool qweight_ok = true;
    for (index i = 0; i < c.m; ++i) {
      std::vector<std::uint32_t> v;
      for (index j = 0; j < c.n; ++j) v.push_back(r.codes(i, j));
      const auto ref = autogptq_pack(v, c.bits);
      for (std::size_t w = 0; w < ref.size(); ++w)
        qweight_ok &= static_cast<std::uint32_t>(L.qweight[w * std::size_t(c.m) + std::size_t(i)]) == ref[w];
    }
    CHECK(qweight_ok);
    // qzeros: row g of [G, m b / 32] packs zero - 1 of every output row.
    bool qzeros_ok = true, scales_ok = true;
    for (index g = 0; g < G; ++g) {
      std::vector<std::uint32_t> v;
      for (index i = 0; i < c.m; ++i) v.push_back(static_cast<std::uint32_t>(r.params[g].zero[i]) - 1u);
      const auto ref = autogptq_pack(v, c.bits);
      for (std::size_t w = 0; w < ref.size(); ++w)
        qzeros_ok &= static_cast<std::uint32_t>(L.qzeros[std::size_t(g) * ref.size() + w]) == ref[w];
      for (index i = 0; i < c.m; ++i) scales_ok &= L.scales[std::size_t(g * c.m + i)] == to_f16_bits(r.params[g].scale[i]);
    }
    CHECK(qzeros_ok);
    CHECK(scales_ok);
    for (index j = 0; j < c.n; ++j) REQUIRE(L.g_idx[std::size_t(j)] == r.group_of(j, gc));
    if (c.sym) CHECK(L.qzeros[0] == static_cast<std::int32_t>(autogptq_pack(std::vector<std::uint32_t>(32, (1u << (c.bits - 1)) - 1), c.bits)[0]));

    CHECK(unpack_gptq_codes(L) == r.codes);
    const auto z = unpack_gptq_zeros(L);
    bool zeros_ok = true;
    for (index g = 0; g < G; ++g)
      for (index i = 0; i < c.m; ++i) zeros_ok &= z(g, i) == static_cast<int>(r.params[g].zero[i]);
    CHECK(zeros_ok);

    // Dequantization: exactly scale_f16 * (q - zero), and that rounded to F16 for storage.
    const matrix<T> exact = dequantize_gptq<T>(L, dequant_precision::exact);
    const matrix<T> stored = dequantize_gptq<T>(L);
    bool exact_ok = true, stored_ok = true;
    for (index j = 0; j < c.n; ++j)
      for (index i = 0; i < c.m; ++i) {
        const auto& p = r.params[std::size_t(r.group_of(j, gc))];
        const double s16 = f16_to_float(to_f16_bits(p.scale[i]));
        const double want = s16 * (double(r.codes(i, j)) - double(p.zero[i]));
        exact_ok &= double(exact(i, j)) == want;
        stored_ok &= double(stored(i, j)) == double(f16_to_float(to_f16_bits(want)));
      }
    CHECK(exact_ok);
    CHECK(stored_ok);
    // Versus yaqa's reconstruction: the F16 scale rounding only (2^-11 relative), plus one F16
    // rounding of the product for the stored values.
    const double rel_exact = max_rel_diff(exact, r.weights), rel_stored = max_rel_diff(stored, r.weights);
    CHECK(rel_exact <= 0x1p-11);
    CHECK(rel_stored <= 0x1p-10 + 0x1p-22);
    CHECK(rel_exact > 0);
  }
}

TEMPLATE_TEST_CASE("gptq_checkpoint: compressed-tensors layout: dense packing, any size, all bits, F16 and BF16 scales",
                   "[io][gptq_checkpoint]", float, double) {
  using T = TestType;
  std::uint64_t seed = 100;
  for (int bits = 2; bits <= 8; ++bits)
    for (int variant = 0; variant < 4; ++variant) {
      const bool sym = variant & 1;
      const dtype st = (variant & 2) ? dtype::bf16 : dtype::f16;
      const ckpt_case c{37 + bits, 2 * (36 + 4 * variant + bits), bits, sym, 0, false};
      for (index gs : {index{0}, c.n / 2}) {
        ckpt_case cc = c;
        cc.group_size = gs;
        INFO("m " << cc.m << " n " << cc.n << " bits " << bits << " sym " << sym << " group " << gs << " scale "
                  << safetensors_name(st));
        const auto r = yaqa::test::random_int_grid_result<T>(cc, seed++, 0);
        const auto L = pack_compressed_tensors(r, yaqa::test::grid_options(cc), "layer", st);
        const index G = gs <= 0 ? 1 : cc.n / gs, gc = cc.n / G;
        REQUIRE(L.packed_cols() == (cc.n * bits + 31) / 32);
        bool packed_ok = true;
        for (index i = 0; i < cc.m; ++i) {
          std::vector<std::uint32_t> v;
          for (index j = 0; j < cc.n; ++j) v.push_back(r.codes(i, j));  // (q - 2^(b-1)) + 2^(b-1)
          const auto ref = stream_pack(v, bits);
          for (std::size_t w = 0; w < ref.size(); ++w)
            packed_ok &= static_cast<std::uint32_t>(L.weight_packed[std::size_t(i * L.packed_cols()) + w]) == ref[w];
        }
        CHECK(packed_ok);
        if (sym) {
          CHECK(L.weight_zero_point.empty());
        } else {
          bool zp_ok = true;
          for (index g = 0; g < G; ++g) {
            std::vector<std::uint32_t> v;
            for (index i = 0; i < cc.m; ++i) v.push_back(static_cast<std::uint32_t>(r.params[g].zero[i]));
            const auto ref = stream_pack(v, bits);
            REQUIRE(index(ref.size()) == L.packed_zero_rows());
            for (std::size_t w = 0; w < ref.size(); ++w)
              zp_ok &= static_cast<std::uint32_t>(L.weight_zero_point[w * std::size_t(G) + std::size_t(g)]) == ref[w];
          }
          CHECK(zp_ok);
        }
        CHECK(unpack_compressed_tensors_codes(L) == r.codes);
        const matrix<T> exact = dequantize_compressed_tensors<T>(L, dequant_precision::exact);
        const matrix<T> stored = dequantize_compressed_tensors<T>(L);
        bool ok = true;
        for (index j = 0; j < cc.n; ++j)
          for (index i = 0; i < cc.m; ++i) {
            const auto& p = r.params[std::size_t(j / gc)];
            const auto sb = st == dtype::bf16 ? to_bf16_bits(p.scale[i]) : to_f16_bits(p.scale[i]);
            const double s = st == dtype::bf16 ? bf16_to_float(sb) : f16_to_float(sb);
            const double want = s * (double(r.codes(i, j)) - double(p.zero[i]));
            REQUIRE(L.weight_scale[std::size_t(i * G + j / gc)] == sb);
            ok &= double(exact(i, j)) == want;
            const double rounded_want = st == dtype::bf16 ? bf16_to_float(to_bf16_bits(want)) : f16_to_float(to_f16_bits(want));
            ok &= double(stored(i, j)) == rounded_want;
          }
        CHECK(ok);
        const double unit = st == dtype::bf16 ? 0x1p-8 : 0x1p-11;
        CHECK(max_rel_diff(exact, r.weights) <= unit);
        CHECK(max_rel_diff(stored, r.weights) <= 2 * unit + unit * unit);
      }
    }
}

TEST_CASE("gptq_checkpoint: bit stream round trip at every offset", "[io][gptq_checkpoint]") {
  for (int bits = 1; bits <= 8; ++bits)
    for (index count : {index{1}, index{31}, index{32}, index{33}, index{95}, index{97}}) {
      std::vector<std::uint32_t> v;
      for (index k = 0; k < count; ++k) v.push_back(static_cast<std::uint32_t>((k * 37 + 11) % (1 << bits)));
      std::vector<std::int32_t> words(std::size_t((count * bits + 31) / 32), 0);
      detail::pack_bit_stream(count, bits, [&](index k) { return v[std::size_t(k)]; }, words.data(), 1);
      const auto ref = stream_pack(v, bits);
      for (std::size_t w = 0; w < ref.size(); ++w) CHECK(static_cast<std::uint32_t>(words[w]) == ref[w]);
      std::vector<std::uint32_t> back(static_cast<std::size_t>(count));
      detail::unpack_bit_stream(count, bits, words.data(), 1, [&](index k, std::uint32_t x) { back[std::size_t(k)] = x; });
      CHECK(back == v);
    }
}

TEST_CASE("gptq_checkpoint: export rejects what the layouts cannot hold, with a clear message", "[io][gptq_checkpoint]") {
  using T = float;
  const ckpt_case base{40, 264, 4, false, 24, false};
  const auto o = yaqa::test::grid_options(base);
  const auto r = yaqa::test::random_int_grid_result<T>(base, 7);
  auto msg_gptq = [&](const rounded<int_grid<T>>& x, const int_grid_options& oo) {
    return what_of<T>([&] { (void)pack_gptq(x, oo, "model.layers.0.mlp.up_proj"); });
  };
  auto msg_ct = [&](const rounded<int_grid<T>>& x, const int_grid_options& oo) {
    return what_of<T>([&] { (void)pack_compressed_tensors(x, oo, "model.layers.0.mlp.up_proj"); });
  };
  using Catch::Matchers::Contains;
  using Catch::Matchers::Equals;
  {  // 5, 6, 7 bits in the GPTQ layout
    const ckpt_case c{40, 256, 5, false, 0, false};
    const auto r5 = yaqa::test::random_int_grid_result<T>(c, 1);
    CHECK_THAT(msg_gptq(r5, yaqa::test::grid_options(c)), Contains("2, 3, 4 or 8 bits") && Contains("up_proj"));
    CHECK_THAT(msg_ct(r5, yaqa::test::grid_options(c)), Equals("<no exception>"));
  }
  {  // n and m not filling whole words
    const ckpt_case cn{40, 36, 4, false, 0, false}, cm{36, 264, 4, false, 0, false}, c3{64, 264, 3, false, 0, false};
    CHECK_THAT(msg_gptq(yaqa::test::random_int_grid_result<T>(cn, 1), yaqa::test::grid_options(cn)),
               Contains("n = in_features = 36") && Contains("multiple of 8"));
    CHECK_THAT(msg_gptq(yaqa::test::random_int_grid_result<T>(cm, 1), yaqa::test::grid_options(cm)),
               Contains("m = out_features = 36") && Contains("qzeros"));
    CHECK_THAT(msg_gptq(yaqa::test::random_int_grid_result<T>(c3, 1), yaqa::test::grid_options(c3)),
               Contains("multiple of 32"));
  }
  {  // non-integer, out-of-range and (GPTQ) zero zero points; wrong symmetric zero
    auto x = r;
    x.params[3].zero[5] = 2.5f;
    CHECK_THAT(msg_gptq(x, o), Contains("zero point 2.5") && Contains("row 5 of group 3"));
    CHECK_THAT(msg_ct(x, o), Contains("zero point 2.5"));
    x = r;
    x.params[0].zero[1] = 16;
    CHECK_THAT(msg_ct(x, o), Contains("[0, 15]"));
    x = r;
    x.params[1].zero[2] = 0;
    for (index j = 0; j < 264; ++j)
      if (j / 24 == 1) x.weights(2, j) = x.params[1].scale[2] * float(x.codes(2, j));
    CHECK_THAT(msg_gptq(x, o), Contains("zero point 0") && Contains("zero - 1"));
    CHECK_THAT(msg_ct(x, o), Equals("<no exception>"));
    auto os = o;
    os.sym = true;
    CHECK_THAT(msg_ct(r, os), Contains("symmetric grid needs 2^(bits-1) = 8"));
  }
  {  // scales that F16 cannot hold
    auto x = r;
    x.params[0].scale[0] = 1e6f;
    for (index j = 0; j < 24; ++j) x.weights(0, j) = x.params[0].scale[0] * (float(x.codes(0, j)) - x.params[0].zero[0]);
    CHECK_THAT(msg_gptq(x, o), Contains("not a positive F16 number"));
    x.params[0].scale[0] = 1e-9f;
    for (index j = 0; j < 24; ++j) x.weights(0, j) = x.params[0].scale[0] * (float(x.codes(0, j)) - x.params[0].zero[0]);
    CHECK_THAT(msg_ct(x, o), Contains("not a positive F16 number"));
  }
  {  // weights the codes do not reproduce (e.g. an RHT result), group counts, act-order in CT
    auto x = r;
    x.weights(3, 7) += 0.25f;
    CHECK_THAT(msg_gptq(x, o), Contains("do not reproduce") && Contains("(3, 7)") && Contains("incoherence off"));
    CHECK_THAT(what_of<T>([&] { (void)pack_gptq(x, o, "l", false); }), Equals("<no exception>"));
    x = r;
    x.params.pop_back();
    CHECK_THAT(msg_gptq(x, o), Contains("10 parameter groups; expected 11"));
    const ckpt_case ca{40, 264, 4, false, 24, true};
    const auto ra = yaqa::test::random_int_grid_result<T>(ca, 3);
    CHECK_THAT(msg_ct(ra, o), Contains("act-order groups") && Contains("GPTQ layout"));
    CHECK_THAT(msg_gptq(ra, o), Equals("<no exception>"));
    x = ra;
    x.group_index[4] = 11;
    CHECK_THAT(msg_gptq(x, o), Contains("column 4 is in group 11"));
  }
  {  // RHT-rotated layer results and scale types, through the writer
    yaqa::test::temp_dir dir;
    layer_result<int_grid<T>> lr;
    static_cast<rounded<int_grid<T>>&>(lr) = r;
    lr.rotated = true;
    const std::vector<quantized_linear<T>> layers{{"model.layers.0.mlp.up_proj", lr}};
    safetensors_writer w;
    CHECK_THAT(what_of<T>([&] { (void)write_quantized_checkpoint<T>(w, dir / "a.safetensors", layers, o); }),
               Contains("random Hadamard transform") && Contains("up_proj"));
    lr.rotated = false;
    const std::vector<quantized_linear<T>> plain{{"model.layers.0.mlp.up_proj", lr}};
    checkpoint_options bf;
    bf.scale_type = dtype::bf16;
    CHECK_THAT(what_of<T>([&] { (void)write_quantized_checkpoint<T>(w, dir / "a.safetensors", plain, o, bf); }),
               Contains("F16 scales"));
    safetensors_writer w2;
    w2.add("model.layers.0.mlp.up_proj.weight", r.weights);
    CHECK_THAT(what_of<T>([&] { (void)write_quantized_checkpoint<T>(w2, dir / "a.safetensors", plain, o); }),
               Contains("already holds 'model.layers.0.mlp.up_proj.weight'"));
    // A later layer that cannot be exported leaves the writer untouched.
    auto bad = r;
    bad.params[0].zero[0] = 0.5f;
    const std::vector<quantized_linear<T>> two{{"a", r}, {"b", bad}};
    safetensors_writer w3;
    CHECK_THAT(what_of<T>([&] { (void)write_quantized_checkpoint<T>(w3, dir / "a.safetensors", two, o); }),
               Contains("layer 'b'") && Contains("zero point 0.5"));
    CHECK(w3.size() == 0);
    CHECK(dir.entries().empty());
  }
}

TEST_CASE("gptq_checkpoint: write_quantized_checkpoint: tensors, dtypes, shapes, pass-through and JSON", "[io][gptq_checkpoint]") {
  using T = float;
  yaqa::test::temp_dir dir;
  const ckpt_case c{40, 264, 4, false, 24, true};
  const auto o = yaqa::test::grid_options(c);
  const auto r = yaqa::test::random_int_grid_result<T>(c, 11);
  // Input checkpoint: the layer's weight, a norm and an unquantized head.
  const matrix<T> norm = matrix<T>::Ones(264, 1), head = yaqa::test::random_matrix<T>(8, 264, 3);
  safetensors_writer in;
  in.add("model.layers.0.mlp.up_proj.weight", r.weights);
  in.add("model.norm.weight", norm);
  in.add("lm_head.weight", head);
  in.metadata()["format"] = "pt";
  in.write(dir / "in.safetensors");
  const safetensors_file input(dir / "in.safetensors");
  const std::vector<quantized_linear<T>> layers{{"model.layers.0.mlp.up_proj.weight", r}};

  const auto j = write_quantized_checkpoint<T>(input, dir / "gptq.safetensors", layers, o);
  const safetensors_file g(dir / "gptq.safetensors");
  CHECK(g.size() == 6);
  CHECK_FALSE(g.contains("model.layers.0.mlp.up_proj.weight"));
  CHECK(g.at("lm_head.weight").type == dtype::f32);
  const auto& qw = g.at("model.layers.0.mlp.up_proj.qweight");
  CHECK(qw.type == dtype::i32);
  CHECK(std::vector<index>(qw.shape.begin(), qw.shape.end()) == std::vector<index>{33, 40});
  const auto& qz = g.at("model.layers.0.mlp.up_proj.qzeros");
  CHECK(std::vector<index>(qz.shape.begin(), qz.shape.end()) == std::vector<index>{11, 5});
  const auto& sc = g.at("model.layers.0.mlp.up_proj.scales");
  CHECK(sc.type == dtype::f16);
  CHECK(std::vector<index>(sc.shape.begin(), sc.shape.end()) == std::vector<index>{11, 40});
  const auto& gi = g.at("model.layers.0.mlp.up_proj.g_idx");
  CHECK(std::vector<index>(gi.shape.begin(), gi.shape.end()) == std::vector<index>{264});
  const auto L = pack_gptq(r, o);
  CHECK(std::equal(qw.bytes.begin(), qw.bytes.end(), detail::le_bytes(L.qweight).begin()));
  CHECK(j.quantization_config["desc_act"] == true);  // the result has act-order groups
  CHECK(j.quantization_config["bits"] == 4);
  CHECK(j.quantization_config["group_size"] == 24);
  CHECK(j.quantization_config["sym"] == false);
  CHECK(j.quantization_config["checkpoint_format"] == "gptq");
  CHECK(j.quantization_config["quant_method"] == "gptq");
  CHECK(j.quantize_config == j.quantization_config);

  // compressed-tensors needs static groups: an act-order result is refused, a plain one written.
  checkpoint_options ct;
  ct.format = checkpoint_format::compressed_tensors;
  ct.scale_type = dtype::bf16;
  CHECK_THROWS_AS(write_quantized_checkpoint<T>(input, dir / "ct.safetensors", layers, o, ct), invalid_argument);
  auto rs = r;
  rs.group_index.clear();
  for (index jj = 0; jj < 264; ++jj)
    for (index i = 0; i < 40; ++i) {
      const auto& p = rs.params[std::size_t(jj / 24)];
      rs.weights(i, jj) = p.scale[i] * (float(rs.codes(i, jj)) - p.zero[i]);
    }
  const std::vector<quantized_linear<T>> layers2{{"model.layers.0.mlp.up_proj", rs}};
  const auto jc = write_quantized_checkpoint<T>(input, dir / "ct.safetensors", layers2, o, ct);
  const safetensors_file f(dir / "ct.safetensors");
  CHECK(f.size() == 6);
  const auto& wp = f.at("model.layers.0.mlp.up_proj.weight_packed");
  CHECK(std::vector<index>(wp.shape.begin(), wp.shape.end()) == std::vector<index>{40, 33});
  CHECK(f.at("model.layers.0.mlp.up_proj.weight_scale").type == dtype::bf16);
  const auto& zp = f.at("model.layers.0.mlp.up_proj.weight_zero_point");
  CHECK(std::vector<index>(zp.shape.begin(), zp.shape.end()) == std::vector<index>{5, 11});
  const auto& ws = f.at("model.layers.0.mlp.up_proj.weight_shape");
  CHECK(ws.type == dtype::i64);
  const auto wsv = to_vector<double>(ws);
  CHECK((wsv.size() == 2 && wsv[0] == 40 && wsv[1] == 264));
  CHECK(jc.quantize_config.is_null());
  const auto& q = jc.quantization_config;
  CHECK(q["quant_method"] == "compressed-tensors");
  CHECK(q["format"] == "pack-quantized");
  CHECK(q["config_groups"]["group_0"]["weights"]["num_bits"] == 4);
  CHECK(q["config_groups"]["group_0"]["weights"]["strategy"] == "group");
  CHECK(q["config_groups"]["group_0"]["weights"]["group_size"] == 24);
  CHECK(q["config_groups"]["group_0"]["weights"]["symmetric"] == false);
  CHECK(q["config_groups"]["group_0"]["targets"] == nlohmann::json::array({"Linear"}));
  CHECK(q["ignore"] == nlohmann::json::array({"lm_head"}));
  auto oc = o;
  oc.group_size = 0;
  CHECK(quantization_config(oc, ct)["config_groups"]["group_0"]["weights"]["strategy"] == "channel");
  CHECK(quantization_config(oc, ct)["config_groups"]["group_0"]["weights"]["group_size"].is_null());
  CHECK(gptq_quantize_config(oc, false)["group_size"] == -1);
  // desc_act follows the data: a trivial g_idx (static groups) keeps the loaders' plain path.
  const auto js = write_quantized_checkpoint<T>(input, dir / "gptq2.safetensors", layers2, o, checkpoint_options{});
  CHECK(js.quantization_config["desc_act"] == false);
  CHECK(js.quantization_config["static_groups"] == false);
  checkpoint_options ao;
  ao.act_order = true;
  const auto ja = write_quantized_checkpoint<T>(input, dir / "gptq3.safetensors", layers2, o, ao);
  CHECK(ja.quantization_config["desc_act"] == false);
  CHECK(ja.quantization_config["static_groups"] == true);
}

TEST_CASE("gptq_checkpoint: real GPTQ results export: act-order (lazy groups) to GPTQ, static groups to both", "[io][gptq_checkpoint]") {
  using T = float;
  const index m = 64, n = 256;
  const matrix<T> w = yaqa::test::random_matrix<T>(m, n, 5);
  const matrix<T> h = yaqa::test::random_second_moment<T>(n, 512, 6);
  for (bool sym : {false, true}) {
    int_grid_options o;
    o.bits = 4;
    o.sym = sym;
    o.group_size = 64;
    const int_grid<T> q(o);
    gptq_options go;
    go.act_order = true;
    const auto lazy = gptq(q, view(w), view(h), go);
    REQUIRE_FALSE(lazy.group_index.empty());
    const auto L = pack_gptq(lazy, o, "lazy");
    CHECK(unpack_gptq_codes(L) == lazy.codes);
    CHECK(max_rel_diff(dequantize_gptq<T>(L, dequant_precision::exact), lazy.weights) <= 0x1p-11);
    CHECK_THROWS_AS(pack_compressed_tensors(lazy, o, "lazy"), invalid_argument);
    go.static_groups = true;
    const auto st = gptq(q, view(w), view(h), go);
    REQUIRE(st.group_index.empty());
    const auto C = pack_compressed_tensors(st, o, "static");
    CHECK(max_rel_diff(dequantize_compressed_tensors<T>(C, dequant_precision::exact), st.weights) <= 0x1p-11);
    CHECK(max_rel_diff(dequantize_gptq<T>(pack_gptq(st, o), dequant_precision::exact), st.weights) <= 0x1p-11);
  }
}

TEST_CASE("gptq_checkpoint: quantize_layer results export without RHT and are refused with it", "[io][gptq_checkpoint]") {
  using T = float;
  const index m = 48, n = 192;
  const matrix<T> w = yaqa::test::random_matrix<T>(m, n, 21);
  const matrix<T> h_in = yaqa::test::random_second_moment<T>(n, 384, 22);
  const matrix<T> h_out = yaqa::test::random_second_moment<T>(m, 384, 23);
  int_grid_options o;
  o.bits = 4;
  o.group_size = 64;
  const int_grid<T> q(o);
  yaqa::test::temp_dir dir;
  for (method a : {method::rtn, method::gptq, method::ldlq, method::yaqa}) {
    INFO(method_name(a));
    rounding_options ro;
    ro.algorithm = a;
    ro.incoherence = false;
    const auto res = quantize_layer(q, view(w), view(h_in), view(h_out), ro);
    REQUIRE_FALSE(res.rotated);
    const std::vector<quantized_linear<T>> layers{{"model.layers.0.mlp.up_proj", res}};
    for (auto f : {checkpoint_format::gptq, checkpoint_format::compressed_tensors}) {
      checkpoint_options co;
      co.format = f;
      safetensors_writer sw;
      CHECK_NOTHROW(write_quantized_checkpoint<T>(sw, dir / "l.safetensors", layers, o, co));
    }
    CHECK(max_rel_diff(dequantize_gptq<T>(pack_gptq(res, o), dequant_precision::exact), res.weights) <= 0x1p-11);
    ro.incoherence = true;
    const auto rot = quantize_layer(q, view(w), view(h_in), view(h_out), ro);
    REQUIRE(rot.rotated);
    const std::vector<quantized_linear<T>> rl{{"model.layers.0.mlp.up_proj", rot}};
    safetensors_writer sw;
    CHECK_THROWS_WITH(write_quantized_checkpoint<T>(sw, dir / "r.safetensors", rl, o),
                      Catch::Matchers::Contains("random Hadamard transform"));
    // Without the flag (a plain rounded<> copy), the weight check still catches the other basis.
    const rounded<int_grid<T>> plain = rot;
    CHECK_THROWS_WITH(pack_gptq(plain, o), Catch::Matchers::Contains("do not reproduce"));
  }
}

}  // namespace ckpt_test
