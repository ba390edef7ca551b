// An emulated device backend for the tests: `test::Emulated` is a backend tag whose memory is
// separate host memory and whose kernels are the CPU's. The models treat it as they treat
// Cuda (`!std::is_same_v<B, Cpu>`): parameters and gradients in "device" arrays with a host
// copy, batch weights uploaded into the arena, host masks copied over, the Trainer's device
// optimizer with its moments in "device" memory. So every piece of host/device bookkeeping of
// the GPU path runs on the CPU, and a result that differs from the Cpu backend's shows a
// missing or stale copy. Fresh "device" memory is filled with 0xFF bytes (NaN for floats,
// -1 for integers, 255 for the AdamW mask), so reading memory that was never written shows
// too. What it cannot show: host code that reads device memory directly (on a GPU that
// faults; here it works) and the CUDA kernels themselves (tests/cuda).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <utility>

#include "kadapter/kadapter.hpp"

namespace kadapter::test {

/// @brief The emulated device's tag.
struct Emulated {};

/// @brief Poisoned, 64-byte aligned host memory standing in for device memory.
inline void* emulated_allocate(std::size_t bytes) {
  void* p = ::operator new[](bytes == 0 ? 1 : bytes, std::align_val_t{64});
  std::memset(p, 0xFF, bytes);
  return p;
}
inline void emulated_release(void* p) noexcept { ::operator delete[](p, std::align_val_t{64}); }

/// @brief The emulated device's owning array (like cuda::DeviceBuffer: resize() loses the
/// contents, and new memory is poisoned).
template <class T>
class EmulatedBuffer {
 public:
  EmulatedBuffer() = default;
  EmulatedBuffer(const EmulatedBuffer&) = delete;
  EmulatedBuffer& operator=(const EmulatedBuffer&) = delete;
  void resize(std::size_t n) {
    if (n == size_) return;
    data_.reset(n ? static_cast<T*>(emulated_allocate(n * sizeof(T))) : nullptr);
    size_ = n;
  }
  T* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }

 private:
  struct Free {
    void operator()(T* p) const noexcept { emulated_release(p); }
  };
  std::unique_ptr<T, Free> data_;
  std::size_t size_ = 0;
};

// Every backend function of the layers and models, on the emulated device: the CPU's.
#define KA_EMULATE(name)                                                 \
  template <class... Args>                                               \
  decltype(auto) name(Emulated, Args&&... args) {                        \
    return ::kadapter::name(Cpu{}, std::forward<Args>(args)...);         \
  }
KA_EMULATE(add_into)
KA_EMULATE(add_layernorm_forward)
KA_EMULATE(attention_backward)
KA_EMULATE(attention_forward)
KA_EMULATE(attention_scratch)
KA_EMULATE(bce_with_logits)
KA_EMULATE(bias_gelu_backward)
KA_EMULATE(bias_gelu_forward)
KA_EMULATE(copy_matrix)
KA_EMULATE(cross_entropy)
KA_EMULATE(dropout_inplace)
KA_EMULATE(embeddings_forward)
KA_EMULATE(fill_zero)
KA_EMULATE(gather_rows)
KA_EMULATE(gelu_backward_inplace)
KA_EMULATE(gelu_inplace)
KA_EMULATE(layernorm_backward)
KA_EMULATE(layernorm_forward)
KA_EMULATE(linear_backward)
KA_EMULATE(linear_concat_backward)
KA_EMULATE(linear_concat_forward)
KA_EMULATE(linear_forward)
KA_EMULATE(scale_copy)
KA_EMULATE(scatter_rows)
KA_EMULATE(weighted_rows_backward)
KA_EMULATE(weighted_rows_forward)
KA_EMULATE(write_gradient)
#undef KA_EMULATE

/// @brief Bytes copied from the host to the emulated device so far (for tests of what a
/// step uploads).
inline std::size_t emulated_upload_bytes = 0;

/// @brief Host to "device": a plain copy.
template <class T>
void copy_from_host(Emulated, T* dst, std::span<const T> src) {
  std::memcpy(dst, src.data(), src.size() * sizeof(T));
  emulated_upload_bytes += src.size() * sizeof(T);
}
/// @brief "Device" to host: a plain copy.
template <class T>
void copy_to_host(Emulated, std::span<T> dst, const T* src) {
  std::memcpy(dst.data(), src, dst.size() * sizeof(T));
}

/// @brief The device optimizer's gradient norm: Σ g² in double over the flat array (the CPU
/// sums per tensor, so the last bits may differ).
template <class T>
double grad_norm(Emulated, std::span<const T> grads) {
  double s = 0;
  for (const T g : grads) s += static_cast<double>(g) * static_cast<double>(g);
  return std::sqrt(s);
}

/// @brief The device optimizer's AdamW over flat arrays with the per-element mask: per
/// element the operations of AdamW<T>::step, in the same order and type.
template <class T>
void adamw_update(Emulated, std::span<T> p, std::span<const T> grad, std::span<T> m, std::span<T> v,
                  const std::uint8_t* mask, const AdamWConfig& cfg, double lr, std::int64_t t, double grad_scale) {
  const T b1 = static_cast<T>(cfg.beta1), b2 = static_cast<T>(cfg.beta2), eps = static_cast<T>(cfg.eps);
  const T c1 = static_cast<T>(1.0 - cfg.beta1), c2 = static_cast<T>(1.0 - cfg.beta2);  // as torch
  const T ss = static_cast<T>(adamw_step_size(cfg, lr, t));
  const T decay = static_cast<T>(lr * cfg.weight_decay);
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (mask[i] == kAdamWFrozen) continue;
    KA_ASSERT(mask[i] == kAdamWNoDecay || mask[i] == kAdamWDecay);
    const T g = grad_scale == 1.0 ? grad[i] : static_cast<T>(grad[i] * grad_scale);
    m[i] = b1 * m[i] + c1 * g;
    v[i] = b2 * v[i] + c2 * g * g;
    p[i] -= ss * (m[i] / (std::sqrt(v[i]) + eps));
    if (mask[i] == kAdamWDecay && decay != T(0)) p[i] -= decay * p[i];
  }
}

}  // namespace kadapter::test

namespace kadapter {
template <>
inline constexpr bool is_backend_v<test::Emulated> = true;

template <>
struct WorkspaceMemory<test::Emulated> {
  static void* allocate(std::size_t bytes) { return test::emulated_allocate(bytes); }
  static void release(void* p) noexcept { test::emulated_release(p); }
};

template <class T>
struct BackendStorage<T, test::Emulated> {
  using type = test::EmulatedBuffer<T>;
};
}  // namespace kadapter
