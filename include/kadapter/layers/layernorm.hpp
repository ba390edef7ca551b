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

/// @brief What the backward pass needs from the forward pass, one value per row.
template <class T>
struct LayerNormCache {
  VectorView<T> mean;  // (N)
  VectorView<T> rstd;  // (N) 1 / sqrt(var + eps)
};

}  // namespace kadapter
