// safetensors: round trips of every dtype (raw bytes and converted matrices), the exact layout
// written, metadata, pass-through, memory mapping of a multi-GB (sparse) file, strict rejection
// of corrupt files with messages naming the file, the tensor and the broken rule, and the
// writer's guards.
#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <io/io_support.hpp>
#include <support/backends.hpp>
#include <support/generators.hpp>
#include <yaqa/io/safetensors.hpp>

using namespace yaqa;
using yaqa::test::temp_dir;
using yaqa::test::thrown_message;
using Catch::Contains;

namespace {

struct sample {
  std::string name;
  dtype type;
  std::vector<yaqa::index> shape;
  std::vector<std::byte> bytes;
};

using yaqa::test::raw;

// One tensor per dtype, with the extreme values of each type; names chosen so that the name
// order puts odd-sized tensors first (later tensors then start at unaligned offsets).
std::vector<sample> every_dtype_samples() {
  using L8 = std::numeric_limits<std::int8_t>;
  using L16 = std::numeric_limits<std::int16_t>;
  using L32 = std::numeric_limits<std::int32_t>;
  using L64 = std::numeric_limits<std::int64_t>;
  const double dinf = std::numeric_limits<double>::infinity(), dnan = std::numeric_limits<double>::quiet_NaN();
  const float finf = std::numeric_limits<float>::infinity(), fnan = std::numeric_limits<float>::quiet_NaN();
  std::vector<std::uint8_t> all8(256);
  for (int i = 0; i < 256; ++i) all8[std::size_t(i)] = std::uint8_t(i);
  std::vector<sample> s;
  s.push_back({"a_bool", dtype::boolean, {5}, raw(std::vector<std::uint8_t>{0, 1, 1, 0, 1})});
  s.push_back({"b_u8", dtype::u8, {3}, raw(std::vector<std::uint8_t>{0, 128, 255})});
  s.push_back({"c_i8", dtype::i8, {5}, raw(std::vector<std::int8_t>{L8::min(), -1, 0, 1, L8::max()})});
  s.push_back({"d_i16", dtype::i16, {5}, raw(std::vector<std::int16_t>{L16::min(), -1, 0, 1, L16::max()})});
  s.push_back({"e_u16", dtype::u16, {1, 3}, raw(std::vector<std::uint16_t>{0, 32768, 65535})});
  s.push_back({"f_f16", dtype::f16, {2, 5},
               raw(std::vector<std::uint16_t>{0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x7bff, 0x7c00, 0xfc00,
                                              0x7e01, 0x3c00})});
  s.push_back({"g_bf16", dtype::bf16, {5, 2},
               raw(std::vector<std::uint16_t>{0x0000, 0x8000, 0x0001, 0x007f, 0x0080, 0x7f7f, 0x7f80, 0xff80,
                                              0xffc1, 0x3f80})});
  s.push_back({"h_i32", dtype::i32, {5}, raw(std::vector<std::int32_t>{L32::min(), -1, 0, 1, L32::max()})});
  s.push_back({"i_u32", dtype::u32, {3}, raw(std::vector<std::uint32_t>{0, 1u << 31, 0xffffffffu})});
  s.push_back({"j_f32", dtype::f32, {2, 4},
               raw(std::vector<float>{std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::max(),
                                      std::numeric_limits<float>::max(), finf, -finf, fnan, -0.0f, 1.5f})});
  s.push_back({"k_i64", dtype::i64, {5}, raw(std::vector<std::int64_t>{L64::min(), -1, 0, 1, L64::max()})});
  s.push_back({"l_u64", dtype::u64, {3}, raw(std::vector<std::uint64_t>{0, 1ull << 63, ~0ull})});
  s.push_back({"m_f64", dtype::f64, {4, 2},
               raw(std::vector<double>{std::numeric_limits<double>::denorm_min(), -std::numeric_limits<double>::max(),
                                       std::numeric_limits<double>::max(), dinf, -dinf, dnan, -0.0, 1e-310})});
  s.push_back({"n_f8_e4m3", dtype::f8_e4m3, {16, 16}, raw(all8)});
  s.push_back({"o_f8_e5m2", dtype::f8_e5m2, {256}, raw(all8)});
  s.push_back({"p_empty", dtype::f32, {0, 3}, {}});
  s.push_back({"q_scalar", dtype::f64, {}, raw(std::vector<double>{-7.25})});
  return s;
}

bool same_bits_or_nan(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || (a == b && std::signbit(a) == std::signbit(b));
}

std::string valid_entry(const char* dt, const char* shape, std::uint64_t b, std::uint64_t e) {
  return std::string("{\"dtype\":\"") + dt + "\",\"shape\":" + shape + ",\"data_offsets\":[" + std::to_string(b) +
         "," + std::to_string(e) + "]}";
}

}  // namespace

