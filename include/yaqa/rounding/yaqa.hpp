#pragma once
//! \file
//! YAQA two-sided rounding: minimizes tr(dW H_in dW^T H_out) with feedback from both Kronecker
//! factors, What = Q(W + L_out'^T dW L_in' + L_out'^T dW + dW L_in') over td_x x td_y tiles.
#include <yaqa/rounding/sweep.hpp>

namespace yaqa {

struct yaqa_options {
  index tile_rows = 16;  //!< td_x: output rows per tile; must divide m; L_out's block size
  index tile_cols = 16;  //!< td_y: input columns per tile; must divide n; L_in's block size
  yaqa_ordering ordering = yaqa_ordering::automatic;
};

//! Two-sided rounding of w (m x n). l_in (n x n) and l_out (m x m) are the unit
//! block-lower-triangular factors of block_ldl(H_in, td_y) and block_ldl(H_out, td_x); only
//! their strictly-block-lower parts are read. Parameters are fitted per group from w up front.
//! An empty l_out means H_out = I (then this is exactly ldlq with tiles td_x x td_y).
template <Backend B, Quantizer Q>
  requires accessible_from<B, host_space>
rounded<Q> yaqa_round(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w,
                      matrix_view<const scalar_of<Q>> l_in, matrix_view<const scalar_of<Q>> l_out,
                      const yaqa_options& opt = {}) {
  const index g = detail::checked_group_cols("yaqa::yaqa_round", q, w.rows, w.cols);
  detail::check_sweep_inputs<Q>("yaqa::yaqa_round", w, l_in, l_out, opt.tile_rows, opt.tile_cols);
  return yaqa_round(b, q, w, l_in, l_out, opt, detail::fit_groups(q, w, g));
}

//! yaqa_round with the given parameters (one per group, e.g. a learned grid) instead of fitting
//! them from w. `residual` (optional) receives the m x n quantization residual R = L_out^T (W -
//! What) L_in, tile by tile (see detail::row_sweep): tr(dW H_in dW^T H_out) = tr(R D_in R^T D_out).
template <Backend B, Quantizer Q>
  requires accessible_from<B, host_space>
rounded<Q> yaqa_round(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w,
                      matrix_view<const scalar_of<Q>> l_in, matrix_view<const scalar_of<Q>> l_out,
                      const yaqa_options& opt, std::vector<typename Q::params_type> params,
                      matrix<scalar_of<Q>>* residual = nullptr) {
  const index m = w.rows, n = w.cols;
  const index g = detail::checked_group_cols("yaqa::yaqa_round", q, m, n);
  detail::check_sweep_inputs<Q>("yaqa::yaqa_round", w, l_in, l_out, opt.tile_rows, opt.tile_cols);
  detail::check_param_count("yaqa::yaqa_round", params.size(), n / g);
  const B be = detail::pin_threads(b);
  auto r = detail::make_rounded<Q>(m, n);
  r.params = std::move(params);
  const bool use_wavefront =
      opt.ordering == yaqa_ordering::wavefront ||
      (opt.ordering == yaqa_ordering::automatic && quantizer_with<Q, batched_tiles>);
  if (use_wavefront)
    detail::wavefront(be, q, r, g, w, l_in, l_out, opt.tile_rows, opt.tile_cols, residual);
  else
    detail::row_sweep(be, q, r, g, w, l_in, l_out, detail::make_sweep_shape(opt.tile_rows, opt.tile_cols), residual);
  return r;
}

template <Quantizer Q>
rounded<Q> yaqa_round(const Q& q, matrix_view<const scalar_of<Q>> w, matrix_view<const scalar_of<Q>> l_in,
                      matrix_view<const scalar_of<Q>> l_out, const yaqa_options& opt = {}) {
  return yaqa_round(default_backend{}, q, w, l_in, l_out, opt);
}

}  // namespace yaqa
