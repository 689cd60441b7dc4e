#pragma once
//! \file
//! The E8P quantizer (quantizers/e8p.hpp) as a kernel body, for host and device (YAQA_HD, like
//! device_math.hpp). One unit is 1 x 8: u = target / scale, the nearest of the 2^16 codewords
//! c = sigma * a + eps / 4, recon = scale * c, and the 16-bit code of e8p.hpp.
//!
//! The search is the CPU's exact reduction without its orbit shortcut: for each shift
//! eps = -1, +1 and each of the 256 absolute vectors a (table order), the best signs give
//! score = sum a_i |y_i| - [wrong parity] 2 min_i a_i |y_i| - |a|^2 / 2 + shift term, y = u - eps/4;
//! the largest score wins, the -1/4 shift and the earlier table entry on ties. 512 dot products of
//! length 8 per unit: cheap next to the feedback GEMMs, and branch-light on a GPU. The scores are
//! summed in a different order than the CPU's sorted-orbit search, so a unit whose two best
//! codewords are within rounding error of each other can get the other one (as with the GEMM
//! order of the feedback).
#include <cstdint>
#include <vector>

#include <yaqa/backend/cuda/kernels/device_math.hpp>
#include <yaqa/quantizers/e8p.hpp>

namespace yaqa::cuda::detail {

//! The absolute-vector table of e8p.hpp (256 entries) as raw arrays (host or device memory).
struct e8p_table_view {
  const std::int8_t* twice_abs;  // 256 x 8, row-major: 2 a
  const std::uint8_t* parity;    // required parity of the number of negative signs
  const int* norm2_times4;       // 4 |a|^2
};

//! The host table (e8p_absolute_vectors()).
inline e8p_table_view e8p_host_table() {
  const auto& t = e8p_absolute_vectors();
  return {t.twice_abs[0].data(), t.parity.data(), t.norm2_times4.data()};
}

YAQA_HD inline unsigned popcount8(unsigned v) {
  unsigned c = 0;
  for (int i = 0; i < 8; ++i) c += (v >> i) & 1u;
  return c;
}

//! Best absolute vector for one shift: b = |y|, neg = sign mask of y, off = the shift's term.
template <class T>
YAQA_HD inline void e8p_best_abs_scan(const e8p_table_view& tb, const T* b, unsigned neg, T off, int& best_j,
                                      T& best) {
  const unsigned pneg = popcount8(neg) & 1u;
  best_j = 0;
  bool first = true;
  for (int j = 0; j < 256; ++j) {
    const std::int8_t* k = tb.twice_abs + 8 * j;
    T dot = 0, mn = T(0);
    for (int i = 0; i < 8; ++i) {
      const T p = mul_rn(T(k[i]) * T(0.5), b[i]);
      dot = add_rn(dot, p);
      mn = (i == 0 || p < mn) ? p : mn;
    }
    const T fix = pneg != tb.parity[j] ? mul_rn(T(2), mn) : T(0);
    const T score = add_rn(sub_rn(sub_rn(dot, fix), T(tb.norm2_times4[j]) * T(0.125)), off);
    if (first || score > best) {
      best = score;
      best_j = j;
      first = false;
    }
  }
}

//! Nearest codeword to u (codebook units): the 16-bit code of e8p.hpp.
template <class T>
YAQA_HD inline std::uint16_t e8p_nearest_scan(const e8p_table_view& tb, const T* u) {
  T b0[8], b1[8];
  unsigned neg0 = 0, neg1 = 0;
  T su = 0;
  for (int i = 0; i < 8; ++i) {
    su = add_rn(su, u[i]);
    const T y0 = add_rn(u[i], T(0.25)), y1 = sub_rn(u[i], T(0.25));
    b0[i] = y0 < T(0) ? -y0 : y0;
    b1[i] = y1 < T(0) ? -y1 : y1;
    neg0 |= (y0 < T(0) ? 1u : 0u) << i;
    neg1 |= (y1 < T(0) ? 1u : 0u) << i;
  }
  int j0 = 0, j1 = 0;
  T s0 = 0, s1 = 0;
  e8p_best_abs_scan(tb, b0, neg0, -mul_rn(su, T(0.25)), j0, s0);
  e8p_best_abs_scan(tb, b1, neg1, mul_rn(su, T(0.25)), j1, s1);
  const bool plus = s1 > s0;
  const int j = plus ? j1 : j0;
  const T* b = plus ? b1 : b0;
  unsigned signs = plus ? neg1 : neg0;
  if ((popcount8(signs) & 1u) != tb.parity[j]) {  // flip the smallest a_i |y_i| (first on ties)
    int flip = 0;
    T mn = T(0);
    for (int i = 0; i < 8; ++i) {
      const T p = mul_rn(T(tb.twice_abs[8 * j + i]) * T(0.5), b[i]);
      if (i == 0 || p < mn) {
        mn = p;
        flip = i;
      }
    }
    signs ^= 1u << flip;
  }
  return static_cast<std::uint16_t>(static_cast<unsigned>(j) | ((signs & 0x7Fu) << 8) | (plus ? 0x8000u : 0u));
}

//! Codeword entry i of a code (exact in T: multiples of 1/4), as e8p_decode.
template <class T>
YAQA_HD inline T e8p_decode_entry(const e8p_table_view& tb, std::uint16_t code, int i) {
  const unsigned j = code & 0xFFu, signs = (code >> 8) & 0x7Fu;
  const unsigned neg7 = (popcount8(signs) + tb.parity[j]) & 1u;
  const unsigned all = signs | (neg7 << 7);
  const T a = T(tb.twice_abs[8 * j + i]) * T(0.5);
  return add_rn((all >> i) & 1u ? -a : a, (code & 0x8000u) ? T(0.25) : T(-0.25));
}

//! The e8p quantizer as a wavefront unit policy (see grid_unit in rounding_plan.hpp): one 1 x 8
//! unit, the scale of (row, group) at scale[group * rows + row] (e8p fits one group per layer
//! unless its group_size is set, and one scale per row, or the same scale for every row with
//! e8p_scales::per_matrix).
template <class T>
struct e8p_unit {
  using code_type = std::uint16_t;
  static constexpr index unit = 8;
  e8p_table_view table;
  const T* scale;  // [group][row]
  index rows;      // rows of the layer (stride between groups)
  index group_cols;

