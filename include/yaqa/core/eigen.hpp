#pragma once
//! \file
//! Bridges between Eigen dense objects and matrix_view (host memory only).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>

namespace yaqa {

template <class T>
using matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
template <class T>
using vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;

//! Eigen map of a host view (keeps the leading dimension).
template <class T>
auto as_eigen(const matrix_view<T, host_space>& v) {
  using M = std::conditional_t<std::is_const_v<T>, const matrix<std::remove_const_t<T>>,
                               matrix<std::remove_const_t<T>>>;
  return Eigen::Map<M, Eigen::Unaligned, Eigen::OuterStride<>>(v.data, v.rows, v.cols,
                                                               Eigen::OuterStride<>(v.ld));
}

//! View of a column-major Eigen object with direct access (Matrix, Map, Block of those).
template <class Derived>
  requires((Derived::Flags & Eigen::RowMajorBit) == 0 && (Derived::Flags & Eigen::DirectAccessBit) != 0)
auto view(Eigen::PlainObjectBase<Derived>& m) {
  using T = typename Derived::Scalar;
  return matrix_view<T>{m.data(), m.rows(), m.cols(), m.outerStride()};
}
template <class Derived>
  requires((Derived::Flags & Eigen::RowMajorBit) == 0 && (Derived::Flags & Eigen::DirectAccessBit) != 0)
auto view(const Eigen::PlainObjectBase<Derived>& m) {
  using T = typename Derived::Scalar;
  return matrix_view<const T>{m.data(), m.rows(), m.cols(), m.outerStride()};
}
template <class T, int O, class S>
auto view(const Eigen::Map<T, O, S>& m) {
  using E = std::remove_pointer_t<decltype(m.data())>;
  return matrix_view<E>{m.data(), m.rows(), m.cols(), m.outerStride()};
}

namespace detail {
//! True when some of the n values at p is NaN or Inf: an all-ones exponent, tested on the bits
//! (an OR reduction the compiler vectorizes; a scalar isfinite loop with an early exit does not,
//! and cost 3 % of a whole GPTQ run on its n x n H).
template <class E>
bool any_non_finite(const E* p, index n) {
  if constexpr (std::is_same_v<E, float> || std::is_same_v<E, double>) {
    using U = std::conditional_t<std::is_same_v<E, float>, std::uint32_t, std::uint64_t>;
    constexpr U exp = std::is_same_v<E, float> ? U(0x7f800000u) : U(0x7ff0000000000000ull);
    U bad = 0;
    for (index i = 0; i < n; ++i) {
      U u;
      std::memcpy(&u, p + i, sizeof u);
      bad |= U((u & exp) == exp);
    }
    return bad != 0;
  } else {
    for (index i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return true;
    return false;
  }
}
}  // namespace detail

//! Row and column of the first NaN/Inf of v in column-major order; {-1, -1} when all are finite.
template <class T>
std::pair<index, index> first_non_finite(const matrix_view<T, host_space>& v) {
  for (index j = 0; j < v.cols; ++j) {
    if (!detail::any_non_finite(v.data + j * v.ld, v.rows)) continue;  // the position only in a failing column
    for (index i = 0; i < v.rows; ++i)
      if (!std::isfinite(v(i, j))) return {i, j};
  }
  return {-1, -1};
}

//! Throws non_finite_error naming `name` and the first offending element when v has NaN/Inf.
template <class T>
void check_finite(const char* what, const char* name, const matrix_view<T, host_space>& v) {
  const auto [i, j] = first_non_finite(v);
  if (i >= 0)
    throw non_finite_error(detail::concat(what, ": argument '", name, "' contains ",
                                          std::isnan(v(i, j)) ? "NaN" : "Inf", " at (", i, ", ", j,
                                          "); expected finite values"));
}

}  // namespace yaqa
