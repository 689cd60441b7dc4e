#pragma once
//! \file
//! Memory spaces: where a matrix_view's data lives, and which backends may touch it.
#include <string_view>
#include <type_traits>

namespace yaqa {

//! Ordinary host memory (what new, std::vector and Eigen allocate).
struct host_space {
  static constexpr std::string_view name = "host";
};

//! True when code running on backend B may dereference data in memory space Space.
//! Backends specialize this for the spaces they can reach (Kokkos' SpaceAccessibility idea).
template <class B, class Space>
inline constexpr bool accessible_from = std::is_same_v<typename B::memory_space, Space>;

}  // namespace yaqa
