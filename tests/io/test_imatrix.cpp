// llama.cpp importance matrices: the GGUF layout (per-expert in_sum2 / counts) and the legacy .dat,
// the normalization llama-quantize applies (in_sum2 / count, 1 for an expert never routed to;
// legacy value / ncall), detection by content, and rejection of malformed files.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <io/gguf_support.hpp>
#include <io/io_support.hpp>
#include <yaqa/io/gguf.hpp>
#include <yaqa/io/imatrix.hpp>

using namespace yaqa;
using yaqa::test::raw_image;
using yaqa::test::temp_dir;
using yaqa::test::thrown_message;
using Catch::Contains;

namespace imatrix_test {

using yaqa::test::raw_bytes;

// A dense weight (n = 5, one count) and an MoE weight (3 experts of n = 4, expert 1 unused).
const std::vector<float> dense_sums{1.0f, 4.0f, 0.5f, 9.0f, 2.25f};
const std::vector<float> moe_sums{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
const std::vector<float> moe_counts{10.0f, 0.0f, 4.0f};

gguf_writer imatrix_writer() {
  gguf_writer w;
  w.set("general.type", "imatrix");
  w.set("imatrix.datasets", gguf_value::array_of(std::vector<std::string>{"wiki.train.raw", "code.txt"}));
  w.set("imatrix.chunk_count", gguf_value(std::uint32_t{100}));
  w.set("imatrix.chunk_size", gguf_value(std::uint32_t{512}));
  w.add("blk.0.attn_q.weight.in_sum2", ggml_type::f32, {1, 5}, raw_bytes(dense_sums));
  w.add("blk.0.attn_q.weight.counts", ggml_type::f32, {1, 1}, raw_bytes(std::vector<float>{8.0f}));
  w.add("blk.0.attn_q.weight.in_sum", ggml_type::f32, {1, 5}, raw_bytes(dense_sums));  // ignored
  w.add("blk.1.ffn_up_exps.weight.in_sum2", ggml_type::f32, {3, 4}, raw_bytes(moe_sums));
  w.add("blk.1.ffn_up_exps.weight.counts", ggml_type::f32, {3, 1}, raw_bytes(moe_counts));
  w.add("blk.1.ffn_up_exps.weight.stats", ggml_type::f32, {11}, raw_bytes(std::vector<float>(11, 0.0f)));  // ignored
  return w;
}

// One legacy entry: name, ncall, values.
std::string legacy_entry(const std::string& name, std::int32_t ncall, const std::vector<float>& v) {
  raw_image r;
  r.i32(std::int32_t(name.size())).bytes(name).i32(ncall).i32(std::int32_t(v.size()));
  for (float x : v) r.f32(x);
  return r.s;
}

// What llama-imatrix --output-format dat writes for the same data: (sum / count) * ncall per value,
// experts flattened, 1 * ncall for an expert with no count; ncall = ceil(max count / chunk size).
std::string legacy_file(bool trailer) {
  const std::int32_t chunk = 4;
  const std::int32_t dense_ncall = (8 + chunk - 1) / chunk, moe_ncall = (10 + chunk - 1) / chunk;
  std::vector<float> d, m;
  for (float s : dense_sums) d.push_back(s / 8.0f * float(dense_ncall));
  for (std::size_t i = 0; i < moe_sums.size(); ++i) {
    const float c = moe_counts[i / 4];
    m.push_back(c == 0 ? float(moe_ncall) : moe_sums[i] / c * float(moe_ncall));
  }
  std::string img = raw_image{}.i32(2).s + legacy_entry("blk.1.ffn_up_exps.weight", moe_ncall, m) +
                    legacy_entry("blk.0.attn_q.weight", dense_ncall, d);
  if (trailer) img += raw_image{}.i32(100).i32(14).bytes("wiki.train.raw").s;
  return img;
}

imatrix parse(const std::string& img, const char* name = "t.imatrix") {
  return parse_imatrix(std::as_bytes(std::span(img.data(), img.size())), name);
}

}  // namespace imatrix_test

using namespace imatrix_test;

TEST_CASE("GGUF imatrix: per-expert diagonals are in_sum2 / count, 1 for an unused expert", "[io][imatrix]") {
  temp_dir dir;
  const auto path = dir / "imatrix.gguf";
  imatrix_writer().write(path);
  yaqa::test::export_fuzz_seed("gguf", "imatrix_gguf", yaqa::test::read_file(path));
  const imatrix m = read_imatrix(path);
  CHECK(m.format == imatrix_format::gguf);
  CHECK(m.source == path.string());
  CHECK(m.datasets == std::vector<std::string>{"wiki.train.raw", "code.txt"});
  CHECK(m.chunk_count == 100);
  CHECK(m.chunk_size == 512);
  REQUIRE(m.entries.size() == 2);  // in_sum and stats tensors are not entries
  const auto& d = m.at("blk.0.attn_q.weight");
  CHECK(d.n == 5);
  REQUIRE(d.experts() == 1);
  CHECK(d.counts == std::vector<double>{8.0});
  for (int i = 0; i < 5; ++i) CHECK(d.diagonals[0](i) == double(dense_sums[std::size_t(i)]) / 8.0);
  const auto& e = m.at("blk.1.ffn_up_exps.weight");
  CHECK(e.n == 4);
  REQUIRE(e.experts() == 3);
  CHECK(e.counts == std::vector<double>{10.0, 0.0, 4.0});
  CHECK(e.diagonals[0](3) == 4.0 / 10.0);
  CHECK(e.diagonals[1] == vector<double>::Ones(4));
  CHECK(e.diagonals[2](0) == 9.0 / 4.0);
  CHECK(e.diagonals[2](3) == 12.0 / 4.0);
  CHECK(m.find("blk.2.attn_q.weight") == nullptr);
  CHECK_THAT(thrown_message<format_error>([&] { (void)m.at("output.weight"); }),
             Contains("has no entry for 'output.weight'") && Contains(path.string()));
}

TEST_CASE("legacy .dat imatrix: value / ncall, optional trailer, same result as the GGUF layout", "[io][imatrix]") {
  temp_dir dir;
  for (bool trailer : {true, false}) {
    INFO("trailer " << trailer);
    const auto path = dir / "imatrix.gguf";  // the name does not matter: detection is by content
    yaqa::test::write_file(path, legacy_file(trailer));
    yaqa::test::export_fuzz_seed("gguf", trailer ? "imatrix_legacy" : "imatrix_legacy_no_trailer",
                                 legacy_file(trailer));
    const imatrix m = read_imatrix(path);
    CHECK(m.format == imatrix_format::legacy);
    CHECK(m.chunk_size == 0);
    CHECK(m.chunk_count == (trailer ? 100u : 0u));
    CHECK(m.datasets == (trailer ? std::vector<std::string>{"wiki.train.raw"} : std::vector<std::string>{}));
    REQUIRE(m.entries.size() == 2);
    CHECK(m.entries[0].name == "blk.0.attn_q.weight");  // sorted
    const auto& d = m.at("blk.0.attn_q.weight");
    CHECK(d.counts == std::vector<double>{2.0});
    REQUIRE(d.experts() == 1);
    // The legacy layout cannot tell experts apart: one row of experts * n values.
    const auto& e = m.at("blk.1.ffn_up_exps.weight");
    CHECK(e.n == 12);
    REQUIRE(e.experts() == 1);
    // Same numbers as the GGUF file up to float rounding of (sum / count) * ncall.
    const imatrix g = parse(std::string([] {
      const auto b = imatrix_writer().to_bytes();
      return std::string(reinterpret_cast<const char*>(b.data()), b.size());
    }()));
    for (int i = 0; i < 5; ++i)
      CHECK(d.diagonals[0](i) == Approx(g.at(d.name).diagonals[0](i)).epsilon(1e-6));
    for (int x = 0; x < 3; ++x)
      for (int i = 0; i < 4; ++i)
        CHECK(e.diagonals[0](4 * x + i) == Approx(g.at(e.name).diagonals[std::size_t(x)](i)).epsilon(1e-6));
  }
  // ncall = 0: the stored values are taken as they are (llama-quantize divides only when ncall > 0).
  const imatrix z = parse(raw_image{}.i32(1).s + legacy_entry("w", 0, {3.0f, 0.5f}));
  CHECK(z.at("w").diagonals[0](0) == 3.0);
  CHECK(z.at("w").counts == std::vector<double>{0.0});
}

TEST_CASE("malformed imatrix files are rejected with messages naming the file and the rule", "[io][imatrix][corrupt]") {
  const std::string one = legacy_entry("w", 1, {1.0f});
  const float inf = std::numeric_limits<float>::infinity();
  struct bad_case {
    const char* what;
    std::string image;
    std::vector<std::string> expect;
  };
  std::vector<bad_case> cases = {
      {"empty", "", {"truncated: the entry count needs 4 bytes at offset 0"}},
      {"zero entries", raw_image{}.i32(0).s, {"entry count is 0; expected at least 1"}},
      {"huge entry count", raw_image{}.i32(1 << 30).s + one, {"entry count 1073741824 cannot fit"}},
      {"negative name length",
       raw_image{}.i32(1).i32(-5).s + std::string(20, 'x'),
       {"entry 0: name length -5 is not in [1,"}},
      {"name past the end", raw_image{}.i32(1).i32(1000).s + std::string(20, 'x'), {"entry 0: name length 1000"}},
      {"negative ncall", raw_image{}.i32(1).s + legacy_entry("w", -1, {1.0f}), {"entry 'w': ncall is -1"}},
      {"no values",
       raw_image{}.i32(1).s + legacy_entry("w", 1, {}) + std::string(8, '\0'),
       {"entry 'w': value count 0 is not in [1, 2]"}},
      {"values past the end",
       (raw_image{}.i32(1).s + legacy_entry("w", 1, {1, 2, 3})).substr(0, 25),
       {"entry 'w': value count 3 is not in [1, 2]"}},
      {"non-finite value",
       raw_image{}.i32(1).s + legacy_entry("w", 1, {1.0f, inf}),
       {"entry 'w' holds a non-finite value (inf at 1)"}},
      {"duplicate entry", raw_image{}.i32(2).s + one + one, {"entry 'w' appears twice"}},
      {"truncated trailer", raw_image{}.i32(1).s + one + "ab", {"truncated: the trailing chunk count needs 4 bytes"}},
      {"trailer length wrong",
       raw_image{}.i32(1).s + one + raw_image{}.i32(3).i32(10).bytes("abc").s,
       {"trailing dataset name length is 10 but 3 bytes remain"}},
      {"trailing garbage",
       raw_image{}.i32(1).s + one + raw_image{}.i32(3).i32(1).bytes("abc").s,
       {"trailing dataset name length is 1 but 3 bytes remain"}},
  };
  // GGUF-layout violations.
  auto gguf = [](auto&& edit) {
    gguf_writer w;
    w.set("general.type", "imatrix");
    w.set("imatrix.datasets", gguf_value::array_of(std::vector<std::string>{"d"}));
    w.set("imatrix.chunk_count", gguf_value(std::uint32_t{1}));
    w.set("imatrix.chunk_size", gguf_value(std::uint32_t{512}));
    edit(w);
    const auto b = w.to_bytes();
    return std::string(reinterpret_cast<const char*>(b.data()), b.size());
  };
  const auto f4 = raw_bytes(std::vector<float>{1, 2, 3, 4});
  const auto c1 = raw_bytes(std::vector<float>{2});
  cases.push_back({"model file", gguf([&](gguf_writer& w) { w.set("general.type", "model"); }),
                   {"general.type is 'model'; expected 'imatrix'"}});
  cases.push_back({"missing chunk_size", gguf([&](gguf_writer& w) { w.erase("imatrix.chunk_size"); }),
                   {"missing or mistyped imatrix metadata", "has no key 'imatrix.chunk_size'"}});
  cases.push_back(
      {"datasets not strings",
       gguf([&](gguf_writer& w) { w.set("imatrix.datasets", gguf_value::array_of(std::vector<std::int32_t>{1})); }),
       {"missing or mistyped imatrix metadata", "array of i32 (1 elements); expected array of string"}});
  cases.push_back({"no tensors", gguf([](gguf_writer&) {}), {"no '<weight>.in_sum2' / '<weight>.counts' tensors"}});
  cases.push_back({"sums without counts", gguf([&](gguf_writer& w) { w.add("w.in_sum2", ggml_type::f32, {4}, f4); }),
                   {"weight 'w' has '.in_sum2' but no '.counts' tensor"}});
  cases.push_back({"counts without sums", gguf([&](gguf_writer& w) { w.add("w.counts", ggml_type::f32, {1}, c1); }),
                   {"weight 'w' has '.counts' but no '.in_sum2' tensor"}});
  cases.push_back({"F16 sums", gguf([&](gguf_writer& w) {
                     w.add("w.in_sum2", ggml_type::f16, {4}, std::vector<std::byte>(8));
                     w.add("w.counts", ggml_type::f32, {1}, c1);
                   }),
                   {"tensor 'w.in_sum2' is F16; expected F32"}});
  cases.push_back({"3-D sums", gguf([&](gguf_writer& w) {
                     w.add("w.in_sum2", ggml_type::f32, {1, 1, 4}, f4);
                     w.add("w.counts", ggml_type::f32, {1}, c1);
                   }),
                   {"tensor 'w.in_sum2' has ne [4, 1, 1]; expected [n] or [n, experts]"}});
  cases.push_back({"count per expert", gguf([&](gguf_writer& w) {
                     w.add("w.in_sum2", ggml_type::f32, {2, 2}, f4);
                     w.add("w.counts", ggml_type::f32, {1}, c1);
                   }),
                   {"tensor 'w.counts' has 1 elements (ne [1]); expected one count per expert of 'w.in_sum2' (2)"}});
  cases.push_back({"negative count", gguf([&](gguf_writer& w) {
                     w.add("w.in_sum2", ggml_type::f32, {4}, f4);
                     w.add("w.counts", ggml_type::f32, {1}, raw_bytes(std::vector<float>{-1}));
                   }),
                   {"tensor 'w.counts' has a negative count (-1 for expert 0)"}});
  cases.push_back({"NaN sum", gguf([&](gguf_writer& w) {
                     w.add("w.in_sum2", ggml_type::f32, {2}, raw_bytes(std::vector<float>{1, std::nanf("")}));
                     w.add("w.counts", ggml_type::f32, {1}, c1);
                   }),
                   {"tensor 'w.in_sum2' holds a non-finite value (nan at 1)"}});
  cases.push_back({"broken GGUF",
                   std::string("GGUF\x07\0\0\0", 8),
                   {"yaqa::gguf_file: 'bad.imatrix': unsupported GGUF version 7"}});
  for (const auto& c : cases) {
    INFO(c.what);
    const auto msg = thrown_message<format_error>([&] { (void)parse(c.image, "bad.imatrix"); });
    INFO(msg);
    CHECK_THAT(msg, Contains("'bad.imatrix': "));
    for (const auto& s : c.expect) CHECK_THAT(msg, Contains(s));
    yaqa::test::export_fuzz_seed("gguf", std::string("imatrix ") + c.what, c.image);
  }
  // Cut anywhere before its end, a legacy file is rejected (the trailer is all or nothing).
  const std::string full = legacy_file(true);
  const std::size_t body = legacy_file(false).size();
  for (std::size_t cut = 0; cut < full.size(); ++cut) {
    INFO("cut " << cut);
    if (cut == body) CHECK_NOTHROW(parse(full.substr(0, cut)));
    else CHECK_THROWS_AS(parse(full.substr(0, cut)), format_error);
  }
  temp_dir dir;
  CHECK_THAT(thrown_message<io_error>([&] { (void)read_imatrix(dir / "missing.dat"); }), Contains("No such file"));
}
