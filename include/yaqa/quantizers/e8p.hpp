#pragma once
//! \file
//! e8p: a 2-bit, 8-dimensional lattice codebook in the spirit of QuIP#'s E8P ("E8 padded"),
//! generated here from its definition (see docs/quantizers.md for the exact construction).
//!
//! Construction. E8 = D8 u (D8 + 1/2), and E8 + 1/4 = (D8^ - 1/4) u (D8^ + 1/4), where D8^ is the
//! set of half-integer vectors (all entries in Z + 1/2) with an even coordinate sum. A point of
//! D8^ is an "absolute" vector a (entries in {1/2, 3/2, 5/2, ...}) with signs; flipping the sign
//! of a half-integer entry changes the sum by an odd integer, so exactly half of the 2^8 sign
//! patterns of each a land in D8^: the number of negative entries must have the parity of sum(a).
//! The codebook is
//!
//!     c = sigma * a + eps / 4,   a in A (256 absolute vectors), sigma in {+-1}^8 with the parity
//!                                rule (7 free signs), eps in {-1, +1},
//!
//! i.e. 256 * 2^7 * 2 = 2^16 points of E8 + 1/4. A holds every absolute vector with |a|^2 <= 10
//! (227 of them) plus 29 of the 224 with |a|^2 = 12, chosen greedily to be far apart (see
//! make_e8p_abs_table).
//!
//! Code layout (16 bits): bits 0-7 the index of a in A (A sorted by |a|^2, then
//! lexicographically), bits 8-14 the signs of entries 0-6 (1 = negative), bit 15 the shift
//! (1 = +1/4, 0 = -1/4). The sign of entry 7 follows from the parity rule.
//!
//! Nearest-codeword search (exact): for a fixed shift y = u - eps/4 and a fixed a, the best signs
//! are sigma_i = sign(y_i), which gives sum_i a_i |y_i|; if that pattern has the wrong parity the
//! best admissible one flips the entry with the smallest a_i |y_i|. The distance is then
//! |y|^2 - 2 * (sum a_i |y_i| - [wrong parity] * 2 * min_i a_i |y_i| - |a|^2 / 2), so the search is
//! 2 shifts x 256 absolute vectors x 8 dimensions instead of 65536 x 8. Better still, the 227
//! inner vectors form 7 complete permutation orbits, and the best member of an orbit pairs its
//! sorted entries with the sorted |y_i| (rearrangement inequality), so each orbit costs one dot
//! product of length 8 after one sort of |y|; only the 29 outer vectors are scanned, and skipped
//! when the Cauchy-Schwarz bound |a| |y| - |a|^2 / 2 cannot beat the best orbit.
//!
//! Scale: by default one scale per row of the fitted region (e8p_scales::per_row),
//! params.scale[i] = RMS(row i) * optimal_scale() / scale_override, recon = params.scale[i] *
//! codeword; e8p_scales::per_matrix uses the RMS of the whole region for every row (QuIP#'s single
//! Wscale). The fitted region is the whole matrix, or one group of group_size columns.
//! optimal_scale() minimizes the MSE of unit-variance Gaussian input (computed once per process by
//! a fixed-seed Monte Carlo with a golden-section search, see e8p_calibration()). scale_override
//! follows QuIP#/QTIP: it divides the codebook scale (QTIP's 0.9 enlarges the codebook relative to
//! the weights by 1/0.9).
//!
//! Why per row: the codebook is a ball (|c| <= sqrt(12) + 1/4 in codebook units) with a finest
//! step of 1/2, so it only suits rows whose RMS is close to the one its scale was fitted for. The
//! random Hadamard transform makes the entries of a row look Gaussian, but it cannot equalize the
//! row norms of a layer dominated by a few singular directions: a rank-1 W rotates into an outer
//! product of two Gaussian vectors. In the tiny_lm demo the output head (77% of its energy in one
//! singular direction) has rotated rows from 0.42 to 2.8 times the layer's RMS; one scale for the
//! matrix gave those rows a relative MSE of 0.47 and 0.35 (0.095 at the right scale) and the head
//! alone cost 0.86 nats/byte of KL (docs/quantizers.md).
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/quantizers/common.hpp>
#include <yaqa/quantizers/concepts.hpp>

