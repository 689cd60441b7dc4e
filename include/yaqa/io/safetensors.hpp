#pragma once
//! \file
//! safetensors reading and writing.
//!
//! Format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping each tensor name
//! to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data section that
//! follows the header), plus an optional "__metadata__" string->string map; then the data.
//!
//! Reading (safetensors_file) memory-maps the file and validates the whole header before anything
//! is exposed, so a corrupt or hostile file is rejected with a format_error naming the file, the
//! tensor and the rule it breaks, never read out of bounds. Tensors are tensor_views into the
//! mapping (see io/tensor.hpp for to_matrix / to_vector). Writing (safetensors_writer) collects
//! tensors and writes them atomically (temporary file + rename). See docs/io.md.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <ranges>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <nlohmann/json.hpp>

#include <yaqa/core/config.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/io/dtype.hpp>
#include <yaqa/io/file.hpp>
#include <yaqa/io/tensor.hpp>

namespace yaqa {

//! Limits and leniencies of safetensors_file.
struct safetensors_read_options {
  //! Largest accepted JSON header, in bytes. Real checkpoints have headers of a few MB at most;
  //! the cap stops a corrupt length field from making us parse (or allocate) gigabytes.
  std::uint64_t max_header_size = std::uint64_t{100} << 20;
  //! Map the file (pages read on demand) rather than read it whole into memory.
  bool memory_map = true;
  //! Accept bytes of the data section that belong to no tensor. The format forbids such gaps (the
  //! reference implementation rejects them, which rules out files that are also another format),
  //! so they are an error unless this is set.
  bool allow_gaps = false;
};

namespace detail {

struct safetensors_entry {
  std::string name;
  dtype type;
  std::vector<index> shape;
  std::uint64_t begin, end;  // relative to the data section
};

struct safetensors_state {
  std::filesystem::path path;
  std::string path_string;
  mapped_file file;
  std::uint64_t header_size = 0;
  std::uint64_t data_size = 0;
  std::map<std::string, std::string> metadata;
  std::vector<safetensors_entry> entries;  // sorted by name; never resized after construction
  std::vector<tensor_view> views;          // parallel to entries
};

inline std::string json_type_name(const nlohmann::json& j) { return j.type_name(); }

//! A one-level rendering of j for error messages: scalars as JSON, an array's scalar elements as
//! JSON and its nested arrays/objects as "[...]"/"{...}", at most 16 elements. Never json::dump()
//! a value from a file: dump recurses once per nesting level (the parser itself is iterative),
//! and a header of 100000 nested brackets overflowed the stack (see docs/reliability.md).
inline std::string json_brief(const nlohmann::json& j) {
  auto one = [](const nlohmann::json& v) -> std::string {
    if (v.is_array()) return v.empty() ? "[]" : "[...]";
    if (v.is_object()) return v.empty() ? "{}" : "{...}";
    return v.dump();
  };
  if (!j.is_array()) return one(j);
  std::string s = "[";
  std::size_t k = 0;
  for (const auto& v : j) {
    if (k == 16) {
      s += concat(",... (", j.size(), " elements)");
      break;
    }
    s += (k++ ? "," : "") + one(v);
  }
  return s + "]";
}

//! SAX handler that records the first key repeated within one JSON object.
struct duplicate_key_finder : nlohmann::json_sax<nlohmann::json> {
  std::vector<std::set<std::string, std::less<>>> open;  // keys seen, per open object
  std::string duplicate;

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return open.emplace_back(), true; }
  bool end_object() override { return open.pop_back(), true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool key(string_t& k) override {
    if (!open.back().insert(k).second && duplicate.empty()) duplicate = k;
    return duplicate.empty();  // stop at the first one
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::json::exception&) override { return false; }
};

inline std::string known_dtype_list() {
  std::string s;
  for (const auto& d : dtype_table) s += (s.empty() ? "" : ", ") + std::string(d.safetensors);
  return s;
}

}  // namespace detail

//! A safetensors file opened for reading: validated header, metadata, and tensor views into the
//! (memory-mapped) data. Cheap to copy: copies share the mapping, which lives as long as any copy
//! or any tensor_view a caller keeps together with one.
class safetensors_file {
 public:
  //! Opens and validates `path`. Cost: O(header size); the data is not read (with memory_map).
  //! Throws io_error when the file cannot be opened or read, format_error when it is malformed.
  explicit safetensors_file(const std::filesystem::path& path, const safetensors_read_options& options = {}) {
    auto st = std::make_shared<detail::safetensors_state>();
    st->path = path;
    st->path_string = path.string();
    st->file = mapped_file(path, options.memory_map, "yaqa::safetensors_file");
    parse(*st, options);
    state_ = std::move(st);
  }

