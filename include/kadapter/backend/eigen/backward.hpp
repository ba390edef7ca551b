/// @file backward.hpp
/// @brief CPU backward kernels (Eigen) for the trainable parts: adapters and task heads.
///
/// Derivations are in docs/backward.md; each function is checked against finite
/// differences in double precision (tests/layers). Parameter gradients accumulate; the
/// activation gradient is written according to its GradientMode.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

#include <Eigen/Core>

#include "kadapter/backend/eigen/kernels.hpp"
#include "kadapter/core/error.hpp"
#include "kadapter/core/gradient_mode.hpp"

namespace kadapter {

/// @brief `bias_grad += column sums of d_out`; columns split over the kernel threads, rows
/// summed in order, so the result does not depend on the thread count.
template <class T>
void accumulate_bias_grad(T* bias_grad, MatrixView<const T> d_out) {
  const index_t rows = d_out.extent(0), width = d_out.extent(1);
  parallel_chunks(width, 64, [&](index_t begin, index_t end, index_t) {
    for (index_t r = 0; r < rows; ++r) {
      const T* row = d_out.data() + r * width;
      for (index_t j = begin; j < end; ++j) bias_grad[j] += row[j];
    }
  });
}

/// @brief Backward of `out = in · W^T + b`.
///
/// dW += d_out^T · in, db += column sums of d_out, d_in (=|+=) d_out · W.
/// @param[out] d_in (N, in_features), written per @p in_mode
/// @param[in,out] grads accumulated parameter gradients, or nullptr for a frozen layer
/// @param d_out (N, out_features)
/// @param in (N, in_features) the forward input
/// @param p the forward parameters
template <class T>
void linear_backward(Cpu, MatrixView<T> d_in, GradientMode in_mode,
                     const std::type_identity_t<LinearGrads<T>>* grads,
                     MatrixView<const T> d_out, MatrixView<const T> in,
                     const LinearParams<T>& p) {
  if (grads) {
    detail::matmul(grads->weight.matrix(), d_out.matrix().transpose(), in.matrix(), true);
    if (!grads->bias.empty()) accumulate_bias_grad(grads->bias.data(), d_out);
  }
  if (in_mode != GradientMode::Ignore)
    detail::matmul(d_in.matrix(), d_out.matrix(), p.weight.matrix(), in_mode == GradientMode::Accumulate);
}

/// @brief `out = concat(in_0, ..., in_{K-1}) · W^T + b` without forming the concatenation:
/// W's columns are split in K blocks of the inputs' widths.
/// @param[out] out (N, out_features)
/// @param inputs K views (N, w_k) with sum of w_k = in_features
template <class T>
void linear_concat_forward(Cpu, MatrixView<T> out, std::span<const MatrixView<const T>> inputs,
                           const LinearParams<T>& p) {
  auto y = out.matrix();
  const auto w = p.weight.matrix();
  index_t col = 0;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const index_t width = inputs[k].extent(1);
    detail::matmul(y, inputs[k].matrix(), w.middleCols(col, width).transpose(), k > 0);
    col += width;
  }
  KA_ASSERT(col == p.in_features());
  if (!p.bias.empty()) y.rowwise() += p.bias.vector().transpose();
}

/// @brief Backward of linear_concat_forward: each d_inputs[k] written per @p mode (an empty
/// view skips that input).
template <class T>
void linear_concat_backward(Cpu, std::span<const MatrixView<T>> d_inputs, GradientMode mode,
                            const std::type_identity_t<LinearGrads<T>>* grads,
                            MatrixView<const T> d_out,
                            std::span<const MatrixView<const T>> inputs,
                            const LinearParams<T>& p) {
  const auto w = p.weight.matrix();
  index_t col = 0;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    const index_t width = inputs[k].extent(1);
    if (grads)
      detail::matmul(grads->weight.matrix().middleCols(col, width), d_out.matrix().transpose(),
                     inputs[k].matrix(), true);
    if (!d_inputs[k].empty() && mode != GradientMode::Ignore)
      detail::matmul(d_inputs[k].matrix(), d_out.matrix(), w.middleCols(col, width),
                     mode == GradientMode::Accumulate);
    col += width;
  }
  if (grads && !grads->bias.empty()) accumulate_bias_grad(grads->bias.data(), d_out);
}

