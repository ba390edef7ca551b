/// @file tensor_report.hpp
/// @brief Collects what does not fit when a file's tensors are matched against a model, and
/// reports it all in one error.
#pragma once

#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "kadapter/config.hpp"
#include "kadapter/core/error.hpp"

namespace kadapter::io {

/// @brief "[a, b, c]" for a shape.
template <class I>
std::string shape_to_string(const std::vector<I>& s) {
  std::string r = "[";
  for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

/// @brief Missing, wrongly shaped and unexpected tensors found while loading a file.
struct TensorMismatch {
  std::vector<std::string> missing;
  std::vector<std::string> misshaped;  ///< "NAME has shape [..], expected [..]" and similar
  std::vector<std::string> unexpected;

  bool empty() const noexcept { return missing.empty() && misshaped.empty() && unexpected.empty(); }

  /// @brief Throw one Error starting with @p headline that lists every problem by name;
  /// does nothing when there is none.
  void throw_if_any(const std::string& headline) const {
    if (empty()) return;
    std::string msg = headline;
    auto list = [&msg](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      msg += "\n  " + std::to_string(v.size()) + " " + what + ":";
      for (const auto& s : v) msg += "\n    " + s;
    };
    list("missing", missing);
    list("wrongly shaped or typed", misshaped);
    list("unexpected", unexpected);
    throw Error(msg);
  }
};

/// @brief Throw an Error naming @p file, @p tensor and the first element that is NaN or
/// infinite: weights that are not finite would silently turn every output into NaN.
template <class T>
void require_finite(std::span<const T> values, const std::string& file, const std::string& tensor) {
  for (std::size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i]))
      throw Error(file + ": tensor " + tensor + " holds a non-finite value (" + std::to_string(values[i]) +
                  ") at element " + std::to_string(i));
}

}  // namespace kadapter::io
