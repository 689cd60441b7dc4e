#pragma once
//! \file
//! NumPy .npy reading and writing (format versions 1.0, 2.0 and 3.0).
//!
//! Format: magic "\x93NUMPY", major and minor version bytes, the header length (u16 little-endian
//! in 1.0, u32 in 2.0/3.0), then a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }` padded with spaces and ended by
//! '\n', then the raw data.
//!
//! Reading parses that dict strictly (exactly the three keys, each once; a tuple of non-negative
//! integers for the shape; little-endian or byte-order-free descr) and requires the data to fill
//! the rest of the file exactly. fortran_order True is handled: the data is reordered to C order
//! on read, so npy_array is always row-major. Writing emits version 1.0 (2.0 when the header does
//! not fit in 64 KiB), C order, data starting on a 64-byte boundary, atomically (temp + rename).
//!
//! Supported descr: <f8 <f4 <f2 <i8 <i4 <i2 <u8 <u4 <u2 |i1 |u1 |b1 ('<' is accepted for the
//! one-byte types too). Big-endian ('>'), structured and object arrays are refused.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <utility>
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

//! Limits of read_npy.
struct npy_read_options {
  //! Largest accepted header (the dict), in bytes. NumPy's own writer never exceeds a few hundred
  //! bytes; the cap stops a corrupt length field from making us parse megabytes of text.
  std::uint32_t max_header_size = 1u << 20;
};

//! Options of write_npy.
struct npy_write_options {
  //! Paths write_npy must refuse to overwrite (a tool's inputs); see check_not_forbidden.
  std::vector<std::filesystem::path> forbidden_paths;
};

//! An array read from a .npy file: owned bytes in C (row-major) order, little-endian.
struct npy_array {
  std::string source;        //!< the file it was read from
  dtype type = dtype::f32;
  std::vector<index> shape;  //!< empty for a 0-d array (one element)
  std::vector<std::byte> bytes;
  bool fortran_order_on_disk = false;  //!< informational: the file was column-major (reordered on read)

  [[nodiscard]] index numel() const {
    index n = 1;
    for (index d : shape) n *= d;
    return n;
  }
  //! A view for to_matrix / to_vector / safetensors_writer::add_borrowed; valid while *this lives.
  [[nodiscard]] tensor_view view() const { return tensor_view{{}, type, shape, bytes, source}; }
  operator tensor_view() const { return view(); }  // NOLINT: implicit so to_matrix<T>(array) works
};

namespace detail {

inline std::optional<dtype> dtype_from_npy_descr(std::string_view d) {
  if (d.size() < 2) return std::nullopt;
  const char order = d[0];
  for (const auto& info : dtype_table) {
    if (info.npy.empty() || info.npy.substr(1) != d.substr(1)) continue;
    if (order == '<' || (order == '|' && info.size == 1)) return info.type;
  }
  return std::nullopt;
}

//! Strict parser for the header dict of a .npy file.
class npy_header_parser {
 public:
  npy_header_parser(std::string_view text, std::string_view source) : s_(text), source_(source) {}

  struct result {
    dtype type;
    bool fortran_order;
    std::vector<index> shape;
  };

