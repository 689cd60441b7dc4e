// The yaqa Python extension (module yaqa._yaqa): the Hessian accumulators, the quantizers the CLI
// offers and the layer driver, over the library's headers. One translation unit; the layer driver
// itself (quantize_layer for each quantizer) is compiled once in instances/layers.cpp and linked
// (layer_instances.hpp declares it extern). The algorithms live in include/yaqa/ only: everything
// here converts arguments, releases the GIL and converts results.
//
// Arrays in: anything nanobind's ndarray caster accepts on the CPU (numpy arrays, torch tensors,
// any DLPack producer), float32 or float64, any strides. A 2-D array is used in place when it is
// column-major (unit stride along rows: Fortran order, or the .T of a C-order array); otherwise
// it is copied once into a column-major buffer, with the GIL released (docs/python.md).
// Arrays out: numpy arrays that own their buffer (a capsule deletes it with the last reference).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "layer_instances.hpp"  // quantize_layer for the CLI's quantizers: compiled in instances/
#include <yaqa/hessian/accumulator.hpp>
#include <yaqa/hessian/diagonal.hpp>
#include <yaqa/hessian/kronecker_sketch.hpp>
#include <yaqa/hessian/state.hpp>
#include <yaqa/version.hpp>

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using yaqa::index;
using backend = yaqa::cpu_backend;
template <class T>
using mat = yaqa::matrix<T>;
using array = nb::ndarray<nb::ro>;

// ---- exceptions ------------------------------------------------------------------------------

//! The Python class of each yaqa::error_class (index = the enum's value), created at import.
PyObject* py_errors[12] = {};

[[noreturn]] void fail(const std::string& msg) { throw yaqa::invalid_argument(msg); }

// ---- arrays in -------------------------------------------------------------------------------

//! An input array checked for device, dtype and rank.
struct input {
  const void* data = nullptr;
  bool f64 = false;
  std::vector<index> shape;
  std::vector<std::int64_t> strides;  // elements
};

const char* dtype_name(nb::dlpack::dtype d) {
  using nb::dlpack::dtype_code;
  if (d.code == std::uint8_t(dtype_code::Float)) return d.bits == 16 ? "float16" : d.bits == 32 ? "float32" : "float64";
  if (d.code == std::uint8_t(dtype_code::Int)) return d.bits == 8 ? "int8" : d.bits == 16 ? "int16" : d.bits == 32 ? "int32" : "int64";
  if (d.code == std::uint8_t(dtype_code::UInt)) return d.bits == 8 ? "uint8" : "unsigned int";
  if (d.code == std::uint8_t(dtype_code::Bfloat)) return "bfloat16";
  if (d.code == std::uint8_t(dtype_code::Bool)) return "bool";
  return "a non-float dtype";
}

input check(const array& a, const char* fn, const char* arg, std::size_t ndim) {
  if (a.device_type() != nb::device::cpu::value)
    fail(yaqa::detail::concat(fn, ": argument '", arg, "' must be a CPU array; got one on another device "
                              "(move it with .cpu() first)"));
  input r;
  if (a.dtype() == nb::dtype<double>())
    r.f64 = true;
  else if (a.dtype() != nb::dtype<float>())
    fail(yaqa::detail::concat(fn, ": argument '", arg, "' must be float32 or float64, got ", dtype_name(a.dtype())));
  if (a.ndim() != ndim) {
    std::string got = "(";
    for (std::size_t i = 0; i < a.ndim(); ++i) got += (i ? ", " : "") + std::to_string(a.shape(i));
    got += a.ndim() == 1 ? ",)" : ")";
    fail(yaqa::detail::concat(fn, ": argument '", arg, "' must be ", ndim, "-D, got shape ", got));
  }
  r.data = a.data();
  for (std::size_t i = 0; i < ndim; ++i) {
    r.shape.push_back(index(a.shape(i)));
    r.strides.push_back(a.stride(i));
  }
  return r;
}

//! A column-major view of the rows x cols matrix at p with element strides (rs, cs): in place
//! when the layout allows it, else copied (converted to T when the source type S differs) into buf.
template <class T, class S>
yaqa::matrix_view<const T> col_major(const S* p, index rows, index cols, std::int64_t rs, std::int64_t cs,
                                     mat<T>& buf) {
  if constexpr (std::is_same_v<T, S>) {
    if (rows == 0 || cols == 0) return {p, rows, cols, rows > 0 ? rows : 1};
    if (rows * cols == 1) return {p, 1, 1, 1};
    if (rs == 1 && cols == 1) return {p, rows, 1, rows};
    if (rs == 1 && cs >= rows) return {p, rows, cols, index(cs)};
    if (rows == 1 && cs >= 1) return {p, 1, cols, index(cs)};
  }
  buf.resize(rows, cols);
  for (index j = 0; j < cols; ++j)
    for (index i = 0; i < rows; ++i) buf(i, j) = T(p[i * rs + j * cs]);
  return yaqa::matrix_view<const T>(buf.data(), rows, cols, rows > 0 ? rows : 1);
}

