/// @file gradient_mode.hpp
/// @brief How a backward pass writes a gradient: ignore it, overwrite, or accumulate.
///
/// The house rule, written once: parameter gradients always accumulate (so gradient
/// accumulation over micro-batches and parameters shared by several paths just work), and an
/// activation gradient overwrites its buffer, except where paths join (residual connections,
/// a tensor read by several layers), where the later writers accumulate.
#pragma once

namespace kadapter {

/// @brief What a backward function does with one of its gradient outputs.
enum class GradientMode {
  Ignore,      ///< not needed: skip the computation
  Overwrite,   ///< dst = gradient
  Accumulate,  ///< dst += gradient
};

/// @brief Write @p value into @p dst (Eigen expressions) according to @p mode.
template <class Dst, class Expr>
void write_gradient(Dst&& dst, const Expr& value, GradientMode mode) {
  if (mode == GradientMode::Overwrite) {
    dst.noalias() = value;
  } else if (mode == GradientMode::Accumulate) {
    dst.noalias() += value;
  }
}

}  // namespace kadapter
