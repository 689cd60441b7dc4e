#pragma once
//! \file
//! Block LDL of a Hessian factor (spec §3.1 steps 4-5) and GPTQ's inverse Cholesky factor.
//!
//! block_ldl: H = L D L^T with L unit block-lower-triangular (its b x b diagonal blocks are exactly
//! I) and D block diagonal. Computed from the lower Cholesky factor H = C C^T:
//!     D_k = C_kk C_kk^T,   L = C blockdiag(C_kk)^{-1}   (diagonal blocks forced to exactly I).
//! Cost: n^3/3 (Cholesky) + n^2 b / 2 (forming L) + n b^2 (forming D). Memory: the n x n fp64
//! work matrix (it becomes L for double input) plus the outputs L (n x n) and D (its n b block
//! entries, block_diagonal.hpp) in T.
//!
//! Block size rule: any b >= 1. Blocks are [0, b), [b, 2b), ...; when b does not divide n the LAST
//! block is the remainder (n mod b). b >= n gives one block (L = I, D = H). b <= 0 throws
//! invalid_argument.
//!
//! Precision: always fp64 inside (the spec factors in fp64): a float H is cast in, factored and the
//! factors cast out. Only the lower triangle of H is read (it must be symmetric).
//!
//! Failure: a factorization fails when a Cholesky pivot is not positive or when L or D has a
//! non-finite entry. The routines then return a `failure` (core/result.hpp) whose reason names
//! the routine, the matrix size, the attempts and the last damp — never an exception, never NaN.
//! Exceptions are for programming errors only (non-square H: shape_error; b <= 0 or bad damping
//! options: invalid_argument).
#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include <yaqa/backend/backend.hpp>
#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/core/concepts.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/core/result.hpp>
#include <yaqa/linalg/block_diagonal.hpp>
#include <yaqa/linalg/damping.hpp>

