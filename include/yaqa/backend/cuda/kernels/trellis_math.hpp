#pragma once
//! \file
//! The trellis quantizer (quantizers/trellis.hpp) as kernel bodies and a launch driver, for host
//! and device (YAQA_HD, like device_math.hpp and e8p_math.hpp; see docs/design/device-plans.md).
//! trellis.cuh wraps each body in a grid-stride kernel and each driver call in one launch; the
//! CPU test tests/quantizers/test_trellis_device_plan.cpp runs the same driver and bodies with a
//! host executor and compares them with trellis::quantize / reconstruct.
//!
//! The device algorithm is the CPU's (QTIP's Algorithm 4 on each tile; the bitshift trellis; the
//! same tie rules), laid out for many tiles at once: every array is [tile][...] and every launch
//! covers all tiles of a batch.
//!   load:    u[tile][e] = clamp(target * inv[row]), amp[tile][e] = amp[row], and a per-tile
//!            finiteness flag (inv, amp: per row of the target, trellis_row_factors on the host)
//!   pass 0 (the sequence rotated by half a tile, free) and pass 1 (the original, constrained to
//!   the overlap pass 0 found), each:
//!     start:  cost[tile][s] = err(s, step 0)          (pass 1: +big off the overlap)
//!     step t: for each group r of 2^(L-KV): best = min_h cost[h 2^(L-KV) + r] (first on ties),
//!             bp[tile][t][r] = h, cost'[r 2^KV + c] = best + err(r 2^KV + c, step t)
//!     finish: end state (pass 1: bottom bits == overlap), back-trace; pass 0: overlap
//!   pack:    word w of each tile's stream from its states
//!   recon:   scale[row] * value(state)
//! err is the CPU's weighted error (a u - a v)^2 with a the row's amplitude (s_row / the largest
//! scale of the tile's rows; 1 when they are equal). The errors are rounded operations (sub_rn,
//! mul_rn, add_rn): on the device nothing is fused into an FMA. The CPU kernel lets the compiler
//! contract a u - a v and (.)^2 + c, so the two can choose differently between walks whose costs
//! tie to rounding; the tests allow for that.
#include <cstdint>
#include <limits>
#include <vector>

#include <yaqa/backend/cuda/kernels/device_math.hpp>
#include <yaqa/quantizers/trellis.hpp>

