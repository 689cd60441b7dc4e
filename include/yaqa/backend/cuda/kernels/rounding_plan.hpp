#pragma once
//! \file
//! The device rounding algorithms with the CUDA left out: step drivers, pointer and index
//! arithmetic, and the per-element / per-row bodies of the kernels (YAQA_HD). The kernels in
//! rounding.cuh and gptq.cuh are grid-stride loops around these bodies, and the drivers call an
//! executor for each launch and each cuBLAS call. The CPU test tests/rounding/test_device_plan.cpp
//! runs the same drivers with a host executor (plain loops, a column-major batched GEMM with
//! cuBLAS's argument meaning) and compares with the CPU algorithms, so the geometry of the device
//! code is checked on every CI run, with or without a GPU.
//!
//! YAQA / LDLQ wavefront (the efficient ordering of rounding/sweep.hpp):
//!   tiles (a, k) of td_x x td_y with d = (M-1-a) + (N-1-k) equal are independent; for
//!   d = 0 .. M+N-2 (M+N-1 steps), every tile of the anti-diagonal d at once:
//!     R[a,k] = L_out[rows below a, a]^T E[rows below a, k]             (batched GEMM 1)
//!     F[a,k] = E'[a, cols right of k] L_in[cols right of k, k]          (batched GEMM 2)
//!     target = (W[a,k] + R) + F,  What[a,k] = Q(target)                  (one kernel)
//!     E[a,k] = W - What,  E'[a,k] = (W + R) - What
//! E and E' start at zero and stay zero on tiles not yet rounded, so all GEMMs of a step share
//! one inner dimension: the strip of tile (a, k) may start at the first row (column) any tile of
//! the step needs; the extra rows multiply tiles that are still zero (exact zeros, provided L_in
//! and L_out are finite everywhere).
//!
//! GPTQ (rounding/gptq.hpp's blocked loop): for each block of `block` columns, lazily fitted
//! groups first (on the host, from the current W), then one thread per row runs the block's
//! columns (quantize, error e = (w - q) / U_cc, rank-1 update of the block's remaining columns),
//! then one GEMM W[:, i2:] -= Err U[i1:i2, i2:].
#include <algorithm>
#include <cstdint>

#include <yaqa/backend/cuda/kernels/device_math.hpp>
#include <yaqa/backend/cuda/kernels/e8p_math.hpp>

