// GGUF: round trips of every KV type and of F32/F16/BF16/Q8_0 tensors at odd shapes, the exact
// layout written (alignment, padding, offsets), byte-for-byte pass-through, typed getters, the
// ggml type table, and strict rejection of malformed files (one message fragment per rule).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <io/gguf_support.hpp>
#include <io/io_support.hpp>
#include <support/generators.hpp>
#include <yaqa/io/gguf.hpp>

using namespace yaqa;
using yaqa::test::temp_dir;
using yaqa::test::thrown_message;
using Catch::Contains;

namespace gguf_test {

using yaqa::test::raw_bytes;

struct sample_tensor {
  std::string name;
  ggml_type type;
  std::vector<yaqa::index> shape;  // row-major
  std::vector<std::byte> bytes;
};

// Odd shapes; the odd byte sizes make every later tensor need padding.
std::vector<sample_tensor> sample_tensors() {
  std::vector<sample_tensor> s;
  const auto f32 = yaqa::test::wavy(15);
  s.push_back({"blk.0.f32", ggml_type::f32, {3, 5}, raw_bytes(f32)});
  std::vector<std::uint16_t> h;
  for (float x : yaqa::test::wavy(7)) h.push_back(to_f16_bits(x));
  s.push_back({"blk.0.f16", ggml_type::f16, {7}, raw_bytes(h)});
  std::vector<std::uint16_t> bf;
  for (float x : yaqa::test::wavy(30, 1e20f)) bf.push_back(to_bf16_bits(x));
  s.push_back({"blk.0.bf16", ggml_type::bf16, {2, 3, 5}, raw_bytes(bf)});
  s.push_back({"blk.0.q8_0", ggml_type::q8_0, {3, 64}, yaqa::test::q8_0_encode(yaqa::test::wavy(192))});
  s.push_back({"blk.0.i8", ggml_type::i8, {1, 1, 1, 3}, raw_bytes(std::vector<std::int8_t>{-128, 0, 127})});
  s.push_back({"empty", ggml_type::f32, {0, 4}, {}});
  s.push_back({"scalar", ggml_type::i32, {}, raw_bytes(std::vector<std::int32_t>{-42})});
  return s;
}

gguf_writer sample_writer(const std::vector<sample_tensor>& tensors) {
  gguf_writer w;
  for (auto& [k, v] : yaqa::test::every_kv_type()) w.set(k, v);
  for (const auto& t : tensors) w.add(t.name, t.type, t.shape, t.bytes);
  return w;
}

void check_matches(const gguf_file& f, const std::vector<sample_tensor>& tensors, std::uint32_t alignment) {
  const auto kv = yaqa::test::every_kv_type();
  std::vector<std::string> keys;
  for (const auto& [k, v] : kv) keys.push_back(k);
  if (alignment != 32) keys.push_back("general.alignment");
  CHECK(f.keys() == keys);
  for (const auto& [k, v] : kv) {
    INFO(k);
    REQUIRE(f.contains_key(k));
    CHECK(f.value(k).type() == v.type());
    CHECK(f.value(k) == v);
  }
  CHECK(f.version() == 3);
  CHECK(f.alignment() == alignment);
  CHECK(f.data_offset() % alignment == 0);
  REQUIRE(f.size() == tensors.size());
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& want = tensors[i];
    const auto& t = f.tensors()[i];
    INFO(want.name);
    CHECK(t.name == want.name);
    CHECK(t.type == want.type);
    CHECK(t.shape == want.shape);
    CHECK(std::vector<yaqa::index>(t.ne.rbegin(), t.ne.rend()) == want.shape);
    CHECK(t.offset % alignment == 0);
    REQUIRE(t.bytes.size() == want.bytes.size());
    CHECK(std::equal(t.bytes.begin(), t.bytes.end(), want.bytes.begin()));
    CHECK(&f.at(want.name) == &t);
  }
}

}  // namespace gguf_test

using namespace gguf_test;

