#pragma once
//! \file
//! The backend trait. A backend is a small copyable type naming an execution resource and its
//! memory space; the operations the algorithms need live in backend_ops<B>, which each backend
//! specializes in its own header. Algorithms are written once against backend_ops.
#include <concepts>
#include <string_view>

#include <yaqa/core/concepts.hpp>
#include <yaqa/core/config.hpp>
#include <yaqa/core/matrix_view.hpp>

namespace yaqa {

//! Whether a matrix operand is used as is or transposed.
enum class trans { none, transpose };
//! Which side a triangular matrix multiplies from.
enum class side { left, right };

//! Operations of backend B. The primary template is never usable: including the backend's
//! header provides the specialization (CUTLASS-style guard, so a missing include is a readable
//! compile error rather than a silent overload miss).
template <class B>
struct backend_ops {
  static_assert(sizeof(B) == 0,
                "no backend_ops<B>: include the backend's header (e.g. <yaqa/backend/cpu/ops.hpp> "
                "or <yaqa/cuda.hpp>)");
};

//! A backend: copyable, names its memory space, can be synchronized.
template <class B>
concept Backend = std::copyable<B> && requires(const B& b) {
  typename B::memory_space;
  { B::name } -> std::convertible_to<std::string_view>;
  { b.synchronize() } -> std::same_as<void>;
};

//! A backend whose backend_ops provide the dense kernels the algorithms need for scalar T.
//! Each op is documented where it is specialized (see backend/cpu/ops.hpp).
template <class B, class T>
concept BackendFor =
    Backend<B> && Scalar<T> &&
    requires(const B& b, matrix_view<const T, typename B::memory_space> x,
             matrix_view<T, typename B::memory_space> a, const T* w, T alpha) {
      { backend_ops<B>::gemm(b, trans::none, trans::none, alpha, x, x, alpha, a) } -> std::same_as<void>;
      { backend_ops<B>::syrk_accumulate(b, x, alpha, a) } -> std::same_as<void>;
      { backend_ops<B>::weighted_syrk_accumulate(b, x, w, alpha, a) } -> std::same_as<void>;
      { backend_ops<B>::potrf_lower(b, a) } -> std::same_as<index>;
      { backend_ops<B>::trsm_lower(b, side::left, trans::none, false, x, a) } -> std::same_as<void>;
    };

}  // namespace yaqa