/// @brief Backward of `y = LN(x)` (x may be a residual sum a + b).
///
/// With xhat = (x - mean) · rstd and g = d_y ∘ gamma:
/// `d_x = rstd · (g - mean(g) - xhat · mean(g ∘ xhat))`,
/// d_gamma += Σ_rows d_y ∘ xhat, d_beta += Σ_rows d_y.
/// @param[out] d_in (N, H), written per @p mode; may alias @p d_out when mode is Overwrite
template <class T>
void layernorm_backward(Cpu, MatrixView<T> d_in, GradientMode mode,
                        const std::type_identity_t<LayerNormGrads<T>>* grads,
                        MatrixView<const T> d_out, const LayerNormCache<T>& cache,
                        const LayerNormParams<T>& p) {
  const index_t rows = d_out.extent(0), width = d_out.extent(1);
  const T* gamma = p.gamma.data();
  if (grads) {
    T* dg = grads->gamma.data();
    T* db = grads->beta.data();
    parallel_chunks(width, 64, [&](index_t begin, index_t end, index_t) {
      for (index_t r = 0; r < rows; ++r) {
        const T* dy = d_out.data() + r * width;
        const T* xh = cache.xhat.data() + r * width;
        for (index_t j = begin; j < end; ++j) {
          dg[j] += dy[j] * xh[j];
          db[j] += dy[j];
        }
      }
    });
  }
  if (mode == GradientMode::Ignore) return;
  const T inv_width = T(1) / static_cast<T>(width);
  parallel_chunks(rows, 16, [&](index_t first, index_t last, index_t) {
  for (index_t r = first; r < last; ++r) {
    const T* dy = d_out.data() + r * width;
    const T* xh = cache.xhat.data() + r * width;
    T* dx = d_in.data() + r * width;
    // Σ dy·γ and Σ dy·γ·x̂ as packet sums in a fixed order.
    T mean_g = 0, mean_gx = 0;
    {
      namespace ei = Eigen::internal;
      using Packet = typename ei::packet_traits<T>::type;
      constexpr index_t w = ei::packet_traits<T>::size;
      Packet sg = ei::pset1<Packet>(T(0)), sgx = sg;
      index_t j = 0;
      for (const index_t whole = width / w * w; j < whole; j += w) {
        const Packet g = ei::pmul(ei::ploadu<Packet>(dy + j), ei::ploadu<Packet>(gamma + j));
        sg = ei::padd(sg, g);
        sgx = ei::pmadd(g, ei::ploadu<Packet>(xh + j), sgx);
      }
      if (j < width) {
        alignas(64) T pg[w], px[w];
        for (index_t l = 0; l < w; ++l) {
          pg[l] = j + l < width ? dy[j + l] * gamma[j + l] : T(0);
          px[l] = j + l < width ? xh[j + l] : T(0);
        }
        const Packet g = ei::pload<Packet>(pg);
        sg = ei::padd(sg, g);
        sgx = ei::pmadd(g, ei::pload<Packet>(px), sgx);
      }
      mean_g = ei::predux(sg) * inv_width;
      mean_gx = ei::predux(sgx) * inv_width;
    }
    const T rstd = cache.rstd.data()[r];
    for (index_t j = 0; j < width; ++j) {
      const T v = rstd * (dy[j] * gamma[j] - mean_g - xh[j] * mean_gx);
      dx[j] = mode == GradientMode::Overwrite ? v : dx[j] + v;
    }
  }
  });
}

/// @brief Backward of erf-GELU in place: `d ← d · (Φ(x) + x · φ(x))`.
/// @param[in,out] d (N) gradient of the GELU output in, of its input out
/// @param pre (N) the GELU input x
template <class T>
void gelu_backward_inplace(Cpu, std::span<T> d, std::span<const T> pre) {
  const T inv_sqrt2 = static_cast<T>(0.70710678118654752440);
  const T inv_sqrt_2pi = static_cast<T>(0.39894228040143267794);
  if constexpr (std::is_same_v<T, float>) {  // vectorised erf and exp, as in gelu_inplace
    constexpr index_t w = detail::packet_size<T>();
    const index_t n = static_cast<index_t>(d.size()), packets = (n + w - 1) / w;
    parallel_chunks(packets, 4096 / w, [&](index_t begin, index_t end, index_t) {
      const index_t first = begin * w, last = std::min(end * w, n);
      detail::packet_apply(last - first, [](const auto& g, const auto& x) { return detail::gelu_grad_packet<T>(g, x); },
                           d.data() + first, static_cast<const T*>(d.data() + first), pre.data() + first);
    });
    return;
  }
  for (std::size_t i = 0; i < d.size(); ++i) {
    const T x = pre[i];
    const T cdf = T(0.5) * (T(1) + std::erf(x * inv_sqrt2));
    const T pdf = inv_sqrt_2pi * std::exp(T(-0.5) * x * x);
    d[i] *= cdf + x * pdf;
  }
}

