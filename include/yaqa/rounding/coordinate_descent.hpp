#pragma once
//! \file
//! Monotone coordinate descent on the Kronecker proxy (QuantEase, extended to two-sided
//! Hessians): a post-pass over a finished rounding that revisits every quantizer unit with the
//! parameters fixed and keeps a unit's new value only when the proxy strictly decreases.
//!
//!   L(Ŵ) = tr(E H_in Eᵀ H_out),  E = Ŵ − W,  R = H_out E H_in (half the gradient).
//!
//! A unit U (rows I_U x cols J_U) changed by δ changes L by exactly
//!   ΔL = 2 <δ, R_U> + <δ, A δ B>,  A = H_out[I_U, I_U], B = H_in[J_U, J_U].
//! The proposal is the quantizer's answer for the unit's unconstrained minimiser
//! Ŵ_U − A⁺ R_U B⁺ (for a scalar unit: the nearest grid point to the Newton target
//! ŵ_ij − R_ij / (H_out,ii H_in,jj), which is the exact coordinate minimiser on any scalar grid);
//! it is accepted only when ΔL, computed in double from R kept in double, is negative by more
//! than a relative margin of 1e-10 of its two terms. So no sweep increases L (up to the rounding
//! of R in double, far below that margin).
//!
//! Visiting order: the layer is cut into tiles of block_rows x block_cols (the last ones
//! smaller); tiles are visited strip by strip (column blocks left to right), top to bottom inside
//! a strip, and the units of a tile column by column, top to bottom. With H_out = I the rows are
//! independent and the order is QuantEase's column order whatever the block sizes.
//!
//! Cost per sweep: at most 2 m n (m + n) flops in double GEMMs through the backend (per tile:
//! P += H_out[:, I] D_tile; per strip: R += P H_in[S, :]; with H_out = I only R[I, :] +=
//! D_tile H_in[S, :] per tile, 2 m n² flops) plus O(m n (block_rows + block_cols)) inside the
//! tiles and one quantize() call per unit. A tile whose changes cover at most 1/8 (two-sided) or
//! 1/4 (one-sided) of it applies them unit by unit instead (m or n flops per changed entry), and
//! a tile or strip with no change skips its update, so sweeps that change few units (all but
//! the first, typically) cost about 2 m n² (two-sided) or O(changes · n) (one-sided). Computing
//! R once at the start costs 2 m n (m + n) (one-sided: 2 m n²). Memory: R, H_in and H_out in
//! double (m n + n² + m²), two m x n temporaries while R is set up, O(m block_cols) of scratch.
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

#include <Eigen/Eigenvalues>

#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/rounding/common.hpp>

namespace yaqa {

//! Options of coordinate_descent.
struct cd_options {
  index sweeps = 1;      //!< full passes over every unit (>= 0); stops early after a sweep that changes nothing
  index block_rows = 0;  //!< tile height; 0 = 64 rounded up to a multiple of Q::unit_rows
  index block_cols = 0;  //!< tile width (strip); 0 = 128 rounded up to a multiple of Q::unit_cols
};

//! One sweep of coordinate_descent.
struct cd_sweep_report {
  double proxy_before = 0;  //!< tr(E H_in Eᵀ H_out) before the sweep (double, from R)
  double proxy_after = 0;   //!< ... and after it (<= proxy_before)
  index units_changed = 0;  //!< units whose code changed in this sweep
  double seconds = 0;
};

//! What coordinate_descent did. Proxies are absolute values of tr(E H_in Eᵀ H_out) with the
//! symmetric parts of the factors as given (H_out = I for an empty view).
struct cd_report {
  std::vector<cd_sweep_report> sweeps;  //!< one per sweep run (fewer than asked when converged)
  index units = 0;                      //!< units visited per sweep: (m / unit_rows) (n / unit_cols)
  double setup_seconds = 0;             //!< checks, factor copies and the initial R = H_out E H_in
  double seconds = 0;                   //!< everything
  bool converged = false;               //!< the last sweep changed no unit

