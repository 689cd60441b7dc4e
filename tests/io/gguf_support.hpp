#pragma once
// Helpers for the GGUF and imatrix tests and tools/gguf_tool: a raw GGUF image builder that does
// not use gguf_writer (so malformed files can be built field by field), a Q8_0 block encoder, and
// the sample file the Python interop test reads with gguf-py.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <yaqa/io/float16.hpp>
#include <yaqa/io/gguf.hpp>

namespace yaqa::test {

//! Little-endian field appender for hand-built GGUF / legacy imatrix images.
struct raw_image {
  std::string s;
  raw_image& u8(std::uint8_t v) { return s.push_back(char(v)), *this; }
  raw_image& u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
    return *this;
  }
  raw_image& i32(std::int32_t v) { return u32(std::uint32_t(v)); }
  raw_image& u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
    return *this;
  }
  raw_image& f32(float v) {
    std::uint32_t b;
    std::memcpy(&b, &v, 4);
    return u32(b);
  }
  raw_image& str(std::string_view v) { return u64(v.size()), s.append(v), *this; }
  raw_image& bytes(std::string_view v) { return s.append(v), *this; }
  raw_image& pad(std::size_t alignment) {
    return s.append((alignment - s.size() % alignment) % alignment, '\0'), *this;
  }
};

//! A KV pair "key: u32".
inline std::string kv_u32(std::string_view key, std::uint32_t v) { return raw_image{}.str(key).u32(4).u32(v).s; }
//! A KV pair "key: string".
inline std::string kv_string(std::string_view key, std::string_view v) { return raw_image{}.str(key).u32(8).str(v).s; }
//! A tensor info.
inline std::string tensor_info(std::string_view name, const std::vector<std::uint64_t>& ne, std::uint32_t type,
                               std::uint64_t offset) {
  raw_image r;
  r.str(name).u32(std::uint32_t(ne.size()));
  for (auto d : ne) r.u64(d);
  return r.u32(type).u64(offset).s;
}
//! "GGUF", version, counts, the KV and tensor-info bytes, padding to `alignment`, then `data`.
inline std::string gguf_image(std::uint64_t n_kv, const std::string& kvs, std::uint64_t n_tensors,
                              const std::string& infos, const std::string& data, std::size_t alignment = 32,
                              std::uint32_t version = 3) {
  raw_image r;
  r.bytes("GGUF").u32(version).u64(n_tensors).u64(n_kv).bytes(kvs).bytes(infos).pad(alignment).bytes(data);
  return r.s;
}

//! Q8_0 blocks of `x` (length a multiple of 32): per block an f16 scale d = max|x| / 127 and 32
//! int8 q = round(x / d), the reference quantizer's layout (ggml's quantize_row_q8_0_ref).
inline std::vector<std::byte> q8_0_encode(const std::vector<float>& x) {
  std::vector<std::byte> out;
  for (std::size_t b = 0; b + 32 <= x.size(); b += 32) {
    float amax = 0;
    for (std::size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b + i]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    const std::uint16_t h = yaqa::to_f16_bits(d);
    out.push_back(std::byte(h & 0xff));
    out.push_back(std::byte(h >> 8));
    for (std::size_t i = 0; i < 32; ++i)
      out.push_back(std::byte(std::uint8_t(std::int8_t(std::lround(x[b + i] * id)))));
  }
  return out;
}
//! What Q8_0 blocks decode to: d * q.
inline std::vector<float> q8_0_decode(const std::vector<std::byte>& blocks) {
  std::vector<float> out;
  for (std::size_t b = 0; b + 34 <= blocks.size(); b += 34) {
    const auto h =
        std::uint16_t(std::to_integer<unsigned>(blocks[b]) | (std::to_integer<unsigned>(blocks[b + 1]) << 8));
    const float d = yaqa::f16_to_float(h);
    for (std::size_t i = 0; i < 32; ++i)
      out.push_back(d * float(std::int8_t(std::to_integer<std::uint8_t>(blocks[b + 2 + i]))));
  }
  return out;
}