  //! x: 8 targets of row `row` from column col0; writes recon and the code. false: a target was
  //! not finite (code 0, as the CPU).
  YAQA_HD bool operator()(const T* x, T* recon, index row, index col0, code_type& code) const {
    const T s = scale[(col0 / group_cols) * rows + row];
    const T inv = s > T(0) ? div_rn(T(1), s) : T(0);
    T u[8];
    bool ok = true;
    for (int t = 0; t < 8; ++t) {
      ok = ok && finite(x[t]);
      u[t] = mul_rn(x[t], inv);
    }
    code = ok ? e8p_nearest_scan(table, u) : std::uint16_t{0};
    for (int t = 0; t < 8; ++t) recon[t] = mul_rn(s, e8p_decode_entry<T>(table, code, t));
    return ok;
  }
};

//! Number of scales of every group packed [group][row] (host).
template <class P>
inline index e8p_packed_scale_count(const std::vector<P>& p) {
  return p.empty() ? 0 : static_cast<index>(p.size()) * p.front().rows();
}

//! The e8p scales of every group packed [group][row]: element (row, group) at group * rows + row,
//! as e8p_unit reads them (host). Every group must have the same rows.
template <class T, class P>
std::vector<T> pack_e8p_scales(const std::vector<P>& p, const char* what) {
  yaqa::detail::require(!p.empty(), what, ": argument 'params' must hold at least one group");
  const index rows = p.front().rows();
  std::vector<T> out;
  out.reserve(static_cast<std::size_t>(e8p_packed_scale_count(p)));
  for (std::size_t g = 0; g < p.size(); ++g) {
    yaqa::detail::require<shape_error>(p[g].rows() == rows, what, ": group ", g, " has ", p[g].rows(),
                                       " scales; expected ", rows, " (group 0)");
    out.insert(out.end(), p[g].scale.begin(), p[g].scale.end());
  }
  return out;
}

}  // namespace yaqa::cuda::detail