namespace yaqa {

//! The set A of absolute vectors, in units of 1/2 (odd integers), and its parity bits.
struct e8p_abs_table {
  std::array<std::array<std::int8_t, 8>, 256> twice_abs{};  //!< 2 * a, entries in {1, 3, 5, 7}
  std::array<std::uint8_t, 256> parity{};                   //!< required parity of #negative signs
  std::array<int, 256> norm2_times4{};                      //!< 4 * |a|^2
  //! Index in A of the vector 2a = k, keyed by sum_i ((k_i - 1) / 2) * 4^(7 - i); -1 if absent.
  std::array<std::int16_t, 1 << 16> index_of{};
};

namespace detail {

//! Key of an absolute vector given as 2a (odd entries 1..7): base-4 digits, entry 0 first.
inline unsigned e8p_key(const std::int8_t* twice_abs) {
  unsigned key = 0;
  for (int i = 0; i < 8; ++i) key = key * 4u + static_cast<unsigned>((twice_abs[i] - 1) / 2);
  return key;
}

//! Builds A: every vector of odd integers k (k = 2a) with sum k^2 <= 40 (|a|^2 <= 10, 227
//! vectors), plus 29 of the 224 with sum k^2 = 48 (|a|^2 = 12), spread out greedily: start from
//! the lexicographically first, then repeatedly add the one whose smallest squared distance to
//! those already chosen is largest (ties: lexicographically first). A is sorted by norm, then
//! lexicographically.
inline std::unique_ptr<e8p_abs_table> make_e8p_abs_table() {
  using vec = std::array<std::int8_t, 8>;
  std::vector<vec> inner, shell;
  vec k{};
  for (unsigned key = 0; key < (1u << 16); ++key) {  // lexicographic: entry 0 is the top digit
    int n2 = 0;
    for (int i = 0; i < 8; ++i) {
      k[i] = static_cast<std::int8_t>(1 + 2 * ((key >> (2 * (7 - i))) & 3u));
      n2 += k[i] * k[i];
    }
    if (n2 <= 40) inner.push_back(k);
    else if (n2 == 48) shell.push_back(k);
  }
  std::vector<bool> used(shell.size(), false);
  std::vector<int> nearest(shell.size(), std::numeric_limits<int>::max());
  for (std::size_t pick = 0, next = 0; pick < 29; ++pick) {
    used[next] = true;
    inner.push_back(shell[next]);
    int far = -1;
    for (std::size_t c = 0; c < shell.size(); ++c) {
      int d = 0;
      for (int i = 0; i < 8; ++i) d += (shell[c][i] - shell[next][i]) * (shell[c][i] - shell[next][i]);
      nearest[c] = std::min(nearest[c], d);
      if (!used[c] && nearest[c] > far) far = nearest[c];
    }
    for (std::size_t c = 0; c < shell.size(); ++c)
      if (!used[c] && nearest[c] == far) {
        next = c;
        break;
      }
  }
  auto norm2 = [](const vec& v) {
    int s = 0;
    for (auto x : v) s += x * x;
    return s;
  };
  // Sort by (norm, key): the key's base-4 digits order the vectors lexicographically. (Sorting
  // plain integers also sidesteps a bogus GCC 12 -Wstringop-overflow on sorts of small arrays.)
  std::vector<std::pair<int, unsigned>> order;
  for (const auto& v : inner) order.emplace_back(norm2(v), e8p_key(v.data()));
  std::sort(order.begin(), order.end());
  for (std::size_t j = 0; j < order.size(); ++j)
    for (int i = 0; i < 8; ++i)
      inner[j][i] = static_cast<std::int8_t>(1 + 2 * ((order[j].second >> (2 * (7 - i))) & 3u));
  auto tp = std::make_unique<e8p_abs_table>();  // 130 KB: on the heap, not the caller's stack
  auto& t = *tp;
  t.index_of.fill(-1);
  for (std::size_t j = 0; j < 256; ++j) {
    t.twice_abs[j] = inner[j];
    int sum = 0;
    for (auto x : inner[j]) sum += x;  // sum of 2a_i; sum(a) = sum / 2 is an integer
    t.parity[j] = static_cast<std::uint8_t>((sum / 2) & 1);
    t.norm2_times4[j] = norm2(inner[j]);
    t.index_of[e8p_key(inner[j].data())] = static_cast<std::int16_t>(j);
  }
  return tp;
}

}  // namespace detail

//! The cached absolute-vector table (built once per process, thread-safe).
inline const e8p_abs_table& e8p_absolute_vectors() {
  static const std::unique_ptr<e8p_abs_table> t = detail::make_e8p_abs_table();
  return *t;
}

namespace detail {

//! A split into permutation orbits that A contains completely (searched in O(8) each by the
//! rearrangement inequality) and the remaining vectors (scanned explicitly, with pruning).
template <class T>
struct e8p_search_table {
  static constexpr int lanes = 16;
  struct orbit {
    std::array<T, 8> a{};                // entries sorted in decreasing order
    std::array<std::int8_t, 8> twice{};  // the same, as 2a
    T half_norm2 = 0;
    T parity = 0;
  };
  std::vector<orbit> orbits;
  int explicit_count = 0;                // padded to a multiple of `lanes` (<= 256)
  alignas(64) T ex_a[8][256] = {};       // ex_a[i][e] = entry i of explicit vector e
  alignas(64) T ex_half_norm2[256] = {};
  alignas(64) T ex_parity[256] = {};
  int ex_index[256] = {};                // index in A
  std::vector<T> ex_norms;               // distinct norms |a| of the explicit vectors
};

template <class T>
const e8p_search_table<T>& e8p_search() {
  static const std::unique_ptr<e8p_search_table<T>> s = [] {
    auto rp = std::make_unique<e8p_search_table<T>>();
    auto& r = *rp;
    const auto& t = e8p_absolute_vectors();
    std::vector<bool> done(256, false);
    std::vector<int> ex;
    for (int j = 0; j < 256; ++j) {
      if (done[j]) continue;
      auto sorted_of = [&](int idx) {
        std::array<std::int8_t, 8> v = t.twice_abs[static_cast<std::size_t>(idx)];
        std::sort(v.begin(), v.end());
        return v;
      };
      const std::array<std::int8_t, 8> sorted = sorted_of(j);
      // The orbit (all distinct permutations of the multiset) has 8! / prod(multiplicity!)
      // elements; it is complete when A holds that many vectors with this multiset.
      std::vector<int> members;
      for (int m = j; m < 256; ++m)
        if (!done[m] && sorted_of(m) == sorted) members.push_back(m);
      long orbit_size = 40320;
      for (int i = 0, run = 1; i < 8; ++i, ++run) {
        if (i + 1 < 8 && sorted[i + 1] == sorted[i]) continue;
        for (int f = 2; f <= run; ++f) orbit_size /= f;
        run = 0;
      }
      const bool complete = static_cast<long>(members.size()) == orbit_size;
      for (int m : members) done[m] = true;
      if (complete) {
        typename e8p_search_table<T>::orbit o;
        for (int i = 0; i < 8; ++i) {
          o.twice[i] = sorted[7 - i];
          o.a[i] = static_cast<T>(sorted[7 - i]) / T(2);
        }
        o.half_norm2 = static_cast<T>(t.norm2_times4[j]) / T(8);
        o.parity = static_cast<T>(t.parity[j]);
        r.orbits.push_back(o);
      } else {
        ex.insert(ex.end(), members.begin(), members.end());
      }
    }
    std::sort(ex.begin(), ex.end());
    const int lanes = e8p_search_table<T>::lanes;
    r.explicit_count = (static_cast<int>(ex.size()) + lanes - 1) / lanes * lanes;
    // Padding scores -huge: never chosen, never NaN.
    for (int e = static_cast<int>(ex.size()); e < r.explicit_count; ++e)
      r.ex_half_norm2[e] = std::numeric_limits<T>::max() / 4;
    for (std::size_t e = 0; e < ex.size(); ++e) {
      const int j = ex[e];
      for (int i = 0; i < 8; ++i) r.ex_a[i][e] = static_cast<T>(t.twice_abs[j][i]) / T(2);
      r.ex_half_norm2[e] = static_cast<T>(t.norm2_times4[j]) / T(8);
      r.ex_parity[e] = static_cast<T>(t.parity[j]);
      r.ex_index[e] = j;
      const T nrm = std::sqrt(static_cast<T>(t.norm2_times4[j]) / T(4));
      if (std::find(r.ex_norms.begin(), r.ex_norms.end(), nrm) == r.ex_norms.end())
        r.ex_norms.push_back(nrm);
    }
    return rp;
  }();
  return *s;
}

//! The codeword of a 16-bit code, entries exact in T (multiples of 1/4).
template <class T>
inline std::array<T, 8> e8p_decode(std::uint16_t code) {
  const auto& t = e8p_absolute_vectors();
  const unsigned j = code & 0xFFu;
  const unsigned signs = (code >> 8) & 0x7Fu;
  const T shift = (code & 0x8000u) ? T(0.25) : T(-0.25);
  const unsigned neg7 = (static_cast<unsigned>(std::popcount(signs)) + t.parity[j]) & 1u;
  const unsigned all = signs | (neg7 << 7);
  std::array<T, 8> c{};
  for (int i = 0; i < 8; ++i) {
    const T a = static_cast<T>(t.twice_abs[j][i]) / T(2);
    c[i] = ((all >> i) & 1u ? -a : a) + shift;
  }
  return c;
}

//! Best absolute vector for one shift: b = |y| (8 values), neg = sign mask of y, off = the
//! shift's term of the distance. Returns the index in A and its score (higher is better; the
//! distance is |u|^2 + 1/2 - 2 * score).
template <class T>
inline std::pair<int, T> e8p_best_abs(const e8p_search_table<T>& tb, const T* b, unsigned neg, T off) {
  const auto& t = e8p_absolute_vectors();
  const T pneg = static_cast<T>(std::popcount(neg) & 1);
  // Positions by decreasing |y|: an optimal 19-comparator sorting network on (value, position)
  // pairs, branch-free and deterministic (equal values may end in either order; the pairing
  // argument below holds for any order among equal values).
  int ord[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  T bs[8];
  for (int i = 0; i < 8; ++i) bs[i] = b[i];
  auto ce = [&](int x, int y) {
    const int sw = -static_cast<int>(bs[y] > bs[x]);  // all ones when swapping (mask, no branch)
    const int d = (ord[x] ^ ord[y]) & sw;
    const T hi = std::max(bs[x], bs[y]), lo = std::min(bs[x], bs[y]);
    bs[x] = hi;
    bs[y] = lo;
    ord[x] ^= d;
    ord[y] ^= d;
  };
  ce(0, 2), ce(1, 3), ce(4, 6), ce(5, 7);
  ce(0, 4), ce(1, 5), ce(2, 6), ce(3, 7);
  ce(0, 1), ce(2, 3), ce(4, 5), ce(6, 7);
  ce(2, 4), ce(3, 5);
  ce(1, 4), ce(3, 6);
  ce(1, 2), ce(3, 4), ce(5, 6);
  // Complete orbits: pairing sorted a with sorted |y| is optimal (rearrangement inequality); with
  // the wrong parity the flip lands on the smallest product, a_min * |y|_min, which is again
  // optimal (treat the flipped |y| as negative: it becomes the smallest and pairs with a_min).
  T best = -std::numeric_limits<T>::infinity();
  int best_orbit = -1;
  for (std::size_t o = 0; o < tb.orbits.size(); ++o) {
    const auto& ob = tb.orbits[o];
    T s = 0;
    for (int r = 0; r < 8; ++r) s += ob.a[r] * bs[r];
    const T wrong = ob.parity + pneg - T(2) * ob.parity * pneg;
    const T sc = s - ob.half_norm2 - T(2) * wrong * ob.a[7] * bs[7] + off;
    if (sc > best) {
      best = sc;
      best_orbit = static_cast<int>(o);
    }
  }
  int best_j = -1;
  if (best_orbit >= 0) {
    std::int8_t k[8];
    for (int r = 0; r < 8; ++r) k[ord[r]] = tb.orbits[static_cast<std::size_t>(best_orbit)].twice[r];
    best_j = t.index_of[e8p_key(k)];
  }
  if (tb.explicit_count > 0) {
    // Cauchy-Schwarz: sum a_i |y_i| <= |a| |y|, and the parity penalty only lowers the score.
    T ny2 = 0;
    for (int i = 0; i < 8; ++i) ny2 += b[i] * b[i];
    const T ny = std::sqrt(ny2);
    T bound = -std::numeric_limits<T>::infinity();
    for (T r : tb.ex_norms) bound = std::max(bound, r * ny - r * r / T(2) + off);
    const T slack = T(64) * std::numeric_limits<T>::epsilon() * (std::abs(bound) + std::abs(off) + ny2 + T(1));
    if (bound + slack >= best) {
      constexpr int lanes = e8p_search_table<T>::lanes;
      for (int e0 = 0; e0 < tb.explicit_count; e0 += lanes) {
        alignas(64) T s[lanes], mn[lanes];
        // omp simd: keeps GCC -O3 from fully unrolling these short loops into scalar code.
#if defined(_OPENMP)
#pragma omp simd
#endif
        for (int l = 0; l < lanes; ++l) {
          s[l] = tb.ex_a[0][e0 + l] * b[0];
          mn[l] = s[l];
        }
        for (int i = 1; i < 8; ++i)
#if defined(_OPENMP)
#pragma omp simd
#endif
          for (int l = 0; l < lanes; ++l) {
            const T p = tb.ex_a[i][e0 + l] * b[i];
            s[l] += p;
            mn[l] = std::min(mn[l], p);
          }
#if defined(_OPENMP)
#pragma omp simd
#endif
        for (int l = 0; l < lanes; ++l) {
          const T par = tb.ex_parity[e0 + l];
          const T wrong = par + pneg - T(2) * par * pneg;
          s[l] = s[l] - tb.ex_half_norm2[e0 + l] - T(2) * wrong * mn[l] + off;
        }
        for (int l = 0; l < lanes; ++l)
          if (s[l] > best) {
            best = s[l];
            best_j = tb.ex_index[e0 + l];
          }
      }
    }
  }
  return {best_j, best};
}

//! Nearest codeword to u (8 values, codebook units). Exact up to T's rounding of the scores;
//! among equal distances the choice is deterministic (-1/4 shift first, orbits before the
//! explicitly scanned vectors, first in table order).
template <class T>
inline std::uint16_t e8p_nearest(const T* u) {
  const auto& tb = e8p_search<T>();
  const auto& t = e8p_absolute_vectors();
  T b0[8], b1[8];  // |y| for the shifts -1/4 (y = u + 1/4) and +1/4 (y = u - 1/4)
  unsigned neg0 = 0, neg1 = 0;
  T su = 0;
  for (int i = 0; i < 8; ++i) {
    su += u[i];
    const T y0 = u[i] + T(0.25), y1 = u[i] - T(0.25);
    b0[i] = std::abs(y0);
    b1[i] = std::abs(y1);
    neg0 |= (y0 < T(0) ? 1u : 0u) << i;
    neg1 |= (y1 < T(0) ? 1u : 0u) << i;
  }
  // |u - c|^2 = |y|^2 - 2 sum sigma_i a_i y_i + |a|^2 with |y|^2 = |u|^2 - eps sum(u) / 2 + 1/2:
  // the shift contributes -eps * sum(u) / 2 = -2 * (eps * sum(u) / 4) to the distance.
  const auto [j0, s0] = e8p_best_abs(tb, b0, neg0, -su * T(0.25));
  const auto [j1, s1] = e8p_best_abs(tb, b1, neg1, su * T(0.25));
  const bool plus = s1 > s0;
  const int j = plus ? j1 : j0;
  const T* b = plus ? b1 : b0;
  unsigned signs = plus ? neg1 : neg0;
  if ((static_cast<unsigned>(std::popcount(signs)) & 1u) != t.parity[static_cast<std::size_t>(j)]) {
    // Parity fix: flip the entry with the smallest a_i |y_i| (first on ties).
    int flip = 0;
    T mn = std::numeric_limits<T>::infinity();
    for (int i = 0; i < 8; ++i) {
      const T p = static_cast<T>(t.twice_abs[static_cast<std::size_t>(j)][i]) / T(2) * b[i];
      if (p < mn) {
        mn = p;
        flip = i;
      }
    }
    signs ^= 1u << flip;
  }
  return static_cast<std::uint16_t>(static_cast<unsigned>(j) | ((signs & 0x7Fu) << 8) |
                                    (plus ? 0x8000u : 0u));
}

}  // namespace detail

namespace detail {

//! The unit loop shared by e8p and e8p_rvq: per row, u = x / scale (scale 0, an all-zero row:
//! everything maps to code 0), code = nearest(u), recon = scale * decode(code). A unit holding
//! NaN/Inf gets code 0 and the call throws non_finite_error after the loop (common.hpp's policy).
template <class T, class C, class Nearest, class Decode>
void e8p_quantize_rows(const char* what, matrix_view<const T> target, const std::vector<T>& scale, index row0,
                       matrix_view<T> recon, matrix_view<C> codes, Nearest&& nearest, Decode&& decode) {
  bool finite = true;
  for (index i = 0; i < target.rows; ++i) {
    const T s = scale[static_cast<std::size_t>(row0 + i)];
    const T inv = s > T(0) ? T(1) / s : T(0);
    for (index g = 0; g < target.cols / 8; ++g) {
      T u[8];
      bool ok = true;
      for (int t = 0; t < 8; ++t) {
        const T x = target(i, 8 * g + t);
        ok &= finite_flag(x);
        u[t] = x * inv;
      }
      finite &= ok;
      const C code = ok ? static_cast<C>(nearest(u)) : C{0};
      codes(i, g) = code;
      const auto c = decode(code);
      for (int t = 0; t < 8; ++t) recon(i, 8 * g + t) = s * c[t];
    }
  }
  if (!finite) throw_non_finite_target(what, target);
}

//! The decode loop shared by e8p and e8p_rvq: out(i, 8 g + t) = scale[row0 + i] * decode(code)[t].
template <class T, class C, class Decode>
matrix<T> e8p_reconstruct_rows(matrix_view<const C> codes, const std::vector<T>& scale, index row0, Decode&& decode) {
  matrix<T> out(codes.rows, codes.cols * 8);
  for (index g = 0; g < codes.cols; ++g)
    for (index i = 0; i < codes.rows; ++i) {
      const T s = scale[static_cast<std::size_t>(row0 + i)];
      const auto c = decode(codes(i, g));
      for (int t = 0; t < 8; ++t) out(i, 8 * g + t) = s * c[t];
    }
  return out;
}

}  // namespace detail

//! Result of the codebook-scale calibration at unit variance.
struct e8p_calibration_result {
  double scale = 0;  //!< codebook multiplier minimizing the MSE of N(0, 1) input
  double mse = 0;    //!< mean squared error per weight at that scale, on the calibration sample
  int samples = 0;   //!< 8-vectors in the calibration sample
};

namespace detail {

//! Mean squared error per weight of codebook scale s on x (a multiple of 8 values), in double.
inline double e8p_mse_at(const std::vector<double>& x, double s) {
  double err = 0;
  for (std::size_t v = 0; v + 8 <= x.size(); v += 8) {
    double u[8];
    for (int i = 0; i < 8; ++i) u[i] = x[v + i] / s;
    const auto c = e8p_decode<double>(e8p_nearest<double>(u));
    for (int i = 0; i < 8; ++i) {
      const double d = x[v + i] - s * c[i];
      err += d * d;
    }
  }
  return err / static_cast<double>(x.size());
}

inline e8p_calibration_result compute_e8p_calibration() {
  constexpr int vectors = 8192;
  const auto x = gaussian_sample(8u * vectors, 0x45385031u /* "E8P1" */);
  // Golden-section search of the (unimodal near its minimum) MSE over the codebook scale.
  double lo = 0.5, hi = 1.5;
  const double r = 0.61803398874989484820;
  double c = hi - r * (hi - lo), d = lo + r * (hi - lo);
  double fc = e8p_mse_at(x, c), fd = e8p_mse_at(x, d);
  while (hi - lo > 1e-4) {
    if (fc <= fd) {
      hi = d;
      d = c;
      fd = fc;
      c = hi - r * (hi - lo);
      fc = e8p_mse_at(x, c);
    } else {
      lo = c;
      c = d;
      fc = fd;
      d = lo + r * (hi - lo);
      fd = e8p_mse_at(x, d);
    }
  }
  e8p_calibration_result res;
  res.scale = fc <= fd ? c : d;
  res.mse = std::min(fc, fd);
  res.samples = vectors;
  return res;
}

}  // namespace detail

//! The cached unit-variance calibration (computed once per process, thread-safe).
inline const e8p_calibration_result& e8p_calibration() {
  static const e8p_calibration_result r = detail::compute_e8p_calibration();
  return r;
}

//! Which scales e8p (and e8p_rvq) fit.
enum class e8p_scales {
  per_row,     //!< one scale per row of the fitted region (the default)
  per_matrix,  //!< one scale for the whole fitted region, QuIP#'s global Wscale
};

//! Options of e8p.
struct e8p_options {
  //! Divides the codebook scale, as QuIP#'s/QTIP's --scale_override (QTIP: 0.9). Must be > 0.
  double scale_override = 1.0;
  //! per_row (default) or per_matrix; see the file comment for why per_matrix can fail.
  e8p_scales scales = e8p_scales::per_row;
  //! Input columns per scale group: 0 (or -1) for the whole row (default), else a positive
  //! multiple of 8 that divides n. Groups matter without the random Hadamard transform, when the
  //! columns of a row differ in magnitude (docs/quantizers.md).
  index group_size = 0;
};

namespace detail {

//! Validates the options shared by e8p and e8p_rvq; `what` names the class.
inline void check_e8p_scale_options(const char* what, double scale_override, e8p_scales scales,
                                    index group_size) {
  check_group_size_option(what, group_size, 8);
  require(scale_override > 0 && std::isfinite(scale_override), what,
          ": option 'scale_override' must be finite and > 0, got ", scale_override);
  require(scales == e8p_scales::per_row || scales == e8p_scales::per_matrix, what,
          ": option 'scales' must be e8p_scales::per_row or e8p_scales::per_matrix, got ",
          static_cast<int>(scales));
}

//! The scales of a region: RMS (accumulated in double) times `multiplier`, per row or one for
//! the whole region (then repeated for every row).
template <class T>
std::vector<T> e8p_fit_scales(matrix_view<const T> w, double multiplier, e8p_scales scales) {
  std::vector<T> out(static_cast<std::size_t>(w.rows));
  if (scales == e8p_scales::per_matrix) {
    double ss = 0;
    for (index j = 0; j < w.cols; ++j)
      for (index i = 0; i < w.rows; ++i) ss += static_cast<double>(w(i, j)) * w(i, j);
    const double count = static_cast<double>(w.rows) * static_cast<double>(w.cols);
    const double rms = count > 0 ? std::sqrt(ss / count) : 0.0;
    std::fill(out.begin(), out.end(), static_cast<T>(rms * multiplier));
    return out;
  }
  std::vector<double> ss(static_cast<std::size_t>(w.rows), 0.0);
  for (index j = 0; j < w.cols; ++j)
    for (index i = 0; i < w.rows; ++i) ss[static_cast<std::size_t>(i)] += static_cast<double>(w(i, j)) * w(i, j);
  for (std::size_t i = 0; i < out.size(); ++i)
    out[i] = static_cast<T>(std::sqrt(ss[i] / static_cast<double>(w.cols)) * multiplier);
  return out;
}

//! Bits of the scales of a matrix with `rows` rows and `groups` column groups: 16 (fp16) per row
//! and group, or one fp32 per group (per_matrix).
inline std::size_t e8p_scale_bits(e8p_scales scales, index rows, std::size_t groups) {
  return scales == e8p_scales::per_row ? static_cast<std::size_t>(rows) * groups * 16 : groups * 32;
}

}  // namespace detail

//! The E8P codebook quantizer: units of 1 x 8 along the input dimension, 16-bit codes, one
//! scale per row (default) or per matrix, for the whole row (default: group_cols(n) == n) or per
//! group of group_size columns.
//!
//! Storage accounting: 16 bits per 8 weights, plus a 16-bit (fp16) scale per row and group (as
//! int_grid and lloyd_max_grid count theirs) or one 32-bit (fp32) scale per group (per_matrix).
template <Scalar T>
class e8p {
 public:
  using scalar_type = T;
  using code_type = std::uint16_t;
  struct params_type {
    //! One per row of the fitted region: recon(i, :) = scale[i] * codeword. All equal with
    //! e8p_scales::per_matrix.
    std::vector<T> scale;
    [[nodiscard]] index rows() const { return static_cast<index>(scale.size()); }
  };
  static constexpr index unit_rows = 1;
  static constexpr index unit_cols = 8;

