/// @file kernels.hpp
/// @brief GPU forward kernels: the `Cuda`-tag overloads of the functions in
/// backend/eigen/kernels.hpp, same arguments, with every view in device memory.
///
/// Needs nvcc (include kadapter_cuda.hpp from a .cu file). Everything runs on the calling
/// thread's Context stream and returns without synchronising. Per-row work (LayerNorm,
/// softmax) is one warp per row with shuffle reductions in a fixed order, so results do not
/// depend on launch sizes; they match the CPU backend within fp32 rounding (tests/cuda).
///
/// Every `__global__` function of the backend is a template (`template <int = 0>`, launched
/// as a plain kernel): a non-template kernel defined in a header would be defined again in
/// every .cu file that includes it, and the program would not link.
#pragma once

#if !defined(__CUDACC__)
#error "kadapter/backend/cuda/kernels.hpp needs nvcc: include kadapter/kadapter_cuda.hpp from a .cu file"
#endif

#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>

#include "kadapter/backend/cuda/gemm.hpp"
#include "kadapter/backend/cuda/runtime.hpp"
#include "kadapter/core/backend.hpp"
#include "kadapter/core/gradient_mode.hpp"
#include "kadapter/core/random.hpp"
#include "kadapter/core/tensor.hpp"
#include "kadapter/layers/embeddings.hpp"
#include "kadapter/layers/layernorm.hpp"
#include "kadapter/layers/linear.hpp"

namespace kadapter {

namespace cuda::detail {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // warps per block in the one-warp-per-row kernels

inline unsigned blocks_for(std::int64_t n, int threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

/// @brief Sum over a warp (butterfly: every lane gets the same value, in a fixed order).
template <class T>
__device__ inline T warp_sum(T v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// @brief What a kernel needs of a Dropout: the hashed key, the integer threshold and the
/// survivor scale of DropoutMask, computed on the host.
struct DeviceDropout {
  std::uint64_t key = 0;
  std::uint64_t threshold = 0;
  float scale = 1.0f;
  bool active = false;
  __device__ float factor(std::uint64_t index) const {
    return (mix64(key + index) >> 40) < threshold ? 0.0f : scale;
  }
};
inline DeviceDropout device_dropout(const Dropout* d) {
  DeviceDropout out;
  if (!d || !d->active()) return out;
  const DropoutMask<float> m(*d);
  out.key = m.key;
  out.threshold = m.threshold;
  out.scale = m.scale;
  out.active = true;
  return out;
}

__device__ inline float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f)); }
__device__ inline float gelu_grad(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752440f));
  const float pdf = 0.39894228040143267794f * x * expf(-0.5f * x * x);
  return cdf + pdf;
}

// ---- kernels --------------------------------------------------------------------------

/// out = LN(a + b) per row, one warp per row; xhat and rstd kept when given.
template <int = 0>
__global__ void add_layernorm_kernel(float* out, float* xhat, float* rstd_out, const float* a, const float* b,
                                     const float* gamma, const float* beta, std::int64_t rows, std::int64_t width,
                                     float eps) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (r >= rows) return;
  const int lane = threadIdx.x;
  const float* x = a + r * width;
  const float* y = b ? b + r * width : nullptr;
  float* o = out + r * width;
  float s = 0.0f;
  for (std::int64_t j = lane; j < width; j += kWarp) {
    const float v = y ? x[j] + y[j] : x[j];
    o[j] = v;
    s += v;
  }
  const float mean = warp_sum(s) / static_cast<float>(width);
  float q = 0.0f;
  for (std::int64_t j = lane; j < width; j += kWarp) {
    const float d = o[j] - mean;
    q += d * d;
  }
  const float var = warp_sum(q) / static_cast<float>(width);
  const float rstd = 1.0f / sqrtf(var + eps);
  for (std::int64_t j = lane; j < width; j += kWarp) {
    const float xh = (o[j] - mean) * rstd;
    if (xhat) xhat[r * width + j] = xh;
    o[j] = xh * gamma[j] + beta[j];
  }
  if (rstd_out && lane == 0) rstd_out[r] = rstd;
}

