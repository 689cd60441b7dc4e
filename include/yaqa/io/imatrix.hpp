#pragma once
//! \file
//! llama.cpp importance matrices ("imatrix"): the per-input-channel mean of x^2 that llama-imatrix
//! collects for every weight it sees in a matrix multiplication, i.e. the diagonal of the input
//! Hessian proxy X^T X / tokens, one per expert for MoE weights. Both file formats are read:
//!
//!  - GGUF (llama-imatrix's default since 2025): general.type = "imatrix", keys imatrix.datasets
//!    (array of strings), imatrix.chunk_count and imatrix.chunk_size (u32), and per weight W the F32
//!    tensors "W.in_sum2" (ne = [n, experts]: the sums of x^2) and "W.counts" (ne = [1, experts]: the
//!    number of tokens each expert saw). Other tensors ("W.in_sum", statistics) are ignored.
//!  - legacy .dat: i32 entry count, then per entry i32 name length, the name, i32 ncall, i32 nval,
//!    nval f32 values, then optionally i32 chunk count, i32 dataset name length and the name. The
//!    values are stored pre-normalized as (sum / count) * ncall, experts flattened into one row.
//!
//! The format is detected by content (the GGUF magic). Normalization, exactly as llama-quantize
//! applies it before quantizing: GGUF: diagonal = in_sum2 / count per expert, and 1 for an expert
//! whose count is 0 (never routed to); legacy: value / ncall when ncall > 0, else the stored value.
//! Every violation is a format_error naming the file, the entry and the rule.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <yaqa/core/config.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/io/file.hpp>
#include <yaqa/io/gguf.hpp>
#include <yaqa/io/tensor.hpp>

namespace yaqa {

enum class imatrix_format { gguf, legacy };

//! The importance data of one weight tensor.
struct imatrix_entry {
  std::string name;  //!< the weight's tensor name, e.g. "blk.0.attn_q.weight"
  index n = 0;       //!< row length: the weight's input dimension (legacy: all experts' values, see below)
  //! One normalized diagonal (length n) per expert; a single one for a dense weight.
  std::vector<vector<double>> diagonals;
  //! Per expert: GGUF: tokens seen (the .counts tensor); legacy: {ncall}, the one count it stores.
  std::vector<double> counts;

  [[nodiscard]] index experts() const { return index(diagonals.size()); }
};

//! A whole importance-matrix file.
struct imatrix {
  imatrix_format format = imatrix_format::gguf;
  std::string source;                  //!< the file name (for messages)
  std::vector<imatrix_entry> entries;  //!< sorted by name
  std::vector<std::string> datasets;   //!< imatrix.datasets; legacy: the trailing dataset name, if any
  std::uint32_t chunk_count = 0;       //!< imatrix.chunk_count; legacy: the trailing chunk count (0 if absent)
  std::uint32_t chunk_size = 0;        //!< imatrix.chunk_size; legacy: 0 (not stored)

  [[nodiscard]] const imatrix_entry* find(std::string_view name) const {
    auto it = std::lower_bound(entries.begin(), entries.end(), name,
                               [](const imatrix_entry& e, std::string_view n) { return e.name < n; });
    return it != entries.end() && it->name == name ? &*it : nullptr;
  }
  [[nodiscard]] const imatrix_entry& at(std::string_view name) const {
    const imatrix_entry* e = find(name);
    detail::require<format_error>(e != nullptr, "yaqa::imatrix::at: '", source, "' has no entry for '", name,
                                  "' (it has ", entries.size(), " entries)");
    return *e;
  }
};

namespace detail {

template <class... A>
[[noreturn]] void imatrix_fail(std::string_view source, A&&... a) {
  throw format_error(concat("yaqa::read_imatrix: '", source, "': ", std::forward<A>(a)...));
}

inline void imatrix_check_finite(std::string_view source, const std::string& what, std::span<const float> v) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) imatrix_fail(source, what, " holds a non-finite value (", v[i], " at ", i, ")");
}

inline std::vector<float> imatrix_floats(const std::byte* p, std::size_t n) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = std::bit_cast<float>(load_le<std::uint32_t>(p + 4 * i));
  return v;
}

