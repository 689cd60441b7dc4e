#pragma once
//! \file
//! GGUF reading and writing (the file format of ggml / llama.cpp).
//!
//! Format (little-endian): "GGUF", u32 version (2 or 3 accepted; 3 written), u64 tensor count,
//! u64 KV count; the KV pairs (u64-length-prefixed key, u32 value type, value; an array is a u32
//! element type, a u64 count and the elements, which may themselves be arrays); the tensor infos
//! (name, u32 n_dims <= 4, n_dims u64 dims innermost first ("ne"), u32 ggml type, u64 offset
//! relative to the data section); zero padding up to the alignment (the u32 KV
//! "general.alignment", default 32); the data section.
//!
//! Reading (gguf_file) memory-maps the file and validates everything before anything is exposed,
//! so a corrupt or hostile file is rejected with a format_error naming the file, the key or tensor
//! and the rule it breaks, never read out of bounds: every count and length is checked against the
//! bytes left before anything is allocated. Writing (gguf_writer) collects KV pairs and tensors
//! (already-encoded blocks for quantized types) and writes them atomically (temporary file +
//! rename), like safetensors_writer. See docs/io.md.
#include <algorithm>
#include <array>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <Eigen/Core>

#include <yaqa/core/config.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/io/dtype.hpp>
#include <yaqa/io/file.hpp>
#include <yaqa/io/tensor.hpp>

namespace yaqa {

// ---- ggml tensor types ---------------------------------------------------------------------------

//! ggml's tensor type ids (enum ggml_type in ggml.h). Ids 4, 5, 31-33 and 36-38 belong to removed
//! types and are rejected like any unknown id.
enum class ggml_type : std::uint32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
  q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
  iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22, iq4_xs = 23,
  i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30,
  tq1_0 = 34, tq2_0 = 35, mxfp4 = 39, nvfp4 = 40, q1_0 = 41,
};

//! Layout of one ggml type: `block_size` elements (along the innermost dimension) are stored in
//! `type_size` bytes. Plain element types have block_size 1 and a matching dtype.
struct ggml_type_traits {
  ggml_type type;
  std::string_view name;  //!< ggml_type_name(): "F32", "Q8_0", "Q4_K", ...
  index block_size;
  index type_size;
  std::optional<dtype> element;  //!< the dtype of a non-quantized type, else nullopt
};

namespace detail {
// Sizes from ggml-common.h (the block_* structs and their static_asserts; QK_K = 256), checked
// against gguf-py 0.19.0's GGML_QUANT_SIZES, which agrees except for Q8_1: gguf-py still says 40
// bytes (two f32), ggml's block_q8_1 holds two f16 (36 bytes). Q8_1/Q8_K are intermediate types
// that never appear in model files.
inline constexpr std::array<ggml_type_traits, 34> ggml_type_table{{
    {ggml_type::f32, "F32", 1, 4, dtype::f32},
    {ggml_type::f16, "F16", 1, 2, dtype::f16},
    {ggml_type::q4_0, "Q4_0", 32, 18, std::nullopt},
    {ggml_type::q4_1, "Q4_1", 32, 20, std::nullopt},
    {ggml_type::q5_0, "Q5_0", 32, 22, std::nullopt},
    {ggml_type::q5_1, "Q5_1", 32, 24, std::nullopt},
    {ggml_type::q8_0, "Q8_0", 32, 34, std::nullopt},
    {ggml_type::q8_1, "Q8_1", 32, 36, std::nullopt},
    {ggml_type::q2_k, "Q2_K", 256, 84, std::nullopt},
    {ggml_type::q3_k, "Q3_K", 256, 110, std::nullopt},
    {ggml_type::q4_k, "Q4_K", 256, 144, std::nullopt},
    {ggml_type::q5_k, "Q5_K", 256, 176, std::nullopt},
    {ggml_type::q6_k, "Q6_K", 256, 210, std::nullopt},
    {ggml_type::q8_k, "Q8_K", 256, 292, std::nullopt},
    {ggml_type::iq2_xxs, "IQ2_XXS", 256, 66, std::nullopt},
    {ggml_type::iq2_xs, "IQ2_XS", 256, 74, std::nullopt},
    {ggml_type::iq3_xxs, "IQ3_XXS", 256, 98, std::nullopt},
    {ggml_type::iq1_s, "IQ1_S", 256, 50, std::nullopt},
    {ggml_type::iq4_nl, "IQ4_NL", 32, 18, std::nullopt},
    {ggml_type::iq3_s, "IQ3_S", 256, 110, std::nullopt},
    {ggml_type::iq2_s, "IQ2_S", 256, 82, std::nullopt},
    {ggml_type::iq4_xs, "IQ4_XS", 256, 136, std::nullopt},
    {ggml_type::i8, "I8", 1, 1, dtype::i8},
    {ggml_type::i16, "I16", 1, 2, dtype::i16},
    {ggml_type::i32, "I32", 1, 4, dtype::i32},
    {ggml_type::i64, "I64", 1, 8, dtype::i64},
    {ggml_type::f64, "F64", 1, 8, dtype::f64},
    {ggml_type::iq1_m, "IQ1_M", 256, 56, std::nullopt},
    {ggml_type::bf16, "BF16", 1, 2, dtype::bf16},
    {ggml_type::tq1_0, "TQ1_0", 256, 54, std::nullopt},
    {ggml_type::tq2_0, "TQ2_0", 256, 66, std::nullopt},
    {ggml_type::mxfp4, "MXFP4", 32, 17, std::nullopt},
    {ggml_type::nvfp4, "NVFP4", 64, 36, std::nullopt},
    {ggml_type::q1_0, "Q1_0", 128, 18, std::nullopt},
}};
}  // namespace detail

