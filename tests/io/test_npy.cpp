// .npy: round trips of every dtype, the exact header NumPy expects, hand-made files in every
// header style NumPy has written (versions 1.0/2.0/3.0, Python 2 longs, 16-byte alignment,
// Fortran order), and strict rejection of corrupt files.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <io/io_support.hpp>
#include <support/backends.hpp>
#include <support/generators.hpp>
#include <yaqa/io/npy.hpp>

using namespace yaqa;
using yaqa::test::temp_dir;
using yaqa::test::thrown_message;
using Catch::Contains;

namespace {

// A .npy image with the given version and dict text, padded with spaces and '\n' so the data
// starts at a multiple of `align` (NumPy used 16 before 1.14-ish, 64 since).
std::string npy_image(int major, const std::string& dict, const std::string& data, std::size_t align = 64) {
  const std::size_t pre = major == 1 ? 10 : 12;
  std::string h = dict;
  const std::size_t total = (pre + h.size() + 1 + align - 1) / align * align;
  h.append(total - pre - h.size() - 1, ' ');
  h += '\n';
  std::string s = "\x93NUMPY";
  s += char(major);
  s += '\0';
  const std::uint32_t n = std::uint32_t(h.size());
  s += char(n & 0xff);
  s += char((n >> 8) & 0xff);
  if (major != 1) {
    s += char((n >> 16) & 0xff);
    s += char((n >> 24) & 0xff);
  }
  return s + h + data;
}

using yaqa::test::raw;

}  // namespace

TEST_CASE("npy round-trips every NumPy dtype bit for bit, with NumPy's exact header", "[io][npy]") {
  temp_dir dir;
  struct item {
    dtype type;
    std::string descr;
    std::vector<yaqa::index> shape;
    std::vector<std::byte> bytes;
  };
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<item> items = {
      {dtype::boolean, "|b1", {2, 2}, raw(std::vector<std::uint8_t>{0, 1, 1, 0})},
      {dtype::u8, "|u1", {3}, raw(std::vector<std::uint8_t>{0, 128, 255})},
      {dtype::i8, "|i1", {3}, raw(std::vector<std::int8_t>{-128, 0, 127})},
      {dtype::i16, "<i2", {3}, raw(std::vector<std::int16_t>{-32768, 0, 32767})},
      {dtype::u16, "<u2", {3}, raw(std::vector<std::uint16_t>{0, 1, 65535})},
      {dtype::f16, "<f2", {2, 3}, raw(std::vector<std::uint16_t>{0x0001, 0x7bff, 0x7c00, 0xfe00, 0x8000, 0x3555})},
      {dtype::i32, "<i4", {1, 2}, raw(std::vector<std::int32_t>{std::numeric_limits<std::int32_t>::min(), 5})},
      {dtype::u32, "<u4", {2}, raw(std::vector<std::uint32_t>{0, 0xffffffffu})},
      {dtype::f32, "<f4", {3, 1}, raw(std::vector<float>{std::numeric_limits<float>::denorm_min(), -0.0f, 3.5f})},
      {dtype::i64, "<i8", {2}, raw(std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(), -1})},
      {dtype::u64, "<u8", {2}, raw(std::vector<std::uint64_t>{~0ull, 3})},
      {dtype::f64, "<f8", {}, raw(std::vector<double>{-inf})},
      {dtype::f64, "<f8", {0}, {}},
      {dtype::f32, "<f4", {2, 0, 3}, {}},
  };
  int k = 0;
  for (const auto& it : items) {
    INFO(it.descr << " " << detail::shape_string(it.shape));
    const auto path = dir / (std::to_string(k++) + ".npy");
    write_npy(path, it.type, it.shape, it.bytes);
    const std::string img = yaqa::test::read_file(path);
    yaqa::test::export_fuzz_seed("npy", "valid_" + std::to_string(k) + "_" + it.descr, img);
    const std::size_t hlen = std::uint8_t(img[8]) | std::size_t(std::uint8_t(img[9])) << 8;
    CHECK(img.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
    CHECK((10 + hlen) % 64 == 0);  // data 64-byte aligned
    CHECK(img[10 + hlen - 1] == '\n');
    CHECK(img.size() == 10 + hlen + it.bytes.size());
    const npy_array a = read_npy(path);
    CHECK(a.type == it.type);
    CHECK(a.shape == it.shape);
    CHECK(a.bytes == it.bytes);
    CHECK_FALSE(a.fortran_order_on_disk);
    CHECK(a.source == path.string());
    const npy_array m = parse_npy(std::as_bytes(std::span(img.data(), img.size())));
    CHECK((m.type == it.type && m.shape == it.shape && m.bytes == it.bytes && m.source == "<memory>"));
  }
  // The dict text NumPy itself writes (np.save of a float32 (3, 5) array, a (7,) vector, a
  // scalar): the dict, then spaces, then '\n' ending at a multiple of 64.
  auto dict_of = [](const std::filesystem::path& p) {
    const std::string img = yaqa::test::read_file(p);
    const std::size_t hlen = std::uint8_t(img[8]) | std::size_t(std::uint8_t(img[9])) << 8;
    const std::string h = img.substr(10, hlen);
    const std::size_t end = h.find('}') + 1;
    CHECK(h.find_first_not_of(' ', end) == hlen - 1);
    CHECK(h.back() == '\n');
    return h.substr(0, end);
  };
  write_npy(dir / "m.npy", matrix<float>::Zero(3, 5));
  CHECK(dict_of(dir / "m.npy") == "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 5), }");
  write_npy(dir / "v.npy", {7}, std::vector<double>(7, 1.0));
  CHECK(dict_of(dir / "v.npy") == "{'descr': '<f8', 'fortran_order': False, 'shape': (7,), }");
  write_npy(dir / "s.npy", dtype::f64, {}, raw(std::vector<double>{2.0}));
  CHECK(dict_of(dir / "s.npy") == "{'descr': '<f8', 'fortran_order': False, 'shape': (), }");
}

