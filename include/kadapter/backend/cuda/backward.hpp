/// @file backward.hpp
/// @brief GPU backward kernels and losses: the `Cuda`-tag overloads of the functions in
/// backend/eigen/backward.hpp, same arguments and GradientMode rules, views in device memory.
///
/// Parameter-gradient column sums (bias, LayerNorm gamma and beta) add fixed row chunks in a
/// fixed order, so they are deterministic. The losses take their labels, row
/// weights and masks from host memory, as the CPU overloads do, check them on the host with
/// the same errors, and return the mean loss to the host (which synchronises the stream).
#pragma once

#if !defined(__CUDACC__)
#error "kadapter/backend/cuda/backward.hpp needs nvcc: include kadapter/kadapter_cuda.hpp from a .cu file"
#endif

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "kadapter/backend/cuda/kernels.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/core/gradient_mode.hpp"

namespace kadapter {

namespace cuda::detail {

/// Column sums in two deterministic stages. Stage 1: block (bx, c) sums columns
/// 32·bx..32·bx+31 over row chunk c (rows split by a fixed rule that depends only on the row
/// count), eight row lanes per column added in a fixed order; partial[c, j] (and partial2 for
/// Σ x·y). Stage 2 adds the chunks in order into sums[j] (and sums2[j]).
constexpr int kSumCols = 32, kSumLanes = 8;
inline std::int64_t column_sum_chunks(std::int64_t rows) { return std::min<std::int64_t>(64, (rows + 63) / 64); }

template <int = 0>
__global__ void column_partial_sums_kernel(float* partial, float* partial2, const float* x, const float* y,
                                           std::int64_t rows, std::int64_t width, std::int64_t chunks) {
  __shared__ float acc[kSumLanes][kSumCols], acc2[kSumLanes][kSumCols];
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * kSumCols + threadIdx.x;
  const std::int64_t c = blockIdx.y;
  const std::int64_t begin = rows * c / chunks, end = rows * (c + 1) / chunks;
  float s = 0.0f, s2 = 0.0f;
  if (j < width)
    for (std::int64_t r = begin + threadIdx.y; r < end; r += kSumLanes) {
      const float v = x[r * width + j];
      s += v;
      if (partial2) s2 += v * y[r * width + j];
    }
  acc[threadIdx.y][threadIdx.x] = s;
  acc2[threadIdx.y][threadIdx.x] = s2;
  __syncthreads();
  if (threadIdx.y == 0 && j < width) {
    float t = 0.0f, t2 = 0.0f;
    for (int l = 0; l < kSumLanes; ++l) {
      t += acc[l][threadIdx.x];
      t2 += acc2[l][threadIdx.x];
    }
    partial[c * width + j] = t;
    if (partial2) partial2[c * width + j] = t2;
  }
}

template <int = 0>
__global__ void column_sums_finish_kernel(float* sums, float* sums2, const float* partial, const float* partial2,
                                          std::int64_t width, std::int64_t chunks) {
  const std::int64_t j = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= width) return;
  float t = 0.0f, t2 = 0.0f;
  for (std::int64_t c = 0; c < chunks; ++c) {
    t += partial[c * width + j];
    if (partial2) t2 += partial2[c * width + j];
  }
  sums[j] += t;
  if (sums2) sums2[j] += t2;
}

/// d_in (=|+=) rstd · (g - mean(g) - xhat · mean(g ∘ xhat)), g = d_out ∘ gamma; warp per row.
template <int = 0>
__global__ void layernorm_backward_kernel(float* d_in, const float* d_out, const float* xhat, const float* rstd,
                                          const float* gamma, std::int64_t rows, std::int64_t width, bool accumulate) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (r >= rows) return;
  const int lane = threadIdx.x;
  const float* dy = d_out + r * width;
  const float* xh = xhat + r * width;
  float sg = 0.0f, sgx = 0.0f;
  for (std::int64_t j = lane; j < width; j += kWarp) {
    const float g = dy[j] * gamma[j];
    sg += g;
    sgx += g * xh[j];
  }
  const float inv_width = 1.0f / static_cast<float>(width);
  const float mean_g = warp_sum(sg) * inv_width, mean_gx = warp_sum(sgx) * inv_width;
  const float rs = rstd[r];
  float* dx = d_in + r * width;
  for (std::int64_t j = lane; j < width; j += kWarp) {
    const float v = rs * (dy[j] * gamma[j] - mean_g - xh[j] * mean_gx);
    dx[j] = accumulate ? dx[j] + v : v;
  }
}