  //! Parses a safetensors image held in memory, with exactly the validation of the file
  //! constructor; `name` stands for the file name in error messages. The bytes are taken over
  //! (the tensor views point into them).
  static safetensors_file from_bytes(std::vector<std::byte> bytes, std::string_view name = "<memory>",
                                     const safetensors_read_options& options = {}) {
    auto st = std::make_shared<detail::safetensors_state>();
    st->path = std::filesystem::path(name);
    st->path_string = std::string(name);
    st->file = mapped_file::from_bytes(std::move(bytes));
    parse(*st, options);
    return safetensors_file(std::move(st));
  }

  [[nodiscard]] const std::filesystem::path& path() const { return state_->path; }
  //! The "__metadata__" map (empty when the file has none).
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const { return state_->metadata; }
  //! All tensors, sorted by name.
  [[nodiscard]] std::span<const tensor_view> tensors() const { return state_->views; }
  [[nodiscard]] std::size_t size() const { return state_->views.size(); }
  [[nodiscard]] bool contains(std::string_view name) const { return find(name) != nullptr; }
  //! The tensor called `name`, or nullptr.
  [[nodiscard]] const tensor_view* find(std::string_view name) const {
    const auto& v = state_->views;
    auto it = std::lower_bound(v.begin(), v.end(), name,
                               [](const tensor_view& t, std::string_view n) { return t.name < n; });
    return it != v.end() && it->name == name ? &*it : nullptr;
  }
  //! The tensor called `name`; format_error naming the file when it has no such tensor.
  [[nodiscard]] const tensor_view& at(std::string_view name) const {
    const tensor_view* t = find(name);
    detail::require<format_error>(t != nullptr, "yaqa::safetensors_file::at: '", state_->path_string,
                                  "' has no tensor '", name, "' (it has ", size(), " tensors)");
    return *t;
  }
  //! Length of the JSON header and of the data section, in bytes.
  [[nodiscard]] std::uint64_t header_size() const { return state_->header_size; }
  [[nodiscard]] std::uint64_t data_size() const { return state_->data_size; }
  [[nodiscard]] bool is_memory_mapped() const { return state_->file.is_mapped(); }

 private:
  explicit safetensors_file(std::shared_ptr<const detail::safetensors_state> st) : state_(std::move(st)) {}

  template <class... A>
  [[noreturn]] static void fail(const detail::safetensors_state& st, A&&... a) {
    throw format_error(detail::concat("yaqa::safetensors_file: '", st.path_string, "': ", std::forward<A>(a)...));
  }

