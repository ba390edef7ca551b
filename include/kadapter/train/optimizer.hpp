/// @file optimizer.hpp
/// @brief AdamW as the K-Adapter authors run it (pytorch_transformers' AdamW), the linear
/// warmup-then-decay schedule, and global-norm gradient clipping, over a ParameterStore.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <array>
#include <type_traits>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "kadapter/core/aligned.hpp"
#include "kadapter/core/parallel.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/models/parameters.hpp"

namespace kadapter {

/// @brief Hyper-parameters of AdamW.
struct AdamWConfig {
  double lr = 5e-5;            ///< peak learning rate
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;           ///< the authors' adam_epsilon default
  double weight_decay = 0.0;   ///< decoupled; not applied to biases and LayerNorm weights
  bool correct_bias = true;
};

/// @brief Linear warmup from 0 to the peak over `warmup` steps, then linear decay to 0 at
/// `total` steps (pytorch_transformers' WarmupLinearSchedule). The default, `total = 0`,
/// does not decay: the peak learning rate from the end of the warmup on.
struct WarmupLinearSchedule {
  std::int64_t warmup = 0;  ///< steps of linear warmup from 0
  std::int64_t total = 0;   ///< the step at which the decay reaches 0 (0: no decay)
  /// @brief The multiplier of the peak learning rate after @p step scheduler steps.
  double factor(std::int64_t step) const noexcept {
    if (step < warmup) return static_cast<double>(step) / static_cast<double>(std::max<std::int64_t>(1, warmup));
    if (total <= 0) return 1.0;
    return std::max(0.0, static_cast<double>(total - step) /
                             static_cast<double>(std::max<std::int64_t>(1, total - warmup)));
  }
};

namespace detail {
/// @brief `out[i] = sqrt(in[i])` for i < @p n, with the vector square-root instruction where
/// the build has one.
///
/// A loop calling std::sqrt does not vectorise unless the build passes -fno-math-errno (sqrt
/// may set errno); that made AdamW compute-bound at a third of its memory-bound speed. IEEE
/// square roots are correctly rounded, so every element equals std::sqrt's. (Eigen's
/// vectorised sqrt is not used: under EIGEN_FAST_MATH it may differ from std::sqrt in the
/// last bit.)
template <class T>
void sqrt_into(const T* in, T* out, index_t n) noexcept {
  index_t i = 0;
  if constexpr (std::is_same_v<T, float>) {
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_sqrt_ps(_mm512_loadu_ps(in + i)));
#elif defined(__AVX__)
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_sqrt_ps(_mm256_loadu_ps(in + i)));
#elif defined(__SSE2__)
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(out + i, _mm_sqrt_ps(_mm_loadu_ps(in + i)));
#endif
  } else if constexpr (std::is_same_v<T, double>) {
#if defined(__AVX512F__)
    for (; i + 8 <= n; i += 8) _mm512_storeu_pd(out + i, _mm512_sqrt_pd(_mm512_loadu_pd(in + i)));
#elif defined(__AVX__)
    for (; i + 4 <= n; i += 4) _mm256_storeu_pd(out + i, _mm256_sqrt_pd(_mm256_loadu_pd(in + i)));
#elif defined(__SSE2__)
    for (; i + 2 <= n; i += 2) _mm_storeu_pd(out + i, _mm_sqrt_pd(_mm_loadu_pd(in + i)));
#endif
  }
  for (; i < n; ++i) out[i] = std::sqrt(in[i]);
}

/// @brief Σ x_i² in double, in a fixed order whatever the thread count: 16 blocks (summed in
/// parallel, each with 8 interleaved accumulators that vectorise), then the block sums in order.
template <class T>
double sum_squares(const T* x, index_t n) {
  constexpr index_t kBlocks = 16;
  std::array<double, kBlocks> block{};
  auto run = [&](index_t b) {
    const index_t begin = n * b / kBlocks, end = n * (b + 1) / kBlocks;
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    index_t i = begin;
    for (; i + 8 <= end; i += 8)
      for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(x[i + l]) * static_cast<double>(x[i + l]);
    for (; i < end; ++i) acc[0] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
    block[static_cast<std::size_t>(b)] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  };
  if (n >= (1 << 16)) {
    parallel_chunks(kBlocks, 1, [&](index_t first, index_t last, index_t) {
      for (index_t b = first; b < last; ++b) run(b);
    });
  } else {
    for (index_t b = 0; b < kBlocks; ++b) run(b);
  }
  double total = 0;
  for (double v : block) total += v;
  return total;
}
}  // namespace detail

