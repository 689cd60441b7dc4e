#pragma once
// Small string helpers for checking error messages (shared so that an area's test files can be
// compiled as one translation unit).
#include <string>

namespace yaqa::test {

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace yaqa::test
