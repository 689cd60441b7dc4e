#pragma once
//! \file
//! Device memory: device_buffer<T> (a flat array) and device_matrix<T> (column-major, owning),
//! viewed as matrix_view<T, cuda::device_space>. Host <-> device copies are explicit
//! (to_device, to_host, copy); nothing converts implicitly.
//!
//! Memory is stream-ordered on the backend that allocated it (cudaMallocAsync / cudaFreeAsync on
//! its stream): work queued on that backend before the owner is destroyed still sees valid
//! memory. Using a buffer from another stream needs the caller's own synchronization.
#if !defined(YAQA_HAS_CUDA)
#error "backend/cuda/memory.hpp needs the yaqa::cuda target (YAQA_HAS_CUDA)"
#endif
#include <cstddef>
#include <limits>
#include <type_traits>
#include <utility>

#include <cuda_runtime_api.h>

#include <yaqa/backend/cuda/backend.hpp>
#include <yaqa/core/eigen.hpp>
#include <yaqa/core/error.hpp>
#include <yaqa/core/matrix_view.hpp>

namespace yaqa::cuda {

template <class T>
using device_view = matrix_view<T, device_space>;

//! An owning, uninitialized array of `size` elements of T in device memory. Move-only.
template <class T>
class device_buffer {
  static_assert(std::is_trivially_copyable_v<T>, "device_buffer<T>: T must be trivially copyable");

 public:
  device_buffer() = default;
  device_buffer(const cuda_backend& b, index size) : stream_(b.stream()), size_(size) {
    yaqa::detail::require(size >= 0, "yaqa::cuda::device_buffer: argument 'size' must be >= 0, got ", size);
    if (size > 0) {
      void* p = nullptr;
      check(cudaMallocAsync(&p, static_cast<std::size_t>(size) * sizeof(T), stream_),
            "yaqa::cuda::device_buffer: cudaMallocAsync");
      data_ = static_cast<T*>(p);
    }
  }
  device_buffer(device_buffer&& o) noexcept
      : stream_(o.stream_), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    if (this != &o) {
      release();
      stream_ = o.stream_;
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  ~device_buffer() { release(); }

  [[nodiscard]] T* data() const { return data_; }
  [[nodiscard]] index size() const { return size_; }

  //! Sets every byte to zero, asynchronously on the owning stream.
  void zero() {
    if (size_ > 0)
      check(cudaMemsetAsync(data_, 0, static_cast<std::size_t>(size_) * sizeof(T), stream_),
            "yaqa::cuda::device_buffer::zero: cudaMemsetAsync");
  }

 private:
  void release() noexcept {
    if (data_) cudaFreeAsync(data_, stream_);  // destructors never throw; an error here is sticky
    data_ = nullptr;
  }
  stream_t stream_ = nullptr;
  T* data_ = nullptr;
  index size_ = 0;
};

//! An owning rows x cols column-major matrix in device memory (ld == rows). Move-only.
template <class T>
class device_matrix {
 public:
  using value_type = T;
  device_matrix() = default;
  device_matrix(const cuda_backend& b, index rows, index cols)
      : buf_(b, checked_size(rows, cols)), rows_(rows), cols_(cols) {}

  [[nodiscard]] index rows() const { return rows_; }
  [[nodiscard]] index cols() const { return cols_; }
  [[nodiscard]] T* data() const { return buf_.data(); }
  [[nodiscard]] device_view<T> view() { return {buf_.data(), rows_, cols_, ld()}; }
  [[nodiscard]] device_view<const T> view() const { return {buf_.data(), rows_, cols_, ld()}; }
  [[nodiscard]] device_view<const T> cview() const { return view(); }
  //! Sets every element to zero (all-zero bytes), asynchronously.
  void zero() { buf_.zero(); }