/// @brief Backward of bias_gelu_forward in one pass: `d ← d · GELU'(pre)`, then
/// `bias_grad += column sums of d`. Columns are split over the threads and rows summed in
/// order, so the result equals gelu_backward_inplace followed by the bias gradient of
/// linear_backward.
/// @param[in,out] d (N, F) gradient of the GELU output in, of its input out
/// @param pre (N, F) the GELU input
/// @param bias_grad (F) accumulated, or nullptr for a frozen layer
template <class T>
void bias_gelu_backward(Cpu, MatrixView<T> d, MatrixView<const T> pre, T* bias_grad) {
  const index_t rows = d.extent(0), width = d.extent(1);
  const T inv_sqrt2 = static_cast<T>(0.70710678118654752440);
  const T inv_sqrt_2pi = static_cast<T>(0.39894228040143267794);
  // Columns split over the threads in whole packets (see detail::packet_apply).
  constexpr index_t pw = detail::packet_size<T>();
  parallel_chunks((width + pw - 1) / pw, std::max<index_t>(1, 64 / pw), [&](index_t first, index_t last, index_t) {
    using Arr = Eigen::Array<T, 1, Eigen::Dynamic>;
    const index_t begin = first * pw, w = std::min(last * pw, width) - begin;
    for (index_t r = 0; r < rows; ++r) {
      Eigen::Map<Arr> g(d.data() + r * width + begin, w);
      Eigen::Map<const Arr> x(pre.data() + r * width + begin, w);
      if constexpr (std::is_same_v<T, float>) {
        detail::packet_apply(w, [](const auto& gp, const auto& xp) { return detail::gelu_grad_packet<T>(gp, xp); },
                             g.data(), static_cast<const T*>(g.data()), x.data());
      } else {
        for (index_t j = 0; j < w; ++j) {
          const T cdf = T(0.5) * (T(1) + std::erf(x(j) * inv_sqrt2));
          const T pdf = inv_sqrt_2pi * std::exp(T(-0.5) * x(j) * x(j));
          g(j) *= cdf + x(j) * pdf;
        }
      }
      if (bias_grad)
        for (index_t j = 0; j < w; ++j) bias_grad[begin + j] += g(j);
    }
  });
}

