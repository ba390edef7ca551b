/// @file task_model.hpp
/// @brief K-Adapter task models: adapters on the frozen backbone's hidden states, fusion,
/// and the task heads of the paper (factual and linguistic pre-training, entity typing,
/// relation classification, multiple-choice QA), with losses and hand-derived backward.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "kadapter/backend/eigen/backward.hpp"
#include "kadapter/backend/eigen/kernels.hpp"
#include "kadapter/config/adapter_config.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/core/random.hpp"
#include "kadapter/core/workspace.hpp"
#include "kadapter/layers/encoder_layer.hpp"
#include "kadapter/models/adapter.hpp"
#include "kadapter/models/encoder.hpp"
#include "kadapter/models/parameters.hpp"

namespace kadapter {

/// @brief The task a model is trained on.
enum class Task {
  fac,              ///< factual adapter pre-training: relation classification at `@` / `#`
  lin,              ///< linguistic adapter pre-training: dependency-head prediction per token
  entity_typing,    ///< multi-label typing of the mention at the first `@` (BCE with logits)
  relation,         ///< relation classification (TACRED-style) at `@` / `#`
  multiple_choice,  ///< one score per choice at `<s>`, softmax over the choices
};

/// @brief How a downstream model combines the backbone's last hidden state h with the
/// adapters' outputs a_j.
enum class Fusion {
  concat,  ///< task_dense(concat_j task_dense_j(concat(h, a_j)))
  add,     ///< h + Σ_j a_j
};

/// @brief Behaviour switch: correct padding masks, or the authors' code exactly.
enum class Compat {
  standard,  ///< adapters and heads mask padding
  official,  ///< the authors' quirks: see docs/compat.md
};

/// @brief Run-time description of a task model (the adapters' sizes are an AdapterConfig).
struct TaskConfig {
  Task task = Task::fac;
  index_t num_labels = 0;  ///< relations / types; lin: max_seq_length; multiple choice: choices
  /// Downstream: adapter names ("fac", "lin", ...), their tensors are `NAME_adapter.*`.
  /// Pre-training (fac, lin): exactly one adapter, its tensors are `adapter.*`.
  std::vector<std::string> adapters;
  std::vector<bool> adapter_trainable;  ///< one per adapter (default: all trainable)
  Fusion fusion = Fusion::concat;
  Compat compat = Compat::standard;
  float dropout = 0.1f;            ///< every dropout of adapters and head (0 to disable)
  /// Multiple choice under Compat::official: the authors' CosmosQA adapter models fuse each
  /// adapter's output with the backbone before the model's fusion, as
  /// `a_rate·h + b_rate·r` (add) or `NAME_adapter.task_dense(concat(a_rate·h, b_rate·r))`
  /// (concat). Their script reads `args.a_rate` / `args.b_rate` without defining them.
  double qa_a_rate = 1.0;
  double qa_b_rate = 1.0;
  double head_layer_norm_eps = 1e-5;  ///< LayerNorm eps of the lin head's attention block

  bool pretraining() const noexcept { return task == Task::fac || task == Task::lin; }
};

/// @brief Name of a task as the command line spells it.
inline std::string task_name(Task t) {
  switch (t) {
    case Task::fac: return "fac";
    case Task::lin: return "lin";
    case Task::entity_typing: return "entity-typing";
    case Task::relation: return "relation";
    case Task::multiple_choice: return "multiple-choice";
  }
  return "?";
}

/// @brief One batch for a task model. Rows are sequences; for multiple choice, the
/// `choices` sequences of one question are consecutive rows.
///
/// The hidden states are in the memory of backend @p B; every span is host memory (on Cuda
/// the model copies the weights and targets to the device).
template <class T, class B = Cpu>
struct TaskBatch {
  index_t batch = 0;  ///< B, number of sequences
  index_t seq = 0;    ///< T
  /// Backbone hidden states (HuggingFace numbering); must hold the plug-in points and `last`.
  const HiddenStates<T, B>* hidden = nullptr;
  /// The backbone state the head reads besides the adapters' output: by default (-1) the
  /// last one, `hidden->num_layers()` (L); an index 0..L reads that state instead (anything
  /// else is refused).
  index_t last = -1;
  std::span<const std::int64_t> attention_mask;   ///< (B, T): 1 for a token, 0 for padding
  /// fac, relation: (B) class ids; lin: (B, T) head positions; multiple choice: (B / choices)
  /// the right choice of each question. -100 leaves a row out of the loss (PyTorch's
  /// ignore_index): to predict without labels, pass -100 everywhere (the logits do not
  /// depend on the labels).
  std::span<const std::int64_t> labels;
  std::span<const T> targets;  ///< entity typing: (B, num_labels) multi-hot targets in [0, 1]
  /// fac, relation: (B, T) weights of the rows whose states make the subject's feature (the
  /// authors' one-hot `subj_special_start_id`: 1 at the `@` marker, 0 elsewhere).
  std::span<const T> subj;
  std::span<const T> obj;    ///< fac, relation: (B, T) the same for the object (`#` marker)
  std::span<const T> start;  ///< entity typing: (B, T) the same for the entity (`@` marker)
};

/// @brief Training-step identity for dropout streams; `training = false` disables dropout.
struct StepInfo {
  bool training = false;   ///< apply dropout (a training forward pass)
  std::uint64_t seed = 0;  ///< the run's dropout seed
  std::uint64_t step = 0;  ///< optimizer step (0-based)
  std::uint64_t micro = 0; ///< micro-batch within the step
};

/// @brief A K-Adapter task model: parameters (one allocation), forward, loss and backward.
///
/// @tparam A compile-time adapter sizes (shared by all adapters of the model), or
///           `dynamic_adapter` for sizes given at run time
/// @tparam T compute type (float on Cuda)
/// @tparam B backend: Cpu, or Cuda (include kadapter_cuda.hpp from a .cu file). On Cuda the
///           parameters and gradients live on the device, and parameters() is a host copy
///           kept in step automatically: calling it copies the device arrays back when they
///           have changed, and the next forward() (or zero_grad()) copies the host arrays to
///           the device after a call of the non-const parameters(). Keep no reference to the
///           store across a training step.
template <AdapterConfig A, ComputeScalar T = float, class B = Cpu>
  requires Backend<B>
class TaskModel {
  static_assert(std::is_same_v<B, Cpu> || std::is_same_v<T, float>, "the CUDA backend computes in fp32");
  static constexpr bool on_host = std::is_same_v<B, Cpu>;