TEST_CASE("GGUF round-trips every KV type and F32/F16/BF16/Q8_0 tensors at odd shapes", "[io][gguf]") {
  temp_dir dir;
  const auto tensors = sample_tensors();
  const auto w = sample_writer(tensors);
  const auto path = dir / "all.gguf";
  w.write(path);
  CHECK(dir.entries() == std::vector<std::string>{"all.gguf"});
  const std::string img = yaqa::test::read_file(path);
  const auto mem = w.to_bytes();
  CHECK(img == std::string(reinterpret_cast<const char*>(mem.data()), mem.size()));
  yaqa::test::export_fuzz_seed("gguf", "valid_every_kv_type", img);
  CHECK(img.substr(0, 4) == "GGUF");
  CHECK(img.substr(4, 4) == std::string("\x03\0\0\0", 4));

  for (bool mm : {true, false}) {
    gguf_read_options opt;
    opt.memory_map = mm;
    const gguf_file f(path, opt);
    CHECK(f.is_memory_mapped() == mm);
    CHECK(f.path() == path.string());
    check_matches(f, tensors, 32);
    // Layout: tensors packed in insertion order, each padded to 32 bytes; the file ends padded.
    std::uint64_t off = 0;
    for (const auto& t : f.tensors()) {
      CHECK(t.offset == off);
      off += (t.bytes.size() + 31) / 32 * 32;
    }
    CHECK(f.file_size() == f.data_offset() + off);
  }
  const auto f = gguf_file::from_bytes(std::vector<std::byte>(mem), "in-memory");
  check_matches(f, tensors, 32);

  // Values: F32 exactly, F16/BF16 as their decoded bits; Q8_0 has no tensor_view.
  const auto v32 = to_matrix<double>(f.view("blk.0.f32"));  // [3, 5]
  const auto x = yaqa::test::wavy(15);
  REQUIRE(v32.rows() == 3);
  REQUIRE(v32.cols() == 5);
  CHECK(v32(2, 1) == double(x[11]));
  CHECK(to_vector<float>(f.view("blk.0.f16"))(6) == f16_to_float(to_f16_bits(yaqa::test::wavy(7)[6])));
  CHECK(to_vector<float>(f.view("blk.0.bf16"))(29) == bf16_to_float(to_bf16_bits(yaqa::test::wavy(30, 1e20f)[29])));
  CHECK(f.view("blk.0.bf16").shape.size() == 3);
  CHECK(to_vector<double>(f.view("scalar"))(0) == -42.0);
  CHECK_THAT(thrown_message<format_error>([&] { (void)f.view("blk.0.q8_0"); }),
             Contains("tensor 'blk.0.q8_0' in 'in-memory' is Q8_0, a block-quantized type"));
  const auto& q = f.at("blk.0.q8_0");
  CHECK(q.ne == std::vector<yaqa::index>{64, 3});
  const auto back = yaqa::test::q8_0_decode({q.bytes.begin(), q.bytes.end()});
  const auto orig = yaqa::test::wavy(192);
  for (std::size_t i = 0; i < orig.size(); ++i) CHECK(std::fabs(back[i] - orig[i]) <= 0.6f * 7.0f / 127);
}

TEST_CASE("GGUF alignments other than 32: layout and round trip", "[io][gguf]") {
  const auto tensors = sample_tensors();
  for (std::uint32_t al : {1u, 8u, 64u, 4096u}) {
    INFO("alignment " << al);
    auto w = sample_writer(tensors);
    w.set_alignment(al);
    const auto img = w.to_bytes();
    const auto f = gguf_file::from_bytes(std::vector<std::byte>(img));
    check_matches(f, tensors, al);
    CHECK(f.value("general.alignment") == gguf_value(al));
    CHECK(f.file_size() % al == 0);
    if (al == 1) CHECK(f.at("blk.0.f16").offset == 60);  // 15 floats, then immediately the F16 data
    if (al == 64) CHECK(f.at("blk.0.f16").offset == 64);
    std::string s(reinterpret_cast<const char*>(img.data()), img.size());
    if (al == 64) yaqa::test::export_fuzz_seed("gguf", "valid_alignment_64", s);
  }
}

TEST_CASE("GGUF pass-through: copy_from reproduces a file byte for byte", "[io][gguf]") {
  temp_dir dir;
  const auto src = dir / "src.gguf";
  auto w0 = sample_writer(sample_tensors());
  w0.set_alignment(16);
  w0.write(src);
  const gguf_file in(src);
  gguf_writer w;
  w.copy_from(in);
  w.forbid_path(src);
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.write(src); }), Contains("refusing to write"));
  const auto dst = dir / "dst.gguf";
  w.write(dst);
  CHECK(yaqa::test::read_file(dst) == yaqa::test::read_file(src));
  // Metadata only, then one tensor replaced: the KVs keep their order, the tensor its place.
  gguf_writer m;
  m.copy_from(in, false);
  CHECK(m.size() == 0);
  CHECK(m.metadata().size() == in.metadata().size());
  m.set("test.u8", gguf_value(std::uint8_t{7}));
  CHECK(m.metadata()[1].first == "test.u8");
  CHECK(m.erase("test.i8"));
  CHECK_FALSE(m.erase("test.i8"));
}

