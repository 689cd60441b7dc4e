#pragma once
//! \file
//! The engine behind LDLQ and YAQA: two orderings of the same feedback rule
//!
//!   T[a,k] = W[a,k] + sum_{b>a} L_out'[b,a]^T E[b,k] + sum_{j>k} E[a,j] L_in'[j,k]
//!                   + sum_{b>a} sum_{j>k} L_out'[b,a]^T E[b,j] L_in'[j,k],   What[a,k] = Q(T[a,k])
//!
//! over td_x x td_y tiles (a: row block of output channels, k: column block of inputs),
//! E = W - What, L' = L - I strictly block-lower (docs/rounding.md, yaqa-algorithm.md §3.2-3.4).
//! Without L_out this is one-sided block LDLQ.
//!
//! - blocked row sweep: rows are processed in super-blocks of ~128 rows from the bottom; each gets
//!   its output correction from all rows below in ONE GEMM; inside, column super-blocks of ~128
//!   columns are processed from the right, each getting its input feedback from all columns to
//!   its right in ONE GEMM (GPTQ-style lazy batch); only the ~128 x 128 interior is done tile by
//!   tile. >90 % of the mn(m+n) flops run in large GEMMs.
//! - efficient wavefront: M+N-1 anti-diagonal steps, all tiles of a step independent (quantized
//!   in parallel, or in one batched call), each built from two thin strips. For expensive,
//!   batchable quantizers (trellis/Viterbi, GPU).
//! Both read L only strictly below its td x td diagonal blocks, so L (from block_ldl with the
//! tile size as block) can be passed as is.
#include <algorithm>
#include <vector>

#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/rounding/common.hpp>