TEMPLATE_LIST_TEST_CASE("matrices round-trip through npy as f8/f4/f2 with exact rounding", "[io][npy]",
                        yaqa::test::scalar_types) {
  using T = TestType;
  temp_dir dir;
  const matrix<T> big = yaqa::test::random_matrix<T>(40, 60, 4, 1000.0);
  const auto m = view(big).block(1, 2, 37, 53);  // strided view, odd sizes
  const yaqa::test::ref_encoder f16(5, 10);
  for (dtype t : {dtype::f64, dtype::f32, dtype::f16}) {
    const auto path = dir / "m.npy";
    write_npy(path, m, t);
    const npy_array a = read_npy(path);
    REQUIRE(a.shape == std::vector<yaqa::index>{37, 53});
    const matrix<T> back = to_matrix<T>(a);
    const matrix<T> back_t = to_matrix_transposed<T>(a);
    for (yaqa::index i = 0; i < 37; ++i)
      for (yaqa::index j = 0; j < 53; ++j) {
        const double x = double(m(i, j));
        double want = t == dtype::f64 ? x : t == dtype::f32 ? double(float(m(i, j))) : yaqa::test::ref_f16(f16.encode(x));
        want = double(T(want));
        if (double(back(i, j)) != want || back_t(j, i) != back(i, j))
          FAIL(t << " at (" << i << ", " << j << "): " << back(i, j) << " vs " << want);
      }
  }
  CHECK_THAT(thrown_message<invalid_argument>([&] { write_npy(dir / "b.npy", m, dtype::bf16); }),
             Contains("BF16") && Contains("NumPy has no such type"));
  CHECK_THAT(thrown_message<invalid_argument>([&] { write_npy(dir / "c.npy", m, dtype::i16); }),
             Contains("I16"));
  CHECK(dir.entries() == std::vector<std::string>{"m.npy"});
}

