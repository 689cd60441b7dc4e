#pragma once
//! \file
//! Incoherence processing: the random Hadamard transform (RHT) U = S A of spec §3.1 step 3 and
//! pitfall 9. S = diag(random signs); A is orthonormal and Hadamard-type:
//!     n = K * 2^p,   A = (G ⊗ H_{2^p}) * scale,   index i = k * 2^p + j (K is the slow index)
//! with H_{2^p} the (symmetric) Sylvester matrix, applied by a fast Walsh-Hadamard transform in
//! O(n p), and G a dense K x K factor applied as one small GEMM, O(n K) per vector:
//! - n = 2^p: K = 1 (pure Sylvester).
//! - n = c * 2^q with c odd > 1, q >= 2 and a Hadamard matrix of order 4c constructible (below):
//!   G = H_{4c} (entries ±1), K = 4c, scale = 1/sqrt(n). 4c is the smallest Hadamard order with
//!   odd part c, i.e. the smallest dense factor (this is the reference's choice: its table orders
//!   12, 20, ..., 172 are all 4 x odd).
//! - every other n (odd part with no constructible 4c, n odd or 2 x odd, primes, 5376 = 21 * 256):
//!   G = a seeded random orthogonal c x c matrix (QR of a Gaussian matrix, columns sign-fixed so the
//!   distribution is Haar), K = c, 2^p the whole power of two of n, scale = 1/sqrt(2^p). Still
//!   O(n (K + log n)) per vector; building G costs O(c^3) (large only for n with a large odd part,
//!   e.g. a large prime, where the transform is a dense random rotation).
//!
//! Hadamard matrices are built by the library, never tabulated: Sylvester (powers of two), Paley I
//! (order q + 1, q ≡ 3 mod 4 a prime power), Paley II (order 2(q + 1), q ≡ 1 mod 4 a prime power),
//! with GF(p^k) arithmetic for prime powers (25 -> 52, 49 -> 100, 27, 81, 121, 125, 343, ...),
//! and Sylvester doubling H_2 ⊗ H_{k/2} for hadamard_matrix() of other orders. Orders 4 x odd not
//! reachable this way (92, 116, 156, 172, 188, 236, 260, 268, 292 below 300) use the fallback.
//!
//! Determinism: the signs, then (fallback only) the Gaussian entries, are drawn in that order
//! from std::mt19937_64(seed), whose output sequence the C++ standard fixes. The Gaussians use the
//! Marsaglia polar method with uniforms made from the top 53 bits of each draw (no
//! std::normal_distribution, whose algorithm is implementation-defined), so the only platform
//! dependence is std::log (correctly rounded in practice on glibc). apply() splits the other
//! dimension into chunks fixed by the shape, so results are bit-identical for any thread count.
#include <algorithm>
#include <bit>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <exception>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>
#include <Eigen/QR>

#include <yaqa/backend/backend.hpp>
#include <yaqa/backend/cpu/backend.hpp>
#include <yaqa/backend/cpu/ops.hpp>
#include <yaqa/core/concepts.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>

