#pragma once
//! \file
//! Hessian accumulators on the CUDA backend: yaqa::cuda::second_moment, sketch_b and sketch_a,
//! the device counterparts of <yaqa/hessian/accumulator.hpp> and kronecker_sketch.hpp with the
//! same formulas, counts, scaling and pass protocol (docs/cuda.md, docs/hessians.md).
//!
//! Host-side cuBLAS calls only (no kernel), so g++ compiles this header as well as nvcc.
//!
//! Differences from the CPU classes:
//! - T is the compute *and* the accumulator type: the running sums are full, symmetric n x n
//!   device_matrix<T> (both triangles). For long float calibrations (10^7+ tokens) use T = double,
//!   or download and reset the sums from time to time; there is no batch_precision option.
//! - Inputs are device views. Shapes are checked on the host with the CPU messages, but the
//!   values are not: checking NaN/Inf would need a device reduction and a synchronization per
//!   batch. A non-finite input therefore reaches the sums, and the download that finalizes a
//!   result (mean(), h_in(), h_out(), sketch_a::end_pass()) throws numerical_error instead.
//! - add() / add_sequence() only queue work on the backend's stream and return. The inputs are
//!   read by that queued work: produce and overwrite them on the same stream, or call
//!   backend().synchronize() before touching them from elsewhere.
//! - The classes own device memory and are move-only (no copy-to-worker distribution of
//!   sketch_a passes); merge() of second_moment and sketch_b is provided.
//! - sketch_b always contracts through G_s (the CPU's sketch_b_path::direct).
#if !defined(YAQA_HAS_CUDA)
#error "backend/cuda/sketch.hpp needs the yaqa::cuda target (YAQA_HAS_CUDA)"
#endif
#include <cmath>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

#include <cublas_v2.h>

#include <yaqa/backend/backend.hpp>
#include <yaqa/backend/cuda/backend.hpp>
#include <yaqa/backend/cuda/memory.hpp>
#include <yaqa/backend/cuda/ops.hpp>
#include <yaqa/core/concepts.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>