/// @brief Backward of attention_forward.
///
/// Per sequence b and head h, with P the probabilities (before dropout), P' = dropout(P):
/// `dV = P'^T dC`, `dP' = dC V^T`, `dP = dropout(dP')`,
/// `dS = P ∘ (dP - rowsum(dP ∘ P))`, `dQ = dS K / sqrt(d)`, `dK = dS^T Q / sqrt(d)`.
/// @param[out] d_q, d_k, d_v (B*T, H), overwritten
/// @param d_ctx (B*T, H)
/// @param probs (B, A, T, T) as saved by the forward pass
/// @param scratch at least attention_scratch(T) elements
template <class T>
void attention_backward(Cpu, MatrixView<T> d_q, MatrixView<T> d_k, MatrixView<T> d_v,
                        MatrixView<const T> d_ctx, MatrixView<const T> q, MatrixView<const T> k,
                        MatrixView<const T> v, const T* probs, index_t batch, index_t seq,
                        index_t heads, T* scratch, const Dropout* dropout = nullptr) {
  const index_t width = q.extent(1);
  const index_t d = width / heads;
  const T inv_scale = T(1) / std::sqrt(static_cast<T>(d));
  using detail::ConstStridedMap;
  using detail::StridedMap;
  using Mat = detail::RowMajorMatrix<T>;
  const Eigen::OuterStride<> stride(width);
  const bool drop = dropout && dropout->active();
  const DropoutMask<T> drop_mask(drop ? *dropout : Dropout{});
  parallel_chunks(batch * heads, 1, [&, drop_mask](index_t first, index_t last, index_t thread) {
  T* scratch_t = scratch + thread * attention_scratch_per_thread(seq);
  for (index_t bh_ = first; bh_ < last; ++bh_) {
    {
      const index_t b = bh_ / heads, h = bh_ % heads;
      const index_t offset = b * seq * width + h * d;
      ConstStridedMap<T> qh(q.data() + offset, seq, d, stride);
      ConstStridedMap<T> kh(k.data() + offset, seq, d, stride);
      ConstStridedMap<T> vh(v.data() + offset, seq, d, stride);
      ConstStridedMap<T> dch(d_ctx.data() + offset, seq, d, stride);
      StridedMap<T> dqh(d_q.data() + offset, seq, d, stride);
      StridedMap<T> dkh(d_k.data() + offset, seq, d, stride);
      StridedMap<T> dvh(d_v.data() + offset, seq, d, stride);
      const T* pptr = probs + (b * heads + h) * seq * seq;
      Eigen::Map<const Mat> P(pptr, seq, seq);
      Eigen::Map<Mat> dP(scratch_t, seq, seq);
      Eigen::Map<Mat> work(scratch_t + seq * seq, seq, seq);
      const auto bh = static_cast<std::uint64_t>(b * heads + h);
      if (drop) {
        for (index_t i = 0; i < seq; ++i)
          drop_mask.apply(work.data() + i * seq, pptr + i * seq, score_element(bh, static_cast<std::uint64_t>(i), 0), seq);
        detail::matmul(dvh, work.transpose(), dch, false);
      } else {
        detail::matmul(dvh, P.transpose(), dch, false);
      }
      detail::matmul(dP, dch, vh.transpose(), false);
      if (drop)
        for (index_t i = 0; i < seq; ++i)
          drop_mask.apply(dP.data() + i * seq, dP.data() + i * seq, score_element(bh, static_cast<std::uint64_t>(i), 0), seq);
      // dS = P ∘ (dP - rowsum(dP ∘ P)), scaled by 1/sqrt(d) (the score scaling).
      for (index_t i = 0; i < seq; ++i) {
        const T* pr = pptr + i * seq;
        const T* dpr = dP.data() + i * seq;
        T* wr = work.data() + i * seq;
        const T dot = detail::packet_dot(dpr, pr, seq);
        for (index_t j = 0; j < seq; ++j) wr[j] = pr[j] * (dpr[j] - dot) * inv_scale;
      }
      detail::matmul(dqh, work, kh, false);
      detail::matmul(dkh, work.transpose(), qh, false);
    }
  }
  });
}

/// @brief `out[b] = Σ_t weights[b, t] · features[b, t]`: the authors' `bmm` of a one-hot
/// row with the features (any weights work).
/// @param[out] out (B, H)
/// @param weights (B, T)
/// @param features (B*T, H)
template <class T>
void weighted_rows_forward(Cpu, MatrixView<T> out, MatrixView<const T> weights,
                           MatrixView<const T> features) {
  const index_t batch = weights.extent(0), seq = weights.extent(1), width = features.extent(1);
  for (index_t b = 0; b < batch; ++b) {
    Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>> w(weights.data() + b * seq, seq);
    Eigen::Map<const detail::RowMajorMatrix<T>> f(features.data() + b * seq * width, seq, width);
    Eigen::Map<Eigen::Matrix<T, 1, Eigen::Dynamic>> o(out.data() + b * width, width);
    o.noalias() = w * f;
  }
}

/// @brief Backward of weighted_rows_forward: `d_features[b, t] += weights[b, t] · d_out[b]`.
template <class T>
void weighted_rows_backward(Cpu, MatrixView<T> d_features, MatrixView<const T> d_out,
                            MatrixView<const T> weights) {
  const index_t batch = weights.extent(0), seq = weights.extent(1), width = d_out.extent(1);
  for (index_t b = 0; b < batch; ++b) {
    Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>> w(weights.data() + b * seq, seq);
    Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>> g(d_out.data() + b * width, width);
    Eigen::Map<detail::RowMajorMatrix<T>> df(d_features.data() + b * seq * width, seq, width);
    df.noalias() += w * g;
  }
}

