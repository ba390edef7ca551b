// The library's fp32 product y = x · W^T at one shape: best GFLOP/s over a few runs. Shared by
// bench_gemm_ceiling and bench_train_step (its --paired-ceiling probe).
#pragma once

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include "kadapter/kadapter.hpp"

namespace kadapter::bench {

/// @brief Operands of one product shape, filled once.
struct GemmProbe {
  index_t m, n, k;
  std::vector<float> x, w, y;
  GemmProbe(index_t m_, index_t n_, index_t k_)
      : m(m_), n(n_), k(k_), x(static_cast<std::size_t>(m_ * k_)), w(static_cast<std::size_t>(n_ * k_)),
        y(static_cast<std::size_t>(m_ * n_)) {
    std::mt19937 rng(1);
    std::normal_distribution<float> d;
    for (auto& v : x) v = d(rng);
    for (auto& v : w) v = d(rng);
  }
  /// @brief Best GFLOP/s of @p runs timed products (after one untimed one).
  double best_gflops(int runs) {
    LinearParams<float> p;
    p.weight = MatrixView<const float>(w.data(), n, k);
    double best = 0;
    for (int r = 0; r <= runs; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      linear_forward(Cpu{}, MatrixView<float>(y.data(), m, n), MatrixView<const float>(x.data(), m, k), p);
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0) best = std::max(best, 2.0 * static_cast<double>(m) * n * k / sec * 1e-9);
    }
    return best;
  }
};

}  // namespace kadapter::bench
