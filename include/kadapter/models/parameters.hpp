/// @file parameters.hpp
/// @brief One allocation for a model's parameters (and one for their gradients), handed to
/// the layers as named views.
#pragma once

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "kadapter/config.hpp"
#include "kadapter/core/aligned.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/core/tensor.hpp"
#include "kadapter/layers/encoder_layer.hpp"
#include "kadapter/layers/layernorm.hpp"
#include "kadapter/layers/linear.hpp"

namespace kadapter {

/// @brief A named parameter tensor of a model: checkpoint name, shape, and where it lives.
template <class T>
struct ParamSlot {
  std::string name;            ///< e.g. "adapter.0.encoder.layer.1.attention.self.query.weight"
  std::vector<index_t> shape;  ///< PyTorch shape
  T* data = nullptr;           ///< into the model's parameter allocation
  T* grad = nullptr;           ///< into the gradient allocation, or nullptr (frozen / no grads)
  index_t offset = 0;          ///< position in the flat parameter array
  bool decay = true;           ///< weight decay applies (false for biases and LayerNorm weights)
  bool trainable = true;       ///< updated by the optimizer
  index_t size() const {
    index_t n = 1;
    for (index_t s : shape) n *= s;
    return n;
  }
};

/// @brief The authors' no-decay rule: a parameter whose name contains "bias" or
/// "LayerNorm.weight" gets no weight decay (a substring test, as in their scripts).
inline bool decays(const std::string& name) {
  return name.find("bias") == std::string::npos &&
         name.find("LayerNorm.weight") == std::string::npos;
}

/// @brief Hands out consecutive views of a flat parameter buffer (and the gradient buffer at
/// the same offsets), recording each tensor's name in a table.
///
/// Run a model's declaration once with null buffers to count (used()), allocate, then run it
/// again with the buffers to bind the views.
template <class T>
class ParamLayout {
 public:
  /// @param values parameter buffer, or nullptr for a counting pass
  /// @param grads gradient buffer of the same size, or nullptr for no gradients
  /// @param table receives one ParamSlot per tensor, or nullptr
  /// @param align every tensor starts at a multiple of this many elements (padding between
  ///        tensors stays zero)
  ParamLayout(T* values, T* grads, std::vector<ParamSlot<T>>* table, bool trainable = true, index_t align = 1)
      : values_(values), grads_(grads), table_(table), trainable_(trainable), align_(align) {}

  /// @brief Whether the tensors declared from now on are trainable.
  void set_trainable(bool t) noexcept { trainable_ = t; }

  MatrixView<const T> matrix(const std::string& name, index_t rows, index_t cols,
                             MatrixView<T>* grad = nullptr) {
    auto [v, g] = next(name, {rows, cols});
    if (grad) *grad = MatrixView<T>(g, rows, cols);
    return MatrixView<const T>(v, rows, cols);
  }
  VectorView<const T> vector(const std::string& name, index_t n, VectorView<T>* grad = nullptr) {
    auto [v, g] = next(name, {n});
    if (grad) *grad = VectorView<T>(g, n);
    return VectorView<const T>(v, n);
  }
  LinearParams<T> linear(const std::string& name, index_t out, index_t in,
                         LinearGrads<T>* grad = nullptr) {
    LinearParams<T> p;
    p.weight = matrix(name + ".weight", out, in, grad ? &grad->weight : nullptr);
    p.bias = vector(name + ".bias", out, grad ? &grad->bias : nullptr);
    return p;
  }
  LayerNormParams<T> norm(const std::string& name, index_t n, LayerNormGrads<T>* grad = nullptr) {
    LayerNormParams<T> p;
    p.gamma = vector(name + ".weight", n, grad ? &grad->gamma : nullptr);
    p.beta = vector(name + ".bias", n, grad ? &grad->beta : nullptr);
    return p;
  }
  /// @brief A BERT attention block: `PREFIX.self.{query,key,value}`, `PREFIX.output.dense`,
  /// `PREFIX.output.LayerNorm`.
  AttentionParams<T> attention(const std::string& prefix, index_t width,
                               AttentionGrads<T>* grad = nullptr) {
    AttentionParams<T> p;
    p.query = linear(prefix + ".self.query", width, width, grad ? &grad->query : nullptr);
    p.key = linear(prefix + ".self.key", width, width, grad ? &grad->key : nullptr);
    p.value = linear(prefix + ".self.value", width, width, grad ? &grad->value : nullptr);
    p.output = linear(prefix + ".output.dense", width, width, grad ? &grad->output : nullptr);
    p.norm = norm(prefix + ".output.LayerNorm", width, grad ? &grad->norm : nullptr);
    return p;
  }
  /// @brief One BERT encoder layer with HuggingFace names under @p prefix (ending in '.').
  EncoderLayerParams<T> encoder_layer(const std::string& prefix, index_t width, index_t ffn,
                                      EncoderLayerGrads<T>* grad = nullptr) {
    EncoderLayerParams<T> p;
    p.attention = attention(prefix + "attention", width, grad ? &grad->attention : nullptr);
    p.intermediate =
        linear(prefix + "intermediate.dense", ffn, width, grad ? &grad->intermediate : nullptr);
    p.output = linear(prefix + "output.dense", width, ffn, grad ? &grad->output : nullptr);
    p.output_norm = norm(prefix + "output.LayerNorm", width, grad ? &grad->output_norm : nullptr);
    return p;
  }