  static void parse(detail::safetensors_state& st, const safetensors_read_options& opt) {
    using nlohmann::json;
    const auto bytes = st.file.bytes();
    const std::uint64_t fsize = bytes.size();
    if (fsize < 8)
      fail(st, "file is ", fsize, " bytes; expected at least 8 (the little-endian u64 header length)");
    const std::uint64_t n = detail::load_le<std::uint64_t>(bytes.data());
    if (n > fsize - 8)
      fail(st, "header length ", n, " runs past the end of the file (", fsize, " bytes, so at most ", fsize - 8,
           " bytes of header); the file is truncated or not safetensors");
    if (n > opt.max_header_size)
      fail(st, "header length ", n, " exceeds the limit of ", opt.max_header_size,
           " bytes (safetensors_read_options::max_header_size)");
    st.header_size = n;
    st.data_size = fsize - 8 - n;
    const char* hbeg = reinterpret_cast<const char*>(bytes.data() + 8);

    json header;
    try {
      header = json::parse(hbeg, hbeg + n);
    } catch (const json::exception& e) {
      fail(st, "header (", n, " bytes) is not valid JSON: ", e.what());
    }
    if (!header.is_object()) fail(st, "header is a JSON ", detail::json_type_name(header), "; expected an object");
    // nlohmann keeps the last of duplicated keys silently; a duplicated tensor name would make the
    // file mean different things to different readers, so look for them in a second, SAX pass
    // (nlohmann's parser callbacks, the other way to see keys, are orders of magnitude slower).
    detail::duplicate_key_finder dup;
    json::sax_parse(hbeg, hbeg + n, &dup);
    if (!dup.duplicate.empty()) fail(st, "header has the key '", dup.duplicate, "' twice; expected unique keys");

    std::vector<detail::safetensors_entry> entries;
    entries.reserve(header.size());
    for (const auto& [key, val] : header.items()) {
      if (key == "__metadata__") {
        if (!val.is_object())
          fail(st, "__metadata__ is a JSON ", detail::json_type_name(val), "; expected an object of strings");
        for (const auto& [mk, mv] : val.items()) {
          if (!mv.is_string())
            fail(st, "__metadata__ must map strings to strings; key '", mk, "' has a ",
                 detail::json_type_name(mv), " value");
          st.metadata.emplace(mk, mv.get<std::string>());
        }
        continue;
      }
      entries.push_back(parse_entry(st, key, val));
    }

    // Offsets: sort by position; tensors holding bytes must not overlap and (unless allowed)
    // must tile the data section exactly. Zero-byte tensors own nothing and are exempt.
    std::vector<const detail::safetensors_entry*> order;
    for (const auto& e : entries)
      if (e.end > e.begin) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
    std::uint64_t pos = 0;
    const detail::safetensors_entry* prev = nullptr;
    for (const auto* e : order) {
      if (prev && e->begin < prev->end)
        fail(st, "tensors '", prev->name, "' [", prev->begin, ", ", prev->end, ") and '", e->name, "' [", e->begin,
             ", ", e->end, ") overlap; expected disjoint data_offsets");
      if (e->begin != pos && !opt.allow_gaps)
        fail(st, "bytes [", pos, ", ", e->begin, ") of the data section belong to no tensor (before '", e->name,
             "'); expected tensors to cover the data section contiguously (safetensors_read_options::allow_gaps)");
      pos = e->end;
      prev = e;
    }
    if (pos != st.data_size && !opt.allow_gaps)
      fail(st, "bytes [", pos, ", ", st.data_size, ") at the end of the data section belong to no tensor; "
               "expected tensors to cover the data section contiguously (safetensors_read_options::allow_gaps)");

    // header.items() iterates std::map order, so entries are already sorted by name.
    st.entries = std::move(entries);
    st.views.reserve(st.entries.size());
    const std::byte* data = bytes.data() + 8 + n;
    for (const auto& e : st.entries)
      st.views.push_back(tensor_view{e.name, e.type, e.shape,
                                     std::span<const std::byte>(data + e.begin, std::size_t(e.end - e.begin)),
                                     st.path_string});
  }

  static detail::safetensors_entry parse_entry(const detail::safetensors_state& st, const std::string& name,
                                               const nlohmann::json& val) {
    if (!val.is_object())
      fail(st, "tensor '", name, "': entry is a JSON ", detail::json_type_name(val),
           "; expected an object with dtype, shape and data_offsets");
    for (const auto& [k, v] : val.items()) {
      (void)v;
      if (k != "dtype" && k != "shape" && k != "data_offsets")
        fail(st, "tensor '", name, "': unexpected key '", k, "'; expected only dtype, shape and data_offsets");
    }
    for (const char* k : {"dtype", "shape", "data_offsets"})
      if (!val.contains(k)) fail(st, "tensor '", name, "': missing key '", k, "'");

    detail::safetensors_entry e{name, dtype::f32, {}, 0, 0};
    const auto& jd = val["dtype"];
    if (!jd.is_string()) fail(st, "tensor '", name, "': dtype is a JSON ", detail::json_type_name(jd), "; expected a string");
    const auto dt = dtype_from_safetensors_name(jd.get_ref<const std::string&>());
    if (!dt)
      fail(st, "tensor '", name, "': unknown dtype '", jd.get_ref<const std::string&>(), "'; expected one of ",
           detail::known_dtype_list());
    e.type = *dt;

    const auto& js = val["shape"];
    if (!js.is_array()) fail(st, "tensor '", name, "': shape is a JSON ", detail::json_type_name(js), "; expected an array");
    for (std::size_t i = 0; i < js.size(); ++i) {
      const auto& d = js[i];
      if (d.is_number_integer() && !d.is_number_unsigned())
        fail(st, "tensor '", name, "': shape ", detail::json_brief(js), " has negative dimension ", i, "; expected non-negative integers");
      if (!d.is_number_unsigned())
        fail(st, "tensor '", name, "': shape ", detail::json_brief(js), " dimension ", i, " is a JSON ", detail::json_type_name(d),
             " (or an integer too large for 64 bits); expected non-negative integers");
      const std::uint64_t u = d.get<std::uint64_t>();
      if (u > std::uint64_t(PTRDIFF_MAX))
        fail(st, "tensor '", name, "': shape ", detail::json_brief(js), " dimension ", i, " is too large");
      e.shape.push_back(index(u));
    }
    const auto nbytes = detail::checked_nbytes(e.shape, dtype_size(e.type));
    if (!nbytes)
      fail(st, "tensor '", name, "': shape ", detail::json_brief(js), " of ", e.type,
           " has too many elements (the byte count overflows 64 bits)");

    const auto& jo = val["data_offsets"];
    if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
      fail(st, "tensor '", name, "': data_offsets is ", detail::json_brief(jo), "; expected [begin, end], two non-negative integers");
    e.begin = jo[0].get<std::uint64_t>();
    e.end = jo[1].get<std::uint64_t>();
    if (e.begin > e.end)
      fail(st, "tensor '", name, "': data_offsets [", e.begin, ", ", e.end, "] has begin > end; expected begin <= end");
    if (e.end > st.data_size)
      fail(st, "tensor '", name, "': data_offsets [", e.begin, ", ", e.end, "] run past the data section (",
           st.data_size, " bytes); the file is truncated or the offsets are wrong");
    if (e.end - e.begin != std::uint64_t(*nbytes))
      fail(st, "tensor '", name, "': data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin,
           " bytes; expected ", *nbytes, " (shape ", detail::shape_string(e.shape), " of ", e.type, ")");
    return e;
  }