TEST_CASE("safetensors round-trips every dtype bit for bit, mapped or read", "[io][safetensors]") {
  temp_dir dir;
  const auto path = dir / "all.safetensors";
  const auto samples = every_dtype_samples();
  safetensors_writer w;
  for (const auto& s : samples) w.add(s.name, s.type, s.shape, s.bytes);
  w.metadata()["format"] = "pt";
  w.metadata()["note"] = "ünïcödé ✓";
  w.write(path);
  CHECK(dir.entries() == std::vector<std::string>{"all.safetensors"});
  {  // from_bytes reads the same image to the same tensors, naming the given source
    const std::string img = yaqa::test::read_file(path);
    const auto b = std::as_bytes(std::span(img.data(), img.size()));
    const auto m = safetensors_file::from_bytes({b.begin(), b.end()}, "in-memory");
    CHECK(m.path() == "in-memory");
    CHECK_FALSE(m.is_memory_mapped());
    REQUIRE(m.size() == samples.size());
    CHECK(m.metadata() == w.metadata());
    for (const auto& s : samples) {
      const tensor_view& t = m.at(s.name);
      CHECK(t.type == s.type);
      CHECK(std::vector<yaqa::index>(t.shape.begin(), t.shape.end()) == s.shape);
      CHECK(std::equal(t.bytes.begin(), t.bytes.end(), s.bytes.begin(), s.bytes.end()));
      CHECK(t.source == "in-memory");
    }
  }
  if (yaqa::test::fuzz_seeds_wanted()) {  // seeds: the whole file, and one file per dtype
    yaqa::test::export_fuzz_seed("safetensors", "valid_all_dtypes", yaqa::test::read_file(path));
    for (const auto& s : samples) {
      safetensors_writer one;
      one.add(s.name, s.type, s.shape, s.bytes);
      const auto p1 = dir / "seed.safetensors";
      one.write(p1);
      yaqa::test::export_fuzz_seed("safetensors", "valid_" + s.name, yaqa::test::read_file(p1));
      std::filesystem::remove(p1);
    }
  }

  for (bool mm : {true, false}) {
    safetensors_read_options opt;
    opt.memory_map = mm;
    const safetensors_file f(path, opt);
    CHECK(f.is_memory_mapped() == mm);
    REQUIRE(f.size() == samples.size());
    CHECK(f.metadata() == w.metadata());
    for (const auto& s : samples) {
      const tensor_view& t = f.at(s.name);
      CHECK(t.name == s.name);
      CHECK(t.type == s.type);
      CHECK(std::vector<yaqa::index>(t.shape.begin(), t.shape.end()) == s.shape);
      REQUIRE(t.bytes.size() == s.bytes.size());
      CHECK(std::equal(t.bytes.begin(), t.bytes.end(), s.bytes.begin()));
      CHECK(t.source == path.string());
    }
    // Converted values: spot checks of the extremes (the converters are tested exhaustively in
    // test_tensor.cpp and test_float16.cpp).
    const auto i64 = to_vector<double>(f.at("k_i64"));
    CHECK(i64(0) == -9223372036854775808.0);
    CHECK(i64(4) == 9223372036854775807.0);
    const auto f16 = to_matrix<float>(f.at("f_f16"));  // [2, 5]
    CHECK(f16(0, 2) == std::ldexp(1.0f, -24));
    CHECK(f16(1, 0) == 65504.0f);
    CHECK(std::isinf(f16(1, 1)));
    CHECK(f16(1, 2) == -std::numeric_limits<float>::infinity());
    CHECK(std::isnan(f16(1, 3)));
    CHECK(std::signbit(f16(0, 1)));
    const auto bf = to_matrix<double>(f.at("g_bf16"));  // [5, 2]
    CHECK(bf(0, 1) == 0.0);
    CHECK(std::signbit(bf(0, 1)));
    CHECK(bf(1, 0) == std::ldexp(1.0, -133));
    CHECK(bf(2, 1) == std::ldexp(255.0, 120));  // 0x7f7f, the largest finite BF16
    CHECK(std::isnan(bf(4, 0)));
    const auto f64 = to_matrix<double>(f.at("m_f64"));  // [4, 2]
    CHECK(f64(0, 0) == std::numeric_limits<double>::denorm_min());
    CHECK(f64(3, 1) == 1e-310);
    CHECK(to_matrix<float>(f.at("m_f64"))(3, 1) == 0.0f);  // underflows in float, as static_cast does
    CHECK(to_vector<double>(f.at("a_bool")).sum() == 3.0);
    CHECK(to_vector<double>(f.at("q_scalar"))(0) == -7.25);
    CHECK(to_matrix<float>(f.at("n_f8_e4m3"))(7, 14) == 448.0f);  // 0x7e
  }
}

