#pragma once
//! \file
//! tensor_view: a non-owning description of one stored tensor (name, dtype, shape, raw
//! little-endian bytes in row-major order) as exposed by the safetensors and .npy readers, and
//! the converters from it to Eigen matrices and vectors of float or double.
//!
//! Costs: to_vector and to_matrix_transposed decode the bytes in storage order (one sequential
//! pass). to_matrix also transposes, because the file is row-major and yaqa::matrix is
//! column-major; it decodes 128 x 512 tiles into a small row-major buffer and lets Eigen transpose
//! each tile in cache; on large matrices it costs about 1.5-2x the sequential pass.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <concepts>
#include <iterator>
#include <optional>
#include <ranges>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/config.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/io/dtype.hpp>
#include <yaqa/io/float16.hpp>

namespace yaqa {

//! One stored tensor, viewed: the bytes belong to whoever produced the view (a mapped
//! safetensors file, an npy_array) and stay valid only as long as that object lives.
struct tensor_view {
  std::string_view name;          //!< tensor name; empty for a .npy array
  dtype type = dtype::f32;        //!< element type of `bytes`
  std::span<const index> shape;   //!< outermost first (row-major); empty for a scalar
  std::span<const std::byte> bytes;  //!< numel() * dtype_size(type) bytes, C order, little-endian
  std::string_view source;        //!< file the tensor came from (for messages); may be empty

