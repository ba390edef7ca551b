/// @file trainer.hpp
/// @brief One optimizer step of a task model: gradient accumulation over micro-batches,
/// global-norm clipping, the warmup/decay schedule and AdamW.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kadapter/models/task_model.hpp"
#include "kadapter/train/optimizer.hpp"

namespace kadapter {

/// @brief Settings of the training loop (the authors' defaults where they have one).
struct TrainConfig {
  AdamWConfig adam;                    ///< learning rate, betas, eps, weight decay
  WarmupLinearSchedule schedule;       ///< warmup steps and total steps (default: constant)
  double max_grad_norm = 1.0;          ///< clip_grad_norm_ threshold (<= 0 disables)
  std::uint64_t seed = 42;             ///< dropout seed
  /// Trainer::step throws NonFiniteStep, before anything is updated, when the step's loss or
  /// gradient norm is not finite (false: update anyway, as PyTorch does).
  bool stop_on_non_finite = true;
  /// The authors' pre-training scripts and their CosmosQA script call scheduler.step()
  /// before optimizer.step(), so optimizer step n uses the schedule's value at n; their other
  /// fine-tuning scripts step the optimizer first (value at n - 1).
  bool scheduler_before_optimizer = false;
};

/// @brief What one optimizer step did.
struct StepReport {
  double loss = 0;       ///< mean loss over the micro-batches
  double grad_norm = 0;  ///< global gradient norm before clipping (0 when not computed: no clipping and no finite check)
  double lr = 0;         ///< learning rate used
};

/// @brief Thrown by Trainer::step when the loss or the gradient norm of a step is not finite
/// (a learning rate too high, a NaN or infinity in the inputs). Nothing was updated: the
/// parameters, the optimizer state and the step count are those from before the step.
class NonFiniteStep : public Error {
 public:
  NonFiniteStep(std::int64_t step, const StepReport& r)
      : Error("training step " + std::to_string(step + 1) + ": the loss (" + std::to_string(r.loss) +
              ") or the gradient norm (" + std::to_string(r.grad_norm) +
              ") is not finite; the parameters and the optimizer state were not updated"),
        step_(step),
        report_(r) {}
  /// @brief The optimizer step (0-based) that was not taken.
  std::int64_t step() const noexcept { return step_; }
  /// @brief Its loss, gradient norm, and the learning rate it would have used.
  const StepReport& report() const noexcept { return report_; }

 private:
  std::int64_t step_;
  StepReport report_;
};

/// @brief The update that follows the backward passes of optimizer step @p step (0-based),
/// given the global gradient norm @p grad_norm: clip, take the schedule's learning rate,
/// one AdamW step. The report's grad_norm is @p grad_norm.
template <class T>
StepReport apply_update(ParameterStore<T>& store, AdamW<T>& adam, const TrainConfig& cfg, std::int64_t step,
                        double grad_norm) {
  StepReport r;
  r.grad_norm = grad_norm;
  const double scale = cfg.max_grad_norm > 0 ? clip_coefficient(grad_norm, cfg.max_grad_norm) : 1.0;
  const std::int64_t sched = cfg.scheduler_before_optimizer ? step + 1 : step;
  r.lr = cfg.adam.lr * cfg.schedule.factor(sched);
  adam.step(store, r.lr, scale);  // clipping applied as AdamW reads the gradients
  return r;
}

/// @brief apply_update with the gradient norm computed here when clipping needs it
/// (StepReport::grad_norm is 0 otherwise).
template <class T>
StepReport apply_update(ParameterStore<T>& store, AdamW<T>& adam, const TrainConfig& cfg,
                        std::int64_t step) {
  return apply_update(store, adam, cfg, step, cfg.max_grad_norm > 0 ? global_grad_norm(store) : 0.0);
}

/// @brief The optimizer of a Trainer on backend @p B: the gradient scaling of accumulation,
/// clipping, the schedule and AdamW over the model's backend arrays.
///
/// This is the version for a device backend (Cuda): the moments live in the backend's
/// memory next to the model's flat parameter and gradient arrays, and one pass updates them
/// all, with the per-element mask of adamw_element_mask(). It needs the backend's
/// `grad_norm(B, grads)` and `adamw_update(B, ...)` (backend/cuda/optimizer.hpp). state()
/// hands out a host AdamW holding a copy of the moments (for checkpoints); what is written
/// there is copied back before the next update. The const state() only reads: nothing is
/// copied back. The Cpu version below works on the ParameterStore directly.
template <class T, class B>
class BackendOptimizer {
 public:
  explicit BackendOptimizer(const AdamWConfig& cfg) : host_(cfg) {}

