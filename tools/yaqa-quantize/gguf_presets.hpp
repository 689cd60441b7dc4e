#pragma once
//! \file
//! llama.cpp's mixed GGUF recipes ("Q4_K_M" ...) as yaqa-quantize presets: which ggml type each
//! weight gets. The rules are those of llama-quantize (llama_tensor_get_type in llama.cpp's
//! src/llama-quant.cpp) for dense (non-MoE, non-Falcon) models; docs/gguf.md has the table.
//! Deviations, all because yaqa has no Q4_1 / Q5_1 quantizer: llama.cpp's Q4_0/Q5_0 recipes with
//! an imatrix put the first 1/8 of ffn_down in Q4_1/Q5_1 (kept Q4_0/Q5_0 here), and a Q5_K tensor
//! whose rows are not whole 256-blocks falls back to Q5_1 (Q8_0 here).
#include <array>
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <yaqa/io/gguf.hpp>

namespace yaqa::cli {

//! A recipe: its name (the suffix of --quantizer gguf:NAME), base type and general.file_type.
struct gguf_preset {
  std::string_view name;
  ggml_type base;
  std::uint32_t file_type;  //!< enum llama_ftype
};

inline constexpr std::array<gguf_preset, 13> gguf_presets{{
    {"Q4_0", ggml_type::q4_0, 2},     {"Q8_0", ggml_type::q8_0, 7},     {"Q5_0", ggml_type::q5_0, 8},
    {"Q2_K", ggml_type::q2_k, 10},    {"Q3_K_S", ggml_type::q3_k, 11}, {"Q3_K_M", ggml_type::q3_k, 12},
    {"Q3_K_L", ggml_type::q3_k, 13}, {"Q4_K_S", ggml_type::q4_k, 14}, {"Q4_K_M", ggml_type::q4_k, 15},
    {"Q5_K_S", ggml_type::q5_k, 16}, {"Q5_K_M", ggml_type::q5_k, 17}, {"Q6_K", ggml_type::q6_k, 18},
    {"IQ4_NL", ggml_type::iq4_nl, 25},
}};

//! The preset called `name` (exact, upper case), or nullptr.
inline const gguf_preset* find_gguf_preset(std::string_view name) {
  for (const auto& p : gguf_presets)
    if (p.name == name) return &p;
  return nullptr;
}

//! A weight as the recipe sees it: its name and its row length (ggml's ne[0], the input dim).
struct gguf_weight {
  std::string name;
  index row_length = 0;
};

//! What else the rules read: the model's query heads per KV head ({arch}.attention.head_count /
//! head_count_kv; 1 when unknown) and whether the importance came from an imatrix.
struct gguf_model_facts {
  int n_gqa = 1;
  bool has_imatrix = false;
};

namespace detail {

//! llama.cpp's use_more_bits: the first and last eighth of the layers, and every third between.
inline bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

//! The layer number of "blk.N...." (-1 otherwise): llama.cpp orders its weights by it, then by name.
inline int layer_of(const std::string& name) {
  int l = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &l) != 1) return -1;
  return l;
}

//! A type whose block does not divide the row: llama.cpp's fallback (Q5_1 -> Q8_0 here), or
//! nullopt when even that does not fit (the weight then stays as it is).
inline std::optional<ggml_type> gguf_fallback(ggml_type t, index row_length) {
  auto fits = [&](ggml_type x) { return row_length % ggml_traits(x).block_size == 0; };
  if (fits(t)) return t;
  ggml_type f = t;
  switch (t) {
    case ggml_type::q2_k: case ggml_type::q3_k: f = ggml_type::iq4_nl; break;
    case ggml_type::q4_k: f = ggml_type::q5_0; break;
    case ggml_type::q5_k: case ggml_type::q6_k: f = ggml_type::q8_0; break;
    default: return std::nullopt;
  }
  return fits(f) ? std::optional<ggml_type>(f) : std::nullopt;
}

}  // namespace detail