template <int = 0>
__global__ void gelu_backward_kernel(float* d, const float* pre, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) d[i] *= gelu_grad(pre[i]);
}

/// out = p · factor(score_element(bh, i, j)) for the (B·A·T, T) probability rows.
template <int = 0>
__global__ void dropout_scores_kernel(float* out, const float* p, std::int64_t rows, std::int64_t seq, DeviceDropout d) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= rows * seq) return;
  const std::int64_t row = e / seq, j = e % seq, bh = row / seq, i = row % seq;
  out[e] = p[e] * d.factor(score_element(static_cast<std::uint64_t>(bh), static_cast<std::uint64_t>(i),
                                         static_cast<std::uint64_t>(j)));
}

/// ds = P ∘ (dP' - rowsum(dP' ∘ P)) · inv_scale with dP' = dropout(dP); warp per row; ds may be dp.
template <int = 0>
__global__ void softmax_backward_kernel(float* ds, const float* dp, const float* probs, std::int64_t rows,
                                        std::int64_t seq, float inv_scale, DeviceDropout d) {
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (row >= rows) return;
  const int lane = threadIdx.x;
  const std::int64_t bh = row / seq, i = row % seq;
  const float* pr = probs + row * seq;
  const float* dpr = dp + row * seq;
  float* out = ds + row * seq;
  float dot = 0.0f;
  for (std::int64_t j = lane; j < seq; j += kWarp) {
    float g = dpr[j];
    if (d.active)
      g *= d.factor(score_element(static_cast<std::uint64_t>(bh), static_cast<std::uint64_t>(i), static_cast<std::uint64_t>(j)));
    out[j] = g;  // same lane reads dpr[j] before writing out[j]: in place is safe
    dot += g * pr[j];
  }
  dot = warp_sum(dot);
  for (std::int64_t j = lane; j < seq; j += kWarp) out[j] = pr[j] * (out[j] - dot) * inv_scale;
}

/// Softmax cross-entropy per row: loss[r] (double) and the gradient divided by @p count.
template <int = 0>
__global__ void cross_entropy_kernel(float* d_logits, double* loss, const float* logits, const std::int64_t* labels,
                                     const std::int64_t* counted, const std::int64_t* column_mask, std::int64_t rows,
                                     std::int64_t classes, float count) {
  const std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (r >= rows) return;
  const int lane = threadIdx.x;
  float* dr = d_logits ? d_logits + r * classes : nullptr;
  if (!counted[r]) {
    if (dr)
      for (std::int64_t j = lane; j < classes; j += kWarp) dr[j] = 0.0f;
    if (lane == 0) loss[r] = 0.0;
    return;
  }
  const float* x = logits + r * classes;
  const std::int64_t* cm = column_mask ? column_mask + r * classes : nullptr;
  float mx = -FLT_MAX;
  for (std::int64_t j = lane; j < classes; j += kWarp)
    if (!cm || cm[j]) mx = fmaxf(mx, x[j]);
  mx = warp_max(mx);
  float sum = 0.0f;
  for (std::int64_t j = lane; j < classes; j += kWarp)
    if (!cm || cm[j]) sum += expf(x[j] - mx);
  sum = warp_sum(sum);
  const std::int64_t y = labels[r];
  if (lane == 0) loss[r] = static_cast<double>(logf(sum) + mx - x[y]);
  if (dr) {
    const float inv = 1.0f / (sum * count);
    for (std::int64_t j = lane; j < classes; j += kWarp)
      dr[j] = (!cm || cm[j]) ? expf(x[j] - mx) * inv - (j == y ? 1.0f / count : 0.0f) : 0.0f;
  }
}

/// Binary cross-entropy with logits per element (double) and its gradient.
template <int = 0>
__global__ void bce_kernel(float* d_logits, double* loss, const float* logits, const float* targets, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float x = logits[i], y = targets[i];
  loss[i] = static_cast<double>(fmaxf(x, 0.0f) - x * y + log1pf(expf(-fabsf(x))));
  if (d_logits) {
    const float s = x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
    d_logits[i] = (s - y) / static_cast<float>(n);
  }
}

