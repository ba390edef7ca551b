// The GEMM ceiling of this machine: the best GFLOP/s of y = x · W^T over the shapes of a
// training step, with the library's product (linear_forward) and with Eigen's own product,
// whichever is faster. Prints one line per shape and product, then `gemm_ceiling_gflops=X`.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "kadapter/kadapter.hpp"

using namespace kadapter;

int main() {
  const index_t shapes[][3] = {{1024, 768, 768}, {1024, 3072, 768}, {1024, 768, 3072}, {2048, 2048, 2048}};
  using Mat = detail::RowMajorMatrix<float>;
  double best = 0;
  for (const auto& s : shapes) {
    const index_t m = s[0], n = s[1], k = s[2];
    std::vector<float> x(static_cast<std::size_t>(m * k)), w(static_cast<std::size_t>(n * k)), y(static_cast<std::size_t>(m * n));
    std::mt19937 rng(1);
    std::normal_distribution<float> d;
    for (auto& v : x) v = d(rng);
    for (auto& v : w) v = d(rng);
    LinearParams<float> p;
    p.weight = MatrixView<const float>(w.data(), n, k);
    Eigen::Map<const Mat> xm(x.data(), m, k), wm(w.data(), n, k);
    Eigen::Map<Mat> ym(y.data(), m, n);
    for (int product = 0; product < 2; ++product) {
      double shape_best = 0;
      for (int r = 0; r < 6; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        if (product == 0) {
          linear_forward(Cpu{}, MatrixView<float>(y.data(), m, n), MatrixView<const float>(x.data(), m, k), p);
        } else {
          ym.noalias() = xm * wm.transpose();
        }
        const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r > 0) shape_best = std::max(shape_best, 2.0 * m * n * k / sec * 1e-9);
      }
      std::printf("gemm %ldx%ldx%ld (%s): %.1f GFLOP/s\n", static_cast<long>(m), static_cast<long>(n),
                  static_cast<long>(k), product == 0 ? detail::sgemm_isa() : "eigen", shape_best);
      best = std::max(best, shape_best);
    }
  }
  std::printf("gemm_ceiling_gflops=%.1f\n", best);
}