TEMPLATE_LIST_TEST_CASE("matrices round-trip through F64/F32/F16/BF16 with exact rounding", "[io][safetensors]",
                        yaqa::test::scalar_types) {
  using T = TestType;
  temp_dir dir;
  // 37 x 53 random values spanning many binades, plus specials and F16/BF16 denormals.
  matrix<T> m = yaqa::test::random_matrix<T>(37, 53, 3);
  for (yaqa::index j = 0; j < m.cols(); ++j) m.col(j) *= T(std::ldexp(1.0, int(j % 40) - 20));
  m(0, 0) = std::numeric_limits<T>::quiet_NaN();
  m(1, 0) = std::numeric_limits<T>::infinity();
  m(2, 0) = -std::numeric_limits<T>::infinity();
  m(3, 0) = T(std::ldexp(1.0, -24));  // F16 min subnormal
  m(4, 0) = T(std::ldexp(3.0, -26));  // F16 subnormal needing rounding
  m(5, 0) = T(std::ldexp(1.0, -133));  // BF16 min subnormal
  m(6, 0) = T(70000.0);  // F16 overflow -> Inf
  m(7, 0) = T(-0.0);
  const yaqa::test::ref_encoder f16(5, 10), bf16(8, 7);
  safetensors_writer w;
  for (dtype t : {dtype::f64, dtype::f32, dtype::f16, dtype::bf16}) w.add(std::string("w_") + std::string(safetensors_name(t)), m, t);
  w.add("w_default", view(m));  // dtype_of<T>
  const auto path = dir / "m.safetensors";
  w.write(path);
  const safetensors_file f(path);
  CHECK(f.at("w_default").type == dtype_of<T>);
  CHECK(f.at("w_F16").shape[0] == 37);
  CHECK(f.at("w_F16").shape[1] == 53);
  for (dtype t : {dtype::f64, dtype::f32, dtype::f16, dtype::bf16}) {
    const auto& tv = f.at(std::string("w_") + std::string(safetensors_name(t)));
    const matrix<T> back = to_matrix<T>(tv);
    REQUIRE(back.rows() == 37);
    REQUIRE(back.cols() == 53);
    for (yaqa::index i = 0; i < 37; ++i)
      for (yaqa::index j = 0; j < 53; ++j) {
        const double x = double(m(i, j));
        double want;
        if (t == dtype::f64)
          want = x;
        else if (t == dtype::f32)
          want = double(float(m(i, j)));
        else if (t == dtype::f16)
          want = yaqa::test::ref_f16(f16.encode(x));
        else
          want = yaqa::test::ref_bf16(bf16.encode(x));
        if (std::is_same_v<T, float>) want = double(float(want));
        if (!same_bits_or_nan(double(back(i, j)), want))
          FAIL(t << " at (" << i << ", " << j << "): wrote " << x << ", read " << back(i, j) << ", want " << want);
      }
  }
  CHECK(std::isinf(to_matrix<T>(f.at("w_F16"))(6, 0)));
  CHECK(to_matrix<T>(f.at("w_F16"))(4, 0) == T(std::ldexp(1.0, -24)));  // 0.75 ulp rounds up to 1 ulp
}