 public:
  static constexpr AdapterConfig static_adapter = A;
  using scalar_type = T;
  using backend_type = B;
  using batch_type = TaskBatch<T, B>;

  /// @brief A model for @p task with adapters of sizes @p adapter (must equal A unless A is
  /// dynamic). Parameters start at zero; load or initialise them.
  TaskModel(const TaskConfig& task, const AdapterConfig& adapter) : task_(task), acfg_(adapter) {
    validate();
    auto declare = [this](ParamLayout<T>& lay) { return declare_all(lay); };
    store_.build(declare);
    if constexpr (!on_host) {
      // The same declaration again binds every view to the device arrays.
      const std::size_t n = store_.values().size();
      device_values_.resize(n);
      device_grads_.resize(n);
      ParamLayout<T> lay(device_values_.data(), device_grads_.data(), nullptr, true, ParameterStore<T>::kAlign);
      declare_all(lay);
      host_newer_ = true;
    }
  }
  TaskModel(const TaskModel&) = delete;
  TaskModel& operator=(const TaskModel&) = delete;

  const TaskConfig& task() const noexcept { return task_; }
  const AdapterConfig& adapter_config() const noexcept { return acfg_; }
  /// @brief Parameters and gradients with their names (on Cuda: the host copy, see above).
  ParameterStore<T>& parameters() {
    if constexpr (!on_host) {
      sync_to_host();
      host_newer_ = true;
    }
    return store_;
  }
  const ParameterStore<T>& parameters() const {
    if constexpr (!on_host) sync_to_host();
    return store_;
  }

  /// @brief The flat parameter array the kernels read, in the backend's memory (the store's
  /// own array on Cpu). For optimizers; call backend_updated() after writing it.
  std::span<T> backend_values() {
    if constexpr (on_host) {
      return store_.values();
    } else {
      ensure_on_device();
      return std::span<T>(device_values_.data(), device_values_.size());
    }
  }
  /// @brief The flat gradient array backward() accumulates into, in the backend's memory.
  std::span<T> backend_gradients() {
    if constexpr (on_host) {
      return store_.gradients();
    } else {
      ensure_on_device();
      return std::span<T>(device_grads_.data(), device_grads_.size());
    }
  }
  /// @brief Say that the backend arrays were written (so parameters() copies them back).
  void backend_updated() noexcept {
    if constexpr (!on_host) device_newer_ = true;
  }
  /// @brief Set every gradient to zero.
  void zero_grad() {
    if constexpr (on_host) {
      store_.zero_grad();
    } else {
      ensure_on_device();
      fill_zero(B{}, MatrixView<T>(device_grads_.data(), 1, static_cast<index_t>(device_grads_.size())));
      device_newer_ = true;
    }
  }
  /// @brief How often the activation and scratch arenas have allocated.
  std::size_t workspace_allocations() const noexcept {
    return acts_.allocations() + scratch_.allocations();
  }