namespace yaqa::cuda {
namespace detail::sketch {

template <class T>
inline constexpr bool supported = std::is_same_v<T, float> || std::is_same_v<T, double>;

//! Sums and counts of an accumulator, for reductions across devices (<yaqa/backend/cuda/
//! distributed.hpp> specializes it; a friend of every class below).
template <class A>
struct state_access;

//! dst += src (same shape, both device views), cublas<t>geam in place (C == A, same ld).
template <class T>
void add_into(const cuda_backend& b, device_view<const T> src, device_view<T> dst, const char* what) {
  check_shape(what, "other", src, dst.rows, dst.cols);
  if (dst.empty()) return;
  const int r = cuda::detail::to_int(dst.rows, what, "rows"), c = cuda::detail::to_int(dst.cols, what, "cols");
  const int ldd = cuda::detail::to_int(dst.ld, what, "ld"), lds = cuda::detail::to_int(src.ld, what, "ld");
  const T one = 1;
  if constexpr (std::is_same_v<T, float>)
    check(cublasSgeam(b.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, r, c, &one, dst.data, ldd, &one, src.data, lds,
                      dst.data, ldd),
          what);
  else
    check(cublasDgeam(b.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, r, c, &one, dst.data, ldd, &one, src.data, lds,
                      dst.data, ldd),
          what);
}

//! dst = src^T (src r x c, dst c x r), cublas<t>geam with beta = 0 (B = src again, not used).
template <class T>
void transpose(const cuda_backend& b, device_view<const T> src, device_view<T> dst, const char* what) {
  check_shape(what, "dst", dst, src.cols, src.rows);
  if (dst.empty()) return;
  const int r = cuda::detail::to_int(dst.rows, what, "rows"), c = cuda::detail::to_int(dst.cols, what, "cols");
  const int lds = cuda::detail::to_int(src.ld, what, "ld"), ldd = cuda::detail::to_int(dst.ld, what, "ld");
  const T one = 1, zero = 0;
  if constexpr (std::is_same_v<T, float>)
    check(cublasSgeam(b.cublas(), CUBLAS_OP_T, CUBLAS_OP_T, r, c, &one, src.data, lds, &zero, src.data, lds,
                      dst.data, ldd),
          what);
  else
    check(cublasDgeam(b.cublas(), CUBLAS_OP_T, CUBLAS_OP_T, r, c, &one, src.data, lds, &zero, src.data, lds,
                      dst.data, ldd),
          what);
}

//! s_t = a_t^T H a_t for every row t of a (t x k), H k x k symmetric, s a device array of t:
//! AH = A H (cublas<t>gemm into ah, t x k, ld t), then one 1 x 1 product per token,
//! (row t of AH) (row t of A)^T, as cublas<t>gemmStridedBatched with batch t: operand A of batch
//! t is the 1 x k matrix at ah + t with lda = t, operand B the 1 x k matrix at a + t with
//! ldb = a.ld, transposed; consecutive batches are one element apart (stride 1).
template <class T>
void quadratic_weights(const cuda_backend& b, device_view<const T> a, device_view<const T> h, T* ah_buf,
                       T* s, const char* what) {
  const index t = a.rows, k = a.cols;
  if (t == 0 || k == 0) return;
  const device_view<T> ah(ah_buf, t, k, t);
  backend_ops<cuda_backend>::gemm<T>(b, trans::none, trans::none, T(1), a, h, T(0), ah);
  const int bt = cuda::detail::to_int(t, what, "t"), bk = cuda::detail::to_int(k, what, "k");
  const int lda = cuda::detail::to_int(ah.ld, what, "ld of A H"), ldb = cuda::detail::to_int(a.ld, what, "ld of the batch");
  const T one = 1, zero = 0;
  if constexpr (std::is_same_v<T, float>)
    check(cublasSgemmStridedBatched(b.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, 1, 1, bk, &one, ah.data, lda, 1,
                                    a.data, ldb, 1, &zero, s, 1, 1, bt),
          what);
  else
    check(cublasDgemmStridedBatched(b.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, 1, 1, bk, &one, ah.data, lda, 1,
                                    a.data, ldb, 1, &zero, s, 1, 1, bt),
          what);
}

//! Throws numerical_error naming `what` and `name` unless every entry of h is finite.
template <class T>
void require_finite_result(const matrix<T>& h, const char* what, const char* name) {
  if (h.allFinite()) return;
  for (index j = 0; j < h.cols(); ++j)
    for (index i = 0; i < h.rows(); ++i)
      if (!std::isfinite(h(i, j)))
        throw numerical_error(yaqa::detail::concat(
            what, ": ", name, " has ", std::isnan(h(i, j)) ? "NaN" : "Inf", " at (", i, ", ", j,
            "): a device input held NaN/Inf (device batches are not checked on add) or the sum "
            "overflowed"));
}

//! ||H||_F^2 of a full symmetric matrix from its lower triangle, in double (as the CPU's
//! frobenius_squared of the packed factor).
template <class T>
double frobenius_squared(const matrix<T>& h) {
  double s = 0;
  for (index j = 0; j < h.cols(); ++j) {
    s += double(h(j, j)) * double(h(j, j));
    for (index i = j + 1; i < h.rows(); ++i) s += 2.0 * double(h(i, j)) * double(h(i, j));
  }
  return s;
}

//! After `b` queued reads of memory owned by `owner`: when the streams differ, waits for them, so
//! that owner may free that memory (stream-ordered on its own stream) as soon as we return.
inline void finish_reads_of(const cuda_backend& b, const cuda_backend& owner) {
  if (b.stream() != owner.stream()) b.synchronize();
}

//! A device array that keeps its largest allocation (scratch reused across batches).
template <class T>
T* grow(const cuda_backend& b, device_buffer<T>& buf, index size) {
  if (buf.size() < size) buf = device_buffer<T>(b, size);
  return buf.data();
}

}  // namespace detail::sketch

// =============================================================================================
//! Running sum of x x^T over tokens on the device; mean() is H = E[x x^T] (the CPU
//! yaqa::second_moment: GPTQ's Hessian and pass 0 of Sketch A).
//! - Batches are T x n device views, one token per row (any leading dimension).
//! - An empty batch (0 rows) is accepted, counted in batches() and changes nothing.
//! - Per batch: backend_ops<cuda_backend>::syrk_accumulate (T n(n+1) FLOPs). Memory: the n x n
//!   sum plus the n x n scratch of syrk_accumulate.
template <class T>
class second_moment {
  static_assert(detail::sketch::supported<T>, "yaqa::cuda::second_moment<T>: T must be float or double");

 public:
  using value_type = T;