TEST_CASE("npy reads every header style NumPy has produced", "[io][npy]") {
  temp_dir dir;
  const std::vector<float> six{0, 1, 2, 3, 4, 5};
  const std::string d6 = yaqa::test::bytes_of(six);
  struct good {
    int major;
    std::string dict;
    std::size_t align;
    std::vector<yaqa::index> shape;
  };
  const std::vector<good> goods = {
      {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 64, {2, 3}},
      {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", 16, {6}},  // old NumPy: 16-byte aligned
      {1, "{'descr':'<f4','fortran_order':False,'shape':(2,3)}", 64, {2, 3}},  // no spaces, no trailing comma
      {1, "{'shape': (3, 2,), 'fortran_order': False, 'descr': '<f4'}", 64, {3, 2}},  // any key order
      {1, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (1, 6)}", 64, {1, 6}},  // double quotes
      {1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", 64, {2, 3}},  // Python 2 longs
      {2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 64, {2, 3}},
      {3, "{'descr': '<f4', 'fortran_order': False, 'shape': (6, 1), }", 64, {6, 1}},
      {1, "{'descr': '<f4', 'fortran_order': True, 'shape': (6,), }", 64, {6}},  // 1-D Fortran = C
  };
  for (const auto& g : goods) {
    INFO(g.dict);
    const auto path = dir / "g.npy";
    yaqa::test::write_file(path, npy_image(g.major, g.dict, d6, g.align));
    yaqa::test::export_fuzz_seed("npy", "style_" + g.dict, yaqa::test::read_file(path));
    const npy_array a = read_npy(path);
    CHECK(a.type == dtype::f32);
    CHECK(a.shape == g.shape);
    CHECK(to_vector<float>(a) == Eigen::Map<const vector<float>>(six.data(), 6));
  }
}

TEST_CASE("npy Fortran-order arrays are returned in C order", "[io][npy]") {
  temp_dir dir;
  // The 2 x 3 matrix [[0, 1, 2], [3, 4, 5]] stored column-major: 0 3 1 4 2 5.
  const std::vector<double> fdata{0, 3, 1, 4, 2, 5};
  const auto path = dir / "f.npy";
  yaqa::test::write_file(path, npy_image(1, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }",
                                         yaqa::test::bytes_of(fdata)));
  yaqa::test::export_fuzz_seed("npy", "valid_fortran_2d", yaqa::test::read_file(path));
  const npy_array a = read_npy(path);
  CHECK(a.fortran_order_on_disk);
  const matrix<double> m = to_matrix<double>(a);
  REQUIRE(m.rows() == 2);
  REQUIRE(m.cols() == 3);
  for (yaqa::index i = 0; i < 2; ++i)
    for (yaqa::index j = 0; j < 3; ++j) CHECK(m(i, j) == double(3 * i + j));

  // 3-D: element (i, j, k) of shape (2, 3, 4) has value 100 i + 10 j + k; Fortran storage puts i fastest.
  std::vector<std::int16_t> f3(24);
  for (int k = 0; k < 4; ++k)
    for (int j = 0; j < 3; ++j)
      for (int i = 0; i < 2; ++i) f3[std::size_t(i + 2 * j + 6 * k)] = std::int16_t(100 * i + 10 * j + k);
  yaqa::test::write_file(path, npy_image(1, "{'descr': '<i2', 'fortran_order': True, 'shape': (2, 3, 4), }",
                                         yaqa::test::bytes_of(f3)));
  yaqa::test::export_fuzz_seed("npy", "valid_fortran_3d", yaqa::test::read_file(path));
  const vector<double> c = to_vector<double>(read_npy(path));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k) CHECK(c(12 * i + 4 * j + k) == 100 * i + 10 * j + k);
}

TEST_CASE("npy headers too long for version 1.0 are written as version 2.0", "[io][npy]") {
  temp_dir dir;
  const std::vector<yaqa::index> shape(22000, 1);  // "1, " x 22000 > 65535 bytes of header
  const auto path = dir / "deep.npy";
  write_npy(path, dtype::f32, shape, raw(std::vector<float>{4.5f}));
  const std::string img = yaqa::test::read_file(path);
  CHECK(img[6] == 2);
  std::uint32_t hlen = 0;
  std::memcpy(&hlen, img.data() + 8, 4);
  CHECK((12 + hlen) % 64 == 0);
  const npy_array a = read_npy(path);
  CHECK(a.shape.size() == 22000);
  CHECK(to_vector<float>(a)(0) == 4.5f);
  npy_read_options small;
  small.max_header_size = 1000;
  CHECK_THAT(thrown_message<format_error>([&] { read_npy(path, small); }),
             Contains(path.string()) && Contains("exceeds the limit of 1000") && Contains("max_header_size"));
}

