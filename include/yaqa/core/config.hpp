#pragma once
//! \file
//! Library-wide configuration: the index type and the version.
#include <cstddef>

#if __has_include(<yaqa/version.hpp>)
#include <yaqa/version.hpp>
#else
// Used only when the headers are consumed without CMake's generated version header.
#define YAQA_VERSION_MAJOR 0
#define YAQA_VERSION_MINOR 1
#define YAQA_VERSION_PATCH 0
#define YAQA_VERSION_STRING "0.1.0"
#endif

namespace yaqa {

//! Signed index type for all sizes and offsets (matches Eigen::Index and std::ptrdiff_t).
using index = std::ptrdiff_t;

inline constexpr const char* version_string = YAQA_VERSION_STRING;

}  // namespace yaqa
