// Finite-difference gradient checks in double precision, and seeded random fills.
//
// check_gradient() perturbs the elements of a tensor in place (central differences), calls a
// scalar loss for each perturbation, and compares the numerical derivatives with an analytic
// gradient: relative error ||a - n|| / ||a + n|| over the elements checked, plus the worst
// single element. The loss must read the tensor through the same memory as the span given
// (parameters in a ParameterStore, an input vector captured by reference, ...). Each element
// is restored bit for bit after its perturbation, also when the loss throws.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <ostream>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace kadapter::test {

/// The outcome of one check_gradient() call.
struct GradCheckResult {
  std::string name;             ///< the tensor's name, for messages
  std::size_t size = 0;         ///< elements in the tensor
  std::size_t checked = 0;      ///< elements perturbed (all, or a random subset)
  double relative_error = 0;    ///< ||a - n|| / ||a + n|| (or ||a - n|| when both are ~0)
  double analytic_norm = 0;     ///< ||a|| over the checked elements
  double numeric_norm = 0;      ///< ||n|| over the checked elements
  bool both_zero = false;       ///< both norms below the zero guard: error is absolute
  std::size_t worst_index = 0;  ///< element with the largest |a - n|
  double worst_analytic = 0;
  double worst_numeric = 0;
  double worst_abs_error = 0;   ///< |a - n| at worst_index

  bool passed(double tolerance) const { return relative_error < tolerance; }
};

inline std::ostream& operator<<(std::ostream& os, const GradCheckResult& r) {
  os << r.name << ": rel " << r.relative_error << (r.both_zero ? " (abs, both ~0)" : "")
     << " over " << r.checked << "/" << r.size << " elements, |a| " << r.analytic_norm
     << ", |n| " << r.numeric_norm << ", worst [" << r.worst_index << "] a=" << r.worst_analytic
     << " n=" << r.worst_numeric << " |a-n|=" << r.worst_abs_error;
  return os;
}

inline std::string to_string(const GradCheckResult& r) {
  std::ostringstream os;
  os.precision(3);
  os << r;
  return os.str();
}

/// Settings of check_gradient().
struct GradCheckOptions {
  double step = 1e-6;             ///< h = step * max(1, |x|)
  std::size_t max_elements = 0;   ///< 0: every element; else a random subset of at most this many
  std::uint64_t seed = 0x9e3779b97f4a7c15ull;  ///< picks the subset (mixed with the name)
  /// When both norms are at most this, the gradient is ~0 and the absolute error ||a - n|| is
  /// reported. Central differences resolve about 1e-16·|L|/h ≈ 1e-10·|L| per element, so a
  /// gradient that is exactly zero (a key bias under softmax) reads as noise of that size.
  double zero_guard = 1e-8;
};

