/// @file optimizer.hpp
/// @brief GPU AdamW (one fused pass over flat parameter, gradient and moment arrays) and the
/// gradient norm, both giving the CPU backend's numbers within fp32 rounding.
#pragma once

#if !defined(__CUDACC__)
#error "kadapter/backend/cuda/optimizer.hpp needs nvcc: include kadapter/kadapter_cuda.hpp from a .cu file"
#endif

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "kadapter/backend/cuda/kernels.hpp"
#include "kadapter/train/optimizer.hpp"

namespace kadapter::cuda {

/// @brief Per-element AdamW mask values (see adamw_element_mask()).
inline constexpr std::uint8_t kFrozen = kAdamWFrozen, kNoDecay = kAdamWNoDecay, kDecay = kAdamWDecay;

namespace detail {

/// One AdamW update per element, the CPU loop's operations in the same order; the gradient
/// is multiplied by grad_scale (in double, as the CPU does) when it is not 1.
template <int = 0>
__global__ void adamw_kernel(float* p, const float* grad, float* m, float* v, const std::uint8_t* mask,
                             std::int64_t n, float b1, float b2, float c1, float c2, float eps, float step_size, float decay,
                             double grad_scale) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n || (mask && mask[i] == kFrozen)) return;
  const float g = grad_scale == 1.0 ? grad[i] : static_cast<float>(grad[i] * grad_scale);
  const float mi = b1 * m[i] + c1 * g;
  const float vi = b2 * v[i] + c2 * g * g;
  m[i] = mi;
  v[i] = vi;
  float pi = p[i] - step_size * (mi / (sqrtf(vi) + eps));
  const float dec = mask == nullptr || mask[i] == kDecay ? decay : 0.0f;
  if (dec != 0.0f) pi -= dec * pi;
  p[i] = pi;
}

constexpr int kNormBlocks = 256;
constexpr int kNormThreads = 256;

/// partial[b] = Σ x_i² (double) over block b's contiguous range: thread-strided sums, then a
/// tree in shared memory; a fixed order whatever the data.
template <int = 0>
__global__ void sum_squares_kernel(double* partial, const float* x, std::int64_t n) {
  __shared__ double acc[kNormThreads];
  const std::int64_t begin = n * blockIdx.x / kNormBlocks, end = n * (blockIdx.x + 1) / kNormBlocks;
  double s = 0.0;
  for (std::int64_t i = begin + threadIdx.x; i < end; i += kNormThreads) {
    const double v = x[i];
    s += v * v;
  }
  acc[threadIdx.x] = s;
  __syncthreads();
  for (int w = kNormThreads / 2; w > 0; w /= 2) {
    if (static_cast<int>(threadIdx.x) < w) acc[threadIdx.x] += acc[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = acc[0];
}

}  // namespace detail

/// @brief `Σ x_i²` in double over @p n device floats (synchronises the stream).
inline double sum_squares(const float* x, std::int64_t n) {
  if (n == 0) return 0.0;
  auto& ctx = context();
  auto* partial = static_cast<double*>(ctx.scratch(detail::kNormBlocks * sizeof(double)));
  detail::sum_squares_kernel<<<detail::kNormBlocks, detail::kNormThreads, 0, ctx.stream()>>>(partial, x, n);
  check_launch("sum_squares_kernel");
  return kadapter::cuda::detail::sum_on_host(ctx, partial, detail::kNormBlocks);
}

/// @brief The L2 norm of a flat gradient array in device memory (what global_grad_norm
/// computes over a ParameterStore's gradients).
inline double grad_norm(std::span<const float> grads) {
  return std::sqrt(sum_squares(grads.data(), static_cast<std::int64_t>(grads.size())));
}

/// @brief The AdamW mask of a ParameterStore (adamw_element_mask); upload it once.
inline std::vector<std::uint8_t> adamw_mask(const ParameterStore<float>& store) { return adamw_element_mask(store); }

/// @brief One AdamW step over flat device arrays, as AdamW<float>::step does per tensor.
/// @param params, grads, m, v the same length, in device memory
/// @param mask one byte per element in device memory (kFrozen: not updated, kNoDecay,
///        kDecay; see adamw_mask()), or nullptr to update and decay every element
/// @param t the step number after this step (1 for the first)
/// @param grad_scale the clipping factor, applied as the gradient is read
inline void adamw_update(std::span<float> params, std::span<const float> grads, std::span<float> m, std::span<float> v,
                         const std::uint8_t* mask, const AdamWConfig& cfg, double lr, std::int64_t t,
                         double grad_scale = 1.0) {
  KA_ASSERT(grads.size() == params.size() && m.size() == params.size() && v.size() == params.size());
  const auto n = static_cast<std::int64_t>(params.size());
  if (n == 0) return;
  const auto step_size = static_cast<float>(adamw_step_size(cfg, lr, t));
  const auto decay = static_cast<float>(lr * cfg.weight_decay);
  detail::adamw_kernel<<<detail::blocks_for(n, 256), 256, 0, context().stream()>>>(
      params.data(), grads.data(), m.data(), v.data(), mask, n, static_cast<float>(cfg.beta1),
      static_cast<float>(cfg.beta2), static_cast<float>(1.0 - cfg.beta1), static_cast<float>(1.0 - cfg.beta2),
      static_cast<float>(cfg.eps), step_size, decay, grad_scale);
  check_launch("adamw_kernel");
}

}  // namespace kadapter::cuda

namespace kadapter {

/// @brief The device optimizer's hooks on Cuda (see BackendOptimizer in train/trainer.hpp).
inline double grad_norm(Cuda, std::span<const float> grads) { return cuda::grad_norm(grads); }

/// @brief cuda::adamw_update under the backend-generic name the Trainer's device optimizer calls.
inline void adamw_update(Cuda, std::span<float> params, std::span<const float> grads, std::span<float> m,
                         std::span<float> v, const std::uint8_t* mask, const AdamWConfig& cfg, double lr,
                         std::int64_t t, double grad_scale) {
  cuda::adamw_update(params, grads, m, v, mask, cfg, lr, t, grad_scale);
}

}  // namespace kadapter