  //! Throws invalid_argument when n < 1. The sum starts at zero (queued on b's stream).
  second_moment(cuda_backend b, index n) : b_(std::move(b)), n_(n) {
    yaqa::detail::require(n >= 1, "yaqa::cuda::second_moment: argument 'n' must be >= 1, got ", n);
    sum_ = device_matrix<T>(b_, n, n);
    sum_.zero();
  }

  //! Adds the tokens of x (T x n): sum += x^T x, count += T. Asynchronous (see the file comment);
  //! throws shape_error naming the batch ("batch 17 of second_moment", counted from 0).
  void add(device_view<const T> x) {
    constexpr const char* what = "yaqa::cuda::second_moment::add";
    yaqa::detail::require<shape_error>(x.cols == n_, what, ": argument 'x' (batch ", batches_,
                                       " of second_moment) must be T x ", n_, " (one token per row), got ",
                                       x.rows, "x", x.cols);
    ++batches_;
    if (x.rows == 0) return;
    backend_ops<cuda_backend>::syrk_accumulate<T>(b_, x, T(1), sum_.view());
    count_ += x.rows;
  }
  void add(device_view<T> x) { add(device_view<const T>(x)); }

  //! Adds other's sum and counts (same n). Synchronizes other's backend first and, when it is a
  //! different stream, this backend afterwards, so other may be destroyed when this returns.
  void merge(const second_moment& other) {
    constexpr const char* what = "yaqa::cuda::second_moment::merge";
    yaqa::detail::require<shape_error>(other.n_ == n_, what, ": argument 'other' has n = ", other.n_,
                                       ", expected ", n_);
    yaqa::detail::require(&other != this, what, ": argument 'other' is this accumulator");
    other.b_.synchronize();
    detail::sketch::add_into<T>(b_, other.sum_.cview(), sum_.view(), what);
    detail::sketch::finish_reads_of(b_, other.b_);
    count_ += other.count_;
    batches_ += other.batches_;
  }

  //! Tokens seen.
  [[nodiscard]] index count() const { return count_; }
  //! Batches accepted (empty ones included).
  [[nodiscard]] index batches() const { return batches_; }
  [[nodiscard]] index dim() const { return n_; }
  [[nodiscard]] const cuda_backend& backend() const { return b_; }

  //! The running sum sum_t x_t x_t^T on the device (n x n, both triangles).
  [[nodiscard]] device_view<const T> device_sum() const { return sum_.cview(); }
  //! The sum downloaded (synchronizes).
  [[nodiscard]] matrix<T> sum() const { return to_host(b_, sum_); }
  //! E[x x^T] = sum / count, downloaded (synchronizes). Throws invalid_argument when no token was
  //! added, numerical_error when the result is not finite.
  [[nodiscard]] matrix<T> mean() const {
    constexpr const char* what = "yaqa::cuda::second_moment::mean";
    yaqa::detail::require(count_ > 0, what,
                          ": no tokens were added (count is 0); expected at least one non-empty batch");
    matrix<T> h = to_host(b_, sum_);
    h /= static_cast<T>(double(count_));
    detail::sketch::require_finite_result(h, what, "E[x x^T]");
    return h;
  }

 private:
  friend struct detail::sketch::state_access<second_moment>;
  cuda_backend b_;
  index n_;
  device_matrix<T> sum_;
  index count_ = 0, batches_ = 0;
};

// =============================================================================================
//! Sketch B on the device (the CPU yaqa::sketch_b, direct path): per sequence
//! G_s = G^T X (m x n, cublas<t>gemm), then
//! - H_in  = (1/S) sum_s G_s^T G_s   (n x n, syrk_accumulate on G_s)
//! - H_out = (1/S) sum_s G_s G_s^T   (m x m, syrk_accumulate on G_s^T, a geam transpose)
//! S counts the non-empty sequences. FLOPs per sequence: sketch_b's direct count,
//! 2Tmn + mn(n+1) + nm(m+1) (flops()). Memory: the two sums, G_s and G_s^T (2mn), plus the
//! syrk scratch (max(n, m)^2) while a sequence is processed.
template <class T>
class sketch_b {
  static_assert(detail::sketch::supported<T>, "yaqa::cuda::sketch_b<T>: T must be float or double");

 public:
  using value_type = T;