/// out[i] = (word[id] + token_type[tt]) + position[pos], one thread per element.
template <int = 0>
__global__ void embeddings_sum_kernel(float* out, const std::int64_t* ids, const std::int64_t* positions,
                                      const std::int64_t* token_types, const float* word, const float* type,
                                      const float* position, std::int64_t n, std::int64_t width) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= n * width) return;
  const std::int64_t i = e / width, j = e % width;
  const std::int64_t tt = token_types ? token_types[i] : 0;
  out[e] = (word[ids[i] * width + j] + type[tt * width + j]) + position[positions[i] * width + j];
}

/// y[r, j] += bias[j].
template <int = 0>
__global__ void add_bias_kernel(float* y, const float* bias, std::int64_t rows, std::int64_t width) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e < rows * width) y[e] += bias[e % width];
}

/// dst[i] += src[i].
template <int = 0>
__global__ void add_kernel(float* dst, const float* src, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] += src[i];
}

/// dst[i] = alpha * src[i] (dst may be src).
template <int = 0>
__global__ void scale_kernel(float* dst, const float* src, float alpha, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dst[i] = alpha * src[i];
}

template <int = 0>
__global__ void gelu_kernel(float* x, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] = gelu(x[i]);
}

template <int = 0>
__global__ void bias_gelu_kernel(float* pre, float* act, const float* bias, std::int64_t rows, std::int64_t width) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= rows * width) return;
  const float v = pre[e] + bias[e % width];
  pre[e] = v;
  act[e] = gelu(v);
}

/// x[r, c] *= factor(token_element(r / seq, r % seq, c)).
template <int = 0>
__global__ void dropout_kernel(float* x, DeviceDropout d, std::int64_t rows, std::int64_t width, std::int64_t seq) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= rows * width) return;
  const std::int64_t r = e / width, c = e % width;
  x[e] *= d.factor(token_element(static_cast<std::uint64_t>(r / seq), static_cast<std::uint64_t>(r % seq),
                                 static_cast<std::uint64_t>(c)));
}

/// (B*T, A*d) token rows <-> (B, A, T, d) head-major blocks.
template <int = 0>
__global__ void split_heads_kernel(float* dst, const float* src, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                   std::int64_t d) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= batch * seq * heads * d) return;
  const std::int64_t width = heads * d;
  const std::int64_t row = e / width, col = e % width;  // source (b*T + t, h*d + k)
  const std::int64_t b = row / seq, t = row % seq, h = col / d, k = col % d;
  dst[((b * heads + h) * seq + t) * d + k] = src[e];
}
template <int = 0>
__global__ void merge_heads_kernel(float* dst, const float* src, std::int64_t batch, std::int64_t seq, std::int64_t heads,
                                   std::int64_t d) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= batch * seq * heads * d) return;
  const std::int64_t width = heads * d;
  const std::int64_t row = e / width, col = e % width;
  const std::int64_t b = row / seq, t = row % seq, h = col / d, k = col % d;
  dst[e] = src[((b * heads + h) * seq + t) * d + k];
}

/// Row (bh, i) of the scores: p = softmax(s / scale + mask[b]); terms below FLT_MIN are 0
/// (padded keys get weight 0 exactly, as on the CPU). `dropped` gets p · factor.
template <int = 0>
__global__ void softmax_kernel(float* probs, float* dropped, const float* scores, const float* key_mask,
                               std::int64_t rows, std::int64_t seq, std::int64_t heads, float scale, DeviceDropout d) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (row >= rows) return;
  const int lane = threadIdx.x;
  const std::int64_t bh = row / seq, i = row % seq, b = bh / heads;
  const float* s = scores + row * seq;
  float* p = probs + row * seq;
  float mx = -FLT_MAX;
  for (std::int64_t j = lane; j < seq; j += kWarp) {
    const float v = s[j] / scale + (key_mask ? key_mask[b * seq + j] : 0.0f);
    p[j] = v;
    mx = fmaxf(mx, v);
  }
  mx = warp_max(mx);
  float sum = 0.0f;
  for (std::int64_t j = lane; j < seq; j += kWarp) {
    float e = expf(p[j] - mx);
    e = e < FLT_MIN ? 0.0f : e;
    p[j] = e;
    sum += e;
  }
  const float inv = 1.0f / warp_sum(sum);
  for (std::int64_t j = lane; j < seq; j += kWarp) {
    const float v = p[j] * inv;
    p[j] = v;
    if (dropped)
      dropped[row * seq + j] =
          v * d.factor(score_element(static_cast<std::uint64_t>(bh), static_cast<std::uint64_t>(i), static_cast<std::uint64_t>(j)));
  }
}

}  // namespace cuda::detail