namespace yaqa {
namespace detail {

inline bool is_prime(index q) {
  if (q < 2) return false;
  for (index d = 2; d * d <= q; ++d)
    if (q % d == 0) return false;
  return true;
}

//! True when q = p^k for a prime p and k >= 1; sets p and k.
inline bool prime_power(index q, index& p, int& k) {
  if (q < 2) return false;
  index d = 2;
  while (d * d <= q && q % d != 0) ++d;
  if (q % d != 0) d = q;  // q is prime
  k = 0;
  index r = q;
  while (r % d == 0) {
    r /= d;
    ++k;
  }
  p = d;
  return r == 1;
}

//! GF(p^k). Element x in [0, q) encodes the polynomial sum_i digit_i(x) t^i (base-p digits);
//! multiplication is modulo the first monic irreducible polynomial of degree k in code order.
class galois_field {
 public:
  galois_field(index p, int k) : p_(p), k_(k) {
    q_ = 1;
    for (int i = 0; i < k; ++i) q_ *= p;
    modulus_ = find_irreducible();
  }
  [[nodiscard]] index size() const { return q_; }
  [[nodiscard]] index sub(index a, index b) const {
    index r = 0, m = 1;
    for (int i = 0; i < k_; ++i, a /= p_, b /= p_, m *= p_) r += ((a % p_ - b % p_ + p_) % p_) * m;
    return r;
  }
  [[nodiscard]] index mul(index a, index b) const {
    const std::vector<index> x = digits(a), y = digits(b);
    std::vector<index> prod(static_cast<std::size_t>(2 * k_), 0);
    for (int i = 0; i < k_; ++i)
      for (int j = 0; j < k_; ++j) prod[i + j] = (prod[i + j] + x[i] * y[j]) % p_;
    for (int d = 2 * k_ - 2; d >= k_; --d) {  // t^k = -sum_i modulus_i t^i
      const index c = prod[d];
      if (c == 0) continue;
      prod[d] = 0;
      for (int i = 0; i < k_; ++i)
        prod[d - k_ + i] = ((prod[d - k_ + i] - c * modulus_[i]) % p_ + p_) % p_;
    }
    index r = 0, m = 1;
    for (int i = 0; i < k_; ++i, m *= p_) r += prod[i] * m;
    return r;
  }
  //! Quadratic character: 0 for 0, +1 for a non-zero square, -1 otherwise.
  [[nodiscard]] std::vector<int> quadratic_character() const {
    std::vector<int> chi(static_cast<std::size_t>(q_), -1);
    chi[0] = 0;
    for (index x = 1; x < q_; ++x) chi[static_cast<std::size_t>(mul(x, x))] = 1;
    return chi;
  }

 private:
  [[nodiscard]] std::vector<index> digits(index a) const {
    std::vector<index> d(static_cast<std::size_t>(k_));
    for (int i = 0; i < k_; ++i, a /= p_) d[i] = a % p_;
    return d;
  }
  // Does the monic polynomial g (coefficients low to high, leading 1 implicit at degree g.size())
  // divide the monic f (same convention)? Long division; the remainder is r[0 .. deg g).
  [[nodiscard]] bool divides(const std::vector<index>& g, const std::vector<index>& f) const {
    std::vector<index> r(f);
    r.push_back(1);
    const index dg = index(g.size()), df = index(f.size());
    for (index d = df; d >= dg; --d) {
      const index c = r[static_cast<std::size_t>(d)];
      if (c == 0) continue;
      for (index i = 0; i < dg; ++i) {
        index& t = r[static_cast<std::size_t>(d - dg + i)];
        t = ((t - c * g[static_cast<std::size_t>(i)]) % p_ + p_) % p_;
      }
      r[static_cast<std::size_t>(d)] = 0;
    }
    for (index i = 0; i < dg; ++i)
      if (r[static_cast<std::size_t>(i)] != 0) return false;
    return true;
  }
  // The first monic polynomial of degree k (in code order) with no monic factor of degree <= k/2.
  [[nodiscard]] std::vector<index> find_irreducible() const {
    for (index code = 0; code < q_; ++code) {
      const std::vector<index> f = digits(code);
      if (k_ == 1) return f;
      bool irreducible = true;
      for (int dg = 1; dg <= k_ / 2 && irreducible; ++dg) {
        index count = 1;
        for (int i = 0; i < dg; ++i) count *= p_;
        for (index gc = 0; gc < count && irreducible; ++gc) {
          std::vector<index> g(static_cast<std::size_t>(dg));
          index t = gc;
          for (int i = 0; i < dg; ++i, t /= p_) g[static_cast<std::size_t>(i)] = t % p_;
          if (divides(g, f)) irreducible = false;
        }
      }
      if (irreducible) return f;
    }
    return {};  // unreachable: irreducible polynomials of every degree exist
  }

