#pragma once
//! \file
//! How the random Hadamard transform U = S A of linalg/hadamard.hpp, A = scale (G ⊗ H_P), is laid
//! out over a column-major matrix when it is applied as separate passes (the device transform of
//! backend/cuda/kernels/hadamard.cuh does this). Host-only index arithmetic, no CUDA: the CPU test
//! tests/linalg/test_hadamard_layout.cpp runs the same passes with naive loops against
//! random_hadamard::apply.
//!
//! Per vector v of length n = K P (a column of x for side::left, a row for side::right), with the
//! index i = k P + j (k in [0, K) slow, j in [0, P) fast), random_hadamard::apply computes
//!   forward  (left & none, right & transpose): v <- S A v   = diag(f) vec(H_P X G^T)
//!   backward (left & transpose, right & none): v <- A^T S v = vec(H_P (diag(f) v as X) G)
//! where X is v viewed as the P x K column-major matrix X(j, k) = v[k P + j] and
//! f_i = sign_i * T(scale) (the scale rounded to T once). The passes are:
//!   1. backward only: x_i *= f_i (i = row for side::left, column for side::right);
//!   2. H_P: an unnormalized Walsh-Hadamard transform of every "Sylvester vector", the P elements
//!      j = 0 .. P-1 of one (vector, k) pair (layout: rht_layout::sylvester), in place;
//!   3. G: scratch <- X op(G) for every vector, one (strided batched) GEMM in cuBLAS's column-major
//!      convention (rht_layout::dense); the scratch is a rows x cols column-major matrix with
//!      ld = rows, holding the result at the position x holds it;
//!   4. x <- scratch, times f_i when forward.
//! Because op(G) acts on the right of X and H_P on the left, passes 2 and 3 commute; the CPU does
//! them in this order too.
#include <cstdint>
#include <vector>

#include <yaqa/backend/backend.hpp>
#include <yaqa/core/config.hpp>
#include <yaqa/linalg/hadamard.hpp>

namespace yaqa::detail {

//! `count` vectors of `len` elements in one array: vector v starts at
//! (v / group) * outer + (v % group) * inner, and its element i lies i * elem further.
struct vector_family {
  index len = 0, elem = 1, outer = 0, inner = 0, group = 1, count = 0;
  [[nodiscard]] constexpr index start(index v) const { return (v / group) * outer + (v % group) * inner; }
  [[nodiscard]] constexpr index at(index v, index i) const { return start(v) + i * elem; }
};

//! One strided batched GEMM with cuBLAS's meaning (column-major, sizes of op(A) m x k, op(B) k x n,
//! C m x n): for b in [0, batch), C_b = op(A_b) op(B_b) with A_b = A + b * stride_a, and so on.
//! One of A and B is the dense factor G (K x K, ld K, stride 0: the same G for every batch), the
//! other the matrix x (offsets into x's storage); C is the scratch.
struct rht_gemm {
  bool a_is_dense = false;  //!< A = G and B = x (else A = x and B = G)
  bool trans_a = false, trans_b = false;
  index m = 0, n = 0, k = 0;
  index lda = 1, stride_a = 0, ldb = 1, stride_b = 0, ldc = 1, stride_c = 0, batch = 0;
};

//! The passes of one apply(side, trans) to a rows x cols matrix with leading dimension ld.
struct rht_layout {
  bool forward = true;        //!< v <- S A v (else v <- A^T S v)
  bool factor_on_rows = true; //!< f is indexed by the row (side::left) or the column (side::right)
  vector_family sylvester;    //!< pass 2 (count 0 when P = 1)
  rht_gemm dense;             //!< pass 3
};

//! The layout for U of dense order K and Sylvester order P (n = K P) applied on side s with
//! transpose t to a rows x cols column-major matrix with leading dimension ld (>= rows).
//! - side::left (vector c = column c, element i at c ld + i): Sylvester vector (c, k) starts at
//!   c ld + k P with element stride 1. G: for P > 1, batch c (one per column) is
//!   C_c (P x K, ldc P, at c n in the scratch) = X_c (P x K, lda P, at c ld) op(G), op(G) = G^T when
//!   forward; for P = 1 the vectors are the columns themselves and one GEMM
//!   scratch (K x cols, ldc K) = op'(G) x (ldb ld) does all of them, op'(G) = G when forward.
//! - side::right (vector r = row r, element i at r + i ld): Sylvester vector (r, k) starts at
//!   r + k P ld with element stride ld. G: batch j (one per position j < P) gathers the rows
//!   (r, k) -> x[r + j ld + k P ld], i.e. C_j (rows x K, ldc P rows, at j rows) =
//!   X_j (rows x K, lda P ld, at j ld) op(G). When ld == rows the P batches tile one matrix
//!   (rows P) x K with ld rows P, so a single GEMM with m = rows P is used.
constexpr rht_layout make_rht_layout(index dense_order, index sylvester_order, side s, trans t, index rows,
                                     index cols, index ld) {
  const index kk = dense_order, p = sylvester_order;
  rht_layout l;
  l.forward = (s == side::left) == (t == trans::none);  // as random_hadamard::apply
  l.factor_on_rows = s == side::left;
  rht_gemm& g = l.dense;
  if (s == side::left) {
    if (p > 1) l.sylvester = {.len = p, .elem = 1, .outer = ld, .inner = p, .group = kk, .count = cols * kk};
    if (p == 1) {  // C = op'(G) x: forward v <- G v, backward v <- G^T v
      g = {.a_is_dense = true, .trans_a = !l.forward, .trans_b = false, .m = kk, .n = cols, .k = kk,
           .lda = kk, .stride_a = 0, .ldb = ld, .stride_b = 0, .ldc = rows, .stride_c = 0, .batch = 1};
    } else {  // C_c = X_c op(G): forward X G^T, backward X G
      g = {.a_is_dense = false, .trans_a = false, .trans_b = l.forward, .m = p, .n = kk, .k = kk,
           .lda = p, .stride_a = ld, .ldb = kk, .stride_b = 0, .ldc = p, .stride_c = rows, .batch = cols};
    }
  } else {
    if (p > 1) l.sylvester = {.len = p, .elem = ld, .outer = p * ld, .inner = 1, .group = rows, .count = rows * kk};
    if (ld == rows || p == 1) {  // one GEMM: the P row blocks are consecutive (or there is one)
      g = {.a_is_dense = false, .trans_a = false, .trans_b = l.forward, .m = rows * p, .n = kk, .k = kk,
           .lda = p * ld, .stride_a = 0, .ldb = kk, .stride_b = 0, .ldc = p * rows, .stride_c = 0, .batch = 1};
    } else {
      g = {.a_is_dense = false, .trans_a = false, .trans_b = l.forward, .m = rows, .n = kk, .k = kk,
           .lda = p * ld, .stride_a = ld, .ldb = kk, .stride_b = 0, .ldc = p * rows, .stride_c = rows,
           .batch = p};
    }
  }
  return l;
}

//! f_i = sign_i * T(scale) for i < n: the per-position factor of passes 1 and 4, the CPU's
//! scale_positions exactly (the scale rounded to T once, then negated for a negative sign).
template <class T>
std::vector<T> rht_factors(const random_hadamard& u) {
  const T sc = static_cast<T>(u.scale());
  std::vector<T> f(static_cast<std::size_t>(u.dim()));
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = u.signs()[i] < 0 ? -sc : sc;
  return f;
}

}  // namespace yaqa::detail
