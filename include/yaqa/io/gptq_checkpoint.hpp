#pragma once
//! \file
//! Checkpoints that existing inference kernels serve: int_grid results (GPTQ / LDLQ / YAQA with
//! `int_grid`, no RHT) exported in
//!
//! * the GPTQ layout (AutoGPTQ / GPTQModel "gptq" checkpoint format, v1 zero points), read by
//!   transformers' and vLLM's GPTQ / exllama / marlin loaders, and
//! * the compressed-tensors "pack-quantized" layout (llm-compressor checkpoints, vLLM's
//!   compressed-tensors WNA16 path).
//!
//! Both store the codes as a dense little-endian bit stream in int32 words: element k of a packed
//! line occupies bits [k b, k b + b) of the stream, word w holds bits [32 w, 32 w + 32). For
//! b = 2, 4, 8 this is "32 / b codes per word, lowest bits first"; for b = 3 it is GPTQ's 3-bit
//! packing (10 2/3 codes per word, codes 10 and 21 of each 32 straddling words) and
//! compressed-tensors' dense packing alike.
//!
//! For W (m = out x n = in), codes q (m x n), per-row scale s and integer zero z of group g(j):
//!
//!   GPTQ:    qweight int32 [n b / 32, m]   codes packed along the input dim (column j of W)
//!            qzeros  int32 [G, m b / 32]   stored = z - 1 (v1 convention), packed along m
//!            scales  F16   [G, m]
//!            g_idx   int32 [n]             g(j) = j / group_size, or the act-order group_index
//!            W'(i, j) = scales[g][i] * (q(i, j) - (stored(g, i) + 1))
//!   compressed-tensors (format "pack-quantized"):
//!            weight_packed     int32 [m, ceil(n b / 32)]  signed codes q - 2^(b-1), packed with
//!                                                          the offset 2^(b-1) added back (= q)
//!            weight_scale      F16 or BF16 [m, G]
//!            weight_zero_point int32 [ceil(m b / 32), G]   asymmetric only: z - 2^(b-1),
//!                                                          packed along m (dim 0) the same way
//!            weight_shape      int64 [2] = [m, n]
//!            W'(i, j) = scale[i][g] * (q(i, j) - z)
//!
//! G is the number of groups (1 per channel). The stored scales are 16-bit, so the checkpoint's
//! weights differ from yaqa's reconstruction scale * (q - zero) by the rounding of the scale:
//! relatively by at most 2^-11 per element for F16 (2^-8 for BF16) while the scale is a normal
//! 16-bit number, plus one more rounding of the product when the loader computes in 16 bits.
//! dequantize_gptq / dequantize_compressed_tensors give exactly those values.
//!
//! Not representable (invalid_argument, naming the layer and the rule): RHT-rotated results
//! (their codes live in the rotated basis), codes or parameters that do not reproduce
//! rounded::weights, non-integer or out-of-range zero points, symmetric zero points other than
//! 2^(b-1), a zero point of 0 in the GPTQ layout (stored -1 would corrupt the packed word), scales
//! that overflow or underflow 16 bits, GPTQ bits other than 2, 3, 4, 8, sizes whose bit stream
//! does not fill whole words in the GPTQ layout, and act-order groups (a g_idx that is not
//! j / group_size) in compressed-tensors (which removed its "group" activation ordering).
#include <algorithm>
#include <concepts>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/io/dtype.hpp>
#include <yaqa/io/float16.hpp>
#include <yaqa/io/safetensors.hpp>
#include <yaqa/io/tensor.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/rounding/common.hpp>

