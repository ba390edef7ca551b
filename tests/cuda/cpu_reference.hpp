// The CPU backend behind plain functions, compiled by the C++ compiler in cpu_reference.cpp:
// the GPU tests compare every Cuda overload with these on the same inputs. (The CPU kernels
// use host SIMD code that nvcc's front end need not see.)
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kadapter/core/gradient_mode.hpp"
#include "kadapter/core/random.hpp"
#include "kadapter/core/tensor.hpp"
#include "kadapter/layers/embeddings.hpp"
#include "kadapter/layers/encoder_layer.hpp"
#include "kadapter/models/adapter.hpp"
#include "kadapter/layers/layernorm.hpp"
#include "kadapter/layers/linear.hpp"
#include "kadapter/models/parameters.hpp"
#include "kadapter/train/optimizer.hpp"

namespace ref {
using kadapter::Dropout;
using kadapter::GradientMode;
using kadapter::index_t;
using F = float;
using M = kadapter::MatrixView<float>;
using CM = kadapter::MatrixView<const float>;

void linear_forward(M out, CM in, const kadapter::LinearParams<F>& p);
void linear_backward(M d_in, GradientMode mode, const kadapter::LinearGrads<F>* g, CM d_out, CM in,
                     const kadapter::LinearParams<F>& p);
void add_layernorm_forward(M out, kadapter::LayerNormCache<F>* cache, CM a, CM b, const kadapter::LayerNormParams<F>& p,
                           F eps);
void layernorm_backward(M d_in, GradientMode mode, const kadapter::LayerNormGrads<F>* g, CM d_out,
                        const kadapter::LayerNormCache<F>& cache, const kadapter::LayerNormParams<F>& p);
void linear_concat_forward(M out, std::span<const CM> inputs, const kadapter::LinearParams<F>& p);
void linear_concat_backward(std::span<const M> d_inputs, GradientMode mode, const kadapter::LinearGrads<F>* g, CM d_out,
                            std::span<const CM> inputs, const kadapter::LinearParams<F>& p);
void weighted_rows_forward(M out, CM weights, CM features);
void weighted_rows_backward(M d_features, CM d_out, CM weights);
void accumulate_bias_grad(F* bias_grad, CM d_out);
void gelu_inplace(std::span<F> x);
void gelu_backward_inplace(std::span<F> d, std::span<const F> pre);
void bias_gelu_forward(M pre, M act, const F* bias);
void bias_gelu_backward(M d, CM pre, F* bias_grad);
void dropout_inplace(M x, const Dropout& d, index_t seq);
void attention_forward(M ctx, F* probs, CM q, CM k, CM v, std::span<const F> key_mask, index_t batch, index_t seq,
                       index_t heads, const Dropout* dropout);
void attention_backward(M d_q, M d_k, M d_v, CM d_ctx, CM q, CM k, CM v, const F* probs, index_t batch, index_t seq,
                        index_t heads, const Dropout* dropout);
void embeddings_forward(M out, kadapter::LayerNormCache<F>* cache, std::span<const std::int64_t> ids,
                        std::span<const std::int64_t> positions, std::span<const std::int64_t> token_types,
                        const kadapter::EmbeddingParams<F>& p, F eps);
F cross_entropy(M d_logits, CM logits, std::span<const std::int64_t> labels, std::span<const std::int64_t> row_weight,
                std::span<const std::int64_t> column_mask);
F bce_with_logits(M d_logits, CM logits, CM targets);

/// A small model's worth of parameters: "dense.weight" (decayed), "dense.bias" and
/// "LayerNorm.weight" (not decayed), and a frozen "frozen.weight".
inline void declare_adamw_case(kadapter::ParameterStore<F>& store) {
  store.build([](kadapter::ParamLayout<F>& l) {
    l.matrix("dense.weight", 24, 40);
    l.vector("dense.bias", 24);
    l.vector("LayerNorm.weight", 24);
    l.set_trainable(false);
    l.matrix("frozen.weight", 8, 16);
    return 0;
  });
}
/// declare_adamw_case's store with values and gradients filled from @p seed.
void fill_adamw_case(kadapter::ParameterStore<F>& store, unsigned seed);
/// The AdamW settings of the case: lr · weight decay = 0.05 per step, so that a decay
/// mix-up moves values far past the tests' tolerance.
inline kadapter::AdamWConfig adamw_case_config() {
  kadapter::AdamWConfig cfg;
  cfg.lr = 1e-3;
  cfg.weight_decay = 50.0;
  return cfg;
}
/// AdamW<float> with adamw_case_config() run on the filled case, one step per entry of
/// @p grad_scales with that gradient scale; returns the final values.
std::vector<F> adamw_run(unsigned seed, std::span<const double> grad_scales);
/// One encoder layer's forward and backward pass: the inputs, and what comes out.
struct LayerCase {
  kadapter::LayerDims dims;
  std::vector<F> values;  // the parameters, in the order ParamLayout::encoder_layer declares them
  std::vector<F> x, dy;   // (N, H) each
  std::vector<F> mask;    // (N) additive key mask
  kadapter::LayerDropouts drop;
};
struct LayerResult {
  std::vector<F> y, dx, grads;  // grads: parallel to LayerCase::values
};
/// Elements ParamLayout::encoder_layer declares for @p d.
inline std::size_t encoder_layer_elements(const kadapter::LayerDims& d) {
  kadapter::ParamLayout<F> counter(nullptr, nullptr, nullptr);
  counter.encoder_layer("layer.", d.hidden, d.ffn);
  return static_cast<std::size_t>(counter.used());
}
LayerResult encoder_layer(const LayerCase& c);

/// A whole adapter (the test's config: adapter layers, inner layers, skip connections)
/// forward and backward on given backbone states.
struct AdapterCase {
  kadapter::AdapterConfig cfg;
  kadapter::LayerDims inner;             // batch, seq and the adapter's inner sizes
  std::vector<F> values;                 // declare_adapter's parameters
  std::vector<std::vector<F>> hidden;    // backbone state p as (N, H), for every p up to the last plug-in
  std::vector<F> mask;                   // (N) additive key mask
  std::vector<F> d_result;               // (N, H)
};
struct AdapterResult {
  std::vector<F> result, grads;
};
/// The dropouts of inner layer j of adapter layer k in the case.
inline kadapter::LayerDropouts adapter_case_dropouts(index_t k, index_t j) {
  const auto site = static_cast<std::uint64_t>(10 * k + 3 * j);
  return {{0.1f, 5, kadapter::dropout_stream(2, 0, site)},
          {0.1f, 5, kadapter::dropout_stream(2, 0, site + 1)},
          {0.1f, 5, kadapter::dropout_stream(2, 0, site + 2)}};
}
/// Elements declare_adapter declares for @p cfg.
inline std::size_t adapter_elements(const kadapter::AdapterConfig& cfg) {
  kadapter::ParamLayout<F> counter(nullptr, nullptr, nullptr);
  kadapter::declare_adapter(counter, "adapter.", cfg, true);
  return static_cast<std::size_t>(counter.used());
}
AdapterResult adapter(const AdapterCase& c);

/// global_grad_norm of a store whose one tensor holds @p grads.
double grad_norm(std::span<const F> grads);
}  // namespace ref