TEST_CASE("safetensors header layout: name order, contiguous offsets, metadata first, 8-byte padding",
          "[io][safetensors]") {
  temp_dir dir;
  safetensors_writer w;
  const std::vector<float> v3{1, 2, 3};
  w.add("zeta", {3}, v3);
  w.add("Alpha", {1, 3}, v3, dtype::f16);
  w.add("mid", dtype::u8, {5}, std::vector<std::byte>(5, std::byte{7}));
  w.metadata()["k"] = "v";
  const auto path = dir / "layout.safetensors";
  w.write(path);
  const std::string img = yaqa::test::read_file(path);
  yaqa::test::export_fuzz_seed("safetensors", "valid_layout_metadata", img);
  std::uint64_t n = 0;
  std::memcpy(&n, img.data(), 8);
  CHECK(n % 8 == 0);
  const std::string header = img.substr(8, n);
  CHECK(header.find_last_not_of(' ') + 1 >= header.size() - 7);
  const auto j = nlohmann::ordered_json::parse(header);
  std::vector<std::string> keys;
  for (const auto& [k, _] : j.items()) keys.push_back(k);
  CHECK(keys == std::vector<std::string>{"__metadata__", "Alpha", "mid", "zeta"});
  CHECK(j["Alpha"]["data_offsets"] == nlohmann::ordered_json::array({0, 6}));
  CHECK(j["mid"]["data_offsets"] == nlohmann::ordered_json::array({6, 11}));
  CHECK(j["zeta"]["data_offsets"] == nlohmann::ordered_json::array({11, 23}));
  CHECK(j["zeta"]["dtype"] == "F32");
  CHECK(img.size() == 8 + n + 23);
  CHECK(j["__metadata__"]["k"] == "v");
}

TEST_CASE("pass-through: re-writing a file's tensors and metadata reproduces it byte for byte", "[io][safetensors]") {
  temp_dir dir;
  const auto src = dir / "src.safetensors";
  {
    safetensors_writer w;
    w.add("layer.weight", yaqa::test::random_matrix<float>(13, 9, 1), dtype::bf16);
    w.add("layer.bias", {9}, std::vector<double>(9, 0.5));
    w.metadata()["format"] = "pt";
    w.write(src);
  }
  const safetensors_file in(src);
  safetensors_writer w;
  for (const auto& t : in.tensors()) w.add_borrowed(t);
  w.metadata() = in.metadata();
  w.forbid_path(src);
  const auto dst = dir / "dst.safetensors";
  w.write(dst);
  CHECK(yaqa::test::read_file(dst) == yaqa::test::read_file(src));
  CHECK(dir.entries() == std::vector<std::string>{"dst.safetensors", "src.safetensors"});
}

TEST_CASE("a multi-GB safetensors file opens in O(header) through mmap", "[io][safetensors]") {
  temp_dir dir;
  const auto path = dir / "big.safetensors";
  // 3 GiB + 16 bytes of data (sparse on disk): one big tensor then a small one whose offsets
  // exceed 2^32.
  const std::uint64_t big = (std::uint64_t{3} << 30) / 4;  // F32 elements
  const std::uint64_t off = big * 4;
  const std::string header = "{\"big\":" + valid_entry("F32", ("[" + std::to_string(big) + "]").c_str(), 0, off) +
                             ",\"tail\":" + valid_entry("F32", "[2, 2]", off, off + 16) + "}";
  yaqa::test::write_file(path, yaqa::test::safetensors_image(header, ""));
  std::filesystem::resize_file(path, 8 + header.size() + off + 16);
  const auto t0 = std::chrono::steady_clock::now();
  const safetensors_file f(path);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(f.is_memory_mapped());
  CHECK(f.data_size() == off + 16);
  CHECK(f.at("big").numel() == yaqa::index(big));
  CHECK(f.at("tail").bytes.data() - f.at("big").bytes.data() == yaqa::index(off));
  CHECK(to_matrix<float>(f.at("tail")).isZero());  // touches only the last page
  CHECK(seconds < 1.0);  // reading 3 GiB would take far longer
}