/// @brief sums[j] += Σ_r x[r, j] and, when @p sums2 is given, sums2[j] += Σ_r x[r, j] · y[r, j].
inline void column_sums(float* sums, float* sums2, const float* x, const float* y, std::int64_t rows, std::int64_t width) {
  if (width == 0 || rows == 0) return;
  Context& ctx = context();
  const std::int64_t chunks = column_sum_chunks(rows);
  auto* partial = static_cast<float*>(ctx.scratch(static_cast<std::size_t>(2 * chunks * width) * sizeof(float)));
  float* partial2 = sums2 ? partial + chunks * width : nullptr;
  const dim3 grid(static_cast<unsigned>((width + kSumCols - 1) / kSumCols), static_cast<unsigned>(chunks));
  column_partial_sums_kernel<<<grid, dim3(kSumCols, kSumLanes), 0, ctx.stream()>>>(partial, partial2, x, y, rows, width,
                                                                                   chunks);
  check_launch("column_partial_sums_kernel");
  column_sums_finish_kernel<<<blocks_for(width, 256), 256, 0, ctx.stream()>>>(sums, sums2, partial, partial2, width, chunks);
  check_launch("column_sums_finish_kernel");
}

/// @brief Copy @p n int64 values to a region of the context's scratch at @p offset bytes.
inline const std::int64_t* upload_ints(Context& ctx, std::byte* base, std::size_t offset, std::span<const std::int64_t> v) {
  auto* dst = reinterpret_cast<std::int64_t*>(base + offset);
  ctx.copy_to_device(dst, v.data(), v.size() * sizeof(std::int64_t));  // staged: v may go at once
  return dst;
}

/// @brief Σ of @p n doubles in device memory, copied to the host and summed in order.
inline double sum_on_host(Context& ctx, const double* values, std::int64_t n) {
  std::vector<double> host(static_cast<std::size_t>(n));
  if (n) check(cudaMemcpyAsync(host.data(), values, host.size() * sizeof(double), cudaMemcpyDeviceToHost, ctx.stream()),
               "cudaMemcpyAsync to host");
  ctx.synchronize();
  double total = 0;
  for (double v : host) total += v;
  return total;
}

}  // namespace cuda::detail

/// @brief `bias_grad += column sums of d_out`.
template <class T>
void accumulate_bias_grad(Cuda, T* bias_grad, MatrixView<const T> d_out) {
  cuda::detail::column_sums(bias_grad, nullptr, d_out.data(), nullptr, d_out.extent(0), d_out.extent(1));
}

/// @brief Backward of `out = in · W^T + b`: dW += d_out^T · in, db += column sums,
/// d_in (=|+=) d_out · W.
template <class T>
void linear_backward(Cuda, MatrixView<T> d_in, GradientMode in_mode, const std::type_identity_t<LinearGrads<T>>* grads,
                     MatrixView<const T> d_out, MatrixView<const T> in, const LinearParams<T>& p) {
  static_assert(std::is_same_v<T, float>, "the CUDA backend computes in fp32");
  const std::int64_t rows = d_out.extent(0), out_f = p.out_features(), in_f = p.in_features();
  auto& ctx = cuda::context();
  if (grads) {
    cuda::Gemm g;  // dW (out_f, in_f) += d_out^T (out_f, N) · in (N, in_f)
    g.trans_a = true;
    g.m = out_f;
    g.n = in_f;
    g.k = rows;
    g.a = d_out.data();
    g.lda = out_f;
    g.b = in.data();
    g.ldb = in_f;
    g.c = grads->weight.data();
    g.ldc = in_f;
    g.beta = 1.0f;
    if (rows > 0) cuda::gemm(ctx, g);
    if (!grads->bias.empty()) accumulate_bias_grad(Cuda{}, grads->bias.data(), d_out);
  }
  if (in_mode == GradientMode::Ignore) return;
  cuda::Gemm g;  // d_in (N, in_f) = d_out (N, out_f) · W (out_f, in_f)
  g.m = rows;
  g.n = in_f;
  g.k = out_f;
  g.a = d_out.data();
  g.lda = out_f;
  g.b = p.weight.data();
  g.ldb = in_f;
  g.c = d_in.data();
  g.ldc = in_f;
  g.beta = in_mode == GradientMode::Accumulate ? 1.0f : 0.0f;
  cuda::gemm(ctx, g);
}