//! Deterministic, irregular test values.
inline std::vector<float> wavy(std::size_t n, float scale = 1.0f) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.37f * float(i) + 0.1f) * (1.0f + float(i % 7));
  return v;
}

template <class T>
std::vector<std::byte> raw_bytes(const std::vector<T>& v) {
  const auto b = std::as_bytes(std::span(v));
  return {b.begin(), b.end()};
}

//! One KV pair of every value type, arrays of every element type, arrays of strings, nested arrays
//! and empty arrays: what the round-trip test and the Python interop test write.
inline std::vector<std::pair<std::string, gguf_value>> every_kv_type() {
  using V = gguf_value;
  using T = gguf_value_type;
  std::vector<std::pair<std::string, gguf_value>> kv;
  kv.emplace_back("general.architecture", V("llama"));
  kv.emplace_back("test.u8", V(std::uint8_t{255}));
  kv.emplace_back("test.i8", V(std::int8_t{-128}));
  kv.emplace_back("test.u16", V(std::uint16_t{65535}));
  kv.emplace_back("test.i16", V(std::int16_t{-32768}));
  kv.emplace_back("test.u32", V(std::uint32_t{4294967295u}));
  kv.emplace_back("test.i32", V(std::int32_t{-2147483647 - 1}));
  kv.emplace_back("test.f32", V(1.5f));
  kv.emplace_back("test.bool_true", V(true));
  kv.emplace_back("test.bool_false", V(false));
  kv.emplace_back("test.string", V("h\xc3\xa9llo, GGUF \xe2\x9c\x93"));
  kv.emplace_back("test.empty_string", V(""));
  kv.emplace_back("test.u64", V(std::uint64_t{18446744073709551615ull}));
  kv.emplace_back("test.i64", V(std::int64_t{-9223372036854775807ll - 1}));
  kv.emplace_back("test.f64", V(-2.0e-300));
  kv.emplace_back("test.arr_u8", V::array_of(std::vector<std::uint8_t>{0, 1, 255}));
  kv.emplace_back("test.arr_i8", V::array_of(std::vector<std::int8_t>{-128, 0, 127}));
  kv.emplace_back("test.arr_u16", V::array_of(std::vector<std::uint16_t>{0, 65535}));
  kv.emplace_back("test.arr_i16", V::array_of(std::vector<std::int16_t>{-32768, 32767}));
  kv.emplace_back("test.arr_u32", V::array_of(std::vector<std::uint32_t>{7, 4294967295u}));
  kv.emplace_back("test.arr_i32", V::array_of(std::vector<std::int32_t>{-1, 2, -3}));
  kv.emplace_back("test.arr_f32", V::array_of(std::vector<float>{0.25f, -1e30f, 3.0f}));
  kv.emplace_back("test.arr_bool", V::array_of(std::vector<bool>{true, false, true}));
  kv.emplace_back("test.arr_string", V::array_of(std::vector<std::string>{"a", "", "\xce\xbb"}));
  kv.emplace_back("test.arr_u64", V::array_of(std::vector<std::uint64_t>{0, 18446744073709551615ull}));
  kv.emplace_back("test.arr_i64", V::array_of(std::vector<std::int64_t>{-5, 9223372036854775807ll}));
  kv.emplace_back("test.arr_f64", V::array_of(std::vector<double>{1.0 / 3.0, -0.0}));
  kv.emplace_back("test.arr_empty", V(T::f32, {}));
  kv.emplace_back("test.arr_nested",
                  V(T::array, {V::array_of(std::vector<std::int32_t>{1, 2}), V::array_of(std::vector<std::int32_t>{}),
                               V::array_of(std::vector<std::int32_t>{3})}));
  kv.emplace_back("test.arr_nested_strings", V(T::array, {V::array_of(std::vector<std::string>{"x", "yz"}),
                                                          V::array_of(std::vector<std::string>{"w"})}));
  return kv;
}

}  // namespace yaqa::test
