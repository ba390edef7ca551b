/// @file embeddings.hpp
/// @brief Token embeddings: word + token type + position, then LayerNorm.
#pragma once

#include "kadapter/layers/layernorm.hpp"

namespace kadapter {

/// @brief Parameters of the embedding block of a RoBERTa/BERT encoder.
template <class T>
struct EmbeddingParams {
  MatrixView<const T> word;        // (vocab_size, H)
  MatrixView<const T> position;    // (max_positions, H)
  MatrixView<const T> token_type;  // (token_types, H)
  LayerNormParams<T> norm;         // (H) each
};

}  // namespace kadapter
