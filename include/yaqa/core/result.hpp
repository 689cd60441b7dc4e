#pragma once
//! \file
//! result<T>: a value or a typed failure the caller can act on (an `expected`-like type; C++20
//! has no std::expected). Factorizations return it so a failed Cholesky is a decision for the
//! caller (e.g. round without feedback), never an exception deep inside or a silent NaN.
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include <yaqa/core/config.hpp>
#include <yaqa/core/error.hpp>

namespace yaqa {

//! Why a numerical procedure gave up, with what it tried.
struct failure {
  std::string reason;      //!< human-readable, names the matrix and the step that failed
  index failed_column = -1;  //!< first column whose pivot failed, or -1
  double last_damp = 0;    //!< damping (absolute, added to the diagonal) at the last attempt
  int attempts = 0;        //!< number of factorization attempts made
};

template <class T>
class result {
 public:
  result(T value) : v_(std::move(value)) {}             // NOLINT: implicit by design
  result(failure f) : v_(std::move(f)) {}               // NOLINT

  [[nodiscard]] bool has_value() const { return v_.index() == 0; }
  explicit operator bool() const { return has_value(); }

  //! The value; throws numerical_error carrying the failure's reason when there is none.
  T& value() & { return check(), std::get<0>(v_); }
  const T& value() const& { return check(), std::get<0>(v_); }
  T&& value() && { return check(), std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  //! The failure; only valid when !has_value().
  [[nodiscard]] const failure& error() const { return std::get<1>(v_); }

 private:
  void check() const {
    if (!has_value()) throw numerical_error(std::get<1>(v_).reason);
  }
  std::variant<T, failure> v_;
};

}  // namespace yaqa
