#pragma once
//! \file
//! Options shared by the Hessian accumulators and sketches, and their private helpers.
//!
//! Precision model (see docs/hessians.md):
//! - Running sums are kept in the accumulator type Acc (double by default): calibration sums run
//!   over 10^7..10^8 tokens, and fp32 sums of that length lose digits (the reference code needs a
//!   "divide by 8192" trick to stay in range; with fp64 it is unnecessary).
//! - The product of one batch (X^T X, G^T diag(s) G, G_s^T G_s...) is computed by default in the
//!   input precision T — float inputs run at the float GEMM rate, which is what the reference
//!   does (fp32 per-sample math) — into a scratch buffer, and then added into the Acc sum.
//!   `batch_precision::accumulator` converts the batch to Acc first and computes the product in
//!   Acc instead (double inputs are unaffected: their product is already in double).
//! - Adding each batch's product into the sum in one elementwise pass is also what makes merge()
//!   exact: a shard's sum is a plain sum of batch products, so merging single-batch shards in
//!   order reproduces a single pass bit for bit.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include <yaqa/backend/backend.hpp>
#include <yaqa/backend/cpu/backend.hpp>
#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/core/concepts.hpp>
#include <yaqa/core/config.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>
#include <yaqa/hessian/packed_symmetric.hpp>