  index p_;
  int k_;
  index q_ = 1;
  std::vector<index> modulus_;
};

//! The Jacobsthal matrix of GF(q): Q(a, b) = chi(a - b).
inline Eigen::MatrixXd jacobsthal(index p, int k) {
  const galois_field f(p, k);
  const index q = f.size();
  const std::vector<int> chi = f.quadratic_character();
  Eigen::MatrixXd m(q, q);
  for (index b = 0; b < q; ++b)
    for (index a = 0; a < q; ++a) m(a, b) = chi[static_cast<std::size_t>(f.sub(a, b))];
  return m;
}

enum class hadamard_kind { none, sylvester, paley1, paley2, doubling };

struct hadamard_recipe {
  hadamard_kind kind = hadamard_kind::none;
  index q = 0;  //!< the field size for Paley constructions
};

inline hadamard_recipe find_hadamard(index order) {
  if (order < 1) return {};
  if (std::has_single_bit(static_cast<std::uint64_t>(order))) return {hadamard_kind::sylvester, 0};
  if (order % 4 != 0) return {};
  index p = 0;
  int k = 0;
  const index q1 = order - 1, q2 = order / 2 - 1;
  const bool p2_ok = q2 % 4 == 1;
  if (is_prime(q1)) return {hadamard_kind::paley1, q1};
  if (p2_ok && is_prime(q2)) return {hadamard_kind::paley2, q2};
  if (prime_power(q1, p, k)) return {hadamard_kind::paley1, q1};
  if (p2_ok && prime_power(q2, p, k)) return {hadamard_kind::paley2, q2};
  if (find_hadamard(order / 2).kind != hadamard_kind::none) return {hadamard_kind::doubling, 0};
  return {};
}

inline Eigen::MatrixXd build_hadamard(index order, const hadamard_recipe& r) {
  Eigen::MatrixXd h(order, order);
  index p = 0;
  int k = 0;
  switch (r.kind) {
    case hadamard_kind::sylvester:
      for (index j = 0; j < order; ++j)
        for (index i = 0; i < order; ++i) h(i, j) = (std::popcount(std::uint64_t(i & j)) & 1) ? -1.0 : 1.0;
      break;
    case hadamard_kind::paley1: {  // H = I + [[0, 1^T], [-1, Q]], Q skew (q ≡ 3 mod 4)
      prime_power(r.q, p, k);
      const Eigen::MatrixXd q = jacobsthal(p, k);
      h.setZero();
      h.row(0).tail(order - 1).setOnes();
      h.col(0).tail(order - 1).setConstant(-1.0);
      h.bottomRightCorner(order - 1, order - 1) = q;
      h.diagonal().array() += 1.0;
      break;
    }
    case hadamard_kind::paley2: {  // S = [[0, 1^T], [1, Q]] (symmetric); H = S ⊗ A + I ⊗ B
      prime_power(r.q, p, k);
      const index m = r.q + 1;
      Eigen::MatrixXd s = Eigen::MatrixXd::Zero(m, m);
      s.row(0).tail(m - 1).setOnes();
      s.col(0).tail(m - 1).setOnes();
      s.bottomRightCorner(m - 1, m - 1) = jacobsthal(p, k);
      const double a[2][2] = {{1, 1}, {1, -1}}, bm[2][2] = {{1, -1}, {-1, -1}};
      for (index bj = 0; bj < m; ++bj)
        for (index bi = 0; bi < m; ++bi)
          for (int y = 0; y < 2; ++y)
            for (int x = 0; x < 2; ++x)
              h(2 * bi + x, 2 * bj + y) = bi == bj ? bm[x][y] : s(bi, bj) * a[x][y];
      break;
    }
    case hadamard_kind::doubling: {
      const index half = order / 2;
      const Eigen::MatrixXd g = build_hadamard(half, find_hadamard(half));
      h << g, g, g, -g;
      break;
    }
    case hadamard_kind::none:
      break;
  }
  return h;
}

//! Runs f with OpenMP (and so Eigen) limited to one thread; exceptions are carried out.
template <class F>
void run_serial(F&& f) {
#if defined(_OPENMP)
  std::exception_ptr err;
#pragma omp parallel num_threads(1)
  {
    omp_set_num_threads(1);
    try {
      f();
    } catch (...) {
      err = std::current_exception();
    }
  }
  if (err) std::rethrow_exception(err);
#else
  f();
#endif
}

//! Standard normal draws by the Marsaglia polar method on mt19937_64 output (portable sequence).
class polar_gaussian {
 public:
  explicit polar_gaussian(std::mt19937_64& g) : g_(g) {}
  double operator()() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u, v, s;
    do {
      u = double(g_() >> 11) * 0x1.0p-52 - 1.0;  // [-1, 1)
      v = double(g_() >> 11) * 0x1.0p-52 - 1.0;
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * std::log(s) / s);
    spare_ = v * f;
    has_spare_ = true;
    return u * f;
  }