TEST_CASE("corrupt npy files are rejected with messages naming the file and the problem", "[io][npy][corrupt]") {
  temp_dir dir;
  const std::string d8(8, '\0');  // two float32
  auto hdr = [&](const std::string& dict) { return npy_image(1, dict, d8); };
  struct bad_case {
    const char* what;
    std::string image;
    std::vector<std::string> expect;
  };
  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  std::string past_eof = npy_image(1, ok, d8).substr(0, 10) + "{'descr'";
  std::vector<bad_case> cases = {
      {"empty", "", {"bad magic"}},
      {"bad magic", "\x93NUMPX" + npy_image(1, ok, d8).substr(6), {"bad magic", "\\x93NUMPY"}},
      {"PK zip (npz)", "PK\x03\x04" + std::string(60, 'x'), {"bad magic"}},
      {"version 1.1", [&] { auto s = npy_image(1, ok, d8); s[7] = 1; return s; }(), {"version 1.1", "expected 1.0, 2.0 or 3.0"}},
      {"version 4.0", [&] { auto s = npy_image(1, ok, d8); s[6] = 4; return s; }(), {"version 4.0"}},
      {"header past EOF", past_eof, {"header length", "runs past the end"}},
      {"v2 header past EOF", npy_image(2, ok, d8).substr(0, 12), {"runs past the end"}},
      {"missing shape", hdr("{'descr': '<f4', 'fortran_order': False, }"), {"missing key 'shape'"}},
      {"missing descr", hdr("{'fortran_order': False, 'shape': (2,)}"), {"missing key 'descr'"}},
      {"duplicate key", hdr("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}"),
       {"'descr' appears twice"}},
      {"unknown key", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'order': 'C'}"),
       {"unexpected key 'order'"}},
      {"(n) without comma", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (2), }"), {"'(n,)'"}},
      {"negative dimension", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }"), {"negative"}},
      {"float dimension", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,), }"),
       {"expected ',' between shape dimensions"}},
      {"shape as list", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': [2], }"), {"expected '('"}},
      {"huge dimension", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }"),
       {"does not fit in 64 bits"}},
      {"overflowing shape", hdr("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"),
       {"overflows 64 bits"}},
      {"lowercase true", hdr("{'descr': '<f4', 'fortran_order': true, 'shape': (2,), }"), {"True or False"}},
      {"unknown descr", hdr("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }"), {"'<c8' is not supported"}},
      {"big-endian", hdr("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }"), {"'>f4' is big-endian"}},
      {"'|' on a multi-byte type", hdr("{'descr': '|f4', 'fortran_order': False, 'shape': (2,), }"), {"'|f4'"}},
      {"structured", hdr("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }"), {"structured"}},
      {"not a dict", hdr("('<f4', False, (2,))"), {"expected '{'"}},
      {"text after dict", hdr(ok + " x"), {"unexpected text after the dict"}},
      {"unterminated string", hdr("{'descr: '<f4'"), {"expected ':'"}},
      {"truncated data", npy_image(1, ok, std::string(5, '\0')), {"truncated data", "needs 8 bytes", "has 5"}},
      {"no data", npy_image(1, ok, ""), {"truncated data", "has 0"}},
      {"trailing bytes", npy_image(1, ok, std::string(12, '\0')), {"4 unexpected bytes after the data"}},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const auto path = dir / "bad.npy";
    yaqa::test::write_file(path, c.image);
    yaqa::test::export_fuzz_seed("npy", std::string("corrupt_") + c.what, c.image);
    const auto msg = thrown_message<format_error>([&] { read_npy(path); });
    INFO(msg);
    CHECK_THAT(msg, Contains("yaqa::read_npy") && Contains(path.string()));
    for (const auto& s : c.expect) CHECK_THAT(msg, Contains(s));
    // The in-memory entry point (used by the fuzzer) applies exactly the same validation.
    CHECK(thrown_message<format_error>([&] {
            (void)parse_npy(std::as_bytes(std::span(c.image.data(), c.image.size())), path.string());
          }) == msg);
  }
  CHECK_THAT(thrown_message<io_error>([&] { read_npy(dir / "missing.npy"); }),
             Contains("missing.npy") && Contains("No such file"));
}

TEST_CASE("write_npy validates sizes and refuses forbidden paths", "[io][npy]") {
  temp_dir dir;
  CHECK_THAT(thrown_message<shape_error>([&] { write_npy(dir / "x.npy", dtype::f32, {2, 2}, raw(std::vector<float>{1, 2})); }),
             Contains("8 bytes") && Contains("expected 16") && Contains("x.npy"));
  CHECK_THROWS_AS(write_npy(dir / "y.npy", dtype::f32, {-1}, std::vector<std::byte>{}), shape_error);
  const auto in = dir / "in.npy";
  write_npy(in, {2}, std::vector<float>{1, 2});
  npy_write_options opt;
  opt.forbidden_paths = {in};
  CHECK_THAT(thrown_message<invalid_argument>([&] { write_npy(in, {1}, std::vector<float>{3}, dtype::f32, opt); }),
             Contains("refusing to write") && Contains(in.string()));
  CHECK(to_vector<float>(read_npy(in))(1) == 2.0f);
  CHECK(dir.entries() == std::vector<std::string>{"in.npy"});
}
