// yaqa_gguf_quant_tool: the C++ side of tests/python/test_gguf_quants.py.
//   yaqa_gguf_quant_tool types
//       prints the GGUF types this build can quantize, one per line.
//   yaqa_gguf_quant_tool write TYPE ROWS COLS SEED OUT.gguf [importance|uniform] [rtn|ldlq]
//       draws a seeded ROWS x COLS matrix w (rows of mixed scale, a few outliers), fits TYPE's
//       scales (with a seeded random importance vector when asked), rounds with RTN or LDLQ (a
//       seeded random H), and writes OUT.gguf with tensors
//         "w"     F32 [ROWS, COLS]  the input
//         "q"     TYPE [ROWS, COLS] the encoded blocks
//         "recon" F32 [ROWS, COLS]  what quantize() wrote (the dequantized weights)
//         "imp"   F32 [COLS]        the importance vector (all ones when uniform)
// Exit status: 0, or 1 with the exception's message on stderr.
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <gguf/gguf_types.hpp>
#include <yaqa/io/gguf.hpp>
#include <yaqa/linalg/block_ldl.hpp>
#include <yaqa/rounding/ldlq.hpp>
#include <yaqa/rounding/rtn.hpp>

namespace {

yaqa::matrix<float> draw_weights(yaqa::index rows, yaqa::index cols, std::uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  yaqa::matrix<float> w(rows, cols);
  for (yaqa::index i = 0; i < rows; ++i) {
    const float s = std::exp(4.f * ud(g) - 3.f);  // row scales over ~2 decades
    for (yaqa::index j = 0; j < cols; ++j) w(i, j) = s * nd(g);
  }
  for (int k = 0; k < (rows * cols) / 97 + 1; ++k)  // outliers
    w(static_cast<yaqa::index>(g() % rows), static_cast<yaqa::index>(g() % cols)) *= 8.f;
  if (rows > 1) w.row(rows - 1).setZero();  // an all-zero row (scale 0 corner)
  return w;
}

int write(const std::string& type, yaqa::index rows, yaqa::index cols, std::uint64_t seed, const std::string& out,
          bool importance, bool ldlq) {
  bool found = false;
  yaqa::test::for_each_gguf_type([&]<class Q>(std::string_view name, std::type_identity<Q>) {
    if (name != type) return;
    found = true;
    const auto w = draw_weights(rows, cols, seed);
    std::mt19937_64 g(seed + 1);
    std::uniform_real_distribution<float> ud(0.f, 1.f);
    std::vector<float> imp(static_cast<std::size_t>(cols), 1.f);
    if (importance)
      for (auto& v : imp) v = std::exp(6.f * ud(g) - 3.f);
    yaqa::gguf_quant_options o;
    if (importance) o.importance = imp;
    // Through gguf_any: one instantiation of the drivers for all types (the unit tests cover each
    // concrete class), and the run-time dispatch the CLI uses is exercised too.
    const yaqa::gguf_any<float> q(Q::type, o);
    const yaqa::cpu_backend be{};
    yaqa::rounded<yaqa::gguf_any<float>> r;
    if (ldlq) {
      // H = A A^T / k + diag(imp): correlated inputs with the importance on the diagonal.
      const yaqa::index k = cols + 7;
      yaqa::matrix<float> a(cols, k);
      std::normal_distribution<float> nd(0.f, 1.f);
      for (yaqa::index j = 0; j < k; ++j)
        for (yaqa::index i = 0; i < cols; ++i) a(i, j) = nd(g);
      yaqa::matrix<double> h = (a.cast<double>() * a.cast<double>().transpose()) / double(k);
      for (yaqa::index i = 0; i < cols; ++i) h(i, i) += imp[static_cast<std::size_t>(i)];
      const yaqa::matrix<float> hf = h.cast<float>();
      const auto f = yaqa::block_ldl(be, yaqa::view(hf), 32).value();
      r = yaqa::ldlq(be, q, yaqa::view(w), yaqa::view(f.L), 32);
    } else {
      r = yaqa::rtn(be, q, yaqa::view(w));
    }
    const auto bytes = yaqa::gguf_encode(q, r);
    yaqa::gguf_writer wr;
    wr.add("w", yaqa::view(w));
    wr.add("q", q.type(), {rows, cols}, std::span<const std::byte>(bytes));
    wr.add("recon", yaqa::view(r.weights));
    yaqa::matrix<float> impm(1, cols);
    for (yaqa::index j = 0; j < cols; ++j) impm(0, j) = imp[static_cast<std::size_t>(j)];
    wr.add("imp", yaqa::view(impm));
    wr.write(out);
  });
  if (!found) {
    std::cerr << "yaqa_gguf_quant_tool: unknown type '" << type << "'\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> a(argv + 1, argv + argc);
    if (a.size() == 1 && a[0] == "types") {
      yaqa::test::for_each_gguf_type(
          []<class Q>(std::string_view name, std::type_identity<Q>) { std::cout << name << "\n"; });
      return 0;
    }
    if ((a.size() >= 6 && a.size() <= 8) && a[0] == "write")
      return write(a[1], std::stoll(a[2]), std::stoll(a[3]), std::stoull(a[4]), a[5],
                   a.size() > 6 && a[6] == "importance", a.size() > 7 && a[7] == "ldlq");
    std::cerr << "usage: yaqa_gguf_quant_tool types | write TYPE ROWS COLS SEED OUT [importance|uniform] [rtn|ldlq]\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
