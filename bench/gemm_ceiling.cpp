// The GEMM ceiling of this machine: the best GFLOP/s of y = x · W^T over the shapes of a
// training step, with the library's product (linear_forward) and with Eigen's own product,
// whichever is faster. Prints one line per shape and product, then `gemm_ceiling_gflops=X`.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "ceiling.hpp"

using namespace kadapter;

int main() {
  const index_t shapes[][3] = {{1024, 768, 768}, {1024, 3072, 768}, {1024, 768, 3072}, {2048, 2048, 2048}};
  using Mat = detail::RowMajorMatrix<float>;
  double best = 0;
  for (const auto& s : shapes) {
    bench::GemmProbe probe(s[0], s[1], s[2]);
    const index_t m = s[0], n = s[1], k = s[2];
    const double own = probe.best_gflops(5);
    std::printf("gemm %ldx%ldx%ld (%s): %.1f GFLOP/s\n", static_cast<long>(m), static_cast<long>(n),
                static_cast<long>(k), detail::sgemm_isa(), own);
    Eigen::Map<const Mat> xm(probe.x.data(), m, k), wm(probe.w.data(), n, k);
    Eigen::Map<Mat> ym(probe.y.data(), m, n);
    double eigen = 0;
    for (int r = 0; r < 6; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      ym.noalias() = xm * wm.transpose();
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0) eigen = std::max(eigen, 2.0 * m * n * k / sec * 1e-9);
    }
    std::printf("gemm %ldx%ldx%ld (eigen): %.1f GFLOP/s\n", static_cast<long>(m), static_cast<long>(n),
                static_cast<long>(k), eigen);
    best = std::max({best, own, eigen});
  }
  std::printf("gemm_ceiling_gflops=%.1f\n", best);
}
