#pragma once
//! \file
//! gguf_any<T>: one Quantizer type for every GGUF block type, picked at run time (the CLI, the
//! bindings). It dispatches each call to the concrete quantizer (a std::variant; the cost is one
//! switch per quantize() call, which covers a column or a block), so code that instantiates the
//! rounding drivers per quantizer type compiles them once for all GGUF types instead of nine times.
#include <array>
#include <cstddef>
#include <span>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <yaqa/quantizers/gguf/iq4_nl.hpp>
#include <yaqa/quantizers/gguf/legacy.hpp>
#include <yaqa/quantizers/gguf/q2_k.hpp>
#include <yaqa/quantizers/gguf/q3_k.hpp>
#include <yaqa/quantizers/gguf/q4_k.hpp>
#include <yaqa/quantizers/gguf/q6_k.hpp>

namespace yaqa {

//! A GGUF block quantizer chosen at run time (Q8_0, Q4_0, Q5_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K,
//! Q6_K). Same members as the concrete quantizers; type() and decode() are not static.
template <Scalar T>
class gguf_any {
  using alternatives = std::variant<gguf_q8_0<T>, gguf_q4_0<T>, gguf_q5_0<T>, gguf_iq4_nl<T>, gguf_q2_k<T>,
                                    gguf_q3_k<T>, gguf_q4_k<T>, gguf_q5_k<T>, gguf_q6_k<T>>;

  template <class V>
  struct params_of;
  template <class... Q>
  struct params_of<std::variant<Q...>> {
    using type = std::variant<typename Q::params_type...>;
  };

 public:
  using scalar_type = T;
  using code_type = std::uint8_t;
  using params_type = typename params_of<alternatives>::type;
  static constexpr index unit_rows = 1;
  static constexpr index unit_cols = 1;

  //! The ggml types gguf_any can be, in the variant's order.
  static constexpr std::array<ggml_type, 9> types{ggml_type::q8_0, ggml_type::q4_0, ggml_type::q5_0,
                                                  ggml_type::iq4_nl, ggml_type::q2_k, ggml_type::q3_k,
                                                  ggml_type::q4_k, ggml_type::q5_k, ggml_type::q6_k};

  //! The quantizer for ggml type t; invalid_argument naming t when it is not one of `types`.
  explicit gguf_any(ggml_type t, const gguf_quant_options& o = {}) : q_(make(t, o)) {}

  [[nodiscard]] ggml_type type() const { return types[q_.index()]; }
  [[nodiscard]] index block_size() const {
    return std::visit([](const auto& q) { return static_cast<index>(std::decay_t<decltype(q)>::block_size); }, q_);
  }
  [[nodiscard]] double bits_per_weight() const {
    return std::visit([](const auto& q) { return q.bits_per_weight(); }, q_);
  }
  [[nodiscard]] index group_cols(index n) const {
    return std::visit([&](const auto& q) { return q.group_cols(n); }, q_);
  }
  void validate(index n) const { (void)group_cols(n); }
  [[nodiscard]] std::size_t storage_bits(index rows, index cols) const {
    return std::visit([&](const auto& q) { return q.storage_bits(rows, cols); }, q_);
  }

  [[nodiscard]] params_type fit(matrix_view<const T> w) const {
    return dispatch([&]<std::size_t I>(const auto& q) { return params_type(std::in_place_index<I>, q.fit(w)); });
  }
  [[nodiscard]] std::vector<params_type> fit_all(matrix_view<const T> w) const {
    return dispatch([&]<std::size_t I>(const auto& q) {
      auto p = q.fit_all(w);
      std::vector<params_type> out;
      out.reserve(p.size());
      for (auto& x : p) out.emplace_back(std::in_place_index<I>, std::move(x));
      return out;
    });
  }

  void quantize(matrix_view<const T> target, const params_type& p, index row0, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    dispatch([&]<std::size_t I>(const auto& q) { q.quantize(target, params<I>(p), row0, recon, codes); });
  }
  [[nodiscard]] matrix<T> reconstruct(matrix_view<const code_type> codes, const params_type& p, index row0) const {
    return dispatch([&]<std::size_t I>(const auto& q) { return q.reconstruct(codes, params<I>(p), row0); });
  }

  //! The ggml blocks of codes + params (see gguf_quantizer::encode).
  void encode(matrix_view<const code_type> codes, const std::vector<params_type>& p, std::span<std::byte> out) const {
    dispatch([&]<std::size_t I>(const auto& q) {
      std::vector<typename std::decay_t<decltype(q)>::params_type> c;
      c.reserve(p.size());
      for (const auto& x : p) c.push_back(params<I>(x));
      q.encode(codes, c, out);
    });
  }
  [[nodiscard]] matrix<float> decode(std::span<const std::byte> bytes, index rows, index cols) const {
    return std::visit([&](const auto& q) { return std::decay_t<decltype(q)>::decode(bytes, rows, cols); }, q_);
  }

 private:
  //! Alternative I's params (several types share a params struct: the index tells them apart).
  template <std::size_t I>
  static const auto& params(const params_type& p) {
    const auto* x = std::get_if<I>(&p);
    detail::require<invalid_argument>(x != nullptr, "yaqa::gguf_any: params fitted for ",
                                      ggml_type_name(types[p.index()]), " were passed to ",
                                      ggml_type_name(types[I]));
    return *x;
  }

  //! f.template operator()<I>(q) for the active alternative I (params variants are indexed the same).
  template <std::size_t I = 0, class F>
  decltype(auto) dispatch(F&& f) const {
    if constexpr (I + 1 < std::variant_size_v<alternatives>) {
      if (q_.index() != I) return dispatch<I + 1>(std::forward<F>(f));
    }
    return f.template operator()<I>(*std::get_if<I>(&q_));
  }

  template <std::size_t I = 0>
  static alternatives make(ggml_type t, const gguf_quant_options& o) {
    if constexpr (I == std::variant_size_v<alternatives>) {
      throw invalid_argument(detail::concat("yaqa::gguf_any: ggml type ", ggml_type_name(t),
                                            " has no quantizer; expected one of Q8_0, Q4_0, Q5_0, IQ4_NL, Q2_K, Q3_K, "
                                            "Q4_K, Q5_K, Q6_K"));
    } else {
      using Q = std::variant_alternative_t<I, alternatives>;
      static_assert(Q::type == types[I], "gguf_any: `types` must list the alternatives in order");
      if (Q::type == t) return alternatives(std::in_place_index<I>, o);
      return make<I + 1>(t, o);
    }
  }

  alternatives q_;
};

//! The GGUF bytes of a matrix rounded with a gguf_any.
template <class R, Scalar T>
std::vector<std::byte> gguf_encode(const gguf_any<T>& q, const R& r) {
  detail::require<invalid_argument>(r.group_index.empty(), "yaqa::gguf_encode: the rounding used per-column groups "
                                    "(GPTQ act-order with lazy groups); GGUF blocks need each column in its own block's group");
  const index m = r.codes.rows(), n = r.codes.cols();
  std::vector<std::byte> out(static_cast<std::size_t>(m) * detail::gguf_row_bytes(q.type(), n));
  q.encode(view(r.codes), r.params, std::span<std::byte>(out));
  return out;
}

}  // namespace yaqa
