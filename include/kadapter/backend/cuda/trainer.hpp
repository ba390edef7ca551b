/// @file trainer.hpp
/// @brief The Trainer's optimizer on the GPU: accumulation scaling, clipping, the schedule
/// and AdamW over the model's device arrays, with the moments in device memory.
#pragma once

#if !defined(__CUDACC__)
#error "kadapter/backend/cuda/trainer.hpp needs nvcc: include kadapter/kadapter_cuda.hpp from a .cu file"
#endif

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "kadapter/backend/cuda/kernels.hpp"
#include "kadapter/backend/cuda/optimizer.hpp"
#include "kadapter/backend/cuda/runtime.hpp"
#include "kadapter/train/trainer.hpp"

namespace kadapter {

/// @brief BackendOptimizer on Cuda. The moments live on the device; state() hands out a host
/// AdamW holding a copy of them (for checkpoints), and whatever is written there is copied
/// back before the next update.
template <>
class BackendOptimizer<float, Cuda> {
 public:
  explicit BackendOptimizer(const AdamWConfig& cfg) : host_(cfg) {}

  /// @brief Multiply every gradient by @p factor (1 / micro-batches).
  template <class Model>
  void scale(Model& model, double factor) {
    const std::span<float> g = model.backend_gradients();
    const MatrixView<float> view(g.data(), 1, static_cast<index_t>(g.size()));
    scale_copy(Cuda{}, view, MatrixView<const float>(view), static_cast<float>(factor));
  }

  /// @brief Clip, schedule and one AdamW step of optimizer step @p step, as apply_update.
  template <class Model>
  StepReport update(Model& model, const TrainConfig& cfg, std::int64_t step) {
    const std::span<float> values = model.backend_values();
    const std::span<float> grads = model.backend_gradients();
    const std::size_t n = values.size();
    if (mask_.size() != n) {
      const std::vector<std::uint8_t> mask = cuda::adamw_mask(std::as_const(model).parameters());
      mask_ = cuda::DeviceBuffer<std::uint8_t>(std::span<const std::uint8_t>(mask));
    }
    if (!on_device_) upload_moments(n);
    StepReport r;
    double scale = 1.0;
    if (cfg.max_grad_norm > 0) {
      r.grad_norm = cuda::grad_norm(grads);
      scale = clip_coefficient(r.grad_norm, cfg.max_grad_norm);
    }
    const std::int64_t sched = cfg.scheduler_before_optimizer ? step + 1 : step;
    r.lr = cfg.adam.lr * cfg.schedule.factor(sched);
    host_.set_steps(host_.steps() + 1);
    cuda::adamw_update(values, grads, std::span<float>(m_.data(), n), std::span<float>(v_.data(), n), mask_.data(),
                       host_.config(), r.lr, host_.steps(), scale);
    model.backend_updated();
    host_stale_ = true;
    return r;
  }

  /// @brief The AdamW state in host memory (moments copied from the device).
  AdamW<float>& state() {
    if (host_stale_) {
      host_.first_moment().resize(m_.size());
      host_.second_moment().resize(v_.size());
      copy_to_host(Cuda{}, std::span<float>(host_.first_moment()), m_.data());
      copy_to_host(Cuda{}, std::span<float>(host_.second_moment()), v_.data());
      host_stale_ = false;
    }
    on_device_ = false;  // the caller may write it: copy it back before the next update
    return host_;
  }

 private:
  void upload_moments(std::size_t n) {
    m_.resize(n);
    v_.resize(n);
    auto& hm = host_.first_moment();
    auto& hv = host_.second_moment();
    if (hm.size() == n && hv.size() == n) {
      copy_from_host(Cuda{}, m_.data(), std::span<const float>(hm));
      copy_from_host(Cuda{}, v_.data(), std::span<const float>(hv));
    } else {
      if (host_.steps() != 0 || !hm.empty() || !hv.empty())
        throw Error("AdamW state does not match the model's parameter count");
      fill_zero(Cuda{}, MatrixView<float>(m_.data(), 1, static_cast<index_t>(n)));
      fill_zero(Cuda{}, MatrixView<float>(v_.data(), 1, static_cast<index_t>(n)));
    }
    on_device_ = true;
  }

  AdamW<float> host_;  // configuration, step count and (when asked for) a copy of the moments
  cuda::DeviceBuffer<float> m_, v_;
  cuda::DeviceBuffer<std::uint8_t> mask_;
  bool on_device_ = false;   // m_ and v_ hold the current moments
  bool host_stale_ = false;  // host_'s moments are older than m_ and v_
};

}  // namespace kadapter