//! The layout of type id `id`, or nullptr for an unknown (or removed) id.
constexpr const ggml_type_traits* ggml_type_info(std::uint32_t id) {
  for (const auto& t : detail::ggml_type_table)
    if (static_cast<std::uint32_t>(t.type) == id) return &t;
  return nullptr;
}
//! The layout of t (t must be one of the enumerators).
constexpr const ggml_type_traits& ggml_traits(ggml_type t) { return *ggml_type_info(static_cast<std::uint32_t>(t)); }
constexpr std::string_view ggml_type_name(ggml_type t) { return ggml_traits(t).name; }
inline std::ostream& operator<<(std::ostream& os, ggml_type t) {
  const auto* info = ggml_type_info(static_cast<std::uint32_t>(t));
  return info ? os << info->name : os << "ggml type " << static_cast<std::uint32_t>(t);
}
//! The ggml type storing dtype d (F32, F16, BF16, F64, I8..I64), or nullopt.
constexpr std::optional<ggml_type> ggml_type_of(dtype d) {
  for (const auto& t : detail::ggml_type_table)
    if (t.element == d) return t.type;
  return std::nullopt;
}

// ---- metadata values ------------------------------------------------------------------------------

//! GGUF metadata value types (enum gguf_type). The numeric ids are the on-disk ones.
enum class gguf_value_type : std::uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9,
  u64 = 10, i64 = 11, f64 = 12,
};

constexpr std::string_view gguf_value_type_name(gguf_value_type t) {
  constexpr std::array<std::string_view, 13> names{"u8",  "i8",     "u16",    "i16",   "u32", "i32", "f32",
                                                   "bool", "string", "array", "u64",   "i64", "f64"};
  const auto i = static_cast<std::uint32_t>(t);
  return i < names.size() ? names[i] : std::string_view("unknown");
}
inline std::ostream& operator<<(std::ostream& os, gguf_value_type t) { return os << gguf_value_type_name(t); }

class gguf_value;

namespace detail {
//! The non-array alternatives of gguf_value, by exact type.
template <class X>
concept gguf_scalar = std::same_as<X, std::uint8_t> || std::same_as<X, std::int8_t> || std::same_as<X, std::uint16_t> ||
    std::same_as<X, std::int16_t> || std::same_as<X, std::uint32_t> || std::same_as<X, std::int32_t> ||
    std::same_as<X, float> || std::same_as<X, bool> || std::same_as<X, std::string> || std::same_as<X, std::uint64_t> ||
    std::same_as<X, std::int64_t> || std::same_as<X, double>;
}  // namespace detail

//! A GGUF array: elements all of `element_type` (arrays of arrays may differ in inner element types).
struct gguf_array {
  gguf_value_type element_type = gguf_value_type::u8;
  std::vector<gguf_value> values;
};

//! One metadata value: a std::variant whose alternative index is the on-disk type id.
class gguf_value {
 public:
  using storage = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t, std::uint32_t, std::int32_t,
                               float, bool, std::string, gguf_array, std::uint64_t, std::int64_t, double>;

  gguf_value() = default;
  //! A scalar of exactly type T (uint8_t, ..., double, bool, std::string).
  template <class T>
    requires detail::gguf_scalar<std::remove_cvref_t<T>>
  gguf_value(T&& v) : v_(std::in_place_type<std::remove_cvref_t<T>>, std::forward<T>(v)) {}  // NOLINT
  gguf_value(const char* s) : v_(std::in_place_type<std::string>, s) {}                     // NOLINT
  gguf_value(std::string_view s) : v_(std::in_place_type<std::string>, s) {}                // NOLINT
  //! An array; throws invalid_argument unless every element has type `element_type`.
  gguf_value(gguf_value_type element_type, std::vector<gguf_value> values) {
    for (std::size_t i = 0; i < values.size(); ++i)
      detail::require<invalid_argument>(values[i].type() == element_type, "yaqa::gguf_value: array element ", i,
                                        " is ", values[i].type(), "; expected ", element_type);
    v_.emplace<gguf_array>(gguf_array{element_type, std::move(values)});
  }
  //! An array of scalars of type T.
  template <class T>
  static gguf_value array_of(const std::vector<T>& items) {
    std::vector<gguf_value> v;
    v.reserve(items.size());
    for (const auto& x : items) v.emplace_back(x);
    return gguf_value(type_of<T>(), std::move(v));
  }

  //! The type id of alternative T (type_of<float>() == gguf_value_type::f32).
  template <class T, std::size_t I = 0>
  static constexpr gguf_value_type type_of() {
    if constexpr (std::is_same_v<std::variant_alternative_t<I, storage>, T>) return gguf_value_type(I);
    else return type_of<T, I + 1>();
  }

  [[nodiscard]] gguf_value_type type() const { return gguf_value_type(v_.index()); }
  [[nodiscard]] const storage& get() const { return v_; }
  template <class T>
  [[nodiscard]] bool is() const {
    return std::holds_alternative<T>(v_);
  }
  //! The value as T; format_error naming both types when it holds another type.
  template <class T>
  [[nodiscard]] const T& as() const {
    if (const T* p = std::get_if<T>(&v_)) return *p;
    throw format_error(detail::concat("yaqa::gguf_value: value is ", describe(), "; expected ", type_of<T>()));
  }
  [[nodiscard]] const gguf_array& as_array() const { return as<gguf_array>(); }
  //! The elements of an array of T; format_error when this is not an array of T.
  template <class T>
  [[nodiscard]] std::vector<T> as_vector() const {
    const auto& a = as_array();
    const auto want = type_of<T>();
    detail::require<format_error>(a.element_type == want, "yaqa::gguf_value: value is ", describe(), "; expected ",
                                  "array of ", want);
    std::vector<T> out;
    out.reserve(a.values.size());
    for (const auto& x : a.values) out.push_back(x.as<T>());
    return out;
  }
  //! Any integer type (u8..i64, not bool) as int64; format_error when the value does not fit.
  [[nodiscard]] std::int64_t as_int64() const {
    return std::visit(
        [&](const auto& x) -> std::int64_t {
          using X = std::remove_cvref_t<decltype(x)>;
          if constexpr (std::is_integral_v<X> && !std::is_same_v<X, bool>) {
            if constexpr (std::is_same_v<X, std::uint64_t>)
              detail::require<format_error>(x <= std::uint64_t(INT64_MAX), "yaqa::gguf_value: u64 value ", x,
                                            " does not fit in int64");
            return std::int64_t(x);
          } else {
            throw format_error(detail::concat("yaqa::gguf_value: value is ", describe(), "; expected an integer"));
          }
        },
        v_);
  }
  //! "u32", "string", "array of f32", ...
  [[nodiscard]] std::string describe() const {
    if (const auto* a = std::get_if<gguf_array>(&v_))
      return detail::concat("array of ", a->element_type, " (", a->values.size(), " elements)");
    return std::string(gguf_value_type_name(type()));
  }