namespace detail {

// FNV-1a: the subset depends on the tensor's name as well as the seed, deterministically.
inline std::uint64_t name_hash(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Sorted indices of the elements to check: all, or max_elements distinct ones.
inline std::vector<std::size_t> pick_elements(std::size_t n, std::size_t max_elements,
                                              std::uint64_t seed) {
  std::vector<std::size_t> idx(n);
  std::iota(idx.begin(), idx.end(), std::size_t{0});
  if (max_elements == 0 || max_elements >= n) return idx;
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < max_elements; ++i) {  // partial Fisher-Yates
    std::uniform_int_distribution<std::size_t> pick(i, n - 1);
    std::swap(idx[i], idx[pick(rng)]);
  }
  idx.resize(max_elements);
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace detail

/// Central differences of @p loss w.r.t. the elements of @p x (listed in @p indices).
inline std::vector<double> numerical_gradient(std::span<double> x,
                                              const std::vector<std::size_t>& indices,
                                              const std::function<double()>& loss,
                                              double step = 1e-6) {
  std::vector<double> out(indices.size());
  for (std::size_t k = 0; k < indices.size(); ++k) {
    double& e = x[indices[k]];
    const double x0 = e;
    struct Restore {  // put the element back even when the loss throws
      double& e;
      double v;
      ~Restore() { e = v; }
    } restore{e, x0};
    const double h = step * std::max(1.0, std::fabs(x0));
    const double xp = x0 + h, xm = x0 - h;
    e = xp;
    const double fp = loss();
    e = xm;
    const double fm = loss();
    out[k] = (fp - fm) / (xp - xm);  // the representable step, not 2h
  }
  return out;
}

/// Numerical derivatives of every element of @p x (loss is called 2·x.size() times).
inline std::vector<double> numerical_gradient(std::span<double> x,
                                              const std::function<double()>& loss,
                                              double step = 1e-6) {
  return numerical_gradient(x, detail::pick_elements(x.size(), 0, 0), loss, step);
}

/// Compare @p analytic with central differences of @p loss w.r.t. @p x.
inline GradCheckResult check_gradient(std::string name, std::span<double> x,
                                      std::span<const double> analytic,
                                      const std::function<double()>& loss,
                                      const GradCheckOptions& opt) {
  if (analytic.size() != x.size())
    throw std::invalid_argument("check_gradient(" + name + "): " + std::to_string(x.size()) +
                                " elements but " + std::to_string(analytic.size()) +
                                " gradient entries");
  GradCheckResult r;
  r.name = std::move(name);
  r.size = x.size();
  const auto indices =
      detail::pick_elements(x.size(), opt.max_elements, opt.seed ^ detail::name_hash(r.name));
  r.checked = indices.size();
  const std::vector<double> numeric = numerical_gradient(x, indices, loss, opt.step);
  double diff2 = 0, sum2 = 0, a2 = 0, n2 = 0;
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const double a = analytic[indices[k]], n = numeric[k];
    diff2 += (a - n) * (a - n);
    sum2 += (a + n) * (a + n);
    a2 += a * a;
    n2 += n * n;
    const double err = std::fabs(a - n);
    if (k == 0 || err > r.worst_abs_error || std::isnan(err)) {
      r.worst_abs_error = err;
      r.worst_index = indices[k];
      r.worst_analytic = a;
      r.worst_numeric = n;
    }
  }
  r.analytic_norm = std::sqrt(a2);
  r.numeric_norm = std::sqrt(n2);
  if (std::max(r.analytic_norm, r.numeric_norm) <= opt.zero_guard) {
    r.both_zero = true;
    r.relative_error = std::sqrt(diff2);
  } else {
    // ||a + n|| can only be tiny here when a ≈ -n: the error is then large, as it should be.
    r.relative_error = std::sqrt(diff2) / std::max(std::sqrt(sum2), opt.zero_guard);
  }
  if (std::isnan(diff2) || std::isnan(sum2))
    r.relative_error = std::numeric_limits<double>::infinity();
  return r;
}

/// check_gradient() with the default options and at most @p max_elements elements (0: all).
inline GradCheckResult check_gradient(std::string name, std::span<double> x,
                                      std::span<const double> analytic,
                                      const std::function<double()>& loss,
                                      std::size_t max_elements = 0) {
  GradCheckOptions opt;
  opt.max_elements = max_elements;
  return check_gradient(std::move(name), x, analytic, loss, opt);
}

/// Σ a_i b_i in double: the random projection loss L = Σ dy ∘ y.
template <class A, class B>
double dot(std::span<A> a, std::span<B> b) {
  if (a.size() != b.size()) throw std::invalid_argument("dot: sizes differ");
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return s;
}

/// Fill @p x with normal(mean, std) draws from @p rng.
template <class T>
void fill_normal(std::span<T> x, std::mt19937_64& rng, double std = 1.0, double mean = 0.0) {
  std::normal_distribution<double> dist(mean, std);
  for (T& v : x) v = static_cast<T>(dist(rng));
}

/// Fill @p x with uniform [lo, hi) draws from @p rng.
template <class T>
void fill_uniform(std::span<T> x, std::mt19937_64& rng, double lo, double hi) {
  std::uniform_real_distribution<double> dist(lo, hi);
  for (T& v : x) v = static_cast<T>(dist(rng));
}

/// @p n normal(mean, std) values.
template <class T = double>
std::vector<T> random_normal(std::size_t n, std::mt19937_64& rng, double std = 1.0,
                             double mean = 0.0) {
  std::vector<T> v(n);
  fill_normal(std::span<T>(v), rng, std, mean);
  return v;
}

/// @p n normal(mean, std) values from a fresh generator seeded with @p seed.
template <class T = double>
std::vector<T> random_normal(std::size_t n, std::uint64_t seed, double std = 1.0,
                             double mean = 0.0) {
  std::mt19937_64 rng(seed);
  return random_normal<T>(n, rng, std, mean);
}

}  // namespace kadapter::test
