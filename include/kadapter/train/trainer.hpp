/// @file trainer.hpp
/// @brief One optimizer step of a task model: gradient accumulation over micro-batches,
/// global-norm clipping, the warmup/decay schedule and AdamW.
#pragma once

#include <cstdint>
#include <span>

#include "kadapter/models/task_model.hpp"
#include "kadapter/train/optimizer.hpp"

namespace kadapter {

/// @brief Settings of the training loop (the authors' defaults where they have one).
struct TrainConfig {
  AdamWConfig adam;                    ///< learning rate, betas, eps, weight decay
  WarmupLinearSchedule schedule;       ///< warmup steps and total steps
  double max_grad_norm = 1.0;          ///< clip_grad_norm_ threshold (<= 0 disables)
  std::uint64_t seed = 42;             ///< dropout seed
  /// The authors' pre-training scripts call scheduler.step() before optimizer.step(), so
  /// optimizer step n uses the schedule's value at n; their fine-tuning scripts step the
  /// optimizer first (value at n - 1).
  bool scheduler_before_optimizer = false;
};

/// @brief What one optimizer step did.
struct StepReport {
  double loss = 0;       ///< mean loss over the micro-batches
  double grad_norm = 0;  ///< global gradient norm before clipping
  double lr = 0;         ///< learning rate used
};

/// @brief The update that follows the backward passes of optimizer step @p step (0-based):
/// clip the global gradient norm, take the schedule's learning rate, one AdamW step.
template <class T>
StepReport apply_update(ParameterStore<T>& store, AdamW<T>& adam, const TrainConfig& cfg,
                        std::int64_t step) {
  StepReport r;
  double scale = 1.0;
  if (cfg.max_grad_norm > 0) {
    r.grad_norm = global_grad_norm(store);
    scale = clip_coefficient(r.grad_norm, cfg.max_grad_norm);
  }
  const std::int64_t sched = cfg.scheduler_before_optimizer ? step + 1 : step;
  r.lr = cfg.adam.lr * cfg.schedule.factor(sched);
  adam.step(store, r.lr, scale);  // clipping applied as AdamW reads the gradients
  return r;
}

/// @brief Trains the trainable parameters of a TaskModel.
template <AdapterConfig A, ComputeScalar T>
class Trainer {
 public:
  Trainer(TaskModel<A, T>& model, const TrainConfig& cfg) : model_(model), cfg_(cfg), adam_(cfg.adam) {}

  /// @brief One optimizer step over @p micro_batches (gradient accumulation: the gradient of
  /// the mean of their losses).
  StepReport step(std::span<const TaskBatch<T>> micro_batches) {
    if (micro_batches.empty()) throw Error("a training step needs at least one micro-batch");
    auto& store = model_.parameters();
    store.zero_grad();
    double loss = 0;
    for (std::size_t i = 0; i < micro_batches.size(); ++i) {
      StepInfo info{true, cfg_.seed, static_cast<std::uint64_t>(step_), i};
      loss += static_cast<double>(model_.forward(micro_batches[i], info));
      model_.backward();
    }
    const double k = static_cast<double>(micro_batches.size());
    if (micro_batches.size() > 1) scale_gradients(store, 1.0 / k);
    StepReport r = apply_update(store, adam_, cfg_, step_);
    r.loss = loss / k;
    ++step_;
    return r;
  }

  /// @brief Optimizer steps taken.
  std::int64_t steps() const noexcept { return step_; }
  /// @brief Continue a run at step @p s (after loading the optimizer state).
  void set_steps(std::int64_t s) noexcept { step_ = s; }
  AdamW<T>& optimizer() noexcept { return adam_; }
  const TrainConfig& config() const noexcept { return cfg_; }

 private:
  TaskModel<A, T>& model_;
  TrainConfig cfg_;
  AdamW<T> adam_;
  std::int64_t step_ = 0;
};

}  // namespace kadapter