  friend bool operator==(const gguf_value& a, const gguf_value& b);

 private:
  storage v_{std::in_place_type<std::uint8_t>, std::uint8_t{0}};
};

inline bool operator==(const gguf_array& a, const gguf_array& b) {
  return a.element_type == b.element_type && a.values == b.values;
}
//! Exact equality (floats compared by bits, so NaN == NaN with the same payload).
inline bool operator==(const gguf_value& a, const gguf_value& b) {
  if (a.v_.index() != b.v_.index()) return false;
  return std::visit(
      [&](const auto& x) {
        using X = std::remove_cvref_t<decltype(x)>;
        const X& y = std::get<X>(b.v_);
        if constexpr (std::is_same_v<X, float>)
          return std::bit_cast<std::uint32_t>(x) == std::bit_cast<std::uint32_t>(y);
        else if constexpr (std::is_same_v<X, double>)
          return std::bit_cast<std::uint64_t>(x) == std::bit_cast<std::uint64_t>(y);
        else return x == y;
      },
      a.v_);
}

// ---- reader -----------------------------------------------------------------------------------------

//! Limits of gguf_file.
struct gguf_read_options {
  //! Map the file (pages read on demand) rather than read it whole into memory.
  bool memory_map = true;
  //! Deepest accepted nesting of arrays in a metadata value (1 = arrays of scalars only). Parsing is
  //! recursive; the cap keeps a hostile file from exhausting the stack.
  int max_array_depth = 8;
};

//! ggml's limit on tensor name length (GGML_MAX_NAME, 64 including the terminating NUL).
inline constexpr std::size_t gguf_max_tensor_name = 63;
//! ggml's limit on the number of dimensions (GGML_MAX_DIMS).
inline constexpr std::uint32_t gguf_max_dims = 4;
//! The default data alignment (GGUF_DEFAULT_ALIGNMENT), used when "general.alignment" is absent.
inline constexpr std::uint32_t gguf_default_alignment = 32;

//! One tensor of a GGUF file.
struct gguf_tensor_info {
  std::string name;
  ggml_type type = ggml_type::f32;
  std::vector<index> ne;     //!< ggml order: innermost (contiguous) dimension first
  std::vector<index> shape;  //!< row-major ("numpy") order: ne reversed, outermost first
  std::uint64_t offset = 0;  //!< relative to the start of the data section
  std::span<const std::byte> bytes;  //!< the stored bytes (blocks for quantized types)

  [[nodiscard]] index numel() const {
    index n = 1;
    for (index d : ne) n *= d;
    return n;
  }
};

namespace detail {

struct gguf_state {
  std::string path_string;
  mapped_file file;
  std::uint32_t version = 0;
  std::uint32_t alignment = gguf_default_alignment;
  std::uint64_t data_offset = 0;
  std::vector<std::pair<std::string, gguf_value>> kvs;          // file order
  std::map<std::string, std::size_t, std::less<>> kv_index;      // key -> position in kvs
  std::vector<gguf_tensor_info> tensors;                          // file order; never resized after parsing
  std::map<std::string, std::size_t, std::less<>> tensor_index;  // name -> position in tensors
};

//! The unsigned integer of N bytes (the on-disk representation of a scalar of that size).
template <std::size_t N>
using uint_of_size = std::conditional_t<N == 1, std::uint8_t,
                                        std::conditional_t<N == 2, std::uint16_t,
                                                           std::conditional_t<N == 4, std::uint32_t, std::uint64_t>>>;

//! Bytes a value of type t occupies at least (the element size; strings and arrays: their headers).
constexpr std::uint64_t gguf_min_size(gguf_value_type t) {
  switch (t) {
    case gguf_value_type::u8: case gguf_value_type::i8: case gguf_value_type::boolean: return 1;
    case gguf_value_type::u16: case gguf_value_type::i16: return 2;
    case gguf_value_type::u32: case gguf_value_type::i32: case gguf_value_type::f32: return 4;
    case gguf_value_type::u64: case gguf_value_type::i64: case gguf_value_type::f64: return 8;
    case gguf_value_type::string: return 8;
    case gguf_value_type::array: return 12;
  }
  return 1;
}

//! Bytes of a tensor of type `info` and dims `ne` (innermost first), or nullopt on overflow or when
//! ne[0] is not a multiple of the block size (reason in `why`).
inline std::optional<std::uint64_t> ggml_nbytes(const ggml_type_traits& info, std::span<const index> ne,
                                                std::string& why) {
  index numel = 1;
  for (index d : ne) {
    if (d < 0) return why = "has a negative dimension", std::nullopt;
    if (__builtin_mul_overflow(numel, d, &numel))
      return why = "has too many elements (overflows 64 bits)", std::nullopt;
  }
  const index inner = ne.empty() ? 1 : ne[0];
  if (inner % info.block_size != 0) {
    why = concat("has innermost dimension ", inner, ", not a multiple of the ", info.name, " block size ",
                 info.block_size);
    return std::nullopt;
  }
  index bytes = 0;
  if (__builtin_mul_overflow(numel / info.block_size, info.type_size, &bytes))
    return why = "has a byte size that overflows 64 bits", std::nullopt;
  return std::uint64_t(bytes);
}

inline std::string gguf_brief(std::string_view s) {
  return s.size() <= 80 ? std::string(s) : concat(s.substr(0, 77), "...");
}

}  // namespace detail