namespace yaqa {

//! How the two-sided rounding visits the tiles (both give the same result).
enum class yaqa_ordering {
  automatic,  //!< wavefront for quantizers with the batched_tiles property, else row sweep
  row_sweep,  //!< blocked row-block sweep (cheap quantizers, CPU)
  wavefront,  //!< efficient wavefront, M+N-1 parallel/batched quantizer steps
};

namespace detail {

struct sweep_shape {
  index tile_rows;   // td_x
  index tile_cols;   // td_y
  index super_rows;  // multiple of td_x
  index super_cols;  // multiple of td_y
};

inline sweep_shape make_sweep_shape(index td_x, index td_y) {
  return {td_x, td_y, round_up_to(std::max<index>(128, td_x), td_x),
          round_up_to(std::max<index>(128, td_y), td_y)};
}

//! Blocked row sweep. l_out may be empty (one-sided LDLQ). `r` holds params and receives the
//! weights and codes; `residual` (optional, resized to m x n) receives T - What tile by tile,
//! which equals L_out^T (W - What) L_in (L = I + L'), so tr(dW H_in dW^T H_out) =
//! tr(R D_in R^T D_out) costs O(m n td) instead of two GEMMs (the layer report uses it).
template <class B, Quantizer Q>
void row_sweep(const B& b, const Q& q, rounded<Q>& r, index g, matrix_view<const scalar_of<Q>> w,
               matrix_view<const scalar_of<Q>> l_in, matrix_view<const scalar_of<Q>> l_out,
               const sweep_shape& sh, matrix<scalar_of<Q>>* residual = nullptr) {
  using T = scalar_of<Q>;
  using ops = backend_ops<B>;
  const index m = w.rows, n = w.cols, tdx = sh.tile_rows, tdy = sh.tile_cols;
  const bool two_sided = !l_out.empty();
  const auto W = as_eigen(w);
  const auto Lin = as_eigen(l_in);
  const auto Lout = as_eigen(l_out);
  auto What = as_eigen(view(r.weights));
  auto codes = view(r.codes);

  matrix<T> E;  // original error W - What of finished rows (output feedback only)
  if (two_sided) E.setZero(m, n);
  matrix<T> wpp(sh.super_rows, n);     // W'' = W + output correction, rows of the super-block
  matrix<T> etil(sh.super_rows, n);    // E~ = W'' - What
  matrix<T> p(sh.super_rows, sh.super_cols);  // input feedback from columns right of the block
  matrix<T> tile(tdx, tdy), recon(tdx, tdy);
  if (residual) residual->resize(m, n);

  const index n_super_rows = (m + sh.super_rows - 1) / sh.super_rows;
  const index n_super_cols = (n + sh.super_cols - 1) / sh.super_cols;
  for (index sr = n_super_rows - 1; sr >= 0; --sr) {
    const index r0 = sr * sh.super_rows, r1 = std::min(m, r0 + sh.super_rows), nr = r1 - r0;
    auto Wpp = wpp.topRows(nr);
    auto Et = etil.topRows(nr);
    Wpp = W.middleRows(r0, nr);
    if (two_sided && r1 < m)  // output correction from every row below: one GEMM
      ops::template gemm<T>(b, trans::transpose, trans::none, T(1), l_out.block(r1, r0, m - r1, nr),
                            view(std::as_const(E)).block(r1, 0, m - r1, n), T(1), view(wpp).row_block(0, nr));
    for (index sc = n_super_cols - 1; sc >= 0; --sc) {
      const index c0 = sc * sh.super_cols, c1 = std::min(n, c0 + sh.super_cols), nc = c1 - c0;
      auto P = p.block(0, 0, nr, nc);
      if (c1 < n)  // input feedback from every column to the right: one GEMM
        ops::template gemm<T>(b, trans::none, trans::none, T(1), view(std::as_const(etil)).block(0, c1, nr, n - c1),
                              l_in.block(c1, c0, n - c1, nc), T(0), view(p).block(0, 0, nr, nc));
      else
        P.setZero();
      serial_eigen_scope serial;  // the interior is small: plain Eigen, one thread
      for (index a1 = r1; a1 > r0; a1 -= tdx) {
        const index a0 = a1 - tdx, la = a0 - r0;
        if (two_sided && a1 < r1)  // output correction from the rows below inside the block
          Wpp.block(la, c0, tdx, nc).noalias() +=
              Lout.block(a1, a0, r1 - a1, tdx).transpose() * E.block(a1, c0, r1 - a1, nc);
        for (index k1 = c1; k1 > c0; k1 -= tdy) {
          const index k0 = k1 - tdy;
          tile = Wpp.block(la, k0, tdx, tdy) + P.block(la, k0 - c0, tdx, tdy);
          if (k1 < c1)
            tile.noalias() += Et.block(la, k1, tdx, c1 - k1) * Lin.block(k1, k0, c1 - k1, tdy);
          quantize_region(q, r, g, view(std::as_const(tile)), a0, k0, view(recon), codes);
          What.block(a0, k0, tdx, tdy) = recon;
          if (residual) residual->block(a0, k0, tdx, tdy) = tile - recon;
          Et.block(la, k0, tdx, tdy) = Wpp.block(la, k0, tdx, tdy) - recon;
          if (two_sided) E.block(a0, k0, tdx, tdy) = W.block(a0, k0, tdx, tdy) - recon;
        }
      }
    }
  }
}

//! Efficient wavefront: tiles with equal (M-1-a) + (N-1-k) are independent. `residual` as in
//! row_sweep.
template <class B, Quantizer Q>
void wavefront(const B& b, const Q& q, rounded<Q>& r, index g, matrix_view<const scalar_of<Q>> w,
               matrix_view<const scalar_of<Q>> l_in, matrix_view<const scalar_of<Q>> l_out,
               index tdx, index tdy, matrix<scalar_of<Q>>* residual = nullptr) {
  using T = scalar_of<Q>;
  const index m = w.rows, n = w.cols, M = m / tdx, N = n / tdy;
  const bool two_sided = !l_out.empty();
  const auto W = as_eigen(w);
  const auto Lin = as_eigen(l_in);
  const auto Lout = as_eigen(l_out);
  auto What = as_eigen(view(r.weights));
  auto codes = view(r.codes);
  matrix<T> E = matrix<T>::Zero(m, n);   // W - What
  matrix<T> Ep = matrix<T>::Zero(m, n);  // W' - What, W' = W + output correction
  if (residual) residual->resize(m, n);
  const cpu_backend host = host_backend(b);
  std::vector<std::pair<index, index>> tiles;
  for (index d = 0; d <= M + N - 2; ++d) {
    tiles.clear();
    for (index a = M - 1; a >= 0; --a) {
      const index k = (N - 1) - (d - (M - 1 - a));
      if (k >= 0 && k < N) tiles.emplace_back(a, k);
    }
    parallel_chunks(host, static_cast<index>(tiles.size()), 1, [&](index t, index) {
      const auto [a, k] = tiles[static_cast<std::size_t>(t)];
      const index a0 = a * tdx, a1 = a0 + tdx, k0 = k * tdy, k1 = k0 + tdy;
      matrix<T> rr = matrix<T>::Zero(tdx, tdy), tile(tdx, tdy), recon(tdx, tdy);
      if (two_sided && a1 < m)
        rr.noalias() += Lout.block(a1, a0, m - a1, tdx).transpose() * E.block(a1, k0, m - a1, tdy);
      tile = W.block(a0, k0, tdx, tdy) + rr;
      if (k1 < n) tile.noalias() += Ep.block(a0, k1, tdx, n - k1) * Lin.block(k1, k0, n - k1, tdy);
      quantize_region(q, r, g, view(std::as_const(tile)), a0, k0, view(recon), codes);
      What.block(a0, k0, tdx, tdy) = recon;
      if (residual) residual->block(a0, k0, tdx, tdy) = tile - recon;
      E.block(a0, k0, tdx, tdy) = W.block(a0, k0, tdx, tdy) - recon;
      Ep.block(a0, k0, tdx, tdy) = W.block(a0, k0, tdx, tdy) + rr - recon;
    });
  }
}

//! Shape and finiteness checks shared by ldlq and yaqa_round.
template <Quantizer Q>
void check_sweep_inputs(const char* what, matrix_view<const scalar_of<Q>> w,
                        matrix_view<const scalar_of<Q>> l_in, matrix_view<const scalar_of<Q>> l_out,
                        index tdx, index tdy) {
  const index m = w.rows, n = w.cols;
  check_shape(what, "L_in", l_in, n, n);
  if (!l_out.empty()) check_shape(what, "L_out", l_out, m, m);
  require<invalid_argument>(tdx >= 1 && tdy >= 1, what, ": tile sizes must be positive, got td_x = ",
                            tdx, ", td_y = ", tdy);
  require<shape_error>(m % tdx == 0, what, ": tile rows td_x = ", tdx,
                       " must divide the number of output rows m = ", m);
  require<shape_error>(n % tdy == 0, what, ": tile columns td_y = ", tdy,
                       " must divide the number of input columns n = ", n);
  require<invalid_argument>(tdx % Q::unit_rows == 0 && tdy % Q::unit_cols == 0, what, ": the tile ",
                            tdx, "x", tdy, " must be a multiple of the quantizer's unit ",
                            Q::unit_rows, "x", Q::unit_cols);
  check_finite(what, "W", w);
  check_finite(what, "L_in", l_in);
  if (!l_out.empty()) check_finite(what, "L_out", l_out);
}

}  // namespace detail
}  // namespace yaqa