  /// @brief Forward pass and loss. Keeps what backward() needs when @p step.training.
  /// @return the mean loss of the batch
  T forward(const TaskBatch<T, B>& b, const StepInfo& step) {
    check_batch(b);
    if constexpr (!on_host) ensure_on_device();
    batch_ = b;
    step_ = step;
    const index_t N = b.batch * b.seq, H = acfg_.hidden;
    const bool training = step.training;
    const LayerDims inner = inner_dims(b);
    const std::size_t nh = Workspace<T, B>::padded(static_cast<std::size_t>(N * H));

    // --- plan the arenas: activations live until backward, scratch is per call ---------
    acts_.reset();
    acts_.reserve(activation_elements(b, training));
    scratch_.reset();
    scratch_.reserve(scratch_elements(b, training));
    adapter_mask_ = take_vec(acts_, N);
    head_mask_ = take_vec(acts_, N);
    const T fill = task_.compat == Compat::official ? T(-10000) : std::numeric_limits<T>::lowest();
    key_mask_into(head_mask_, b.attention_mask, fill);
    const bool adapters_masked = task_.compat == Compat::standard;
    if (adapters_masked) key_mask_into(adapter_mask_, b.attention_mask, fill);
    // The head's row weights and targets, in the backend's memory.
    subj_ = on_backend(b.subj);
    obj_ = on_backend(b.obj);
    start_ = on_backend(b.start);
    targets_ = on_backend(b.targets);

    auto hidden = [&](index_t p) {
      auto v = (*b.hidden)[p];
      return MatrixView<const T>(v.data(), N, H);
    };
    const MatrixView<const T> h_last = hidden(last_state(b));

    // --- adapters ------------------------------------------------------------------------
    caches_.resize(adapters_.size());
    for (std::size_t j = 0; j < adapters_.size(); ++j) {
      const bool keep = training && adapters_[j].trainable;
      caches_[j].bind(acts_, acfg_, inner, keep);
      adapter_forward(B{}, caches_[j], hidden,
                      adapters_masked ? std::span<const T>(adapter_mask_) : std::span<const T>(),
                      adapters_[j], acfg_, skip_rule(), inner, adapter_dropouts(j), keep,
                      scratch_);
      scratch_.reset();
    }

    // --- the authors' CosmosQA pre-fusion (multiple choice, official) --------------------
    if (prefuse()) {
      scaled_h_ = MatrixView<T>(acts_.take(nh), N, H);
      scale_copy(B{}, scaled_h_, h_last, static_cast<T>(task_.qa_a_rate));
      scaled_r_.resize(adapters_.size());
      prefused_.resize(adapters_.size());
      for (std::size_t j = 0; j < adapters_.size(); ++j) {
        scaled_r_[j] = MatrixView<T>(acts_.take(nh), N, H);
        scale_copy(B{}, scaled_r_[j], MatrixView<const T>(caches_[j].result), static_cast<T>(task_.qa_b_rate));
        prefused_[j] = MatrixView<T>(acts_.take(nh), N, H);
        if (task_.fusion == Fusion::add) {
          copy_matrix(B{}, prefused_[j], MatrixView<const T>(scaled_h_));
          add_into(B{}, prefused_[j], MatrixView<const T>(scaled_r_[j]));
        } else {
          const MatrixView<const T> in[2] = {scaled_h_, scaled_r_[j]};
          linear_concat_forward(B{}, prefused_[j], std::span<const MatrixView<const T>>(in),
                                prefuse_dense_[j]);
        }
      }
    }

    // --- features F (N, H) ---------------------------------------------------------------
    features_ = MatrixView<T>(acts_.take(nh), N, H);
    if (task_.pretraining()) {
      const MatrixView<const T> in[2] = {h_last, MatrixView<const T>(caches_[0].result)};
      linear_concat_forward(B{}, features_, std::span<const MatrixView<const T>>(in), com_dense_);
    } else if (adapters_.empty()) {
      copy_matrix(B{}, features_, h_last);
    } else if (task_.fusion == Fusion::add) {
      copy_matrix(B{}, features_, h_last);
      for (std::size_t j = 0; j < adapters_.size(); ++j) add_into(B{}, features_, adapter_out(j));
    } else {
      fused_.resize(adapters_.size());
      for (std::size_t j = 0; j < adapters_.size(); ++j) {
        fused_[j] = MatrixView<T>(acts_.take(nh), N, H);
        const MatrixView<const T> in[2] = {h_last, adapter_out(j)};
        linear_concat_forward(B{}, fused_[j], std::span<const MatrixView<const T>>(in),
                              task_dense_adapter_[j]);
      }
      fused_in_.resize(adapters_.size());
      for (std::size_t j = 0; j < adapters_.size(); ++j) fused_in_[j] = fused_[j];
      linear_concat_forward(B{}, features_, std::span<const MatrixView<const T>>(fused_in_),
                            task_dense_);
    }

    // --- head ----------------------------------------------------------------------------
    return head_forward(b, training);
  }

  /// @brief Logits of the last forward pass: (B, R) for fac / relation / entity typing,
  /// (B*T, max_seq_length) for lin, (B / choices, choices) for multiple choice; in the
  /// backend's memory.
  MatrixView<const T> logits() const noexcept { return logits_; }