  e8p() : e8p(e8p_options{}) {}
  explicit e8p(const e8p_options& o) : opt_(o) {
    detail::check_e8p_scale_options("yaqa::e8p", o.scale_override, o.scales, o.group_size);
    (void)detail::e8p_search<T>();  // build the tables now, not inside the first timed call
  }

  [[nodiscard]] const e8p_options& options() const { return opt_; }
  [[nodiscard]] double bits_per_weight() const { return 2.0; }
  //! Codebook multiplier for unit-variance input (see e8p_calibration()).
  [[nodiscard]] static double optimal_scale() { return e8p_calibration().scale; }

  //! n (default), or group_size. Throws when n is not a multiple of 8 or group_size does not
  //! divide it.
  [[nodiscard]] index group_cols(index n) const {
    return detail::quantizer_group_cols("yaqa::e8p::group_cols", opt_.group_size, n, unit_cols);
  }
  void validate(index n) const { (void)group_cols(n); }

  //! scale = RMS * optimal_scale() / scale_override, RMS of each row (per_row) or of the whole
  //! region (per_matrix), accumulated in double.
  [[nodiscard]] params_type fit(matrix_view<const T> w) const {
    detail::check_fit_input("yaqa::e8p::fit", w);
    return params_type{detail::e8p_fit_scales(w, optimal_scale() / opt_.scale_override, opt_.scales)};
  }

