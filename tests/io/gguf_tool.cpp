// yaqa_gguf_tool: the C++ side of tests/python/test_gguf_interop.py (gguf-py 0.19.0 as the
// reference reader and writer).
//   yaqa_gguf_tool write OUT.gguf [ALIGNMENT]
//       writes a GGUF with every KV type (tests/io/gguf_support.hpp) and F32 / F16 / BF16 / Q8_0 /
//       I32 tensors, and prints as JSON what it meant to write (from the in-memory values, not
//       read back), for gguf.GGUFReader to be compared against.
//   yaqa_gguf_tool copy IN.gguf OUT.gguf
//       copies every KV pair and tensor through gguf_writer::copy_from (byte for byte, expected).
//   yaqa_gguf_tool dump IN.gguf
//       reads a GGUF with gguf_file and prints its version, alignment, KV pairs (in file order,
//       with types) and tensors (type, ne, offset, bytes in hex, decoded values) as JSON.
// Exit status: 0, or 1 with the exception's message on stderr.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <io/gguf_support.hpp>
#include <yaqa/io/gguf.hpp>
#include <yaqa/io/tensor.hpp>

namespace {

using json = nlohmann::ordered_json;

json value_json(const yaqa::gguf_value& v) {
  return std::visit(
      [](const auto& x) -> json {
        using X = std::remove_cvref_t<decltype(x)>;
        if constexpr (std::is_same_v<X, yaqa::gguf_array>) {
          json a = json::array();
          for (const auto& e : x.values) a.push_back(value_json(e));
          return a;
        } else if constexpr (std::is_same_v<X, float>) {
          return double(x);
        } else if constexpr (std::is_same_v<X, std::int8_t> || std::is_same_v<X, std::int16_t> ||
                             std::is_same_v<X, std::int32_t>) {
          return std::int64_t(x);
        } else if constexpr (std::is_same_v<X, std::uint8_t> || std::is_same_v<X, std::uint16_t> ||
                             std::is_same_v<X, std::uint32_t>) {
          return std::uint64_t(x);
        } else {
          return x;
        }
      },
      v.get());
}

json kv_json(const std::string& key, const yaqa::gguf_value& v) {
  json j{{"key", key}, {"type", static_cast<std::uint32_t>(v.type())}};
  if (v.is<yaqa::gguf_array>()) j["element_type"] = static_cast<std::uint32_t>(v.as_array().element_type);
  j["value"] = value_json(v);
  return j;
}

std::string hex(std::span<const std::byte> b) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s;
  for (std::byte x : b) {
    const auto u = std::to_integer<unsigned>(x);
    s += digits[u >> 4];
    s += digits[u & 15];
  }
  return s;
}

json tensor_json(const std::string& name, yaqa::ggml_type type, const std::vector<yaqa::index>& shape,
                 std::span<const std::byte> bytes, const std::string& source) {
  const std::vector<yaqa::index> ne(shape.rbegin(), shape.rend());
  json j{{"name", name}, {"type", static_cast<std::uint32_t>(type)}, {"ne", ne}, {"hex", hex(bytes)}};
  if (const auto elem = yaqa::ggml_traits(type).element) {
    const auto v = yaqa::to_vector<double>(yaqa::tensor_view{name, *elem, shape, bytes, source});
    j["values"] = std::vector<double>(v.data(), v.data() + v.size());
  }
  return j;
}

int write_sample(const std::string& path, std::uint32_t alignment) {
  using yaqa::ggml_type;
  using yaqa::test::raw_bytes;
  yaqa::gguf_writer w;
  json out{{"alignment", alignment}, {"kv", json::array()}, {"tensors", json::array()}};
  for (const auto& [k, v] : yaqa::test::every_kv_type()) {
    w.set(k, v);
    out["kv"].push_back(kv_json(k, v));
  }
  if (alignment != yaqa::gguf_default_alignment) {
    w.set_alignment(alignment);
    out["kv"].push_back(kv_json("general.alignment", yaqa::gguf_value(alignment)));
  }
  std::vector<std::uint16_t> h, bf;
  for (float x : yaqa::test::wavy(14)) h.push_back(yaqa::to_f16_bits(x));
  for (float x : yaqa::test::wavy(5, 3e10f)) bf.push_back(yaqa::to_bf16_bits(x));
  const auto q_src = yaqa::test::wavy(192);
  const auto q = yaqa::test::q8_0_encode(q_src);
  struct t {
    std::string name;
    ggml_type type;
    std::vector<yaqa::index> shape;
    std::vector<std::byte> bytes;
  };
  const std::vector<t> ts = {
      {"blk.0.attn_q.weight", ggml_type::f32, {3, 5}, raw_bytes(yaqa::test::wavy(15))},
      {"blk.0.attn_k.weight", ggml_type::f16, {2, 7}, raw_bytes(h)},
      {"blk.0.attn_v.weight", ggml_type::q8_0, {3, 64}, q},
      {"blk.0.attn_norm.weight", ggml_type::bf16, {5}, raw_bytes(bf)},
      {"token_types", ggml_type::i32, {1, 1, 3}, raw_bytes(std::vector<std::int32_t>{-7, 0, 2147483647})},
  };
  for (const auto& x : ts) {
    w.add(x.name, x.type, x.shape, x.bytes);
    json j = tensor_json(x.name, x.type, x.shape, x.bytes, path);
    if (x.type == ggml_type::q8_0) {
      j["dequantized"] = yaqa::test::q8_0_decode(x.bytes);
      j["original"] = q_src;
    }
    out["tensors"].push_back(j);
  }
  w.write(path);
  std::cout << out.dump(1) << '\n';
  return 0;
}

int dump(const std::string& path) {
  const yaqa::gguf_file f(path);
  json out{{"version", f.version()},       {"alignment", f.alignment()}, {"data_offset", f.data_offset()},
           {"kv", json::array()},          {"tensors", json::array()}};
  for (const auto& [k, v] : f.metadata()) out["kv"].push_back(kv_json(k, v));
  for (const auto& t : f.tensors()) {
    json j = tensor_json(t.name, t.type, t.shape, t.bytes, path);
    j["offset"] = t.offset;
    out["tensors"].push_back(j);
  }
  std::cout << out.dump(1, ' ', false, json::error_handler_t::replace) << '\n';
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() >= 2 && args.size() <= 3 && args[0] == "write")
      return write_sample(args[1],
                          args.size() == 3 ? std::uint32_t(std::stoul(args[2])) : yaqa::gguf_default_alignment);
    if (args.size() == 2 && args[0] == "dump") return dump(args[1]);
    if (args.size() == 3 && args[0] == "copy") {
      const yaqa::gguf_file in(args[1]);
      yaqa::gguf_writer w;
      w.copy_from(in);
      w.forbid_path(args[1]);
      w.write(args[2]);
      return 0;
    }
    std::cerr << "usage: yaqa_gguf_tool write OUT.gguf [ALIGNMENT] | dump IN.gguf | copy IN.gguf OUT.gguf\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "yaqa_gguf_tool: " << e.what() << '\n';
    return 1;
  }
}