TEST_CASE("corrupt safetensors files are rejected with messages naming the file and the problem",
          "[io][safetensors][corrupt]") {
  temp_dir dir;
  struct bad_case {
    const char* what;
    std::string image;
    std::vector<std::string> expect;  // substrings of the message (besides the file name)
  };
  const std::string ok_entry = valid_entry("F32", "[2]", 0, 8);
  const std::string data8(8, '\0');
  const std::string bad_utf8 = "{\"a\xff\":" + ok_entry + "}";
  std::vector<bad_case> cases = {
      {"empty file", "", {"is 0 bytes", "at least 8"}},
      {"truncated length", std::string("\x10\0\0", 3), {"is 3 bytes", "at least 8"}},
      {"header length past EOF", yaqa::test::u64_le(1000) + "{}", {"header length 1000", "past the end"}},
      {"huge header length", yaqa::test::u64_le(~0ull) + "{}", {"header length 18446744073709551615", "past the end"}},
      {"not JSON", yaqa::test::safetensors_image("{\"a\": ", ""), {"not valid JSON"}},
      {"not UTF-8", yaqa::test::safetensors_image(bad_utf8, data8), {"not valid JSON"}},
      {"JSON array", yaqa::test::safetensors_image("[1, 2]", ""), {"is a JSON array", "expected an object"}},
      {"JSON string", yaqa::test::safetensors_image("\"x\"", ""), {"is a JSON string", "expected an object"}},
      {"overlap",
       yaqa::test::safetensors_image("{\"a\":" + valid_entry("F32", "[2]", 0, 8) + ",\"b\":" +
                                         valid_entry("F32", "[2]", 4, 12) + "}",
                                     std::string(12, '\0')),
       {"'a' [0, 8)", "'b' [4, 12)", "overlap"}},
      {"offsets out of range", yaqa::test::safetensors_image("{\"w\":" + valid_entry("F32", "[4]", 0, 16) + "}", data8),
       {"tensor 'w'", "[0, 16]", "past the data section (8 bytes)"}},
      {"truncated data",
       yaqa::test::safetensors_image("{\"w\":" + valid_entry("F64", "[3]", 0, 24) + "}", std::string(20, '\0')),
       {"tensor 'w'", "past the data section", "truncated"}},
      {"size mismatch", yaqa::test::safetensors_image("{\"w\":" + valid_entry("F32", "[3]", 0, 8) + "}", data8),
       {"tensor 'w'", "span 8 bytes", "expected 12", "shape [3] of F32"}},
      {"begin > end", yaqa::test::safetensors_image("{\"w\":" + valid_entry("F32", "[0]", 8, 4) + "}", data8),
       {"tensor 'w'", "begin > end"}},
      {"negative shape", yaqa::test::safetensors_image("{\"w\":" + valid_entry("F32", "[2,-3]", 0, 8) + "}", data8),
       {"tensor 'w'", "negative dimension 1"}},
      {"overflowing shape",
       yaqa::test::safetensors_image(
           "{\"w\":" + valid_entry("F32", "[4294967296, 4294967296]", 0, 8) + "}", data8),
       {"tensor 'w'", "overflows 64 bits"}},
      {"shape beyond u64",
       yaqa::test::safetensors_image("{\"w\":" + valid_entry("F32", "[99999999999999999999999]", 0, 8) + "}", data8),
       {"tensor 'w'", "expected non-negative integers"}},
      {"fractional shape", yaqa::test::safetensors_image("{\"w\":" + valid_entry("F32", "[2.5]", 0, 8) + "}", data8),
       {"tensor 'w'", "number", "expected non-negative integers"}},
      {"shape not an array", yaqa::test::safetensors_image("{\"w\":" + valid_entry("F32", "2", 0, 8) + "}", data8),
       {"tensor 'w'", "shape is a JSON number", "expected an array"}},
      {"unknown dtype", yaqa::test::safetensors_image("{\"w\":" + valid_entry("F12", "[2]", 0, 8) + "}", data8),
       {"tensor 'w'", "unknown dtype 'F12'", "BF16"}},
      {"dtype not a string",
       yaqa::test::safetensors_image("{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", data8),
       {"tensor 'w'", "dtype is a JSON number"}},
      {"missing key", yaqa::test::safetensors_image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", data8),
       {"tensor 'w'", "missing key 'data_offsets'"}},
      {"unexpected key",
       yaqa::test::safetensors_image(
           "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"stride\":[1]}}", data8),
       {"tensor 'w'", "unexpected key 'stride'"}},
      {"entry not an object", yaqa::test::safetensors_image("{\"w\":[1]}", data8),
       {"tensor 'w'", "is a JSON array", "expected an object"}},
      {"bad data_offsets arity",
       yaqa::test::safetensors_image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", data8),
       {"tensor 'w'", "data_offsets is [0]", "[begin, end]"}},
      {"negative data_offsets",
       yaqa::test::safetensors_image("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", data8),
       {"tensor 'w'", "[begin, end]"}},
      {"duplicate tensor", yaqa::test::safetensors_image("{\"w\":" + ok_entry + ",\"w\":" + ok_entry + "}", data8),
       {"key 'w' twice"}},
      {"duplicate key in an entry",
       yaqa::test::safetensors_image(
           "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,8]}}", data8),
       {"key 'dtype' twice"}},
      {"metadata value not a string",
       yaqa::test::safetensors_image("{\"__metadata__\":{\"epoch\":3},\"w\":" + ok_entry + "}", data8),
       {"__metadata__ must map strings to strings", "'epoch'", "number"}},
      {"metadata not an object", yaqa::test::safetensors_image("{\"__metadata__\":[\"a\"],\"w\":" + ok_entry + "}", data8),
       {"__metadata__ is a JSON array"}},
      {"gap between tensors",
       yaqa::test::safetensors_image("{\"a\":" + valid_entry("F32", "[1]", 0, 4) + ",\"b\":" +
                                         valid_entry("F32", "[1]", 8, 12) + "}",
                                     std::string(12, '\0')),
       {"bytes [4, 8)", "before 'b'", "contiguously"}},
      {"trailing bytes", yaqa::test::safetensors_image("{\"w\":" + ok_entry + "}", std::string(12, '\0')),
       {"bytes [8, 12)", "at the end"}},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const auto path = dir / "bad.safetensors";
    yaqa::test::write_file(path, c.image);
    yaqa::test::export_fuzz_seed("safetensors", std::string("corrupt_") + c.what, c.image);
    const auto msg = thrown_message<format_error>([&] { safetensors_file f(path); });
    INFO(msg);
    CHECK_THAT(msg, Contains("yaqa::safetensors_file") && Contains(path.string()));
    for (const auto& s : c.expect) CHECK_THAT(msg, Contains(s));
    // The in-memory entry point (used by the fuzzer) applies exactly the same validation.
    const auto as_bytes = std::as_bytes(std::span(c.image.data(), c.image.size()));
    CHECK(thrown_message<format_error>([&] {
            (void)safetensors_file::from_bytes({as_bytes.begin(), as_bytes.end()}, path.string());
          }) == msg);
  }
}