/// @brief Mean softmax cross-entropy over the counted rows, and its gradient.
///
/// Row r counts when `row_weight` is empty or row_weight[r] != 0, and labels[r] != -100
/// (PyTorch's ignore_index). Columns with `column_mask[r, c] == 0` (when given) are left out
/// of the softmax. `d_logits = (softmax - onehot) / count` for counted rows, 0 elsewhere.
/// @param[out] d_logits (N, C), overwritten (may be empty to skip the gradient)
/// @param logits (N, C)
/// @param labels (N), each in [0, C) or -100
/// @param row_weight (N) 0/1 per row, or empty for all rows
/// @param column_mask (N, C) 0/1, or empty for none
/// @return the mean loss (0 when no row counts)
/// @throws Error when a counted label is outside [0, C) or on a masked column
template <class T>
T cross_entropy(Cpu, MatrixView<T> d_logits, MatrixView<const T> logits,
                std::span<const std::int64_t> labels, std::span<const std::int64_t> row_weight = {},
                std::span<const std::int64_t> column_mask = {}) {
  const index_t n = logits.extent(0), c = logits.extent(1);
  index_t count = 0;
  for (index_t r = 0; r < n; ++r)
    if ((row_weight.empty() || row_weight[r] != 0) && labels[r] != -100) ++count;
  double total = 0;
  for (index_t r = 0; r < n; ++r) {
    T* dr = d_logits.empty() ? nullptr : d_logits.data() + r * c;
    const bool counted = (row_weight.empty() || row_weight[r] != 0) && labels[r] != -100;
    if (!counted) {
      if (dr) std::fill(dr, dr + c, T(0));
      continue;
    }
    const std::int64_t y = labels[r];
    const std::int64_t* cm = column_mask.empty() ? nullptr : column_mask.data() + r * c;
    if (y < 0 || y >= c || (cm && cm[y] == 0))
      throw Error("label " + std::to_string(y) + " of row " + std::to_string(r) +
                  " is outside the " + std::to_string(c) + " classes" +
                  (cm ? " or on a masked column" : ""));
    const T* x = logits.data() + r * c;
    T mx = std::numeric_limits<T>::lowest();
    for (index_t j = 0; j < c; ++j)
      if (!cm || cm[j]) mx = std::max(mx, x[j]);
    T sum = 0;
    for (index_t j = 0; j < c; ++j)
      if (!cm || cm[j]) sum += std::exp(x[j] - mx);
    total += static_cast<double>(std::log(sum) + mx - x[y]);
    if (dr) {
      const T inv = T(1) / (sum * static_cast<T>(count));
      for (index_t j = 0; j < c; ++j) dr[j] = (!cm || cm[j]) ? std::exp(x[j] - mx) * inv : T(0);
      dr[y] -= T(1) / static_cast<T>(count);
    }
  }
  return count ? static_cast<T>(total / static_cast<double>(count)) : T(0);
}

/// @brief Mean binary cross-entropy with logits over all N·C elements, and its gradient
/// `d = (sigmoid(x) - y) / (N·C)`.
/// @param[out] d_logits (N, C), overwritten (may be empty)
/// @param targets (N, C) in [0, 1]
template <class T>
T bce_with_logits(Cpu, MatrixView<T> d_logits, MatrixView<const T> logits,
                  MatrixView<const T> targets) {
  const index_t total = logits.size();
  double loss = 0;
  for (index_t i = 0; i < total; ++i) {
    const T x = logits.data()[i], y = targets.data()[i];
    // max(x, 0) - x y + log(1 + exp(-|x|)): stable for large |x|
    loss += static_cast<double>(std::max(x, T(0)) - x * y + std::log1p(std::exp(-std::abs(x))));
    if (!d_logits.empty()) {
      const T s = x >= 0 ? T(1) / (T(1) + std::exp(-x)) : std::exp(x) / (T(1) + std::exp(x));
      d_logits.data()[i] = (s - y) / static_cast<T>(total);
    }
  }
  return static_cast<T>(loss / static_cast<double>(total));
}

}  // namespace kadapter