inline imatrix imatrix_from_gguf(const gguf_file& f) {
  const std::string& src = f.path();
  imatrix m;
  m.format = imatrix_format::gguf;
  m.source = src;
  if (const gguf_value* t = f.find_value("general.type"))
    if (!t->is<std::string>() || t->as<std::string>() != "imatrix")
      imatrix_fail(src, "general.type is ", t->is<std::string>() ? "'" + t->as<std::string>() + "'" : t->describe(),
                   "; expected 'imatrix' (is this a model file?)");
  // llama-quantize requires the three keys.
  try {
    m.chunk_count = f.get<std::uint32_t>("imatrix.chunk_count");
    m.chunk_size = f.get<std::uint32_t>("imatrix.chunk_size");
    m.datasets = f.value("imatrix.datasets").as_vector<std::string>();
  } catch (const format_error& e) {
    imatrix_fail(src, "missing or mistyped imatrix metadata (imatrix.chunk_count and imatrix.chunk_size: u32, "
                      "imatrix.datasets: array of strings): ", e.what());
  }
  // Pair "<W>.in_sum2" with "<W>.counts"; other tensors are ignored.
  std::map<std::string, std::pair<const gguf_tensor_info*, const gguf_tensor_info*>> pairs;
  auto strip = [](const std::string& s, std::string_view suffix, std::string& base) {
    if (s.size() <= suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    base = s.substr(0, s.size() - suffix.size());
    return true;
  };
  for (const auto& t : f.tensors()) {
    std::string base;
    if (strip(t.name, ".in_sum2", base)) pairs[base].first = &t;
    else if (strip(t.name, ".counts", base)) pairs[base].second = &t;
  }
  if (pairs.empty()) imatrix_fail(src, "no '<weight>.in_sum2' / '<weight>.counts' tensors; expected at least one pair");
  for (const auto& [name, pc] : pairs) {
    const auto* sums = pc.first;
    const auto* counts = pc.second;
    if (!sums || !counts)
      imatrix_fail(src, "weight '", name, "' has ",
                   sums ? "'.in_sum2' but no '.counts'" : "'.counts' but no '.in_sum2'", " tensor; expected both");
    for (const auto* t : {sums, counts})
      if (t->type != ggml_type::f32) imatrix_fail(src, "tensor '", t->name, "' is ", t->type, "; expected F32");
    if (sums->ne.size() < 1 || sums->ne.size() > 2)
      imatrix_fail(src, "tensor '", sums->name, "' has ne ", shape_string(sums->ne), "; expected [n] or [n, experts]");
    const index n = sums->ne[0];
    const index experts = sums->ne.size() == 2 ? sums->ne[1] : 1;
    if (n < 1 || experts < 1)
      imatrix_fail(src, "tensor '", sums->name, "' has ne ", shape_string(sums->ne), "; expected positive dimensions");
    if (counts->numel() != experts)
      imatrix_fail(src, "tensor '", counts->name, "' has ", counts->numel(), " elements (ne ", shape_string(counts->ne),
                   "); expected one count per expert of '", sums->name, "' (", experts, ")");
    const auto s = imatrix_floats(sums->bytes.data(), std::size_t(n * experts));
    const auto c = imatrix_floats(counts->bytes.data(), std::size_t(experts));
    imatrix_check_finite(src, "tensor '" + sums->name + "'", s);
    imatrix_check_finite(src, "tensor '" + counts->name + "'", c);
    imatrix_entry e;
    e.name = name;
    e.n = n;
    for (index x = 0; x < experts; ++x) {
      const double cnt = c[std::size_t(x)];
      if (cnt < 0) imatrix_fail(src, "tensor '", counts->name, "' has a negative count (", cnt, " for expert ", x, ")");
      vector<double> d(n);
      for (index i = 0; i < n; ++i) d(i) = cnt > 0 ? double(s[std::size_t(x * n + i)]) / cnt : 1.0;
      e.diagonals.push_back(std::move(d));
      e.counts.push_back(cnt);
    }
    m.entries.push_back(std::move(e));
  }
  return m;  // std::map order: sorted by name
}

inline imatrix imatrix_from_legacy(std::span<const std::byte> b, std::string_view src) {
  imatrix m;
  m.format = imatrix_format::legacy;
  m.source = std::string(src);
  std::size_t pos = 0;
  auto i32 = [&](auto&&... what) {
    if (b.size() - pos < 4)
      imatrix_fail(src, "truncated: ", what..., " needs 4 bytes at offset ", pos, " but only ", b.size() - pos,
                   " remain");
    const auto v = std::int32_t(load_le<std::uint32_t>(b.data() + pos));
    pos += 4;
    return v;
  };
  const std::int32_t n_entries = i32("the entry count");
  if (n_entries < 1) imatrix_fail(src, "entry count is ", n_entries, "; expected at least 1 (legacy .dat imatrix)");
  // Each entry takes >= 17 bytes (name length, a 1-byte name, ncall, nval, one value).
  if (std::size_t(n_entries) > (b.size() - pos) / 17)
    imatrix_fail(src, "entry count ", n_entries, " cannot fit in the remaining ", b.size() - pos,
                 " bytes (17 bytes per entry at least); not a legacy imatrix or truncated");
  for (std::int32_t k = 0; k < n_entries; ++k) {
    const std::int32_t len = i32("entry ", k, ": name length");
    if (len < 1 || std::size_t(len) > b.size() - pos)
      imatrix_fail(src, "entry ", k, ": name length ", len, " is not in [1, ", b.size() - pos, " bytes remaining]");
    std::string name(reinterpret_cast<const char*>(b.data() + pos), std::size_t(len));
    pos += std::size_t(len);
    const std::int32_t ncall = i32("entry '", name, "': ncall");
    const std::int32_t nval = i32("entry '", name, "': value count");
    if (ncall < 0) imatrix_fail(src, "entry '", name, "': ncall is ", ncall, "; expected >= 0");
    if (nval < 1 || std::size_t(nval) > (b.size() - pos) / 4)
      imatrix_fail(src, "entry '", name, "': value count ", nval, " is not in [1, ", (b.size() - pos) / 4,
                   "] (the floats left in the file)");
    const auto v = imatrix_floats(b.data() + pos, std::size_t(nval));
    pos += 4 * std::size_t(nval);
    imatrix_check_finite(src, "entry '" + name + "'", v);
    imatrix_entry e;
    e.name = std::move(name);
    e.n = nval;
    vector<double> d(nval);
    for (index i = 0; i < nval; ++i) d(i) = ncall > 0 ? double(v[std::size_t(i)]) / ncall : double(v[std::size_t(i)]);
    e.diagonals.push_back(std::move(d));
    e.counts.push_back(double(ncall));
    m.entries.push_back(std::move(e));
  }
  if (pos < b.size()) {  // optional trailer: chunk count, dataset name
    const std::int32_t chunks = i32("the trailing chunk count");
    const std::int32_t len = i32("the trailing dataset name length");
    if (chunks < 0) imatrix_fail(src, "trailing chunk count is ", chunks, "; expected >= 0");
    if (len < 0 || std::size_t(len) != b.size() - pos)
      imatrix_fail(src, "trailing dataset name length is ", len, " but ", b.size() - pos,
                   " bytes remain; expected the name to end the file");
    m.chunk_count = std::uint32_t(chunks);
    if (len > 0) m.datasets.emplace_back(reinterpret_cast<const char*>(b.data() + pos), std::size_t(len));
  }
  std::sort(m.entries.begin(), m.entries.end(), [](const auto& a, const auto& c) { return a.name < c.name; });
  for (std::size_t i = 1; i < m.entries.size(); ++i)
    if (m.entries[i].name == m.entries[i - 1].name)
      imatrix_fail(src, "entry '", m.entries[i].name, "' appears twice; expected unique names");
  return m;
}

}  // namespace detail

//! Parses an importance matrix held in memory (either format, detected by the GGUF magic); `name`
//! stands for the file name in messages.
inline imatrix parse_imatrix(std::span<const std::byte> bytes, std::string_view name = "<memory>") {
  if (bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0)
    return detail::imatrix_from_gguf(gguf_file::from_bytes({bytes.begin(), bytes.end()}, name));
  return detail::imatrix_from_legacy(bytes, name);
}

//! Reads an importance matrix file (either format). Throws io_error when it cannot be read,
//! format_error when it is malformed.
inline imatrix read_imatrix(const std::filesystem::path& path) {
  const mapped_file f(path, true, "yaqa::read_imatrix");
  const auto b = f.bytes();
  if (b.size() >= 4 && std::memcmp(b.data(), "GGUF", 4) == 0) return detail::imatrix_from_gguf(gguf_file(path));
  return detail::imatrix_from_legacy(b, path.string());
}

}  // namespace yaqa
