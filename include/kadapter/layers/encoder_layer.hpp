/// @file encoder_layer.hpp
/// @brief The BERT attention block and the post-LN transformer encoder layer (BERT/RoBERTa
/// layout, HuggingFace names), with forward and hand-derived backward passes.
///
/// ```
/// attention block:  y = LN(x + drop(W_o · drop_p(MultiHeadAttention(x W_q, x W_k, x W_v))))
/// encoder layer:    a = attention block(x)
///                   y = LN(a + drop(W_2 · GELU(W_1 · a + b_1) + b_2))
/// ```
/// The derivations of the backward passes are in docs/backward.md. The four functions take
/// the backend tag first (Cpu, or Cuda with kadapter_cuda.hpp included) and a Workspace of
/// that backend; every view then lives in that backend's memory.
#pragma once

#include <cstdint>
#include <span>

#include "kadapter/backend/eigen/backward.hpp"
#include "kadapter/backend/eigen/kernels.hpp"
#include "kadapter/core/gradient_mode.hpp"
#include "kadapter/core/random.hpp"
#include "kadapter/core/workspace.hpp"
#include "kadapter/layers/layernorm.hpp"
#include "kadapter/layers/linear.hpp"

namespace kadapter {

/// @brief Parameters of a BERT attention block of width H (`attention.self.*`,
/// `attention.output.*`).
template <class T>
struct AttentionParams {
  LinearParams<T> query;   // (H, H), (H)
  LinearParams<T> key;     // (H, H), (H)
  LinearParams<T> value;   // (H, H), (H)
  LinearParams<T> output;  // (H, H), (H)   attention.output.dense
  LayerNormParams<T> norm; // (H)           attention.output.LayerNorm
};

/// @brief Gradients of an attention block's parameters.
template <class T>
struct AttentionGrads {
  LinearGrads<T> query, key, value, output;
  LayerNormGrads<T> norm;
};

/// @brief Parameters of one encoder layer of width H, FFN width F.
template <class T>
struct EncoderLayerParams {
  AttentionParams<T> attention;    // attention.*
  LinearParams<T> intermediate;    // (F, H), (F)  intermediate.dense
  LinearParams<T> output;          // (H, F), (H)  output.dense
  LayerNormParams<T> output_norm;  // (H)          output.LayerNorm
};

/// @brief Gradients of an encoder layer's parameters.
template <class T>
struct EncoderLayerGrads {
  AttentionGrads<T> attention;
  LinearGrads<T> intermediate, output;
  LayerNormGrads<T> output_norm;
};

/// @brief Sizes of one attention block / encoder layer call.
struct LayerDims {
  index_t batch = 0;   ///< B
  index_t seq = 0;     ///< T
  index_t hidden = 0;  ///< H, layer width
  index_t heads = 0;   ///< A
  index_t ffn = 0;     ///< F (encoder layer only)
  double eps = 1e-5;   ///< LayerNorm epsilon
  index_t tokens() const noexcept { return batch * seq; }
};

/// @brief The dropouts of one encoder layer (all inactive for inference).
struct LayerDropouts {
  Dropout probs;        ///< on the attention probabilities
  Dropout attn_output;  ///< after attention.output.dense, before the residual
  Dropout output;       ///< after output.dense, before the residual
};

/// @brief What the attention block's backward pass needs; views into one buffer.
template <class T>
struct AttentionCache {
  MatrixView<const T> x;          // (N, H) the input (owned by the caller)
  MatrixView<T> q, k, v, ctx;     // (N, H) each
  T* probs = nullptr;             // (B, A, T, T) before dropout
  LayerNormCache<T> norm;         // xhat (N, H), rstd (N)

  /// @brief Elements needed for sizes @p d.
  static std::size_t elements(const LayerDims& d) {
    const std::size_t n = static_cast<std::size_t>(d.tokens()), h = static_cast<std::size_t>(d.hidden);
    return 5 * Workspace<T>::padded(n * h) +
           Workspace<T>::padded(static_cast<std::size_t>(d.batch * d.heads * d.seq * d.seq)) +
           Workspace<T>::padded(n);
  }
  /// @brief Take the buffers from @p ws.
  template <class B>
  void bind(Workspace<T, B>& ws, const LayerDims& d) {
    const index_t n = d.tokens(), h = d.hidden;
    auto mat = [&] { return MatrixView<T>(ws.take(static_cast<std::size_t>(n * h)), n, h); };
    q = mat();
    k = mat();
    v = mat();
    ctx = mat();
    norm.xhat = mat();
    probs = ws.take(static_cast<std::size_t>(d.batch * d.heads * d.seq * d.seq));
    norm.rstd = VectorView<T>(ws.take(static_cast<std::size_t>(n)), n);
  }
};

/// @brief What the encoder layer's backward pass needs.
template <class T>
struct EncoderLayerCache {
  AttentionCache<T> attention;
  MatrixView<T> a;                // (N, H) attention block output
  MatrixView<T> pre;              // (N, F) GELU input
  MatrixView<T> act;              // (N, F) GELU output
  LayerNormCache<T> output_norm;  // xhat (N, H), rstd (N)

