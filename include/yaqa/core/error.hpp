#pragma once
//! \file
//! The exception hierarchy. Every exception the library throws derives from yaqa::error, and its
//! message names the routine, the argument or tensor, and what was expected.
#include <exception>
#include <new>
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

//! The class of an exception, for carrying it across a boundary that only passes a number and a
//! message (MPI ranks in yaqa-quantize, the Python binding's exception mapping) and rethrowing it
//! as the same class: classify_error(e), then throw_error_class(c, e.what()). Most derived first.
enum class error_class : int {
  format_error = 1,  //!< yaqa::format_error
  io_error,          //!< yaqa::io_error
  shape_error,       //!< yaqa::shape_error
  non_finite_error,  //!< yaqa::non_finite_error
  invalid_argument,  //!< yaqa::invalid_argument
  numerical_error,   //!< yaqa::numerical_error
  cuda_error,        //!< yaqa::cuda_error
  error,             //!< yaqa::error (none of the above)
  bad_alloc,         //!< std::bad_alloc
  other,             //!< any other std::exception
};

//! The most derived class of e among error_class's.
inline error_class classify_error(const std::exception& e) {
  if (dynamic_cast<const format_error*>(&e)) return error_class::format_error;
  if (dynamic_cast<const io_error*>(&e)) return error_class::io_error;
  if (dynamic_cast<const shape_error*>(&e)) return error_class::shape_error;
  if (dynamic_cast<const non_finite_error*>(&e)) return error_class::non_finite_error;
  if (dynamic_cast<const invalid_argument*>(&e)) return error_class::invalid_argument;
  if (dynamic_cast<const numerical_error*>(&e)) return error_class::numerical_error;
  if (dynamic_cast<const cuda_error*>(&e)) return error_class::cuda_error;
  if (dynamic_cast<const error*>(&e)) return error_class::error;
  if (dynamic_cast<const std::bad_alloc*>(&e)) return error_class::bad_alloc;
  return error_class::other;
}

//! The class's C++ name ("yaqa::shape_error", "std::bad_alloc", "std::exception").
inline const char* error_class_name(error_class c) {
  switch (c) {
    case error_class::format_error: return "yaqa::format_error";
    case error_class::io_error: return "yaqa::io_error";
    case error_class::shape_error: return "yaqa::shape_error";
    case error_class::non_finite_error: return "yaqa::non_finite_error";
    case error_class::invalid_argument: return "yaqa::invalid_argument";
    case error_class::numerical_error: return "yaqa::numerical_error";
    case error_class::cuda_error: return "yaqa::cuda_error";
    case error_class::error: return "yaqa::error";
    case error_class::bad_alloc: return "std::bad_alloc";
    case error_class::other: break;
  }
  return "std::exception";
}

//! Throws an exception of class c with message msg (std::bad_alloc carries no message; other and
//! out-of-range values throw std::runtime_error).
[[noreturn]] inline void throw_error_class(error_class c, const std::string& msg) {
  switch (c) {
    case error_class::format_error: throw format_error(msg);
    case error_class::io_error: throw io_error(msg);
    case error_class::shape_error: throw shape_error(msg);
    case error_class::non_finite_error: throw non_finite_error(msg);
    case error_class::invalid_argument: throw invalid_argument(msg);
    case error_class::numerical_error: throw numerical_error(msg);
    case error_class::cuda_error: throw cuda_error(msg);
    case error_class::error: throw error(msg);
    case error_class::bad_alloc: throw std::bad_alloc();
    case error_class::other: break;
  }
  throw std::runtime_error(msg);
}

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