// ---- the Cuda overloads -----------------------------------------------------------------

/// @brief `out = in · W^T + b` with the bias in cuBLASLt's epilogue.
template <class T>
void linear_forward(Cuda, MatrixView<T> out, MatrixView<const T> in, const LinearParams<T>& p) {
  static_assert(std::is_same_v<T, float>, "the CUDA backend computes in fp32");
  KA_ASSERT(in.extent(1) == p.in_features() && out.extent(1) == p.out_features() && in.extent(0) == out.extent(0));
  cuda::Gemm g;
  g.trans_b = true;
  g.m = in.extent(0);
  g.n = p.out_features();
  g.k = p.in_features();
  g.a = in.data();
  g.lda = g.k;
  g.b = p.weight.data();
  g.ldb = g.k;
  g.c = out.data();
  g.ldc = g.n;
  // The bias in cuBLASLt's epilogue when it is 16-byte aligned, else in a kernel of its own.
  const T* bias = p.bias.empty() ? nullptr : p.bias.data();
  const bool fused = bias && cuda::detail::alignment_of(bias) >= 16;
  g.bias = fused ? bias : nullptr;
  cuda::gemm(cuda::context(), g);
  if (bias && !fused && g.m * g.n > 0) {
    cuda::detail::add_bias_kernel<<<cuda::detail::blocks_for(g.m * g.n, 256), 256, 0, cuda::context().stream()>>>(
        out.data(), bias, g.m, g.n);
    cuda::check_launch("add_bias_kernel");
  }
}

/// @brief Row-wise LayerNorm of `a + b` (b may be empty); @p out may alias @p a or @p b.
template <class T>
void add_layernorm_forward(Cuda, MatrixView<T> out, std::type_identity_t<LayerNormCache<T>>* cache, MatrixView<const T> a,
                           MatrixView<const T> b, const LayerNormParams<T>& p, T eps) {
  static_assert(std::is_same_v<T, float>, "the CUDA backend computes in fp32");
  const std::int64_t rows = a.extent(0), width = a.extent(1);
  KA_ASSERT(out.extent(0) == rows && out.extent(1) == width && p.gamma.size() == width);
  KA_ASSERT(b.empty() || (b.extent(0) == rows && b.extent(1) == width));
  if (rows * width == 0) return;
  const dim3 block(cuda::detail::kWarp, cuda::detail::kRowsPerBlock);
  cuda::detail::add_layernorm_kernel<<<cuda::detail::blocks_for(rows, cuda::detail::kRowsPerBlock), block, 0,
                                       cuda::context().stream()>>>(
      out.data(), cache ? cache->xhat.data() : nullptr, cache ? cache->rstd.data() : nullptr, a.data(),
      b.empty() ? nullptr : b.data(), p.gamma.data(), p.beta.data(), rows, width, eps);
  cuda::check_launch("add_layernorm_kernel");
}

/// @brief Row-wise LayerNorm.
template <class T>
void layernorm_forward(Cuda, MatrixView<T> out, std::type_identity_t<LayerNormCache<T>>* cache, MatrixView<const T> in,
                       const LayerNormParams<T>& p, T eps) {
  add_layernorm_forward(Cuda{}, out, cache, in, MatrixView<const T>{}, p, eps);
}

/// @brief erf-GELU in place.
template <class T>
void gelu_inplace(Cuda, std::span<T> x) {
  const auto n = static_cast<std::int64_t>(x.size());
  if (n == 0) return;
  cuda::detail::gelu_kernel<<<cuda::detail::blocks_for(n, 256), 256, 0, cuda::context().stream()>>>(x.data(), n);
  cuda::check_launch("gelu_kernel");
}

