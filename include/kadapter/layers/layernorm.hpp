/// @file layernorm.hpp
/// @brief LayerNorm over the last dimension: `y = (x - mean) / sqrt(var + eps) * gamma + beta`.
#pragma once

#include "kadapter/core/tensor.hpp"

namespace kadapter {

/// @brief Parameters of a LayerNorm over rows of width H.
template <class T>
struct LayerNormParams {
  VectorView<const T> gamma;  // (H), PyTorch's `weight`
  VectorView<const T> beta;   // (H), PyTorch's `bias`
};

/// @brief Gradients of a LayerNorm's parameters.
template <class T>
struct LayerNormGrads {
  VectorView<T> gamma;  // (H)
  VectorView<T> beta;   // (H)
};

/// @brief What the backward pass needs from the forward pass.
template <class T>
struct LayerNormCache {
  MatrixView<T> xhat;  // (N, H) normalised input (x - mean) * rstd
  VectorView<T> rstd;  // (N) 1 / sqrt(var + eps)
};

}  // namespace kadapter