// Regression (found while writing fuzz/fuzz_safetensors.cpp): the error messages used to
// json::dump() the offending value, which recurses once per nesting level; 100000 nested brackets
// (a 200 KB header) overflowed the stack of a release build. Every such header must be a format_error, wherever the nesting is.
TEST_CASE("deeply nested JSON in a safetensors header is a format_error, not a stack overflow",
          "[io][safetensors][corrupt]") {
  temp_dir dir;
  const std::size_t depth = 200000;
  const std::string deep = std::string(depth, '[') + std::string(depth, ']');
  struct deep_case {
    const char* what;
    std::string header;
    std::vector<std::string> expect;
  };
  const std::vector<deep_case> cases = {
      {"in a shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[" + deep + "],\"data_offsets\":[0,0]}}",
       {"tensor 'w'", "shape [[...]] dimension 0 is a JSON array"}},
      {"as the shape", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1," + deep + ",2],\"data_offsets\":[0,0]}}",
       {"tensor 'w'", "shape [1,[...],2] dimension 1"}},
      {"in data_offsets", "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":" + deep + "}}",
       {"tensor 'w'", "data_offsets is [[...]]"}},
      {"as an entry", "{\"w\":" + deep + "}", {"tensor 'w'", "is a JSON array"}},
      {"in the metadata", "{\"__metadata__\":{\"k\":" + deep + "}}", {"'k' has a array value"}},
      {"unbalanced", "{\"w\":" + std::string(depth, '['), {"not valid JSON"}},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const auto path = dir / "deep.safetensors";
    yaqa::test::write_file(path, yaqa::test::safetensors_image(c.header, ""));
    const auto msg = thrown_message<format_error>([&] { safetensors_file f(path); });
    INFO(msg.substr(0, 300));
    CHECK(msg.size() < 1000);
    CHECK_THAT(msg, Contains(path.string()));
    for (const auto& s : c.expect) CHECK_THAT(msg, Contains(s));
  }
  // A long shape is summarized, not printed whole.
  std::string long_shape = "[";
  for (int i = 0; i < 40; ++i) long_shape += std::to_string(i + 1) + ",";
  long_shape += "-1]";
  const auto path = dir / "long.safetensors";
  yaqa::test::write_file(path, yaqa::test::safetensors_image(
                                   "{\"w\":{\"dtype\":\"F32\",\"shape\":" + long_shape + ",\"data_offsets\":[0,0]}}", ""));
  CHECK_THAT(thrown_message<format_error>([&] { safetensors_file f(path); }),
             Contains("shape [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,... (41 elements)] has negative dimension 40"));
}

