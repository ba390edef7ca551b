/// @file backend.hpp
/// @brief Backend tag types and the concept that checks them.
#pragma once

#include <type_traits>

namespace kadapter {

/// @brief CPU backend: Eigen kernels, the reference implementation.
struct Cpu {};
/// @brief GPU backend: cuBLASLt and CUDA kernels (needs kadapter_cuda.hpp and KA_WITH_CUDA).
struct Cuda {};

/// @brief Whether @p B is a backend tag: Cpu and Cuda. The tests add an emulated device
/// (tests/support/emulated_backend.hpp) by specialising it.
template <class B>
inline constexpr bool is_backend_v = std::is_same_v<B, Cpu> || std::is_same_v<B, Cuda>;

/// @brief A backend tag type.
template <class B>
concept Backend = is_backend_v<B>;

}  // namespace kadapter