  std::shared_ptr<const detail::safetensors_state> state_;
};

//! Collects tensors and writes them as one safetensors file.
//!
//! Layout written: tensors in name order (byte-wise string order) both in the JSON header and in
//! the data section, offsets contiguous from 0; "__metadata__" first when non-empty; the header
//! padded with spaces to a multiple of 8 bytes so the data section starts 8-byte aligned.
//! write() goes through a temporary file in the target's directory and a rename: on failure
//! nothing partial and no temporary file is left, and an existing file is untouched.
class safetensors_writer {
 public:
  //! Adds a tensor from raw little-endian bytes in row-major order (copied).
  void add(std::string name, dtype type, std::vector<index> shape, std::span<const std::byte> bytes) {
    auto& e = insert(std::move(name), type, std::move(shape), bytes.size(), "add");
    e.owned.assign(bytes.begin(), bytes.end());
    e.data = e.owned;
  }

  //! Like add() but keeps only a reference: `bytes` must stay valid until write() returns.
  //! Meant for passing tensors through from a safetensors_file without copying them.
  void add_borrowed(std::string name, dtype type, std::vector<index> shape, std::span<const std::byte> bytes) {
    auto& e = insert(std::move(name), type, std::move(shape), bytes.size(), "add_borrowed");
    e.data = bytes;
  }
  //! Pass-through of a tensor read from a file, under its own name (borrowed, see above).
  void add_borrowed(const tensor_view& t) {
    add_borrowed(std::string(t.name), t.type, std::vector<index>(t.shape.begin(), t.shape.end()), t.bytes);
  }

  //! Adds `values` (row-major order, shape `shape`; a std::vector, std::span or Eigen vector of
  //! float or double) converted to `stored` (F64, F32, F16 or BF16; narrowing rounds to nearest
  //! even).
  template <detail::value_range R>
  void add(std::string name, std::vector<index> shape, const R& values,
           dtype stored = dtype_of<detail::value_range_scalar<R>>) {
    detail::require_encodable("yaqa::safetensors_writer::add", name, stored);
    const index count = index(std::size(values));
    auto& e = insert(std::move(name), stored, std::move(shape), std::size_t(count * dtype_size(stored)), "add");
    e.owned.resize(std::size_t(count * dtype_size(stored)));
    detail::encode(stored, std::data(values), count, e.owned.data());
    e.data = e.owned;
  }

  //! Adds the rows x cols matrix m as a [rows, cols] tensor (row-major on disk, the PyTorch
  //! convention, so a weight W of out x in is stored as [out, in]) converted to `stored`.
  template <class T>
    requires Scalar<std::remove_const_t<T>>
  void add(std::string name, matrix_view<T, host_space> m, dtype stored = dtype_of<std::remove_const_t<T>>) {
    detail::require_encodable("yaqa::safetensors_writer::add", name, stored);
    auto bytes = detail::encode_row_major(matrix_view<const std::remove_const_t<T>>(m.data, m.rows, m.cols, m.ld), stored);
    auto& e = insert(std::move(name), stored, {m.rows, m.cols}, bytes.size(), "add");
    e.owned = std::move(bytes);
    e.data = e.owned;
  }
  //! Same for any Eigen dense expression (evaluated first); a vector is stored as [n, 1].
  template <class Derived>
  void add(std::string name, const Eigen::DenseBase<Derived>& m,
           dtype stored = dtype_of<typename Derived::Scalar>) {
    const matrix<typename Derived::Scalar> tmp = m;
    add(std::move(name), view(tmp), stored);
  }