TEST_CASE("safetensors read options: header limit and gaps", "[io][safetensors][corrupt]") {
  temp_dir dir;
  const auto path = dir / "gap.safetensors";
  const std::string header = "{\"a\":" + valid_entry("F32", "[1]", 0, 4) + ",\"b\":" + valid_entry("F32", "[1]", 8, 12) + "}";
  const float one = 1.0f, two = 2.0f;
  std::string data(12, '\0');
  std::memcpy(data.data(), &one, 4);
  std::memcpy(data.data() + 8, &two, 4);
  yaqa::test::write_file(path, yaqa::test::safetensors_image(header, data + "tail"));
  yaqa::test::export_fuzz_seed("safetensors", "gaps", yaqa::test::read_file(path));
  CHECK_THROWS_AS(safetensors_file(path), format_error);
  safetensors_read_options lenient;
  lenient.allow_gaps = true;
  const safetensors_file f(path, lenient);
  CHECK(to_vector<float>(f.at("b"))(0) == 2.0f);

  safetensors_read_options small;
  small.max_header_size = 16;
  const auto msg = thrown_message<format_error>([&] { safetensors_file g(path, small); });
  CHECK_THAT(msg, Contains(path.string()) && Contains("header length " + std::to_string(header.size())) &&
                      Contains("limit of 16 bytes") && Contains("max_header_size"));

  // Zero-byte tensors own no bytes: they may sit anywhere within the data section.
  const auto p2 = dir / "zero.safetensors";
  yaqa::test::write_file(p2, yaqa::test::safetensors_image("{\"e\":" + valid_entry("F32", "[0, 5]", 4, 4) + ",\"w\":" +
                                                               valid_entry("F32", "[2]", 0, 8) + "}",
                                                           std::string(8, '\0')));
  yaqa::test::export_fuzz_seed("safetensors", "valid_zero_byte_tensor", yaqa::test::read_file(p2));
  const safetensors_file z(p2);
  CHECK(z.at("e").numel() == 0);
}