  /// @brief Backward pass of the last training forward: accumulates the gradient of the
  /// mean loss into every trainable parameter.
  void backward() {
    if (!step_.training) throw Error("backward() needs a forward pass with training = true");
    const TaskBatch<T, B>& b = batch_;
    if constexpr (!on_host) ensure_on_device();  // host writes since forward() go first
    backend_updated();
    const index_t N = b.batch * b.seq, H = acfg_.hidden;
    scratch_.reset();
    MatrixView<T> d_features(scratch_.take(static_cast<std::size_t>(N * H)), N, H);
    head_backward(b, d_features);
    const std::size_t mark = scratch_.used();
    const LayerDims inner = inner_dims(b);
    // d_a is the gradient of adapter_out(j): the adapter's output, or its CosmosQA pre-fusion.
    auto adapter_back = [&](std::size_t j, MatrixView<const T> d_a) {
      const std::size_t m = scratch_.used();
      MatrixView<const T> d_r = d_a;
      if (prefuse()) {
        MatrixView<T> d(scratch_.take(static_cast<std::size_t>(N * H)), N, H);
        if (task_.fusion == Fusion::add) {
          scale_copy(B{}, d, d_a, static_cast<T>(task_.qa_b_rate));
        } else {
          const MatrixView<const T> in[2] = {scaled_h_, scaled_r_[j]};
          const MatrixView<T> d_in[2] = {MatrixView<T>(), d};
          linear_concat_backward(B{}, std::span<const MatrixView<T>>(d_in), GradientMode::Overwrite,
                                 &prefuse_dense_grad_[j], d_a,
                                 std::span<const MatrixView<const T>>(in), prefuse_dense_[j]);
          scale_copy(B{}, d, MatrixView<const T>(d), static_cast<T>(task_.qa_b_rate));
        }
        d_r = d;
      }
      if (adapters_[j].trainable)
        adapter_backward(B{}, d_r, caches_[j], adapters_[j], acfg_, skip_rule(), inner,
                         adapter_dropouts(j), scratch_);
      scratch_.rewind(m);
    };
    if (task_.pretraining()) {
      MatrixView<T> d_a(scratch_.take(static_cast<std::size_t>(N * H)), N, H);
      const MatrixView<const T> in[2] = {h_last(b), MatrixView<const T>(caches_[0].result)};
      const MatrixView<T> d_in[2] = {MatrixView<T>(), d_a};
      linear_concat_backward(B{}, std::span<const MatrixView<T>>(d_in), GradientMode::Overwrite,
                             &com_dense_grad_, MatrixView<const T>(d_features),
                             std::span<const MatrixView<const T>>(in), com_dense_);
      adapter_back(0, d_a);
    } else if (adapters_.empty()) {
      // head only: nothing below the features is trainable
    } else if (task_.fusion == Fusion::add) {
      for (std::size_t j = 0; j < adapters_.size(); ++j) adapter_back(j, d_features);
    } else {
      const std::size_t K = adapters_.size();
      T* dg = scratch_.take(K * static_cast<std::size_t>(N * H));
      d_fused_.resize(K);
      for (std::size_t j = 0; j < K; ++j) d_fused_[j] = MatrixView<T>(dg + j * N * H, N, H);
      linear_concat_backward(B{}, std::span<const MatrixView<T>>(d_fused_),
                             GradientMode::Overwrite, &task_dense_grad_,
                             MatrixView<const T>(d_features),
                             std::span<const MatrixView<const T>>(fused_in_), task_dense_);
      MatrixView<T> d_a(scratch_.take(static_cast<std::size_t>(N * H)), N, H);
      for (std::size_t j = 0; j < K; ++j) {
        const MatrixView<const T> in[2] = {h_last(b), adapter_out(j)};
        const MatrixView<T> d_in[2] = {MatrixView<T>(), d_a};
        linear_concat_backward(B{}, std::span<const MatrixView<T>>(d_in),
                               GradientMode::Overwrite, &task_dense_adapter_grad_[j],
                               MatrixView<const T>(d_fused_[j]),
                               std::span<const MatrixView<const T>>(in), task_dense_adapter_[j]);
        adapter_back(j, d_a);
      }
    }
    scratch_.rewind(mark);
  }

 private:
  // ---------------------------------------------------------------------------------------
  void validate() {
    if (!A.is_dynamic() && acfg_ != A)
      throw Error("adapter config does not match the model's compile-time adapter config");
    if (!acfg_.valid())
      throw Error("adapter config is inconsistent: sizes must be positive, adapter size (" +
                  std::to_string(acfg_.size) + ") divisible by heads (" +
                  std::to_string(acfg_.heads) + "), 1.." + std::to_string(kMaxPlugPoints) +
                  " plug-in points that increase");
    validate_skip(acfg_, skip_rule());
    if (task_.num_labels <= 0)
      throw Error("task " + task_name(task_.task) + " needs a positive number of labels");
    if (task_.pretraining() && task_.adapters.size() != 1)
      throw Error("pre-training task " + task_name(task_.task) + " trains exactly one adapter");
    if (!task_.adapter_trainable.empty() && task_.adapter_trainable.size() != task_.adapters.size())
      throw Error("adapter_trainable needs one entry per adapter");
    for (std::size_t j = 0; j < task_.adapters.size(); ++j) {
      if (task_.adapters[j].empty()) throw Error("adapter " + std::to_string(j + 1) + " has no name");
      for (std::size_t i = 0; i < j; ++i)
        if (task_.adapters[i] == task_.adapters[j])
          throw Error("adapter \"" + task_.adapters[j] + "\" is named twice (its tensors are NAME_adapter.*)");
    }
    if (!(task_.dropout >= 0.0f && task_.dropout < 1.0f))
      throw Error("dropout must be in [0, 1), got " + std::to_string(task_.dropout));
  }

  /// The authors' CosmosQA adapter models fuse each adapter with the backbone first.
  bool prefuse() const noexcept {
    return task_.task == Task::multiple_choice && task_.compat == Compat::official &&
           !task_.adapters.empty();
  }
  /// What the model's fusion sees of adapter j.
  MatrixView<const T> adapter_out(std::size_t j) const {
    return prefuse() ? MatrixView<const T>(prefused_[j]) : MatrixView<const T>(caches_[j].result);
  }

  SkipRule skip_rule() const noexcept {
    return task_.compat == Compat::official ? SkipRule::official : SkipRule::standard;
  }

  bool trainable(std::size_t j) const {
    return task_.adapter_trainable.empty() || task_.adapter_trainable[j];
  }