 private:
  std::mt19937_64& g_;
  bool has_spare_ = false;
  double spare_ = 0;
};

//! Haar-random orthogonal c x c matrix: Q of a Gaussian matrix (filled column by column), with
//! column j multiplied by sign(R_jj).
//! (A template, like random_hadamard's constructor, so that Eigen's QR is compiled only where used.)
template <class Generator>
Eigen::MatrixXd seeded_orthogonal(index c, Generator& g) {
  polar_gaussian normal(g);
  Eigen::MatrixXd a(c, c);
  for (index j = 0; j < c; ++j)
    for (index i = 0; i < c; ++i) a(i, j) = normal();
  Eigen::MatrixXd q;
  run_serial([&] {  // Eigen's blocked QR may use its thread-count dependent parallel GEMM
    Eigen::HouseholderQR<Eigen::MatrixXd> qr(a);
    q = qr.householderQ();
    for (index j = 0; j < c; ++j)
      if (qr.matrixQR()(j, j) < 0) q.col(j) *= -1.0;
  });
  return q;
}

//! Butterflies of the Walsh-Hadamard transform on `lanes` contiguous values at a and b:
//! (a, b) <- (a + b, a - b). L > 0 fixes the lane count at compile time (vectorizes fully).
template <index L, class T>
inline void butterfly2(T* a, T* b, index lanes) {
  const index m = L > 0 ? L : lanes;
  for (index r = 0; r < m; ++r) {
    const T x = a[r], y = b[r];
    a[r] = x + y;
    b[r] = x - y;
  }
}

//! Two stages (h and 2h) at once on four lane groups: the same additions, in the same order, as
//! two radix-2 stages, with half the memory passes.
template <index L, class T>
inline void butterfly4(T* a, T* b, T* c, T* d, index lanes) {
  const index m = L > 0 ? L : lanes;
  for (index r = 0; r < m; ++r) {
    const T s0 = a[r] + b[r], d0 = a[r] - b[r], s1 = c[r] + d[r], d1 = c[r] - d[r];
    a[r] = s0 + s1;
    c[r] = s0 - s1;
    b[r] = d0 + d1;
    d[r] = d0 - d1;
  }
}

//! Stages h = h0, 2 h0, ... < len over positions of `lanes` values each (radix 4, then radix 2).
template <index L, class T>
void fwht_stages(T* v, index len, index lanes, index h0) {
  const index m = L > 0 ? L : lanes;
  index h = h0;
  for (; 4 * h <= len; h *= 4)
    for (index s = 0; s < len; s += 4 * h)
      for (index i = s; i < s + h; ++i)
        butterfly4<L>(v + i * m, v + (i + h) * m, v + (i + 2 * h) * m, v + (i + 3 * h) * m, m);
  for (; h < len; h *= 2)
    for (index s = 0; s < len; s += 2 * h)
      for (index i = s; i < s + h; ++i) butterfly2<L>(v + i * m, v + (i + h) * m, m);
}

//! In-place unnormalized Walsh-Hadamard transform over `len` (a power of two) positions, each
//! holding `lanes` contiguous values: v[r + i * lanes] is lane r of position i.
template <class T>
void fwht(T* v, index len, index lanes) {
  if (len < 2) return;
  if (lanes == 1 && len >= 16) {
    // One lane: position i = 8 u + w. The stages h = 1, 2, 4 transform w inside each group of
    // 8 (in registers); the others are the transform over u with 8 contiguous lanes.
    for (index g = 0; g < len; g += 8) {
      T* x = v + g;
      const T a0 = x[0] + x[1], a1 = x[0] - x[1], a2 = x[2] + x[3], a3 = x[2] - x[3];
      const T a4 = x[4] + x[5], a5 = x[4] - x[5], a6 = x[6] + x[7], a7 = x[6] - x[7];
      const T b0 = a0 + a2, b2 = a0 - a2, b1 = a1 + a3, b3 = a1 - a3;
      const T b4 = a4 + a6, b6 = a4 - a6, b5 = a5 + a7, b7 = a5 - a7;
      x[0] = b0 + b4;
      x[4] = b0 - b4;
      x[1] = b1 + b5;
      x[5] = b1 - b5;
      x[2] = b2 + b6;
      x[6] = b2 - b6;
      x[3] = b3 + b7;
      x[7] = b3 - b7;
    }
    fwht_stages<8>(v, len / 8, 8, 1);
    return;
  }
  // Cache blocking: the first stages only mix positions inside blocks of `blk` positions
  // (about 16 KiB), so they run block by block from L1; the rest stream over the whole buffer.
  // Same additions in the same order per element, so the result does not depend on `blk`.
  index blk = 2;
  while (blk < len && 2 * blk * lanes * index(sizeof(T)) <= 16384) blk *= 2;
  auto run = [&](auto lanes_c) {
    constexpr index L = decltype(lanes_c)::value;
    if (blk < len) {
      for (index s = 0; s < len; s += blk) fwht_stages<L>(v + s * lanes, blk, lanes, 1);
      fwht_stages<L>(v, len, lanes, blk);
    } else {
      fwht_stages<L>(v, len, lanes, 1);
    }
  };
  switch (lanes) {
    case 8: run(std::integral_constant<index, 8>{}); break;
    case 16: run(std::integral_constant<index, 16>{}); break;
    case 32: run(std::integral_constant<index, 32>{}); break;
    case 64: run(std::integral_constant<index, 64>{}); break;
    default: run(std::integral_constant<index, 0>{}); break;
  }
}

}  // namespace detail