//! The type of every weight under preset p (weights whose rows fit no block type are left out:
//! they are copied unchanged). `weights` are all 2-D weights of the model in any order.
inline std::map<std::string, ggml_type> gguf_preset_types(const gguf_preset& p, std::vector<gguf_weight> weights,
                                                          const gguf_model_facts& facts) {
  // llama.cpp walks its weights ordered by layer number, then name; its attn_v / ffn_down counters
  // follow that order.
  std::sort(weights.begin(), weights.end(), [](const gguf_weight& a, const gguf_weight& b) {
    const int la = detail::layer_of(a.name), lb = detail::layer_of(b.name);
    return la != lb ? la < lb : a.name < b.name;
  });
  int n_attn_v = 0, n_ffn_down = 0;
  bool has_output = false;
  for (const auto& w : weights) {
    n_attn_v += w.name.find("attn_v.weight") != std::string::npos;
    n_ffn_down += w.name.find("ffn_down") != std::string::npos;
    has_output |= w.name == "output.weight";
  }
  const std::string_view f = p.name;
  const ggml_type base = p.base;
  int i_attn_v = 0, i_ffn_down = 0;
  std::map<std::string, ggml_type> out;
  for (const auto& w : weights) {
    const std::string& name = w.name;
    ggml_type t = base;
    auto has = [&](std::string_view s) { return name.find(s) != std::string::npos; };
    if (name == "output.weight" || (!has_output && name == "token_embd.weight")) {
      if (w.row_length % ggml_traits(base).block_size != 0) t = ggml_type::q8_0;
      else if (base != ggml_type::q8_0) t = ggml_type::q6_k;
    } else if (name == "token_embd.weight") {
      // the base type
    } else if (has("attn_v.weight")) {
      if (f == "Q2_K") t = facts.n_gqa >= 4 ? ggml_type::q4_k : ggml_type::q3_k;
      else if (f == "Q3_K_M") t = i_attn_v < 2 ? ggml_type::q5_k : ggml_type::q4_k;
      else if (f == "Q3_K_L") t = ggml_type::q5_k;
      else if (f == "IQ4_NL" && facts.n_gqa >= 4) t = ggml_type::q5_k;
      else if ((f == "Q4_K_M" || f == "Q5_K_M") && detail::use_more_bits(i_attn_v, n_attn_v)) t = ggml_type::q6_k;
      else if (f == "Q4_K_S" && i_attn_v < 4) t = ggml_type::q5_k;
      ++i_attn_v;
    } else if (has("ffn_down")) {
      const int i = i_ffn_down, n = n_ffn_down;
      if (f == "Q2_K") t = ggml_type::q3_k;
      else if (f == "Q3_K_M") t = i < n / 16 ? ggml_type::q5_k : ggml_type::q4_k;
      else if (f == "Q3_K_L") t = ggml_type::q5_k;
      else if (f == "Q4_K_M") { if (detail::use_more_bits(i, n)) t = ggml_type::q6_k; }
      else if (i < n / 8 && f == "IQ4_NL" && !facts.has_imatrix) t = ggml_type::q5_k;
      else if (f == "Q5_K_M" && detail::use_more_bits(i, n)) t = ggml_type::q6_k;
      else if (f == "Q4_K_S" && i < n / 8) t = ggml_type::q5_k;
      ++i_ffn_down;
    } else if (has("attn_output.weight")) {
      if (f == "Q2_K") t = ggml_type::q3_k;
      else if (f == "Q3_K_M") t = ggml_type::q4_k;
      else if (f == "Q3_K_L") t = ggml_type::q5_k;
    } else if (has("attn_qkv.weight")) {
      if (f == "Q3_K_M" || f == "Q3_K_L") t = ggml_type::q4_k;
      else if (f == "Q4_K_M") t = ggml_type::q5_k;
      else if (f == "Q5_K_M") t = ggml_type::q6_k;
    }
    if (const auto fit = detail::gguf_fallback(t, w.row_length)) out[name] = *fit;
  }
  return out;
}

}  // namespace yaqa::cli