/// @brief `pre += bias`, `act = GELU(pre)` (act may be pre).
template <class T>
void bias_gelu_forward(Cuda, MatrixView<T> pre, MatrixView<T> act, const T* bias) {
  const std::int64_t rows = pre.extent(0), width = pre.extent(1);
  if (rows * width == 0) return;
  cuda::detail::bias_gelu_kernel<<<cuda::detail::blocks_for(rows * width, 256), 256, 0, cuda::context().stream()>>>(
      pre.data(), act.data(), bias, rows, width);
  cuda::check_launch("bias_gelu_kernel");
}

/// @brief Dropout in place on a token tensor, the same mask as the CPU backend draws.
template <class T>
void dropout_inplace(Cuda, MatrixView<T> x, const Dropout& d, index_t seq) {
  if (!d.active() || x.size() == 0) return;
  KA_ASSERT(seq > 0 && x.extent(0) % seq == 0);
  cuda::detail::dropout_kernel<<<cuda::detail::blocks_for(x.size(), 256), 256, 0, cuda::context().stream()>>>(
      x.data(), cuda::detail::device_dropout(&d), x.extent(0), x.extent(1), seq);
  cuda::check_launch("dropout_kernel");
}

namespace cuda {
/// @brief Scratch floats attention_forward(Cuda, ...) and attention_backward(Cuda, ...) need:
/// seven (B*T, H) head-major copies and two (B, A, T, T) score blocks.
inline std::size_t attention_scratch(index_t batch, index_t seq, index_t width, index_t heads) {
  return static_cast<std::size_t>(7 * batch * seq * width + 2 * batch * heads * seq * seq);
}
}  // namespace cuda

/// @brief cuda::attention_scratch under the backend-generic name the layers use.
inline std::size_t attention_scratch(Cuda, index_t batch, index_t seq, index_t width, index_t heads) {
  return cuda::attention_scratch(batch, seq, width, heads);
}

/// @brief `dst = src` (same shape), device to device.
template <class T>
void copy_matrix(Cuda, MatrixView<T> dst, MatrixView<const T> src) {
  KA_ASSERT(dst.size() == src.size());
  if (src.size() == 0) return;
  cuda::check(cudaMemcpyAsync(dst.data(), src.data(), static_cast<std::size_t>(src.size()) * sizeof(T),
                              cudaMemcpyDeviceToDevice, cuda::context().stream()),
              "cudaMemcpyAsync device to device");
}

/// @brief `dst += src` (same shape).
template <class T>
void add_into(Cuda, MatrixView<T> dst, MatrixView<const T> src) {
  static_assert(std::is_same_v<T, float>, "the CUDA backend computes in fp32");
  KA_ASSERT(dst.size() == src.size());
  if (src.size() == 0) return;
  cuda::detail::add_kernel<<<cuda::detail::blocks_for(src.size(), 256), 256, 0, cuda::context().stream()>>>(
      dst.data(), src.data(), src.size());
  cuda::check_launch("add_kernel");
}

/// @brief `dst = alpha · src` (same shape; @p dst may be @p src).
template <class T>
void scale_copy(Cuda, MatrixView<T> dst, MatrixView<const T> src, T alpha) {
  static_assert(std::is_same_v<T, float>, "the CUDA backend computes in fp32");
  KA_ASSERT(dst.size() == src.size());
  if (src.size() == 0) return;
  cuda::detail::scale_kernel<<<cuda::detail::blocks_for(src.size(), 256), 256, 0, cuda::context().stream()>>>(
      dst.data(), src.data(), alpha, src.size());
  cuda::check_launch("scale_kernel");
}

/// @brief Row r of @p dst (R, W) = row r·stride of @p src (R·stride, W), one 2-D copy.
template <class T>
void gather_rows(Cuda, MatrixView<T> dst, MatrixView<const T> src, index_t stride) {
  KA_ASSERT(src.extent(0) == dst.extent(0) * stride && src.extent(1) == dst.extent(1));
  if (dst.size() == 0) return;
  const std::size_t row = static_cast<std::size_t>(dst.extent(1)) * sizeof(T);
  cuda::check(cudaMemcpy2DAsync(dst.data(), row, src.data(), row * static_cast<std::size_t>(stride), row,
                                static_cast<std::size_t>(dst.extent(0)), cudaMemcpyDeviceToDevice,
                                cuda::context().stream()),
              "cudaMemcpy2DAsync (gather_rows)");
}