//! A GGUF file opened for reading: metadata in file order, tensor infos in file order, and views
//! of the tensor bytes in the (memory-mapped) file. Cheap to copy: copies share the mapping.
class gguf_file {
 public:
  //! Opens and validates `path`. Cost: O(metadata + tensor infos); the data is not read (with
  //! memory_map). Throws io_error when the file cannot be opened or read, format_error when it is
  //! malformed.
  explicit gguf_file(const std::filesystem::path& path, const gguf_read_options& options = {}) {
    auto st = std::make_shared<detail::gguf_state>();
    st->path_string = path.string();
    st->file = mapped_file(path, options.memory_map, "yaqa::gguf_file");
    parse(*st, options);
    state_ = std::move(st);
  }

  //! Parses a GGUF image held in memory (taken over) with the validation of the file constructor;
  //! `name` stands for the file name in messages.
  static gguf_file from_bytes(std::vector<std::byte> bytes, std::string_view name = "<memory>",
                              const gguf_read_options& options = {}) {
    auto st = std::make_shared<detail::gguf_state>();
    st->path_string = std::string(name);
    st->file = mapped_file::from_bytes(std::move(bytes));
    parse(*st, options);
    return gguf_file(std::move(st));
  }

  [[nodiscard]] const std::string& path() const { return state_->path_string; }
  [[nodiscard]] std::uint32_t version() const { return state_->version; }
  //! The data alignment: "general.alignment", or 32 when absent.
  [[nodiscard]] std::uint32_t alignment() const { return state_->alignment; }
  //! Position of the data section in the file (aligned).
  [[nodiscard]] std::uint64_t data_offset() const { return state_->data_offset; }
  [[nodiscard]] std::uint64_t file_size() const { return state_->file.size(); }
  [[nodiscard]] bool is_memory_mapped() const { return state_->file.is_mapped(); }

  //! All KV pairs, in file order.
  [[nodiscard]] std::span<const std::pair<std::string, gguf_value>> metadata() const { return state_->kvs; }
  //! The keys, in file order.
  [[nodiscard]] std::vector<std::string> keys() const {
    std::vector<std::string> k;
    k.reserve(state_->kvs.size());
    for (const auto& kv : state_->kvs) k.push_back(kv.first);
    return k;
  }
  [[nodiscard]] bool contains_key(std::string_view key) const { return find_value(key) != nullptr; }
  //! The value of `key`, or nullptr.
  [[nodiscard]] const gguf_value* find_value(std::string_view key) const {
    auto it = state_->kv_index.find(key);
    return it == state_->kv_index.end() ? nullptr : &state_->kvs[it->second].second;
  }
  //! The value of `key`; format_error naming the file when absent.
  [[nodiscard]] const gguf_value& value(std::string_view key) const {
    const gguf_value* v = find_value(key);
    detail::require<format_error>(v != nullptr, "yaqa::gguf_file: '", path(), "' has no key '", key, "'");
    return *v;
  }
  //! The value of `key` as T; format_error naming the file, the key and both types on a mismatch.
  template <class T>
  [[nodiscard]] const T& get(std::string_view key) const {
    const gguf_value& v = value(key);
    detail::require<format_error>(v.is<T>(), "yaqa::gguf_file: '", path(), "': key '", key, "' is ", v.describe(),
                                  "; expected ", gguf_value::type_of<T>());
    return v.as<T>();
  }

  //! All tensors, in file order.
  [[nodiscard]] std::span<const gguf_tensor_info> tensors() const { return state_->tensors; }
  [[nodiscard]] std::size_t size() const { return state_->tensors.size(); }
  [[nodiscard]] bool contains(std::string_view name) const { return find(name) != nullptr; }
  [[nodiscard]] const gguf_tensor_info* find(std::string_view name) const {
    auto it = state_->tensor_index.find(name);
    return it == state_->tensor_index.end() ? nullptr : &state_->tensors[it->second];
  }
  [[nodiscard]] const gguf_tensor_info& at(std::string_view name) const {
    const gguf_tensor_info* t = find(name);
    detail::require<format_error>(t != nullptr, "yaqa::gguf_file::at: '", path(), "' has no tensor '", name,
                                  "' (it has ", size(), " tensors)");
    return *t;
  }
  //! A tensor_view (row-major shape) of a tensor of a plain element type (F32, F16, BF16, F64,
  //! I8..I64), for to_matrix / to_vector; format_error for a block-quantized type. The view
  //! points into this file's state: keep the gguf_file (or a copy) alive while using it.
  [[nodiscard]] tensor_view view(const gguf_tensor_info& t) const {
    const auto& info = ggml_traits(t.type);
    detail::require<format_error>(info.element.has_value(), "yaqa::gguf_file::view: tensor '", t.name, "' in '",
                                  path(), "' is ", info.name,
                                  ", a block-quantized type; only F32, F16, BF16, F64 and I8..I64 tensors convert to "
                                  "values (use gguf_tensor_info::bytes for the blocks)");
    return tensor_view{t.name, *info.element, t.shape, t.bytes, path()};
  }
  [[nodiscard]] tensor_view view(std::string_view name) const { return view(at(name)); }

 private:
  explicit gguf_file(std::shared_ptr<const detail::gguf_state> st) : state_(std::move(st)) {}

