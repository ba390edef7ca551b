/// @file encoder_layer.hpp
/// @brief One post-LN transformer encoder layer (BERT/RoBERTa layout).
///
/// ```
/// a = LN_attn(x + W_o · MultiHeadAttention(x W_q^T + b_q, x W_k^T + b_k, x W_v^T + b_v))
/// y = LN_out(a + W_2 · GELU(W_1 · a + b_1) + b_2)
/// ```
#pragma once

#include "kadapter/layers/layernorm.hpp"
#include "kadapter/layers/linear.hpp"

namespace kadapter {

/// @brief Parameters of one encoder layer of width H, FFN width F.
template <class T>
struct EncoderLayerParams {
  LinearParams<T> query;           // (H, H), (H)
  LinearParams<T> key;             // (H, H), (H)
  LinearParams<T> value;           // (H, H), (H)
  LinearParams<T> attn_output;     // (H, H), (H)
  LayerNormParams<T> attn_norm;    // (H)
  LinearParams<T> intermediate;    // (F, H), (F)
  LinearParams<T> output;          // (H, F), (H)
  LayerNormParams<T> output_norm;  // (H)
};

}  // namespace kadapter
