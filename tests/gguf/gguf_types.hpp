#pragma once
// Every GGUF quantizer the tests cover, by ggml type name: for_each_gguf_type(f) calls
// f(name, std::type_identity<Q<float>>{}) and f(name, std::type_identity<Q<double>>{}) is left
// to the tests that want it. Add one line per quantizer type.
#include <string_view>
#include <type_traits>

#include <yaqa/quantizers/gguf/gguf.hpp>

namespace yaqa::test {

template <class F>
void for_each_gguf_type(F&& f) {
  // (name, quantizer) pairs; keep in ggml type id order.
  f(std::string_view("Q4_0"), std::type_identity<gguf_q4_0<float>>{});
  f(std::string_view("Q5_0"), std::type_identity<gguf_q5_0<float>>{});
  f(std::string_view("Q8_0"), std::type_identity<gguf_q8_0<float>>{});
  f(std::string_view("Q2_K"), std::type_identity<gguf_q2_k<float>>{});
  f(std::string_view("Q3_K"), std::type_identity<gguf_q3_k<float>>{});
  f(std::string_view("Q4_K"), std::type_identity<gguf_q4_k<float>>{});
  f(std::string_view("Q5_K"), std::type_identity<gguf_q5_k<float>>{});
  f(std::string_view("Q6_K"), std::type_identity<gguf_q6_k<float>>{});
  f(std::string_view("IQ4_NL"), std::type_identity<gguf_iq4_nl<float>>{});
}

}  // namespace yaqa::test