 private:
  [[nodiscard]] index ld() const { return rows_ > 0 ? rows_ : 1; }
  static index checked_size(index rows, index cols) {
    yaqa::detail::require<shape_error>(rows >= 0 && cols >= 0,
                                 "yaqa::cuda::device_matrix: the shape must be non-negative, got ",
                                 rows, "x", cols);
    return rows * cols;
  }
  device_buffer<T> buf_;
  index rows_ = 0, cols_ = 0;
};

namespace detail {

template <class T, class S1, class S2>
void copy_2d(const cuda_backend& b, matrix_view<const T, S1> src, matrix_view<T, S2> dst,
             cudaMemcpyKind kind, const char* what) {
  check_shape(what, "dst", dst, src.rows, src.cols);
  if (src.empty()) return;
  const std::size_t es = sizeof(T);
  check(cudaMemcpy2DAsync(dst.data, static_cast<std::size_t>(dst.ld) * es, src.data,
                          static_cast<std::size_t>(src.ld) * es, static_cast<std::size_t>(src.rows) * es,
                          static_cast<std::size_t>(src.cols), kind, b.stream()),
        what);
}

}  // namespace detail

//! Copies a host view into a device view of the same shape. Returns once the host data has been
//! read (pageable memory is staged by the driver), so `src` may be freed afterwards.
template <class T>
void copy(const cuda_backend& b, matrix_view<const T, host_space> src, device_view<T> dst) {
  detail::copy_2d<T>(b, src, dst, cudaMemcpyHostToDevice, "yaqa::cuda::copy (host to device)");
}

//! Copies a device view into a host view of the same shape; synchronizes the backend
//! so `dst` holds the data when this returns.
template <class T>
void copy(const cuda_backend& b, device_view<const T> src, matrix_view<T, host_space> dst) {
  detail::copy_2d<T>(b, src, dst, cudaMemcpyDeviceToHost, "yaqa::cuda::copy (device to host)");
  b.synchronize();
}

//! Copies between two device views of the same shape (asynchronous).
template <class T>
void copy(const cuda_backend& b, device_view<const T> src, device_view<T> dst) {
  detail::copy_2d<T>(b, src, dst, cudaMemcpyDeviceToDevice, "yaqa::cuda::copy (device to device)");
}

//! A new device matrix holding a copy of the host view.
template <class T>
device_matrix<std::remove_const_t<T>> to_device(const cuda_backend& b, matrix_view<T, host_space> src) {
  using U = std::remove_const_t<T>;
  device_matrix<U> d(b, src.rows, src.cols);
  copy<U>(b, matrix_view<const U, host_space>(src.data, src.rows, src.cols, src.ld), d.view());
  return d;
}

//! A new host (Eigen) matrix holding a copy of the device view; synchronizes the backend.
template <class T>
matrix<std::remove_const_t<T>> to_host(const cuda_backend& b, device_view<T> src) {
  using U = std::remove_const_t<T>;
  matrix<U> h(src.rows, src.cols);
  copy<U>(b, device_view<const U>(src.data, src.rows, src.cols, src.ld),
          matrix_view<U, host_space>(h.data(), h.rows(), h.cols(), h.rows() > 0 ? h.rows() : 1));
  return h;
}
template <class T>
matrix<T> to_host(const cuda_backend& b, const device_matrix<T>& src) {
  return to_host(b, src.view());
}

//! Copies `n` elements from host memory to device memory (asynchronous, src readable afterwards).
template <class T>
void copy_to_device(const cuda_backend& b, const T* src, T* dst, index n) {
  if (n > 0)
    check(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * sizeof(T), cudaMemcpyHostToDevice,
                          b.stream()),
          "yaqa::cuda::copy_to_device: cudaMemcpyAsync");
}

//! Copies `n` elements from device memory to host memory and synchronizes.
template <class T>
void copy_to_host(const cuda_backend& b, const T* src, T* dst, index n) {
  if (n > 0)
    check(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * sizeof(T), cudaMemcpyDeviceToHost,
                          b.stream()),
          "yaqa::cuda::copy_to_host: cudaMemcpyAsync");
  b.synchronize();
}

}  // namespace yaqa::cuda
