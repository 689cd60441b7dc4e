#pragma once
//! \file
//! dtype: the element types of tensors in checkpoint files, their sizes and their names in the
//! safetensors and .npy formats. Shared by io/safetensors.hpp and io/npy.hpp.
#include <array>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string_view>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/config.hpp>

namespace yaqa {

//! Element type of a stored tensor. All multi-byte types are little-endian on disk.
enum class dtype : std::uint8_t {
  boolean,  //!< BOOL, one byte, 0 or 1 (any non-zero byte reads as 1)
  u8,
  i8,
  f8_e4m3,  //!< F8_E4M3 (E4M3FN): read-only, no conversion to it
  f8_e5m2,  //!< F8_E5M2: read-only, no conversion to it
  i16,
  u16,
  f16,   //!< IEEE binary16
  bf16,  //!< bfloat16 (no .npy equivalent)
  i32,
  u32,
  f32,
  i64,
  u64,
  f64,
};

namespace detail {
struct dtype_info {
  dtype type;
  std::string_view safetensors;  // name in a safetensors header
  std::string_view npy;          // descr in a .npy header, empty when numpy has no such type
  index size;                    // bytes per element
  bool floating;
};
inline constexpr std::array<dtype_info, 15> dtype_table{{
    {dtype::boolean, "BOOL", "|b1", 1, false},
    {dtype::u8, "U8", "|u1", 1, false},
    {dtype::i8, "I8", "|i1", 1, false},
    {dtype::f8_e4m3, "F8_E4M3", "", 1, true},
    {dtype::f8_e5m2, "F8_E5M2", "", 1, true},
    {dtype::i16, "I16", "<i2", 2, false},
    {dtype::u16, "U16", "<u2", 2, false},
    {dtype::f16, "F16", "<f2", 2, true},
    {dtype::bf16, "BF16", "", 2, true},
    {dtype::i32, "I32", "<i4", 4, false},
    {dtype::u32, "U32", "<u4", 4, false},
    {dtype::f32, "F32", "<f4", 4, true},
    {dtype::i64, "I64", "<i8", 8, false},
    {dtype::u64, "U64", "<u8", 8, false},
    {dtype::f64, "F64", "<f8", 8, true},
}};
constexpr const dtype_info& info(dtype t) { return dtype_table[static_cast<std::size_t>(t)]; }
}  // namespace detail

//! Bytes per element.
constexpr index dtype_size(dtype t) { return detail::info(t).size; }
//! True for the floating-point types (F64, F32, F16, BF16, F8_*).
constexpr bool is_floating(dtype t) { return detail::info(t).floating; }
//! The safetensors name ("F32", "BF16", ...); also what operator<< prints.
constexpr std::string_view safetensors_name(dtype t) { return detail::info(t).safetensors; }

//! The dtype with safetensors name `name`, or nullopt for an unknown name.
constexpr std::optional<dtype> dtype_from_safetensors_name(std::string_view name) {
  for (const auto& d : detail::dtype_table)
    if (d.safetensors == name) return d.type;
  return std::nullopt;
}

//! The dtype that stores T exactly (F32 for float, F64 for double).
template <Scalar T>
inline constexpr dtype dtype_of = sizeof(T) == 4 ? dtype::f32 : dtype::f64;

//! True when values can be converted *to* t by the writers (F64, F32, F16, BF16).
constexpr bool is_encodable(dtype t) {
  return t == dtype::f64 || t == dtype::f32 || t == dtype::f16 || t == dtype::bf16;
}

inline std::ostream& operator<<(std::ostream& os, dtype t) { return os << safetensors_name(t); }

}  // namespace yaqa