  //! Throws invalid_argument when n < 1 or m < 1.
  sketch_b(cuda_backend b, index n, index m) : b_(std::move(b)), n_(n), m_(m) {
    yaqa::detail::require(n >= 1 && m >= 1,
                          "yaqa::cuda::sketch_b: arguments 'n' and 'm' must be >= 1, got n = ", n, ", m = ", m);
    sum_in_ = device_matrix<T>(b_, n, n);
    sum_out_ = device_matrix<T>(b_, m, m);
    sum_in_.zero();
    sum_out_.zero();
  }

  //! Adds one sequence: x is T x n (layer inputs), g is T x m (dloss/dy), row t = token t.
  //! A sequence with T = 0 is accepted and not counted. Asynchronous; throws shape_error naming
  //! the sequence ("sequence 17 of sketch_b", counted from 0).
  void add_sequence(device_view<const T> x, device_view<const T> g) {
    constexpr const char* what = "yaqa::cuda::sketch_b::add_sequence";
    yaqa::detail::require<shape_error>(x.cols == n_, what, ": argument 'x' (sequence ", sequences_seen_,
                                       " of sketch_b) must be T x ", n_, " (one token per row), got ", x.rows,
                                       "x", x.cols);
    yaqa::detail::require<shape_error>(g.rows == x.rows && g.cols == m_, what, ": argument 'g' (sequence ",
                                       sequences_seen_, " of sketch_b) must be ", x.rows, "x", m_,
                                       " (rows of x by m), got ", g.rows, "x", g.cols);
    ++sequences_seen_;
    if (x.rows == 0) return;
    if (gs_.rows() == 0) {
      gs_ = device_matrix<T>(b_, m_, n_);
      gst_ = device_matrix<T>(b_, n_, m_);
    }
    using ops = backend_ops<cuda_backend>;
    ops::gemm<T>(b_, trans::transpose, trans::none, T(1), g, x, T(0), gs_.view());  // G_s = G^T X
    detail::sketch::transpose<T>(b_, gs_.cview(), gst_.view(), what);
    ops::syrk_accumulate<T>(b_, gs_.cview(), T(1), sum_in_.view());    // += G_s^T G_s
    ops::syrk_accumulate<T>(b_, gst_.cview(), T(1), sum_out_.view());  // += G_s G_s^T
    ++count_;
    tokens_ += x.rows;
  }
  void add_sequence(device_view<T> x, device_view<T> g) {
    add_sequence(device_view<const T>(x), device_view<const T>(g));
  }
  void add_sequence(device_view<const T> x, device_view<T> g) { add_sequence(x, device_view<const T>(g)); }
  void add_sequence(device_view<T> x, device_view<const T> g) { add_sequence(device_view<const T>(x), g); }

  //! Adds other's sums and counts (same n, m). Synchronizes like second_moment::merge.
  void merge(const sketch_b& other) {
    constexpr const char* what = "yaqa::cuda::sketch_b::merge";
    yaqa::detail::require<shape_error>(other.n_ == n_ && other.m_ == m_, what, ": argument 'other' is for n = ",
                                       other.n_, ", m = ", other.m_, ", expected n = ", n_, ", m = ", m_);
    yaqa::detail::require(&other != this, what, ": argument 'other' is this sketch");
    other.b_.synchronize();
    detail::sketch::add_into<T>(b_, other.sum_in_.cview(), sum_in_.view(), what);
    detail::sketch::add_into<T>(b_, other.sum_out_.cview(), sum_out_.view(), what);
    detail::sketch::finish_reads_of(b_, other.b_);
    count_ += other.count_;
    tokens_ += other.tokens_;
    sequences_seen_ += other.sequences_seen_;
  }

  //! Sequences added (non-empty ones).
  [[nodiscard]] index count() const { return count_; }
  //! Tokens over all sequences.
  [[nodiscard]] index tokens() const { return tokens_; }
  [[nodiscard]] index n() const { return n_; }
  [[nodiscard]] index m() const { return m_; }
  [[nodiscard]] const cuda_backend& backend() const { return b_; }

  //! (1/S) sum_s G_s^T G_s, downloaded (synchronizes). Throws invalid_argument when no sequence
  //! was added, numerical_error when the result is not finite.
  [[nodiscard]] matrix<T> h_in() const { return scaled(sum_in_, "yaqa::cuda::sketch_b::h_in", "H_in"); }
  //! (1/S) sum_s G_s G_s^T, downloaded (synchronizes). Same errors as h_in().
  [[nodiscard]] matrix<T> h_out() const { return scaled(sum_out_, "yaqa::cuda::sketch_b::h_out", "H_out"); }
  //! The undivided sums on the device (both triangles).
  [[nodiscard]] device_view<const T> device_sum_in() const { return sum_in_.cview(); }
  [[nodiscard]] device_view<const T> device_sum_out() const { return sum_out_.cview(); }
  //! True when sequences were added and H_out is exactly zero (no gradient reached the layer).
  //! Downloads the sum (synchronizes).
  [[nodiscard]] bool h_out_is_zero() const { return count_ > 0 && to_host(b_, sum_out_).isZero(0); }