  // Declares every tensor under the authors' names; the order is the flat layout's order.
  int declare_all(ParamLayout<T>& lay) {
    const index_t H = acfg_.hidden, R = task_.num_labels;
    adapters_.clear();
    for (std::size_t j = 0; j < task_.adapters.size(); ++j) {
      const std::string prefix =
          task_.pretraining() ? "adapter." : task_.adapters[j] + "_adapter.adapter.";
      adapters_.push_back(declare_adapter(lay, prefix, acfg_, trainable(j)));
    }
    prefuse_dense_.clear();
    prefuse_dense_grad_.assign(task_.adapters.size(), {});
    if (prefuse() && task_.fusion == Fusion::concat)
      for (std::size_t j = 0; j < task_.adapters.size(); ++j)
        prefuse_dense_.push_back(lay.linear(task_.adapters[j] + "_adapter.task_dense", H, 2 * H,
                                            &prefuse_dense_grad_[j]));
    task_dense_adapter_.assign(0, {});
    task_dense_adapter_grad_.assign(task_.adapters.size(), {});
    if (task_.pretraining()) {
      com_dense_ = lay.linear("com_dense", H, 2 * H, &com_dense_grad_);
    } else if (!task_.adapters.empty() && task_.fusion == Fusion::concat) {
      for (std::size_t j = 0; j < task_.adapters.size(); ++j)
        task_dense_adapter_.push_back(lay.linear("task_dense_" + task_.adapters[j], H, 2 * H,
                                                 &task_dense_adapter_grad_[j]));
      task_dense_ = lay.linear("task_dense", H,
                               static_cast<index_t>(task_.adapters.size()) * H, &task_dense_grad_);
    }
    switch (task_.task) {
      case Task::fac:
      case Task::relation:
        dense_ = lay.linear("dense", H, 2 * H, &dense_grad_);
        out_proj_ = lay.linear("out_proj", R, H, &out_proj_grad_);
        break;
      case Task::lin:
        self_attention_ = lay.attention("self_attention", H, &self_attention_grad_);
        dense_ = lay.linear("dense", H, H, &dense_grad_);
        out_proj_ = lay.linear("out_proj", R, H, &out_proj_grad_);
        break;
      case Task::entity_typing:
        dense_ = lay.linear("dense", H, H, &dense_grad_);
        out_proj_ = lay.linear("out_proj", R, H, &out_proj_grad_);
        break;
      case Task::multiple_choice:
        out_proj_ = lay.linear("classifier", 1, H, &out_proj_grad_);
        break;
    }
    return 0;
  }

  LayerDims inner_dims(const TaskBatch<T, B>& b) const {
    return LayerDims{b.batch, b.seq, acfg_.size, acfg_.heads, acfg_.ffn, acfg_.layer_norm_eps};
  }
  LayerDims head_dims(const TaskBatch<T, B>& b) const {
    return LayerDims{b.batch, b.seq, acfg_.hidden, 1, 0, task_.head_layer_norm_eps};
  }

  // Dropout site numbers: adapters use 1 + ((j * 16 + k) * 64 + l) * 4 + m; the head 1 << 30 + m.
  Dropout dropout_at(std::uint64_t site) const {
    Dropout d;
    if (step_.training && task_.dropout > 0) {
      d.p = task_.dropout;
      d.seed = step_.seed;
      d.stream = dropout_stream(step_.step, step_.micro, site);
    }
    return d;
  }
  auto adapter_dropouts(std::size_t j) const {
    return [this, j](index_t k, index_t l) {
      const std::uint64_t base =
          1 + ((static_cast<std::uint64_t>(j) * 16 + static_cast<std::uint64_t>(k)) * 64 +
               static_cast<std::uint64_t>(l)) * 4;
      return LayerDropouts{dropout_at(base), dropout_at(base + 1), dropout_at(base + 2)};
    };
  }
  LayerDropouts head_dropouts() const {
    constexpr std::uint64_t base = std::uint64_t{1} << 30;
    return LayerDropouts{dropout_at(base), dropout_at(base + 1), dropout_at(base + 2)};
  }
  Dropout head_dropout() const { return dropout_at((std::uint64_t{1} << 30) + 3); }

  /// TaskBatch::last, with -1 meaning the backbone's last state.
  static index_t last_state(const TaskBatch<T, B>& b) noexcept { return b.last < 0 ? b.hidden->num_layers() : b.last; }

  MatrixView<const T> h_last(const TaskBatch<T, B>& b) const {
    auto v = (*b.hidden)[last_state(b)];
    return MatrixView<const T>(v.data(), b.batch * b.seq, acfg_.hidden);
  }

  static std::span<T> take_vec(Workspace<T, B>& ws, index_t n) {
    return std::span<T>(ws.take(static_cast<std::size_t>(n)), static_cast<std::size_t>(n));
  }

  /// The additive key mask of @p mask (host) into @p dst (backend memory).
  void key_mask_into(std::span<T> dst, std::span<const std::int64_t> mask, T fill) {
    if constexpr (on_host) {
      additive_key_mask<T>(dst, mask, fill);
    } else {
      host_scratch_.resize(dst.size());
      additive_key_mask<T>(std::span<T>(host_scratch_), mask, fill);
      copy_from_host(B{}, dst.data(), std::span<const T>(host_scratch_));
    }
  }
  /// @p v (host) where the kernels can read it: itself on Cpu, a copy in the activation
  /// arena on Cuda.
  const T* on_backend(std::span<const T> v) {
    if constexpr (on_host) {
      return v.data();
    } else {
      if (v.empty()) return nullptr;
      T* d = acts_.take(v.size());
      copy_from_host(B{}, d, v);
      return d;
    }
  }
  /// On Cuda: copy the host store to the device if it was handed out for writing.
  void ensure_on_device() {
    if constexpr (!on_host) {
      if (!host_newer_) return;
      copy_from_host(B{}, device_values_.data(), std::span<const T>(store_.values()));
      copy_from_host(B{}, device_grads_.data(), std::span<const T>(store_.gradients()));
      host_newer_ = false;
      device_newer_ = false;
    }
  }
  /// On Cuda: copy the device arrays to the host store if they changed.
  void sync_to_host() const {
    if constexpr (!on_host) {
      if (!device_newer_) return;
      auto& store = const_cast<ParameterStore<T>&>(store_);
      copy_to_host(B{}, store.values(), device_values_.data());
      copy_to_host(B{}, store.gradients(), device_grads_.data());
      device_newer_ = false;
    }
  }

