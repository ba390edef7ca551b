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
#include <exception>

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

namespace detail {

/// @brief The first exception thrown by a thread of a parallel region, rethrown by the
/// calling thread after the region: an exception may not leave an OpenMP region (that would
/// call std::terminate), so a `std::bad_alloc` inside one (a scratch buffer growing) reaches
/// the caller as it would from a serial loop. Only for regions without barriers, where a
/// thread that stops early cannot leave the others waiting.
class ParallelError {
 public:
  template <class F>
  void run(F&& f) noexcept {
    try {
      f();
    } catch (...) {
#if defined(_OPENMP)
#pragma omp critical(kadapter_parallel_error)
#endif
      if (!error_) error_ = std::current_exception();
    }
  }
  void rethrow() const {
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::exception_ptr error_;
};

}  // namespace detail

/// @brief Call `f(begin, end, thread)` on contiguous chunks of [0, @p n), in parallel when
/// each chunk gets at least @p min_chunk items; `thread` < kernel_threads(). An exception
/// thrown by @p f on any thread is rethrown here.
template <class F>
void parallel_chunks(index_t n, index_t min_chunk, F&& f) {
#if defined(_OPENMP)
  const index_t nt = std::min<index_t>(kernel_threads(), std::max<index_t>(1, n / std::max<index_t>(1, min_chunk)));
  if (nt > 1 && !omp_in_parallel()) {
    detail::ParallelError error;
#pragma omp parallel num_threads(static_cast<int>(nt))
    {
      // The team may be smaller than asked for (OMP_THREAD_LIMIT, dynamic threads).
      const index_t t = omp_get_thread_num(), team = omp_get_num_threads();
      error.run([&] { f(n * t / team, n * (t + 1) / team, t); });
    }
    error.rethrow();
    return;
  }
#else
  (void)min_chunk;
#endif
  f(index_t{0}, n, index_t{0});
}

}  // namespace kadapter