/// @brief Row r·stride of @p dst (R·stride, W) = row r of @p src (R, W); other rows are left.
template <class T>
void scatter_rows(Cuda, MatrixView<T> dst, MatrixView<const T> src, index_t stride) {
  KA_ASSERT(dst.extent(0) == src.extent(0) * stride && src.extent(1) == dst.extent(1));
  if (src.size() == 0) return;
  const std::size_t row = static_cast<std::size_t>(src.extent(1)) * sizeof(T);
  cuda::check(cudaMemcpy2DAsync(dst.data(), row * static_cast<std::size_t>(stride), src.data(), row, row,
                                static_cast<std::size_t>(src.extent(0)), cudaMemcpyDeviceToDevice,
                                cuda::context().stream()),
              "cudaMemcpy2DAsync (scatter_rows)");
}

/// @brief Copy @p src from host memory to @p dst in device memory, queued on the Context
/// stream. @p src may be reused as soon as this returns: it goes through the Context's pinned
/// staging memory (Context::copy_to_device).
template <class T>
void copy_from_host(Cuda, T* dst, std::span<const T> src) {
  cuda::context().copy_to_device(dst, src.data(), src.size() * sizeof(T));
}

/// @brief Copy dst.size() elements from @p src in device memory to @p dst on the host, after
/// the work queued on the Context stream; returns when the copy is complete.
template <class T>
void copy_to_host(Cuda, std::span<T> dst, const T* src) {
  if (dst.empty()) return;
  auto& ctx = cuda::context();
  cuda::check(cudaMemcpyAsync(dst.data(), src, dst.size() * sizeof(T), cudaMemcpyDeviceToHost, ctx.stream()),
              "cudaMemcpyAsync to host");
  ctx.synchronize();
}

/// @brief `dst = 0`.
template <class T>
void fill_zero(Cuda, MatrixView<T> dst) {
  if (dst.size() == 0) return;
  cuda::check(cudaMemsetAsync(dst.data(), 0, static_cast<std::size_t>(dst.size()) * sizeof(T), cuda::context().stream()),
              "cudaMemsetAsync");
}

/// @brief @p src written into @p dst according to @p mode (see GradientMode).
template <class T>
void write_gradient(Cuda, MatrixView<T> dst, MatrixView<const T> src, GradientMode mode) {
  if (mode == GradientMode::Overwrite) {
    copy_matrix(Cuda{}, dst, src);
  } else if (mode == GradientMode::Accumulate) {
    add_into(Cuda{}, dst, src);
  }
}