  [[nodiscard]] index sweeps_run() const { return static_cast<index>(sweeps.size()); }
  [[nodiscard]] index units_changed() const {
    index s = 0;
    for (const auto& w : sweeps) s += w.units_changed;
    return s;
  }
  //! Proxy before the first sweep (NaN when no sweep ran).
  [[nodiscard]] double proxy_before() const {
    return sweeps.empty() ? std::numeric_limits<double>::quiet_NaN() : sweeps.front().proxy_before;
  }
  //! Proxy after the last sweep (NaN when no sweep ran).
  [[nodiscard]] double proxy_after() const {
    return sweeps.empty() ? std::numeric_limits<double>::quiet_NaN() : sweeps.back().proxy_after;
  }
};

namespace detail {

//! A unit's change is kept only when ΔL < -cd_margin * (|2<δ,R>| + |<δ,AδB>|).
inline constexpr double cd_margin = 1e-10;

//! The symmetric part of h in double. Throws unless h is symmetric up to 1e-4 of its largest
//! magnitude (a transposed or unrelated matrix, not rounding).
template <Scalar T>
matrix<double> cd_symmetric_factor(const char* what, const char* name, matrix_view<const T> h) {
  const auto H = as_eigen(h);
  const index n = h.rows;
  matrix<double> s(n, n);
  double big = 0, asym = 0;
  constexpr index nb = 64;  // 64 x 64 blocks: the transposed reads stay in cache
  for (index j0 = 0; j0 < n; j0 += nb)
    for (index i0 = 0; i0 < n; i0 += nb)
      for (index j = j0; j < std::min(n, j0 + nb); ++j)
        for (index i = i0; i < std::min(n, i0 + nb); ++i) {
          const double a = static_cast<double>(H(i, j)), b = static_cast<double>(H(j, i));
          s(i, j) = 0.5 * (a + b);  // exactly symmetric: a + b == b + a
          big = std::max(big, std::abs(a));
          asym = std::max(asym, std::abs(a - b));
        }
  require(asym <= 1e-4 * big, what, ": argument '", name, "' must be symmetric, got |", name, " - ", name,
          "^T| up to ", asym, " (largest |entry| ", big, ")");
  return s;
}

//! Pseudo-inverses of the K x K diagonal blocks of a symmetric h (n x n, K | n), side by side:
//! K x n. Eigenvalues <= 1e-12 of the block's largest (and all of a block with none > 0) are
//! dropped, so a singular or indefinite block gives a partial Newton step, never Inf.
template <int K>
matrix<double> cd_block_pinv(const matrix<double>& h) {
  const index n = h.rows();
  matrix<double> out(K, n);
  for (index b = 0; b < n; b += K) {
    if constexpr (K == 1) {
      const double d = h(b, b);
      out(0, b) = d > 0 ? 1.0 / d : 0.0;
    } else {
      const matrix<double> blk = h.block(b, b, K, K);  // dynamic size: setup only
      Eigen::SelfAdjointEigenSolver<matrix<double>> es(blk);
      const vector<double>& ev = es.eigenvalues();
      double top = ev(0);
      for (int i = 1; i < K; ++i) top = std::max(top, ev(i));
      vector<double> inv(K);
      for (int i = 0; i < K; ++i) inv(i) = (top > 0 && ev(i) > 1e-12 * top) ? 1.0 / ev(i) : 0.0;
      out.block(0, b, K, K) = es.eigenvectors() * inv.asDiagonal() * es.eigenvectors().transpose();
    }
  }
  return out;
}

//! Everything a tile needs, shared read-only between tiles (except r, whose tiles are disjoint).
template <Quantizer Q>
struct cd_context {
  const Q& q;
  rounded<Q>& r;
  index g;                         // group width
  const matrix<double>& hin;       // n x n, exactly symmetric
  const matrix<double>* hout;      // m x m, exactly symmetric; nullptr = identity
  const matrix<double>& binv;      // unit_cols x n: pseudo-inverses of H_in's unit blocks
  const matrix<double>* ainv;      // unit_rows x m: H_out's unit blocks (nullptr without H_out)
};

//! A changed unit of a tile: its offset (row, column) inside the tile; its δ is in the tile's dt.
using cd_moved = std::vector<std::pair<index, index>>;

//! One tile: rows [i0, i0 + hb), columns [s0, s0 + wb). rt (hb x wb) holds R of the tile at the
//! start (all earlier tiles' changes included); dt (hb x wb, zero on entry) receives the changes
//! δ of the units listed in `moved` (in visiting order). Units are visited column by column, top
//! to bottom. Returns the number of units changed.
template <Quantizer Q, class RT, class DT>
index cd_tile(const cd_context<Q>& cx, index i0, index hb, index s0, index wb, RT&& rt, DT&& dt, cd_moved& moved) {
  using T = scalar_of<Q>;
  using code_t = typename Q::code_type;
  constexpr int ur = static_cast<int>(Q::unit_rows), uc = static_cast<int>(Q::unit_cols);
  constexpr bool scalar_unit = ur == 1 && uc == 1;
  using MU = Eigen::Matrix<double, ur, uc>;
  using MA = Eigen::Matrix<double, ur, ur>;
  using MB = Eigen::Matrix<double, uc, uc>;
  auto& wh = cx.r.weights;
  const matrix<double>& hin = cx.hin;
  const matrix<double>* hout = cx.hout;

  matrix<double> wc(hb, uc);  // H_out[I, I] · (changes of the current unit column)
  T tgt[ur * uc], rec[ur * uc];
  code_t code{};
  index changed = 0;
  for (index c = 0; c < wb; c += uc) {
    const index j0 = s0 + c;
    const MB B = hin.template block<uc, uc>(j0, j0);
    const MB Binv = cx.binv.template block<uc, uc>(0, j0);
    const auto& params = cx.r.params[static_cast<std::size_t>(cx.r.group_of(j0, cx.g))];
    bool any = false;
    for (index rr = 0; rr < hb; rr += ur) {
      const index iu = i0 + rr;
      MU R = rt.template block<ur, uc>(rr, c);
      if (any) R.noalias() += wc.template block<ur, uc>(rr, 0) * B;
      MA A, Ainv;
      if (hout) {
        A = hout->template block<ur, ur>(iu, iu);
        Ainv = cx.ainv->template block<ur, ur>(0, iu);
      } else {
        A.setIdentity();
        Ainv.setIdentity();
      }
      const MU step = -(Ainv * R * Binv);
      MU cur;
      bool finite = true;
      for (int b = 0; b < uc; ++b)
        for (int a = 0; a < ur; ++a) {
          cur(a, b) = static_cast<double>(wh(iu + a, j0 + b));
          const T t = static_cast<T>(cur(a, b) + step(a, b));
          finite &= std::isfinite(t);
          tgt[a + b * ur] = t;
        }
      if (!finite) continue;  // a Newton step beyond T's range: no proposal
      cx.q.quantize(matrix_view<const T>(tgt, ur, uc), params, iu, matrix_view<T>(rec, ur, uc),
                    matrix_view<code_t>(&code, 1, 1));
      MU delta;
      bool differs = false;
      for (int b = 0; b < uc; ++b)
        for (int a = 0; a < ur; ++a) {
          delta(a, b) = static_cast<double>(rec[a + b * ur]) - cur(a, b);
          differs |= delta(a, b) != 0;
        }
      if (!differs) continue;
      double lin = 0, quad = 0;  // 2 <δ, R_U> and <δ, A δ B>, in a fixed order
      if constexpr (scalar_unit) {
        lin = 2.0 * delta(0, 0) * R(0, 0);
        quad = A(0, 0) * B(0, 0) * delta(0, 0) * delta(0, 0);
      } else {
        const MU adb = A * delta * B;
        for (int b = 0; b < uc; ++b)
          for (int a = 0; a < ur; ++a) {
            lin += delta(a, b) * R(a, b);
            quad += delta(a, b) * adb(a, b);
          }
        lin *= 2.0;
      }
      if (!(lin + quad < -cd_margin * (std::abs(lin) + std::abs(quad)))) continue;
      // accept: weights, code and the bookkeeping of R
      for (int b = 0; b < uc; ++b)
        for (int a = 0; a < ur; ++a) wh(iu + a, j0 + b) = rec[a + b * ur];
      cx.r.codes(iu / ur, j0 / uc) = code;
      dt.template block<ur, uc>(rr, c) = delta;
      moved.emplace_back(rr, c);
      if (!any) wc.setZero();
      if (hout) {
        if constexpr (scalar_unit)
          wc.col(0).noalias() += delta(0, 0) * hout->col(iu).segment(i0, hb);
        else
          wc.noalias() += hout->block(i0, iu, hb, ur) * delta;
      } else {
        wc.template block<ur, uc>(rr, 0) += delta;
      }
      any = true;
      ++changed;
    }
    const index rest = wb - c - uc;
    if (any && rest > 0) {  // R of the tile's later columns: += Wc H_in[J, later] (H_in symmetric)
      if constexpr (scalar_unit)
        rt.block(0, c + 1, hb, rest).noalias() += wc.col(0) * hin.col(j0).segment(j0 + 1, rest).transpose();
      else
        rt.block(0, c + uc, hb, rest).noalias() += wc * hin.block(j0 + uc, j0, rest, uc).transpose();
    }
  }
  return changed;
}

//! Strips with fewer elements than this run on one thread: a sweep opens one parallel region per
//! strip, and for small layers the region's barrier costs more than the strip (under load, when
//! a team thread is descheduled, a whole time slice: a 0.4 s test took 34 s beside another one).
inline constexpr index cd_parallel_min_elements = index{1} << 16;

//! Runs f(tile, row0, rows) for the row blocks of [0, m) in parallel on a fixed partition (each
//! block's work does not depend on the thread that runs it, so neither do the results), serially
//! when the strip's `elements` are fewer than cd_parallel_min_elements. Exceptions are carried out.
template <class F>
void cd_parallel_blocks(const cpu_backend& host, index m, index br, index elements, F&& f) {
  std::exception_ptr err;
  std::mutex mu;
  const cpu_backend team = elements < cd_parallel_min_elements ? cpu_backend{1} : host;
  parallel_chunks(team, m, br, [&](index r0, index h) {
    try {
      f(r0 / br, r0, h);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(mu);
      if (!err) err = std::current_exception();
    }
  });
  if (err) std::rethrow_exception(err);
}

//! ⟨Ŵ − W, R⟩ = tr(E H_in Eᵀ H_out) from Rt = Rᵀ (n x m), accumulated in double in a fixed order
//! (64 x 64 blocks, so that the transposed reads stay in cache).
template <Scalar T>
double cd_objective(const matrix<T>& wh, matrix_view<const T> w, const matrix<double>& Rt) {
  const auto W = as_eigen(w);
  const index m = W.rows(), n = W.cols();
  constexpr index nb = 64;
  double s = 0;
  for (index i0 = 0; i0 < m; i0 += nb)
    for (index j0 = 0; j0 < n; j0 += nb) {
      double bs = 0;
      for (index i = i0; i < std::min(m, i0 + nb); ++i)
        for (index j = j0; j < std::min(n, j0 + nb); ++j)
          bs += (static_cast<double>(wh(i, j)) - static_cast<double>(W(i, j))) * Rt(j, i);
      s += bs;
    }
  return s;
}

//! A tile's changes are applied unit by unit (level 1) rather than by GEMM when they cover at most
//! 1 / ratio of the tile (measured crossovers: ~25 % one-sided, ~12 % for the P update).
inline constexpr index cd_sparse_ratio_one_sided = 4;
inline constexpr index cd_sparse_ratio_two_sided = 8;

}  // namespace detail

//! Refines a finished rounding r of w (m x n) by coordinate descent on tr(E H_in Eᵀ H_out),
//! E = r.weights − w, with the quantizer's params (and r.group_index) fixed. h_in: n x n,
//! h_out: m x m or an empty view for H_out = I (GPTQ/LDLQ's one-sided objective); both symmetric
//! (their symmetric parts are used; they should be PSD, e.g. damped). r.weights and r.codes are
//! updated together, unit by unit. No sweep increases the objective; see the file comment for
//! the algorithm, the visiting order and the cost. Bit-identical for any thread count.
//! 0 sweeps returns at once (after the checks) and changes nothing.
//! Throws shape_error / non_finite_error / invalid_argument naming the argument; if the
//! quantizer throws, r is left consistent (each unit's weights match its code).
template <Backend B, Quantizer Q>
  requires accessible_from<B, host_space>
cd_report coordinate_descent(const B& b, const Q& q, matrix_view<const scalar_of<Q>> w,
                             matrix_view<const scalar_of<Q>> h_in, matrix_view<const scalar_of<Q>> h_out,
                             rounded<Q>& r, const cd_options& opt = {}) {
  using clock = std::chrono::steady_clock;
  constexpr const char* what = "yaqa::coordinate_descent";
  constexpr index ur = Q::unit_rows, uc = Q::unit_cols;
  const auto t0 = clock::now();
  const index m = w.rows, n = w.cols;

  // ---- checks
  detail::require(opt.sweeps >= 0, what, ": option 'sweeps' must be >= 0, got ", opt.sweeps);
  const index br = opt.block_rows == 0 ? detail::round_up_to(64, ur) : opt.block_rows;
  const index bw = opt.block_cols == 0 ? detail::round_up_to(128, uc) : opt.block_cols;
  detail::require(br >= 1 && br % ur == 0, what, ": option 'block_rows' must be a positive multiple of the "
                  "quantizer's unit height ", ur, " (or 0 for automatic), got ", opt.block_rows);
  detail::require(bw >= 1 && bw % uc == 0, what, ": option 'block_cols' must be a positive multiple of the "
                  "quantizer's unit width ", uc, " (or 0 for automatic), got ", opt.block_cols);
  const index g = detail::checked_group_cols(what, q, m, n);
  check_shape(what, "H_in", h_in, n, n);
  if (!h_out.empty()) check_shape(what, "H_out", h_out, m, m);
  check_shape(what, "r.weights", view(std::as_const(r.weights)), m, n);
  check_shape(what, "r.codes", view(std::as_const(r.codes)), m / ur, n / uc);
  detail::require<shape_error>(r.group_index.empty() || static_cast<index>(r.group_index.size()) == n, what,
                               ": argument 'r.group_index' must be empty or have n = ", n, " entries, got ",
                               r.group_index.size());
  for (index j = 0; j < n; ++j) {
    const index grp = r.group_of(j, g);
    detail::require(grp >= 0 && grp < static_cast<index>(r.params.size()), what, ": argument 'r.params' has ",
                    r.params.size(), " groups but column ", j, " uses group ", grp);
    detail::require(j % uc == 0 || grp == r.group_of(j - j % uc, g), what, ": argument 'r.group_index' puts ",
                    "the columns of one quantizer unit (width ", uc, ") in different groups at column ", j);
  }
  check_finite(what, "W", w);
  check_finite(what, "H_in", h_in);
  if (!h_out.empty()) check_finite(what, "H_out", h_out);
  check_finite(what, "r.weights", view(std::as_const(r.weights)));

  cd_report rep;
  rep.units = (m / ur) * (n / uc);
  if (opt.sweeps == 0 || m == 0 || n == 0) {
    rep.converged = m == 0 || n == 0;
    rep.setup_seconds = rep.seconds = std::chrono::duration<double>(clock::now() - t0).count();
    return rep;
  }

  // ---- setup (double): symmetric factors, unit-block pseudo-inverses, Rt = Rᵀ = H_in Eᵀ H_out
  // (R is kept transposed: a row of R, which one unit row's changes update, is a column of Rt)
  const B be = detail::pin_threads(b);
  const cpu_backend host = detail::host_backend(be);
  detail::serial_eigen_scope serial;  // plain Eigen below runs on one thread; GEMMs go through be
  using ops = backend_ops<B>;
  const matrix<double> hin = detail::cd_symmetric_factor(what, "H_in", h_in);
  matrix<double> hout_store, ainv_store;
  const bool two_sided = !h_out.empty();
  if (two_sided) {
    hout_store = detail::cd_symmetric_factor(what, "H_out", h_out);
    ainv_store = detail::cd_block_pinv<static_cast<int>(ur)>(hout_store);
  }
  const matrix<double> binv = detail::cd_block_pinv<static_cast<int>(uc)>(hin);
  const auto hinv = view(hin);
  matrix<double> Rt(n, m);
  {
    const matrix<double> e = r.weights.template cast<double>() - as_eigen(w).template cast<double>();
    if (two_sided) {
      matrix<double> x(n, m);
      ops::template gemm<double>(be, trans::none, trans::transpose, 1.0, hinv, view(e), 0.0, view(x));
      ops::template gemm<double>(be, trans::none, trans::none, 1.0, view(std::as_const(x)),
                                 view(std::as_const(hout_store)), 0.0, view(Rt));
    } else {
      ops::template gemm<double>(be, trans::none, trans::transpose, 1.0, hinv, view(e), 0.0, view(Rt));
    }
  }
  const detail::cd_context<Q> cx{q, r, g, hin, two_sided ? &hout_store : nullptr, binv,
                                 two_sided ? &ainv_store : nullptr};
  double proxy = detail::cd_objective(r.weights, w, Rt);
  rep.setup_seconds = std::chrono::duration<double>(clock::now() - t0).count();

  // ---- sweeps
  auto sparse = [&](index moved, index hb, index wb) {
    return moved * ur * uc * (two_sided ? detail::cd_sparse_ratio_two_sided : detail::cd_sparse_ratio_one_sided) <=
           hb * wb;
  };
  matrix<double> P;  // two-sided: H_out D_strip (m x block_cols)
  if (two_sided) P.resize(m, std::min(bw, n));
  for (index s = 0; s < opt.sweeps; ++s) {
    const auto ts = clock::now();
    index changed = 0;
    for (index s0 = 0; s0 < n; s0 += bw) {
      const index wb = std::min(bw, n - s0);
      if (!two_sided) {
        // Rows are independent: the tiles of a strip run in parallel, each on its own rows, and
        // each applies its own changes to its columns of Rt: Rt[:, I] += H_in[:, S] D_tileᵀ.
        const index blocks = (m + br - 1) / br;
        std::vector<index> counts(static_cast<std::size_t>(blocks), 0);
        detail::cd_parallel_blocks(host, m, br, m * wb, [&](index t, index i0, index hb) {
          matrix<double> rt = Rt.block(s0, i0, wb, hb).transpose();
          matrix<double> dt = matrix<double>::Zero(hb, wb);
          detail::cd_moved moved;
          const index c = detail::cd_tile(cx, i0, hb, s0, wb, rt, dt, moved);
          counts[static_cast<std::size_t>(t)] = c;
          if (c == 0) return;
          if (sparse(c, hb, wb)) {  // Rt[:, I_u] += H_in[:, J_u] δᵀ, unit by unit
            for (const auto& [rr, cc] : moved) {
              if constexpr (ur == 1 && uc == 1)
                Rt.col(i0 + rr).noalias() += dt(rr, cc) * hin.col(s0 + cc);
              else
                Rt.template middleCols<ur>(i0 + rr).noalias() +=
                    hin.template middleCols<uc>(s0 + cc) * dt.template block<ur, uc>(rr, cc).transpose();
            }
          } else {
            Rt.block(0, i0, n, hb).noalias() += hin.block(0, s0, n, wb) * dt.transpose();
          }
        });
        for (index c : counts) changed += c;
        continue;
      }
      // Two-sided: tiles in order down the strip. P = H_out D_strip gathers the strip's changes;
      // a tile starts from R[I, S] + P[I, :] H_in[S, S]; at the end Rt += H_in[:, S] Pᵀ.
      auto Pv = view(P).block(0, 0, m, wb);
      as_eigen(Pv).setZero();
      bool strip_changed = false;
      matrix<double> rt(br, wb), dt(br, wb);
      detail::cd_moved moved;
      for (index i0 = 0; i0 < m; i0 += br) {
        const index hb = std::min(br, m - i0);
        auto rtb = rt.block(0, 0, hb, wb);
        auto dtb = dt.block(0, 0, hb, wb);
        rtb = Rt.block(s0, i0, wb, hb).transpose();
        if (strip_changed) rtb.noalias() += P.block(i0, 0, hb, wb) * hin.block(s0, s0, wb, wb);
        dtb.setZero();
        moved.clear();
        const index c = detail::cd_tile(cx, i0, hb, s0, wb, rtb, dtb, moved);
        if (c == 0) continue;
        changed += c;
        strip_changed = true;
        if (sparse(c, hb, wb)) {  // P[:, J] += H_out[:, I_u] δ, unit by unit (memory-bound: one thread)
          for (const auto& [rr, cc] : moved) {
            if constexpr (ur == 1 && uc == 1)
              P.col(cc).noalias() += dt(rr, cc) * hout_store.col(i0 + rr);
            else
              P.middleCols(cc, uc).noalias() += hout_store.middleCols(i0 + rr, ur) * dt.template block<ur, uc>(rr, cc);
          }
        } else {
          ops::template gemm<double>(be, trans::none, trans::none, 1.0,
                                     view(std::as_const(hout_store)).block(0, i0, m, hb),
                                     view(std::as_const(dt)).block(0, 0, hb, wb), 1.0, Pv);
        }
      }
      if (strip_changed)  // Rt += H_in[:, S] (H_out D_strip)ᵀ
        ops::template gemm<double>(be, trans::none, trans::transpose, 1.0, hinv.block(0, s0, n, wb),
                                   matrix_view<const double>(Pv), 1.0, view(Rt));
    }
    const double after = detail::cd_objective(r.weights, w, Rt);
    rep.sweeps.push_back({proxy, after, changed, std::chrono::duration<double>(clock::now() - ts).count()});
    proxy = after;
    if (changed == 0) {
      rep.converged = true;
      break;
    }
  }
  rep.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return rep;
}

template <Quantizer Q>
cd_report coordinate_descent(const Q& q, matrix_view<const scalar_of<Q>> w, matrix_view<const scalar_of<Q>> h_in,
                             matrix_view<const scalar_of<Q>> h_out, rounded<Q>& r, const cd_options& opt = {}) {
  return coordinate_descent(default_backend{}, q, w, h_in, h_out, r, opt);
}

}  // namespace yaqa