  /// @brief Elements declared so far.
  index_t used() const noexcept { return used_; }

 private:
  std::pair<T*, T*> next(const std::string& name, std::vector<index_t> shape) {
    ParamSlot<T> slot;
    slot.name = name;
    slot.shape = std::move(shape);
    used_ = (used_ + align_ - 1) / align_ * align_;
    slot.offset = used_;
    slot.data = values_ ? values_ + used_ : nullptr;
    slot.grad = (grads_ && trainable_) ? grads_ + used_ : nullptr;
    slot.decay = decays(name);
    slot.trainable = trainable_;
    used_ += slot.size();
    std::pair<T*, T*> r{slot.data, slot.grad};  // frozen tensors get no gradient view
    if (table_) table_->push_back(std::move(slot));
    return r;
  }
  T* values_;
  T* grads_;
  std::vector<ParamSlot<T>>* table_;
  bool trainable_;
  index_t align_;
  index_t used_ = 0;
};

/// @brief A model's parameters and gradients, each one flat allocation, with the table of
/// named tensors. Built by running a declaration function twice (count, then bind).
template <class T>
class ParameterStore {
 public:
  /// @brief Allocate for @p declare, a callable `R(ParamLayout<T>&)`, and return what the
  /// binding pass returned (the views).
  template <class Declare>
  auto build(Declare&& declare, bool with_grads = true) {
    ParamLayout<T> counter(nullptr, nullptr, nullptr, true, kAlign);
    declare(counter);
    values_.assign(static_cast<std::size_t>(counter.used()), T(0));
    grads_.assign(with_grads ? values_.size() : 0, T(0));
    table_.clear();
    ParamLayout<T> layout(values_.data(), with_grads ? grads_.data() : nullptr, &table_, true, kAlign);
    return declare(layout);
  }

  /// @brief Every tensor starts at a multiple of this many elements (64 bytes of fp32): a
  /// tensor after an odd-sized one (a bias of 11 relations) stays aligned for vector loads
  /// and for the GPU's tensor-core products. The padding is zero and never updated.
  static constexpr index_t kAlign = 64 / static_cast<index_t>(sizeof(float));

  std::span<T> values() noexcept { return values_; }
  std::span<const T> values() const noexcept { return values_; }
  std::span<T> gradients() noexcept { return grads_; }
  std::span<const T> gradients() const noexcept { return grads_; }
  const std::vector<ParamSlot<T>>& table() const noexcept { return table_; }

  /// @brief The slot named @p name, or nullptr.
  const ParamSlot<T>* find(const std::string& name) const {
    for (const auto& s : table_)
      if (s.name == name) return &s;
    return nullptr;
  }
  /// @brief Set every gradient to zero.
  void zero_grad() noexcept { std::fill(grads_.begin(), grads_.end(), T(0)); }
  /// @brief Number of trainable elements.
  index_t trainable_count() const noexcept {
    index_t n = 0;
    for (const auto& s : table_)
      if (s.trainable) n += s.size();
    return n;
  }

 private:
  AlignedVector<T> values_;
  AlignedVector<T> grads_;
  std::vector<ParamSlot<T>> table_;
};

}  // namespace kadapter
