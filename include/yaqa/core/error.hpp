#pragma once
//! \file
//! The exception hierarchy. Every exception the library throws derives from yaqa::error, and its
//! message names the routine, the argument or tensor, and what was expected.
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace yaqa {

//! Base of every exception thrown by yaqa.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

//! An option or argument value is out of its documented range (bits, group size, tile size, seed...).
class invalid_argument : public error {
 public:
  using error::error;
};

//! Matrix or tensor dimensions do not agree (W vs H, tile size vs dims, ...).
class shape_error : public invalid_argument {
 public:
  using invalid_argument::invalid_argument;
};

//! An input contains NaN or Inf.
class non_finite_error : public invalid_argument {
 public:
  using invalid_argument::invalid_argument;
};

//! A numerical procedure failed in a way the caller asked to be told about by exception.
class numerical_error : public error {
 public:
  using error::error;
};

//! File input/output failed (missing file, unwritable directory, short read).
class io_error : public error {
 public:
  using error::error;
};

//! A file exists but its content is malformed (corrupt header, offsets out of range, bad dtype).
class format_error : public io_error {
 public:
  using io_error::io_error;
};

//! A CUDA, cuBLAS or cuSOLVER call failed; the message carries the status name.
class cuda_error : public error {
 public:
  using error::error;
};

namespace detail {

//! Concatenates the arguments with operator<< into one message string.
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

//! Throws E with the concatenated message when cond is false.
template <class E = invalid_argument, class... Args>
void require(bool cond, Args&&... args) {
  if (!cond) throw E(concat(std::forward<Args>(args)...));
}

}  // namespace detail
}  // namespace yaqa
