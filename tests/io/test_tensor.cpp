// tensor_view converters (to_matrix, to_matrix_transposed, to_vector) against naive element-wise
// references, on views built by hand (no files): every dtype, unaligned data, odd sizes that
// cross the converters' internal row blocks, and rejection of inconsistent views.
#include <bit>
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
#include <yaqa/io/tensor.hpp>

using namespace yaqa;

namespace {

// Naive decoder: element k of `bytes` (type t) as T, written independently of detail::decode.
template <class T>
T naive_element(dtype t, const std::byte* base, yaqa::index k) {
  auto rd = [&](auto tag) {
    decltype(tag) v;
    std::memcpy(&v, base + k * yaqa::index(sizeof(v)), sizeof(v));
    return v;
  };
  switch (t) {
    case dtype::boolean: return rd(std::uint8_t{}) ? T(1) : T(0);
    case dtype::u8: return T(rd(std::uint8_t{}));
    case dtype::i8: return T(rd(std::int8_t{}));
    case dtype::i16: return T(rd(std::int16_t{}));
    case dtype::u16: return T(rd(std::uint16_t{}));
    case dtype::i32: return T(rd(std::int32_t{}));
    case dtype::u32: return T(rd(std::uint32_t{}));
    case dtype::i64: return T(rd(std::int64_t{}));
    case dtype::u64: return T(rd(std::uint64_t{}));
    case dtype::f32: return T(rd(float{}));
    case dtype::f64: return T(rd(double{}));
    case dtype::f16: return T(yaqa::test::ref_f16(rd(std::uint16_t{})));
    case dtype::bf16: return T(yaqa::test::ref_bf16(rd(std::uint16_t{})));
    case dtype::f8_e4m3: return T(yaqa::test::ref_small_float(rd(std::uint8_t{}), 4, 3, false));
    case dtype::f8_e5m2: return T(yaqa::test::ref_small_float(rd(std::uint8_t{}), 5, 2, true));
  }
  return T(0);
}

template <class T>
bool same(T a, T b) {
  return (std::isnan(a) && std::isnan(b)) || (a == b && std::signbit(a) == std::signbit(b));
}

const dtype all_dtypes[] = {dtype::boolean, dtype::u8,  dtype::i8,  dtype::f8_e4m3, dtype::f8_e5m2,
                            dtype::i16,     dtype::u16, dtype::f16, dtype::bf16,    dtype::i32,
                            dtype::u32,     dtype::f32, dtype::i64, dtype::u64,     dtype::f64};

}  // namespace

TEMPLATE_LIST_TEST_CASE("to_matrix / to_matrix_transposed / to_vector match a naive decoder for every dtype",
                        "[io][tensor]", yaqa::test::scalar_types) {
  using T = TestType;
  std::mt19937_64 rng(5);
  // 131 x 517 crosses to_matrix's 128 x 512 tiles in both directions with partial tiles; 3 x 7
  // is smaller than one tile.
  const std::pair<yaqa::index, yaqa::index> sizes[] = {{3, 7}, {131, 517}, {1, 1}, {5, 1}};
  for (auto [rows, cols] : sizes) {
    for (dtype t : all_dtypes) {
      const yaqa::index n = rows * cols, esz = dtype_size(t);
      // Random bytes (every bit pattern: NaN, Inf, subnormals, extremes), placed at an odd
      // address so unaligned loads are exercised.
      std::vector<std::byte> storage(std::size_t(n * esz + 1));
      for (auto& b : storage) b = std::byte(rng() & 0xff);
      if (t == dtype::boolean)
        for (auto& b : storage) b = std::byte(rng() % 3 == 0 ? 0 : (rng() % 2 ? 1 : 0x80));  // non-0/1 reads as 1
      const std::vector<yaqa::index> shape{rows, cols};
      const tensor_view tv{"x", t, shape, std::span<const std::byte>(storage.data() + 1, std::size_t(n * esz)), "mem"};
      const matrix<T> m = to_matrix<T>(tv);
      const matrix<T> mt = to_matrix_transposed<T>(tv);
      const vector<T> v = to_vector<T>(tv);
      REQUIRE(m.rows() == rows);
      REQUIRE(m.cols() == cols);
      REQUIRE(mt.rows() == cols);
      REQUIRE(mt.cols() == rows);
      REQUIRE(v.size() == n);
      const std::byte* base = storage.data() + 1;
      for (yaqa::index i = 0; i < rows; ++i)
        for (yaqa::index j = 0; j < cols; ++j) {
          const T want = naive_element<T>(t, base, i * cols + j);
          if (!same(m(i, j), want) || !same(mt(j, i), want) || !same(v(i * cols + j), want))
            FAIL("dtype " << t << " " << rows << "x" << cols << " at (" << i << ", " << j << "): to_matrix " << m(i, j)
                          << ", transposed " << mt(j, i) << ", vector " << v(i * cols + j) << ", want " << want);
        }
    }
  }
}