/// @brief `out = concat(in_0, ..., in_{K-1}) · W^T + b` without forming the concatenation:
/// one product per input with its block of W's columns, accumulated, the bias added by the
/// last one (as the CPU overload adds it after the products).
template <class T>
void linear_concat_forward(Cuda, MatrixView<T> out, std::span<const MatrixView<const T>> inputs, const LinearParams<T>& p) {
  static_assert(std::is_same_v<T, float>, "the CUDA backend computes in fp32");
  const std::int64_t rows = out.extent(0), out_f = p.out_features(), in_f = p.in_features();
  const T* bias = p.bias.empty() ? nullptr : p.bias.data();
  const bool fused = bias && cuda::detail::alignment_of(bias) >= 16;
  index_t col = 0;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const index_t width = inputs[k].extent(1);
    KA_ASSERT(inputs[k].extent(0) == rows);
    cuda::Gemm g;  // out (N, out_f) (+)= in_k (N, w) · W[:, col:col+w]^T
    g.trans_b = true;
    g.m = rows;
    g.n = out_f;
    g.k = width;
    g.a = inputs[k].data();
    g.lda = width;
    g.b = p.weight.data() + col;
    g.ldb = in_f;
    g.c = out.data();
    g.ldc = out_f;
    g.beta = k > 0 ? 1.0f : 0.0f;
    if (k + 1 == inputs.size() && fused) g.bias = bias;
    cuda::gemm(cuda::context(), g);
    col += width;
  }
  KA_ASSERT(col == in_f);
  if (bias && !fused && rows * out_f > 0) {
    cuda::detail::add_bias_kernel<<<cuda::detail::blocks_for(rows * out_f, 256), 256, 0, cuda::context().stream()>>>(
        out.data(), bias, rows, out_f);
    cuda::check_launch("add_bias_kernel");
  }
}

/// @brief Backward of linear_concat_forward: each d_inputs[k] written per @p mode (an empty
/// view skips that input); weight-block and bias gradients accumulate.
template <class T>
void linear_concat_backward(Cuda, std::span<const MatrixView<T>> d_inputs, GradientMode mode,
                            const std::type_identity_t<LinearGrads<T>>* grads, MatrixView<const T> d_out,
                            std::span<const MatrixView<const T>> inputs, const LinearParams<T>& p) {
  static_assert(std::is_same_v<T, float>, "the CUDA backend computes in fp32");
  const std::int64_t rows = d_out.extent(0), out_f = p.out_features(), in_f = p.in_features();
  auto& ctx = cuda::context();
  index_t col = 0;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const index_t width = inputs[k].extent(1);
    if (grads && rows > 0) {
      cuda::Gemm g;  // dW[:, col:col+w] (out_f, w) += d_out^T · in_k
      g.trans_a = true;
      g.m = out_f;
      g.n = width;
      g.k = rows;
      g.a = d_out.data();
      g.lda = out_f;
      g.b = inputs[k].data();
      g.ldb = width;
      g.c = grads->weight.data() + col;
      g.ldc = in_f;
      g.beta = 1.0f;
      cuda::gemm(ctx, g);
    }
    if (!d_inputs[k].empty() && mode != GradientMode::Ignore) {
      cuda::Gemm g;  // d_in_k (N, w) (=|+=) d_out (N, out_f) · W[:, col:col+w]
      g.m = rows;
      g.n = width;
      g.k = out_f;
      g.a = d_out.data();
      g.lda = out_f;
      g.b = p.weight.data() + col;
      g.ldb = in_f;
      g.c = d_inputs[k].data();
      g.ldc = width;
      g.beta = mode == GradientMode::Accumulate ? 1.0f : 0.0f;
      cuda::gemm(ctx, g);
    }
    col += width;
  }
  KA_ASSERT(col == in_f);
  if (grads && !grads->bias.empty()) accumulate_bias_grad(Cuda{}, grads->bias.data(), d_out);
}

