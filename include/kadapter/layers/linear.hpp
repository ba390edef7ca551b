/// @file linear.hpp
/// @brief Fully connected layer `y = x W^T + b` (PyTorch's nn.Linear layout).
#pragma once

#include "kadapter/core/tensor.hpp"

namespace kadapter {

/// @brief Parameters of a Linear layer from `in_features` to `out_features`.
template <class T>
struct LinearParams {
  MatrixView<const T> weight;  // (out_features, in_features), as PyTorch stores it
  VectorView<const T> bias;    // (out_features), empty for a layer without bias

  index_t in_features() const noexcept { return weight.extent(1); }
  index_t out_features() const noexcept { return weight.extent(0); }
};

/// @brief Gradients of a Linear layer's parameters (same shapes as LinearParams).
template <class T>
struct LinearGrads {
  MatrixView<T> weight;  // (out_features, in_features)
  VectorView<T> bias;    // (out_features), empty for a layer without bias
};

}  // namespace kadapter
