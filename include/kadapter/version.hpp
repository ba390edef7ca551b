/// @file version.hpp
/// @brief Library version macros (CMake reads them to set the package version).
#pragma once

#define KADAPTER_VERSION_MAJOR 0
#define KADAPTER_VERSION_MINOR 1
#define KADAPTER_VERSION_PATCH 0

namespace kadapter {
/// @brief The library version as "MAJOR.MINOR.PATCH".
inline constexpr const char* version_string = "0.1.0";
}  // namespace kadapter