  result parse() {
    std::optional<std::string> descr;
    std::optional<bool> fortran;
    std::optional<std::vector<index>> shape;
    skip_ws();
    expect('{');
    while (true) {
      skip_ws();
      if (peek() == '}') break;
      const std::string key = string_literal("a dict key");
      skip_ws();
      expect(':');
      skip_ws();
      if (key == "descr") {
        if (descr) fail("key 'descr' appears twice");
        if (peek() == '[') fail("structured dtypes (a list descr) are not supported");
        descr = string_literal("the descr string");
      } else if (key == "fortran_order") {
        if (fortran) fail("key 'fortran_order' appears twice");
        fortran = boolean_literal();
      } else if (key == "shape") {
        if (shape) fail("key 'shape' appears twice");
        shape = tuple_literal();
      } else {
        fail("unexpected key '" + key + "'; expected only 'descr', 'fortran_order' and 'shape'");
      }
      skip_ws();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != '}') fail("expected ',' or '}'");
    }
    ++pos_;  // '}'
    skip_ws();
    if (pos_ != s_.size()) fail("unexpected text after the dict");
    if (!descr) fail("missing key 'descr'");
    if (!fortran) fail("missing key 'fortran_order'");
    if (!shape) fail("missing key 'shape'");
    const auto dt = dtype_from_npy_descr(*descr);
    if (!dt) {
      if (!descr->empty() && descr->front() == '>')
        fail("descr '" + *descr + "' is big-endian; only little-endian ('<') or byte-order-free ('|') data is supported");
      fail("descr '" + *descr + "' is not supported; expected one of <f8 <f4 <f2 <i8 <i4 <i2 <u8 <u4 <u2 |i1 |u1 |b1");
    }
    return {*dt, *fortran, std::move(*shape)};
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw format_error(concat("yaqa::read_npy: '", source_, "': bad header at character ", pos_, ": ", why,
                              " (header: ", s_.substr(0, 200), ")"));
  }
  [[nodiscard]] char peek() const { return pos_ < s_.size() ? s_[pos_] : '\0'; }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  std::string string_literal(const char* what) {
    const char q = peek();
    if (q != '\'' && q != '"') fail(std::string("expected ") + what + " (a quoted string)");
    const std::size_t start = ++pos_;
    while (pos_ < s_.size() && s_[pos_] != q) {
      if (s_[pos_] == '\\' || s_[pos_] == '\n') fail("escapes and newlines are not supported in strings");
      ++pos_;
    }
    if (pos_ >= s_.size()) fail("unterminated string");
    return std::string(s_.substr(start, pos_++ - start));
  }
  bool boolean_literal() {
    if (s_.substr(pos_, 4) == "True") return pos_ += 4, true;
    if (s_.substr(pos_, 5) == "False") return pos_ += 5, false;
    fail("expected True or False for 'fortran_order'");
  }
  std::vector<index> tuple_literal() {
    expect('(');
    std::vector<index> dims;
    bool trailing_comma = false;
    while (true) {
      skip_ws();
      if (peek() == ')') break;
      if (!dims.empty() && !trailing_comma) fail("expected ',' between shape dimensions");
      if (peek() == '-') fail("shape has a negative dimension; expected non-negative integers");
      if (peek() < '0' || peek() > '9') fail("expected a non-negative integer in the shape tuple");
      if (peek() == '0' && pos_ + 1 < s_.size() && s_[pos_ + 1] >= '0' && s_[pos_ + 1] <= '9')
        fail("leading zeros are not allowed in shape dimensions");
      index v = 0;
      while (peek() >= '0' && peek() <= '9') {
        if (__builtin_mul_overflow(v, index(10), &v) || __builtin_add_overflow(v, index(peek() - '0'), &v))
          fail("shape dimension does not fit in 64 bits");
        ++pos_;
      }
      if (peek() == 'L') ++pos_;  // Python 2 long suffix, written by old NumPy
      dims.push_back(v);
      skip_ws();
      trailing_comma = peek() == ',';
      if (trailing_comma) ++pos_;
    }
    if (dims.size() == 1 && !trailing_comma) fail("a one-element shape must be written '(n,)'");
    ++pos_;  // ')'
    return dims;
  }

  std::string_view s_;
  std::string_view source_;
  std::size_t pos_ = 0;
};

//! Reorders n-d data of element size esz from Fortran (column-major) to C (row-major) order.
inline std::vector<std::byte> fortran_to_c_order(std::span<const std::byte> src, std::span<const index> shape,
                                                 index esz) {
  std::vector<std::byte> dst(src.size());
  const std::size_t rank = shape.size();
  index total = 1;
  for (index d : shape) total *= d;
  if (total == 0) return dst;
  std::vector<index> stride(rank), idx(rank, 0);  // Fortran strides, in elements
  index s = 1;
  for (std::size_t k = 0; k < rank; ++k) stride[k] = s, s *= shape[k];
  index off = 0;  // Fortran offset of the current C-order multi-index
  for (index c = 0; c < total; ++c) {
    std::memcpy(dst.data() + c * esz, src.data() + off * esz, std::size_t(esz));
    for (std::size_t k = rank; k-- > 0;) {  // odometer, last index fastest
      if (++idx[k] < shape[k]) {
        off += stride[k];
        break;
      }
      off -= stride[k] * (shape[k] - 1);
      idx[k] = 0;
    }
  }
  return dst;
}