  static std::size_t elements(const LayerDims& d) {
    const std::size_t n = static_cast<std::size_t>(d.tokens());
    return AttentionCache<T>::elements(d) +
           2 * Workspace<T>::padded(n * static_cast<std::size_t>(d.hidden)) +
           2 * Workspace<T>::padded(n * static_cast<std::size_t>(d.ffn)) + Workspace<T>::padded(n);
  }
  template <class B>
  void bind(Workspace<T, B>& ws, const LayerDims& d) {
    attention.bind(ws, d);
    const index_t n = d.tokens();
    a = MatrixView<T>(ws.take(static_cast<std::size_t>(n * d.hidden)), n, d.hidden);
    pre = MatrixView<T>(ws.take(static_cast<std::size_t>(n * d.ffn)), n, d.ffn);
    act = MatrixView<T>(ws.take(static_cast<std::size_t>(n * d.ffn)), n, d.ffn);
    output_norm.xhat = MatrixView<T>(ws.take(static_cast<std::size_t>(n * d.hidden)), n, d.hidden);
    output_norm.rstd = VectorView<T>(ws.take(static_cast<std::size_t>(n)), n);
  }
};

/// @brief Scratch elements attention_block_forward on backend @p B takes from its workspace.
template <class T, class B = Cpu>
std::size_t attention_block_forward_scratch(const LayerDims& d, bool cached) {
  const std::size_t nh = Workspace<T>::padded(static_cast<std::size_t>(d.tokens() * d.hidden));
  const std::size_t tt = Workspace<T>::padded(attention_scratch(B{}, d.batch, d.seq, d.hidden, d.heads));
  return (cached ? 1 : 5) * nh + tt;
}

/// @brief BERT attention block forward.
/// @param[out] y (N, H); must not alias @p x
/// @param[out] cache saved state for backward (bound by the caller), or nullptr
/// @param x (N, H) input
/// @param key_mask (B*T) additive mask per key, or empty
/// @param ws scratch (reserve attention_block_forward_scratch first)
template <class B, class T>
  requires Backend<B>
void attention_block_forward(B, MatrixView<T> y, std::type_identity_t<AttentionCache<T>>* cache,
                             MatrixView<const T> x, std::span<const T> key_mask,
                             const AttentionParams<T>& p, const LayerDims& d,
                             const LayerDropouts* drop, Workspace<T, B>& ws) {
  const index_t n = d.tokens(), h = d.hidden;
  auto take = [&](index_t rows, index_t cols) {
    return MatrixView<T>(ws.take(static_cast<std::size_t>(rows * cols)), rows, cols);
  };
  MatrixView<T> q, k, v, ctx;
  T* probs = nullptr;
  if (cache) {
    cache->x = x;
    q = cache->q, k = cache->k, v = cache->v, ctx = cache->ctx, probs = cache->probs;
  } else {
    q = take(n, h), k = take(n, h), v = take(n, h), ctx = take(n, h);
  }
  T* scratch = ws.take(attention_scratch(B{}, d.batch, d.seq, d.hidden, d.heads));
  linear_forward(B{}, q, x, p.query);
  linear_forward(B{}, k, x, p.key);
  linear_forward(B{}, v, x, p.value);
  attention_forward(B{}, ctx, probs, MatrixView<const T>(q), MatrixView<const T>(k),
                    MatrixView<const T>(v), key_mask, d.batch, d.seq, d.heads, scratch,
                    drop ? &drop->probs : nullptr);
  MatrixView<T> t = take(n, h);
  linear_forward(B{}, t, MatrixView<const T>(ctx), p.output);
  if (drop) dropout_inplace(B{}, t, drop->attn_output, d.seq);
  add_layernorm_forward(B{}, y, cache ? &cache->norm : nullptr, MatrixView<const T>(t), x,
                        p.norm, static_cast<T>(d.eps));
}

/// @brief Scratch elements attention_block_backward on backend @p B takes from its workspace.
template <class T, class B = Cpu>
std::size_t attention_block_backward_scratch(const LayerDims& d) {
  const std::size_t nh = Workspace<T>::padded(static_cast<std::size_t>(d.tokens() * d.hidden));
  return 5 * nh + Workspace<T>::padded(attention_scratch(B{}, d.batch, d.seq, d.hidden, d.heads));
}

/// @brief BERT attention block backward.
/// @param[out] dx (N, H) gradient of the input, written per @p mode
/// @param[in,out] g parameter gradients (accumulated), or nullptr
/// @param dy (N, H) gradient of the output
template <class B, class T>
  requires Backend<B>
void attention_block_backward(B, MatrixView<T> dx, GradientMode mode,
                              const std::type_identity_t<AttentionGrads<T>>* g,
                              MatrixView<const T> dy, const AttentionCache<T>& c,
                              const AttentionParams<T>& p, const LayerDims& d,
                              const LayerDropouts* drop, Workspace<T, B>& ws) {
  const index_t n = d.tokens(), h = d.hidden;
  auto take = [&](index_t rows, index_t cols) {
    return MatrixView<T>(ws.take(static_cast<std::size_t>(rows * cols)), rows, cols);
  };
  // y = LN(t + x): the gradient of the sum goes to t (through dropout) and to x.
  MatrixView<T> ds = take(n, h);
  layernorm_backward(B{}, ds, GradientMode::Overwrite, g ? &g->norm : nullptr, dy, c.norm,
                     p.norm);
  MatrixView<T> dt = take(n, h);
  copy_matrix(B{}, dt, MatrixView<const T>(ds));
  if (drop) dropout_inplace(B{}, dt, drop->attn_output, d.seq);
  MatrixView<T> dctx = take(n, h), dq = take(n, h), dk = take(n, h);
  linear_backward(B{}, dctx, GradientMode::Overwrite, g ? &g->output : nullptr,
                  MatrixView<const T>(dt), MatrixView<const T>(c.ctx), p.output);
  MatrixView<T> dv = dt;  // dt is no longer needed
  T* scratch = ws.take(attention_scratch(B{}, d.batch, d.seq, d.hidden, d.heads));
  attention_backward(B{}, dq, dk, dv, MatrixView<const T>(dctx), MatrixView<const T>(c.q),
                     MatrixView<const T>(c.k), MatrixView<const T>(c.v), c.probs, d.batch, d.seq,
                     d.heads, scratch, drop ? &drop->probs : nullptr);
  // dx = ds (residual) + dq W_q + dk W_k + dv W_v
  write_gradient(B{}, dx, MatrixView<const T>(ds), mode);
  const GradientMode acc = mode == GradientMode::Ignore ? GradientMode::Ignore : GradientMode::Accumulate;
  linear_backward(B{}, dx, acc, g ? &g->query : nullptr, MatrixView<const T>(dq), c.x, p.query);
  linear_backward(B{}, dx, acc, g ? &g->key : nullptr, MatrixView<const T>(dk), c.x, p.key);
  linear_backward(B{}, dx, acc, g ? &g->value : nullptr, MatrixView<const T>(dv), c.x, p.value);
}

/// @brief Scratch elements encoder_layer_forward on backend @p B takes from its workspace.
template <class T, class B = Cpu>
std::size_t encoder_layer_forward_scratch(const LayerDims& d, bool cached) {
  const std::size_t nh = Workspace<T>::padded(static_cast<std::size_t>(d.tokens() * d.hidden));
  const std::size_t nf = Workspace<T>::padded(static_cast<std::size_t>(d.tokens() * d.ffn));
  return attention_block_forward_scratch<T, B>(d, cached) + (cached ? 1 : 2) * nh +
         (cached ? 0 : nf);
}

/// @brief Encoder layer forward.
/// @param[out] y (N, H); must not alias @p x
/// @param[out] cache saved state for backward (bound by the caller), or nullptr
/// @param x (N, H) input
/// @param key_mask (B*T) additive mask per key, or empty
/// @param drop dropouts, or nullptr for none
/// @param ws scratch (reserve encoder_layer_forward_scratch first)
template <class B, class T>
  requires Backend<B>
void encoder_layer_forward(B, MatrixView<T> y, std::type_identity_t<EncoderLayerCache<T>>* cache,
                           MatrixView<const T> x, std::span<const T> key_mask,
                           const EncoderLayerParams<T>& p, const LayerDims& d,
                           const LayerDropouts* drop, Workspace<T, B>& ws) {
  const index_t n = d.tokens(), h = d.hidden, f = d.ffn;
  auto take = [&](index_t rows, index_t cols) {
    return MatrixView<T>(ws.take(static_cast<std::size_t>(rows * cols)), rows, cols);
  };
  MatrixView<T> a = cache ? cache->a : take(n, h);
  attention_block_forward(B{}, a, cache ? &cache->attention : nullptr, x, key_mask, p.attention,
                          d, drop, ws);
  MatrixView<T> pre = cache ? cache->pre : take(n, f);
  MatrixView<T> act = cache ? cache->act : pre;
  // The FFN's first product, then its bias and the GELU in one pass.
  linear_forward(B{}, pre, MatrixView<const T>(a), LinearParams<T>{p.intermediate.weight, {}});
  if (p.intermediate.bias.empty()) {
    if (cache) copy_matrix(B{}, act, MatrixView<const T>(pre));
    gelu_inplace(B{}, act.span());
  } else {
    bias_gelu_forward(B{}, pre, act, p.intermediate.bias.data());
  }
  MatrixView<T> w = take(n, h);
  linear_forward(B{}, w, MatrixView<const T>(act), p.output);
  if (drop) dropout_inplace(B{}, w, drop->output, d.seq);
  add_layernorm_forward(B{}, y, cache ? &cache->output_norm : nullptr, MatrixView<const T>(w),
                        MatrixView<const T>(a), p.output_norm, static_cast<T>(d.eps));
}

/// @brief Scratch elements encoder_layer_backward on backend @p B takes from its workspace.
template <class T, class B = Cpu>
std::size_t encoder_layer_backward_scratch(const LayerDims& d) {
  const std::size_t nh = Workspace<T>::padded(static_cast<std::size_t>(d.tokens() * d.hidden));
  const std::size_t nf = Workspace<T>::padded(static_cast<std::size_t>(d.tokens() * d.ffn));
  return 2 * nh + nf + attention_block_backward_scratch<T, B>(d);
}

/// @brief Encoder layer backward.
/// @param[out] dx (N, H) gradient of the input, written per @p mode
/// @param[in,out] g parameter gradients (accumulated), or nullptr
/// @param dy (N, H) gradient of the output
template <class B, class T>
  requires Backend<B>
void encoder_layer_backward(B, MatrixView<T> dx, GradientMode mode,
                            const std::type_identity_t<EncoderLayerGrads<T>>* g,
                            MatrixView<const T> dy, const EncoderLayerCache<T>& c,
                            const EncoderLayerParams<T>& p, const LayerDims& d,
                            const LayerDropouts* drop, Workspace<T, B>& ws) {
  const index_t n = d.tokens(), h = d.hidden, f = d.ffn;
  auto take = [&](index_t rows, index_t cols) {
    return MatrixView<T>(ws.take(static_cast<std::size_t>(rows * cols)), rows, cols);
  };
  // y = LN(w + a): d(sum) goes to w (through dropout) and to a.
  MatrixView<T> da = take(n, h);
  layernorm_backward(B{}, da, GradientMode::Overwrite, g ? &g->output_norm : nullptr, dy,
                     c.output_norm, p.output_norm);
  MatrixView<T> dw = take(n, h);
  copy_matrix(B{}, dw, MatrixView<const T>(da));
  if (drop) dropout_inplace(B{}, dw, drop->output, d.seq);
  MatrixView<T> dact = take(n, f);
  linear_backward(B{}, dact, GradientMode::Overwrite, g ? &g->output : nullptr,
                  MatrixView<const T>(dw), MatrixView<const T>(c.act), p.output);
  // GELU backward and the intermediate bias gradient in one pass, then the product.
  const bool bias = !p.intermediate.bias.empty();
  bias_gelu_backward(B{}, dact, MatrixView<const T>(c.pre),
                     g && bias ? g->intermediate.bias.data() : nullptr);
  LinearGrads<T> weight_grad;
  if (g) weight_grad = LinearGrads<T>{g->intermediate.weight, {}};
  linear_backward(B{}, da, GradientMode::Accumulate, g ? &weight_grad : nullptr,
                  MatrixView<const T>(dact), MatrixView<const T>(c.a), p.intermediate);
  attention_block_backward(B{}, dx, mode, g ? &g->attention : nullptr, MatrixView<const T>(da),
                           c.attention, p.attention, d, drop, ws);
}

}  // namespace kadapter