/// @brief The global L2 norm of every gradient in @p store (summed in double).
template <class T>
double global_grad_norm(const ParameterStore<T>& store) {
  double sq = 0;
  for (const auto& s : store.table()) {
    if (!s.grad) continue;
    sq += detail::sum_squares(s.grad, s.size());
  }
  return std::sqrt(sq);
}

/// @brief The factor clip_grad_norm multiplies the gradients by: max_norm / (norm + 1e-6)
/// when that is below 1, else 1.
inline double clip_coefficient(double norm, double max_norm) noexcept {
  const double coef = max_norm / (norm + 1e-6);
  return coef < 1.0 ? coef : 1.0;
}

/// @brief Scale every gradient so their global L2 norm is at most @p max_norm
/// (torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6) when below 1).
/// @return the norm before clipping
template <class T>
double clip_grad_norm(ParameterStore<T>& store, double max_norm) {
  const double norm = global_grad_norm(store);
  const double coef = clip_coefficient(norm, max_norm);
  if (coef < 1.0)
    for (const auto& s : store.table()) {
      if (!s.grad) continue;
      parallel_chunks(s.size(), 1 << 14, [&](index_t begin, index_t end, index_t) {
        for (index_t i = begin; i < end; ++i) s.grad[i] = static_cast<T>(s.grad[i] * coef);
      });
    }
  return norm;
}

/// @brief Multiply every gradient by @p factor (e.g. 1 / accumulation steps).
template <class T>
void scale_gradients(ParameterStore<T>& store, double factor) {
  for (const auto& s : store.table())
    if (s.grad)
      for (index_t i = 0; i < s.size(); ++i) s.grad[i] = static_cast<T>(s.grad[i] * factor);
}

/// @brief What AdamW does with one element of a flat parameter array (see adamw_element_mask).
enum AdamWElement : std::uint8_t {
  kAdamWFrozen = 0,   ///< not updated (frozen, or no gradient)
  kAdamWNoDecay = 1,  ///< updated without weight decay
  kAdamWDecay = 2,    ///< updated with weight decay
};

/// @brief One byte per element of @p store's flat arrays: what AdamW<T>::step does with each
/// tensor (skipped when frozen or without gradient, decayed when its slot says so). Device
/// optimizers update the flat arrays in one pass with it.
template <class T>
std::vector<std::uint8_t> adamw_element_mask(const ParameterStore<T>& store) {
  std::vector<std::uint8_t> mask(store.values().size(), kAdamWFrozen);
  for (const auto& s : store.table()) {
    if (!s.trainable || !s.grad) continue;
    std::fill(mask.begin() + s.offset, mask.begin() + s.offset + s.size(), s.decay ? kAdamWDecay : kAdamWNoDecay);
  }
  return mask;
}

/// @brief The bias-corrected AdamW step size of step @p t (counted from 1) at learning rate
/// @p lr: `lr · sqrt(1 - b2^t) / (1 - b1^t)`, or @p lr without bias correction.
inline double adamw_step_size(const AdamWConfig& cfg, double lr, std::int64_t t) {
  if (!cfg.correct_bias) return lr;
  return lr * std::sqrt(1.0 - std::pow(cfg.beta2, static_cast<double>(t))) /
         (1.0 - std::pow(cfg.beta1, static_cast<double>(t)));
}