  /// @brief Multiply every gradient by @p factor (1 / micro-batches).
  template <class Model>
  void scale(Model& model, double factor) {
    const std::span<T> g = model.backend_gradients();
    const MatrixView<T> view(g.data(), 1, static_cast<index_t>(g.size()));
    scale_copy(B{}, view, MatrixView<const T>(view), static_cast<T>(factor));
  }

  /// @brief The global L2 norm of the model's gradients.
  template <class Model>
  double gradient_norm(Model& model) const {
    const std::span<T> grads = model.backend_gradients();
    return grad_norm(B{}, std::span<const T>(grads));
  }

  /// @brief Clip, schedule and one AdamW step of optimizer step @p step, as apply_update,
  /// given the gradient norm.
  template <class Model>
  StepReport update(Model& model, const TrainConfig& cfg, std::int64_t step, double norm) {
    const std::span<T> values = model.backend_values();
    const std::span<T> grads = model.backend_gradients();
    const std::size_t n = values.size();
    if (mask_.size() != n) {
      const std::vector<std::uint8_t> mask = adamw_element_mask(std::as_const(model).parameters());
      mask_.resize(n);
      copy_from_host(B{}, mask_.data(), std::span<const std::uint8_t>(mask));
    }
    if (!on_device_) upload_moments(n);
    StepReport r;
    r.grad_norm = norm;
    const double scale = cfg.max_grad_norm > 0 ? clip_coefficient(norm, cfg.max_grad_norm) : 1.0;
    const std::int64_t sched = cfg.scheduler_before_optimizer ? step + 1 : step;
    r.lr = cfg.adam.lr * cfg.schedule.factor(sched);
    host_.set_steps(host_.steps() + 1);
    adamw_update(B{}, values, std::span<const T>(grads), std::span<T>(m_.data(), n), std::span<T>(v_.data(), n),
                 mask_.data(), host_.config(), r.lr, host_.steps(), scale);
    model.backend_updated();
    host_stale_ = true;
    return r;
  }

  /// @brief The AdamW state in host memory (moments copied from the backend).
  AdamW<T>& state() {
    if (host_stale_) {
      host_.first_moment().resize(m_.size());
      host_.second_moment().resize(v_.size());
      copy_to_host(B{}, std::span<T>(host_.first_moment()), m_.data());
      copy_to_host(B{}, std::span<T>(host_.second_moment()), v_.data());
      host_stale_ = false;
    }
    on_device_ = false;  // the caller may write it: copy it back before the next update
    return host_;
  }
  /// @brief The AdamW state in host memory, read-only (moments copied from the backend when
  /// they changed; the backend's copy stays current).
  const AdamW<T>& state() const {
    if (host_stale_) {
      host_.first_moment().resize(m_.size());
      host_.second_moment().resize(v_.size());
      copy_to_host(B{}, std::span<T>(host_.first_moment()), m_.data());
      copy_to_host(B{}, std::span<T>(host_.second_moment()), v_.data());
      host_stale_ = false;
    }
    return host_;
  }

 private:
  void upload_moments(std::size_t n) {
    m_.resize(n);
    v_.resize(n);
    auto& hm = host_.first_moment();
    auto& hv = host_.second_moment();
    if (hm.size() == n && hv.size() == n) {
      copy_from_host(B{}, m_.data(), std::span<const T>(hm));
      copy_from_host(B{}, v_.data(), std::span<const T>(hv));
    } else {
      if (host_.steps() != 0 || !hm.empty() || !hv.empty())
        throw Error("AdamW state does not match the model's parameter count");
      fill_zero(B{}, MatrixView<T>(m_.data(), 1, static_cast<index_t>(n)));
      fill_zero(B{}, MatrixView<T>(v_.data(), 1, static_cast<index_t>(n)));
    }
    on_device_ = true;
  }