  //! FLOPs of one sequence of t tokens (the CPU sketch_b's direct path).
  [[nodiscard]] static double flops(index t, index n, index m) {
    const double T_ = double(t), N = double(n), M = double(m);
    return 2 * T_ * M * N + M * N * (N + 1) + N * M * (M + 1);
  }

 private:
  friend struct detail::sketch::state_access<sketch_b>;
  matrix<T> scaled(const device_matrix<T>& sum, const char* what, const char* name) const {
    yaqa::detail::require(count_ > 0, what,
                          ": no sequences were added (count is 0); expected at least one non-empty sequence");
    matrix<T> h = to_host(b_, sum);
    h /= static_cast<T>(double(count_));
    detail::sketch::require_finite_result(h, what, name);
    return h;
  }

  cuda_backend b_;
  index n_, m_;
  device_matrix<T> sum_in_, sum_out_;
  device_matrix<T> gs_, gst_;  // scratch: G_s (m x n) and G_s^T, allocated on first use
  index count_ = 0, tokens_ = 0, sequences_seen_ = 0;
};

// =============================================================================================
//! Sketch A on the device (the CPU yaqa::sketch_a): power iteration, one half-step per pass over
//! the same data:
//! - pass 0:        H_in  = E[x x^T]                                 (g is not used)
//! - odd pass p:    H_out = E[(x^T H_in x) g g^T]  / ||H_in||_F^2
//! - even pass p>0: H_in  = E[(g^T H_out g) x x^T] / ||H_out||_F^2
//!
//! Caller's loop: for (p = 0; p < passes; ++p) { s.begin_pass(); for (batch) s.add(x, g); s.end_pass(); }
//!
//! Per batch of an odd (even) pass: AH = A H by cublas<t>gemm with A = x, H = H_in (A = g,
//! H = H_out), the weights s_t = a_t^T H a_t by a stride-1 cublas<t>gemmStridedBatched of 1 x 1
//! products, and weighted_syrk_accumulate of the other input with device weights s. Pass 0 is
//! syrk_accumulate. FLOPs as the CPU's flops() (the 2Tk of the weight dots not counted).
//! end_pass() downloads the pass sum, divides it on the host in double as the CPU does, checks it
//! (numerical_error when not finite), keeps a host copy (h_in()/h_out() return it without device
//! work) and uploads the factor for the next pass.
//!
//! Degenerate data as in the CPU: when H_out comes out exactly zero, h_out_is_zero() says so and
//! the even passes keep H_in; when H_in is zero an odd pass sets H_out to zero. Such passes still
//! count tokens but queue no device work.
template <class T>
class sketch_a {
  static_assert(detail::sketch::supported<T>, "yaqa::cuda::sketch_a<T>: T must be float or double");

 public:
  using value_type = T;

  //! Throws invalid_argument when n < 1, m < 1 or passes < 2.
  sketch_a(cuda_backend b, index n, index m, int passes) : b_(std::move(b)), n_(n), m_(m), passes_(passes) {
    yaqa::detail::require(n >= 1 && m >= 1,
                          "yaqa::cuda::sketch_a: arguments 'n' and 'm' must be >= 1, got n = ", n, ", m = ", m);
    yaqa::detail::require(passes >= 2,
                          "yaqa::cuda::sketch_a: argument 'passes' must be >= 2 (pass 0 estimates "
                          "H_in, pass 1 the first H_out), got ",
                          passes);
  }