//! True when hadamard_matrix(order) can build a Hadamard matrix of this order.
inline bool hadamard_constructible(index order) {
  return detail::find_hadamard(order).kind != detail::hadamard_kind::none;
}

//! A Hadamard matrix of the given order (entries ±1, H H^T = order * I), built by Sylvester,
//! Paley I, Paley II or doubling (file comment). Throws invalid_argument when none of these
//! constructions reaches the order.
inline matrix<double> hadamard_matrix(index order) {
  const detail::hadamard_recipe r = detail::find_hadamard(order);
  detail::require(r.kind != detail::hadamard_kind::none, "yaqa::hadamard_matrix: argument 'order' = ",
                  order,
                  " is not reachable by the Sylvester, Paley I/II or doubling constructions; expected 1, "
                  "2 or a multiple of 4 such as 12, 20, 28, 36, 44, 52, 60");
  return detail::build_hadamard(order, r);
}

//! The random Hadamard transform U = S A of dimension n (file comment). Immutable and thread-safe.
class random_hadamard {
 public:
  //! Throws invalid_argument for n < 1. (A template only so that Eigen's QR, used for orders with
  //! no Hadamard matrix, is compiled where a transform is built, not in every translation unit
  //! that includes this header: 2 of the 13 CPU-seconds an empty one took.)
  template <std::integral Seed>
  random_hadamard(index n, Seed seed) : n_(n), seed_(static_cast<std::uint64_t>(seed)) {
    detail::require(n >= 1, "yaqa::random_hadamard: argument 'n' must be >= 1, got ", n);
    std::mt19937_64 g(seed);
    signs_.resize(static_cast<std::size_t>(n));
    for (auto& s : signs_) s = (g() >> 63) ? std::int8_t(-1) : std::int8_t(1);
    index c = n, pw = 1;
    while (c % 2 == 0) {
      c /= 2;
      pw *= 2;
    }
    if (c == 1) {
      k_ = 1;
      pw_ = n;
      g_ = matrix<double>::Ones(1, 1);
      scale_ = 1.0 / std::sqrt(double(n));
    } else if (pw >= 4 && hadamard_constructible(4 * c)) {
      k_ = 4 * c;
      pw_ = n / k_;
      g_ = hadamard_matrix(k_);
      scale_ = 1.0 / std::sqrt(double(n));
    } else {
      k_ = c;
      pw_ = pw;
      hadamard_ = false;
      g_ = detail::seeded_orthogonal(c, g);
      scale_ = 1.0 / std::sqrt(double(pw));
    }
    g_f_ = g_.cast<float>();
  }