namespace yaqa::cuda::detail {

//! What the bodies need of a trellis quantizer: its geometry, its code, the code's value tables
//! (the Viterbi's err) and the HYB LUT (decoding). Pointers are device pointers on the device.
template <class T>
struct trellis_args {
  int l, k, v, kv, steps;
  trellis_code code;
  const T* v0;   // 2^L values (coordinate 0)
  const T* v1;   // 2^L values (coordinate 1, V = 2), else nullptr
  const T* lut;  // HYB: trellis_hyb::lut_rows x 2, row-major; else nullptr
  YAQA_HD index states() const { return index(1) << l; }
  YAQA_HD index groups() const { return index(1) << (l - kv); }
  YAQA_HD int words() const { return 8 * k; }  // 32-bit words of a stream: 256 K / 32
};

//! The cost of a disallowed state: never chosen, never overflows (as the CPU kernel).
template <class T>
YAQA_HD inline T trellis_big() {
  return std::numeric_limits<T>::max() / T(4);
}

//! Value j of state s from the code's recipe (decoding: no table but HYB's LUT). Equal, bit for
//! bit, to the CPU's tables and trellis::value.
template <class T>
YAQA_HD inline T trellis_value(const trellis_args<T>& a, std::uint32_t s, int j) {
  switch (a.code) {
    case trellis_code::one_mad: return div_rn(static_cast<T>(trellis_1mad::centered_sum(s)), static_cast<T>(147.800537109375));
    case trellis_code::three_inst: return mul_rn(static_cast<T>(trellis_3inst::units(s)), static_cast<T>(1.0 / 8192.0));
    case trellis_code::hyb: return trellis_hyb::value<T>(s, j, a.lut);
  }
  return T(0);
}

//! Weighted squared error of state s against the step's targets: x0 = a0 u0 (x1 = a1 u1 when
//! V = 2), the targets times their amplitudes, as the CPU's (x - a v)^2.
template <class T>
YAQA_HD inline T trellis_err(const trellis_args<T>& a, index s, T x0, T x1, T a0, T a1) {
  const T d0 = sub_rn(x0, mul_rn(a0, a.v0[s]));
  T e = mul_rn(d0, d0);
  if (a.v == 2) {
    const T d1 = sub_rn(x1, mul_rn(a1, a.v1[s]));
    e = add_rn(e, mul_rn(d1, d1));
  }
  return e;
}

//! The target row of element e (row-major in the tile) of tile `tile` (column-major tiles, as
//! the codes matrix, `tile_rows` tile rows).
YAQA_HD inline index trellis_row(index tile_rows, index tile, int e) { return 16 * (tile % tile_rows) + e / 16; }

//! Element e (row-major in the tile) of tile `tile` of a target with `tile_rows` tile rows
//! (column-major tiles, as the codes matrix), in its row's codebook units (inv: the reciprocal of
//! each target row's scale), saturated as on the CPU. ok = the element was finite.
template <class T>
YAQA_HD inline T trellis_load(const T* target, index ld, index tile_rows, index tile, int e, const T* inv, bool& ok) {
  const index row = trellis_row(tile_rows, tile, e), tj = tile / tile_rows;
  const T x = target[row + (16 * tj + e % 16) * ld];
  ok = finite(x);
  const T lim = static_cast<T>(yaqa::detail::trellis_target_limit);
  const T u = mul_rn(x, inv[row]);
  return u < -lim ? -lim : (u > lim ? lim : u);  // std::clamp's order: NaN passes through
}

//! The per-row factors of a target of `rows` rows (a multiple of 16) with scales `scale` (host):
//! [0, rows) the reciprocals (trellis_inverse_scale), [rows, 2 rows) the amplitudes of each row in
//! its tile band (trellis_row_amplitudes), [2 rows, 3 rows) the scales: the numbers the CPU's
//! quantize computes per tile.
template <class T>
std::vector<T> trellis_row_factors(const T* scale, index rows) {
  std::vector<T> f(static_cast<std::size_t>(3 * rows));
  for (index i = 0; i < rows; ++i) {
    f[static_cast<std::size_t>(i)] = yaqa::detail::trellis_inverse_scale(scale[i]);
    f[static_cast<std::size_t>(2 * rows + i)] = scale[i];
  }
  for (index r0 = 0; r0 < rows; r0 += 16)
    (void)yaqa::detail::trellis_row_amplitudes(scale + r0, f.data() + rows + r0);
  return f;
}

//! The target element of step t, coordinate j, of pass 0 (rotated by half a tile) or pass 1.
YAQA_HD inline int trellis_element(int steps, int v, int pass, int t, int j) {
  const int half = steps / 2;
  return pass == 0 ? ((t + half) * v + j) % trellis_tile_weights : t * v + j;
}

//! Target (times its amplitude) and amplitude of step t, coordinate j, of pass `pass` of a tile
//! (ut, at: its 256 targets and amplitudes): x = a u, as the CPU's Viterbi computes it.
template <class T>
YAQA_HD inline void trellis_step_target(const T* ut, const T* at, int steps, int v, int pass, int t, int j, T& x,
                                        T& amp) {
  const int e = trellis_element(steps, v, pass, t, j);
  amp = at[e];
  x = mul_rn(amp, ut[e]);
}

//! Step-0 cost of state s (overlap < 0: free; else only s >> KV == overlap).
template <class T>
YAQA_HD inline T trellis_start(const trellis_args<T>& a, index s, T x0, T x1, T a0, T a1, std::int64_t overlap) {
  const T e = trellis_err(a, s, x0, x1, a0, a1);
  return (overlap < 0 || static_cast<std::int64_t>(s >> a.kv) == overlap) ? e : trellis_big<T>();
}

//! Group r of step t: min over its 2^KV predecessors in cur (strict <: the first on ties), the
//! back pointer, and the new costs of its 2^KV successors.
template <class T>
YAQA_HD inline void trellis_group(const trellis_args<T>& a, const T* cur, T* nxt, std::uint8_t* bpt, index r, T x0,
                                  T x1, T a0, T a1) {
  const index g = a.groups();
  const int ns = 1 << a.kv;
  T best = cur[r];
  int arg = 0;
  for (int h = 1; h < ns; ++h) {
    const T x = cur[h * g + r];
    if (x < best) {
      best = x;
      arg = h;
    }
  }
  bpt[r] = static_cast<std::uint8_t>(arg);
  for (int c = 0; c < ns; ++c) {
    const index s = r * ns + c;
    nxt[s] = add_rn(best, trellis_err(a, s, x0, x1, a0, a1));
  }
}

//! End state (the cheapest, first on ties; with an overlap only those whose bottom L - KV bits
//! are the overlap) and the back-trace through bp ([step][group]). Returns the walk's cost.
template <class T>
YAQA_HD inline T trellis_finish(const trellis_args<T>& a, const T* cost, const std::uint8_t* bp, std::int64_t overlap,
                                std::uint32_t* states) {
  const index g = a.groups();
  index end = 0;
  T end_cost = std::numeric_limits<T>::infinity();
  if (overlap < 0) {
    for (index s = 0; s < a.states(); ++s)
      if (cost[s] < end_cost) {
        end_cost = cost[s];
        end = s;
      }
  } else {
    end = static_cast<index>(overlap);  // kept when every cost is NaN
    for (index h = 0; h < (index(1) << a.kv); ++h) {
      const index s = h * g + static_cast<index>(overlap);
      if (cost[s] < end_cost) {
        end_cost = cost[s];
        end = s;
      }
    }
  }
  states[a.steps - 1] = static_cast<std::uint32_t>(end);
  for (int t = a.steps - 1; t > 0; --t) {
    const std::uint32_t r = states[t] >> a.kv;
    states[t - 1] = (static_cast<std::uint32_t>(bp[t * g + r]) << (a.l - a.kv)) | r;
  }
  return end_cost;
}

//! The overlap pass 0 fixes: the top L - KV bits of the state at the original step 0.
template <class T>
YAQA_HD inline std::int64_t trellis_overlap(const trellis_args<T>& a, const std::uint32_t* states) {
  return static_cast<std::int64_t>(states[a.steps / 2] >> a.kv);
}

//! Word w (< 8 K) of the stream of a tail-biting walk (the layout of trellis_pack).
template <class T>
YAQA_HD inline std::uint32_t trellis_word(const trellis_args<T>& a, const std::uint32_t* states, int w) {
  std::uint32_t word = 0;
  for (int i = 0; i < 32; ++i) {
    const int p = 32 * w + i;
    std::uint32_t bit;
    if (p < a.l) {
      bit = (states[0] >> (a.l - 1 - p)) & 1u;
    } else {
      const int q = p - a.l, t = 1 + q / a.kv, j = q % a.kv;
      bit = (states[t] >> (a.kv - 1 - j)) & 1u;
    }
    word |= bit << (31 - i);
  }
  return word;
}

//! State of step t from a stream's words (the layout of trellis_state_at).
YAQA_HD inline std::uint32_t trellis_state_from_words(const std::uint32_t* words, int l, int kv, int nwords, int t) {
  const int p = t * kv, i = p >> 5, off = p & 31;
  const std::uint64_t w = (static_cast<std::uint64_t>(words[i]) << 32) | words[(i + 1) % nwords];
  return static_cast<std::uint32_t>((w >> (64 - off - l)) & ((std::uint64_t{1} << l) - 1u));
}

//! Element e (row-major in the tile) decoded from the stream: scale * value(state), scale the
//! scale of the element's row.
template <class T>
YAQA_HD inline T trellis_decode(const trellis_args<T>& a, const std::uint32_t* words, T scale, int e) {
  const std::uint32_t s = trellis_state_from_words(words, a.l, a.kv, a.words(), e / a.v);
  return mul_rn(scale, trellis_value(a, s, e % a.v));
}

//! Bytes of device scratch per tile of a batch: two cost vectors, the back pointers, the
//! targets and their amplitudes, the states and the overlap.
template <class T>
index trellis_tile_scratch(const trellis_args<T>& a) {
  return 2 * a.states() * index(sizeof(T)) + a.steps * a.groups() + 2 * trellis_tile_weights * index(sizeof(T)) +
         a.steps * index(sizeof(std::uint32_t)) + index(sizeof(std::int64_t));
}

//! Tiles per batch so the scratch stays within `budget` bytes (at least one).
template <class T>
index trellis_batch_tiles(const trellis_args<T>& a, index tiles, index budget) {
  const index cap = budget / trellis_tile_scratch(a);
  return cap < 1 ? 1 : (cap < tiles ? cap : tiles);
}

//! The launch sequence of one batch: the executor runs each call over every tile of the batch
//! (one kernel on the device, loops on the host): load; per pass start, steps - 1 step calls and
//! finish; pack; recon. 2 steps + 5 launches per batch (517 for V = 1, 261 for V = 2).
template <class Exec>
void run_trellis_batch(int steps, Exec& ex) {
  ex.load();
  for (int pass = 0; pass < 2; ++pass) {
    ex.start(pass);
    for (int t = 1; t < steps; ++t) ex.step(pass, t);
    ex.finish(pass);
  }
  ex.pack();
  ex.recon();
}

//! All `total` tiles of a target, `batch` at a time (trellis_batch_tiles): ex.begin(tile0, nt)
//! then the batch's launch sequence.
template <class Exec>
void run_trellis(int steps, index total, index batch, Exec& ex) {
  for (index tile0 = 0; tile0 < total; tile0 += batch) {
    ex.begin(tile0, total - tile0 < batch ? total - tile0 : batch);
    run_trellis_batch(steps, ex);
  }
}

}  // namespace yaqa::cuda::detail
