#pragma once
//! \file
//! The naming convention that ties a weight tensor to its Hessian factors in a safetensors file
//! (what tools/collect_hessians.py writes and yaqa-quantize reads), and loading a factor stored
//! full or packed.
//!
//! For a weight NAME of shape [out, in]:
//!   NAME.H                     [in, in]    X^T X (GPTQ / LDLQ; H_out = I)
//!   NAME.H_in, NAME.H_out      [in, in], [out, out]   Kronecker factors, untagged
//!   NAME.TAG.H_in, NAME.TAG.H_out                      the factors of sketch TAG ("a", "b", ...)
//! Each factor is either the full matrix or its packed lower triangle (1-D, n(n+1)/2 values in
//! torch.tril_indices order, i.e. row-major lower triangle), F32 or F64.
#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/io/safetensors.hpp>
#include <yaqa/io/tensor.hpp>
#include <yaqa/linalg/preprocess.hpp>

namespace yaqa {

//! Tensor names of the convention (file comment).
struct hessian_names {
  static std::string h(std::string_view weight) { return std::string(weight) + ".H"; }
  static std::string h_in(std::string_view weight, std::string_view tag = {}) {
    return tagged(weight, tag) + ".H_in";
  }
  static std::string h_out(std::string_view weight, std::string_view tag = {}) {
    return tagged(weight, tag) + ".H_out";
  }

