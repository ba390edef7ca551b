// How the GPU tests compare a device result with the CPU backend's (fp32).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>

#include "kadapter/models/parameters.hpp"

namespace gpu_test {

using kadapter::ParamSlot;

constexpr double kTol = 1e-5;

/// max |a - b| / max |b| (b the CPU result); infinite for a NaN on either side or a
/// mismatched infinity (a NaN must not hide in a maximum).
inline double rel_error(const std::vector<float>& gpu, const std::vector<float>& cpu) {
  BOOST_REQUIRE_EQUAL(gpu.size(), cpu.size());
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < cpu.size(); ++i) {
    if (!std::isfinite(gpu[i]) || !std::isfinite(cpu[i])) {
      if (gpu[i] == cpu[i]) continue;  // the same infinity
      return HUGE_VAL;                 // NaN anywhere, or a finite value against an infinity
    }
    err = std::max(err, std::abs(static_cast<double>(gpu[i]) - cpu[i]));
    scale = std::max(scale, std::abs(static_cast<double>(cpu[i])));
  }
  return scale > 0 ? err / scale : err;
}

/// The error of every tensor of a flat parameter (or gradient) array on its own, named:
/// max |gpu - cpu| over the tensor ≤ 1e-5 · max(max |cpu| of the tensor, 1e-3 · max |cpu| of
/// all). The floor matters for gradients that are exactly 0 in exact arithmetic (the key
/// bias: a constant added to every score of a softmax row changes nothing), whose fp32 values
/// are rounding noise of ~1e-8 that no other summation order reproduces.
/// @p tol and @p floor default to the fp32 values above; the bf16 tests pass their own.
/// Tensors named in @p zero (gradient 0 in exact arithmetic, e.g. a bias that cancels in a
/// softmax, so both sides hold rounding noise) must instead be small on both sides:
/// max(|gpu|, |cpu|) ≤ tol · max |cpu| of all.
inline void check_per_tensor(const std::vector<float>& gpu, const std::vector<float>& cpu,
                             const std::vector<ParamSlot<float>>& table, const std::string& what = "",
                             double tol = kTol, double floor = 1e-3, const std::vector<std::string>& zero = {}) {
  BOOST_REQUIRE_EQUAL(gpu.size(), cpu.size());
  double all = 0;
  for (float v : cpu) all = std::max(all, std::abs(static_cast<double>(v)));
  for (const auto& slot : table) {
    const auto first = static_cast<std::ptrdiff_t>(slot.offset), last = first + slot.size();
    if (std::find(zero.begin(), zero.end(), slot.name) != zero.end()) {
      double largest = 0;
      for (auto i = first; i < last; ++i)
        largest = std::max({largest, std::abs(static_cast<double>(gpu[i])), std::abs(static_cast<double>(cpu[i]))});
      BOOST_TEST(largest <= tol * all, what << slot.name << " (0 in exact arithmetic): largest " << largest << ", scale " << all);
      continue;
    }
    double err = 0, scale = floor * all;
    bool finite = true;
    for (auto i = first; i < last; ++i) {
      if (!std::isfinite(gpu[i]) || !std::isfinite(cpu[i])) finite = false;
      err = std::max(err, std::abs(static_cast<double>(gpu[i]) - cpu[i]));
      scale = std::max(scale, std::abs(static_cast<double>(cpu[i])));
    }
    BOOST_TEST((finite && err <= tol * scale), what << slot.name << ": error " << err << ", scale " << scale);
  }
}

}  // namespace gpu_test
