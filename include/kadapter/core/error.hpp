/// @file error.hpp
/// @brief The exception type for bad input from outside (files, flags, data).
#pragma once

#include <stdexcept>
#include <string>

namespace kadapter {

/// @brief Raised for bad input from outside the library: malformed files, wrong flags, data
/// that does not fit the model. The message names the file, the field and what was expected.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace kadapter