  //! The "__metadata__" map written with the file (e.g. `w.metadata() = input.metadata();`).
  [[nodiscard]] std::map<std::string, std::string>& metadata() { return metadata_; }
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const { return metadata_; }

  //! Declares an input path that write() must refuse to overwrite (compared with
  //! filesystem::equivalent when both exist, so symlinks and hard links are caught).
  void forbid_path(std::filesystem::path p) { forbidden_.push_back(std::move(p)); }

  [[nodiscard]] std::size_t size() const { return entries_.size(); }
  [[nodiscard]] bool contains(std::string_view name) const { return entries_.find(name) != entries_.end(); }

  //! Calls f(name, type, shape, bytes) for every tensor, in name order (the order write() uses);
  //! e.g. to ship tensors made in another process (yaqa-quantize's layer-parallel mode).
  template <class F>
  void for_each(F&& f) const {
    for (const auto& [name, e] : entries_) f(name, e.type, std::span<const index>(e.shape), e.data);
  }

  //! Writes the file atomically. Throws invalid_argument for a forbidden path or a header that is
  //! not valid UTF-8, io_error when the OS refuses (the message names the path and the reason).
  void write(const std::filesystem::path& path) const {
    constexpr const char* what = "yaqa::safetensors_writer::write";
    check_not_forbidden(what, path, forbidden_);
    nlohmann::ordered_json header = nlohmann::ordered_json::object();  // keeps insertion order
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const auto& [name, e] : entries_) {
      header[name] = {{"dtype", std::string(safetensors_name(e.type))},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.data.size()}}};
      offset += e.data.size();
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const nlohmann::ordered_json::exception& ex) {
      throw invalid_argument(detail::concat(what, ": cannot write '", path.string(),
                                            "': a metadata key or value is not valid UTF-8 (", ex.what(), ")"));
    }
    text.append((8 - text.size() % 8) % 8, ' ');
    std::byte len[8];
    detail::store_le(len, std::uint64_t(text.size()));
    atomic_output_file out(path, what);
    out.write(std::span<const std::byte>(len, 8));
    out.write(text);
    for (const auto& [name, e] : entries_) out.write(e.data);
    out.commit();
  }

 private:
  struct entry {
    dtype type;
    std::vector<index> shape;
    std::vector<std::byte> owned;
    std::span<const std::byte> data;
  };

  entry& insert(std::string name, dtype type, std::vector<index> shape, std::size_t nbytes, const char* fn) {
    const std::string what = std::string("yaqa::safetensors_writer::") + fn;
    detail::require<invalid_argument>(!name.empty(), what, ": tensor name must be non-empty");
    detail::require<invalid_argument>(name != "__metadata__", what,
                                      ": '__metadata__' is reserved and cannot name a tensor");
    detail::require<invalid_argument>(!contains(name), what, ": tensor '", name,
                                      "' was already added; expected unique names");
    try {
      (void)nlohmann::json(name).dump();
    } catch (const nlohmann::json::exception&) {
      throw invalid_argument(detail::concat(what, ": tensor name is not valid UTF-8"));
    }
    const tensor_view probe{name, type, shape, {}, {}};
    const auto expected = detail::checked_nbytes(shape, dtype_size(type));
    detail::require<shape_error>(expected.has_value(), what, ": ", detail::describe(probe), " has shape ",
                                 detail::shape_string(shape), "; expected non-negative dimensions");
    detail::require<shape_error>(std::size_t(*expected) == nbytes, what, ": ", detail::describe(probe), " has ",
                                 nbytes, " bytes; expected ", *expected, " (shape ", detail::shape_string(shape),
                                 " of ", type, ")");
    auto [it, ok] = entries_.emplace(std::move(name), entry{type, std::move(shape), {}, {}});
    return it->second;
  }

  std::map<std::string, entry, std::less<>> entries_;  // node-based: entry addresses and owned buffers are stable
  std::map<std::string, std::string> metadata_;
  std::vector<std::filesystem::path> forbidden_;
};

}  // namespace yaqa