namespace yaqa::cuda::detail {

// ---------------------------------------------------------------------------------------------
// Wavefront

//! The tiling of an m x n layer into td_x x td_y tiles.
struct wave_geometry {
  index m, n, tdx, tdy;
  index M, N;  // tiles per column / row
  index cap;   // most tiles in one step: min(M, N)
  index tile;  // elements per tile
  bool two;    // two-sided (L_out given)
};

inline wave_geometry make_wave_geometry(index m, index n, index tdx, index tdy, bool two) {
  const index M = m / tdx, N = n / tdy;
  return {m, n, tdx, tdy, M, N, std::min(M, N), tdx * tdy, two};
}

//! Geometry of one anti-diagonal step (host-computed, passed by value to the kernels).
struct wave_step {
  index d;     // step number
  index a_lo;  // first tile row of the step (tile t has a = a_lo + t, k = k_of(a))
  index nt;    // tiles in the step
  index M, N;  // tiles per column / row of the layer
  index tdx, tdy;
  index rs;    // first row of the output-feedback strips (K_out = m - rs)
  index cs;    // first column of the input-feedback strips (K_in = n - cs)
  bool use_r;  // output feedback this step (two-sided and K_out > 0)
  bool use_f;  // input feedback this step (K_in > 0)
  YAQA_HD index k_of(index a) const { return (N - 1 - d) + (M - 1 - a); }
};

inline wave_step make_wave_step(const wave_geometry& g, index d) {
  wave_step s{};
  s.d = d;
  s.M = g.M;
  s.N = g.N;
  s.tdx = g.tdx;
  s.tdy = g.tdy;
  s.a_lo = std::max<index>(0, g.M - 1 - d);
  const index a_hi = std::min<index>(g.M - 1, g.M + g.N - 2 - d);
  s.nt = a_hi - s.a_lo + 1;
  s.rs = (s.a_lo + 1) * g.tdx;        // rows below the highest tile of the step
  s.cs = (s.k_of(a_hi) + 1) * g.tdy;  // columns right of the leftmost tile of the step
  s.use_r = g.two && g.m - s.rs > 0;
  s.use_f = g.n - s.cs > 0;
  return s;
}

//! The operands of the wavefront (device memory on the device, host memory in the CPU test).
//! Codes are one per quantizer unit: codes(row, col / unit).
template <class T, class Code = std::uint8_t>
struct wave_buffers {
  const T* w; index ldw;
  const T* lin; index ldli;
  const T* lout; index ldlo;  // nullptr: one-sided
  T* e; index lde;            // W - What (two-sided only)
  T* ep; index ldep;          // W' - What
  T* what; index ldwh;
  Code* codes; index ldc;
  T* r;                       // cap tiles of td_x x td_y (GEMM 1 results), contiguous, ld td_x
  T* f;                       // cap tiles (GEMM 2 results)
};

//! The pointer arrays of a step's two batched GEMMs: ptrs = [A_out | B_out | A_in | B_in], cap
//! entries each; cptrs = [C_out | C_in]. Entry t is tile t of the step.
template <class T, class Code>
YAQA_HD inline void wave_tile_pointers(const wave_step& s, const wave_buffers<T, Code>& bf, index cap, index t,
                                       const T** ptrs, T** cptrs) {
  const index a = s.a_lo + t, k = s.k_of(a);
  const index a0 = a * s.tdx, k0 = k * s.tdy, tile = s.tdx * s.tdy;
  if (bf.lout) {
    ptrs[t] = bf.lout + s.rs + a0 * bf.ldlo;    // K_out x td_x, used transposed
    ptrs[cap + t] = bf.e + s.rs + k0 * bf.lde;  // K_out x td_y
    cptrs[t] = bf.r + t * tile;
  }
  ptrs[2 * cap + t] = bf.ep + a0 + s.cs * bf.ldep;   // td_x x K_in
  ptrs[3 * cap + t] = bf.lin + s.cs + k0 * bf.ldli;  // K_in x td_y
  cptrs[cap + t] = bf.f + t * tile;
}

//! A quantizer as a wavefront unit policy: `unit` consecutive columns of one row are quantized
//! together; operator()(x, recon, row, col0, code) quantizes x[0 .. unit) and returns false when
//! a target was not finite. grid_unit is int_grid (unit 1); e8p_unit (e8p_math.hpp) is E8P.
template <class T>
struct grid_unit {
  using code_type = std::uint8_t;
  static constexpr index unit = 1;
  grid_args<T> g;
  YAQA_HD bool operator()(const T* x, T* recon, index row, index col0, code_type& code) const {
    bool ok = true;
    recon[0] = grid_quantize(g, x[0], row, col0, code, ok);
    return ok;
  }
};

//! Unit u (0 <= u < nt * tile / unit) of a step: targets, quantize, What, code, E, E'.
//! Units run down the rows of a tile first (tile-local unit u: row u % td_x, columns
//! unit * (u / td_x) + [0, unit)). Returns false when a target was not finite.
template <class T, class DQ>
YAQA_HD inline bool wave_quantize_unit(const wave_step& s, const wave_buffers<T, typename DQ::code_type>& bf,
                                       const DQ& dq, index u) {
  constexpr index U = DQ::unit;
  const index tile = s.tdx * s.tdy, per_tile = tile / U;
  const index t = u / per_tile, rem = u % per_tile, i = rem % s.tdx, j0 = (rem / s.tdx) * U;
  const index a = s.a_lo + t, k = s.k_of(a);
  const index row = a * s.tdx + i, col0 = k * s.tdy + j0;
  T x[U], base[U], target[U], recon[U];
  for (index v = 0; v < U; ++v) {
    const index e = t * tile + i + (j0 + v) * s.tdx;  // position in the step's R / F tiles
    x[v] = bf.w[row + (col0 + v) * bf.ldw];
    base[v] = s.use_r ? add_rn(x[v], bf.r[e]) : x[v];            // W + R (CPU: W + rr)
    target[v] = s.use_f ? add_rn(base[v], bf.f[e]) : base[v];   // + E' L_in strip
  }
  typename DQ::code_type c{};
  const bool ok = dq(target, recon, row, col0, c);
  bf.codes[row + (col0 / U) * bf.ldc] = c;
  for (index v = 0; v < U; ++v) {
    const index col = col0 + v;
    bf.what[row + col * bf.ldwh] = recon[v];
    if (bf.lout) bf.e[row + col * bf.lde] = sub_rn(x[v], recon[v]);
    bf.ep[row + col * bf.ldep] = sub_rn(base[v], recon[v]);
  }
  return ok;
}

//! One cublas<t>gemmBatched call, C_i = op(A_i) B_i (alpha 1, beta 0, B not transposed): the
//! pointers are entries [a_slot, a_slot + count) of ptrs (A), [b_slot, ...) of ptrs (B) and
//! [c_slot, ...) of cptrs (C); column-major with the given leading dimensions.
struct batched_gemm_call {
  bool trans_a;
  index m, n, k;
  index a_slot, lda, b_slot, ldb, c_slot, ldc;
  index count;
};

//! The M+N-1 steps. Exec provides
//!   pointers(step)             fill ptrs / cptrs for the step's tiles (wave_tile_pointers)
//!   gemm(batched_gemm_call)    one batched GEMM
//!   quantize(step)             every unit of the step (wave_quantize_unit)
template <class T, class Code, class Exec>
void run_wavefront(const wave_geometry& g, const wave_buffers<T, Code>& bf, Exec& ex) {
  for (index d = 0; d <= g.M + g.N - 2; ++d) {
    const wave_step s = make_wave_step(g, d);
    ex.pointers(s);
    if (s.use_r)  // R = L_out(rs:m, a)^T E(rs:m, k)
      ex.gemm(batched_gemm_call{true, g.tdx, g.tdy, g.m - s.rs, 0, std::max<index>(bf.ldlo, 1), g.cap,
                                bf.lde, 0, g.tdx, s.nt});
    if (s.use_f)  // F = E'(a, cs:n) L_in(cs:n, k)
      ex.gemm(batched_gemm_call{false, g.tdx, g.tdy, g.n - s.cs, 2 * g.cap, bf.ldep, 3 * g.cap, bf.ldli,
                                g.cap, g.tdx, s.nt});
    ex.quantize(s);
  }
}

// ---------------------------------------------------------------------------------------------
// GPTQ

//! The operands of the device GPTQ loop (W is updated in place: its block columns become the
//! GPTQ working copy, its later columns receive the block GEMMs).
template <class T>
struct gptq_buffers {
  T* w; index ldw;
  const T* u; index ldu;           // upper Cholesky factor of H^{-1} (n x n)
  T* q; index ldq;                 // dequantized result
  std::uint8_t* codes; index ldc;
  T* err; index lderr;             // m x block: (w - q) / U_cc of the block's columns
  const index* group_of_col;       // the parameter group of every column (n entries)
  double* row_loss;                // m entries, accumulated
};

//! Row `row` of the block [i1, i1 + count): the inner loop of rounding/gptq.hpp, operation for
//! operation (the CPU's e = (w - q) / d, w_j -= e * U_cj unfused). Returns false when a target
//! was not finite.
template <class T>
YAQA_HD inline bool gptq_row_block(const gptq_buffers<T>& bf, const grid_args<T>& g, index row, index i1,
                                   index count) {
  bool all_ok = true;
  double loss = 0;
  T* w = bf.w + row;
  for (index i = 0; i < count; ++i) {
    const index col = i1 + i;
    const T x = w[col * bf.ldw];
    bool ok = true;
    std::uint8_t c = 0;
    const T recon = grid_quantize_group(g, x, row, bf.group_of_col[col], c, ok);
    all_ok = all_ok && ok;
    bf.q[row + col * bf.ldq] = recon;
    bf.codes[row + col * bf.ldc] = c;
    const T d = bf.u[col + col * bf.ldu];
    const T diff = sub_rn(x, recon);
    const T e = div_rn(diff, d);
    loss += double(diff) * double(diff) / (double(d) * double(d)) / 2;
    const T* urow = bf.u + col;  // U(col, j) at urow[j * ldu]
    for (index j = col + 1; j < i1 + count; ++j)
      w[j * bf.ldw] = sub_rn(w[j * bf.ldw], mul_rn(e, urow[j * bf.ldu]));
    bf.err[row + i * bf.lderr] = e;
  }
  bf.row_loss[row] += loss;
  return all_ok;
}

//! The blocked column loop. Exec provides
//!   fit_group(group, first_col)   lazy groups: fit from the current W[:, first_col : + g]
//!   round_block(i1, count)        every row (gptq_row_block)
//!   update(i1, count, i2)         W[:, i2:] -= Err[:, :count] U[i1:i2, i2:]
template <class Exec>
void run_gptq(index n, index block, index group_cols, bool lazy, Exec& ex) {
  for (index i1 = 0; i1 < n; i1 += block) {
    const index i2 = std::min(n, i1 + block), count = i2 - i1;
    if (lazy)  // groups starting in this block, fitted from the global W (reference quirk)
      for (index c = (i1 + group_cols - 1) / group_cols * group_cols; c < i2; c += group_cols)
        ex.fit_group(c / group_cols, c);
    ex.round_block(i1, count);
    if (i2 < n) ex.update(i1, count, i2);
  }
}

}  // namespace yaqa::cuda::detail