TEST_CASE("GGUF typed getters name the file, the key and both types", "[io][gguf]") {
  auto w = sample_writer({});
  const auto f = gguf_file::from_bytes(w.to_bytes(), "meta.gguf");
  CHECK(f.get<std::uint32_t>("test.u32") == 4294967295u);
  CHECK(f.get<std::string>("general.architecture") == "llama");
  CHECK(f.value("test.arr_string").as_vector<std::string>() == std::vector<std::string>{"a", "", "\xce\xbb"});
  CHECK(f.value("test.i16").as_int64() == -32768);
  CHECK(f.value("test.u64").type() == gguf_value_type::u64);
  CHECK(f.value("test.arr_nested").as_array().values[2].as_vector<std::int32_t>() == std::vector<std::int32_t>{3});
  CHECK_THAT(thrown_message<format_error>([&] { (void)f.get<std::uint32_t>("general.architecture"); }),
             Contains("'meta.gguf'") && Contains("key 'general.architecture' is string; expected u32"));
  CHECK_THAT(thrown_message<format_error>([&] { (void)f.value("nope"); }), Contains("'meta.gguf' has no key 'nope'"));
  CHECK_THAT(thrown_message<format_error>([&] { (void)f.value("test.arr_f32").as_vector<double>(); }),
             Contains("array of f32 (3 elements); expected array of f64"));
  CHECK_THAT(thrown_message<format_error>([&] { (void)f.value("test.u64").as_int64(); }), Contains("does not fit"));
  CHECK_THAT(thrown_message<format_error>([&] { (void)f.value("test.f32").as_int64(); }),
             Contains("value is f32; expected an integer"));
  CHECK_THAT(thrown_message<format_error>([&] { (void)f.at("w"); }), Contains("has no tensor 'w'"));
  CHECK(f.find("w") == nullptr);
  CHECK_THAT(thrown_message<invalid_argument>([] { gguf_value(gguf_value_type::u8, {gguf_value(1.0f)}); }),
             Contains("array element 0 is f32; expected u8"));
}

TEST_CASE("the ggml type table: ids, block sizes and bytes per block", "[io][gguf]") {
  struct row {
    std::uint32_t id;
    const char* name;
    yaqa::index block, bytes;
  };
  // Independent list (ggml.h ids; ggml-common.h block structs with QK_K = 256).
  const std::vector<row> rows = {
      {0, "F32", 1, 4},        {1, "F16", 1, 2},        {2, "Q4_0", 32, 2 + 16},       {3, "Q4_1", 32, 4 + 16},
      {6, "Q5_0", 32, 2 + 4 + 16}, {7, "Q5_1", 32, 4 + 4 + 16}, {8, "Q8_0", 32, 2 + 32}, {9, "Q8_1", 32, 4 + 32},
      {10, "Q2_K", 256, 16 + 64 + 4}, {11, "Q3_K", 256, 32 + 64 + 12 + 2}, {12, "Q4_K", 256, 4 + 12 + 128},
      {13, "Q5_K", 256, 4 + 12 + 32 + 128}, {14, "Q6_K", 256, 128 + 64 + 16 + 2}, {15, "Q8_K", 256, 4 + 256 + 32},
      {20, "IQ4_NL", 32, 18},  {24, "I8", 1, 1},        {25, "I16", 1, 2},             {26, "I32", 1, 4},
      {27, "I64", 1, 8},       {28, "F64", 1, 8},       {30, "BF16", 1, 2},
  };
  for (const auto& r : rows) {
    INFO(r.name);
    const auto* t = ggml_type_info(r.id);
    REQUIRE(t != nullptr);
    CHECK(t->name == r.name);
    CHECK(t->block_size == r.block);
    CHECK(t->type_size == r.bytes);
  }
  for (std::uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 42u, 1000u})
    CHECK(ggml_type_info(removed) == nullptr);
  CHECK(ggml_type_of(dtype::bf16) == ggml_type::bf16);
  CHECK_FALSE(ggml_type_of(dtype::u8).has_value());
  std::ostringstream os;
  os << ggml_type::q4_k << ' ' << ggml_type(99);
  CHECK(os.str() == "Q4_K ggml type 99");
}

