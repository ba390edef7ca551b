/// @file adapter.hpp
/// @brief A knowledge adapter: K adapter layers plugged into the frozen backbone's hidden
/// states, with forward and hand-derived backward passes.
///
/// For plug-in points p_1..p_K (official behaviour, `microsoft/K-Adapter` AdapterModel):
/// ```
/// r_0 = 0
/// for c = 1..K:
///   x_c = hidden[p_c] + r_{c-1}
///   o_c = x_c + Up_c(Encoder_c(Down_c(x_c)))      Encoder_c: N BERT layers of width Ha
///   r_c = o_c (+ o_{skip(c)} when skip connections are on)
/// output = r_K
/// ```
/// Gradients stop at the backbone's hidden states: nothing flows into the frozen encoder.
/// adapter_forward and adapter_backward take the backend tag first (Cpu, or Cuda with
/// kadapter_cuda.hpp) and a Workspace of that backend; hidden states and parameters then live
/// in that backend's memory.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "kadapter/config/adapter_config.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/layers/encoder_layer.hpp"
#include "kadapter/models/parameters.hpp"

namespace kadapter {

/// @brief Parameters of one adapter layer (one plug-in point).
template <class T>
struct AdapterLayerParams {
  LinearParams<T> down;                        // (Ha, H)  down_project
  std::vector<EncoderLayerParams<T>> layers;   // N       encoder.layer.{j}
  LinearParams<T> up;                          // (H, Ha)  up_project
};

/// @brief Gradients of one adapter layer.
template <class T>
struct AdapterLayerGrads {
  LinearGrads<T> down;
  std::vector<EncoderLayerGrads<T>> layers;
  LinearGrads<T> up;
};

/// @brief Parameters (and gradient views) of a whole adapter.
template <class T>
struct AdapterParams {
  std::vector<AdapterLayerParams<T>> layers;  // K
  std::vector<AdapterLayerGrads<T>> grads;    // K
  bool trainable = true;
};

/// @brief Declare an adapter's parameters under the authors' names:
/// `PREFIX{c}.down_project.*`, `PREFIX{c}.encoder.layer.{j}.*`, `PREFIX{c}.up_project.*`
/// with PREFIX = "adapter." (pre-training) or "fac_adapter.adapter." (downstream).
template <class T>
AdapterParams<T> declare_adapter(ParamLayout<T>& lay, const std::string& prefix,
                                 const AdapterConfig& c, bool trainable) {
  AdapterParams<T> p;
  p.trainable = trainable;
  lay.set_trainable(trainable);
  p.layers.resize(static_cast<std::size_t>(c.count));
  p.grads.resize(static_cast<std::size_t>(c.count));
  for (index_t k = 0; k < c.count; ++k) {
    const std::string pre = prefix + std::to_string(k) + ".";
    auto& L = p.layers[static_cast<std::size_t>(k)];
    auto& G = p.grads[static_cast<std::size_t>(k)];
    L.down = lay.linear(pre + "down_project", c.size, c.hidden, &G.down);
    G.layers.resize(static_cast<std::size_t>(c.layers));
    for (index_t j = 0; j < c.layers; ++j)
      L.layers.push_back(lay.encoder_layer(pre + "encoder.layer." + std::to_string(j) + ".", c.size,
                                           c.ffn, &G.layers[static_cast<std::size_t>(j)]));
    L.up = lay.linear(pre + "up_project", c.hidden, c.size, &G.up);
  }
  lay.set_trainable(true);
  return p;
}

/// @brief How skip connections between adapter layers are numbered.
enum class SkipRule {
  /// After adapter layer c (1-based) with c % s == 0 and c > s, add the output of layer c - s.
  standard,
  /// The authors' indexing: after layer c with c % s == 0, add `outputs[c / s]` (0-based
  /// list of outputs so far); s = 1 raises an IndexError there.
  official,
};

/// @brief The 0-based adapter layer whose output is added after layer @p c (1-based), if any.
inline std::optional<index_t> skip_source(index_t c, index_t s, SkipRule rule) {
  if (s < 1 || c % s != 0) return std::nullopt;
  if (rule == SkipRule::official) return c / s;
  if (c > s) return c - s - 1;
  return std::nullopt;
}

/// @brief Check a config's skip connections can run (the official rule needs s >= 2).
inline void validate_skip(const AdapterConfig& c, SkipRule rule) {
  for (index_t k = 1; k <= c.count; ++k) {
    const auto src = skip_source(k, c.skip_layers, rule);
    if (src && *src >= k)
      throw Error("adapter_skip_layers = " + std::to_string(c.skip_layers) +
                  " with the official rule reads adapter output " + std::to_string(*src) +
                  " after only " + std::to_string(k) +
                  " adapter layers (the authors' code raises an IndexError here)");
  }
}

/// @brief Activations of one adapter kept for the backward pass.
template <class T>
struct AdapterCache {
  struct Layer {
    MatrixView<T> x;                          // (N, H)  input hidden[p_c] + r_{c-1}
    std::vector<MatrixView<T>> inner;         // N + 1 views (N, Ha): Down(x), then each layer's output
    std::vector<EncoderLayerCache<T>> cache;  // N (bound only when training)
    MatrixView<T> out;                        // (N, H)  o_c
    MatrixView<T> run;                        // (N, H)  r_c = o_c (+ skip term)
  };
  std::vector<Layer> layers;  // K
  MatrixView<T> result;       // (N, H) r_K, the adapter's output