inline std::string npy_header_text(dtype type, std::span<const index> shape) {
  std::string h = "{'descr': '";
  h += detail::info(type).npy;
  h += "', 'fortran_order': False, 'shape': (";
  for (std::size_t i = 0; i < shape.size(); ++i) h += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) h += ',';
  h += "), }";
  return h;
}

}  // namespace detail

//! Parses a .npy image held in memory (e.g. a member of an .npz archive) with exactly the
//! validation of read_npy; `source` stands for the file name in error messages. The data is
//! copied into the result. Throws format_error when the image is malformed.
inline npy_array parse_npy(std::span<const std::byte> b, std::string_view source = "<memory>",
                           const npy_read_options& options = {}) {
  const std::string src(source);
  auto fail = [&](auto&&... a) {
    throw format_error(detail::concat("yaqa::read_npy: '", src, "': ", std::forward<decltype(a)>(a)...));
  };
  static constexpr unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (b.size() < 10 || std::memcmp(b.data(), magic, 6) != 0)
    fail("bad magic: expected the file to start with \\x93NUMPY (", b.size(), " bytes, not a .npy file)");
  const auto major = std::to_integer<unsigned>(b[6]), minor = std::to_integer<unsigned>(b[7]);
  if (!((major == 1 || major == 2 || major == 3) && minor == 0))
    fail("unsupported format version ", major, ".", minor, "; expected 1.0, 2.0 or 3.0");
  std::uint64_t start = major == 1 ? 10 : 12;
  if (b.size() < start) fail("file is ", b.size(), " bytes; too short for a version ", major, ".0 preamble");
  const std::uint64_t hlen = major == 1 ? detail::load_le<std::uint16_t>(b.data() + 8)
                                        : detail::load_le<std::uint32_t>(b.data() + 8);
  if (hlen > options.max_header_size)
    fail("header length ", hlen, " exceeds the limit of ", options.max_header_size,
         " bytes (npy_read_options::max_header_size)");
  if (start + hlen > b.size())
    fail("header length ", hlen, " runs past the end of the file (", b.size(), " bytes)");
  const std::string_view text(reinterpret_cast<const char*>(b.data() + start), std::size_t(hlen));
  auto h = detail::npy_header_parser(text, src).parse();

  npy_array a;
  a.source = src;
  a.type = h.type;
  a.shape = std::move(h.shape);
  a.fortran_order_on_disk = h.fortran_order;
  const auto nbytes = detail::checked_nbytes(a.shape, dtype_size(a.type));
  if (!nbytes) fail("shape ", detail::shape_string(a.shape), " has too many elements (the byte count overflows 64 bits)");
  const std::uint64_t data_start = start + hlen, have = b.size() - data_start;
  if (have < std::uint64_t(*nbytes))
    fail("truncated data: shape ", detail::shape_string(a.shape), " of ", detail::info(a.type).npy, " needs ", *nbytes,
         " bytes, the file has ", have, " after the header");
  if (have > std::uint64_t(*nbytes))
    fail("file has ", have - std::uint64_t(*nbytes), " unexpected bytes after the data (shape ",
         detail::shape_string(a.shape), " of ", detail::info(a.type).npy, " needs ", *nbytes, ")");
  const auto data = b.subspan(std::size_t(data_start), std::size_t(*nbytes));
  if (h.fortran_order && a.shape.size() > 1)
    a.bytes = detail::fortran_to_c_order(data, a.shape, dtype_size(a.type));
  else
    a.bytes.assign(data.begin(), data.end());
  return a;
}

//! Reads a .npy file. Throws io_error when it cannot be read, format_error when it is malformed
//! (the message names the file and what was expected).
inline npy_array read_npy(const std::filesystem::path& path, const npy_read_options& options = {}) {
  const mapped_file file(path, true, "yaqa::read_npy");
  return parse_npy(file.bytes(), path.string(), options);
}

