#pragma once
//! \file
//! One-sided block LDLQ (QuIP#/QTIP): columns processed from the last block to the first,
//! target_k = W_k + (W - What)_{>k} L'_{>k,k}, with L from block_ldl(H_in, block).
#include <yaqa/rounding/sweep.hpp>

namespace yaqa {

//! Rounds w (m x n) with one-sided feedback through l (n x n, unit block-lower-triangular from
//! block_ldl(H, block); only its strictly-block-lower part is read). Parameters are fitted per
//! group from w up front. block must divide n and be a multiple of the quantizer's unit width.
template <Backend B, Quantizer Q>
  requires accessible_from<B, host_space>
rounded<Q> ldlq(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w,
                matrix_view<const scalar_of<Q>> l, index block) {
  const index g = detail::checked_group_cols("yaqa::ldlq", q, w.rows, w.cols);
  detail::check_sweep_inputs<Q>("yaqa::ldlq", w, l, {}, Q::unit_rows, block);
  return ldlq(b, q, w, l, block, detail::fit_groups(q, w, g));
}

//! ldlq with the given parameters (one per group, e.g. a learned grid) instead of fitting them.
//! `residual` (optional) receives R = (W - What) L, so tr(dW H dW^T) = tr(R D R^T).
template <Backend B, Quantizer Q>
  requires accessible_from<B, host_space>
rounded<Q> ldlq(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w,
                matrix_view<const scalar_of<Q>> l, index block, std::vector<typename Q::params_type> params,
                matrix<scalar_of<Q>>* residual = nullptr) {
  const index m = w.rows, n = w.cols;
  const index g = detail::checked_group_cols("yaqa::ldlq", q, m, n);
  detail::check_sweep_inputs<Q>("yaqa::ldlq", w, l, {}, Q::unit_rows, block);
  detail::check_param_count("yaqa::ldlq", params.size(), n / g);
  const B be = detail::pin_threads(b);
  auto r = detail::make_rounded<Q>(m, n);
  r.params = std::move(params);
  // Rows are independent in one-sided LDLQ: tiles as tall as a super-block.
  auto sh = detail::make_sweep_shape(Q::unit_rows, block);
  const index tall = std::min(detail::round_up_to(128, Q::unit_rows), detail::round_up_to(m, Q::unit_rows));
  index tdx = tall;
  while (m % tdx != 0) tdx -= Q::unit_rows;  // largest unit multiple <= 128 dividing m
  sh.tile_rows = tdx;
  sh.super_rows = tdx;
  detail::row_sweep(be, q, r, g, w, l, {}, sh, residual);
  return r;
}

template <Quantizer Q>
rounded<Q> ldlq(const Q& q, matrix_view<const scalar_of<Q>> w, matrix_view<const scalar_of<Q>> l,
                index block) {
  return ldlq(default_backend{}, q, w, l, block);
}

}  // namespace yaqa