namespace yaqa {

//! The factors of H + damp I = L D L^T.
template <Scalar T>
struct ldl_factors {
  matrix<T> L;        //!< n x n unit block-lower-triangular (diagonal blocks exactly I)
  block_diagonal<T> D;  //!< n x n block diagonal, stored as its b x b diagonal blocks
  index block = 1;    //!< b; the last block has n mod b rows when b does not divide n
  double damp = 0;    //!< absolute amount added to the diagonal of the input H
  int attempts = 1;   //!< factorization attempts (1 = no retry; 0 for an empty matrix)
};

//! GPTQ's inverse factor: U upper triangular with U^T U = (H + damp I)^{-1}.
template <Scalar T>
struct gptq_factor {
  matrix<T> U;
  double damp = 0;
  int attempts = 1;
};

namespace detail {

//! The CPU backend to run host-side loops on: B itself when it is the CPU backend, else the default.
template <class B>
cpu_backend host_loops(const B& b) {
  if constexpr (std::is_same_v<B, cpu_backend>)
    return b;
  else
    return cpu_backend{};
}

//! What a factorization needs to know about its input before trying.
struct factor_scan {
  bool finite = true;
  index bad_row = -1, bad_col = -1;
  bool bad_is_nan = false;
  double mean_diag = 0;
  double max_abs_diag = 0;
};

template <class T>
factor_scan scan_factor(const cpu_backend& cb, matrix_view<const T> h) {
  factor_scan s;
  const index n = h.rows;
  // Vectorized and by column chunks in parallel (a serial scalar scan was 3 % of a factorization);
  // the first chunk with a NaN/Inf holds the first one in column-major order.
  const index w = chunk_width(n);
  std::vector<std::pair<index, index>> bad(static_cast<std::size_t>((n + w - 1) / w), {-1, -1});
  parallel_chunks(cb, n, w, [&](index c0, index cw) {
    const auto [i, j] = first_non_finite(matrix_view<const T>(h.data + c0 * h.ld, h.rows, cw, h.ld));
    if (i >= 0) bad[static_cast<std::size_t>(c0 / w)] = {i, c0 + j};
  });
  for (const auto& [i, j] : bad)
    if (i >= 0) {
      s.finite = false;
      s.bad_row = i;
      s.bad_col = j;
      s.bad_is_nan = std::isnan(h(i, j));
      return s;
    }
  if (n == 0) return s;
  double sum = 0;
  for (index i = 0; i < n; ++i) {
    sum += double(h(i, i));
    s.max_abs_diag = std::max(s.max_abs_diag, std::abs(double(h(i, i))));
  }
  s.mean_diag = sum / double(n);
  return s;
}

//! a <- lower triangle of (H + damp I) in fp64, optionally index-reversed (a = J (H + damp I) J).
//! The strict upper triangle of `a` is left as whatever it was (potrf never reads it).
template <class T>
void load_damped(const cpu_backend& cb, matrix_view<const T> h, matrix<double>& a, double damp,
                 bool reversed) {
  const index n = h.rows;
  parallel_chunks(cb, n, chunk_width(n), [&](index c0, index w) {
    if (!reversed) {
      for (index j = c0; j < c0 + w; ++j)
        for (index i = j; i < n; ++i) a(i, j) = double(h(i, j));
    } else {
      // a(i, j) = h(n-1-j, n-1-i) for i >= j (read from H's lower triangle): a transposed copy,
      // done in 64 x 64 tiles so neither side walks across thousands of pages per element.
      constexpr index t = 64;
      for (index j0 = c0; j0 < c0 + w; j0 += t) {
        const index j1 = std::min(c0 + w, j0 + t);
        for (index i0 = j0; i0 < n; i0 += t) {
          const index i1 = std::min(n, i0 + t);
          for (index i = i0; i < i1; ++i) {
            const T* src = h.data + (n - 1 - i) * h.ld;  // column n-1-i of H
            for (index j = j0; j < std::min(j1, i + 1); ++j) a(i, j) = double(src[n - 1 - j]);
          }
        }
      }
    }
    for (index j = c0; j < c0 + w; ++j) a(j, j) += damp;
  });
}

//! Given the lower Cholesky factor C in `a` (strict upper arbitrary), overwrites `a` with L and
//! sets `d[k]` to the k-th diagonal block of D (D itself is assembled by the caller, in the output
//! type, so no n x n fp64 D is ever held). Returns 0, or -1 when L or D has a non-finite entry.
inline index form_block_ldl(const cpu_backend& cb, matrix<double>& a, std::vector<matrix<double>>& d,
                            index block) {
  const index n = a.rows();
  const index nblocks = (n + block - 1) / block;
  std::vector<matrix<double>> ckk(static_cast<std::size_t>(nblocks));
  d.assign(static_cast<std::size_t>(nblocks), matrix<double>());
  bool finite = true;
  for (index k = 0; k < nblocks; ++k) {
    const index s = k * block, bs = std::min(block, n - s);
    matrix<double>& c = ckk[static_cast<std::size_t>(k)];
    c = a.block(s, s, bs, bs).triangularView<Eigen::Lower>();
    matrix<double>& dk = d[static_cast<std::size_t>(k)];
    dk.noalias() = c * c.transpose();
    dk.triangularView<Eigen::StrictlyUpper>() = dk.transpose();  // exactly symmetric
    finite = finite && dk.allFinite();
  }
  if (!finite) return -1;
  // L[i, block k] = C[i, block k] C_kk^{-1} for the rows below block k. Row chunks are independent
  // (each row of L depends only on the same row of C), so the split is free of races. Each solved
  // piece is checked for NaN/Inf while it is in cache (a separate pass over L cost as much as the
  // solves); nothing above the diagonal blocks is written or read (an in-place factorization keeps
  // its copy of H in the strict upper triangle until the ladder succeeds).
  const index w = chunk_width(n);
  std::vector<char> ok(static_cast<std::size_t>((n + w - 1) / w), 1);
  parallel_chunks(cb, n, w, [&](index r0, index h) {
    bool good = true;
    for (index k = 0; k < nblocks; ++k) {
      const index s = k * block, e = std::min(n, s + block);
      if (e >= r0 + h) break;
      const index i0 = std::max(r0, e);
      auto blk = a.block(i0, s, r0 + h - i0, e - s);
      ckk[static_cast<std::size_t>(k)].triangularView<Eigen::Lower>().solveInPlace<Eigen::OnTheRight>(blk);
      for (index j = 0; j < blk.cols(); ++j) good = good && !any_non_finite(&blk(0, j), blk.rows());
    }
    ok[static_cast<std::size_t>(r0 / w)] = good;
  });
  for (char g : ok)
    if (!g) return -1;
  return 0;
}

//! After form_block_ldl succeeded: diagonal blocks -> I, strict upper triangle -> 0.
inline void finish_block_ldl(const cpu_backend& cb, matrix<double>& a, index block) {
  const index n = a.rows();
  parallel_chunks(cb, n, chunk_width(n), [&](index c0, index cw) {
    for (index j = c0; j < c0 + cw; ++j) {
      const index e = std::min(n, (j / block + 1) * block);
      a.col(j).head(e).setZero();
      a(j, j) = 1.0;
    }
  });
}

//! Copies the strict lower triangle of `a` onto the strict upper one (to_upper) or back, in
//! 64-column strips (each strip's pairs touch only its own rows of the target triangle).
inline void mirror_triangle(const cpu_backend& cb, matrix<double>& a, bool to_upper) {
  const index n = a.rows();
  constexpr index t = 64;
  parallel_chunks(cb, n, t, [&](index j0, index jw) {
    for (index i0 = j0; i0 < n; i0 += t) {
      const index i1 = std::min(n, i0 + t);
      for (index j = j0; j < j0 + jw; ++j)
        for (index i = std::max(i0, j + 1); i < i1; ++i) {
          if (to_upper)
            a(j, i) = a(i, j);
          else
            a(i, j) = a(j, i);
        }
    }
  });
}

//! The columns of K^{-1} for lower-triangular K (fp64, n^3/3 flops), handed to
//! `store(c, col)` (col(r) = K^{-1}(r, c) for r >= c) and never held whole: column chunk
//! [c0, c0 + w) of K^{-1} is zero above row c0 and, below it, solves the trailing triangle against
//! the identity in a buffer of its own. `store` returns false for a non-finite entry; so does this.
template <class Store>
bool lower_inverse_columns(const cpu_backend& cb, const matrix<double>& k, Store&& store) {
  const index n = k.rows();
  const index w = chunk_width(n);
  std::vector<char> ok(static_cast<std::size_t>((n + w - 1) / w), 1);
  parallel_chunks(cb, n, w, [&](index c0, index cw) {
    matrix<double> low = matrix<double>::Zero(n - c0, cw);
    low.topRows(cw).setIdentity();
    k.block(c0, c0, n - c0, n - c0).triangularView<Eigen::Lower>().solveInPlace(low);
    bool good = true;
    for (index c = 0; c < cw; ++c)
      good = store(c0 + c, [&](index r) { return low(r - c0, c); }) && good;
    ok[static_cast<std::size_t>(c0 / w)] = good;
  });
  return std::all_of(ok.begin(), ok.end(), [](char g) { return g != 0; });
}

//! A gptq_factor_columns store that writes column j of U through at(i, j) (a T&), in T, and
//! reports whether every entry was finite.
template <class T, class At>
auto gptq_store(At at) {
  return [at](index j, auto&& col) {
    bool good = true;
    for (index i = 0; i <= j; ++i) {
      const double v = col(i);
      good = good && std::isfinite(v);
      at(i, j) = T(v);
    }
    return good;
  };
}

//! GPTQ's inverse factor column by column (see gptq_inverse_factor): the damping ladder over
//! J (H + damp I) J = K K^T, then U = J K^{-1} J. `load(a, damp)` writes the lower triangle of
//! J (H + damp I) J into a; `store(j, u)` receives column j of U (u(i) = U(i, j) for i <= j) and
//! returns false when an entry is not finite (the ladder then tries the next damp). Peak fp64
//! memory: K alone (n^2) plus one solve buffer per thread; U is stored by the caller, in its type.
template <Backend B, class Load, class Store>
ladder_outcome gptq_factor_columns(const B& b, index n, const std::vector<double>& schedule, Load&& load,
                                   Store&& store) {
  const cpu_backend cb = host_loops(b);
  matrix<double> a(n, n);
  return run_ladder(schedule, [&](double damp) -> index {
    load(a, damp);
    const index info = backend_ops<B>::potrf_lower(b, matrix_view<double>(a.data(), n, n, n));
    if (info != 0) return n - info + 1;  // pivot of reversed column info-1 = original n-info
    // K^{-1}(r, c) = U(n-1-r, n-1-c): column c of K^{-1} is column n-1-c of U, reversed
    const bool finite = lower_inverse_columns(cb, a, [&](index c, auto&& x) {
      return store(n - 1 - c, [&](index i) { return x(n - 1 - i); });
    });
    return finite ? 0 : -1;
  });
}

template <class B>
void check_host_backend() {
  static_assert(accessible_from<B, host_space>,
                "yaqa linalg factorizations take host views: use a backend whose memory space is "
                "host_space (e.g. cpu_backend)");
}

template <class T>
failure non_finite_input(const char* what, const factor_scan& s, index n) {
  return failure{concat(what, ": argument 'H' (", n, "x", n, ") contains ",
                        s.bad_is_nan ? "NaN" : "Inf", " at (", s.bad_row, ", ", s.bad_col,
                        "); expected finite values (nothing was factored; normalize_factor rejects "
                        "such a factor with non_finite_error)"),
                 -1, 0.0, 0};
}

inline failure no_scale(const char* what, const factor_scan& s, index n) {
  return failure{concat(what, ": argument 'H' (", n, "x", n, ") has mean diagonal ", s.mean_diag,
                        "; expected > 0: the damping is relative to the mean diagonal, so an all-zero "
                        "or indefinite-trace factor cannot be damped (nothing was factored; "
                        "normalize_factor replaces such a factor by I)"),
                 -1, 0.0, 0};
}

inline failure ladder_failure(const char* what, index n, const ladder_outcome& o, double mean,
                              bool damped) {
  std::string why =
      o.last_non_finite
          ? std::string("the factors had a non-finite entry")
          : concat("the Cholesky pivot of column ", o.failed_column, " was not positive");
  if (!damped)
    return failure{concat(what, ": argument 'H' (", n, "x", n, ") is not positive definite: ", why,
                          " (no damping was applied; damped_block_ldl retries with a damping ladder)"),
                   o.failed_column, o.damp, o.attempts};
  return failure{concat(what, ": argument 'H' (", n, "x", n, ") could not be factored after ",
                        o.attempts, " damping attempts; last damp ", o.damp, " (",
                        o.damp / mean, " x mean diagonal ", mean, "): ", why),
                 o.failed_column, o.damp, o.attempts};
}

//! The damping ladder over the work matrix `a`: `reload(damp, attempt)` puts the lower triangle
//! of H + damp I into `a`, then Cholesky and the block LDL are formed there.
template <class B, class Reload>
ladder_outcome ldl_ladder(const B& b, const cpu_backend& cb, matrix<double>& a, index block,
                          const std::vector<double>& schedule, std::vector<matrix<double>>& dblocks, Reload&& reload) {
  const index n = a.rows();
  int attempt = 0;
  return run_ladder(schedule, [&](double damp) -> index {
    reload(damp, attempt++);
    const index info = backend_ops<B>::potrf_lower(b, matrix_view<double>(a.data(), n, n, n));
    if (info != 0) return info;
    return form_block_ldl(cb, a, dblocks, block);
  });
}

template <class T>
ldl_factors<T> make_factors(matrix<double>&& a, std::vector<matrix<double>>&& dblocks, index block,
                            const ladder_outcome& o) {
  const index n = a.rows();
  ldl_factors<T> f;
  if constexpr (std::is_same_v<T, double>)
    f.L = std::move(a);
  else
    f.L = a.cast<T>();
  std::vector<matrix<T>> dk(dblocks.size());
  for (std::size_t k = 0; k < dblocks.size(); ++k) {
    if constexpr (std::is_same_v<T, double>)
      dk[k] = std::move(dblocks[k]);
    else
      dk[k] = dblocks[k].cast<T>();
  }
  f.D = block_diagonal<T>(n, block, std::move(dk));
  f.block = block;
  f.damp = o.damp;
  f.attempts = o.attempts;
  return f;
}

//! Shared argument checks and the schedule; returns a failure (or an empty success) to return
//! early, or nullopt to go on.
template <class B, class T>
std::optional<result<ldl_factors<T>>> ldl_prologue(const cpu_backend& cb, matrix_view<const T> h, index block, const damping_options* opts,
                                                   const char* what, std::vector<double>& schedule, factor_scan& st) {
  check_host_backend<B>();
  detail::require<shape_error>(h.rows == h.cols, what, ": argument 'H' must be square, got ", h.rows,
                               "x", h.cols);
  detail::require(block >= 1, what, ": argument 'block' must be >= 1, got ", block);
  if (opts) check_damping_options(what, *opts);
  const index n = h.rows;
  if (n == 0) return ldl_factors<T>{matrix<T>(0, 0), block_diagonal<T>(0, block, {}), block, 0.0, 0};
  st = scan_factor(cb, h);
  if (!st.finite) return result<ldl_factors<T>>(non_finite_input<T>(what, st, n));
  schedule = {0.0};
  if (opts) {
    if (!(st.mean_diag > 0)) return result<ldl_factors<T>>(no_scale(what, st, n));
    schedule = damping_schedule(st.mean_diag, st.max_abs_diag, *opts);
  }
  return std::nullopt;
}

template <class B, class T>
result<ldl_factors<T>> block_ldl_impl(const B& b, matrix_view<const T> h, index block,
                                      const damping_options* opts, const char* what) {
  std::vector<double> schedule;
  factor_scan st;
  const cpu_backend cb = host_loops(b);
  if (auto early = ldl_prologue<B>(cb, h, block, opts, what, schedule, st)) return std::move(*early);
  const index n = h.rows;
  matrix<double> a(n, n);
  std::vector<matrix<double>> dblocks;
  const ladder_outcome o =
      ldl_ladder(b, cb, a, block, schedule, dblocks, [&](double damp, int) { load_damped(cb, h, a, damp, false); });
  if (!o.ok) return ladder_failure(what, n, o, st.mean_diag, opts != nullptr);
  finish_block_ldl(cb, a, block);
  return make_factors<T>(std::move(a), std::move(dblocks), block, o);
}

//! In place: `h` (symmetric; its lower triangle is what counts) is the work matrix. Its strict
//! upper triangle keeps H for the retries and its diagonal is saved; on failure h is restored.
template <class B>
result<ldl_factors<double>> block_ldl_in_place_impl(const B& b, matrix<double>& h, index block,
                                                    const damping_options* opts, const char* what) {
  std::vector<double> schedule;
  factor_scan st;
  const cpu_backend cb = host_loops(b);
  if (auto early = ldl_prologue<B>(cb, matrix_view<const double>(h.data(), h.rows(), h.cols(), std::max<index>(1, h.rows())),
                                   block, opts, what, schedule, st))
    return std::move(*early);
  const index n = h.rows();
  mirror_triangle(cb, h, true);  // upper := lower: every attempt reads the lower triangle, as load_damped does
  const vector<double> diag = h.diagonal();
  std::vector<matrix<double>> dblocks;
  const ladder_outcome o = ldl_ladder(b, cb, h, block, schedule, dblocks, [&](double damp, int attempt) {
    if (attempt > 0) mirror_triangle(cb, h, false);
    h.diagonal() = diag.array() + damp;
  });
  if (!o.ok) {
    mirror_triangle(cb, h, false);
    h.diagonal() = diag;
    return ladder_failure(what, n, o, st.mean_diag, opts != nullptr);
  }
  finish_block_ldl(cb, h, block);
  return make_factors<double>(std::move(h), std::move(dblocks), block, o);
}

}  // namespace detail

//! Block LDL of H (n x n, symmetric positive definite) with b x b blocks, no damping: one attempt.
//! A failure when H is not (numerically) positive definite. See the file comment for the block rule.
template <Backend B, Scalar T>
result<ldl_factors<T>> block_ldl(const B& b, matrix_view<const T> h, index block) {
  return detail::block_ldl_impl(b, h, block, nullptr, "yaqa::block_ldl");
}
template <Scalar T>
result<ldl_factors<T>> block_ldl(matrix_view<const T> h, index block) {
  return block_ldl(default_backend{}, h, block);
}
template <Backend B, Scalar T>
result<ldl_factors<T>> block_ldl(const B& b, matrix_view<T> h, index block) {
  return block_ldl(b, matrix_view<const T>(h), block);
}
template <Scalar T>
result<ldl_factors<T>> block_ldl(matrix_view<T> h, index block) {
  return block_ldl(default_backend{}, matrix_view<const T>(h), block);
}

//! Block LDL of H + damp I with the damping ladder (damping.hpp): the first attempt already adds
//! sigma * mean(diag H), and the damp grows until L and D are finite and the Cholesky succeeds.
//! Outcomes, by input:
//! - SPD or positive semi-definite (singular, rank-deficient): success, usually at attempt 1.
//! - Slightly indefinite (min eigenvalue > -max damp): success after a few attempts.
//! - Strongly indefinite: a failure after max_steps + floor_steps attempts (reason: size, last damp).
//! - Mean diagonal <= 0 (e.g. all zero): a failure, attempts = 0 (nothing to scale the damp by).
//! - NaN / Inf anywhere: a failure, attempts = 0 (normalize_factor throws for it earlier).
template <Backend B, Scalar T>
result<ldl_factors<T>> damped_block_ldl(const B& b, matrix_view<const T> h, index block,
                                        const damping_options& opts = {}) {
  return detail::block_ldl_impl(b, h, block, &opts, "yaqa::damped_block_ldl");
}
template <Scalar T>
result<ldl_factors<T>> damped_block_ldl(matrix_view<const T> h, index block,
                                        const damping_options& opts = {}) {
  return damped_block_ldl(default_backend{}, h, block, opts);
}
template <Backend B, Scalar T>
result<ldl_factors<T>> damped_block_ldl(const B& b, matrix_view<T> h, index block,
                                        const damping_options& opts = {}) {
  return damped_block_ldl(b, matrix_view<const T>(h), block, opts);
}
template <Scalar T>
result<ldl_factors<T>> damped_block_ldl(matrix_view<T> h, index block,
                                        const damping_options& opts = {}) {
  return damped_block_ldl(default_backend{}, matrix_view<const T>(h), block, opts);
}

//! damped_block_ldl on a matrix it may overwrite: no second n x n fp64 copy (at n = 28672 that
//! copy is 6.6 GB). On success `h` is consumed (its storage becomes L) and left empty. On failure
//! it holds H again: untouched when nothing was factored (NaN/Inf, no positive mean diagonal),
//! else its lower triangle mirrored onto the upper and the diagonal undamped (= h for a symmetric
//! h). Same factors, bit for bit, as damped_block_ldl(b, view(h), ...) on a symmetric h.
template <Backend B>
result<ldl_factors<double>> damped_block_ldl_in_place(const B& b, matrix<double>& h, index block,
                                                      const damping_options& opts = {}) {
  auto r = detail::block_ldl_in_place_impl(b, h, block, &opts, "yaqa::damped_block_ldl");
  if (r) h = matrix<double>();
  return r;
}

//! GPTQ's reference form: U = the upper Cholesky factor of (H + damp I)^{-1}, with
//! damp = sigma * mean(diag H) (GPTQ's percdamp: sigma = 0.01 by default) and the same ladder as
//! damped_block_ldl on failure. Row i of U is GPTQ's update vector for column i and U(i, i) its
//! error scale. Computed without forming the inverse: with J the index reversal and
//! J (H + damp I) J = K K^T (lower Cholesky), U = J K^{-1} J (upper, positive diagonal, and
//! U^T U = J K^{-T} K^{-1} J = (H + damp I)^{-1}); n^3/3 + n^3/3 flops, fp64 inside.
template <Backend B, Scalar T>
result<gptq_factor<T>> gptq_inverse_factor(const B& b, matrix_view<const T> h,
                                           const damping_options& opts = {}) {
  constexpr const char* what = "yaqa::gptq_inverse_factor";
  detail::check_host_backend<B>();
  detail::require<shape_error>(h.rows == h.cols, what, ": argument 'H' must be square, got ", h.rows,
                               "x", h.cols);
  detail::check_damping_options(what, opts);
  const index n = h.rows;
  if (n == 0) return gptq_factor<T>{matrix<T>(0, 0), 0.0, 0};
  const detail::factor_scan st = detail::scan_factor(detail::host_loops(b), h);
  if (!st.finite) return detail::non_finite_input<T>(what, st, n);
  if (!(st.mean_diag > 0)) return detail::no_scale(what, st, n);
  matrix<T> u = matrix<T>::Zero(n, n);
  const detail::ladder_outcome o = detail::gptq_factor_columns(
      b, n, damping_schedule(st.mean_diag, st.max_abs_diag, opts),
      [&](matrix<double>& a, double damp) { detail::load_damped(detail::host_loops(b), h, a, damp, true); },
      detail::gptq_store<T>([&](index i, index j) -> T& { return u(i, j); }));
  if (!o.ok) return detail::ladder_failure(what, n, o, st.mean_diag, true);
  return gptq_factor<T>{std::move(u), o.damp, o.attempts};
}
template <Scalar T>
result<gptq_factor<T>> gptq_inverse_factor(matrix_view<const T> h, const damping_options& opts = {}) {
  return gptq_inverse_factor(default_backend{}, h, opts);
}
template <Backend B, Scalar T>
result<gptq_factor<T>> gptq_inverse_factor(const B& b, matrix_view<T> h,
                                           const damping_options& opts = {}) {
  return gptq_inverse_factor(b, matrix_view<const T>(h), opts);
}
template <Scalar T>
result<gptq_factor<T>> gptq_inverse_factor(matrix_view<T> h, const damping_options& opts = {}) {
  return gptq_inverse_factor(default_backend{}, matrix_view<const T>(h), opts);
}

}  // namespace yaqa