/// @brief `out[b] = Σ_t weights[b, t] · features[b, t]`: one (1, T)·(T, H) product per
/// sequence, batched.
/// @param weights (B, T) in device memory
template <class T>
void weighted_rows_forward(Cuda, MatrixView<T> out, MatrixView<const T> weights, MatrixView<const T> features) {
  const std::int64_t batch = weights.extent(0), seq = weights.extent(1), width = features.extent(1);
  KA_ASSERT(features.extent(0) == batch * seq && out.extent(0) == batch && out.extent(1) == width);
  cuda::Gemm g;
  g.m = 1;
  g.n = width;
  g.k = seq;
  g.a = weights.data();
  g.lda = seq;
  g.b = features.data();
  g.ldb = width;
  g.c = out.data();
  g.ldc = width;
  g.batch = batch;
  g.stride_a = seq;
  g.stride_b = seq * width;
  g.stride_c = width;
  if (batch > 0) cuda::gemm(cuda::context(), g);
}

/// @brief Backward of weighted_rows_forward: `d_features[b, t] += weights[b, t] · d_out[b]`.
template <class T>
void weighted_rows_backward(Cuda, MatrixView<T> d_features, MatrixView<const T> d_out, MatrixView<const T> weights) {
  const std::int64_t batch = weights.extent(0), seq = weights.extent(1), width = d_out.extent(1);
  cuda::Gemm g;  // d_features[b] (T, H) += weights[b]^T (T, 1) · d_out[b] (1, H)
  g.trans_a = true;
  g.m = seq;
  g.n = width;
  g.k = 1;
  g.a = weights.data();
  g.lda = seq;
  g.b = d_out.data();
  g.ldb = width;
  g.c = d_features.data();
  g.ldc = width;
  g.beta = 1.0f;
  g.batch = batch;
  g.stride_a = seq;
  g.stride_b = width;
  g.stride_c = seq * width;
  if (batch > 0) cuda::gemm(cuda::context(), g);
}

/// @brief Backward of `y = LN(x)`: d_gamma += Σ d_y ∘ xhat, d_beta += Σ d_y, d_in per @p mode.
template <class T>
void layernorm_backward(Cuda, MatrixView<T> d_in, GradientMode mode, const std::type_identity_t<LayerNormGrads<T>>* grads,
                        MatrixView<const T> d_out, const LayerNormCache<T>& cache, const LayerNormParams<T>& p) {
  const std::int64_t rows = d_out.extent(0), width = d_out.extent(1);
  if (grads)
    cuda::detail::column_sums(grads->beta.data(), grads->gamma.data(), d_out.data(), cache.xhat.data(), rows, width);
  if (mode == GradientMode::Ignore || rows == 0) return;
  const dim3 block(cuda::detail::kWarp, cuda::detail::kRowsPerBlock);
  cuda::detail::layernorm_backward_kernel<<<cuda::detail::blocks_for(rows, cuda::detail::kRowsPerBlock), block, 0,
                                            cuda::context().stream()>>>(
      d_in.data(), d_out.data(), cache.xhat.data(), cache.rstd.data(), p.gamma.data(), rows, width,
      mode == GradientMode::Accumulate);
  cuda::check_launch("layernorm_backward_kernel");
}

/// @brief Backward of erf-GELU in place: `d ← d · (Φ(x) + x · φ(x))`.
template <class T>
void gelu_backward_inplace(Cuda, std::span<T> d, std::span<const T> pre) {
  const auto n = static_cast<std::int64_t>(d.size());
  if (n == 0) return;
  cuda::detail::gelu_backward_kernel<<<cuda::detail::blocks_for(n, 256), 256, 0, cuda::context().stream()>>>(d.data(),
                                                                                                           pre.data(), n);
  cuda::check_launch("gelu_backward_kernel");
}

/// @brief Backward of bias_gelu_forward: `d ← d · GELU'(pre)`, `bias_grad += column sums`.
template <class T>
void bias_gelu_backward(Cuda, MatrixView<T> d, MatrixView<const T> pre, T* bias_grad) {
  gelu_backward_inplace(Cuda{}, d.span(), pre.span());
  if (bias_grad) accumulate_bias_grad(Cuda{}, bias_grad, MatrixView<const T>(d));
}

