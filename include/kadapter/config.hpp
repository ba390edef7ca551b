/// @file config.hpp
/// @brief Build configuration: host/device annotations, CUDA switch, internal assertions.
#pragma once

#include <cassert>
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
/// @brief Marks a function callable from host and device code when compiled by nvcc.
#define KA_HOST_DEVICE __host__ __device__
#else
#define KA_HOST_DEVICE
#endif

/// @brief 1 when the CUDA backend is compiled in (the `kadapter::cuda` target defines it).
#ifndef KA_WITH_CUDA
#define KA_WITH_CUDA 0
#endif

/// @brief Internal invariant check. Bad input from outside raises kadapter::Error instead.
#define KA_ASSERT(cond) assert(cond)

namespace kadapter {
/// @brief Signed index type used for extents and loops (matches Eigen::Index).
using index_t = std::ptrdiff_t;
}  // namespace kadapter