  template <class... A>
  [[noreturn]] static void fail(const detail::gguf_state& st, A&&... a) {
    throw format_error(detail::concat("yaqa::gguf_file: '", st.path_string, "': ", std::forward<A>(a)...));
  }

  struct cursor {
    const detail::gguf_state& st;
    const std::byte* p;
    std::uint64_t size, pos = 0;

    [[nodiscard]] std::uint64_t left() const { return size - pos; }
    template <class... A>
    void need(std::uint64_t n, const A&... what) const {
      if (left() < n)
        fail(st, "truncated: ", what..., " needs ", n, " bytes at offset ", pos, " but only ", left(),
             " remain (file size ", size, ")");
    }
    template <class U, class... A>
    U read(const A&... what) {
      need(sizeof(U), what...);
      const U v = detail::load_le<U>(p + pos);
      pos += sizeof(U);
      return v;
    }
    template <class... A>
    std::string string(const A&... what) {
      const auto n = read<std::uint64_t>(what..., " (string length)");
      need(n, what..., " (string of length ", n, ")");
      std::string s(reinterpret_cast<const char*>(p + pos), std::size_t(n));
      pos += n;
      return s;
    }
  };

  static gguf_value read_value(cursor& c, gguf_value_type t, const std::string& key, int depth,
                               const gguf_read_options& opt) {
    auto num = [&]<class U>(std::type_identity<U>) {
      return gguf_value(std::bit_cast<U>(c.read<detail::uint_of_size<sizeof(U)>>("key '", key, "': ",
                                                                                gguf_value_type_name(t), " value")));
    };
    switch (t) {
      case gguf_value_type::u8: return num(std::type_identity<std::uint8_t>{});
      case gguf_value_type::i8: return num(std::type_identity<std::int8_t>{});
      case gguf_value_type::u16: return num(std::type_identity<std::uint16_t>{});
      case gguf_value_type::i16: return num(std::type_identity<std::int16_t>{});
      case gguf_value_type::u32: return num(std::type_identity<std::uint32_t>{});
      case gguf_value_type::i32: return num(std::type_identity<std::int32_t>{});
      case gguf_value_type::f32: return num(std::type_identity<float>{});
      case gguf_value_type::u64: return num(std::type_identity<std::uint64_t>{});
      case gguf_value_type::i64: return num(std::type_identity<std::int64_t>{});
      case gguf_value_type::f64: return num(std::type_identity<double>{});
      case gguf_value_type::boolean: {
        const auto b = c.read<std::uint8_t>("key '", key, "': bool value");
        if (b > 1)
          fail(c.st, "key '", key, "': bool value is byte ", unsigned(b), " at offset ", c.pos - 1,
               "; expected 0 or 1");
        return gguf_value(b == 1);
      }
      case gguf_value_type::string: return gguf_value(c.string("key '", key, "': string value"));
      case gguf_value_type::array: {
        if (depth >= opt.max_array_depth)
          fail(c.st, "key '", key, "': arrays nested deeper than ", opt.max_array_depth,
               " levels (gguf_read_options::max_array_depth)");
        const auto et = c.read<std::uint32_t>("key '", key, "': array element type");
        if (et > 12) fail(c.st, "key '", key, "': unknown array element type ", et, "; expected 0..12");
        const auto etype = gguf_value_type(et);
        const auto n = c.read<std::uint64_t>("key '", key, "': array length");
        const auto min = detail::gguf_min_size(etype);
        if (n > c.left() / min)
          fail(c.st, "key '", key, "': array of ", n, " ", etype, " elements needs at least ", min,
               " bytes each but only ", c.left(), " bytes remain; the file is truncated or the length is corrupt");
        std::vector<gguf_value> values;
        values.reserve(std::size_t(n));
        for (std::uint64_t i = 0; i < n; ++i) values.push_back(read_value(c, etype, key, depth + 1, opt));
        return gguf_value(etype, std::move(values));
      }
    }
    fail(c.st, "key '", key, "': unknown value type ", std::uint32_t(t), "; expected 0..12");
  }

