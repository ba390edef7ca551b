/// @file parallel.hpp
/// @brief Row-parallel loops for the element-wise CPU kernels, on the threads Eigen's matrix
/// products use (OpenMP when the build enables it, otherwise one thread).
///
/// Work is split into contiguous static chunks, one per thread, and every chunk computes
/// exactly what the serial loop computes for its rows: results do not depend on the number of
/// threads. Reductions across rows (LayerNorm's gamma and beta gradients) split columns
/// instead of rows for the same reason.
#pragma once

#include <algorithm>

#include <Eigen/Core>
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "kadapter/core/tensor.hpp"

namespace kadapter {

/// @brief Threads the CPU kernels use: Eigen's thread count (`Eigen::setNbThreads`,
/// `OMP_NUM_THREADS`), 1 without OpenMP.
inline int kernel_threads() noexcept {
#if defined(_OPENMP)
  return std::max(1, Eigen::nbThreads());
#else
  return 1;
#endif
}

/// @brief Call `f(begin, end, thread)` on contiguous chunks of [0, @p n), in parallel when
/// each chunk gets at least @p min_chunk items; `thread` < kernel_threads().
template <class F>
void parallel_chunks(index_t n, index_t min_chunk, F&& f) {
#if defined(_OPENMP)
  const index_t nt = std::min<index_t>(kernel_threads(), std::max<index_t>(1, n / std::max<index_t>(1, min_chunk)));
  if (nt > 1 && !omp_in_parallel()) {
#pragma omp parallel num_threads(static_cast<int>(nt))
    {
      // The team may be smaller than asked for (OMP_THREAD_LIMIT, dynamic threads).
      const index_t t = omp_get_thread_num(), team = omp_get_num_threads();
      f(n * t / team, n * (t + 1) / team, t);
    }
    return;
  }
#else
  (void)min_chunk;
#endif
  f(index_t{0}, n, index_t{0});
}

}  // namespace kadapter