  //! Opens pass pass() for add(). Throws invalid_argument when a pass is already open or all
  //! passes are done.
  void begin_pass() {
    constexpr const char* what = "yaqa::cuda::sketch_a::begin_pass";
    yaqa::detail::require(!in_pass_, what, ": pass ", completed_,
                          " is already open; call end_pass() before beginning the next");
    yaqa::detail::require(completed_ < passes_, what, ": all ", passes_,
                          " passes are done; expected no further begin_pass()");
    const int p = completed_;
    const index k = p % 2 == 1 ? m_ : n_;
    if (acc_.rows() != k) acc_ = device_matrix<T>(b_, k, k);
    acc_.zero();
    count_ = 0;
    batches_ = 0;
    prev_norm2_ = p == 0 ? 1.0 : detail::sketch::frobenius_squared(p % 2 == 1 ? h_in_ : h_out_);
    prev_zero_ = prev_norm2_ == 0.0;
    in_pass_ = true;
  }

  //! Adds a batch of T tokens to the open pass: x is T x n, g is T x m (row t of g is dloss/dy
  //! for the token in row t of x). In pass 0, g is not used and may be empty (0 x 0).
  //! Empty batches are accepted and change nothing. Asynchronous. Throws shape_error naming the
  //! batch ("batch 17 of sketch_a pass 1"; batches and passes count from 0), and
  //! invalid_argument when no pass is open.
  void add(device_view<const T> x, device_view<const T> g) {
    constexpr const char* what = "yaqa::cuda::sketch_a::add";
    yaqa::detail::require(in_pass_, what, ": no pass is open (", completed_, " of ", passes_,
                          " done); call begin_pass() first");
    const int p = completed_;
    const std::string where = yaqa::detail::concat("batch ", batches_, " of sketch_a pass ", p);
    yaqa::detail::require<shape_error>(x.cols == n_, what, ": argument 'x' (", where, ") must be T x ", n_,
                                       " (one token per row), got ", x.rows, "x", x.cols);
    const bool g_used = p > 0;
    if (g_used || !g.empty())
      yaqa::detail::require<shape_error>(g.rows == x.rows && g.cols == m_, what, ": argument 'g' (", where,
                                         ") must be ", x.rows, "x", m_, " (rows of x by m)",
                                         g_used ? "" : " or empty in pass 0", ", got ", g.rows, "x", g.cols);
    ++batches_;
    if (x.rows == 0) return;
    if (!prev_zero_) accumulate(x, g);
    count_ += x.rows;
  }
  void add(device_view<T> x, device_view<T> g) { add(device_view<const T>(x), device_view<const T>(g)); }
  void add(device_view<const T> x, device_view<T> g) { add(x, device_view<const T>(g)); }
  void add(device_view<T> x, device_view<const T> g) { add(device_view<const T>(x), g); }
  //! Pass 0 only needs x.
  void add(device_view<const T> x) { add(x, device_view<const T>()); }
  void add(device_view<T> x) { add(device_view<const T>(x), device_view<const T>()); }

  //! Finalizes the open pass's factor (see the class comment); synchronizes. Throws
  //! invalid_argument when no pass is open or the pass saw no token, numerical_error when the
  //! factor is not finite (NaN/Inf in a device batch, or overflow).
  void end_pass() {
    constexpr const char* what = "yaqa::cuda::sketch_a::end_pass";
    yaqa::detail::require(in_pass_, what, ": no pass is open; call begin_pass() first");
    const int p = completed_;
    yaqa::detail::require(count_ > 0, what, ": pass ", p, " saw no tokens; expected at least one non-empty batch");
    const bool odd = p % 2 == 1;
    if (prev_zero_ && !odd) {
      // H_out zero: keep H_in (nothing was accumulated).
    } else if (prev_zero_) {
      h_out_ = matrix<T>::Zero(m_, m_);  // H_in zero: H_out cannot be estimated
      upload(h_out_, h_out_dev_);
    } else {
      matrix<T> next = to_host(b_, acc_);
      const double divisor = p == 0 ? double(count_) : double(count_) * prev_norm2_;
      for (index j = 0; j < next.cols(); ++j)
        for (index i = 0; i < next.rows(); ++i) next(i, j) = static_cast<T>(double(next(i, j)) / divisor);
      detail::sketch::require_finite_result(next, what, odd ? "the new H_out" : "the new H_in");
      (odd ? h_out_ : h_in_) = std::move(next);
      upload(odd ? h_out_ : h_in_, odd ? h_out_dev_ : h_in_dev_);
    }
    (odd ? has_out_ : has_in_) = true;
    acc_ = device_matrix<T>();  // release the pass sum between passes
    in_pass_ = false;
    ++completed_;
  }