  //! Nearest codeword per 1 x 8 unit (exact), recon = scale[row0 + i] * codeword. Thread-safe.
  void quantize(matrix_view<const T> target, const params_type& p, index row0, matrix_view<T> recon,
                matrix_view<code_type> codes) const {
    constexpr const char* what = "yaqa::e8p::quantize";
    detail::check_quantize_args<1, 8>(what, target, row0, p.rows(), recon, codes);
    detail::e8p_quantize_rows(what, target, p.scale, row0, recon, codes,
                              [](const T* u) { return detail::e8p_nearest<T>(u); },
                              [](code_type c) { return detail::e8p_decode<T>(c); });
  }

  [[nodiscard]] matrix<T> reconstruct(matrix_view<const code_type> codes, const params_type& p,
                                      index row0) const {
    detail::check_reconstruct_args("yaqa::e8p::reconstruct", codes.rows, 1, row0, p.rows());
    return detail::e8p_reconstruct_rows<T>(codes, p.scale, row0, [](code_type c) { return detail::e8p_decode<T>(c); });
  }

  //! Exact bits of a rows x cols matrix: 2 bits per weight plus the scales (16 bits per row and
  //! group, or 32 per group with per_matrix).
  [[nodiscard]] std::size_t storage_bits(index rows, index cols) const {
    const auto groups = detail::group_count(cols, group_cols(cols));
    return static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols) * 2 +
           detail::e8p_scale_bits(opt_.scales, rows, groups);
  }

  //! The codeword of a code, in codebook units.
  [[nodiscard]] static std::array<T, 8> codeword(code_type code) { return detail::e8p_decode<T>(code); }
  //! The code of the codeword nearest to u (codebook units).
  [[nodiscard]] static code_type nearest(const std::array<T, 8>& u) {
    return detail::e8p_nearest<T>(u.data());
  }

 private:
  e8p_options opt_;
};

}  // namespace yaqa