template <class T>
yaqa::matrix_view<const T> col_major(const input& in, mat<T>& buf, index offset = 0, int d0 = 0) {
  if (in.f64)
    return col_major<T>(static_cast<const double*>(in.data) + offset, in.shape[d0], in.shape[d0 + 1],
                        in.strides[d0], in.strides[d0 + 1], buf);
  return col_major<T>(static_cast<const float*>(in.data) + offset, in.shape[d0], in.shape[d0 + 1], in.strides[d0],
                      in.strides[d0 + 1], buf);
}

// ---- arrays out ------------------------------------------------------------------------------

template <class T>
nb::object to_numpy(mat<T>&& m) {
  auto* h = new mat<T>(std::move(m));
  nb::capsule owner(h, [](void* p) noexcept { delete static_cast<mat<T>*>(p); });
  const std::size_t shape[2] = {std::size_t(h->rows()), std::size_t(h->cols())};
  const std::int64_t strides[2] = {1, std::int64_t(h->rows())};
  return nb::ndarray<nb::numpy, T>(h->data(), 2, shape, owner, strides).cast();
}

template <class T>
nb::object to_numpy(std::vector<T>&& v, std::vector<std::size_t> shape) {
  auto* h = new std::vector<T>(std::move(v));
  nb::capsule owner(h, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return nb::ndarray<nb::numpy, T>(h->data(), shape.size(), shape.data(), owner).cast();
}

template <class T>
nb::object to_numpy(const yaqa::vector<T>& v) {
  return to_numpy(std::vector<T>(v.data(), v.data() + v.size()), {std::size_t(v.size())});
}

// ---- accumulators ----------------------------------------------------------------------------

yaqa::batch_precision parse_precision(const std::string& s) {
  if (s == "input") return yaqa::batch_precision::input;
  if (s == "accumulator") return yaqa::batch_precision::accumulator;
  fail("yaqa: argument 'precision' is '" + s + "'; expected 'input' or 'accumulator'");
}
yaqa::sketch_b_path parse_path(const std::string& s) {
  if (s == "automatic") return yaqa::sketch_b_path::automatic;
  if (s == "direct") return yaqa::sketch_b_path::direct;
  if (s == "gram") return yaqa::sketch_b_path::gram;
  fail("yaqa.SketchB: argument 'path' is '" + s + "'; expected 'automatic', 'direct' or 'gram'");
}
void check_threads(int threads) {
  if (threads < 0) fail(yaqa::detail::concat("yaqa: argument 'threads' must be >= 0 (0 = all cores), got ", threads));
}
index check_dim(long long n, const char* fn, const char* arg) {
  if (n < 1) fail(yaqa::detail::concat(fn, ": argument '", arg, "' must be >= 1, got ", n));
  return index(n);
}

//! What every wrapper keeps beside its accumulator: the construction options, for pickling.
struct settings {
  std::string precision = "input", path = "automatic";
  int threads = 0;
  yaqa::accumulate_options options() const { return {parse_precision(precision), parse_path(path)}; }
};

nb::bytes state_bytes(const std::vector<std::byte>& b) { return nb::bytes(reinterpret_cast<const char*>(b.data()), b.size()); }
std::span<const std::byte> bytes_span(const nb::bytes& b) {
  return {reinterpret_cast<const std::byte*>(b.c_str()), b.size()};
}

struct py_second_moment {
  settings s;
  yaqa::second_moment<double, backend> acc;
  py_second_moment(index n, settings st) : s(std::move(st)), acc(n, s.options(), backend{s.threads}) {}
};
struct py_diagonal {
  settings s;
  yaqa::diagonal_second_moment<double, backend> acc;
  py_diagonal(index n, settings st) : s(std::move(st)), acc(n, s.options(), backend{s.threads}) {}
};
struct py_sketch_a {
  settings s;
  yaqa::sketch_a<double, backend> acc;
  py_sketch_a(index n, index m, int passes, settings st)
      : s(std::move(st)), acc(n, m, passes, s.options(), backend{s.threads}) {}
};
struct py_sketch_b {
  settings s;
  yaqa::sketch_b<double, backend> acc;
  py_sketch_b(index n, index m, settings st) : s(std::move(st)), acc(n, m, s.options(), backend{s.threads}) {}
};

settings make_settings(const std::string& precision, const std::string& path, int threads) {
  check_threads(threads);
  settings s{precision, path, threads};
  (void)s.options();  // validates the names
  return s;
}

//! acc.add(x) for a T x n array (any float dtype and layout), GIL released.
template <class Acc>
void add_tokens(Acc& acc, const array& x, const char* fn) {
  const input in = check(x, fn, "x", 2);
  nb::gil_scoped_release unlocked;
  if (in.f64) {
    mat<double> buf;
    acc.add(col_major<double>(in, buf));
  } else {
    mat<float> buf;
    acc.add(col_major<float>(in, buf));
  }
}

//! x and g of one call: same dtype, the given rank.
std::pair<input, input> check_pair(const array& x, const array& g, const char* fn, std::size_t ndim) {
  input ix = check(x, fn, "x", ndim), ig = check(g, fn, "g", ndim);
  if (ix.f64 != ig.f64)
    fail(yaqa::detail::concat(fn, ": arguments 'x' and 'g' must have the same dtype, got ", ix.f64 ? "float64" : "float32",
                              " and ", ig.f64 ? "float64" : "float32"));
  return {std::move(ix), std::move(ig)};
}

template <class T>
void sketch_a_add(py_sketch_a& self, const input& ix, const std::optional<input>& ig) {
  mat<T> bx, bg;
  const auto xv = col_major<T>(ix, bx);
  const auto gv = ig ? col_major<T>(*ig, bg) : yaqa::matrix_view<const T>{};
  self.acc.add(xv, gv);
}

template <class T>
void sketch_b_add(py_sketch_b& self, const input& ix, const input& ig, bool batched) {
  mat<T> bx, bg;
  if (!batched) {
    self.acc.add_sequence(col_major<T>(ix, bx), col_major<T>(ig, bg));
    return;
  }
  for (index s = 0; s < ix.shape[0]; ++s)
    self.acc.add_sequence(col_major<T>(ix, bx, s * ix.strides[0], 1), col_major<T>(ig, bg, s * ig.strides[0], 1));
}

// ---- quantizers ---------------------------------------------------------------------------

nb::dict dict_of(std::initializer_list<std::pair<const char*, nb::object>> items) {
  nb::dict d;
  for (const auto& [k, v] : items) d[k] = v;
  return d;
}


using quantizer_variant = std::variant<yaqa::int_grid<float>, yaqa::lloyd_max_grid<float>, yaqa::fp4_e2m1<float>,
                                       yaqa::e8p<float>, yaqa::e8p_rvq<float>, yaqa::trellis<float>,
                                       yaqa::gguf_any<float>>;

//! The GGUF block types yaqa-quantize offers (quantizers/gguf/).
constexpr yaqa::ggml_type gguf_types[] = {yaqa::ggml_type::q8_0, yaqa::ggml_type::q4_0, yaqa::ggml_type::q5_0,
                                          yaqa::ggml_type::iq4_nl, yaqa::ggml_type::q2_k, yaqa::ggml_type::q3_k,
                                          yaqa::ggml_type::q4_k, yaqa::ggml_type::q5_k, yaqa::ggml_type::q6_k};

yaqa::ggml_type parse_gguf_type(std::string name) {
  for (char& c : name) c = char(std::toupper(static_cast<unsigned char>(c)));
  std::string known;
  for (auto t : gguf_types) {
    if (yaqa::ggml_type_name(t) == name) return t;
    known += (known.empty() ? "" : ", ") + std::string(yaqa::ggml_type_name(t));
  }
  fail("yaqa.gguf: argument 'type' is '" + name + "'; expected one of " + known);
}

//! A quantizer and the options it was made from (kind, options dict, for repr and pickling).
struct py_quantizer {
  std::string kind;
  nb::dict options;
  quantizer_variant q;
  bool importance = false;  //!< gguf: diag(H_in) as the importance (llama.cpp's imatrix use)
};

py_quantizer make_int_grid(int bits, bool sym, long long group_size, bool mse) {
  return {"int",
          nb::dict(),
          yaqa::int_grid<float>(yaqa::int_grid_options{.bits = bits, .sym = sym, .group_size = index(group_size), .mse = mse})};
}

// ---- the layer driver ------------------------------------------------------------------------

yaqa::method parse_method(const std::string& s) {
  if (s == "yaqa") return yaqa::method::yaqa;
  if (s == "ldlq") return yaqa::method::ldlq;
  if (s == "gptq") return yaqa::method::gptq;
  if (s == "rtn") return yaqa::method::rtn;
  fail("yaqa.quantize_layer: argument 'method' is '" + s + "'; expected 'yaqa', 'ldlq', 'gptq' or 'rtn'");
}

//! rounding_options from the keyword options (unknown names are an error naming the known ones).
yaqa::rounding_options parse_options(const nb::dict& d) {
  yaqa::rounding_options o;
  static const char* known =
      "tile_rows, tile_cols, incoherence, seed, damp, damp_steps, zero_dead_inputs, gptq_block, act_order, "
      "static_groups, report_baseline, cd_sweeps, refine, lwc, refine_steps";
  for (auto [k, v] : d) {
    const std::string key = nb::cast<std::string>(k);
    auto as_int = [&] {
      if (!nb::isinstance<nb::int_>(v) || nb::isinstance<nb::bool_>(v))
        fail("yaqa.quantize_layer: option '" + key + "' must be an int");
      return nb::cast<long long>(v);
    };
    auto as_bool = [&] {
      if (!nb::isinstance<nb::bool_>(v)) fail("yaqa.quantize_layer: option '" + key + "' must be a bool");
      return nb::cast<bool>(v);
    };
    if (key == "tile_rows") o.tile_rows = index(as_int());
    else if (key == "tile_cols") o.tile_cols = index(as_int());
    else if (key == "incoherence") o.incoherence = as_bool();
    else if (key == "seed") {
      const long long s = as_int();
      if (s < 0) fail("yaqa.quantize_layer: option 'seed' must be >= 0");
      o.seed = std::uint64_t(s);
    } else if (key == "damp") {
      if (!nb::isinstance<nb::float_>(v) && !nb::isinstance<nb::int_>(v))
        fail("yaqa.quantize_layer: option 'damp' must be a number");
      o.damping.sigma = nb::cast<double>(v);
    } else if (key == "damp_steps") o.damping.max_steps = int(as_int());
    else if (key == "zero_dead_inputs") o.zero_dead_inputs = as_bool();
    else if (key == "gptq_block") o.gptq_block = index(as_int());
    else if (key == "act_order") o.act_order = as_bool();
    else if (key == "static_groups") o.static_groups = as_bool();
    else if (key == "report_baseline") o.report_baseline = as_bool();
    else if (key == "cd_sweeps") o.cd_sweeps = index(as_int());
    else if (key == "refine") o.refine.method = yaqa::parse_refine_method(nb::cast<std::string>(v));
    else if (key == "lwc") o.refine.lwc = as_bool();
    else if (key == "refine_steps") o.refine.steps = int(as_int());
    else fail("yaqa.quantize_layer: unknown option '" + key + "'; expected one of " + known);
  }
  return o;
}

//! The parameters of every group as arrays [groups, rows] per field (the CLI's qparams layout).
template <class P>
nb::dict params_dict(const std::vector<P>& ps) {
  nb::dict d;
  const std::size_t g = ps.size();
  if constexpr (requires(const P& p) { p.scale.size(); }) {
    const std::size_t rows = g ? ps.front().scale.size() : 0;
    std::vector<float> scale;
    for (const P& p : ps) scale.insert(scale.end(), p.scale.begin(), p.scale.end());
    d["scale"] = to_numpy(std::move(scale), {g, rows});
    if constexpr (requires(const P& p) { p.zero.size(); }) {
      std::vector<float> zero;
      for (const P& p : ps) zero.insert(zero.end(), p.zero.begin(), p.zero.end());
      d["zero"] = to_numpy(std::move(zero), {g, rows});
    }
  } else {
    std::vector<float> scale;
    for (const P& p : ps) scale.push_back(float(p.scale));
    d["scale"] = to_numpy(std::move(scale), {g, 1});
  }
  return d;
}

nb::dict factor_dict(const yaqa::factor_report& f) {
  nb::dict d;
  d["mean_diagonal"] = f.mean_diagonal;
  d["dead"] = to_numpy(std::vector<std::int64_t>(f.dead.begin(), f.dead.end()), {f.dead.size()});
  d["replaced_by_identity"] = f.replaced_by_identity;
  return d;
}

nb::dict report_dict(const yaqa::layer_report& r) {
  nb::dict d;
  d["method"] = yaqa::method_name(r.algorithm);
  d["rows"] = r.rows;
  d["cols"] = r.cols;
  d["relative_proxy"] = r.relative_proxy;
  d["relative_proxy_one_sided"] = r.relative_proxy_one_sided;
  d["baseline_relative_proxy"] = r.baseline_relative_proxy;
  d["damp_in"] = r.damp_in;
  d["damp_out"] = r.damp_out;
  d["attempts_in"] = r.attempts_in;
  d["attempts_out"] = r.attempts_out;
  d["feedback"] = r.feedback;
  d["fallback_reason"] = r.fallback_reason;
  d["h_in"] = factor_dict(r.in);
  d["h_out"] = factor_dict(r.out);
  d["refine"] = yaqa::refine_method_name(r.refine.method);
  d["cd_sweeps_run"] = r.cd_sweeps_run;
  d["cd_units_changed"] = r.cd_units_changed;
  d["cd_relative_proxy_before"] = r.cd_relative_proxy_before;
  d["cd_relative_proxy_after"] = r.cd_relative_proxy_after;
  nb::dict times;
  for (const auto& t : r.times) times[t.stage.c_str()] = t.seconds;
  d["times"] = times;
  d["seconds"] = r.seconds;
  return d;
}

template <class Q>
nb::dict result_dict(const Q& q, yaqa::layer_result<Q>&& r) {
  using C = typename Q::code_type;
  nb::dict d;
  if constexpr (std::is_same_v<Q, yaqa::gguf_any<float>>) {  // the type's exact GGUF blocks, row by row
    const std::vector<std::byte> bytes = yaqa::gguf_encode(q, r);
    const std::size_t rows = std::size_t(r.codes.rows());
    std::vector<std::uint8_t> b(bytes.size());
    if (!b.empty()) std::memcpy(b.data(), bytes.data(), b.size());
    d["blocks"] = to_numpy(std::move(b), {rows, rows ? bytes.size() / rows : 0});
    d["params"] = nb::dict();
  } else {
    d["params"] = params_dict(r.params);
  }
  d["weights"] = to_numpy(std::move(r.weights));
  if constexpr (std::is_unsigned_v<C>) {
    d["codes"] = to_numpy(std::move(r.codes));
  } else {  // trellis tiles: their bytes [tile rows, tile cols, bytes per tile] (the CLI's qcodes rows)
    const index per = q.bytes_per_tile();
    std::vector<std::uint8_t> b(std::size_t(r.codes.size() * per));
    std::size_t at = 0;
    for (index i = 0; i < r.codes.rows(); ++i)
      for (index j = 0; j < r.codes.cols(); ++j, at += std::size_t(per))
        q.to_bytes(r.codes(i, j), std::span<std::uint8_t>(b.data() + at, std::size_t(per)));
    d["codes"] = to_numpy(std::move(b), {std::size_t(r.codes.rows()), std::size_t(r.codes.cols()), std::size_t(per)});
  }

  if (r.group_index.empty())
    d["group_index"] = nb::none();
  else
    d["group_index"] = to_numpy(std::vector<std::int64_t>(r.group_index.begin(), r.group_index.end()),
                                {r.group_index.size()});
  d["rotated"] = r.rotated;
  d["seed_in"] = r.seed_in;
  d["seed_out"] = r.seed_out;
  d["transform_in"] = r.transform_in;
  d["transform_out"] = r.transform_out;
  d["signs_in"] = to_numpy(std::move(r.signs_in), {r.signs_in.size()});
  d["signs_out"] = to_numpy(std::move(r.signs_out), {r.signs_out.size()});
  d["report"] = report_dict(r.report);
  return d;
}

nb::dict quantize_layer(const array& w, const array& h_in, const std::optional<array>& h_out, const std::string& method,
                        const py_quantizer& pq, int threads, const nb::dict& options) {
  constexpr const char* fn = "yaqa.quantize_layer";
  check_threads(threads);
  const input iw = check(w, fn, "W", 2), ii = check(h_in, fn, "H_in", 2);
  std::optional<input> io;
  if (h_out) io = check(*h_out, fn, "H_out", 2);
  yaqa::rounding_options opt = parse_options(options);
  opt.algorithm = parse_method(method);
  quantizer_variant qv = pq.q;
  if (auto* t = std::get_if<yaqa::trellis<float>>(&qv)) {
    yaqa::trellis_options to = t->options();
    to.threads = threads;
    qv = yaqa::trellis<float>(to);
  }
  return std::visit(
      [&](const auto& q0) {
        using Q = std::decay_t<decltype(q0)>;
        std::optional<yaqa::layer_result<Q>> r;
        std::optional<Q> qi;  // the GGUF quantizer with diag(H_in) as its importance
        {
          nb::gil_scoped_release unlocked;
          mat<float> bw, bi, bo;  // copies only where the layout or dtype must change
          const auto vw = col_major<float>(iw, bw), vi = col_major<float>(ii, bi);
          const auto vo = io ? col_major<float>(*io, bo) : yaqa::matrix_view<const float>{};
          if constexpr (std::is_same_v<Q, yaqa::gguf_any<float>>) {
            if (pq.importance && vi.rows == vi.cols) {
              yaqa::gguf_quant_options g;
              for (index i = 0; i < vi.cols; ++i) g.importance.push_back(std::max(vi(i, i), 0.0f));
              qi.emplace(q0.type(), g);
            }
          }
          const Q& q = qi ? *qi : q0;
          r.emplace(yaqa::quantize_layer(backend{threads}, q, vw, vi, vo, opt));
        }
        const Q& q = qi ? *qi : q0;
        return result_dict(q, std::move(*r));
      },
      qv);
}

}  // namespace