  static void parse(detail::gguf_state& st, const gguf_read_options& opt) {
    const auto bytes = st.file.bytes();
    cursor c{st, bytes.data(), bytes.size()};
    if (c.size < 4) fail(st, "file is ", c.size, " bytes; too short for the GGUF magic");
    if (std::memcmp(bytes.data(), "GGUF", 4) != 0) {
      std::string shown;
      for (int i = 0; i < 4; ++i) {
        const auto ch = static_cast<unsigned char>(bytes[std::size_t(i)]);
        shown += ch >= 32 && ch < 127 ? std::string(1, char(ch)) : concat_hex(ch);
      }
      fail(st, "bad magic '", shown, "'; expected 'GGUF' (not a GGUF file)");
    }
    c.pos = 4;
    st.version = c.read<std::uint32_t>("the version");
    if (st.version == 1) fail(st, "GGUF version 1 is not supported (32-bit counts); expected version 2 or 3");
    if (st.version != 2 && st.version != 3) {
      if (st.version == 0x02000000u || st.version == 0x03000000u)
        fail(st, "version field 0x", std::hex, st.version, std::dec,
             " is a byte-swapped 2 or 3: a big-endian GGUF; only little-endian files are supported");
      fail(st, "unsupported GGUF version ", st.version, "; expected 2 or 3");
    }
    const auto n_tensors = c.read<std::uint64_t>("the tensor count");
    const auto n_kv = c.read<std::uint64_t>("the KV count");
    // Each KV takes >= 13 bytes (key length, type, 1-byte value), each tensor info >= 24.
    if (n_kv > c.left() / 13)
      fail(st, "KV count ", n_kv, " cannot fit in the ", c.left(), " bytes after the header (13 bytes each at least)");

    st.kvs.reserve(std::size_t(n_kv));
    for (std::uint64_t i = 0; i < n_kv; ++i) {
      std::string key = c.string("KV ", i, ": key");
      if (key.empty()) fail(st, "KV ", i, ": empty key; expected a non-empty name");
      if (st.kv_index.count(key)) fail(st, "key '", detail::gguf_brief(key), "' appears twice; expected unique keys");
      const auto t = c.read<std::uint32_t>("key '", key, "': value type");
      if (t > 12) fail(st, "key '", detail::gguf_brief(key), "': unknown value type ", t, "; expected 0..12");
      gguf_value v = read_value(c, gguf_value_type(t), key, 0, opt);
      st.kv_index.emplace(key, st.kvs.size());
      st.kvs.emplace_back(std::move(key), std::move(v));
    }
    if (const gguf_value* a = find_in(st, "general.alignment")) {
      if (!a->is<std::uint32_t>()) fail(st, "key 'general.alignment' is ", a->describe(), "; expected u32");
      const auto al = a->as<std::uint32_t>();
      if (al == 0 || !std::has_single_bit(al))
        fail(st, "key 'general.alignment' is ", al, "; expected a non-zero power of two");
      st.alignment = al;
    }

    if (n_tensors > c.left() / 24)
      fail(st, "tensor count ", n_tensors, " cannot fit in the ", c.left(),
           " bytes left after the metadata (24 bytes of tensor info each at least)");
    st.tensors.reserve(std::size_t(n_tensors));
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
      gguf_tensor_info t;
      t.name = c.string("tensor info ", i, ": name");
      const std::string n = detail::gguf_brief(t.name);
      if (t.name.empty()) fail(st, "tensor info ", i, ": empty name");
      if (t.name.size() > gguf_max_tensor_name)
        fail(st, "tensor '", n, "': name is ", t.name.size(), " bytes; ggml allows at most ", gguf_max_tensor_name);
      if (st.tensor_index.count(t.name)) fail(st, "tensor '", n, "' appears twice; expected unique tensor names");
      const auto n_dims = c.read<std::uint32_t>("tensor '", n, "': n_dims");
      if (n_dims > gguf_max_dims)
        fail(st, "tensor '", n, "': n_dims ", n_dims, " exceeds ", gguf_max_dims, " (GGML_MAX_DIMS)");
      for (std::uint32_t d = 0; d < n_dims; ++d) {
        const auto v = c.read<std::uint64_t>("tensor '", n, "': dimension ", d);
        if (v > std::uint64_t(INT64_MAX))
          fail(st, "tensor '", n, "': dimension ", d, " is ", v, " (negative as int64)");
        t.ne.push_back(index(v));
      }
      const auto type_id = c.read<std::uint32_t>("tensor '", n, "': type");
      const ggml_type_traits* info = ggml_type_info(type_id);
      if (!info) fail(st, "tensor '", n, "': unknown ggml type id ", type_id);
      t.type = info->type;
      t.offset = c.read<std::uint64_t>("tensor '", n, "': offset");
      t.shape.assign(t.ne.rbegin(), t.ne.rend());
      st.tensor_index.emplace(t.name, st.tensors.size());
      st.tensors.push_back(std::move(t));
    }

    // The data section starts at the next multiple of the alignment. A file without tensors may
    // end before it (nothing to pad for).
    const std::uint64_t al = st.alignment;
    const std::uint64_t start = c.pos + (al - c.pos % al) % al;
    if (start > c.size && n_tensors > 0)
      fail(st, "truncated: the data section starts at offset ", start, " (after padding to ", al,
           ") but the file has ", c.size, " bytes");
    st.data_offset = start;
    const std::uint64_t data_size = start <= c.size ? c.size - start : 0;

    std::vector<std::pair<std::uint64_t, const gguf_tensor_info*>> used;  // (end, tensor) of non-empty ones
    for (auto& t : st.tensors) {
      std::string why;
      const auto nbytes = detail::ggml_nbytes(ggml_traits(t.type), t.ne, why);
      if (!nbytes) fail(st, "tensor '", t.name, "' of type ", t.type, " and ne ", detail::shape_string(t.ne), " ", why);
      if (t.offset % al != 0)
        fail(st, "tensor '", t.name, "': offset ", t.offset, " is not a multiple of the alignment ", al);
      if (t.offset > data_size || *nbytes > data_size - t.offset)
        fail(st, "tensor '", t.name, "': bytes [", t.offset, ", ", t.offset, " + ", *nbytes,
             ") run past the end of the data section (", data_size,
             " bytes); the file is truncated or the offset is wrong");
      t.bytes = std::span<const std::byte>(bytes.data() + start + t.offset, std::size_t(*nbytes));
      if (*nbytes > 0) used.emplace_back(t.offset, &t);
    }
    std::sort(used.begin(), used.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (std::size_t i = 1; i < used.size(); ++i) {
      const auto& a = *used[i - 1].second;
      const auto& b = *used[i].second;
      if (b.offset < a.offset + a.bytes.size())
        fail(st, "tensors '", a.name, "' [", a.offset, ", ", a.offset + a.bytes.size(), ") and '", b.name, "' [",
             b.offset, ", ", b.offset + b.bytes.size(), ") overlap; expected disjoint data");
    }
  }

  static std::string concat_hex(unsigned char ch) {
    constexpr const char* hex = "0123456789abcdef";
    return std::string("\\x") + hex[ch >> 4] + hex[ch & 15];
  }
  static const gguf_value* find_in(const detail::gguf_state& st, std::string_view key) {
    auto it = st.kv_index.find(key);
    return it == st.kv_index.end() ? nullptr : &st.kvs[it->second].second;
  }

  std::shared_ptr<const detail::gguf_state> state_;
};

// ---- writer -------------------------------------------------------------------------------------------

