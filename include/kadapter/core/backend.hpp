/// @file backend.hpp
/// @brief Backend tag types and the concept that checks them.
#pragma once

#include <type_traits>

namespace kadapter {

/// @brief CPU backend: Eigen kernels, the reference implementation.
struct Cpu {};
/// @brief GPU backend: cuBLASLt and CUDA kernels (needs kadapter_cuda.hpp and KA_WITH_CUDA).
struct Cuda {};

/// @brief A backend tag type.
template <class B>
concept Backend = std::is_same_v<B, Cpu> || std::is_same_v<B, Cuda>;

}  // namespace kadapter