NB_MODULE(_yaqa, m) {
  m.doc() = "yaqa: Hessian-aware adaptive rounding (YAQA, LDLQ, GPTQ) over the C++ library's headers";
  m.attr("__version__") = YAQA_VERSION_STRING;
  m.attr("version") = YAQA_VERSION_STRING;

  // Exceptions: one class per yaqa::error class, the same hierarchy; InvalidArgument is also a
  // ValueError, IoError an OSError.
  auto make = [&](yaqa::error_class c, const char* name, nb::handle base, nb::handle extra = {}) {
    nb::object bases = extra ? nb::make_tuple(base, extra) : nb::make_tuple(base);
    const std::string qual = std::string("yaqa.") + name;
    PyObject* t = PyErr_NewException(qual.c_str(), bases.ptr(), nullptr);
    if (!t) throw nb::python_error();
    py_errors[int(c)] = t;
    m.attr(name) = nb::handle(t);
    return nb::handle(t);
  };
  using ec = yaqa::error_class;
  nb::handle base = make(ec::error, "Error", PyExc_Exception);
  nb::handle inv = make(ec::invalid_argument, "InvalidArgument", base, PyExc_ValueError);
  make(ec::shape_error, "ShapeError", inv);
  make(ec::non_finite_error, "NonFiniteError", inv);
  make(ec::numerical_error, "NumericalError", base);
  nb::handle io = make(ec::io_error, "IoError", base, PyExc_OSError);
  make(ec::format_error, "FormatError", io);
  make(ec::cuda_error, "CudaError", base);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const yaqa::error& e) {
      PyErr_SetString(py_errors[int(yaqa::classify_error(e))], e.what());
    }
  });

  // ---- accumulators ----
  nb::class_<py_second_moment>(m, "SecondMoment",
                               "H = E[x x^T] (GPTQ's input Hessian), accumulated in float64 batch by batch "
                               "(yaqa::second_moment).", nb::is_weak_referenceable())
      .def("__init__",
           [](py_second_moment* self, long long n, const std::string& precision, int threads) {
             new (self) py_second_moment(check_dim(n, "yaqa.SecondMoment", "n"), make_settings(precision, "automatic", threads));
           },
           "n"_a, nb::kw_only(), "precision"_a = "input", "threads"_a = 0)
      .def("add", [](py_second_moment& s, const array& x) { add_tokens(s.acc, x, "yaqa.SecondMoment.add"); }, "x"_a,
           "Adds the tokens of x (T x n, one token per row).")
      .def("merge", [](py_second_moment& s, const py_second_moment& o) { s.acc.merge(o.acc); }, "other"_a)
      .def_prop_ro("n", [](const py_second_moment& s) { return s.acc.dim(); })
      .def_prop_ro("count", [](const py_second_moment& s) { return s.acc.count(); })
      .def_prop_ro("batches", [](const py_second_moment& s) { return s.acc.batches(); })
      .def_prop_ro("threads", [](const py_second_moment& s) { return s.s.threads; })
      .def("sum", [](const py_second_moment& s) { return to_numpy(s.acc.sum()); }, "sum_t x_t x_t^T (n x n).")
      .def("mean", [](const py_second_moment& s) { return to_numpy(s.acc.mean()); }, "E[x x^T] = sum / count.")
      .def("__getstate__",
           [](const py_second_moment& s) {
             return nb::make_tuple(s.acc.dim(), s.s.precision, s.s.threads, state_bytes(yaqa::save_state(s.acc)));
           })
      .def("__setstate__", [](py_second_moment& s, const nb::tuple& t) {
        new (&s) py_second_moment(nb::cast<yaqa::index>(t[0]), make_settings(nb::cast<std::string>(t[1]), "automatic", nb::cast<int>(t[2])));
        yaqa::load_state(s.acc, bytes_span(nb::cast<nb::bytes>(t[3])));
      });

  nb::class_<py_diagonal>(m, "Diagonal",
                          "diag(E[x x^T]) (llama.cpp's importance matrix), in float64 "
                          "(yaqa::diagonal_second_moment).", nb::is_weak_referenceable())
      .def("__init__",
           [](py_diagonal* self, long long n, const std::string& precision, int threads) {
             new (self) py_diagonal(check_dim(n, "yaqa.Diagonal", "n"), make_settings(precision, "automatic", threads));
           },
           "n"_a, nb::kw_only(), "precision"_a = "input", "threads"_a = 0)
      .def("add", [](py_diagonal& s, const array& x) { add_tokens(s.acc, x, "yaqa.Diagonal.add"); }, "x"_a)
      .def("merge", [](py_diagonal& s, const py_diagonal& o) { s.acc.merge(o.acc); }, "other"_a)
      .def_prop_ro("n", [](const py_diagonal& s) { return s.acc.dim(); })
      .def_prop_ro("count", [](const py_diagonal& s) { return s.acc.count(); })
      .def_prop_ro("batches", [](const py_diagonal& s) { return s.acc.batches(); })
      .def("sum", [](const py_diagonal& s) { return to_numpy(s.acc.sum()); })
      .def("mean", [](const py_diagonal& s) { return to_numpy(s.acc.mean()); })
      .def("__getstate__",
           [](const py_diagonal& s) {
             return nb::make_tuple(s.acc.dim(), s.s.precision, s.s.threads, state_bytes(yaqa::save_state(s.acc)));
           })
      .def("__setstate__", [](py_diagonal& s, const nb::tuple& t) {
        new (&s) py_diagonal(nb::cast<yaqa::index>(t[0]), make_settings(nb::cast<std::string>(t[1]), "automatic", nb::cast<int>(t[2])));
        yaqa::load_state(s.acc, bytes_span(nb::cast<nb::bytes>(t[3])));
      });

  nb::class_<py_sketch_a>(m, "SketchA",
                          "YAQA Sketch A: H ~ H_out (x) H_in by power iteration, one half-step per pass over the "
                          "same data: for p in range(passes): begin_pass(); add(x, g) per batch; end_pass().",
                          nb::is_weak_referenceable())
      .def("__init__",
           [](py_sketch_a* self, long long n, long long m, int passes, const std::string& precision, int threads) {
             new (self) py_sketch_a(check_dim(n, "yaqa.SketchA", "n"), check_dim(m, "yaqa.SketchA", "m"), passes,
                                    make_settings(precision, "automatic", threads));
           },
           "n"_a, "m"_a, "passes"_a = 3, nb::kw_only(), "precision"_a = "input", "threads"_a = 0)
      .def("begin_pass", [](py_sketch_a& s) { s.acc.begin_pass(); })
      .def("end_pass", [](py_sketch_a& s) {
        nb::gil_scoped_release unlocked;
        s.acc.end_pass();
      })
      .def("add",
           [](py_sketch_a& s, const array& x, const std::optional<array>& g) {
             constexpr const char* fn = "yaqa.SketchA.add";
             const input ix = check(x, fn, "x", 2);
             std::optional<input> ig;
             if (g) {
               ig = check(*g, fn, "g", 2);
               if (ig->f64 != ix.f64) fail("yaqa.SketchA.add: arguments 'x' and 'g' must have the same dtype");
             }
             nb::gil_scoped_release unlocked;
             if (ix.f64) sketch_a_add<double>(s, ix, ig);
             else sketch_a_add<float>(s, ix, ig);
           },
           "x"_a, "g"_a = nb::none(), "Adds a batch: x is T x n, g is T x m (None in pass 0).")
      .def("merge_pass", [](py_sketch_a& s, const py_sketch_a& o) { s.acc.merge_pass(o.acc); }, "other"_a)
      .def_prop_ro("n", [](const py_sketch_a& s) { return s.acc.n(); })
      .def_prop_ro("m", [](const py_sketch_a& s) { return s.acc.m(); })
      .def_prop_ro("current_pass", [](const py_sketch_a& s) { return s.acc.pass(); })
      .def_prop_ro("passes", [](const py_sketch_a& s) { return s.acc.passes(); })
      .def_prop_ro("done", [](const py_sketch_a& s) { return s.acc.done(); })
      .def_prop_ro("in_pass", [](const py_sketch_a& s) { return s.acc.in_pass(); })
      .def_prop_ro("pass_count", [](const py_sketch_a& s) { return s.acc.pass_count(); })
      .def_prop_ro("has_h_in", [](const py_sketch_a& s) { return s.acc.has_h_in(); })
      .def_prop_ro("has_h_out", [](const py_sketch_a& s) { return s.acc.has_h_out(); })
      .def_prop_ro("h_out_is_zero", [](const py_sketch_a& s) { return s.acc.h_out_is_zero(); })
      .def("h_in", [](const py_sketch_a& s) { return to_numpy(s.acc.h_in()); })
      .def("h_out", [](const py_sketch_a& s) { return to_numpy(s.acc.h_out()); })
      .def("__getstate__",
           [](const py_sketch_a& s) {
             return nb::make_tuple(s.acc.n(), s.acc.m(), s.acc.passes(), s.s.precision, s.s.threads,
                                   state_bytes(yaqa::save_state(s.acc)));
           })
      .def("__setstate__", [](py_sketch_a& s, const nb::tuple& t) {
        new (&s) py_sketch_a(nb::cast<yaqa::index>(t[0]), nb::cast<yaqa::index>(t[1]), nb::cast<int>(t[2]),
                             make_settings(nb::cast<std::string>(t[3]), "automatic", nb::cast<int>(t[4])));
        yaqa::load_state(s.acc, bytes_span(nb::cast<nb::bytes>(t[5])));
      });

  nb::class_<py_sketch_b>(m, "SketchB",
                          "YAQA Sketch B: G_s = g^T x per sequence, H_in = mean G_s^T G_s, H_out = mean G_s G_s^T "
                          "(yaqa::sketch_b).", nb::is_weak_referenceable())
      .def("__init__",
           [](py_sketch_b* self, long long n, long long m, const std::string& precision, const std::string& path,
              int threads) {
             new (self) py_sketch_b(check_dim(n, "yaqa.SketchB", "n"), check_dim(m, "yaqa.SketchB", "m"),
                                    make_settings(precision, path, threads));
           },
           "n"_a, "m"_a, nb::kw_only(), "precision"_a = "input", "path"_a = "automatic", "threads"_a = 0)
      .def("add_sequence",
           [](py_sketch_b& s, const array& x, const array& g) {
             auto [ix, ig] = check_pair(x, g, "yaqa.SketchB.add_sequence", 2);
             nb::gil_scoped_release unlocked;
             if (ix.f64) sketch_b_add<double>(s, ix, ig, false);
             else sketch_b_add<float>(s, ix, ig, false);
           },
           "x"_a, "g"_a, "Adds one sequence: x is T x n, g is T x m.")
      .def("add_sequences",
           [](py_sketch_b& s, const array& x, const array& g) {
             auto [ix, ig] = check_pair(x, g, "yaqa.SketchB.add_sequences", 3);
             if (ig.shape[0] != ix.shape[0])
               throw yaqa::shape_error(yaqa::detail::concat("yaqa.SketchB.add_sequences: argument 'g' has ", ig.shape[0],
                                                            " sequences, 'x' has ", ix.shape[0]));
             nb::gil_scoped_release unlocked;
             if (ix.f64) sketch_b_add<double>(s, ix, ig, true);
             else sketch_b_add<float>(s, ix, ig, true);
           },
           "x"_a, "g"_a, "Adds S sequences: x is S x T x n, g is S x T x m (one add_sequence each, in order).")
      .def("merge", [](py_sketch_b& s, const py_sketch_b& o) { s.acc.merge(o.acc); }, "other"_a)
      .def_prop_ro("n", [](const py_sketch_b& s) { return s.acc.n(); })
      .def_prop_ro("m", [](const py_sketch_b& s) { return s.acc.m(); })
      .def_prop_ro("count", [](const py_sketch_b& s) { return s.acc.count(); })
      .def_prop_ro("tokens", [](const py_sketch_b& s) { return s.acc.tokens(); })
      .def_prop_ro("h_out_is_zero", [](const py_sketch_b& s) { return s.acc.h_out_is_zero(); })
      .def("h_in", [](const py_sketch_b& s) { return to_numpy(s.acc.h_in()); })
      .def("h_out", [](const py_sketch_b& s) { return to_numpy(s.acc.h_out()); })
      .def("__getstate__",
           [](const py_sketch_b& s) {
             return nb::make_tuple(s.acc.n(), s.acc.m(), s.s.precision, s.s.path, s.s.threads,
                                   state_bytes(yaqa::save_state(s.acc)));
           })
      .def("__setstate__", [](py_sketch_b& s, const nb::tuple& t) {
        new (&s) py_sketch_b(nb::cast<yaqa::index>(t[0]), nb::cast<yaqa::index>(t[1]),
                             make_settings(nb::cast<std::string>(t[2]), nb::cast<std::string>(t[3]), nb::cast<int>(t[4])));
        yaqa::load_state(s.acc, bytes_span(nb::cast<nb::bytes>(t[5])));
      });

  // ---- quantizers ----
  nb::class_<py_quantizer>(m, "Quantizer", "A quantizer for quantize_layer (make one with int_grid, lloyd_max, "
                                            "fp4, e8p or trellis).")
      .def_prop_ro("kind", [](const py_quantizer& q) { return q.kind; })
      .def_prop_ro("options", [](const py_quantizer& q) { return q.options; })
      .def_prop_ro("unit", [](const py_quantizer& q) {
        return std::visit([](const auto& x) {
          using Q = std::decay_t<decltype(x)>;
          return nb::make_tuple(Q::unit_rows, Q::unit_cols);
        }, q.q);
      })
      .def("__repr__", [](const py_quantizer& q) {
        return "yaqa." + q.kind + "(" + nb::cast<std::string>(nb::repr(q.options)) + ")";
      });
  m.def("int_grid",
        [](int bits, bool sym, long long group_size, bool mse) {
          py_quantizer q = make_int_grid(bits, sym, group_size, mse);
          q.kind = "int_grid";
          q.options = dict_of({{"bits", nb::cast(bits)}, {"sym", nb::cast(sym)}, {"group_size", nb::cast(group_size)}, {"mse", nb::cast(mse)}});
          return q;
        },
        nb::kw_only(), "bits"_a = 4, "sym"_a = false, "group_size"_a = 0, "mse"_a = false,
        "Uniform integer grid, per-row (scale, zero) per group (GPTQ's semantics).");
  m.def("lloyd_max",
        [](int bits, long long group_size) {
          return py_quantizer{"lloyd_max", dict_of({{"bits", nb::cast(bits)}, {"group_size", nb::cast(group_size)}}),
                              yaqa::lloyd_max_grid<float>(yaqa::lloyd_max_options{.bits = bits, .group_size = yaqa::index(group_size)})};
        },
        nb::kw_only(), "bits"_a = 4, "group_size"_a = 0, "Gaussian Lloyd-Max levels times a per-row RMS scale.");
  m.def("fp4", [] { return py_quantizer{"fp4", nb::dict(), yaqa::fp4_e2m1<float>()}; }, "FP4 E2M1 (MX) values.");
  m.def("e8p",
        [](int bits, long long group_size) -> py_quantizer {
          nb::dict o = dict_of({{"bits", nb::cast(bits)}, {"group_size", nb::cast(group_size)}});
          if (bits == 2) return {"e8p", o, yaqa::e8p<float>({.group_size = yaqa::index(group_size)})};
          if (bits != 3 && bits != 4) fail(yaqa::detail::concat("yaqa.e8p: argument 'bits' must be 2, 3 or 4, got ", bits));
          return {"e8p", o, yaqa::e8p_rvq<float>({.bits = bits, .group_size = yaqa::index(group_size)})};
        },
        nb::kw_only(), "bits"_a = 2, "group_size"_a = 0,
        "E8P 2-bit lattice codebook (bits=2), residual E8P (bits=3, 4); per-row scales.");
  m.def("trellis",
        [](int l, int k, int v, const std::string& code, long long group_size) {
          yaqa::trellis_options t;
          t.l = l;
          t.k = k;
          t.v = v;
          t.code = yaqa::parse_trellis_code(code);
          t.group_size = yaqa::index(group_size);
          return py_quantizer{"trellis", dict_of({{"l", nb::cast(l)}, {"k", nb::cast(k)}, {"v", nb::cast(v)}, {"code", nb::cast(code)}, {"group_size", nb::cast(group_size)}}),
                              yaqa::trellis<float>(t)};
        },
        nb::kw_only(), "l"_a = 16, "k"_a = 2, "v"_a = 0, "code"_a = "hyb", "group_size"_a = 0,
        "QTIP bitshift trellis (L state bits, K bits per weight; code 1mad, 3inst or hyb).");

  m.def("gguf",
        [](const std::string& type, bool importance) {
          py_quantizer q{"gguf", dict_of({{"type", nb::cast(type)}, {"importance", nb::cast(importance)}}),
                         yaqa::gguf_any<float>(parse_gguf_type(type))};
          q.importance = importance;
          return q;
        },
        "type"_a, nb::kw_only(), "importance"_a = true,
        "llama.cpp's GGUF block types (Q8_0, Q4_0, Q5_0, IQ4_NL, Q2_K..Q6_K) with llama.cpp's scale fits; "
        "importance: diag(H_in) as the imatrix. quantize_layer returns the blocks too (incoherence=False "
        "for blocks llama.cpp can serve, as yaqa-quantize does).");

  m.def("_quantize_layer", &quantize_layer, "W"_a, "H_in"_a, "H_out"_a.none(), "method"_a, "quantizer"_a, "threads"_a,
        "options"_a);
}
