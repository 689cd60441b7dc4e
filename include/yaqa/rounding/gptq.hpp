#pragma once
//! \file
//! GPTQ with the reference semantics of the original implementation (IST-DASLab/gptq, described
//! in peers.md §2.1): dead columns, damping (1 % of the mean diagonal, with the library's ladder
//! on failure), optional act-order (descending diag H) with un-permutation, per-channel or
//! group-wise parameters fitted lazily on the first column of a group (from the globally updated
//! W, i.e. without the updates made inside the current 128-column block — the reference quirk)
//! or up front ("static groups"), lazy batches of 128 columns, and the loss sum (w-q)^2/d^2/2.
//! The quantizer sees one column (m x 1) at a time.
#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/linalg/block_ldl.hpp>
#include <yaqa/linalg/damping.hpp>
#include <yaqa/rounding/common.hpp>
#include <yaqa/rounding/rtn.hpp>

namespace yaqa {

struct gptq_options {
  index block = 128;           //!< lazy batch width (the reference's blocksize)
  bool act_order = false;      //!< process columns by descending diag(H)
  bool static_groups = false;  //!< fit every group up front from the original W
  damping_options damping{};   //!< sigma = GPTQ's percdamp (0.01), with the retry ladder
};

template <Quantizer Q>
struct gptq_result : rounded<Q> {
  double loss = 0;            //!< sum over columns of |w - q|^2 / d^2 / 2 (the reference's "error")
  double damp = 0;            //!< absolute damp added to the diagonal of H
  int attempts = 0;           //!< factorization attempts
  std::vector<index> dead;    //!< dead input columns (diag H == 0): H_ii = 1, W[:, i] = 0
  std::vector<index> perm;    //!< act-order permutation (empty without act-order)
  bool feedback = true;       //!< false: every damp failed; rounded without feedback (RTN)
  std::string failure;        //!< why, when feedback is false
};

namespace detail {

//! GPTQ's U (upper triangular) by lazy batches: panel k holds rows [k b, k b + count) of U from
//! column k b on, column-major (count x (n - k b)). Nothing left of a panel's diagonal block is
//! kept, so U takes about n^2/2 entries instead of n^2 (at n = 11008: 0.24 instead of 0.48 GB).
template <Scalar T>
struct gptq_panels {
  index block = 1;
  std::vector<matrix<T>> p;
  gptq_panels() = default;
  gptq_panels(index n, index b) : block(b) {
    for (index i1 = 0; i1 < n; i1 += b) p.push_back(matrix<T>::Zero(std::min(b, n - i1), n - i1));
  }
  //! The panel of the lazy batch starting at column i1 (a multiple of the block).
  [[nodiscard]] const matrix<T>& at(index i1) const { return p[static_cast<std::size_t>(i1 / block)]; }
  //! U(i, j) for i <= j.
  T& operator()(index i, index j) { return p[static_cast<std::size_t>(i / block)](i % block, j - i / block * block); }
};

//! GPTQ's work before and after the column loop, shared by the CPU loop below and the device
//! loop (yaqa::cuda::gptq): dead columns, parameters fitted up front (static / per channel),
//! act-order permutation and the inverse factor U; afterwards the un-permutation.
template <Quantizer Q>
struct gptq_setup {
  using T = scalar_of<Q>;
  gptq_result<Q> res;                          // dead, perm, damp, attempts, feedback, failure
  matrix<T> W;                                 // dead columns zeroed, act-order permuted
  matrix<T> U;                                 // dense upper Cholesky factor of H^{-1} (device loop)
  gptq_panels<T> Up;                           // the same U by lazy batches (CPU loop)
  std::vector<typename Q::params_type> params; // all groups (lazy: sized, fitted by the loop)
  index g = 0;                                 // columns per group
  bool lazy = false;                           // groups fitted inside the loop
  //! The parameter group of each (permuted) column.
  [[nodiscard]] index group_of(index col) const {
    return (!lazy && !res.perm.empty()) ? res.perm[static_cast<std::size_t>(col)] / g : col / g;
  }
};

//! How gptq_prepare hands over U: dense n x n (the device loop copies it whole) or by panels.
enum class gptq_u_layout { dense, panels };

//! Lower triangle of J (H' + damp I) J into a, where H' is h with the dead diagonal entries set to
//! 1 and rows and columns permuted by `perm` (empty: none), J the index reversal: the matrix the
//! reference forms explicitly (an fp64 copy of H, then a permuted one), read from h directly.
template <class T>
void gptq_load(const cpu_backend& cb, matrix_view<const T> h, const std::vector<index>& perm,
               const std::vector<char>& dead, matrix<double>& a, double damp) {
  const index n = h.rows;
  if (perm.empty()) {
    load_damped(cb, h, a, damp, true);
    for (index i = 0; i < n; ++i)
      if (dead[static_cast<std::size_t>(i)]) a(n - 1 - i, n - 1 - i) = 1.0 + damp;
    return;
  }
  // a(i, j) = H(perm[n-1-j], perm[n-1-i]) for i >= j. Strips of 16 rows of a: a strip reads 16
  // columns of H at permuted rows (a few hundred KB, cache-resident) and writes 16 contiguous
  // doubles of each column of a, instead of walking rows of H across the whole matrix.
  parallel_chunks(cb, n, 16, [&](index i0, index ih) {
    for (index j = 0; j < i0 + ih; ++j) {
      const T* row = h.data + perm[static_cast<std::size_t>(n - 1 - j)];
      for (index i = std::max(i0, j); i < i0 + ih; ++i)
        a(i, j) = double(row[perm[static_cast<std::size_t>(n - 1 - i)] * h.ld]);
    }
    for (index i = i0; i < i0 + ih; ++i)
      a(i, i) = (dead[static_cast<std::size_t>(perm[static_cast<std::size_t>(n - 1 - i)])] ? 1.0 : a(i, i)) + damp;
  });
}

template <Backend B, Quantizer Q>
gptq_setup<Q> gptq_prepare(const char* what, const B& be, const Q& q, matrix_view<const scalar_of<Q>> w,
                           matrix_view<const scalar_of<Q>> h, const gptq_options& opt,
                           const std::vector<typename Q::params_type>* preset = nullptr,
                           gptq_u_layout layout = gptq_u_layout::dense) {
  using T = scalar_of<Q>;
  const index m = w.rows, n = w.cols;
  check_shape(what, "H", h, n, n);
  static_assert(Q::unit_cols == 1 && Q::unit_rows == 1, "yaqa::gptq hands the quantizer single columns: it needs a scalar quantizer (unit 1x1) (use ldlq/yaqa_round for vector or tile quantizers)");
  gptq_setup<Q> s;
  s.g = detail::checked_group_cols(what, q, m, n);
  detail::require(opt.block >= 1, what, ": option 'block' must be >= 1, got ", opt.block);
  check_finite(what, "W", w);
  check_finite(what, "H", h);
  gptq_result<Q>& res = s.res;
  const cpu_backend host = detail::host_loops(be);

  // Dead columns (diag H == 0): H_ii = 1 and W[:, i] = 0, as the reference does.
  std::vector<char> dead(static_cast<std::size_t>(n), 0);
  for (index i = 0; i < n; ++i)
    if (h(i, i) == 0) {
      res.dead.push_back(i);
      dead[static_cast<std::size_t>(i)] = 1;
    }
  const auto diag = [&](index i) { return dead[static_cast<std::size_t>(i)] ? 1.0 : double(h(i, i)); };
  // act-order: descending diag(H) (stable, as torch.argsort on a CPU tensor of distinct values;
  // ties keep index order).
  if (opt.act_order) {
    res.perm.resize(static_cast<std::size_t>(n));
    std::iota(res.perm.begin(), res.perm.end(), index{0});
    std::stable_sort(res.perm.begin(), res.perm.end(), [&](index a, index c) { return diag(a) > diag(c); });
  }
  const auto pdiag = [&](index i) { return diag(res.perm.empty() ? i : res.perm[static_cast<std::size_t>(i)]); };

  // The inverse factor first, while neither W's copy nor the parameters are held (peak memory).
  // Damping from the mean diagonal summed in the permuted order, as the reference's H[diag].
  constexpr const char* fwhat = "yaqa::gptq_inverse_factor";
  detail::check_damping_options(fwhat, opt.damping);
  detail::factor_scan st;
  for (index i = 0; i < n; ++i) {
    st.mean_diag += pdiag(i);
    st.max_abs_diag = std::max(st.max_abs_diag, std::abs(pdiag(i)));
  }
  if (n > 0) st.mean_diag /= double(n);
  if (layout == gptq_u_layout::dense)
    s.U = matrix<T>::Zero(n, n);
  else
    s.Up = gptq_panels<T>(n, opt.block);
  if (n > 0 && !(st.mean_diag > 0)) {
    const failure f = detail::no_scale(fwhat, st, n);
    res.feedback = false;
    res.failure = f.reason;
    res.attempts = f.attempts;
    res.damp = f.last_damp;
  } else if (n > 0) {
    const auto load = [&](matrix<double>& a, double damp) { gptq_load(host, h, res.perm, dead, a, damp); };
    const auto sched = damping_schedule(st.mean_diag, st.max_abs_diag, opt.damping);
    const detail::ladder_outcome o =
        layout == gptq_u_layout::dense
            ? detail::gptq_factor_columns(be, n, sched, load, gptq_store<T>([&](index i, index j) -> T& { return s.U(i, j); }))
            : detail::gptq_factor_columns(be, n, sched, load, gptq_store<T>([&](index i, index j) -> T& { return s.Up(i, j); }));
    res.damp = o.damp;
    res.attempts = o.attempts;
    if (!o.ok) {
      // Never a crash and never NaN: round without feedback with the same parameters.
      res.feedback = false;
      res.failure = detail::ladder_failure(fwhat, n, o, st.mean_diag, true).reason;
    }
  }
  if (!res.feedback) {  // U = I (a failed attempt may have left entries behind)
    if (layout == gptq_u_layout::dense) {
      s.U.setIdentity();
    } else {
      for (auto& pk : s.Up.p) pk.setZero();
      for (index i = 0; i < n; ++i) s.Up(i, i) = T(1);
    }
  }

  // W: dead columns zeroed; parameters fitted from it before the permutation.
  s.W = as_eigen(w);
  for (index i : res.dead) s.W.col(i).setZero();
  // A joint_fit quantizer fits its groups together (GGUF super-blocks): always up front.
  s.lazy = !opt.static_groups && !joint_fit<Q> && s.g != n && preset == nullptr;
  if (preset) {  // given parameters (a learned grid): static-group semantics
    check_param_count(what, preset->size(), n / s.g);
    s.params = *preset;
  } else if (!s.lazy) {
    s.params = detail::fit_groups(q, view(std::as_const(s.W)), s.g);  // static / per channel
  } else {
    s.params.resize(static_cast<std::size_t>(n / s.g));
  }
  if (!res.perm.empty()) {
    matrix<T> Wp(m, n);
    for (index j = 0; j < n; ++j) Wp.col(j) = s.W.col(res.perm[static_cast<std::size_t>(j)]);
    s.W.swap(Wp);
  }
  return s;
}

//! Moves the loop's results (permuted order) into the result, un-permuting them.
template <Quantizer Q>
gptq_result<Q> gptq_finish(gptq_setup<Q>&& s, matrix<scalar_of<Q>>&& Qm, matrix<typename Q::code_type>&& codes) {
  gptq_result<Q> res = std::move(s.res);
  const index m = Qm.rows(), n = Qm.cols();
  res.params = std::move(s.params);
  if (!res.perm.empty()) {
    res.weights.resize(m, n);
    res.codes.resize(m, n);
    for (index j = 0; j < n; ++j) {
      res.weights.col(res.perm[j]) = Qm.col(j);
      res.codes.col(res.perm[j]) = codes.col(j);
    }
    if (s.lazy) {
      res.group_index.resize(static_cast<std::size_t>(n));
      for (index j = 0; j < n; ++j) res.group_index[static_cast<std::size_t>(res.perm[j])] = j / s.g;
    }
  } else {
    res.weights = std::move(Qm);
    res.codes = std::move(codes);
  }
  return res;
}

}  // namespace detail

namespace detail {

template <Backend B, Quantizer Q>
gptq_result<Q> gptq_run(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w, matrix_view<const scalar_of<Q>> h,
                        const gptq_options& opt, const std::vector<typename Q::params_type>* preset) {
  using T = scalar_of<Q>;
  using code_t = typename Q::code_type;
  const index m = w.rows, n = w.cols;
  const B be = detail::pin_threads(b);
  const cpu_backend host = detail::host_backend(be);
  auto s = detail::gptq_prepare("yaqa::gptq", be, q, w, h, opt, preset, gptq_u_layout::panels);
  // W's columns become the quantized weights once their lazy batch is done (each batch reads
  // W[:, i1:i2] once, into w1, before it writes them): no second m x n matrix.
  matrix<T>& W = s.W;
  const index g = s.g;

  matrix<code_t> codes(m, n);
  const index rows = detail::round_up_to(detail::chunk_width(m), Q::unit_rows);
  const index nchunks = (m + rows - 1) / rows;
  std::vector<double> chunk_loss(static_cast<std::size_t>(nchunks), 0.0);
  matrix<T> err(m, std::min(opt.block, n));
  for (index i1 = 0; i1 < n; i1 += opt.block) {
    const index i2 = std::min(n, i1 + opt.block), count = i2 - i1;
    const matrix<T>& U = s.Up.at(i1);  // rows i1..i2 of U, from column i1 on
    if (s.lazy)  // groups starting in this block, fitted from the global W (reference quirk)
      for (index c = (i1 + g - 1) / g * g; c < i2; c += g)
        s.params[static_cast<std::size_t>(c / g)] = q.fit(view(std::as_const(W)).col_block(c, g));
    detail::parallel_chunks(host, m, rows, [&](index r0, index h_rows) {
      matrix<T> w1 = W.block(r0, i1, h_rows, count);
      matrix<T> qc(h_rows, 1);
      double loss = 0;
      for (index i = 0; i < count; ++i) {
        const index col = i1 + i;
        auto cv = view(codes).block(r0, col, h_rows, 1);
        q.quantize(view(std::as_const(w1)).col_block(i, 1), s.params[static_cast<std::size_t>(s.group_of(col))], r0,
                   view(qc), cv);
        W.block(r0, col, h_rows, 1) = qc;
        const T d = U(i, i);
        const auto e = ((w1.col(i) - qc.col(0)) / d).eval();
        loss += double((w1.col(i) - qc.col(0)).squaredNorm()) / (double(d) * double(d)) / 2;
        if (i + 1 < count) w1.rightCols(count - i - 1).noalias() -= e * U.row(i).segment(i + 1, count - i - 1);
        err.block(r0, i, h_rows, 1) = e;
      }
      chunk_loss[static_cast<std::size_t>(r0 / rows)] += loss;
    });
    if (i2 < n)  // W[:, i2:] -= Err1 * U[i1:i2, i2:]: one GEMM per block
      backend_ops<B>::template gemm<T>(be, trans::none, trans::none, T(-1), view(std::as_const(err)).col_block(0, count),
                                       view(U).col_block(count, n - i2), T(1), view(W).col_block(i2, n - i2));
  }
  for (double l : chunk_loss) s.res.loss += l;
  matrix<T> Qm = std::move(s.W);
  return detail::gptq_finish(std::move(s), std::move(Qm), std::move(codes));
}

}  // namespace detail

//! GPTQ on w (m x n) with the n x n Hessian h (e.g. X^T X; it need not be normalized).
template <Backend B, Quantizer Q>
  requires accessible_from<B, host_space>
gptq_result<Q> gptq(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w,
                    matrix_view<const scalar_of<Q>> h, const gptq_options& opt = {}) {
  return detail::gptq_run(b, q, w, h, opt, nullptr);
}

//! GPTQ with the given parameters (one per group, e.g. a learned grid), used as static groups
//! (option static_groups is implied).
template <Backend B, Quantizer Q>
  requires accessible_from<B, host_space>
gptq_result<Q> gptq(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w, matrix_view<const scalar_of<Q>> h,
                    const gptq_options& opt, const std::vector<typename Q::params_type>& params) {
  return detail::gptq_run(b, q, w, h, opt, &params);
}

template <Quantizer Q>
gptq_result<Q> gptq(const Q& q, matrix_view<const scalar_of<Q>> w, matrix_view<const scalar_of<Q>> h,
                    const gptq_options& opt = {}) {
  return gptq(default_backend{}, q, w, h, opt);
}

}  // namespace yaqa