  std::size_t activation_elements(const TaskBatch<T, B>& b, bool training) const {
    using WS = Workspace<T, B>;
    const std::size_t N = static_cast<std::size_t>(b.batch * b.seq), H = acfg_.hidden;
    const std::size_t R = static_cast<std::size_t>(task_.num_labels);
    std::size_t total = 2 * WS::padded(N) + WS::padded(N * H);  // masks, features
    for (std::size_t j = 0; j < adapters_.size(); ++j)
      total += AdapterCache<T>::elements(acfg_, inner_dims(b), training && adapters_[j].trainable);
    total += adapters_.size() * WS::padded(N * H);          // concat fusion
    total += (1 + 2 * adapters_.size()) * WS::padded(N * H);  // CosmosQA pre-fusion
    // head: rows (2 x B x H), dense out (N x H at most), logits, d_logits, lin attention cache
    total += 4 * WS::padded(N * H) + 2 * WS::padded(N * std::max<std::size_t>(R, 1));
    if (task_.task == Task::lin) total += AttentionCache<T>::elements(head_dims(b));
    if constexpr (!on_host)  // the batch's weights and targets, copied to the device
      total += WS::padded(b.subj.size()) + WS::padded(b.obj.size()) + WS::padded(b.start.size()) +
               WS::padded(b.targets.size());
    return total;
  }

  std::size_t scratch_elements(const TaskBatch<T, B>& b, bool training) const {
    using WS = Workspace<T, B>;
    const std::size_t N = static_cast<std::size_t>(b.batch * b.seq), H = acfg_.hidden;
    const std::size_t K = adapters_.size();
    std::size_t adapter = adapters_.empty() ? 0 : adapter_scratch<T, B>(acfg_, inner_dims(b), training);
    std::size_t head = task_.task == Task::lin
                           ? std::max(attention_block_forward_scratch<T, B>(head_dims(b), training),
                                      attention_block_backward_scratch<T, B>(head_dims(b)))
                           : 0;
    // backward: d_features, d_a, K fused gradients, then the largest of adapter / head scratch
    return (4 + K) * WS::padded(N * H) + 4 * WS::padded(N * H) + std::max(adapter, head);
  }

  void check_batch(const TaskBatch<T, B>& b) const {
    const std::size_t n = static_cast<std::size_t>(b.batch * b.seq);
    auto fail = [&](const std::string& what) {
      throw Error("task " + task_name(task_.task) + ": " + what);
    };
    if (!b.hidden) fail("no backbone hidden states");
    if (b.hidden->batch() != b.batch || b.hidden->seq() != b.seq ||
        b.hidden->hidden() != acfg_.hidden)
      fail("hidden states are (" + std::to_string(b.hidden->batch()) + ", " +
           std::to_string(b.hidden->seq()) + ", " + std::to_string(b.hidden->hidden()) +
           "), expected (" + std::to_string(b.batch) + ", " + std::to_string(b.seq) + ", " +
           std::to_string(acfg_.hidden) + ")");
    for (index_t k = 0; k < acfg_.count; ++k)
      if (!b.hidden->has(acfg_.plug_in[static_cast<std::size_t>(k)]))
        fail("hidden state " + std::to_string(acfg_.plug_in[static_cast<std::size_t>(k)]) +
             " (an adapter plug-in point) was not kept");
    if (b.last < -1 || b.last > b.hidden->num_layers())
      fail("last is " + std::to_string(b.last) + ", expected -1 (the backbone's last state) or a state index 0.." +
           std::to_string(b.hidden->num_layers()));
    if (!b.hidden->has(last_state(b)))
      fail("hidden state " + std::to_string(last_state(b)) + " (TaskBatch::last) was not kept");
    if (b.attention_mask.size() != n) fail("attention_mask must hold B*T values");
    const std::size_t Bn = static_cast<std::size_t>(b.batch);
    switch (task_.task) {
      case Task::fac:
      case Task::relation:
        if (b.labels.size() != Bn) fail("labels must hold B values");
        if (b.subj.size() != n || b.obj.size() != n)
          fail("subj and obj (the authors' subj_special_start_id, obj_special_start_id) must be (B, T)");
        break;
      case Task::lin:
        if (b.labels.size() != n) fail("labels must be (B, T) head positions");
        // Standard compat masks the head positions past a sequence's end, so a batch padded
        // only to its own longest sequence (T < max_seq_length) gives the same result.
        if (task_.compat == Compat::official ? b.seq != task_.num_labels : b.seq > task_.num_labels)
          fail("the linguistic head predicts one of max_seq_length = " +
               std::to_string(task_.num_labels) + " positions, so T must " +
               (task_.compat == Compat::official ? "equal it under --compat official" : "not exceed it") +
               " (got T = " + std::to_string(b.seq) + ")");
        break;
      case Task::entity_typing:
        if (b.targets.size() != Bn * static_cast<std::size_t>(task_.num_labels))
          fail("targets must be (B, " + std::to_string(task_.num_labels) + ") in [0, 1], got " +
               std::to_string(b.targets.size()) + " values");
        for (std::size_t i = 0; i < b.targets.size(); ++i)
          if (!(b.targets[i] >= T(0) && b.targets[i] <= T(1)))
            fail("targets must be in [0, 1]: element " + std::to_string(i) + " (row " +
                 std::to_string(i / static_cast<std::size_t>(task_.num_labels)) + ") is " +
                 std::to_string(static_cast<double>(b.targets[i])));
        if (b.start.size() != n) fail("start (the authors' start_id) must be (B, T)");
        break;
      case Task::multiple_choice:
        if (b.batch % task_.num_labels != 0)
          fail("the batch holds " + std::to_string(b.batch) + " sequences, not a multiple of " +
               std::to_string(task_.num_labels) + " choices");
        if (b.labels.size() != Bn / static_cast<std::size_t>(task_.num_labels))
          fail("labels must hold one choice index per question");
        break;
    }
  }