/// @brief Backward of attention_forward(Cuda, ...): dV = P'^T dC, dP = dropout(dC V^T),
/// dS = P ∘ (dP - rowsum(dP ∘ P)) / sqrt(d), dQ = dS K, dK = dS^T Q, all heads batched.
/// @param probs (B, A, T, T) device probabilities saved by the forward pass
/// @param scratch device memory of cuda::attention_scratch(B, T, H, A) floats
template <class T>
void attention_backward(Cuda, MatrixView<T> d_q, MatrixView<T> d_k, MatrixView<T> d_v, MatrixView<const T> d_ctx,
                        MatrixView<const T> q, MatrixView<const T> k, MatrixView<const T> v, const T* probs, index_t batch,
                        index_t seq, index_t heads, T* scratch, const Dropout* dropout = nullptr) {
  static_assert(std::is_same_v<T, float>, "the CUDA backend computes in fp32");
  const index_t width = q.extent(1), d = width / heads, tokens = batch * seq;
  if (tokens == 0) return;
  auto& ctx = cuda::context();
  const cudaStream_t s = ctx.stream();
  const std::int64_t block_elems = tokens * width, score_elems = batch * heads * seq * seq;
  float* qp = scratch;
  float* kp = qp + block_elems;
  float* vp = kp + block_elems;
  float* dcp = vp + block_elems;
  float* dqp = dcp + block_elems;
  float* dkp = dqp + block_elems;
  float* dvp = dkp + block_elems;
  float* dp = scratch + 7 * block_elems;
  float* work = dp + score_elems;
  const unsigned grid = cuda::detail::blocks_for(block_elems, 256);
  cuda::detail::split_heads_kernel<<<grid, 256, 0, s>>>(qp, q.data(), batch, seq, heads, d);
  cuda::detail::split_heads_kernel<<<grid, 256, 0, s>>>(kp, k.data(), batch, seq, heads, d);
  cuda::detail::split_heads_kernel<<<grid, 256, 0, s>>>(vp, v.data(), batch, seq, heads, d);
  cuda::detail::split_heads_kernel<<<grid, 256, 0, s>>>(dcp, d_ctx.data(), batch, seq, heads, d);
  cuda::check_launch("split_heads_kernel");
  const cuda::detail::DeviceDropout drop = cuda::detail::device_dropout(dropout);
  const std::int64_t bh = batch * heads;
  const float* p_used = probs;
  if (drop.active) {
    cuda::detail::dropout_scores_kernel<<<cuda::detail::blocks_for(score_elems, 256), 256, 0, s>>>(work, probs, bh * seq,
                                                                                                 seq, drop);
    cuda::check_launch("dropout_scores_kernel");
    p_used = work;
  }
  const auto batched = [&](cuda::Gemm g, std::int64_t sa, std::int64_t sb, std::int64_t sc) {
    g.batch = bh;
    g.stride_a = sa;
    g.stride_b = sb;
    g.stride_c = sc;
    cuda::gemm(ctx, g);
  };
  {  // dV (T, d) = P'^T (T, T) · dC (T, d)
    cuda::Gemm g;
    g.trans_a = true;
    g.m = seq; g.n = d; g.k = seq;
    g.a = p_used; g.lda = seq;
    g.b = dcp; g.ldb = d;
    g.c = dvp; g.ldc = d;
    batched(g, seq * seq, seq * d, seq * d);
  }
  {  // dP (T, T) = dC (T, d) · V^T
    cuda::Gemm g;
    g.trans_b = true;
    g.m = seq; g.n = seq; g.k = d;
    g.a = dcp; g.lda = d;
    g.b = vp; g.ldb = d;
    g.c = dp; g.ldc = seq;
    batched(g, seq * d, seq * d, seq * seq);
  }
  const dim3 block(cuda::detail::kWarp, cuda::detail::kRowsPerBlock);
  cuda::detail::softmax_backward_kernel<<<cuda::detail::blocks_for(bh * seq, cuda::detail::kRowsPerBlock), block, 0, s>>>(
      work, dp, probs, bh * seq, seq, 1.0f / std::sqrt(static_cast<float>(d)), drop);
  cuda::check_launch("softmax_backward_kernel");
  {  // dQ (T, d) = dS (T, T) · K (T, d)
    cuda::Gemm g;
    g.m = seq; g.n = d; g.k = seq;
    g.a = work; g.lda = seq;
    g.b = kp; g.ldb = d;
    g.c = dqp; g.ldc = d;
    batched(g, seq * seq, seq * d, seq * d);
  }
  {  // dK (T, d) = dS^T · Q
    cuda::Gemm g;
    g.trans_a = true;
    g.m = seq; g.n = d; g.k = seq;
    g.a = work; g.lda = seq;
    g.b = qp; g.ldb = d;
    g.c = dkp; g.ldc = d;
    batched(g, seq * seq, seq * d, seq * d);
  }
  cuda::detail::merge_heads_kernel<<<grid, 256, 0, s>>>(d_q.data(), dqp, batch, seq, heads, d);
  cuda::detail::merge_heads_kernel<<<grid, 256, 0, s>>>(d_k.data(), dkp, batch, seq, heads, d);
  cuda::detail::merge_heads_kernel<<<grid, 256, 0, s>>>(d_v.data(), dvp, batch, seq, heads, d);
  cuda::check_launch("merge_heads_kernel");
}

