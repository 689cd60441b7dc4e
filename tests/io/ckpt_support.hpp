#pragma once
// Seeded int_grid results for the checkpoint-export tests (tests/io/test_gptq_checkpoint.cpp and
// yaqa_ckpt_tool): random codes over the whole grid, random positive scales, random integer zero
// points (asymmetric) or 2^(bits-1) (symmetric), weights = scale * (code - zero) as int_grid
// computes them, and optionally act-order groups (group_index from a random permutation, as
// GPTQ's act-order with lazily fitted groups produces).
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include <yaqa/core/eigen.hpp>
#include <yaqa/quantizers/rtn_grid.hpp>
#include <yaqa/rounding/common.hpp>

namespace yaqa::test {

struct ckpt_case {
  index m, n;
  int bits;
  bool sym;
  index group_size;  // 0: per channel
  bool act_order;    // random group_index
};

template <Scalar T>
rounded<int_grid<T>> random_int_grid_result(const ckpt_case& c, std::uint64_t seed, int min_zero = 1) {
  std::mt19937_64 g(seed * 0x9E3779B97F4A7C15ull + 7);
  const int maxq = (1 << c.bits) - 1;
  const index gc = c.group_size <= 0 ? c.n : c.group_size;
  const index groups = c.n / gc;
  rounded<int_grid<T>> r;
  r.codes.resize(c.m, c.n);
  r.weights.resize(c.m, c.n);
  std::uniform_int_distribution<int> code(0, maxq), zero(min_zero, maxq);
  std::uniform_real_distribution<double> logs(-9.0, -2.0);
  for (index k = 0; k < groups; ++k) {
    typename int_grid<T>::params_type p;
    for (index i = 0; i < c.m; ++i) {
      p.scale.push_back(static_cast<T>(std::exp2(logs(g))));
      p.zero.push_back(c.sym ? T(1 << (c.bits - 1)) : T(zero(g)));
    }
    r.params.push_back(std::move(p));
  }
  if (c.act_order) {
    std::vector<index> perm(static_cast<std::size_t>(c.n));
    std::iota(perm.begin(), perm.end(), index{0});
    std::shuffle(perm.begin(), perm.end(), g);
    r.group_index.resize(static_cast<std::size_t>(c.n));
    for (index j = 0; j < c.n; ++j) r.group_index[static_cast<std::size_t>(perm[j])] = j / gc;
  }
  for (index j = 0; j < c.n; ++j) {
    const auto& p = r.params[static_cast<std::size_t>(r.group_of(j, gc))];
    for (index i = 0; i < c.m; ++i) {
      const int q = code(g);
      r.codes(i, j) = static_cast<std::uint8_t>(q);
      r.weights(i, j) = p.scale[static_cast<std::size_t>(i)] * (static_cast<T>(q) - p.zero[static_cast<std::size_t>(i)]);
    }
  }
  return r;
}

inline int_grid_options grid_options(const ckpt_case& c) {
  int_grid_options o;
  o.bits = c.bits;
  o.sym = c.sym;
  o.group_size = c.group_size;
  return o;
}

}  // namespace yaqa::test