  // --- heads -------------------------------------------------------------------------------
  T head_forward(const TaskBatch<T, B>& b, bool training) {
    const index_t Bn = b.batch, S = b.seq, N = Bn * S, H = acfg_.hidden, R = task_.num_labels;
    auto take = [&](index_t r, index_t c) {
      return MatrixView<T>(acts_.take(static_cast<std::size_t>(r * c)), r, c);
    };
    const MatrixView<const T> F = features_;
    switch (task_.task) {
      case Task::fac:
      case Task::relation: {
        rows_a_ = take(Bn, H);
        rows_b_ = take(Bn, H);
        weighted_rows_forward(B{}, rows_a_, MatrixView<const T>(subj_, Bn, S), F);
        weighted_rows_forward(B{}, rows_b_, MatrixView<const T>(obj_, Bn, S), F);
        dense_out_ = take(Bn, H);
        const MatrixView<const T> in[2] = {rows_a_, rows_b_};
        linear_concat_forward(B{}, dense_out_, std::span<const MatrixView<const T>>(in), dense_);
        dropout_inplace(B{}, dense_out_, head_dropout(), 1);
        logits_ = take(Bn, R);
        linear_forward(B{}, logits_, MatrixView<const T>(dense_out_), out_proj_);
        d_logits_ = take(Bn, R);
        return cross_entropy(B{}, d_logits_, MatrixView<const T>(logits_), b.labels);
      }
      case Task::entity_typing: {
        rows_a_ = take(Bn, H);
        weighted_rows_forward(B{}, rows_a_, MatrixView<const T>(start_, Bn, S), F);
        dense_out_ = take(Bn, H);
        linear_forward(B{}, dense_out_, MatrixView<const T>(rows_a_), dense_);
        dropout_inplace(B{}, dense_out_, head_dropout(), 1);
        logits_ = take(Bn, R);
        linear_forward(B{}, logits_, MatrixView<const T>(dense_out_), out_proj_);
        d_logits_ = take(Bn, R);
        return bce_with_logits(B{}, d_logits_, MatrixView<const T>(logits_),
                               MatrixView<const T>(targets_, Bn, R));
      }
      case Task::lin: {
        attn_out_ = take(N, H);
        attn_cache_.bind(acts_, head_dims(b));
        const LayerDropouts drop = head_dropouts();
        attention_block_forward(B{}, attn_out_, training ? &attn_cache_ : nullptr, F,
                                std::span<const T>(head_mask_), self_attention_, head_dims(b),
                                &drop, scratch_);
        scratch_.reset();
        dense_out_ = take(N, H);
        linear_forward(B{}, dense_out_, MatrixView<const T>(attn_out_), dense_);
        dropout_inplace(B{}, dense_out_, head_dropout(), S);
        logits_ = take(N, R);
        linear_forward(B{}, logits_, MatrixView<const T>(dense_out_), out_proj_);
        d_logits_ = take(N, R);
        // Loss over real tokens. Standard compat also keeps padded head positions out of the
        // softmax; the authors' code does not.
        std::span<const std::int64_t> columns;
        if (task_.compat == Compat::standard) {
          column_mask_.resize(static_cast<std::size_t>(N * R));
          for (index_t r = 0; r < N; ++r)
            for (index_t c = 0; c < R; ++c)
              column_mask_[static_cast<std::size_t>(r * R + c)] =
                  c < S ? b.attention_mask[static_cast<std::size_t>((r / S) * S + c)] : 0;
          columns = column_mask_;
        }
        return cross_entropy(B{}, d_logits_, MatrixView<const T>(logits_), b.labels,
                             b.attention_mask, columns);
      }
      case Task::multiple_choice: {
        const index_t C = R, Q = Bn / C;
        rows_a_ = take(Bn, H);  // the <s> row of every sequence, after dropout
        gather_rows(B{}, rows_a_, F, S);
        dropout_inplace(B{}, rows_a_, head_dropout(), 1);
        dense_out_ = take(Bn, 1);
        linear_forward(B{}, dense_out_, MatrixView<const T>(rows_a_), out_proj_);
        logits_ = MatrixView<T>(dense_out_.data(), Q, C);
        d_logits_ = take(Q, C);
        return cross_entropy(B{}, d_logits_, MatrixView<const T>(logits_), b.labels);
      }
    }
    return T(0);
  }