  static std::size_t elements(const AdapterConfig& c, const LayerDims& inner, bool training) {
    using WS = Workspace<T>;
    const std::size_t n = static_cast<std::size_t>(inner.tokens());
    std::size_t per = 3 * WS::padded(n * static_cast<std::size_t>(c.hidden)) +
                      static_cast<std::size_t>(c.layers + 1) *
                          WS::padded(n * static_cast<std::size_t>(c.size));
    if (training) per += static_cast<std::size_t>(c.layers) * EncoderLayerCache<T>::elements(inner);
    return static_cast<std::size_t>(c.count) * per + WS::padded(n * static_cast<std::size_t>(c.hidden));
  }
  /// @brief Take the buffers from @p ws (no heap allocation once the vectors have their size).
  template <class B>
  void bind(Workspace<T, B>& ws, const AdapterConfig& c, const LayerDims& inner, bool training) {
    const index_t n = inner.tokens();
    layers.resize(static_cast<std::size_t>(c.count));
    for (auto& L : layers) {
      L.x = MatrixView<T>(ws.take(static_cast<std::size_t>(n * c.hidden)), n, c.hidden);
      L.inner.resize(static_cast<std::size_t>(c.layers + 1));
      for (auto& v : L.inner)
        v = MatrixView<T>(ws.take(static_cast<std::size_t>(n * c.size)), n, c.size);
      L.cache.resize(static_cast<std::size_t>(c.layers));
      if (training)
        for (auto& lc : L.cache) lc.bind(ws, inner);
      L.out = MatrixView<T>(ws.take(static_cast<std::size_t>(n * c.hidden)), n, c.hidden);
      L.run = MatrixView<T>(ws.take(static_cast<std::size_t>(n * c.hidden)), n, c.hidden);
    }
    result = MatrixView<T>(ws.take(static_cast<std::size_t>(n * c.hidden)), n, c.hidden);
  }
};

/// @brief Dropout streams of an adapter's inner layers: `(c, j) -> LayerDropouts`.
template <class F>
concept AdapterDropoutSource = requires(F f, index_t c, index_t j) {
  { f(c, j) } -> std::convertible_to<LayerDropouts>;
};

/// @brief Scratch elements adapter_forward / adapter_backward on backend @p B take.
template <class T, class B = Cpu>
std::size_t adapter_scratch(const AdapterConfig& c, const LayerDims& inner, bool training) {
  using WS = Workspace<T>;
  const std::size_t n = static_cast<std::size_t>(inner.tokens());
  const std::size_t fwd = encoder_layer_forward_scratch<T, B>(inner, training);
  const std::size_t bwd = static_cast<std::size_t>(c.count + 1) * WS::padded(n * c.hidden) +
                          2 * WS::padded(n * c.size) + encoder_layer_backward_scratch<T, B>(inner);
  return std::max(fwd, training ? bwd : 0);
}

/// @brief Adapter forward.
/// @param[out] cache activations (bound by the caller); cache.result is the output (N, H)
/// @param hidden callable `MatrixView<const T>(index_t p)`: backbone hidden state p as (N, H)
/// @param key_mask additive (B*T) mask inside the adapter, or empty for none (the authors'
///        all-ones mask)
/// @param inner sizes of the inner layers (hidden = Ha, heads, ffn, eps)
/// @param dropouts callable `LayerDropouts(k, j)` for adapter layer k, inner layer j
/// @param training keep the inner layers' caches for backward
template <class B, class T, class Hidden, class Drops>
  requires Backend<B>
void adapter_forward(B, AdapterCache<T>& cache, const Hidden& hidden, std::span<const T> key_mask,
                     const AdapterParams<T>& p, const AdapterConfig& c, SkipRule rule,
                     const LayerDims& inner, const Drops& dropouts, bool training,
                     Workspace<T, B>& ws) {
  for (index_t k = 0; k < c.count; ++k) {
    auto& L = cache.layers[static_cast<std::size_t>(k)];
    const auto& P = p.layers[static_cast<std::size_t>(k)];
    MatrixView<const T> h = hidden(c.plug_in[static_cast<std::size_t>(k)]);
    copy_matrix(B{}, L.x, h);
    if (k > 0) add_into(B{}, L.x, MatrixView<const T>(cache.layers[static_cast<std::size_t>(k - 1)].run));
    linear_forward(B{}, L.inner[0], MatrixView<const T>(L.x), P.down);
    for (index_t j = 0; j < c.layers; ++j) {
      const std::size_t mark = ws.used();
      const LayerDropouts drop = dropouts(k, j);
      encoder_layer_forward(B{}, L.inner[static_cast<std::size_t>(j + 1)],
                            training ? &L.cache[static_cast<std::size_t>(j)] : nullptr,
                            MatrixView<const T>(L.inner[static_cast<std::size_t>(j)]), key_mask,
                            P.layers[static_cast<std::size_t>(j)], inner, &drop, ws);
      ws.rewind(mark);
    }
    linear_forward(B{}, L.out, MatrixView<const T>(L.inner[static_cast<std::size_t>(c.layers)]),
                   P.up);
    add_into(B{}, L.out, MatrixView<const T>(L.x));
    copy_matrix(B{}, L.run, MatrixView<const T>(L.out));
    if (const auto src = skip_source(k + 1, c.skip_layers, rule))
      add_into(B{}, L.run, MatrixView<const T>(cache.layers[static_cast<std::size_t>(*src)].out));
  }
  copy_matrix(B{}, cache.result, MatrixView<const T>(cache.layers[static_cast<std::size_t>(c.count - 1)].run));
}

/// @brief Adapter backward: accumulates every parameter gradient of @p p from @p d_result.
/// Nothing flows into the backbone.
///
/// Walking c = K..1: d_o_c += d_r_c (and d_o_skip(c) += d_r_c), then through
/// o_c = x_c + Up(Encoder(Down(x_c))) to d_x_c, which is d_r_{c-1} because
/// x_c = hidden[p_c] + r_{c-1}.
/// @param d_result (N, H) gradient of the adapter's output
template <class B, class T, class Drops>
  requires Backend<B>
void adapter_backward(B, MatrixView<const T> d_result, const AdapterCache<T>& cache,
                      const AdapterParams<T>& p, const AdapterConfig& c, SkipRule rule,
                      const LayerDims& inner, const Drops& dropouts, Workspace<T, B>& ws) {
  const index_t n = inner.tokens(), h = c.hidden, ha = c.size;
  auto take = [&](index_t rows, index_t cols) {
    return MatrixView<T>(ws.take(static_cast<std::size_t>(rows * cols)), rows, cols);
  };
  MatrixView<T> d_run = take(n, h);
  copy_matrix(B{}, d_run, d_result);
  T* d_outs = ws.take(static_cast<std::size_t>(c.count * n * h));
  fill_zero(B{}, MatrixView<T>(d_outs, c.count * n, h));
  auto d_out = [&](index_t k) { return MatrixView<T>(d_outs + k * n * h, n, h); };
  MatrixView<T> de_a = take(n, ha), de_b = take(n, ha);
  for (index_t k = c.count - 1; k >= 0; --k) {
    const auto& L = cache.layers[static_cast<std::size_t>(k)];
    const auto& P = p.layers[static_cast<std::size_t>(k)];
    const auto& G = p.grads[static_cast<std::size_t>(k)];
    add_into(B{}, d_out(k), MatrixView<const T>(d_run));
    if (const auto src = skip_source(k + 1, c.skip_layers, rule)) add_into(B{}, d_out(*src), MatrixView<const T>(d_run));
    MatrixView<const T> d_o = d_out(k);
    linear_backward(B{}, de_a, GradientMode::Overwrite, &G.up, d_o,
                    MatrixView<const T>(L.inner[static_cast<std::size_t>(c.layers)]), P.up);
    for (index_t j = c.layers - 1; j >= 0; --j) {
      const std::size_t mark = ws.used();
      const LayerDropouts drop = dropouts(k, j);
      encoder_layer_backward(B{}, de_b, GradientMode::Overwrite,
                             &G.layers[static_cast<std::size_t>(j)], MatrixView<const T>(de_a),
                             L.cache[static_cast<std::size_t>(j)],
                             P.layers[static_cast<std::size_t>(j)], inner, &drop, ws);
      ws.rewind(mark);
      std::swap(de_a, de_b);
    }
    // d_x = d_o (residual) + Down^T path; it is d_r of the previous adapter layer. The first
    // layer's input is a backbone state: only the weight gradients are needed there.
    if (k > 0) copy_matrix(B{}, d_run, d_o);
    linear_backward(B{}, d_run, k > 0 ? GradientMode::Accumulate : GradientMode::Ignore, &G.down,
                    MatrixView<const T>(de_a), MatrixView<const T>(L.x), P.down);
  }
}

}  // namespace kadapter