TEST_CASE("safetensors_file: OS-level failures are io_errors; lookups name the file", "[io][safetensors]") {
  temp_dir dir;
  const auto missing = dir / "nope.safetensors";
  const auto msg = thrown_message<io_error>([&] { safetensors_file f(missing); });
  CHECK_THAT(msg, Contains(missing.string()) && Contains("No such file"));
  const auto msg2 = thrown_message<io_error>([&] { safetensors_file f(dir.path()); });
  CHECK_THAT(msg2, Contains("not a regular file"));

  const auto path = dir / "one.safetensors";
  safetensors_writer w;
  w.add("w", {2}, std::vector<float>{1, 2});
  w.write(path);
  const safetensors_file f(path);
  CHECK(f.contains("w"));
  CHECK(f.find("v") == nullptr);
  const auto msg3 = thrown_message<format_error>([&] { (void)f.at("q_proj"); });
  CHECK_THAT(msg3, Contains("'q_proj'") && Contains(path.string()));
  // Copies share the mapping; views stay valid while a copy lives.
  const tensor_view* t = nullptr;
  std::optional<safetensors_file> keep;
  {
    safetensors_file g(path);
    keep = g;
    t = &keep->at("w");
  }
  CHECK(to_vector<float>(*t)(1) == 2.0f);
}

TEST_CASE("safetensors_writer validates what is added", "[io][safetensors]") {
  safetensors_writer w;
  w.add("w", {2}, std::vector<float>{1, 2});
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.add("w", {1}, std::vector<float>{1}); }),
             Contains("'w' was already added"));
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.add("__metadata__", {1}, std::vector<float>{1}); }),
             Contains("reserved"));
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.add("", {1}, std::vector<float>{1}); }), Contains("non-empty"));
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.add("bad\xff", {1}, std::vector<float>{1}); }),
             Contains("UTF-8"));
  CHECK_THAT(thrown_message<shape_error>([&] { w.add("x", {2, 2}, std::vector<float>{1, 2, 3}); }),
             Contains("tensor 'x'") && Contains("12 bytes") && Contains("expected 16"));
  CHECK_THAT(thrown_message<shape_error>([&] { w.add("y", dtype::i16, {-1}, std::vector<std::byte>{}); }),
             Contains("tensor 'y'") && Contains("non-negative"));
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.add("z", {1}, std::vector<float>{1}, dtype::i32); }),
             Contains("'z'") && Contains("I32") && Contains("raw bytes"));
  CHECK(w.size() == 1);
  CHECK(w.contains(std::string_view("w")));
  CHECK_FALSE(w.contains("x"));
}

TEST_CASE("safetensors_writer refuses to overwrite a declared input", "[io][safetensors]") {
  temp_dir dir;
  const auto in = dir / "in.safetensors";
  safetensors_writer w0;
  w0.add("w", {1}, std::vector<float>{1});
  w0.write(in);
  const std::string before = yaqa::test::read_file(in);

  safetensors_writer w;
  w.add("w", {1}, std::vector<float>{2});
  w.forbid_path(in);
  std::filesystem::create_symlink(in, dir / "link.safetensors");
  std::filesystem::create_hard_link(in, dir / "hard.safetensors");
  const auto rel = std::filesystem::relative(in, std::filesystem::current_path());
  for (const auto& target : {in, dir / "link.safetensors", dir / "hard.safetensors", dir / "." / "in.safetensors", rel}) {
    INFO(target.string());
    const auto msg = thrown_message<invalid_argument>([&] { w.write(target); });
    CHECK_THAT(msg, Contains("refusing to write") && Contains(in.string()));
  }
  CHECK(yaqa::test::read_file(in) == before);
  // A forbidden path that does not exist yet is compared by normalized path.
  w.forbid_path(dir / "sub" / ".." / "new.safetensors");
  CHECK_THROWS_AS(w.write(dir / "new.safetensors"), invalid_argument);
  CHECK_NOTHROW(w.write(dir / "other.safetensors"));

  w.metadata()["bad"] = "\xff";
  CHECK_THAT(thrown_message<invalid_argument>([&] { w.write(dir / "meta.safetensors"); }), Contains("UTF-8"));
  CHECK_FALSE(std::filesystem::exists(dir / "meta.safetensors"));
}