namespace yaqa {

//! Precision of the per-batch product (the running sums are always in Acc).
enum class batch_precision {
  input,        //!< compute each batch's product in the input type T (float GEMM rate)
  accumulator,  //!< convert the batch to Acc and compute the product in Acc
};

//! How sketch_b contracts one sequence (both give the same matrices up to rounding).
enum class sketch_b_path {
  automatic,  //!< the cheaper of the two by the FLOP model (sketch_b::flops)
  direct,     //!< form M_s = G_s^T X_s (m x n), then M_s^T M_s and M_s M_s^T
  gram,       //!< through the T x T Gram matrices: X^T (G G^T) X and G^T (X X^T) G
};

//! Construction options of second_moment, diagonal_second_moment, sketch_a and sketch_b.
//! Aggregate, so `{.precision = batch_precision::accumulator}` works.
struct accumulate_options {
  batch_precision precision = batch_precision::input;
  sketch_b_path path = sketch_b_path::automatic;  //!< used by sketch_b only
};

namespace detail::hessian {

//! Reads and restores an accumulator's partial state (sums and counts) for reductions across
//! processes; specialized in <yaqa/hessian/state.hpp>, a friend of every accumulator.
template <class A>
struct state_access;

//! Scratch storage that is not copied with its owner (copies start with empty scratch), so
//! copying an accumulator (e.g. to hand a sketch_a pass to a worker) copies only its state.
template <class T>
struct scratch {
  matrix<T> m;
  scratch() = default;
  scratch(const scratch&) {}
  scratch& operator=(const scratch&) { return *this; }
  scratch(scratch&&) noexcept = default;
  scratch& operator=(scratch&&) noexcept = default;
  //! The buffer resized to rows x cols (contents unspecified).
  matrix<T>& get(index rows, index cols) {
    if (m.rows() != rows || m.cols() != cols) m.resize(rows, cols);
    return m;
  }
};

//! Scratch buffers for both compute types (a float batch may be computed in double and vice
//! versa); slot k is an independent buffer. Not copied with its owner.
struct workspace {
  scratch<float> f[6];
  scratch<double> d[6];
  template <class C>
  scratch<C>& slot(int k) {
    if constexpr (std::is_same_v<C, float>)
      return f[k];
    else
      return d[k];
  }
  template <class C>
  matrix<C>& get(int k, index rows, index cols) {
    return slot<C>(k).get(rows, cols);
  }
  //! Slot k's buffer as it is (its user sizes it, keeping it between calls).
  template <class C>
  matrix<C>& buffer(int k) {
    return slot<C>(k).m;
  }
};

//! The batch to compute with, as C: x itself when C == T, else a converted copy in `buf`.
template <class C, class T>
matrix_view<const C> as_compute(matrix_view<const T> x, matrix<C>& buf) {
  if constexpr (std::is_same_v<C, T>) {
    (void)buf;
    return x;
  } else {
    buf = as_eigen(x).template cast<C>();
    return matrix_view<const C>{buf.data(), buf.rows(), buf.cols(), buf.rows() > 0 ? buf.rows() : 1};
  }
}

//! Throws non_finite_error when v has NaN/Inf, naming the routine, the argument, which batch of
//! which accumulator it was (`where`, e.g. "batch 17 of sketch_a pass 1") and the element.
template <class T>
void require_finite_batch(const char* routine, const char* arg, const matrix_view<const T>& v,
                          const std::string& where) {
  const auto [i, j] = first_non_finite(v);  // a vectorized test per column (Eigen's allFinite is scalar)
  if (i >= 0)
    throw non_finite_error(concat(routine, ": argument '", arg, "' of ", where, " contains ",
                                  std::isnan(v(i, j)) ? "NaN" : "Inf", " at (", i, ", ", j,
                                  "); expected finite values"));
}

//! Runs f(begin, length) over fixed-width chunks of [0, extent): in parallel on the CPU backend
//! (the chunking depends on the shape only), serially otherwise. For elementwise work.
template <class B, class F>
void host_chunks(const B& b, index extent, F&& f) {
  if constexpr (std::is_same_v<B, cpu_backend>) {
    parallel_chunks(b, extent, chunk_width(extent), std::forward<F>(f));
  } else {
    (void)b;
    if (extent > 0) f(index{0}, extent);
  }
}

//! sum += the upper triangle of the symmetric n x n matrix c (column i, rows 0..i, which is
//! packed row i of the lower triangle), converted to Acc. The lower triangle of c is not read.
template <class B, class Acc, class C>
void add_upper_to_packed(const B& b, packed_symmetric<Acc>& sum, const matrix<C>& c) {
  const index n = sum.dim();
  Acc* p = sum.data();
  host_chunks(b, n, [&](index r0, index h) {
    for (index i = r0; i < r0 + h; ++i) {
      Acc* row = p + packed_symmetric<Acc>::offset(i, 0);
      const C* col = c.data() + i * c.outerStride();
      for (index j = 0; j <= i; ++j) row[j] += static_cast<Acc>(col[j]);
    }
  });
}

//! c = x^T x (r x r, both triangles), x t x r: the backend's SYRK into a zeroed buffer.
template <class B, class T>
void gram(const B& b, matrix_view<const T> x, matrix<T>& c) {
  c.setZero();
  backend_ops<B>::syrk_accumulate(b, x, T(1), view(c));
}

//! Column chunks of an r x r upper triangle: few and wide (each is a GEMM of the chunk's height),
//! fixed by r so the result does not depend on the thread count.
inline index upper_chunk(index r) { return std::max(chunk_width(r), std::min<index>(r, 256)); }

//! The upper triangle (diagonal included) of c = z^T diag(w) z (w null: z^T z), z t x r, at the
//! FLOPs of the triangle: column chunk [c0, c0 + cw) is the GEMM c(0:c0, chunk) = z(:, 0:c0)^T y
//! (y = diag(w) z(:, chunk)) above the diagonal block, and the backend's (weighted) SYRK on the
//! diagonal block. Nothing else of c is written: no zeroing pass over c, no mirrored lower
//! triangle (the callers read the upper one), no copy of z. `y` is scratch, kept between calls.
template <class B, class T>
void gram_upper(const B& b, matrix_view<const T> z, const T* w, matrix<T>& c, matrix<T>& y) {
  const index r = z.cols, t = z.rows;
  c.resize(r, r);
  const index cw_max = upper_chunk(r);
  for (index c0 = 0; c0 < r; c0 += cw_max) {
    const index cw = std::min(cw_max, r - c0);
    const auto zc = z.col_block(c0, cw);
    auto diag = view(c).block(c0, c0, cw, cw);
    as_eigen(diag).setZero();
    if (w == nullptr) {
      if (c0 > 0) backend_ops<B>::gemm(b, trans::transpose, trans::none, T(1), z.col_block(0, c0), zc, T(0), view(c).block(0, c0, c0, cw));
      backend_ops<B>::syrk_accumulate(b, zc, T(1), diag);
    } else {
      if (c0 > 0) {
        if (y.rows() != t || y.cols() < cw) y.resize(t, cw_max);  // once per shape, not per call
        const Eigen::Map<const vector<T>> wv(w, t);
        host_chunks(b, cw, [&](index j0, index jw) {
          y.middleCols(j0, jw) = wv.asDiagonal() * as_eigen(zc).middleCols(j0, jw);
        });
        backend_ops<B>::gemm(b, trans::transpose, trans::none, T(1), z.col_block(0, c0),
                             matrix_view<const T>{y.data(), t, cw, std::max<index>(t, 1)}, T(0),
                             view(c).block(0, c0, c0, cw));
      }
      backend_ops<B>::weighted_syrk_accumulate(b, zc, w, T(1), diag);
    }
  }
}

//! buf = x^T (so that gram(buf) is x x^T).
//! In 32 x 32 tiles: Eigen's plain transposed assignment walks one side across the whole matrix
//! per element (9 % of a Sketch B sequence at n = m = 1024).
template <class T>
matrix_view<const T> transposed(matrix_view<const T> x, matrix<T>& buf) {
  buf.resize(x.cols, x.rows);
  constexpr index t = 32;
  for (index j0 = 0; j0 < x.cols; j0 += t)
    for (index i0 = 0; i0 < x.rows; i0 += t) {
      const index jw = std::min(t, x.cols - j0), iw = std::min(t, x.rows - i0);
      buf.block(j0, i0, jw, iw) = as_eigen(x).block(i0, j0, iw, jw).transpose();
    }
  return {buf.data(), buf.rows(), buf.cols(), buf.rows() > 0 ? buf.rows() : 1};
}

//! c = a^T b (a t x r, b t x k: tall operands, one token per row) in row blocks of c, each one
//! backend GEMM: a^T is then packed once in all (a single GEMM split by columns of c would re-pack
//! the whole of a^T, a transposed gather, for every column chunk: 17 % of a Sketch B sequence).
//! The blocks are fixed by the shape: no thread count changes a bit.
template <class B, class T>
void tn_product(const B& b, matrix_view<const T> a, matrix_view<const T> bm, matrix_view<T> c) {
  const index r = a.cols, w = upper_chunk(r);
  for (index r0 = 0; r0 < r; r0 += w) {
    const index h = std::min(w, r - r0);
    backend_ops<B>::gemm(b, trans::transpose, trans::none, T(1), a.col_block(r0, h), bm, T(0), c.row_block(r0, h));
  }
}

//! The upper triangle (diagonal included) of C = op(A) * op(B) for a product of two different
//! operands known to be symmetric (r x r), at about half the FLOPs of a full GEMM: column chunk
//! [c0, c0 + w) needs only rows [0, c0 + w). Each chunk is one backend GEMM with beta = 0 (no
//! zeroing); the chunking is fixed by r, so the result does not depend on the thread count.
//! Entries below the diagonal chunks are not written.
template <class B, class T>
void gemm_upper(const B& b, trans ta, matrix_view<const T> a, trans tb, matrix_view<const T> bm,
                matrix_view<T> c) {
  const index r = c.rows;
  const index w = std::max(chunk_width(r), std::min<index>(r, 256));  // few, large GEMM calls
  for (index c0 = 0; c0 < r; c0 += w) {
    const index cw = std::min(w, r - c0), rows = c0 + cw;
    const auto a_rows = ta == trans::none ? a.row_block(0, rows) : a.col_block(0, rows);
    const auto b_cols = tb == trans::none ? bm.col_block(c0, cw) : bm.row_block(c0, cw);
    backend_ops<B>::gemm(b, ta, tb, T(1), a_rows, b_cols, T(0), c.block(0, c0, rows, cw));
  }
}

//! ||P||_F^2 of the full symmetric matrix held in packed form (both triangles), in double.
template <class Acc>
double frobenius_squared(const packed_symmetric<Acc>& p) {
  double s = 0;
  const index n = p.dim();
  const Acc* v = p.data();
  for (index i = 0; i < n; ++i) {
    const Acc* row = v + packed_symmetric<Acc>::offset(i, 0);
    for (index j = 0; j < i; ++j) s += 2.0 * double(row[j]) * double(row[j]);
    s += double(row[i]) * double(row[i]);
  }
  return s;
}

//! True when every stored value is exactly zero.
template <class Acc>
bool all_zero(const packed_symmetric<Acc>& p) {
  return std::all_of(p.data(), p.data() + p.size(), [](Acc v) { return v == Acc(0); });
}

//! True when every stored value is finite.
template <class Acc>
bool all_finite(const packed_symmetric<Acc>& p) {
  return std::all_of(p.data(), p.data() + p.size(), [](Acc v) { return std::isfinite(v); });
}

//! A full Acc matrix sum / divisor from packed storage.
template <class Acc>
matrix<Acc> scaled_full(const packed_symmetric<Acc>& p, double divisor) {
  matrix<Acc> a = p.to_full();
  a /= static_cast<Acc>(divisor);
  return a;
}

}  // namespace detail::hessian
}  // namespace yaqa
