// CPU reference for the GPU tests: see cpu_reference.hpp.
#include "cpu_reference.hpp"

#include <random>

#include "kadapter/kadapter.hpp"

namespace ref {
using kadapter::Cpu;

void linear_forward(M out, CM in, const kadapter::LinearParams<F>& p) { kadapter::linear_forward(Cpu{}, out, in, p); }
void linear_backward(M d_in, GradientMode mode, const kadapter::LinearGrads<F>* g, CM d_out, CM in,
                     const kadapter::LinearParams<F>& p) {
  kadapter::linear_backward(Cpu{}, d_in, mode, g, d_out, in, p);
}
void add_layernorm_forward(M out, kadapter::LayerNormCache<F>* cache, CM a, CM b, const kadapter::LayerNormParams<F>& p,
                           F eps) {
  kadapter::add_layernorm_forward(Cpu{}, out, cache, a, b, p, eps);
}
void layernorm_backward(M d_in, GradientMode mode, const kadapter::LayerNormGrads<F>* g, CM d_out,
                        const kadapter::LayerNormCache<F>& cache, const kadapter::LayerNormParams<F>& p) {
  kadapter::layernorm_backward(Cpu{}, d_in, mode, g, d_out, cache, p);
}
void linear_concat_forward(M out, std::span<const CM> inputs, const kadapter::LinearParams<F>& p) {
  kadapter::linear_concat_forward(Cpu{}, out, inputs, p);
}
void linear_concat_backward(std::span<const M> d_inputs, GradientMode mode, const kadapter::LinearGrads<F>* g, CM d_out,
                            std::span<const CM> inputs, const kadapter::LinearParams<F>& p) {
  kadapter::linear_concat_backward(Cpu{}, d_inputs, mode, g, d_out, inputs, p);
}
void weighted_rows_forward(M out, CM weights, CM features) { kadapter::weighted_rows_forward(Cpu{}, out, weights, features); }
void weighted_rows_backward(M d_features, CM d_out, CM weights) {
  kadapter::weighted_rows_backward(Cpu{}, d_features, d_out, weights);
}
void accumulate_bias_grad(F* bias_grad, CM d_out) { kadapter::accumulate_bias_grad(bias_grad, d_out); }
void gelu_inplace(std::span<F> x) { kadapter::gelu_inplace(Cpu{}, x); }
void gelu_backward_inplace(std::span<F> d, std::span<const F> pre) { kadapter::gelu_backward_inplace(Cpu{}, d, pre); }
void bias_gelu_forward(M pre, M act, const F* bias) { kadapter::bias_gelu_forward(Cpu{}, pre, act, bias); }
void bias_gelu_backward(M d, CM pre, F* bias_grad) { kadapter::bias_gelu_backward(Cpu{}, d, pre, bias_grad); }
void dropout_inplace(M x, const Dropout& d, index_t seq) { kadapter::dropout_inplace(Cpu{}, x, d, seq); }
void attention_forward(M ctx, F* probs, CM q, CM k, CM v, std::span<const F> key_mask, index_t batch, index_t seq,
                       index_t heads, const Dropout* dropout) {
  kadapter::AlignedVector<F> scratch(kadapter::attention_scratch(seq));
  kadapter::attention_forward(Cpu{}, ctx, probs, q, k, v, key_mask, batch, seq, heads, scratch.data(), dropout);
}
void attention_backward(M d_q, M d_k, M d_v, CM d_ctx, CM q, CM k, CM v, const F* probs, index_t batch, index_t seq,
                        index_t heads, const Dropout* dropout) {
  kadapter::AlignedVector<F> scratch(kadapter::attention_scratch(seq));
  kadapter::attention_backward(Cpu{}, d_q, d_k, d_v, d_ctx, q, k, v, probs, batch, seq, heads, scratch.data(), dropout);
}
void embeddings_forward(M out, kadapter::LayerNormCache<F>* cache, std::span<const std::int64_t> ids,
                        std::span<const std::int64_t> positions, std::span<const std::int64_t> token_types,
                        const kadapter::EmbeddingParams<F>& p, F eps) {
  kadapter::embeddings_forward(Cpu{}, out, cache, ids, positions, token_types, p, eps);
}
F cross_entropy(M d_logits, CM logits, std::span<const std::int64_t> labels, std::span<const std::int64_t> row_weight,
                std::span<const std::int64_t> column_mask) {
  return kadapter::cross_entropy(Cpu{}, d_logits, logits, labels, row_weight, column_mask);
}
F bce_with_logits(M d_logits, CM logits, CM targets) { return kadapter::bce_with_logits(Cpu{}, d_logits, logits, targets); }

void fill_adamw_case(kadapter::ParameterStore<F>& store, unsigned seed) {
  declare_adamw_case(store);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<F> u(-1.0f, 1.0f);
  // Tensor by tensor: the padding between them stays zero.
  for (const auto& s : store.table())
    for (index_t i = 0; i < s.size(); ++i) s.data[i] = u(rng);
  for (const auto& s : store.table())
    for (index_t i = 0; i < s.size(); ++i) store.gradients()[static_cast<std::size_t>(s.offset + i)] = u(rng);
}

std::vector<F> adamw_run(unsigned seed, std::span<const double> grad_scales) {
  kadapter::ParameterStore<F> store;
  fill_adamw_case(store, seed);
  const kadapter::AdamWConfig cfg = adamw_case_config();
  kadapter::AdamW<F> opt(cfg);
  for (double scale : grad_scales) opt.step(store, cfg.lr, scale);
  return {store.values().begin(), store.values().end()};
}

LayerResult encoder_layer(const LayerCase& c) {
  const auto& d = c.dims;
  const index_t n = d.tokens(), h = d.hidden;
  LayerResult r;
  r.y.assign(static_cast<std::size_t>(n * h), 0.0f);
  r.dx.assign(r.y.size(), 0.0f);
  r.grads.assign(c.values.size(), 0.0f);
  kadapter::EncoderLayerGrads<F> g;
  kadapter::ParamLayout<F> layout(const_cast<F*>(c.values.data()), r.grads.data(), nullptr);
  const auto p = layout.encoder_layer("layer.", d.hidden, d.ffn, &g);
  kadapter::Workspace<F> ws;
  ws.reserve(kadapter::EncoderLayerCache<F>::elements(d) +
             std::max(kadapter::encoder_layer_forward_scratch<F>(d, true), kadapter::encoder_layer_backward_scratch<F>(d)));
  kadapter::EncoderLayerCache<F> cache;
  cache.bind(ws, d);
  const std::size_t mark = ws.used();
  kadapter::encoder_layer_forward(Cpu{}, M(r.y.data(), n, h), &cache, CM(c.x.data(), n, h), std::span<const F>(c.mask), p, d,
                                  &c.drop, ws);
  ws.rewind(mark);
  kadapter::encoder_layer_backward(Cpu{}, M(r.dx.data(), n, h), GradientMode::Overwrite, &g, CM(c.dy.data(), n, h), cache,
                                   p, d, &c.drop, ws);
  return r;
}

AdapterResult adapter(const AdapterCase& c) {
  const index_t n = c.inner.tokens(), h = c.cfg.hidden;
  AdapterResult r;
  r.grads.assign(c.values.size(), 0.0f);
  kadapter::ParamLayout<F> layout(const_cast<F*>(c.values.data()), r.grads.data(), nullptr);
  const auto p = kadapter::declare_adapter(layout, "adapter.", c.cfg, true);
  kadapter::Workspace<F> acts, ws;
  acts.reserve(kadapter::AdapterCache<F>::elements(c.cfg, c.inner, true));
  ws.reserve(kadapter::adapter_scratch<F>(c.cfg, c.inner, true));
  kadapter::AdapterCache<F> cache;
  cache.bind(acts, c.cfg, c.inner, true);
  const auto hidden = [&](index_t i) { return CM(c.hidden[static_cast<std::size_t>(i)].data(), n, h); };
  kadapter::adapter_forward(Cpu{}, cache, hidden, std::span<const F>(c.mask), p, c.cfg, kadapter::SkipRule::standard, c.inner,
                            adapter_case_dropouts, true, ws);
  ws.reset();
  kadapter::adapter_backward(Cpu{}, CM(c.d_result.data(), n, h), cache, p, c.cfg, kadapter::SkipRule::standard, c.inner,
                             adapter_case_dropouts, ws);
  r.result.assign(cache.result.data(), cache.result.data() + cache.result.size());
  return r;
}

double grad_norm(std::span<const F> grads) {
  kadapter::ParameterStore<F> store;
  const auto n = static_cast<index_t>(grads.size());
  store.build([n](kadapter::ParamLayout<F>& l) {
    l.vector("w", n);
    return 0;
  });
  std::copy(grads.begin(), grads.end(), store.gradients().begin());
  return kadapter::global_grad_norm(store);
}
}  // namespace ref