  [[nodiscard]] index rank() const { return index(shape.size()); }
  //! Number of elements: the product of the shape (1 for a scalar).
  [[nodiscard]] index numel() const {
    index n = 1;
    for (index d : shape) n *= d;
    return n;
  }
};

namespace detail {

//! "[2, 3]"
inline std::string shape_string(std::span<const index> shape) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << ']';
  return os.str();
}

//! "tensor 'w' in 'model.safetensors'", "array in 'h.npy'", ... for error messages.
inline std::string describe(const tensor_view& t) {
  std::string s = t.name.empty() && !t.source.empty() ? "array" : "tensor '" + std::string(t.name) + "'";
  if (!t.source.empty()) s += " in '" + std::string(t.source) + "'";
  return s;
}

//! Throws non_finite_error naming the tensor (and its file) and the first NaN/Inf of `a`, the
//! matrix read from it: "<prefix>tensor 'w' in 'f' holds a non-finite value (nan at [i, j]);
//! expected <expected>".
template <class T>
void check_finite(const tensor_view& t, const matrix<T>& a, std::string_view expected = "finite values",
                  std::string_view prefix = {}) {
  const auto [i, j] = first_non_finite(matrix_view<const T>{a.data(), a.rows(), a.cols(), a.rows() > 0 ? a.rows() : 1});
  if (i >= 0)
    throw non_finite_error(detail::concat(prefix, describe(t), " holds a non-finite value (", a(i, j), " at [", i,
                                          ", ", j, "]); expected ", expected));
}

//! Product of the dimensions times elem_size, or nullopt when a dimension is negative or the
//! byte count does not fit in index (the reader's overflow guard).
inline std::optional<index> checked_nbytes(std::span<const index> shape, index elem_size) {
  index n = elem_size;
  for (index d : shape) {
    if (d < 0) return std::nullopt;
    if (__builtin_mul_overflow(n, d, &n)) return std::nullopt;
  }
  return n;
}

template <class U>
U byteswap_int(U v) {
  U r = 0;
  for (std::size_t i = 0; i < sizeof(U); ++i) {
    r = U(r << 8) | U(v & 0xffu);
    v = U(v >> 8);
  }
  return r;
}

//! Unaligned little-endian load of an integer of type U.
template <class U>
U load_le(const std::byte* p) {
  U v;
  std::memcpy(&v, p, sizeof(U));
  if constexpr (std::endian::native == std::endian::big) v = byteswap_int(v);
  return v;
}

//! Unaligned little-endian store of an integer of type U.
template <class U>
void store_le(std::byte* p, U v) {
  if constexpr (std::endian::native == std::endian::big) v = byteswap_int(v);
  std::memcpy(p, &v, sizeof(U));
}

//! Decodes `count` consecutive elements of type t at src into dst[0..count).
template <Scalar T>
void decode(dtype t, const std::byte* src, index count, T* dst) {
  auto loop = [&](auto&& one, index size) {
    for (index k = 0; k < count; ++k) dst[k] = static_cast<T>(one(src + k * size));
  };
  switch (t) {
    case dtype::boolean: return loop([](const std::byte* p) { return *p != std::byte{0} ? 1 : 0; }, 1);
    case dtype::u8: return loop([](const std::byte* p) { return load_le<std::uint8_t>(p); }, 1);
    case dtype::i8: return loop([](const std::byte* p) { return std::int8_t(load_le<std::uint8_t>(p)); }, 1);
    case dtype::f8_e4m3:
      return loop([](const std::byte* p) { return f8_e4m3_to_float(load_le<std::uint8_t>(p)); }, 1);
    case dtype::f8_e5m2:
      return loop([](const std::byte* p) { return f8_e5m2_to_float(load_le<std::uint8_t>(p)); }, 1);
    case dtype::i16: return loop([](const std::byte* p) { return std::int16_t(load_le<std::uint16_t>(p)); }, 2);
    case dtype::u16: return loop([](const std::byte* p) { return load_le<std::uint16_t>(p); }, 2);
    case dtype::f16: return loop([](const std::byte* p) { return f16_to_float(load_le<std::uint16_t>(p)); }, 2);
    case dtype::bf16: return loop([](const std::byte* p) { return bf16_to_float(load_le<std::uint16_t>(p)); }, 2);
    case dtype::i32: return loop([](const std::byte* p) { return std::int32_t(load_le<std::uint32_t>(p)); }, 4);
    case dtype::u32: return loop([](const std::byte* p) { return load_le<std::uint32_t>(p); }, 4);
    case dtype::f32:
      return loop([](const std::byte* p) { return std::bit_cast<float>(load_le<std::uint32_t>(p)); }, 4);
    case dtype::i64: return loop([](const std::byte* p) { return std::int64_t(load_le<std::uint64_t>(p)); }, 8);
    case dtype::u64: return loop([](const std::byte* p) { return load_le<std::uint64_t>(p); }, 8);
    case dtype::f64:
      return loop([](const std::byte* p) { return std::bit_cast<double>(load_le<std::uint64_t>(p)); }, 8);
  }
}

//! Encodes src[0..count) as type t (one of the is_encodable types) into dst, rounding to nearest
//! even when narrowing.
template <Scalar T>
void encode(dtype t, const T* src, index count, std::byte* dst) {
  switch (t) {
    case dtype::f64:
      for (index k = 0; k < count; ++k) store_le(dst + 8 * k, std::bit_cast<std::uint64_t>(double(src[k])));
      return;
    case dtype::f32:
      for (index k = 0; k < count; ++k) store_le(dst + 4 * k, std::bit_cast<std::uint32_t>(float(src[k])));
      return;
    case dtype::f16:
      for (index k = 0; k < count; ++k) store_le(dst + 2 * k, to_f16_bits(src[k]));
      return;
    case dtype::bf16:
      for (index k = 0; k < count; ++k) store_le(dst + 2 * k, to_bf16_bits(src[k]));
      return;
    default:
      throw invalid_argument(concat("yaqa::encode: cannot convert values to dtype ", t,
                                    "; expected F64, F32, F16 or BF16"));
  }
}

//! Throws unless `t` is one of the types values can be converted to. `what` names the routine.
inline void require_encodable(const char* what, std::string_view name, dtype t) {
  require<invalid_argument>(is_encodable(t), what, ": cannot store '", name, "' as ", t,
                            "; values convert only to F64, F32, F16 or BF16 (store other types as raw bytes)");
}

//! Tile of the blocked transposes in encode_row_major(_le) and to_matrix (256 KiB of float: fits L2).
inline constexpr index tile_rows = 128, tile_cols = 512;

//! Encodes the rows x cols matrix m in row-major order (the on-disk layout) as dtype t.
template <class T>
std::vector<std::byte> encode_row_major(matrix_view<const T, host_space> m, dtype t) {
  const index esz = dtype_size(t);
  std::vector<std::byte> out(std::size_t(m.rows * m.cols * esz));
  if (m.rows == 0 || m.cols == 0) return out;
  // Tiles of tile_rows x tile_cols: Eigen copies each (strided, column-major) tile into a small
  // row-major buffer that stays in cache, then each buffer row is encoded to its place. Whole-row
  // blocks would touch one page per column per row on wide matrices (TLB-bound).
  const index tr = std::min(m.rows, tile_rows), tc = std::min(m.cols, tile_cols);
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> buf(tr, tc);
  const auto src = as_eigen(m);
  for (index r0 = 0; r0 < m.rows; r0 += tr)
    for (index c0 = 0; c0 < m.cols; c0 += tc) {
      const index nr = std::min(tr, m.rows - r0), nc = std::min(tc, m.cols - c0);
      buf.topLeftCorner(nr, nc) = src.block(r0, c0, nr, nc);
      for (index i = 0; i < nr; ++i) encode(t, buf.data() + i * tc, nc, out.data() + ((r0 + i) * m.cols + c0) * esz);
    }
  return out;
}

//! Row-major little-endian bytes of an unsigned integer matrix (quantization codes), in tiles as
//! encode_row_major: a row-by-row walk of the column-major matrix strides by its row count per
//! entry (0.16 s for the codes of a 4096 x 4096 layer, 4 % of a whole CLI run).
template <class C>
  requires std::is_unsigned_v<C>
std::vector<std::byte> encode_row_major_le(matrix_view<const C, host_space> c) {
  std::vector<std::byte> b(std::size_t(c.rows * c.cols) * sizeof(C));
  for (index i0 = 0; i0 < c.rows; i0 += tile_rows)
    for (index j0 = 0; j0 < c.cols; j0 += tile_cols)
      for (index i = i0; i < std::min(c.rows, i0 + tile_rows); ++i) {
        std::byte* p = b.data() + std::size_t(i * c.cols + j0) * sizeof(C);
        for (index j = j0; j < std::min(c.cols, j0 + tile_cols); ++j, p += sizeof(C)) store_le(p, c(i, j));
      }
  return b;
}

//! What the writers accept as a flat list of values: a contiguous range of float or double
//! (std::vector, std::span, std::array, ...) or an Eigen vector (Eigen 3.4's iterators are not
//! contiguous_iterators, and 2-D Eigen matrices are excluded because their column-major storage
//! would be mistaken for row-major values).
template <class R>
concept value_range =
    requires(const R& r) {
      std::data(r);
      std::size(r);
    } && Scalar<std::remove_cvref_t<decltype(*std::data(std::declval<const R&>()))>> &&
    (std::ranges::contiguous_range<const R> ||
     (std::derived_from<R, Eigen::PlainObjectBase<R>> && bool(R::IsVectorAtCompileTime)));

template <value_range R>
using value_range_scalar = std::remove_cvref_t<decltype(*std::data(std::declval<const R&>()))>;

//! Throws format_error unless the view's byte count matches its shape and dtype.
inline void check_consistent(const char* what, const tensor_view& t) {
  const auto n = checked_nbytes(t.shape, dtype_size(t.type));
  require<format_error>(n.has_value(), what, ": ", describe(t), " has shape ", shape_string(t.shape),
                        "; expected non-negative dimensions whose byte count fits in 64 bits");
  require<format_error>(*n == index(t.bytes.size()), what, ": ", describe(t), " holds ", t.bytes.size(),
                        " bytes; expected ", *n, " (shape ", shape_string(t.shape), " of ", t.type, ")");
}

}  // namespace detail