  mutable AdamW<T> host_;  // configuration, step count and (when asked for) a copy of the moments
  BackendVector<T, B> m_, v_;
  BackendVector<std::uint8_t, B> mask_;
  bool on_device_ = false;           // m_ and v_ hold the current moments
  mutable bool host_stale_ = false;  // host_'s moments are older than m_ and v_
};

template <class T>
class BackendOptimizer<T, Cpu> {
 public:
  explicit BackendOptimizer(const AdamWConfig& cfg) : adam_(cfg) {}

  /// @brief Multiply every gradient by @p factor (1 / micro-batches).
  template <class Model>
  void scale(Model& model, double factor) {
    scale_gradients(model.parameters(), factor);
  }
  /// @brief The global L2 norm of the model's gradients (global_grad_norm).
  template <class Model>
  double gradient_norm(Model& model) const {
    return global_grad_norm(std::as_const(model).parameters());
  }
  /// @brief Clip, schedule and one AdamW step (apply_update) of optimizer step @p step.
  template <class Model>
  StepReport update(Model& model, const TrainConfig& cfg, std::int64_t step, double norm) {
    return apply_update(model.parameters(), adam_, cfg, step, norm);
  }
  /// @brief The AdamW state (moments and step count), for checkpoints.
  AdamW<T>& state() noexcept { return adam_; }
  const AdamW<T>& state() const noexcept { return adam_; }

 private:
  AdamW<T> adam_;
};

/// @brief Trains the trainable parameters of a TaskModel.
///
/// @tparam B the model's backend. On Cuda the whole step stays on the device (clipping and
///           AdamW included); optimizer() then copies the moments to the host.
template <AdapterConfig A, ComputeScalar T, class B = Cpu>
  requires Backend<B>
class Trainer {
 public:
  Trainer(TaskModel<A, T, B>& model, const TrainConfig& cfg) : model_(model), cfg_(cfg), opt_(cfg.adam) {}

  /// @brief One optimizer step over @p micro_batches (gradient accumulation: the gradient of
  /// the mean of their losses).
  /// @throws NonFiniteStep when the loss or the gradient norm is not finite (with
  /// TrainConfig::stop_on_non_finite); nothing is then updated and steps() stays
  /// @throws Error when a batch does not fit the model
  StepReport step(std::span<const TaskBatch<T, B>> micro_batches) {
    if (micro_batches.empty()) throw Error("a training step needs at least one micro-batch");
    model_.zero_grad();
    double loss = 0;
    for (std::size_t i = 0; i < micro_batches.size(); ++i) {
      StepInfo info{true, cfg_.seed, static_cast<std::uint64_t>(step_), i};
      loss += static_cast<double>(model_.forward(micro_batches[i], info));
      model_.backward();
    }
    const double k = static_cast<double>(micro_batches.size());
    if (micro_batches.size() > 1) opt_.scale(model_, 1.0 / k);
    const double mean = loss / k;
    const bool check = cfg_.stop_on_non_finite;
    const double norm = cfg_.max_grad_norm > 0 || check ? opt_.gradient_norm(model_) : 0.0;
    if (check && (!std::isfinite(mean) || !std::isfinite(norm))) {
      StepReport bad;
      bad.loss = mean;
      bad.grad_norm = norm;
      bad.lr = cfg_.adam.lr * cfg_.schedule.factor(cfg_.scheduler_before_optimizer ? step_ + 1 : step_);
      throw NonFiniteStep(step_, bad);
    }
    StepReport r = opt_.update(model_, cfg_, step_, norm);
    r.loss = mean;
    ++step_;
    return r;
  }

  /// @brief Optimizer steps taken.
  std::int64_t steps() const noexcept { return step_; }
  /// @brief Continue a run at step @p s (after loading the optimizer state).
  void set_steps(std::int64_t s) noexcept { step_ = s; }
  /// @brief The AdamW state, in host memory, for checkpoints (on Cuda: copied from the
  /// device, and copied back at the next step, so it may be written).
  AdamW<T>& optimizer() { return opt_.state(); }
  /// @brief The AdamW state, read-only (for saving: on Cuda nothing is copied back).
  const AdamW<T>& optimizer() const { return opt_.state(); }
  /// @brief The settings, as copied at construction (later changes to the caller's copy do
  /// not reach the Trainer).
  const TrainConfig& config() const noexcept { return cfg_; }

 private:
  TaskModel<A, T, B>& model_;
  TrainConfig cfg_;
  BackendOptimizer<T, B> opt_;
  std::int64_t step_ = 0;
};

}  // namespace kadapter