  //! The pass add() works on (while open), else the next pass to begin (= passes completed).
  [[nodiscard]] int pass() const { return completed_; }
  [[nodiscard]] int passes() const { return passes_; }
  [[nodiscard]] bool done() const { return completed_ == passes_; }
  [[nodiscard]] bool in_pass() const { return in_pass_; }
  //! Tokens added to the open pass so far.
  [[nodiscard]] index pass_count() const { return count_; }
  [[nodiscard]] index n() const { return n_; }
  [[nodiscard]] index m() const { return m_; }
  [[nodiscard]] const cuda_backend& backend() const { return b_; }

  [[nodiscard]] bool has_h_in() const { return has_in_; }
  [[nodiscard]] bool has_h_out() const { return has_out_; }
  //! True when H_out has been estimated and is exactly zero: the solver should use H_out = I.
  [[nodiscard]] bool h_out_is_zero() const { return has_out_ && h_out_.isZero(0); }

  //! The latest H_in (n x n; final once done()), the host copy kept by end_pass(). Throws
  //! invalid_argument before pass 0 ended.
  [[nodiscard]] const matrix<T>& h_in() const {
    yaqa::detail::require(has_in_, "yaqa::cuda::sketch_a::h_in: H_in is available once pass 0 has ended (",
                          completed_, " passes done)");
    return h_in_;
  }
  //! The latest H_out (m x m; final once done()). Throws invalid_argument before pass 1 ended.
  [[nodiscard]] const matrix<T>& h_out() const {
    yaqa::detail::require(has_out_, "yaqa::cuda::sketch_a::h_out: H_out is available once pass 1 has ended (",
                          completed_, " passes done)");
    return h_out_;
  }
  //! The same factors on the device. Same errors as h_in() / h_out().
  [[nodiscard]] device_view<const T> device_h_in() const {
    static_cast<void>(h_in());
    return h_in_dev_.cview();
  }
  [[nodiscard]] device_view<const T> device_h_out() const {
    static_cast<void>(h_out());
    return h_out_dev_.cview();
  }

  //! FLOPs of one batch of t tokens in pass p (the CPU sketch_a::flops).
  [[nodiscard]] static double flops(int p, index t, index n, index m) {
    const double T_ = double(t), N = double(n), M = double(m);
    if (p == 0) return T_ * N * (N + 1);
    if (p % 2 == 1) return 2 * T_ * N * N + T_ * M * (M + 1);
    return 2 * T_ * M * M + T_ * N * (N + 1);
  }

 private:
  friend struct detail::sketch::state_access<sketch_a>;
  void accumulate(device_view<const T> x, device_view<const T> g) {
    constexpr const char* what = "yaqa::cuda::sketch_a::add";
    using ops = backend_ops<cuda_backend>;
    const int p = completed_;
    if (p == 0) {
      ops::syrk_accumulate<T>(b_, x, T(1), acc_.view());
      return;
    }
    // odd: weights from x and H_in, accumulate over g; even: weights from g and H_out, over x.
    const bool odd = p % 2 == 1;
    const device_view<const T> a = odd ? x : g, z = odd ? g : x;
    const device_view<const T> h = odd ? h_in_dev_.cview() : h_out_dev_.cview();
    const index t = x.rows;
    T* ah = detail::sketch::grow(b_, ah_, t * a.cols);
    T* s = detail::sketch::grow(b_, s_, t);
    detail::sketch::quadratic_weights<T>(b_, a, h, ah, s, what);
    ops::weighted_syrk_accumulate<T>(b_, z, s, T(1), acc_.view());
  }

  void upload(const matrix<T>& h, device_matrix<T>& d) {
    if (d.rows() != h.rows()) d = device_matrix<T>(b_, h.rows(), h.cols());
    copy<T>(b_, matrix_view<const T, host_space>(h.data(), h.rows(), h.cols(), h.rows()), d.view());
  }

  cuda_backend b_;
  index n_, m_;
  int passes_;
  int completed_ = 0;
  bool in_pass_ = false;
  matrix<T> h_in_, h_out_;               // host copies of the factors
  device_matrix<T> h_in_dev_, h_out_dev_;  // the same on the device, for the next pass
  bool has_in_ = false, has_out_ = false;
  device_matrix<T> acc_;  // the open pass's sum
  index count_ = 0, batches_ = 0;
  double prev_norm2_ = 1;
  bool prev_zero_ = false;
  device_buffer<T> ah_, s_;  // scratch: A H (t x k) and the weights (t)
};

}  // namespace yaqa::cuda