//! All elements of t, converted to T, in row-major (C) order: any rank, any dtype.
//! F64 -> float rounds to nearest; integer types convert exactly when representable.
template <Scalar T>
vector<T> to_vector(const tensor_view& t) {
  detail::check_consistent("yaqa::to_vector", t);
  vector<T> v(t.numel());
  detail::decode(t.type, t.bytes.data(), v.size(), v.data());
  return v;
}

//! The rows x cols matrix of a 2-D tensor stored as [rows, cols] (a 1-D tensor [n] gives an
//! n x 1 column). Transposes from the row-major file into column-major storage; costs one
//! decoding pass plus a blocked transpose (see the file comment). Throws shape_error for rank
//! other than 1 or 2.
template <Scalar T>
matrix<T> to_matrix(const tensor_view& t) {
  constexpr const char* what = "yaqa::to_matrix";
  detail::check_consistent(what, t);
  detail::require<shape_error>(t.rank() == 1 || t.rank() == 2, what, ": ", detail::describe(t), " has shape ",
                               detail::shape_string(t.shape), "; expected a 1-D or 2-D tensor");
  const index rows = t.shape[0], cols = t.rank() == 2 ? t.shape[1] : 1;
  matrix<T> m(rows, cols);
  if (rows == 0 || cols == 0) return m;
  if (cols == 1) {
    detail::decode(t.type, t.bytes.data(), rows, m.data());
    return m;
  }
  const index esz = dtype_size(t.type);
  const index tr = std::min(rows, detail::tile_rows), tc = std::min(cols, detail::tile_cols);
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> buf(tr, tc);
  for (index r0 = 0; r0 < rows; r0 += tr)
    for (index c0 = 0; c0 < cols; c0 += tc) {
      const index nr = std::min(tr, rows - r0), nc = std::min(tc, cols - c0);
      for (index i = 0; i < nr; ++i)
        detail::decode(t.type, t.bytes.data() + ((r0 + i) * cols + c0) * esz, nc, buf.data() + i * tc);
      m.block(r0, c0, nr, nc) = buf.topLeftCorner(nr, nc);
    }
  return m;
}

//! The cols x rows matrix of a 2-D tensor stored as [rows, cols], i.e. the transpose of
//! to_matrix(t), obtained without any reordering (row-major [rows, cols] bytes are exactly a
//! column-major cols x rows matrix): one sequential decoding pass. For a PyTorch weight
//! [out, in] this is W^T (in x out). A 1-D tensor [n] gives a 1 x n row.
template <Scalar T>
matrix<T> to_matrix_transposed(const tensor_view& t) {
  constexpr const char* what = "yaqa::to_matrix_transposed";
  detail::check_consistent(what, t);
  detail::require<shape_error>(t.rank() == 1 || t.rank() == 2, what, ": ", detail::describe(t), " has shape ",
                               detail::shape_string(t.shape), "; expected a 1-D or 2-D tensor");
  const index rows = t.shape[0], cols = t.rank() == 2 ? t.shape[1] : 1;
  matrix<T> m(cols, rows);
  detail::decode(t.type, t.bytes.data(), rows * cols, m.data());
  return m;
}

}  // namespace yaqa