TEST_CASE("malformed GGUF files are rejected with messages naming the file and the rule", "[io][gguf][corrupt]") {
  using yaqa::test::gguf_image;
  using yaqa::test::kv_string;
  using yaqa::test::kv_u32;
  using yaqa::test::raw_image;
  using yaqa::test::tensor_info;
  const std::string arch = kv_string("general.architecture", "llama");
  const std::string w32 = tensor_info("w", {8}, 0, 0);  // 8 F32 = 32 bytes
  const std::string data32(32, '\0');
  auto with_header = [](std::uint32_t version, std::uint64_t nt, std::uint64_t nkv) {
    return raw_image{}.bytes("GGUF").u32(version).u64(nt).u64(nkv).s;
  };
  struct bad_case {
    const char* what;
    std::string image;
    std::vector<std::string> expect;
  };
  std::string deep = raw_image{}.str("deep").u32(9).s;
  for (int i = 0; i < 9; ++i) deep += raw_image{}.u32(9).u64(1).s;
  deep += raw_image{}.u32(0).u64(0).s;
  const std::vector<bad_case> cases = {
      {"empty file", "", {"file is 0 bytes", "too short"}},
      {"bad magic", "GGUG" + std::string(20, '\0'), {"bad magic 'GGUG'", "expected 'GGUF'"}},
      {"binary magic", std::string("\x01\x02GU", 4) + std::string(20, '\0'), {"bad magic '\\x01\\x02GU'"}},
      {"version 1", with_header(1, 0, 0), {"version 1 is not supported"}},
      {"version 4", with_header(4, 0, 0), {"unsupported GGUF version 4; expected 2 or 3"}},
      {"big-endian", with_header(0x03000000u, 0, 0), {"big-endian"}},
      {"truncated version", "GGUF\x03", {"truncated: the version needs 4 bytes at offset 4 but only 1 remain"}},
      {"truncated counts", with_header(3, 0, 0).substr(0, 20), {"truncated: the KV count needs 8 bytes"}},
      {"huge KV count", with_header(3, 0, ~0ull), {"KV count 18446744073709551615 cannot fit"}},
      {"huge tensor count",
       with_header(3, 1ull << 40, 0) + std::string(64, '\0'),
       {"tensor count 1099511627776 cannot fit"}},
      {"huge key length",
       with_header(3, 0, 1) + raw_image{}.u64(1ull << 62).s + std::string(16, 'k'),
       {"truncated: KV 0: key (string of length 4611686018427387904) needs"}},
      {"empty key", gguf_image(1, kv_u32("", 1), 0, "", ""), {"KV 0: empty key"}},
      {"unknown value type",
       gguf_image(1, raw_image{}.str("k").u32(13).u32(0).s, 0, "", ""),
       {"key 'k': unknown value type 13; expected 0..12"}},
      {"unknown array element type",
       gguf_image(1, raw_image{}.str("k").u32(9).u32(77).u64(0).s, 0, "", ""),
       {"key 'k': unknown array element type 77"}},
      {"huge array",
       gguf_image(1, raw_image{}.str("k").u32(9).u32(4).u64(1ull << 61).s, 0, "", ""),
       {"key 'k': array of 2305843009213693952 u32 elements needs at least 4 bytes each"}},
      {"huge string array",
       gguf_image(1, raw_image{}.str("k").u32(9).u32(8).u64(1000).s, 0, "", ""),
       {"array of 1000 string elements needs at least 8 bytes each"}},
      {"string past the end",
       gguf_image(1, raw_image{}.str("k").u32(8).u64(100).s, 0, "", ""),
       {"truncated: key 'k': string value (string of length 100)"}},
      {"bool 2",
       gguf_image(1, raw_image{}.str("b").u32(7).u8(2).s, 0, "", ""),
       {"key 'b': bool value is byte 2", "expected 0 or 1"}},
      {"duplicate key", gguf_image(2, arch + arch, 0, "", ""), {"key 'general.architecture' appears twice"}},
      {"nested too deep",
       gguf_image(1, deep, 0, "", ""),
       {"key 'deep': arrays nested deeper than 8 levels", "max_array_depth"}},
      {"alignment 0",
       gguf_image(1, kv_u32("general.alignment", 0), 0, "", ""),
       {"key 'general.alignment' is 0; expected a non-zero power of two"}},
      {"alignment 48",
       gguf_image(1, kv_u32("general.alignment", 48), 1, w32, data32),
       {"key 'general.alignment' is 48; expected a non-zero power of two"}},
      {"alignment as i32",
       gguf_image(1, raw_image{}.str("general.alignment").u32(5).u32(32).s, 0, "", ""),
       {"key 'general.alignment' is i32; expected u32"}},
      {"duplicate tensor",
       gguf_image(1, arch, 2, w32 + tensor_info("w", {8}, 0, 32), data32 + data32),
       {"tensor 'w' appears twice; expected unique tensor names"}},
      {"n_dims 5",
       gguf_image(0, "", 1, tensor_info("w", {1, 1, 1, 1, 8}, 0, 0), data32),
       {"tensor 'w': n_dims 5 exceeds 4"}},
      {"negative dimension",
       gguf_image(0, "", 1, tensor_info("w", {~0ull}, 0, 0), data32),
       {"tensor 'w': dimension 0 is 18446744073709551615 (negative as int64)"}},
      {"element count overflow",
       gguf_image(0, "", 1, tensor_info("w", {1ull << 40, 1ull << 40}, 0, 0), data32),
       {"tensor 'w' of type F32", "too many elements"}},
      {"removed type 4",
       gguf_image(0, "", 1, tensor_info("w", {32}, 4, 0), data32),
       {"tensor 'w': unknown ggml type id 4"}},
      {"unknown type 99",
       gguf_image(0, "", 1, tensor_info("w", {8}, 99, 0), data32),
       {"tensor 'w': unknown ggml type id 99"}},
      {"row not whole blocks",
       gguf_image(0, "", 1, tensor_info("w", {33, 2}, 8, 0), std::string(256, '\0')),
       {"tensor 'w' of type Q8_0", "innermost dimension 33, not a multiple of the Q8_0 block size 32"}},
      {"misaligned offset",
       gguf_image(0, "", 1, tensor_info("w", {1}, 0, 4), data32),
       {"tensor 'w': offset 4 is not a multiple of the alignment 32"}},
      {"out of range",
       gguf_image(0, "", 1, tensor_info("w", {9}, 0, 0), data32),
       {"tensor 'w': bytes [0, 0 + 36) run past the end of the data section (32 bytes)"}},
      {"offset far out of range",
       gguf_image(0, "", 1, tensor_info("w", {1}, 0, 1ull << 63), data32),
       {"tensor 'w': bytes [9223372036854775808, ", "run past the end"}},
      {"overlapping",
       gguf_image(0, "", 2, tensor_info("a", {16}, 0, 0) + tensor_info("b", {8}, 0, 32), data32 + data32),
       {"tensors 'a' [0, 64) and 'b' [32, 64) overlap"}},
      {"no data section",
       gguf_image(0, "", 1, w32, "").substr(0, 24 + w32.size()),
       {"truncated: the data section starts at offset 64"}},
      {"name too long",
       gguf_image(0, "", 1, tensor_info(std::string(64, 'n'), {8}, 0, 0), data32),
       {"name is 64 bytes; ggml allows at most 63"}},
      {"truncated tensor info",
       gguf_image(0, "", 2, w32 + tensor_info("v", {8}, 0, 32).substr(0, 20), "", 1),
       {"truncated: tensor 'v': dimension 0 needs 8 bytes"}},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(c.image.data()),
                                       reinterpret_cast<const std::byte*>(c.image.data() + c.image.size()));
    const auto msg = thrown_message<format_error>([&] { (void)gguf_file::from_bytes(bytes, "bad.gguf"); });
    INFO(msg);
    CHECK_THAT(msg, Contains("yaqa::gguf_file: 'bad.gguf': "));
    for (const auto& s : c.expect) CHECK_THAT(msg, Contains(s));
    CHECK(msg.size() < 600);
    yaqa::test::export_fuzz_seed("gguf", c.what, c.image);
  }
  // Well-formed variations are accepted: version 2, a tensor-less file ending before the padding,
  // zero-byte tensors anywhere, a 0-d tensor, gaps between tensors.
  const std::string v2 = with_header(2, 0, 0);
  CHECK(gguf_file::from_bytes(raw_bytes(std::vector<char>(v2.begin(), v2.end()))).version() == 2);
  const std::string ok = gguf_image(0, "", 3, tensor_info("z", {0, 5}, 8, 64) + tensor_info("s", {}, 0, 64) +
                                                  tensor_info("w", {8}, 0, 0),
                                    std::string(96, '\0'));
  const auto f = gguf_file::from_bytes(raw_bytes(std::vector<char>(ok.begin(), ok.end())));
  CHECK(f.at("z").bytes.empty());
  CHECK(f.at("s").numel() == 1);
  CHECK(f.at("s").shape.empty());
}

