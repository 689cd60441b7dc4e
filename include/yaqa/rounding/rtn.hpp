#pragma once
//! \file
//! Round-to-nearest with any quantizer: the baseline every Hessian-aware method must beat.
#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/rounding/common.hpp>

namespace yaqa {

//! Rounds every element of w (m x n) independently with the given parameters (one per group,
//! e.g. a learned grid). Rows are split across threads (fixed partition: bit-identical for any
//! thread count).
template <Backend B, Quantizer Q>
  requires accessible_from<B, host_space>
rounded<Q> rtn(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w,
               std::vector<typename Q::params_type> params) {
  const index m = w.rows, n = w.cols;
  const index g = detail::checked_group_cols("yaqa::rtn", q, m, n);
  detail::check_param_count("yaqa::rtn", params.size(), n / g);
  check_finite("yaqa::rtn", "W", w);
  auto r = detail::make_rounded<Q>(m, n);
  r.params = std::move(params);
  const index rows = (detail::chunk_width(m) + Q::unit_rows - 1) / Q::unit_rows * Q::unit_rows;
  auto recon = view(r.weights);
  auto codes = view(r.codes);
  detail::parallel_chunks(detail::host_backend(b), m, rows, [&](index r0, index h) {
    detail::quantize_region(q, r, g, w.row_block(r0, h), r0, 0, recon.row_block(r0, h), codes);
  });
  return r;
}

//! Round-to-nearest with parameters fitted per group from w.
template <Backend B, Quantizer Q>
  requires accessible_from<B, host_space>
rounded<Q> rtn(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w) {
  const index g = detail::checked_group_cols("yaqa::rtn", q, w.rows, w.cols);
  check_finite("yaqa::rtn", "W", w);
  return rtn(b, q, w, detail::fit_groups(q, w, g));
}

template <Quantizer Q>
rounded<Q> rtn(const Q& q, matrix_view<const scalar_of<Q>> w) {
  return rtn(default_backend{}, q, w);
}

template <Quantizer Q>
rounded<Q> rtn(const Q& q, matrix_view<const scalar_of<Q>> w, std::vector<typename Q::params_type> params) {
  return rtn(default_backend{}, q, w, std::move(params));
}

}  // namespace yaqa