  [[nodiscard]] index dim() const { return n_; }
  [[nodiscard]] std::uint64_t seed() const { return seed_; }
  //! S's diagonal, ±1.
  [[nodiscard]] const std::vector<std::int8_t>& signs() const { return signs_; }
  //! K, the order of the dense factor (1 for a power of two).
  [[nodiscard]] index dense_order() const { return k_; }
  //! 2^p, the order of the Sylvester factor.
  [[nodiscard]] index sylvester_order() const { return pw_; }
  //! False when the dense factor is the random orthogonal fallback.
  [[nodiscard]] bool is_hadamard() const { return hadamard_; }
  //! The dense K x K factor G of A = scale (G ⊗ H_P), in T (float: G rounded once from double).
  template <Scalar T>
  [[nodiscard]] const matrix<T>& dense_factor() const {
    return dense<T>();
  }
  //! The scalar of A = scale (G ⊗ H_P): 1/sqrt(n) (Hadamard G) or 1/sqrt(P) (orthogonal G).
  [[nodiscard]] double scale() const { return scale_; }

  //! E.g. "sylvester(4096)", "hadamard(28) x sylvester(512)", "orthogonal(21) x sylvester(256)".
  [[nodiscard]] std::string description() const {
    if (k_ == 1) return detail::concat("sylvester(", pw_, ")");
    std::string s = detail::concat(hadamard_ ? "hadamard(" : "orthogonal(", k_, ")");
    if (pw_ > 1) s += detail::concat(" x sylvester(", pw_, ")");
    return s;
  }

  //! side::left: x <- op(U) x (x has n rows); side::right: x <- x op(U) (x has n columns).
  //! Throws shape_error otherwise. Runs on all of OpenMP's threads; bit-identical for any count.
  template <Scalar T>
  void apply(side s, trans t, matrix_view<T> x) const {
    apply(cpu_backend{}, s, t, x);
  }

  //! As above, on the threads of `b`.
  template <Scalar T>
  void apply(const cpu_backend& b, side s, trans t, matrix_view<T> x) const {
    constexpr const char* what = "yaqa::random_hadamard::apply";
    if (s == side::left)
      detail::require<shape_error>(x.rows == n_, what, ": argument 'x' must have ", n_,
                                   " rows (side::left, U is ", n_, "x", n_, "), got ", x.rows, "x",
                                   x.cols);
    else
      detail::require<shape_error>(x.cols == n_, what, ": argument 'x' must have ", n_,
                                   " columns (side::right, U is ", n_, "x", n_, "), got ", x.rows,
                                   "x", x.cols);
    if (x.empty()) return;
    // Per vector v: "forward" v <- S A v, "backward" v <- A^T S v. Left: v is a column, op(U) v.
    // Right: v^T is a row, v^T U = (U^T v)^T, so x U is backward and x U^T forward.
    const bool forward = (s == side::left) == (t == trans::none);
    if (s == side::left) {
      // Columns are contiguous: transform each in place, one lane.
      detail::parallel_chunks(b, x.cols, detail::chunk_width(x.cols, 16), [&](index c0, index w) {
        std::vector<T> tmp(static_cast<std::size_t>(k_ > 1 ? n_ : 0));
        for (index j = c0; j < c0 + w; ++j) transform_lanes<T>(x.data + j * x.ld, 1, forward, tmp.data());
      });
    } else {
      // Rows are strided: copy `lanes` rows into a lane-interleaved buffer (vectorizes the
      // butterflies over rows), transform, copy back. Many lanes make each visit of a column
      // (a different memory page) move more data; the lane count depends on the shape only.
      index lanes = 16;  // a power of two in [16, 256], about 4 MiB of buffer (L3-resident)
      while (lanes < 256 && 2 * lanes * n_ * index(sizeof(T)) <= (index(1) << 22)) lanes *= 2;
      detail::parallel_chunks(b, x.rows, lanes, [&](index r0, index h) {
        std::vector<T> buf(static_cast<std::size_t>(h * n_)), tmp(static_cast<std::size_t>(k_ > 1 ? h * n_ : 0));
        for (index i = 0; i < n_; ++i)
          std::copy_n(x.data + r0 + i * x.ld, h, buf.data() + i * h);
        transform_lanes<T>(buf.data(), h, forward, tmp.data());
        for (index i = 0; i < n_; ++i)
          std::copy_n(buf.data() + i * h, h, x.data + r0 + i * x.ld);
      });
    }
  }

