#pragma once
//! \file
//! Basic concepts shared by every component.
#include <concepts>

namespace yaqa {

//! The floating-point types the numeric routines are instantiated for.
template <class T>
concept Scalar = std::same_as<T, float> || std::same_as<T, double>;

}  // namespace yaqa