/// @brief AdamW over every trainable tensor of a ParameterStore; moments are one flat array
/// each, parallel to the parameters.
///
/// One step, per element, as pytorch_transformers.AdamW does it:
/// ```
/// m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
/// p -= lr · sqrt(1 - b2^t) / (1 - b1^t) · m / (sqrt(v) + eps)      (bias-corrected step)
/// p -= lr · weight_decay · p                                       (after the Adam update)
/// ```
template <class T>
class AdamW {
 public:
  explicit AdamW(const AdamWConfig& cfg = {}) : cfg_(cfg) {}

  const AdamWConfig& config() const noexcept { return cfg_; }
  /// @brief Optimizer steps taken so far.
  std::int64_t steps() const noexcept { return t_; }

  /// @brief One update of every trainable parameter with learning rate @p lr.
  ///
  /// @p grad_scale multiplies each gradient as it is read, exactly as clip_grad_norm would
  /// have multiplied it in place (`static_cast<T>(g * grad_scale)`): the training loop clips
  /// this way, saving a pass over the gradients, which stay unscaled in the store.
  void step(ParameterStore<T>& store, double lr, double grad_scale = 1.0) {
    const std::size_t n = store.values().size();
    if (m_.size() != n) {
      if (t_ != 0) throw Error("AdamW state does not match the model's parameter count");
      m_.assign(n, T(0));
      v_.assign(n, T(0));
    }
    ++t_;
    const double step_size = adamw_step_size(cfg_, lr, t_);
    const T b1 = static_cast<T>(cfg_.beta1), b2 = static_cast<T>(cfg_.beta2);
    // 1 - beta in double, rounded once, as torch turns the Python scalar `1.0 - beta` into
    // the tensor's type (in fp32, 1 - 0.999f is 0.00099998713, 1.3e-5 off 0.001f).
    const T c1 = static_cast<T>(1.0 - cfg_.beta1), c2 = static_cast<T>(1.0 - cfg_.beta2);
    const T eps = static_cast<T>(cfg_.eps), ss = static_cast<T>(step_size);
    for (const auto& s : store.table()) {
      if (!s.trainable || !s.grad) continue;
      const T decay = s.decay ? static_cast<T>(lr * cfg_.weight_decay) : T(0);
      T* p = s.data;
      T* m = m_.data() + s.offset;
      T* v = v_.data() + s.offset;
      const T* grad = s.grad;
      // In blocks that stay in L1: the moments, their square roots (vectorised, see
      // sqrt_into), then the parameters; per element the same operations as one loop.
      const auto update = [&](index_t begin, index_t end, auto read) {
        constexpr index_t kBlock = 256;
        alignas(64) T root[kBlock];
        for (index_t b0 = begin; b0 < end; b0 += kBlock) {
          const index_t b_end = std::min(end, b0 + kBlock);
          for (index_t i = b0; i < b_end; ++i) {
            const T g = read(i);
            m[i] = b1 * m[i] + c1 * g;
            v[i] = b2 * v[i] + c2 * g * g;
          }
          detail::sqrt_into(v + b0, root, b_end - b0);
          for (index_t i = b0; i < b_end; ++i) {
            p[i] -= ss * (m[i] / (root[i - b0] + eps));
            if (decay != T(0)) p[i] -= decay * p[i];
          }
        }
      };
      parallel_chunks(s.size(), 1 << 14, [&](index_t begin, index_t end, index_t) {
        if (grad_scale == 1.0) {
          update(begin, end, [&](index_t i) { return grad[i]; });
        } else {
          update(begin, end, [&](index_t i) { return static_cast<T>(grad[i] * grad_scale); });
        }
      });
    }
  }

  /// @brief First and second moments (flat, parallel to the parameters) and the step count,
  /// for checkpoints.
  AlignedVector<T>& first_moment() noexcept { return m_; }
  AlignedVector<T>& second_moment() noexcept { return v_; }
  const AlignedVector<T>& first_moment() const noexcept { return m_; }
  const AlignedVector<T>& second_moment() const noexcept { return v_; }
  void set_steps(std::int64_t t) noexcept { t_ = t; }

 private:
  AdamWConfig cfg_;
  AlignedVector<T> m_, v_;
  std::int64_t t_ = 0;
};

}  // namespace kadapter