  //! The dense n x n matrix U (for tests and small problems), built entry by entry from its
  //! definition, independently of apply().
  template <Scalar T>
  [[nodiscard]] matrix<T> matrix_form() const {
    matrix<double> u(n_, n_);
    for (index j = 0; j < n_; ++j) {
      const index kj = j / pw_, jj = j % pw_;
      for (index i = 0; i < n_; ++i) {
        const index ki = i / pw_, ji = i % pw_;
        const double hp = (std::popcount(std::uint64_t(ji & jj)) & 1) ? -1.0 : 1.0;
        u(i, j) = double(signs_[static_cast<std::size_t>(i)]) * scale_ * g_(ki, kj) * hp;
      }
    }
    if constexpr (std::is_same_v<T, double>)
      return u;
    else
      return u.cast<T>();
  }

 private:
  template <class T>
  const matrix<T>& dense() const {
    if constexpr (std::is_same_v<T, float>)
      return g_f_;
    else
      return g_;
  }

  template <class T>
  void scale_positions(T* v, index lanes) const {
    const T sc = T(scale_);
    for (index i = 0; i < n_; ++i) {
      const T c = signs_[static_cast<std::size_t>(i)] < 0 ? -sc : sc;
      T* p = v + i * lanes;
      for (index r = 0; r < lanes; ++r) p[r] *= c;
    }
  }

  //! v (n positions x `lanes`): forward v <- S A v, backward v <- A^T S v, per lane.
  //! A = scale (G ⊗ H_P): viewing a lane as the P x K matrix X, (G ⊗ H_P) vec X = vec(H_P X G^T),
  //! and A^T gives vec(H_P X G). With lanes, X stacks the lanes: (lanes * P) x K.
  template <class T>
  void transform_lanes(T* v, index lanes, bool forward, T* tmp) const {
    if (!forward) scale_positions(v, lanes);
    const index seg = pw_ * lanes;
    for (index k = 0; k < k_; ++k) detail::fwht(v + k * seg, pw_, lanes);
    if (k_ > 1) {
      Eigen::Map<matrix<T>> xm(v, seg, k_);
      Eigen::Map<matrix<T>> ym(tmp, seg, k_);
      if (forward)
        ym.noalias() = xm * dense<T>().transpose();
      else
        ym.noalias() = xm * dense<T>();
      xm = ym;
    }
    if (forward) scale_positions(v, lanes);
  }

  index n_ = 0, k_ = 1, pw_ = 1;
  std::uint64_t seed_ = 0;
  bool hadamard_ = true;
  std::vector<std::int8_t> signs_;
  matrix<double> g_;   // K x K: H_K (±1) or the orthogonal fallback
  matrix<float> g_f_;  // the same in float
  double scale_ = 1;   // A = scale * (G ⊗ H_P)
};

}  // namespace yaqa