TEST_CASE("converters handle 1-D, 0-D and empty tensors and check ranks", "[io][tensor]") {
  const std::vector<float> vals{1.5f, -2.f, 3.25f};
  const auto bytes = std::as_bytes(std::span(vals));
  const std::vector<yaqa::index> s1{3};
  const tensor_view v1{"b", dtype::f32, s1, bytes, "f.safetensors"};
  const matrix<double> col = to_matrix<double>(v1);
  REQUIRE(col.rows() == 3);
  REQUIRE(col.cols() == 1);
  CHECK(col(2, 0) == 3.25);
  const matrix<double> row = to_matrix_transposed<double>(v1);
  REQUIRE(row.rows() == 1);
  CHECK(row(0, 1) == -2.0);

  const tensor_view scalar{"s", dtype::f32, {}, bytes.first(4), ""};
  CHECK(scalar.numel() == 1);
  CHECK(to_vector<double>(scalar)(0) == 1.5);

  const std::vector<yaqa::index> s0{0, 4};
  const tensor_view empty{"e", dtype::f32, s0, {}, ""};
  CHECK(to_matrix<float>(empty).rows() == 0);
  CHECK(to_matrix<float>(empty).cols() == 4);

  const std::vector<yaqa::index> s3{1, 1, 3};
  const tensor_view v3{"w3", dtype::f32, s3, bytes, "f.safetensors"};
  CHECK(to_vector<float>(v3).size() == 3);
  for (auto fn : {+[](const tensor_view& t) { (void)to_matrix<float>(t); },
                  +[](const tensor_view& t) { (void)to_matrix_transposed<float>(t); }}) {
    const auto msg = yaqa::test::thrown_message<shape_error>([&] { fn(v3); });
    CHECK_THAT(msg, Catch::Contains("'w3'") && Catch::Contains("f.safetensors") && Catch::Contains("[1, 1, 3]") &&
                        Catch::Contains("1-D or 2-D"));
  }
  CHECK_THROWS_AS(to_matrix<float>(scalar), shape_error);
}

TEST_CASE("converters reject a view whose byte count disagrees with its shape", "[io][tensor]") {
  const std::vector<float> vals{1.f, 2.f, 3.f};
  const std::vector<yaqa::index> s{2, 2};
  const tensor_view bad{"w", dtype::f32, s, std::as_bytes(std::span(vals)), "m.safetensors"};
  const auto msg = yaqa::test::thrown_message<format_error>([&] { (void)to_matrix<float>(bad); });
  CHECK_THAT(msg, Catch::Contains("'w'") && Catch::Contains("12 bytes") && Catch::Contains("expected 16"));
  const std::vector<yaqa::index> neg{-1, 2};
  const tensor_view negative{"n", dtype::f32, neg, {}, ""};
  CHECK_THROWS_AS(to_vector<double>(negative), format_error);
  const std::vector<yaqa::index> huge{yaqa::index(1) << 40, yaqa::index(1) << 40};
  const tensor_view overflow{"h", dtype::f64, huge, {}, ""};
  const auto msg2 = yaqa::test::thrown_message<format_error>([&] { (void)to_vector<double>(overflow); });
  CHECK_THAT(msg2, Catch::Contains("'h'") && Catch::Contains("fits in 64 bits"));
}

TEMPLATE_LIST_TEST_CASE("encode_row_major writes a strided matrix in row-major order with correct rounding",
                        "[io][tensor]", yaqa::test::scalar_types) {
  using T = TestType;
  // A 131 x 517 block inside a larger matrix (ld > rows), crossing the encoder's 128 x 512 tiles.
  const matrix<T> big = yaqa::test::random_matrix<T>(135, 520, 9, 100.0);
  const auto sub = view(big).block(2, 1, 131, 517);
  for (dtype t : {dtype::f64, dtype::f32, dtype::f16, dtype::bf16}) {
    const auto bytes = detail::encode_row_major(matrix_view<const T>(sub), t);
    REQUIRE(yaqa::index(bytes.size()) == 131 * 517 * dtype_size(t));
    const yaqa::test::ref_encoder f16(5, 10), bf16(8, 7);
    for (yaqa::index i = 0; i < sub.rows; ++i)
      for (yaqa::index j = 0; j < sub.cols; ++j) {
        const std::byte* p = bytes.data() + (i * sub.cols + j) * dtype_size(t);
        const T x = sub(i, j);
        bool ok = true;
        if (t == dtype::f64) {
          double d;
          std::memcpy(&d, p, 8);
          ok = d == double(x);
        } else if (t == dtype::f32) {
          float f;
          std::memcpy(&f, p, 4);
          ok = f == float(x);
        } else {
          std::uint16_t h;
          std::memcpy(&h, p, 2);
          ok = h == (t == dtype::f16 ? f16 : bf16).encode(double(x));
        }
        if (!ok) FAIL("dtype " << t << " at (" << i << ", " << j << ")");
      }
  }
  CHECK_THROWS_AS(detail::encode_row_major(matrix_view<const T>(sub), dtype::i32), invalid_argument);
}

TEST_CASE("encode_row_major_le writes unsigned codes row-major, little-endian, across several tiles", "[io][codes]") {
  // 130 x 600 in a larger column-major buffer (ld 133): a full and a partial tile each way (128 x 512)
  auto check = [](auto zero) {
    using C = decltype(zero);
    matrix<C> buf(133, 600);
    std::uint64_t s = 12345;
    for (yaqa::index j = 0; j < buf.cols(); ++j)
      for (yaqa::index i = 0; i < buf.rows(); ++i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        buf(i, j) = static_cast<C>(s >> 29);
      }
    const matrix_view<const C> c(buf.data(), 130, 600, 133);
    const std::vector<std::byte> b = yaqa::detail::encode_row_major_le(c);
    REQUIRE(b.size() == std::size_t(130 * 600) * sizeof(C));
    std::size_t at = 0;
    for (yaqa::index i = 0; i < c.rows; ++i)
      for (yaqa::index j = 0; j < c.cols; ++j)
        for (std::size_t k = 0; k < sizeof(C); ++k, ++at)
          REQUIRE(std::to_integer<std::uint64_t>(b[at]) == ((std::uint64_t(c(i, j)) >> (8 * k)) & 0xffu));
    CHECK(yaqa::detail::encode_row_major_le(matrix_view<const C>(buf.data(), 0, 600, 1)).empty());
  };
  check(std::uint8_t{});
  check(std::uint16_t{});
  check(std::uint32_t{});
}
