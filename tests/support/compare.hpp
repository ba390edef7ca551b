// Helpers for comparing computed tensors with references in tests.
#pragma once

#include <cmath>
#include <cstddef>
#include <span>

namespace kadapter::test {

/// Norm-wise relative error ||a - b|| / ||b|| (in double).
template <class A, class B>
double relative_error(std::span<const A> a, std::span<const B> b) {
  double diff = 0, ref = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    diff += d * d;
    ref += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  return std::sqrt(diff) / std::sqrt(ref);
}

/// max |a - b| / max |b|: every element within that fraction of the largest magnitude.
template <class A, class B>
double max_error_over_max(std::span<const A> a, std::span<const B> b) {
  double diff = 0, ref = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::fmax(diff, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    ref = std::fmax(ref, std::fabs(static_cast<double>(b[i])));
  }
  return diff / ref;
}

}  // namespace kadapter::test