//! Collects KV pairs and tensors and writes them as one GGUF (version 3) file.
//!
//! Layout written: the KV pairs in insertion order, the tensor infos in insertion order, zero
//! padding to the alignment, then each tensor's bytes in the same order, each padded with zeros to
//! a multiple of the alignment (what ggml and gguf-py write, so copying a file they wrote through
//! copy_from() reproduces it byte for byte). The alignment is "general.alignment" when set (a u32,
//! non-zero power of two), else 32. write() goes through a temporary file and a rename.
class gguf_writer {
 public:
  gguf_writer() = default;
  gguf_writer(const gguf_writer&) = delete;  // entries' spans point into their own buffers
  gguf_writer& operator=(const gguf_writer&) = delete;
  gguf_writer(gguf_writer&&) = default;
  gguf_writer& operator=(gguf_writer&&) = default;

  //! Sets `key` to `v`: replaces the value in place when the key exists, else appends it.
  void set(std::string key, gguf_value v) {
    detail::require<invalid_argument>(!key.empty(), "yaqa::gguf_writer::set: key must be non-empty");
    for (auto& kv : kvs_)
      if (kv.first == key) {
        kv.second = std::move(v);
        return;
      }
    kvs_.emplace_back(std::move(key), std::move(v));
  }
  //! Removes `key`; returns whether it was there.
  bool erase(std::string_view key) {
    auto it = std::find_if(kvs_.begin(), kvs_.end(), [&](const auto& kv) { return kv.first == key; });
    if (it == kvs_.end()) return false;
    kvs_.erase(it);
    return true;
  }
  //! Sets "general.alignment" (non-zero power of two).
  void set_alignment(std::uint32_t alignment) {
    detail::require<invalid_argument>(alignment != 0 && std::has_single_bit(alignment),
                                      "yaqa::gguf_writer::set_alignment: alignment ", alignment,
                                      " is not a non-zero power of two");
    set("general.alignment", gguf_value(alignment));
  }
  [[nodiscard]] std::span<const std::pair<std::string, gguf_value>> metadata() const { return kvs_; }

  //! Adds a tensor from its stored bytes (copied): `shape` is row-major (outermost first, as numpy
  //! and safetensors write it; the file stores it reversed), and for a block-quantized type the
  //! bytes are the already-encoded blocks of each row (the innermost dimension, shape.back(), must
  //! be a multiple of the block size).
  void add(std::string name, ggml_type type, std::vector<index> shape, std::span<const std::byte> bytes) {
    auto& e = insert(std::move(name), type, std::move(shape), bytes.size(), "add");
    e.owned.assign(bytes.begin(), bytes.end());
    e.data = e.owned;
  }
  //! Like add() but keeps a reference: `bytes` must stay valid until write() returns.
  void add_borrowed(std::string name, ggml_type type, std::vector<index> shape, std::span<const std::byte> bytes) {
    insert(std::move(name), type, std::move(shape), bytes.size(), "add_borrowed").data = bytes;
  }
  //! Pass-through of a tensor of a gguf_file (borrowed: keep the file alive until write()).
  void add_borrowed(const gguf_tensor_info& t) { add_borrowed(t.name, t.type, t.shape, t.bytes); }
  //! Adds the rows x cols matrix m as a [rows, cols] tensor (ne = [cols, rows]) converted to
  //! `stored` (F32, F16, BF16 or F64; narrowing rounds to nearest even).
  template <class T>
    requires Scalar<std::remove_const_t<T>>
  void add(std::string name, matrix_view<T, host_space> m, ggml_type stored = ggml_type::f32) {
    const auto& info = ggml_traits(stored);
    detail::require<invalid_argument>(info.element && is_encodable(*info.element),
                                      "yaqa::gguf_writer::add: cannot store '", name, "' as ", info.name,
                                      "; values convert only to F32, F16, BF16 or F64 "
                                      "(add already-encoded blocks as bytes)");
    auto bytes = detail::encode_row_major(matrix_view<const std::remove_const_t<T>>(m.data, m.rows, m.cols, m.ld),
                                          *info.element);
    auto& e = insert(std::move(name), stored, {m.rows, m.cols}, bytes.size(), "add");
    e.owned = std::move(bytes);
    e.data = e.owned;
  }
  //! Same for any Eigen dense expression (evaluated first).
  template <class Derived>
  void add(std::string name, const Eigen::DenseBase<Derived>& m, ggml_type stored = ggml_type::f32) {
    const matrix<typename Derived::Scalar> tmp = m;
    add(std::move(name), view(tmp), stored);
  }
  //! Copies every KV pair of `f` (including general.alignment) and, when `tensors` is set, every
  //! tensor (borrowed: keep `f` alive until write()).
  void copy_from(const gguf_file& f, bool tensors = true) {
    for (const auto& [k, v] : f.metadata()) set(k, v);
    if (tensors)
      for (const auto& t : f.tensors()) add_borrowed(t);
  }

  //! Declares an input path that write() must refuse to overwrite.
  void forbid_path(std::filesystem::path p) { forbidden_.push_back(std::move(p)); }
  [[nodiscard]] std::size_t size() const { return entries_.size(); }
  [[nodiscard]] bool contains(std::string_view name) const { return names_.find(name) != names_.end(); }

  //! Writes the file atomically. Throws invalid_argument for a forbidden path or a bad
  //! "general.alignment", io_error when the OS refuses.
  void write(const std::filesystem::path& path) const {
    constexpr const char* what = "yaqa::gguf_writer::write";
    check_not_forbidden(what, path, forbidden_);
    const auto al = alignment(what);
    atomic_output_file out(path, what);
    out.write(header(al));
    const std::vector<std::byte> zeros(std::min<std::size_t>(al, 4096));
    for (const auto& e : entries_) {
      out.write(e.data);
      for (std::size_t p = pad(e.data.size(), al); p > 0;) {
        const std::size_t k = std::min(p, zeros.size());
        out.write(std::span(zeros.data(), k));
        p -= k;
      }
    }
    out.commit();
  }
  //! The whole file image in memory (what write() would write).
  [[nodiscard]] std::vector<std::byte> to_bytes() const {
    const auto al = alignment("yaqa::gguf_writer::to_bytes");
    std::vector<std::byte> img = header(al);
    for (const auto& e : entries_) {
      img.insert(img.end(), e.data.begin(), e.data.end());
      img.resize(img.size() + pad(e.data.size(), al));
    }
    return img;
  }