TEST_CASE("a GGUF file cut anywhere is rejected, never read out of bounds", "[io][gguf][corrupt]") {
  const auto img = sample_writer(sample_tensors()).to_bytes();
  const auto full = gguf_file::from_bytes(std::vector<std::byte>(img));
  const std::uint64_t last_end = full.data_offset() + full.tensors().back().offset + full.tensors().back().bytes.size();
  std::size_t rejected = 0;
  for (std::size_t cut = 0; cut < img.size(); ++cut) {
    std::vector<std::byte> part(img.begin(), img.begin() + std::ptrdiff_t(cut));
    try {
      (void)gguf_file::from_bytes(std::move(part), "cut.gguf");
      // Only the trailing padding after the last tensor's bytes may go.
      if (cut < last_end) FAIL("accepted a file cut at " << cut << " of " << img.size());
    } catch (const format_error& e) {
      ++rejected;
      const std::string msg = e.what();
      if (cut < full.data_offset() && cut >= 4)
        CHECK_THAT(msg, Contains("truncated") || Contains("cannot fit") || Contains("needs at least"));
      if (cut >= full.data_offset()) CHECK_THAT(msg, Contains("run past the end of the data section"));
    }
  }
  CHECK(rejected >= last_end);
}

TEST_CASE("gguf_writer validates what is added", "[io][gguf]") {
  gguf_writer w;
  w.add("w", ggml_type::f32, {2}, raw_bytes(std::vector<float>{1, 2}));
  CHECK_THAT(
      thrown_message<invalid_argument>([&] { w.add("w", ggml_type::f32, {1}, raw_bytes(std::vector<float>{1})); }),
      Contains("tensor 'w' was already added"));
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.add("", ggml_type::f32, {0}, {}); }), Contains("non-empty"));
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.add(std::string(64, 'x'), ggml_type::f32, {0}, {}); }),
             Contains("at most 63"));
  CHECK_THAT(thrown_message<shape_error>([&] {
               w.add("x", ggml_type::f32, {2, 2}, raw_bytes(std::vector<float>{1, 2, 3}));
             }),
             Contains("tensor 'x' has 12 bytes; expected 16"));
  CHECK_THAT(thrown_message<shape_error>([&] { w.add("q", ggml_type::q8_0, {2, 33}, std::vector<std::byte>(68)); }),
             Contains("innermost dimension 33, not a multiple of the Q8_0 block size 32"));
  CHECK_THAT(thrown_message<shape_error>([&] { w.add("q", ggml_type::q4_k, {1, 256}, std::vector<std::byte>(145)); }),
             Contains("has 145 bytes; expected 144"));
  CHECK_THAT(thrown_message<shape_error>([&] {
               w.add("d", ggml_type::f32, {1, 1, 1, 1, 1}, std::vector<std::byte>(4));
             }),
             Contains("has 5 dimensions; GGUF allows at most 4"));
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.add("u", ggml_type(4), {32}, {}); }),
             Contains("unknown ggml type id 4"));
  const matrix<double> m = matrix<double>::Ones(2, 32);
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.add("m", m, ggml_type::q8_0); }),
             Contains("cannot store 'm' as Q8_0"));
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.set_alignment(24); }), Contains("not a non-zero power of two"));
  w.set("general.alignment", gguf_value(std::int32_t{32}));
  CHECK_THAT(thrown_message<invalid_argument>([&] { (void)w.to_bytes(); }),
             Contains("general.alignment is i32; expected u32"));
  w.set("general.alignment", gguf_value(std::uint32_t{64}));
  w.add("m16", m, ggml_type::f16);
  const auto f = gguf_file::from_bytes(w.to_bytes());
  CHECK(f.alignment() == 64);
  CHECK(f.at("m16").shape == std::vector<yaqa::index>{2, 32});
  CHECK(to_matrix<double>(f.view("m16")) == m);
  CHECK(w.size() == 2);
}