//! Writes raw little-endian bytes in C order as a .npy file (atomically). `type` must have a
//! NumPy equivalent (not BF16 or F8).
inline void write_npy(const std::filesystem::path& path, dtype type, const std::vector<index>& shape,
                      std::span<const std::byte> bytes, const npy_write_options& options = {}) {
  constexpr const char* what = "yaqa::write_npy";
  detail::require<invalid_argument>(!detail::info(type).npy.empty(), what, ": cannot write '", path.string(), "' as ",
                                    type, ": NumPy has no such type (store F32 instead)");
  const auto n = detail::checked_nbytes(shape, dtype_size(type));
  detail::require<shape_error>(n.has_value(), what, ": shape ", detail::shape_string(shape),
                               " must have non-negative dimensions");
  detail::require<shape_error>(std::size_t(*n) == bytes.size(), what, ": ", bytes.size(), " bytes given for '",
                               path.string(), "'; expected ", *n, " (shape ", detail::shape_string(shape), " of ",
                               type, ")");
  check_not_forbidden(what, path, options.forbidden_paths);
  std::string dict = detail::npy_header_text(type, shape);
  // Pad so that preamble + dict + '\n' is a multiple of 64 (the data then starts aligned).
  std::size_t preamble = 10;
  std::size_t total = (preamble + dict.size() + 1 + 63) / 64 * 64;
  if (total - preamble > 65535) {
    preamble = 12;
    total = (preamble + dict.size() + 1 + 63) / 64 * 64;
  }
  dict.append(total - preamble - dict.size() - 1, ' ');
  dict += '\n';
  std::string pre = "\x93NUMPY";
  pre += char(preamble == 10 ? 1 : 2);
  pre += '\0';
  std::byte len[4];
  if (preamble == 10) {
    detail::store_le(len, std::uint16_t(dict.size()));
    pre.append(reinterpret_cast<const char*>(len), 2);
  } else {
    detail::store_le(len, std::uint32_t(dict.size()));
    pre.append(reinterpret_cast<const char*>(len), 4);
  }
  atomic_output_file out(path, what);
  out.write(pre);
  out.write(dict);
  out.write(bytes);
  out.commit();
}

//! Writes `values` (C order, shape `shape`; a std::vector, std::span or Eigen vector of float or
//! double) converted to `stored` (F64, F32 or F16).
template <detail::value_range R>
void write_npy(const std::filesystem::path& path, const std::vector<index>& shape, const R& values,
               dtype stored = dtype_of<detail::value_range_scalar<R>>, const npy_write_options& options = {}) {
  detail::require_encodable("yaqa::write_npy", path.string(), stored);
  const index count = index(std::size(values));
  std::vector<std::byte> bytes(std::size_t(count * dtype_size(stored)));
  detail::encode(stored, std::data(values), count, bytes.data());
  write_npy(path, stored, shape, bytes, options);
}

//! Writes the rows x cols matrix m as a C-order (rows, cols) array converted to `stored`.
template <class T>
  requires Scalar<std::remove_const_t<T>>
void write_npy(const std::filesystem::path& path, matrix_view<T, host_space> m,
               dtype stored = dtype_of<std::remove_const_t<T>>, const npy_write_options& options = {}) {
  detail::require_encodable("yaqa::write_npy", path.string(), stored);
  const auto bytes =
      detail::encode_row_major(matrix_view<const std::remove_const_t<T>>(m.data, m.rows, m.cols, m.ld), stored);
  write_npy(path, stored, {m.rows, m.cols}, bytes, options);
}

//! Same for any Eigen dense expression (evaluated first); a vector is written as (n, 1).
template <class Derived>
void write_npy(const std::filesystem::path& path, const Eigen::DenseBase<Derived>& m,
               dtype stored = dtype_of<typename Derived::Scalar>, const npy_write_options& options = {}) {
  const matrix<typename Derived::Scalar> tmp = m;
  write_npy(path, view(tmp), stored, options);
}

}  // namespace yaqa