namespace yaqa {

//! The two checkpoint layouts.
enum class checkpoint_format { gptq, compressed_tensors };

inline const char* checkpoint_format_name(checkpoint_format f) {
  return f == checkpoint_format::gptq ? "gptq" : "compressed-tensors";
}

//! Options of the export (the grid itself is described by int_grid_options).
struct checkpoint_options {
  checkpoint_format format = checkpoint_format::gptq;
  //! Type of the stored scales: F16 (GPTQ: the only choice) or BF16 (compressed-tensors, for a
  //! bf16 model; the loaders compute the dequantized weights in the scale's type).
  dtype scale_type = dtype::f16;
  //! The layers were rounded with act-order and static groups (metadata only: GPTQ's
  //! static_groups, compressed-tensors' actorder "weight"). GPTQ's desc_act is set from the data:
  //! when some layer's g_idx is not j / group_size (act-order with lazily fitted groups).
  bool act_order = false;
  //! Check that codes and parameters reproduce rounded::weights (catches results whose codes are
  //! in another basis, such as an RHT rotation).
  bool verify = true;
  //! compressed-tensors only: Linear modules that stay unquantized (the config's "ignore"; every
  //! nn.Linear not exported here must be listed). The GPTQ layout has no such list.
  std::vector<std::string> ignore{"lm_head"};
};

//! One linear layer in the GPTQ layout (row-major tensors, as stored).
struct gptq_layer {
  index rows = 0, cols = 0;      //!< m (out_features), n (in_features)
  int bits = 4;
  index groups = 1;
  std::vector<std::int32_t> qweight;  //!< [cols * bits / 32, rows]
  std::vector<std::int32_t> qzeros;   //!< [groups, rows * bits / 32], zero - 1
  std::vector<std::uint16_t> scales;  //!< F16 bit patterns, [groups, rows]
  std::vector<std::int32_t> g_idx;    //!< [cols]
  [[nodiscard]] index qweight_rows() const { return cols * bits / 32; }
  [[nodiscard]] index qzeros_cols() const { return rows * bits / 32; }
};

//! One linear layer in the compressed-tensors pack-quantized layout (row-major tensors).
struct compressed_tensors_layer {
  index rows = 0, cols = 0;
  int bits = 4;
  index groups = 1;
  bool symmetric = true;
  dtype scale_type = dtype::f16;
  std::vector<std::int32_t> weight_packed;      //!< [rows, packed_cols()]
  std::vector<std::uint16_t> weight_scale;      //!< F16 / BF16 bit patterns, [rows, groups]
  std::vector<std::int32_t> weight_zero_point;  //!< [packed_zero_rows(), groups]; empty if symmetric
  [[nodiscard]] index packed_cols() const { return (cols * bits + 31) / 32; }
  [[nodiscard]] index packed_zero_rows() const { return (rows * bits + 31) / 32; }
};

//! What dequantize_* returns: the exact product scale16 * (q - z) (what a loader computing in
//! fp32 gets), or that product rounded to the scale's 16-bit type (what torch gets with fp16 /
//! bf16 tensors, e.g. AutoGPTQ's torch path and compressed-tensors' dequantize).
enum class dequant_precision { exact, storage };

namespace detail {

//! Packs `count` values of `bits` bits (each < 2^bits) as a dense little-endian bit stream into
//! ceil(count bits / 32) words out[0], out[stride], ... (which must be zero on entry).
template <class Get>
void pack_bit_stream(index count, int bits, Get get, std::int32_t* out, index stride) {
  for (index k = 0; k < count; ++k) {
    const auto v = static_cast<std::uint64_t>(get(k));
    const index bit = k * bits, w = bit / 32;
    const int off = static_cast<int>(bit % 32);
    const std::uint64_t sh = v << off;  // up to 39 bits
    auto* lo = reinterpret_cast<std::uint32_t*>(out + w * stride);
    *lo |= static_cast<std::uint32_t>(sh & 0xffffffffu);
    if (off + bits > 32) *reinterpret_cast<std::uint32_t*>(out + (w + 1) * stride) |= static_cast<std::uint32_t>(sh >> 32);
  }
}

//! Inverse of pack_bit_stream: put(k, value) for k = 0 .. count - 1.
template <class Put>
void unpack_bit_stream(index count, int bits, const std::int32_t* in, index stride, Put put) {
  const std::uint32_t mask = (1u << bits) - 1u;
  for (index k = 0; k < count; ++k) {
    const index bit = k * bits, w = bit / 32;
    const int off = static_cast<int>(bit % 32);
    std::uint64_t v = static_cast<std::uint32_t>(in[w * stride]);
    if (off + bits > 32) v |= std::uint64_t(static_cast<std::uint32_t>(in[(w + 1) * stride])) << 32;
    put(k, static_cast<std::uint32_t>(v >> off) & mask);
  }
}

inline std::uint16_t to_scale_bits(double s, dtype t) { return t == dtype::bf16 ? to_bf16_bits(s) : to_f16_bits(s); }
inline float scale_value(std::uint16_t b, dtype t) { return t == dtype::bf16 ? bf16_to_float(b) : f16_to_float(b); }

inline index quantizer_group_cols_of(const int_grid_options& o, index n, const char* what, std::string_view name) {
  const index g = o.group_size <= 0 ? n : o.group_size;
  require(n % g == 0, what, ": layer '", name, "': group size ", g, " does not divide n = ", n);
  return g;
}

//! The integer parameters of one int_grid result, validated: zero points (integers in [0, maxq],
//! 2^(b-1) when symmetric), 16-bit scales, the group of each column, and (verify) the codes
//! reproducing the weights.
struct int_grid_export {
  index m = 0, n = 0, groups = 1, group_cols = 0;
  int bits = 4;
  std::vector<std::int32_t> zero;      // [groups, m]
  std::vector<std::uint16_t> scale;    // [groups, m] 16-bit patterns of scale_type
  std::vector<std::int32_t> g_idx;     // [n]
  bool has_group_index = false;        // act-order groups (g_idx != j / group_cols)
};

template <Scalar T>
int_grid_export check_int_grid_result(const char* what, std::string_view name, const rounded<int_grid<T>>& r,
                                      const int_grid_options& o, dtype scale_type, bool verify) {
  int_grid_export e;
  e.m = r.codes.rows();
  e.n = r.codes.cols();
  e.bits = o.bits;
  const index m = e.m, n = e.n;
  require(o.bits >= 2 && o.bits <= 8, what, ": layer '", name, "': bits must be in [2, 8], got ", o.bits);
  require(scale_type == dtype::f16 || scale_type == dtype::bf16, what, ": layer '", name,
          "': the scale type must be F16 or BF16, got ", safetensors_name(scale_type));
  require<shape_error>(m >= 1 && n >= 1, what, ": layer '", name, "' has an empty code matrix ", m, "x", n);
  require<shape_error>(r.weights.rows() == m && r.weights.cols() == n, what, ": layer '", name, "': weights are ",
                       r.weights.rows(), "x", r.weights.cols(), " but codes are ", m, "x", n);
  e.group_cols = quantizer_group_cols_of(o, n, what, name);
  e.groups = n / e.group_cols;
  require(static_cast<index>(r.params.size()) == e.groups, what, ": layer '", name, "' has ", r.params.size(),
          " parameter groups; expected ", e.groups, " (n = ", n, ", group size ", e.group_cols, ")");
  const int maxq = (1 << o.bits) - 1;
  e.zero.resize(static_cast<std::size_t>(e.groups * m));
  e.scale.resize(static_cast<std::size_t>(e.groups * m));
  for (index g = 0; g < e.groups; ++g) {
    const auto& p = r.params[static_cast<std::size_t>(g)];
    require<shape_error>(static_cast<index>(p.scale.size()) == m && static_cast<index>(p.zero.size()) == m, what,
                         ": layer '", name, "': group ", g, " has ", p.scale.size(), " scales and ", p.zero.size(),
                         " zero points; expected ", m);
    for (index i = 0; i < m; ++i) {
      const T z = p.zero[static_cast<std::size_t>(i)], s = p.scale[static_cast<std::size_t>(i)];
      require(std::isfinite(z) && z == std::nearbyint(z) && z >= T(0) && z <= T(maxq), what, ": layer '", name,
              "': row ", i, " of group ", g, " has zero point ", z, "; expected an integer in [0, ", maxq, "]");
      require(!o.sym || z == T(1 << (o.bits - 1)), what, ": layer '", name, "': row ", i, " of group ", g,
              " has zero point ", z, " but a symmetric grid needs 2^(bits-1) = ", 1 << (o.bits - 1));
      const std::uint16_t sb = to_scale_bits(static_cast<double>(s), scale_type);
      const float sv = scale_value(sb, scale_type);
      require(std::isfinite(s) && s > T(0) && std::isfinite(sv) && sv > 0.0f, what, ": layer '", name, "': row ", i,
              " of group ", g, " has scale ", s, ", which is not a positive ", safetensors_name(scale_type),
              " number (", sv, " after rounding)");
      e.zero[static_cast<std::size_t>(g * m + i)] = static_cast<std::int32_t>(z);
      e.scale[static_cast<std::size_t>(g * m + i)] = sb;
    }
  }
  e.g_idx.resize(static_cast<std::size_t>(n));
  if (!r.group_index.empty()) {
    require<shape_error>(static_cast<index>(r.group_index.size()) == n, what, ": layer '", name, "': group_index has ",
                         r.group_index.size(), " entries; expected n = ", n);
  }
  for (index j = 0; j < n; ++j) {
    const index g = r.group_of(j, e.group_cols);
    require(g >= 0 && g < e.groups, what, ": layer '", name, "': column ", j, " is in group ", g,
            "; expected a group in [0, ", e.groups, ")");
    e.g_idx[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(g);
    e.has_group_index |= g != j / e.group_cols;
  }
  for (index j = 0; j < n; ++j)
    for (index i = 0; i < m; ++i) {
      const int q = r.codes(i, j);
      require(q <= maxq, what, ": layer '", name, "': code ", q, " at (", i, ", ", j, ") exceeds 2^bits - 1 = ", maxq);
    }
  if (verify) {
    // Recompute the reconstruction exactly as int_grid does; any difference means the codes
    // belong to another basis (RHT) or the weights were changed after rounding.
    for (index j = 0; j < n; ++j) {
      const auto& p = r.params[static_cast<std::size_t>(e.g_idx[static_cast<std::size_t>(j)])];
      for (index i = 0; i < m; ++i) {
        const T s = p.scale[static_cast<std::size_t>(i)], z = p.zero[static_cast<std::size_t>(i)];
        const T rec = s * (static_cast<T>(r.codes(i, j)) - z);
        const T w = r.weights(i, j);
        const T tol = T(8) * std::numeric_limits<T>::epsilon() * s * T(maxq + 1);
        require(std::abs(rec - w) <= tol, what, ": layer '", name, "': the codes and parameters do not reproduce the ",
                "weights at (", i, ", ", j, "): scale * (code - zero) = ", rec, " but weights = ", w,
                " (a result rotated by the RHT, or weights changed after rounding, cannot be exported; round with ",
                "incoherence off)");
      }
    }
  }
  return e;
}

inline std::string module_prefix(std::string_view name) {
  constexpr std::string_view suffix = ".weight";
  if (name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix)
    name.remove_suffix(suffix.size());
  return std::string(name);
}

template <class V>
std::vector<std::byte> le_bytes(const std::vector<V>& v) {
  std::vector<std::byte> b(v.size() * sizeof(V));
  for (std::size_t k = 0; k < v.size(); ++k)
    store_le(b.data() + k * sizeof(V), static_cast<std::make_unsigned_t<V>>(v[k]));
  return b;
}

}  // namespace detail

//! Packs an int_grid result (GPTQ / LDLQ / YAQA / RTN with int_grid, in W's own basis) in the
//! GPTQ layout. `name` only labels error messages. Throws invalid_argument / shape_error for
//! what the layout cannot hold (see the file comment); scales are always F16.
template <Scalar T>
gptq_layer pack_gptq(const rounded<int_grid<T>>& r, const int_grid_options& o, std::string_view name = "",
                     bool verify = true) {
  constexpr const char* what = "yaqa::pack_gptq";
  detail::require(o.bits == 2 || o.bits == 3 || o.bits == 4 || o.bits == 8, what, ": layer '", name,
          "': the GPTQ layout stores 2, 3, 4 or 8 bits, got ", o.bits);
  const index m = r.codes.rows(), n = r.codes.cols();
  const index per = o.bits == 3 ? 32 : 32 / o.bits;
  detail::require<shape_error>(n % per == 0, what, ": layer '", name, "': n = in_features = ", n,
                       " must be a multiple of ", per, " for ", o.bits, "-bit qweight (n * bits / 32 whole int32 words)");
  detail::require<shape_error>(m % per == 0, what, ": layer '", name, "': m = out_features = ", m,
                       " must be a multiple of ", per, " for ", o.bits, "-bit qzeros (m * bits / 32 whole int32 words)");
  const auto e = detail::check_int_grid_result(what, name, r, o, dtype::f16, verify);
  for (index k = 0; k < e.groups * m; ++k)
    detail::require(e.zero[static_cast<std::size_t>(k)] >= 1, what, ": layer '", name, "': row ", k % m, " of group ", k / m,
            " has zero point 0, which the GPTQ layout cannot store (it stores zero - 1; the loaders add 1 back); ",
            "use a symmetric grid or the compressed-tensors layout");
  gptq_layer L;
  L.rows = m;
  L.cols = n;
  L.bits = o.bits;
  L.groups = e.groups;
  L.qweight.assign(static_cast<std::size_t>(L.qweight_rows() * m), 0);
  for (index i = 0; i < m; ++i)
    detail::pack_bit_stream(n, o.bits, [&](index j) { return r.codes(i, j); }, L.qweight.data() + i, m);
  L.qzeros.assign(static_cast<std::size_t>(e.groups * L.qzeros_cols()), 0);
  for (index g = 0; g < e.groups; ++g)
    detail::pack_bit_stream(m, o.bits, [&](index i) { return e.zero[static_cast<std::size_t>(g * m + i)] - 1; },
                            L.qzeros.data() + g * L.qzeros_cols(), 1);
  L.scales = e.scale;
  L.g_idx = e.g_idx;
  return L;
}

//! Codes of a GPTQ layer (m x n), read back from qweight.
inline matrix<std::uint8_t> unpack_gptq_codes(const gptq_layer& L) {
  matrix<std::uint8_t> q(L.rows, L.cols);
  for (index i = 0; i < L.rows; ++i)
    detail::unpack_bit_stream(L.cols, L.bits, L.qweight.data() + i, L.rows,
                              [&](index j, std::uint32_t v) { q(i, j) = static_cast<std::uint8_t>(v); });
  return q;
}

//! Zero points of a GPTQ layer (groups x m), read back from qzeros with the + 1 of the loaders.
inline matrix<std::int32_t> unpack_gptq_zeros(const gptq_layer& L) {
  matrix<std::int32_t> z(L.groups, L.rows);
  for (index g = 0; g < L.groups; ++g)
    detail::unpack_bit_stream(L.rows, L.bits, L.qzeros.data() + g * L.qzeros_cols(), 1,
                              [&](index i, std::uint32_t v) { z(g, i) = static_cast<std::int32_t>(v) + 1; });
  return z;
}

//! The weights a GPTQ loader computes: scales[g_idx[j]][i] * (q(i, j) - (qzero + 1)), m x n.
//! exact: the product of the F16 scale and the integer, exact in float and double; storage: that
//! product rounded to F16 (torch with fp16 tensors). Differs from the int_grid reconstruction by
//! the F16 rounding of the scale only.
template <Scalar T>
matrix<T> dequantize_gptq(const gptq_layer& L, dequant_precision p = dequant_precision::storage) {
  const auto q = unpack_gptq_codes(L);
  const auto z = unpack_gptq_zeros(L);
  matrix<T> w(L.rows, L.cols);
  for (index j = 0; j < L.cols; ++j) {
    const index g = L.g_idx[static_cast<std::size_t>(j)];
    detail::require(g >= 0 && g < L.groups, "yaqa::dequantize_gptq: g_idx[", j, "] = ", g, " is not a group in [0, ",
                    L.groups, ")");
    for (index i = 0; i < L.rows; ++i) {
      const double s = f16_to_float(L.scales[static_cast<std::size_t>(g * L.rows + i)]);
      const double v = s * double(int(q(i, j)) - z(g, i));  // exact
      w(i, j) = p == dequant_precision::storage ? static_cast<T>(f16_to_float(to_f16_bits(v))) : static_cast<T>(v);
    }
  }
  return w;
}

//! Packs an int_grid result in the compressed-tensors pack-quantized layout (any m, n: the last
//! word of a line is zero-padded, as the package does). scale_type: F16 or BF16.
template <Scalar T>
compressed_tensors_layer pack_compressed_tensors(const rounded<int_grid<T>>& r, const int_grid_options& o,
                                                 std::string_view name = "", dtype scale_type = dtype::f16,
                                                 bool verify = true) {
  constexpr const char* what = "yaqa::pack_compressed_tensors";
  const auto e = detail::check_int_grid_result(what, name, r, o, scale_type, verify);
  detail::require(!e.has_group_index, what, ": layer '", name,
          "': act-order groups (a g_idx other than j / group_size, from GPTQ's act-order with lazily fitted groups) ",
          "are not representable in compressed-tensors (its actorder 'group' was removed); round with static groups ",
          "or use the GPTQ layout");
  const index m = e.m, n = e.n;
  compressed_tensors_layer L;
  L.rows = m;
  L.cols = n;
  L.bits = o.bits;
  L.groups = e.groups;
  L.symmetric = o.sym;
  L.scale_type = scale_type;
  L.weight_packed.assign(static_cast<std::size_t>(m * L.packed_cols()), 0);
  // Signed code q - 2^(b-1) plus the packing offset 2^(b-1): the stored field is q itself.
  for (index i = 0; i < m; ++i)
    detail::pack_bit_stream(n, o.bits, [&](index j) { return r.codes(i, j); },
                            L.weight_packed.data() + i * L.packed_cols(), 1);
  L.weight_scale.resize(static_cast<std::size_t>(m * e.groups));
  for (index i = 0; i < m; ++i)
    for (index g = 0; g < e.groups; ++g)
      L.weight_scale[static_cast<std::size_t>(i * e.groups + g)] = e.scale[static_cast<std::size_t>(g * m + i)];
  if (!o.sym) {
    L.weight_zero_point.assign(static_cast<std::size_t>(L.packed_zero_rows() * e.groups), 0);
    for (index g = 0; g < e.groups; ++g)  // column g of [ceil(m b / 32), G], packed along m
      detail::pack_bit_stream(m, o.bits, [&](index i) { return e.zero[static_cast<std::size_t>(g * m + i)]; },
                              L.weight_zero_point.data() + g, e.groups);
  }
  return L;
}

//! Codes (m x n, unsigned 0..2^b-1 = the package's signed value + 2^(b-1)) of a compressed-tensors layer.
inline matrix<std::uint8_t> unpack_compressed_tensors_codes(const compressed_tensors_layer& L) {
  matrix<std::uint8_t> q(L.rows, L.cols);
  for (index i = 0; i < L.rows; ++i)
    detail::unpack_bit_stream(L.cols, L.bits, L.weight_packed.data() + i * L.packed_cols(), 1,
                              [&](index j, std::uint32_t v) { q(i, j) = static_cast<std::uint8_t>(v); });
  return q;
}

//! Unsigned zero points (m x groups) of a compressed-tensors layer: 2^(b-1) when symmetric.
inline matrix<std::int32_t> unpack_compressed_tensors_zeros(const compressed_tensors_layer& L) {
  matrix<std::int32_t> z = matrix<std::int32_t>::Constant(L.rows, L.groups, 1 << (L.bits - 1));
  if (!L.symmetric)
    for (index g = 0; g < L.groups; ++g)
      detail::unpack_bit_stream(L.rows, L.bits, L.weight_zero_point.data() + g, L.groups,
                                [&](index i, std::uint32_t v) { z(i, g) = static_cast<std::int32_t>(v); });
  return z;
}

//! The weights compressed-tensors' decompression computes: scale[i][j / group] * (q - z), exact
//! or rounded to the scale type (storage: what the package's dequantize returns).
template <Scalar T>
matrix<T> dequantize_compressed_tensors(const compressed_tensors_layer& L,
                                        dequant_precision p = dequant_precision::storage) {
  const auto q = unpack_compressed_tensors_codes(L);
  const auto z = unpack_compressed_tensors_zeros(L);
  const index gc = L.cols / L.groups;
  matrix<T> w(L.rows, L.cols);
  for (index j = 0; j < L.cols; ++j)
    for (index i = 0; i < L.rows; ++i) {
      const index g = j / gc;
      const double s = detail::scale_value(L.weight_scale[static_cast<std::size_t>(i * L.groups + g)], L.scale_type);
      const double v = s * double(int(q(i, j)) - z(i, g));
      w(i, j) = p == dequant_precision::storage
                    ? static_cast<T>(detail::scale_value(detail::to_scale_bits(v, L.scale_type), L.scale_type))
                    : static_cast<T>(v);
    }
  return w;
}

//! Adds the tensors of one layer (prefix.qweight, ... or prefix.weight_packed, ...) to w.
inline void add_to(safetensors_writer& w, const std::string& prefix, const gptq_layer& L) {
  w.add(prefix + ".qweight", dtype::i32, {L.qweight_rows(), L.rows}, detail::le_bytes(L.qweight));
  w.add(prefix + ".qzeros", dtype::i32, {L.groups, L.qzeros_cols()}, detail::le_bytes(L.qzeros));
  w.add(prefix + ".scales", dtype::f16, {L.groups, L.rows}, detail::le_bytes(L.scales));
  w.add(prefix + ".g_idx", dtype::i32, {L.cols}, detail::le_bytes(L.g_idx));
}
inline void add_to(safetensors_writer& w, const std::string& prefix, const compressed_tensors_layer& L) {
  w.add(prefix + ".weight_packed", dtype::i32, {L.rows, L.packed_cols()}, detail::le_bytes(L.weight_packed));
  w.add(prefix + ".weight_scale", L.scale_type, {L.rows, L.groups}, detail::le_bytes(L.weight_scale));
  if (!L.symmetric)
    w.add(prefix + ".weight_zero_point", dtype::i32, {L.packed_zero_rows(), L.groups},
          detail::le_bytes(L.weight_zero_point));
  const std::vector<std::int64_t> shape{L.rows, L.cols};
  w.add(prefix + ".weight_shape", dtype::i64, {2}, detail::le_bytes(shape));
}

//! The compressed-tensors package version whose format the writer follows (and the tests pin).
inline constexpr std::string_view compressed_tensors_version = "0.20.1";

//! True when the layer's g_idx is not j / group_size (act-order with lazily fitted groups).
inline bool has_act_order_groups(const gptq_layer& L) {
  const index gc = L.cols / L.groups;
  for (index j = 0; j < L.cols; ++j)
    if (L.g_idx[static_cast<std::size_t>(j)] != j / gc) return true;
  return false;
}

//! quantize_config.json of a GPTQ checkpoint (AutoGPTQ / GPTQModel); group_size -1 = per channel.
//! desc_act: some layer's g_idx is not j / group_size (the loaders then take their act-order
//! path); static_groups: act-order was used with groups fitted up front (metadata only).
inline nlohmann::json gptq_quantize_config(const int_grid_options& o, bool desc_act, bool static_groups = false) {
  return {{"bits", o.bits},
          {"group_size", o.group_size <= 0 ? index{-1} : o.group_size},
          {"desc_act", desc_act},
          {"sym", o.sym},
          {"static_groups", static_groups},
          {"true_sequential", true},
          {"lm_head", false},
          {"checkpoint_format", "gptq"},
          {"quant_method", "gptq"}};
}

//! The "quantization_config" block of config.json for the given layout. desc_act (GPTQ): some
//! exported layer has act-order groups (see has_act_order_groups); c.act_order without them
//! means act-order with static groups.
inline nlohmann::json quantization_config(const int_grid_options& o, const checkpoint_options& c,
                                          bool desc_act = false) {
  if (c.format == checkpoint_format::gptq) return gptq_quantize_config(o, desc_act, c.act_order && !desc_act);
  nlohmann::json weights = {{"num_bits", o.bits},
                            {"type", "int"},
                            {"symmetric", o.sym},
                            {"strategy", o.group_size <= 0 ? "channel" : "group"},
                            {"group_size", o.group_size <= 0 ? nlohmann::json(nullptr) : nlohmann::json(o.group_size)},
                            {"dynamic", false},
                            {"actorder", c.act_order ? nlohmann::json("weight") : nlohmann::json(nullptr)},
                            {"observer", "minmax"},
                            {"observer_kwargs", nlohmann::json::object()},
                            {"block_structure", nullptr}};
  return {{"quant_method", "compressed-tensors"},
          {"format", "pack-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups",
           {{"group_0",
             {{"targets", {"Linear"}},
              {"weights", weights},
              {"input_activations", nullptr},
              {"output_activations", nullptr},
              {"format", "pack-quantized"}}}}},
          {"ignore", c.ignore},
          {"kv_cache_scheme", nullptr},
          {"global_compression_ratio", nullptr},
          {"sparsity_config", nlohmann::json::object()},
          {"version", std::string(compressed_tensors_version)}};
}

//! One layer to export: its module name ("model.layers.0.mlp.down_proj"; a trailing ".weight" is
//! dropped) and its int_grid result in W's own basis.
template <Scalar T>
struct quantized_linear {
  std::string name;
  const rounded<int_grid<T>>* result = nullptr;
  bool rotated = false;  //!< the result's codes are in an RHT basis (rejected)