 private:
  static std::string tagged(std::string_view weight, std::string_view tag) {
    std::string s(weight);
    if (!tag.empty()) (s += '.') += tag;
    return s;
  }
};

//! The factors found for one weight; h_out is null for a one-sided lookup.
struct layer_hessian_tensors {
  const tensor_view* h_in = nullptr;
  const tensor_view* h_out = nullptr;
};

//! The sketch tags among `names` for `weight`: every TAG (non-empty, without '.') such that
//! NAME.TAG.H_in or NAME.TAG.H_out is one of the names; sorted, without duplicates.
template <class Names>
std::vector<std::string> sketch_tags_in(const Names& names, std::string_view weight) {
  std::vector<std::string> tags;
  for (std::string_view n : names) {
    if (n.size() <= weight.size() + 1 || n.substr(0, weight.size()) != weight || n[weight.size()] != '.') continue;
    n.remove_prefix(weight.size() + 1);
    for (std::string_view suffix : {".H_in", ".H_out"})
      if (n.size() > suffix.size() && n.substr(n.size() - suffix.size()) == suffix) {
        std::string tag(n.substr(0, n.size() - suffix.size()));
        if (tag.find('.') == std::string::npos) tags.push_back(std::move(tag));
      }
  }
  std::sort(tags.begin(), tags.end());
  tags.erase(std::unique(tags.begin(), tags.end()), tags.end());
  return tags;
}

//! The sketch tags present for `weight` in f (sketch_tags_in over f's tensor names).
inline std::vector<std::string> sketch_tags(const safetensors_file& f, std::string_view weight) {
  std::vector<std::string_view> names;
  names.reserve(f.size());
  for (const tensor_view& t : f.tensors()) names.push_back(t.name);
  return sketch_tags_in(names, weight);
}

//! True when f holds any factor of `weight` under the convention (NAME.H, NAME.H_in, NAME.H_out
//! or a tagged factor).
inline bool has_hessians(const safetensors_file& f, std::string_view weight) {
  return f.contains(hessian_names::h(weight)) || f.contains(hessian_names::h_in(weight)) ||
         f.contains(hessian_names::h_out(weight)) || !sketch_tags(f, weight).empty();
}

//! Finds the factors of `weight` in f.
//! - two_sided (YAQA): NAME[.TAG].H_in and NAME[.TAG].H_out, both required.
//! - one-sided (GPTQ / LDLQ / RTN): NAME.H, else NAME[.TAG].H_in.
//! Returns nullopt when f has no factor of `weight` at all (the caller leaves it unquantized).
//! Throws format_error, naming the file, the tensors looked for and the tags present, when the
//! weight has factors but not the ones asked for (a missing sketch tag, H_in without H_out).
inline std::optional<layer_hessian_tensors> find_layer_hessians(const safetensors_file& f,
                                                                std::string_view weight,
                                                                std::string_view tag, bool two_sided) {
  if (!has_hessians(f, weight)) return std::nullopt;
  const std::string file = f.path().string();
  const std::vector<std::string> tags = sketch_tags(f, weight);
  auto tag_list = [&] {
    std::string s;
    for (const auto& t : tags) s += (s.empty() ? "" : ", ") + t;
    return s.empty() ? std::string("none") : s;
  };
  auto missing = [&](const std::string& names, std::string_view why) {
    return format_error(detail::concat("yaqa::find_layer_hessians: '", file, "' has no ", names, " for weight '",
                                       weight, "'", why, " (sketch tags present for it: ", tag_list(),
                                       f.contains(hessian_names::h(weight)) ? "; it has '" + hessian_names::h(weight) + "'" : "",
                                       ")"));
  };
  const std::string in = hessian_names::h_in(weight, tag), out = hessian_names::h_out(weight, tag);
  layer_hessian_tensors r;
  if (two_sided) {
    r.h_in = f.find(in);
    r.h_out = f.find(out);
    if (!r.h_in && !r.h_out)
      throw missing("'" + in + "' / '" + out + "'",
                    tag.empty() ? ": two-sided rounding needs both Kronecker factors (pass the sketch tag?)"
                                : std::string(": sketch tag '") + std::string(tag) + "' is missing");
    if (!r.h_in) throw missing("'" + in + "'", ": it has the output factor but not the input factor");
    if (!r.h_out)
      throw missing("'" + out + "'",
                    ": it has the input factor but not the output factor (one-sided methods use H_out = I)");
    return r;
  }
  if ((r.h_in = f.find(hessian_names::h(weight)))) return r;
  if ((r.h_in = f.find(in))) return r;
  throw missing("'" + hessian_names::h(weight) + "' or '" + in + "'",
                tag.empty() ? std::string(": pass the sketch tag?")
                            : std::string(": sketch tag '") + std::string(tag) + "' is missing");
}

//! The n x n symmetric matrix stored in t: the full [n, n] matrix or its packed lower triangle
//! [n(n+1)/2] (file comment), F32 or F64.
//! Throws format_error for another dtype or shape, non_finite_error for NaN/Inf and
//! invalid_argument when a full matrix is not symmetric within `symmetry_tolerance` * max|a|
//! (the default is the one quantize_layer's normalization applies); the result is the exact
//! symmetrization (a + a^T) / 2. Every message names the tensor and the file.
template <Scalar T>
matrix<T> to_symmetric_matrix(const tensor_view& t, index n,
                              double symmetry_tolerance = factor_symmetry_tolerance) {
  constexpr const char* what = "yaqa::to_symmetric_matrix";
  detail::require<format_error>(t.type == dtype::f32 || t.type == dtype::f64, what, ": ", detail::describe(t),
                                " has dtype ", safetensors_name(t.type), "; expected F32 or F64");
  const index packed = n * (n + 1) / 2;
  const bool is_full = t.rank() == 2 && t.shape[0] == n && t.shape[1] == n;
  const bool is_packed = t.rank() == 1 && t.shape[0] == packed;
  detail::require<shape_error>(is_full || is_packed, what, ": ", detail::describe(t), " has shape ",
                               detail::shape_string(t.shape), "; expected [", n, ", ", n,
                               "] (full) or [", packed, "] (packed lower triangle)");
  matrix<T> a(n, n);
  if (is_full) {
    a = to_matrix_transposed<T>(t);  // H^T: one sequential pass; symmetrized below
  } else {
    const vector<T> v = to_vector<T>(t);
    for (index i = 0, k = 0; i < n; ++i)
      for (index j = 0; j <= i; ++j, ++k) a(i, j) = a(j, i) = v[k];
  }
  {
    const auto [fi, fj] = first_non_finite(matrix_view<const T>{a.data(), n, n, n > 0 ? n : 1});
    if (fi >= 0)  // a full H was read as H^T: name the entry by H's own (row, column)
      throw non_finite_error(detail::concat(what, ": ", detail::describe(t), " holds a non-finite value (", a(fi, fj),
                                            " at [", is_full ? fj : fi, ", ", is_full ? fi : fj,
                                            "]); expected finite values"));
  }
  if (is_full) {  // pairs in 64 x 64 tiles (for_lower_pairs): no page-strided transpose
    const double max_abs = a.cwiseAbs().maxCoeff();
    index wi = 0, wj = 0;
    double worst = 0;
    detail::for_lower_pairs(n, [&](index i, index j) {
      const double gap = std::abs(double(a(i, j)) - double(a(j, i)));
      if (gap > worst) std::tie(worst, wi, wj) = std::make_tuple(gap, i, j);  // the pair, lower entry first
    });
    detail::require(worst <= symmetry_tolerance * max_abs, what, ": ", detail::describe(t),
                    " is not symmetric: |H[", wi, ", ", wj, "] - H[", wj, ", ", wi, "]| = ", worst,
                    "; expected at most ", symmetry_tolerance, " * max|H| = ", symmetry_tolerance * max_abs);
    detail::for_lower_pairs(n, [&](index i, index j) { a(i, j) = a(j, i) = (a(i, j) + a(j, i)) * T(0.5); });
  }
  return a;
}

}  // namespace yaqa