 private:
  struct entry {
    std::string name;
    ggml_type type;
    std::vector<index> shape;  // row-major
    std::vector<std::byte> owned;
    std::span<const std::byte> data;
  };

  static std::size_t pad(std::uint64_t n, std::uint64_t al) { return std::size_t((al - n % al) % al); }

  std::uint32_t alignment(const char* what) const {
    for (const auto& [k, v] : kvs_)
      if (k == "general.alignment") {
        detail::require<invalid_argument>(v.is<std::uint32_t>(), what, ": general.alignment is ", v.describe(),
                                          "; expected u32");
        const auto al = v.as<std::uint32_t>();
        detail::require<invalid_argument>(al != 0 && std::has_single_bit(al), what, ": general.alignment ", al,
                                          " is not a non-zero power of two");
        return al;
      }
    return gguf_default_alignment;
  }

  entry& insert(std::string name, ggml_type type, std::vector<index> shape, std::size_t nbytes, const char* fn) {
    const std::string what = std::string("yaqa::gguf_writer::") + fn;
    detail::require<invalid_argument>(!name.empty(), what, ": tensor name must be non-empty");
    detail::require<invalid_argument>(name.size() <= gguf_max_tensor_name, what, ": tensor name '", name, "' is ",
                                      name.size(), " bytes; ggml allows at most ", gguf_max_tensor_name);
    detail::require<invalid_argument>(!contains(name), what, ": tensor '", name,
                                      "' was already added; expected unique names");
    const ggml_type_traits* info = ggml_type_info(static_cast<std::uint32_t>(type));
    detail::require<invalid_argument>(info != nullptr, what, ": tensor '", name, "': unknown ggml type id ",
                                      static_cast<std::uint32_t>(type));
    detail::require<shape_error>(shape.size() <= gguf_max_dims, what, ": tensor '", name, "' has ", shape.size(),
                                 " dimensions; GGUF allows at most ", gguf_max_dims);
    const std::vector<index> ne(shape.rbegin(), shape.rend());
    std::string why;
    const auto expected = detail::ggml_nbytes(*info, ne, why);
    detail::require<shape_error>(expected.has_value(), what, ": tensor '", name, "' of type ", info->name,
                                 " and shape ", detail::shape_string(shape), " ", why);
    detail::require<shape_error>(*expected == nbytes, what, ": tensor '", name, "' has ", nbytes, " bytes; expected ",
                                 *expected, " (shape ", detail::shape_string(shape), " of ", info->name, ")");
    names_.insert(name);
    return entries_.emplace_back(entry{std::move(name), type, std::move(shape), {}, {}});
  }

  static void put_u32(std::vector<std::byte>& b, std::uint32_t v) {
    b.resize(b.size() + 4);
    detail::store_le(b.data() + b.size() - 4, v);
  }
  static void put_u64(std::vector<std::byte>& b, std::uint64_t v) {
    b.resize(b.size() + 8);
    detail::store_le(b.data() + b.size() - 8, v);
  }
  static void put_string(std::vector<std::byte>& b, std::string_view s) {
    put_u64(b, s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    b.insert(b.end(), p, p + s.size());
  }
  static void put_value(std::vector<std::byte>& b, const gguf_value& v) {
    std::visit(
        [&](const auto& x) {
          using X = std::remove_cvref_t<decltype(x)>;
          if constexpr (std::is_same_v<X, std::string>) {
            put_string(b, x);
          } else if constexpr (std::is_same_v<X, gguf_array>) {
            put_u32(b, static_cast<std::uint32_t>(x.element_type));
            put_u64(b, x.values.size());
            for (const auto& e : x.values) put_value(b, e);
          } else if constexpr (std::is_same_v<X, bool>) {
            b.push_back(std::byte{x ? std::uint8_t{1} : std::uint8_t{0}});
          } else {
            b.resize(b.size() + sizeof(X));
            detail::store_le(b.data() + b.size() - sizeof(X), std::bit_cast<detail::uint_of_size<sizeof(X)>>(x));
          }
        },
        v.get());
  }

  [[nodiscard]] std::vector<std::byte> header(std::uint32_t al) const {
    std::vector<std::byte> b(4);
    std::memcpy(b.data(), "GGUF", 4);
    put_u32(b, 3);
    put_u64(b, entries_.size());
    put_u64(b, kvs_.size());
    for (const auto& [k, v] : kvs_) {
      put_string(b, k);
      put_u32(b, static_cast<std::uint32_t>(v.type()));
      put_value(b, v);
    }
    std::uint64_t offset = 0;
    for (const auto& e : entries_) {
      put_string(b, e.name);
      put_u32(b, std::uint32_t(e.shape.size()));
      for (auto it = e.shape.rbegin(); it != e.shape.rend(); ++it) put_u64(b, std::uint64_t(*it));
      put_u32(b, static_cast<std::uint32_t>(e.type));
      put_u64(b, offset);
      offset += e.data.size() + pad(e.data.size(), al);
    }
    b.resize(b.size() + pad(b.size(), al));
    return b;
  }

  std::vector<std::pair<std::string, gguf_value>> kvs_;
  std::vector<entry> entries_;  // insertion order; `data` of owned entries points into `owned`
  std::set<std::string, std::less<>> names_;
  std::vector<std::filesystem::path> forbidden_;
};

}  // namespace yaqa