/// @brief Mean softmax cross-entropy over the counted rows and its gradient, as the CPU
/// overload (labels, row weights and column mask in host memory; logits on the device).
/// @throws Error when a counted label is outside [0, C) or on a masked column
template <class T>
T cross_entropy(Cuda, MatrixView<T> d_logits, MatrixView<const T> logits, std::span<const std::int64_t> labels,
                std::span<const std::int64_t> row_weight = {}, std::span<const std::int64_t> column_mask = {}) {
  const std::int64_t n = logits.extent(0), c = logits.extent(1);
  std::vector<std::int64_t> counted(static_cast<std::size_t>(n), 0);
  std::int64_t count = 0;
  for (std::int64_t r = 0; r < n; ++r) {
    if (!((row_weight.empty() || row_weight[r] != 0) && labels[r] != -100)) continue;
    const std::int64_t y = labels[r];
    const std::int64_t* cm = column_mask.empty() ? nullptr : column_mask.data() + r * c;
    if (y < 0 || y >= c || (cm && cm[y] == 0))
      throw Error("label " + std::to_string(y) + " of row " + std::to_string(r) + " is outside the " + std::to_string(c) +
                  " classes" + (cm ? " or on a masked column" : ""));
    counted[static_cast<std::size_t>(r)] = 1;
    ++count;
  }
  if (n == 0) return T(0);
  auto& ctx = cuda::context();
  const std::size_t ints = static_cast<std::size_t>(2 * n) + column_mask.size();
  auto* base = static_cast<std::byte*>(ctx.scratch(ints * sizeof(std::int64_t) + static_cast<std::size_t>(n) * sizeof(double)));
  const std::int64_t* d_labels = cuda::detail::upload_ints(ctx, base, 0, labels.first(static_cast<std::size_t>(n)));
  const std::int64_t* d_counted = cuda::detail::upload_ints(ctx, base, static_cast<std::size_t>(n) * 8, counted);
  const std::int64_t* d_mask =
      column_mask.empty() ? nullptr : cuda::detail::upload_ints(ctx, base, static_cast<std::size_t>(2 * n) * 8, column_mask);
  auto* losses = reinterpret_cast<double*>(base + ints * sizeof(std::int64_t));
  const dim3 block(cuda::detail::kWarp, cuda::detail::kRowsPerBlock);
  cuda::detail::cross_entropy_kernel<<<cuda::detail::blocks_for(n, cuda::detail::kRowsPerBlock), block, 0, ctx.stream()>>>(
      d_logits.empty() ? nullptr : d_logits.data(), losses, logits.data(), d_labels, d_counted, d_mask, n, c,
      static_cast<float>(count));
  cuda::check_launch("cross_entropy_kernel");
  const double total = cuda::detail::sum_on_host(ctx, losses, n);
  return count ? static_cast<T>(total / static_cast<double>(count)) : T(0);
}

/// @brief Mean binary cross-entropy with logits over all N·C elements and its gradient.
template <class T>
T bce_with_logits(Cuda, MatrixView<T> d_logits, MatrixView<const T> logits, MatrixView<const T> targets) {
  const std::int64_t total = logits.size();
  if (total == 0) return T(0);
  auto& ctx = cuda::context();
  auto* losses = static_cast<double*>(ctx.scratch(static_cast<std::size_t>(total) * sizeof(double)));
  cuda::detail::bce_kernel<<<cuda::detail::blocks_for(total, 256), 256, 0, ctx.stream()>>>(
      d_logits.empty() ? nullptr : d_logits.data(), losses, logits.data(), targets.data(), total);
  cuda::check_launch("bce_kernel");
  return static_cast<T>(cuda::detail::sum_on_host(ctx, losses, total) / static_cast<double>(total));
}

}  // namespace kadapter