/// @brief Multi-head attention, as the CPU overload: heads are split into (B, A, T, d)
/// blocks so that the products are strided-batched cuBLASLt calls over all B·A heads.
/// @param probs (B, A, T, T) device buffer for the probabilities (before dropout), or nullptr
/// @param key_mask (B*T) additive key mask in device memory, or empty
/// @param scratch device memory of cuda::attention_scratch(B, T, H, A) floats
template <class T>
void attention_forward(Cuda, MatrixView<T> ctx, std::type_identity_t<T>* probs, MatrixView<const T> q,
                       MatrixView<const T> k, MatrixView<const T> v, std::span<const T> key_mask, index_t batch,
                       index_t seq, index_t heads, T* scratch, const Dropout* dropout = nullptr) {
  static_assert(std::is_same_v<T, float>, "the CUDA backend computes in fp32");
  const index_t width = q.extent(1), d = width / heads, tokens = batch * seq;
  KA_ASSERT(q.extent(0) == tokens && d * heads == width);
  KA_ASSERT(k.extent(0) == tokens && v.extent(0) == tokens && ctx.extent(0) == tokens);
  KA_ASSERT(key_mask.empty() || static_cast<index_t>(key_mask.size()) == tokens);
  if (tokens == 0) return;
  auto& ctx_ = cuda::context();
  const cudaStream_t s = ctx_.stream();
  const std::int64_t block_elems = tokens * width, score_elems = batch * heads * seq * seq;
  float* qp = scratch;
  float* kp = qp + block_elems;
  float* vp = kp + block_elems;
  float* cp = vp + block_elems;
  float* scores = scratch + 7 * block_elems;
  float* dropped = scores + score_elems;
  const unsigned grid = cuda::detail::blocks_for(block_elems, 256);
  cuda::detail::split_heads_kernel<<<grid, 256, 0, s>>>(qp, q.data(), batch, seq, heads, d);
  cuda::detail::split_heads_kernel<<<grid, 256, 0, s>>>(kp, k.data(), batch, seq, heads, d);
  cuda::detail::split_heads_kernel<<<grid, 256, 0, s>>>(vp, v.data(), batch, seq, heads, d);
  cuda::check_launch("split_heads_kernel");
  // scores (T, T) = Q_bh K_bh^T for every head
  cuda::Gemm g;
  g.trans_b = true;
  g.m = seq;
  g.n = seq;
  g.k = d;
  g.a = qp;
  g.lda = d;
  g.b = kp;
  g.ldb = d;
  g.c = scores;
  g.ldc = seq;
  g.batch = batch * heads;
  g.stride_a = seq * d;
  g.stride_b = seq * d;
  g.stride_c = seq * seq;
  cuda::gemm(ctx_, g);
  float* p = probs ? probs : scores;  // softmax in place when the probabilities are not kept
  const cuda::detail::DeviceDropout drop = cuda::detail::device_dropout(dropout);
  const dim3 block(cuda::detail::kWarp, cuda::detail::kRowsPerBlock);
  cuda::detail::softmax_kernel<<<cuda::detail::blocks_for(batch * heads * seq, cuda::detail::kRowsPerBlock), block, 0, s>>>(
      p, drop.active ? dropped : nullptr, scores, key_mask.empty() ? nullptr : key_mask.data(), batch * heads * seq, seq,
      heads, std::sqrt(static_cast<float>(d)), drop);
  cuda::check_launch("softmax_kernel");
  // ctx_bh (T, d) = P'_bh V_bh
  cuda::Gemm c;
  c.m = seq;
  c.n = d;
  c.k = seq;
  c.a = drop.active ? dropped : p;
  c.lda = seq;
  c.b = vp;
  c.ldb = d;
  c.c = cp;
  c.ldc = d;
  c.batch = batch * heads;
  c.stride_a = seq * seq;
  c.stride_b = seq * d;
  c.stride_c = seq * d;
  cuda::gemm(ctx_, c);
  cuda::detail::merge_heads_kernel<<<grid, 256, 0, s>>>(ctx.data(), cp, batch, seq, heads, d);
  cuda::check_launch("merge_heads_kernel");
}

/// @brief Embeddings: `LN((word[id] + token_type[tt]) + position[pos])`, ids in device memory.
template <class T>
void embeddings_forward(Cuda, MatrixView<T> out, std::type_identity_t<LayerNormCache<T>>* cache,
                        std::span<const std::int64_t> ids, std::span<const std::int64_t> positions,
                        std::span<const std::int64_t> token_types, const EmbeddingParams<T>& p, T eps) {
  const std::int64_t n = out.extent(0), width = out.extent(1);
  KA_ASSERT(static_cast<std::int64_t>(ids.size()) == n && static_cast<std::int64_t>(positions.size()) == n);
  if (n * width == 0) return;
  cuda::detail::embeddings_sum_kernel<<<cuda::detail::blocks_for(n * width, 256), 256, 0, cuda::context().stream()>>>(
      out.data(), ids.data(), positions.data(), token_types.empty() ? nullptr : token_types.data(), p.word.data(),
      p.token_type.data(), p.position.data(), n, width);
  cuda::check_launch("embeddings_sum_kernel");
  layernorm_forward(Cuda{}, out, cache, MatrixView<const T>(out), p.norm, eps);
}

}  // namespace kadapter