  //! From a rounded<int_grid<T>> or anything derived from it (gptq_result, layer_result: the
  //! latter's `rotated` flag is kept).
  template <class R>
    requires std::derived_from<R, rounded<int_grid<T>>>
  quantized_linear(std::string n, const R& r) : name(std::move(n)), result(&r) {
    if constexpr (requires { r.rotated; }) rotated = r.rotated;
  }
};

//! What write_quantized_checkpoint wrote besides the safetensors file.
struct checkpoint_json {
  nlohmann::json quantization_config;  //!< the "quantization_config" block for config.json
  nlohmann::json quantize_config;      //!< quantize_config.json (GPTQ layout; null otherwise)
};

//! Adds every layer in the chosen layout to `w` (which may already hold the pass-through
//! tensors: embeddings, norms, unquantized layers), writes the file to `path` and returns the
//! JSON. Throws invalid_argument naming the layer when one is not representable (nothing is
//! written then), and for a tensor name added twice (e.g. a layer's ".weight" also passed
//! through).
template <Scalar T>
checkpoint_json write_quantized_checkpoint(safetensors_writer& w, const std::filesystem::path& path,
                                           std::span<const quantized_linear<T>> layers, const int_grid_options& grid,
                                           const checkpoint_options& opt = {}) {
  constexpr const char* what = "yaqa::write_quantized_checkpoint";
  bool desc_act = false;
  detail::require(opt.format != checkpoint_format::gptq || opt.scale_type == dtype::f16, what,
                  ": the GPTQ layout stores F16 scales; got scale type ", safetensors_name(opt.scale_type));
  // Pack everything first: a layer that cannot be exported leaves `w` as it was.
  std::vector<gptq_layer> gq;
  std::vector<compressed_tensors_layer> cq;
  std::vector<std::string> prefixes;
  for (const auto& l : layers) {
    const std::string prefix = detail::module_prefix(l.name);
    detail::require(l.result != nullptr, what, ": layer '", l.name, "' has no result");
    detail::require(!l.rotated, what, ": layer '", l.name,
                    "' was rounded with the random Hadamard transform (RHT): its codes are those of ",
                    "U_out^T W U_in, which the ", checkpoint_format_name(opt.format),
                    " layout cannot express; round with incoherence off");
    detail::require(!w.contains(prefix + ".weight"), what, ": layer '", l.name, "': the writer already holds '",
                    prefix, ".weight' (do not pass a quantized layer's weight through)");
    detail::require(std::find(prefixes.begin(), prefixes.end(), prefix) == prefixes.end(), what, ": layer '",
                    l.name, "' is given twice");
    prefixes.push_back(prefix);
    if (opt.format == checkpoint_format::gptq) {
      gq.push_back(pack_gptq(*l.result, grid, l.name, opt.verify));
      desc_act |= has_act_order_groups(gq.back());
    } else {
      cq.push_back(pack_compressed_tensors(*l.result, grid, l.name, opt.scale_type, opt.verify));
    }
  }
  for (std::size_t k = 0; k < prefixes.size(); ++k) {
    if (opt.format == checkpoint_format::gptq)
      add_to(w, prefixes[k], gq[k]);
    else
      add_to(w, prefixes[k], cq[k]);
  }
  if (!w.metadata().contains("format")) w.metadata()["format"] = "pt";
  w.write(path);
  checkpoint_json j;
  j.quantization_config = quantization_config(grid, opt, desc_act);
  if (opt.format == checkpoint_format::gptq) j.quantize_config = j.quantization_config;
  return j;
}

//! Same, passing through every tensor of `input` except the exported layers' "<name>.weight"
//! (borrowed: `input` must stay open until this returns).
template <Scalar T>
checkpoint_json write_quantized_checkpoint(const safetensors_file& input, const std::filesystem::path& path,
                                           std::span<const quantized_linear<T>> layers, const int_grid_options& grid,
                                           const checkpoint_options& opt = {}) {
  safetensors_writer w;
  w.forbid_path(input.path());
  w.metadata() = input.metadata();
  std::vector<std::string> skip;
  for (const auto& l : layers) skip.push_back(detail::module_prefix(l.name) + ".weight");
  for (const auto& t : input.tensors())
    if (std::find(skip.begin(), skip.end(), t.name) == skip.end()) w.add_borrowed(t);
  return write_quantized_checkpoint(w, path, layers, grid, opt);
}

}  // namespace yaqa
