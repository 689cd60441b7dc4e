#pragma once
//! \file
//! matrix_view: a non-owning, column-major view of a matrix with a leading dimension.
//! Trivially copyable so it can be passed by value to kernels; it never allocates.
#include <type_traits>

#include <yaqa/core/config.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/memory_space.hpp>

namespace yaqa {

//! Column-major view: element (i, j) lives at data[i + j * ld], with ld >= rows.
//! T may be const-qualified for read-only views; Space names where the data lives.
template <class T, class Space = host_space>
struct matrix_view {
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using memory_space = Space;

  T* data = nullptr;
  index rows = 0;
  index cols = 0;
  index ld = 0;

  constexpr matrix_view() = default;
  constexpr matrix_view(T* d, index r, index c, index l) : data(d), rows(r), cols(c), ld(l) {}
  constexpr matrix_view(T* d, index r, index c) : data(d), rows(r), cols(c), ld(r > 0 ? r : 1) {}

  //! A read-only view of the same data.
  template <class U = T>
    requires(!std::is_const_v<U>)
  constexpr operator matrix_view<const U, Space>() const {
    return {data, rows, cols, ld};
  }

  [[nodiscard]] constexpr index size() const { return rows * cols; }
  [[nodiscard]] constexpr bool empty() const { return rows == 0 || cols == 0; }
  //! True when the columns are stored back to back (ld == rows).
  [[nodiscard]] constexpr bool contiguous() const { return ld == rows || cols <= 1; }

  //! Element access; only host views are dereferenceable from host code.
  constexpr T& operator()(index i, index j) const
    requires std::is_same_v<Space, host_space>
  {
    return data[i + j * ld];
  }

  //! The nr x nc sub-block whose top-left element is (r, c). Bounds are the caller's contract.
  [[nodiscard]] constexpr matrix_view block(index r, index c, index nr, index nc) const {
    return {data + r + c * ld, nr, nc, ld};
  }
  [[nodiscard]] constexpr matrix_view col_block(index c, index nc) const {
    return block(0, c, rows, nc);
  }
  [[nodiscard]] constexpr matrix_view row_block(index r, index nr) const {
    return block(r, 0, nr, cols);
  }
};

//! Throws shape_error unless v is rows x cols. `what` names the routine, `name` the argument.
template <class T, class S>
void check_shape(const char* what, const char* name, const matrix_view<T, S>& v, index rows,
                 index cols) {
  detail::require<shape_error>(v.rows == rows && v.cols == cols, what, ": argument '", name,
                               "' must be ", rows, "x", cols, ", got ", v.rows, "x", v.cols);
}

}  // namespace yaqa