  void head_backward(const TaskBatch<T, B>& b, MatrixView<T> d_features) {
    const index_t Bn = b.batch, S = b.seq, N = Bn * S, H = acfg_.hidden;
    auto take = [&](index_t r, index_t c) {
      return MatrixView<T>(scratch_.take(static_cast<std::size_t>(r * c)), r, c);
    };
    const MatrixView<const T> dlog = d_logits_;
    switch (task_.task) {
      case Task::fac:
      case Task::relation: {
        MatrixView<T> dz = take(Bn, H), da = take(Bn, H), db = take(Bn, H);
        linear_backward(B{}, dz, GradientMode::Overwrite, &out_proj_grad_, dlog,
                        MatrixView<const T>(dense_out_), out_proj_);
        dropout_inplace(B{}, dz, head_dropout(), 1);
        const MatrixView<const T> in[2] = {rows_a_, rows_b_};
        const MatrixView<T> d_in[2] = {da, db};
        linear_concat_backward(B{}, std::span<const MatrixView<T>>(d_in), GradientMode::Overwrite,
                               &dense_grad_, MatrixView<const T>(dz),
                               std::span<const MatrixView<const T>>(in), dense_);
        fill_zero(B{}, d_features);
        weighted_rows_backward(B{}, d_features, MatrixView<const T>(da),
                               MatrixView<const T>(subj_, Bn, S));
        weighted_rows_backward(B{}, d_features, MatrixView<const T>(db),
                               MatrixView<const T>(obj_, Bn, S));
        break;
      }
      case Task::entity_typing: {
        MatrixView<T> dz = take(Bn, H), de = take(Bn, H);
        linear_backward(B{}, dz, GradientMode::Overwrite, &out_proj_grad_, dlog,
                        MatrixView<const T>(dense_out_), out_proj_);
        dropout_inplace(B{}, dz, head_dropout(), 1);
        linear_backward(B{}, de, GradientMode::Overwrite, &dense_grad_, MatrixView<const T>(dz),
                        MatrixView<const T>(rows_a_), dense_);
        fill_zero(B{}, d_features);
        weighted_rows_backward(B{}, d_features, MatrixView<const T>(de),
                               MatrixView<const T>(start_, Bn, S));
        break;
      }
      case Task::lin: {
        MatrixView<T> dz = take(N, H), du = take(N, H);
        linear_backward(B{}, dz, GradientMode::Overwrite, &out_proj_grad_, dlog,
                        MatrixView<const T>(dense_out_), out_proj_);
        dropout_inplace(B{}, dz, head_dropout(), S);
        linear_backward(B{}, du, GradientMode::Overwrite, &dense_grad_, MatrixView<const T>(dz),
                        MatrixView<const T>(attn_out_), dense_);
        const LayerDropouts drop = head_dropouts();
        const std::size_t mark = scratch_.used();
        attention_block_backward(B{}, d_features, GradientMode::Overwrite, &self_attention_grad_,
                                 MatrixView<const T>(du), attn_cache_, self_attention_,
                                 head_dims(b), &drop, scratch_);
        scratch_.rewind(mark);
        break;
      }
      case Task::multiple_choice: {
        MatrixView<T> dc = take(Bn, H);
        linear_backward(B{}, dc, GradientMode::Overwrite, &out_proj_grad_,
                        MatrixView<const T>(dlog.data(), Bn, 1), MatrixView<const T>(rows_a_),
                        out_proj_);
        dropout_inplace(B{}, dc, head_dropout(), 1);
        fill_zero(B{}, d_features);
        scatter_rows(B{}, d_features, MatrixView<const T>(dc), S);
        break;
      }
    }
  }

  TaskConfig task_;
  AdapterConfig acfg_;
  ParameterStore<T> store_;
  // parameters (views into store_) and their gradients
  std::vector<AdapterParams<T>> adapters_;
  std::vector<LinearParams<T>> task_dense_adapter_;
  std::vector<LinearGrads<T>> task_dense_adapter_grad_;
  LinearParams<T> task_dense_, com_dense_, dense_, out_proj_;
  LinearGrads<T> task_dense_grad_, com_dense_grad_, dense_grad_, out_proj_grad_;
  AttentionParams<T> self_attention_;
  AttentionGrads<T> self_attention_grad_;
  std::vector<LinearParams<T>> prefuse_dense_;   // NAME_adapter.task_dense (CosmosQA, concat)
  std::vector<LinearGrads<T>> prefuse_dense_grad_;
  // activations of the last forward pass
  Workspace<T, B> acts_, scratch_;
  std::vector<AdapterCache<T>> caches_;
  std::vector<MatrixView<T>> fused_, d_fused_;
  std::vector<MatrixView<const T>> fused_in_;
  MatrixView<T> scaled_h_;
  std::vector<MatrixView<T>> scaled_r_, prefused_;
  std::span<T> adapter_mask_, head_mask_;
  MatrixView<T> features_, rows_a_, rows_b_, dense_out_, attn_out_, logits_, d_logits_;
  AttentionCache<T> attn_cache_;
  std::vector<std::int64_t> column_mask_;
  TaskBatch<T, B> batch_;
  StepInfo step_;
  const T* subj_ = nullptr;  // the batch's weights and targets in the backend's memory
  const T* obj_ = nullptr;
  const T* start_ = nullptr;
  const T* targets_ = nullptr;
  // Cuda only: the device arrays, which of the two copies is newer, a host staging buffer.
  BackendVector<T, B> device_values_, device_grads_;
  bool host_newer_ = false;
  mutable bool device_newer_ = false;
  std::vector<T> host_scratch_;
};

}  // namespace kadapter
