#pragma once
//! \file
//! packed_symmetric<T>: a symmetric n x n matrix stored as its lower triangle, n(n+1)/2 values.
//!
//! Order: row-major over the lower triangle, (0,0),(1,0),(1,1),(2,0),(2,1),(2,2),... — the order
//! of `torch.tril_indices(n, n)`, which is how the YAQA and QuIP# reference code store their
//! Hessians (`*_hin.pt`, `*_hout.pt`, `flatH`). Using the same order means those files load with
//! zero copies, and a Hessian accumulator's state is one flat buffer that an MPI/NCCL reduction or
//! a file merge can sum directly. Element (i, j) with i >= j lives at i(i+1)/2 + j.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/config.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>

namespace yaqa {

template <Scalar T>
class packed_symmetric {
 public:
  using value_type = T;

  //! The 0 x 0 matrix.
  packed_symmetric() = default;

  //! The n x n zero matrix. Throws invalid_argument when n < 0.
  explicit packed_symmetric(index n) : n_(n) {
    detail::require(n >= 0, "yaqa::packed_symmetric: argument 'n' must be >= 0, got ", n);
    values_.assign(packed_size(n), T(0));
  }

  //! Number of stored values for dimension n: n(n+1)/2.
  [[nodiscard]] static constexpr std::size_t packed_size(index n) {
    return static_cast<std::size_t>(n) * static_cast<std::size_t>(n + 1) / 2;
  }

  //! Position of (i, j), i >= j, in the packed buffer (row-major lower triangle).
  [[nodiscard]] static constexpr std::size_t offset(index i, index j) {
    return packed_size(i) + static_cast<std::size_t>(j);
  }

  //! Default symmetry tolerance of from_full: sqrt(machine epsilon) relative to max |a_ij|.
  //! Loose enough for matrices formed by a non-symmetric GEMM (X^T X computed as a plain product
  //! differs from its transpose by rounding), tight enough to catch a matrix that is not
  //! symmetric at all (a wrong operand, a transposed non-symmetric factor).
  [[nodiscard]] static double default_symmetry_tolerance() {
    return std::sqrt(double(std::numeric_limits<T>::epsilon()));
  }

  //! Packs the lower triangle of the square matrix a (the upper triangle is not read for the
  //! values, only for the check).
  //! - Checks |a_ij - a_ji| <= symmetry_tolerance * max|a| for every pair and throws
  //!   invalid_argument naming the worst pair otherwise; pass infinity to skip the check.
  //! - Throws shape_error when a is not square, non_finite_error when it holds NaN/Inf.
  [[nodiscard]] static packed_symmetric from_full(matrix_view<const T> a,
                                                  double symmetry_tolerance = default_symmetry_tolerance()) {
    constexpr const char* what = "yaqa::packed_symmetric::from_full";
    check_shape(what, "a", a, a.rows, a.rows);
    check_finite(what, "a", a);
    const index n = a.rows;
    if (std::isfinite(symmetry_tolerance)) {
      double max_abs = 0, worst = 0;
      index wi = 0, wj = 0;
      for (index j = 0; j < n; ++j)
        for (index i = 0; i < n; ++i) max_abs = std::max(max_abs, std::abs(double(a(i, j))));
      for (index j = 0; j < n; ++j)
        for (index i = j + 1; i < n; ++i) {
          const double d = std::abs(double(a(i, j)) - double(a(j, i)));
          if (d > worst) worst = d, wi = i, wj = j;
        }
      detail::require(worst <= symmetry_tolerance * max_abs, what,
                      ": argument 'a' must be symmetric within ", symmetry_tolerance,
                      " * max|a| = ", symmetry_tolerance * max_abs, ", got |a(", wi, ",", wj,
                      ") - a(", wj, ",", wi, ")| = ", worst);
    }
    packed_symmetric p(n);
    // Row i of the lower triangle is column i of the upper triangle when a is symmetric; read the
    // lower triangle itself (strided) so the stored values are exactly a's lower triangle.
    for (index i = 0; i < n; ++i)
      for (index j = 0; j <= i; ++j) p.values_[offset(i, j)] = a(i, j);
    return p;
  }

  //! Copies `count` packed values (row-major lower triangle) and deduces n from
  //! count = n(n+1)/2. Throws invalid_argument when count is not a triangular number or values
  //! is null with count > 0. Values are not checked for finiteness (a loader may want to inspect).
  [[nodiscard]] static packed_symmetric from_packed(const T* values, std::size_t count) {
    constexpr const char* what = "yaqa::packed_symmetric::from_packed";
    detail::require(values != nullptr || count == 0, what,
                    ": argument 'values' is null but 'count' is ", count);
    // n = floor((sqrt(8 count + 1) - 1) / 2), corrected in integers against rounding.
    auto n = static_cast<index>((std::sqrt(8.0 * double(count) + 1.0) - 1.0) / 2.0);
    while (n > 0 && packed_size(n) > count) --n;
    while (packed_size(n + 1) <= count) ++n;
    detail::require(packed_size(n) == count, what,
                    ": argument 'count' must be a triangular number n(n+1)/2, got ", count,
                    " (n = ", n, " needs ", packed_size(n), ", n = ", n + 1, " needs ",
                    packed_size(n + 1), ")");
    packed_symmetric p;
    p.n_ = n;
    p.values_.assign(values, values + count);
    return p;
  }

  //! The full symmetric matrix (both triangles).
  [[nodiscard]] matrix<T> to_full() const {
    matrix<T> a(n_, n_);
    to_full(view(a));
    return a;
  }

  //! Writes the full symmetric matrix into out (n x n). Throws shape_error otherwise.
  void to_full(matrix_view<T> out) const {
    check_shape("yaqa::packed_symmetric::to_full", "out", out, n_, n_);
    // Packed row i is contiguous and equals column i of the upper triangle (contiguous in
    // column-major storage); the lower triangle is then its mirror.
    for (index i = 0; i < n_; ++i) {
      const T* row = values_.data() + offset(i, 0);
      for (index j = 0; j <= i; ++j) out(j, i) = row[j];
    }
    for (index j = 0; j < n_; ++j)
      for (index i = j + 1; i < n_; ++i) out(i, j) = out(j, i);
  }

  //! Element (i, j) for any order of i and j (no bounds check).
  [[nodiscard]] T operator()(index i, index j) const {
    return i >= j ? values_[offset(i, j)] : values_[offset(j, i)];
  }

  //! The same matrix in another precision.
  template <Scalar U>
  [[nodiscard]] packed_symmetric<U> cast() const {
    std::vector<U> v(values_.begin(), values_.end());
    return packed_symmetric<U>::from_packed(v.data(), v.size());
  }

  [[nodiscard]] T* data() { return values_.data(); }
  [[nodiscard]] const T* data() const { return values_.data(); }
  //! n, the matrix dimension.
  [[nodiscard]] index dim() const { return n_; }
  //! n(n+1)/2, the number of stored values.
  [[nodiscard]] std::size_t size() const { return values_.size(); }

  //! Exact (bitwise for non-NaN) equality of dimension and values.
  friend bool operator==(const packed_symmetric&, const packed_symmetric&) = default;

 private:
  index n_ = 0;
  std::vector<T> values_;
};

}  // namespace yaqa
