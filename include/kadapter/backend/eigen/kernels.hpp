/// @file kernels.hpp
/// @brief CPU reference kernels (Eigen) for the encoder's forward pass.
///
/// Every function takes the backend tag `Cpu` first, then follows the house argument order:
/// outputs, saved state, inputs, parameters, sizes. Kernels work on run-time extents; the
/// models check compile-time extents before calling them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <type_traits>

#include <Eigen/Core>
#include <unsupported/Eigen/SpecialFunctions>

#include "kadapter/backend/eigen/gemm.hpp"
#include "kadapter/core/backend.hpp"
#include "kadapter/core/gradient_mode.hpp"
#include "kadapter/core/parallel.hpp"
#include "kadapter/core/random.hpp"
#include "kadapter/core/tensor.hpp"
#include "kadapter/layers/embeddings.hpp"
#include "kadapter/layers/layernorm.hpp"
#include "kadapter/layers/linear.hpp"

namespace kadapter {

namespace detail {
template <class T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using StridedMap = Eigen::Map<RowMajorMatrix<T>, 0, Eigen::OuterStride<>>;
template <class T>
using ConstStridedMap = Eigen::Map<const RowMajorMatrix<T>, 0, Eigen::OuterStride<>>;

/// @brief `dst = lhs · rhs` (@p accumulate false) or `dst += lhs · rhs`: the products of the
/// linear layers, forward and backward.
///
/// fp32 products with a row-major destination go to the backend's own kernel (gemm.hpp) where
/// the build has one. Other products go to Eigen; large ones are cut into one block of the
/// output per kernel thread (columns in multiples of 48, else rows in multiples of 8), each
/// computed by Eigen's single-threaded product: Eigen's own threading shares packed panels
/// between threads and waits on them, which loses 10-15 % on two cores at the model's shapes.
/// Products too small to split run on one thread of a team, so that Eigen takes its serial
/// path. Either way every output element is one dot product over the full depth in a fixed
/// order, so the result does not depend on the number of threads (on the Eigen path, as long
/// as OpenMP gives at least two of the threads asked for: with a team of one, Eigen threads
/// the product itself and blocks it for the count asked for).
template <class Dst, class Lhs, class Rhs>
void matmul(Dst&& dst, const Lhs& lhs, const Rhs& rhs, bool accumulate) {
  const index_t rows = dst.rows(), cols = dst.cols(), depth = lhs.cols();
#if KADAPTER_OWN_SGEMM
  using Scalar = typename std::remove_cvref_t<Dst>::Scalar;
  if constexpr (std::is_same_v<Scalar, float>) {
    if (dst.colStride() == 1) {
      sgemm(rows, cols, depth, lhs.data(), lhs.rowStride(), lhs.colStride(), rhs.data(), rhs.rowStride(),
            rhs.colStride(), dst.data(), dst.rowStride(), accumulate);
      return;
    }
  }
#endif
  const auto run = [&](auto&& d, const auto& l, const auto& r) {
    if (accumulate) {
      d.noalias() += l * r;
    } else {
      d.noalias() = l * r;
    }
  };
#if defined(_OPENMP)
  const index_t nt = kernel_threads();
  constexpr index_t col_block = 48, row_block = 8;
  const bool large = static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(depth) >= 4.0e6;
  // Eigen threads a product only from 2 × 50,000 multiply-adds on (Parallelizer.h): below
  // that it is serial anyway and needs no team.
  const bool eigen_would_thread = static_cast<double>(rows) * static_cast<double>(cols) * static_cast<double>(depth) >= 1.0e5;
  if (nt > 1 && eigen_would_thread && !omp_in_parallel()) {
    const bool by_cols = cols >= nt * col_block * 2;
    const index_t units = by_cols ? (cols + col_block - 1) / col_block : (rows + row_block - 1) / row_block;
    const bool split = large && units >= nt;
    ParallelError error;  // Eigen may allocate: a bad_alloc reaches the caller
#pragma omp parallel num_threads(static_cast<int>(nt))
    error.run([&] {
      // The team may be smaller than asked for (OMP_THREAD_LIMIT, dynamic threads): split
      // over the threads there are.
      const index_t t = omp_get_thread_num(), team = omp_get_num_threads();
      if (split) {
        const index_t unit = by_cols ? col_block : row_block, extent = by_cols ? cols : rows;
        const index_t begin = std::min(extent, units * t / team * unit);
        const index_t end = std::min(extent, units * (t + 1) / team * unit);
        if (end > begin) {
          if (by_cols) {
            run(dst.middleCols(begin, end - begin), lhs, rhs.middleCols(begin, end - begin));
          } else {
            run(dst.middleRows(begin, end - begin), lhs.middleRows(begin, end - begin), rhs);
          }
        }
      } else if (t == 0) {
        // Too small to split: one thread of the team computes it, so Eigen takes its serial
        // path (its own threading would block the product differently per thread count).
        run(dst, lhs, rhs);
      }
    });
    error.rethrow();
    return;
  }
#else
  (void)rows;
  (void)cols;
  (void)depth;
#endif
  run(dst, lhs, rhs);
}

// GCC 12 warns that the pass-through operand of _mm512_min_ps / _mm512_max_ps (its own
// _mm512_undefined_ps) is used uninitialised when Eigen's vector exp and erf are inlined here
// (GCC bug 105593, a false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

/// @brief `out[j] = f(in[j]...)` for j < @p n, where @p f maps Eigen packets to a packet.
///
/// Every element goes through @p f on packets: whole packets from the start, the last partial
/// one through a zero-padded copy. An element's result therefore depends only on its inputs,
/// not on its address or on where a thread's chunk begins. (Eigen's own loops take scalar
/// steps up to an aligned address, and its scalar erf and exp differ from the vector ones in
/// the last bits: a thread's chunk starting elsewhere changed the results.) Chunks given to
/// threads should start at multiples of packet_size<T>() to keep whole packets whole.
template <class T, class F, class... In>
void packet_apply(index_t n, F&& f, T* out, const In*... in) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  constexpr index_t w = ei::packet_traits<T>::size;
  index_t j = 0;
  for (; j + w <= n; j += w) ei::pstoreu(out + j, f(ei::ploadu<Packet>(in + j)...));
  if (j < n) {
    const index_t rest = n - j;
    auto padded = [&](const T* src) {
      alignas(64) T buf[w];
      for (index_t l = 0; l < w; ++l) buf[l] = l < rest ? src[j + l] : T(0);
      return ei::pload<Packet>(buf);
    };
    alignas(64) T res[w];
    ei::pstore(res, f(padded(in)...));
    for (index_t l = 0; l < rest; ++l) out[j + l] = res[l];
  }
}

/// @brief `Σ_j a[j] · b[j]` for j < @p n, on packets: whole packets from the start multiplied
/// and added into one accumulator, the last partial one through zero-padded copies, then the
/// packet's lanes summed. The order of operations depends only on @p n, not on the addresses.
template <class T>
T packet_dot(const T* a, const T* b, index_t n) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  constexpr index_t w = ei::packet_traits<T>::size;
  Packet acc = ei::pset1<Packet>(T(0));
  index_t j = 0;
  for (const index_t whole = n / w * w; j < whole; j += w)
    acc = ei::pmadd(ei::ploadu<Packet>(a + j), ei::ploadu<Packet>(b + j), acc);
  if (j < n) {
    alignas(64) T pa[w], pb[w];
    for (index_t l = 0; l < w; ++l) {
      pa[l] = j + l < n ? a[j + l] : T(0);
      pb[l] = j + l < n ? b[j + l] : T(0);
    }
    acc = ei::pmadd(ei::pload<Packet>(pa), ei::pload<Packet>(pb), acc);
  }
  return ei::predux(acc);
}

/// @brief `Σ_j x[j]` for j < @p n, in the order of packet_dot.
template <class T>
T packet_sum(const T* x, index_t n) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  constexpr index_t w = ei::packet_traits<T>::size;
  Packet acc = ei::pset1<Packet>(T(0));
  index_t j = 0;
  for (const index_t whole = n / w * w; j < whole; j += w) acc = ei::padd(acc, ei::ploadu<Packet>(x + j));
  if (j < n) {
    alignas(64) T px[w];
    for (index_t l = 0; l < w; ++l) px[l] = j + l < n ? x[j + l] : T(0);
    acc = ei::padd(acc, ei::pload<Packet>(px));
  }
  return ei::predux(acc);
}

/// @brief `Σ_j (x[j] - c)²` for j < @p n, in the order of packet_dot (the tail padded with
/// @p c, which adds nothing).
template <class T>
T packet_sum_sq_dev(const T* x, T c, index_t n) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  constexpr index_t w = ei::packet_traits<T>::size;
  const Packet pc = ei::pset1<Packet>(c);
  Packet acc = ei::pset1<Packet>(T(0));
  index_t j = 0;
  for (const index_t whole = n / w * w; j < whole; j += w) {
    const Packet d = ei::psub(ei::ploadu<Packet>(x + j), pc);
    acc = ei::pmadd(d, d, acc);
  }
  if (j < n) {
    alignas(64) T px[w];
    for (index_t l = 0; l < w; ++l) px[l] = j + l < n ? x[j + l] : c;
    const Packet d = ei::psub(ei::pload<Packet>(px), pc);
    acc = ei::pmadd(d, d, acc);
  }
  return ei::predux(acc);
}

/// @brief Elements per Eigen packet of @p T.
template <class T>
constexpr index_t packet_size() noexcept {
  return Eigen::internal::packet_traits<T>::size;
}

/// @brief `x · (1 + erf(x / sqrt 2)) / 2` on a packet (Eigen's vectorised erf).
template <class T, class Packet = typename Eigen::internal::packet_traits<T>::type>
Packet gelu_packet(const Packet& x) {
  namespace ei = Eigen::internal;
  const Packet half = ei::pset1<Packet>(T(0.5)), one = ei::pset1<Packet>(T(1));
  const Packet inv_sqrt2 = ei::pset1<Packet>(static_cast<T>(0.70710678118654752440));
  return ei::pmul(ei::pmul(x, half), ei::padd(one, ei::scalar_erf_op<T>().packetOp(ei::pmul(x, inv_sqrt2))));
}

/// @brief `g · (Φ(x) + x · φ(x))` on packets: the GELU backward.
template <class T, class Packet = typename Eigen::internal::packet_traits<T>::type>
Packet gelu_grad_packet(const Packet& g, const Packet& x) {
  namespace ei = Eigen::internal;
  const Packet half = ei::pset1<Packet>(T(0.5)), one = ei::pset1<Packet>(T(1));
  const Packet inv_sqrt2 = ei::pset1<Packet>(static_cast<T>(0.70710678118654752440));
  const Packet inv_sqrt_2pi = ei::pset1<Packet>(static_cast<T>(0.39894228040143267794));
  const Packet cdf = ei::pmul(half, ei::padd(one, ei::scalar_erf_op<T>().packetOp(ei::pmul(x, inv_sqrt2))));
  const Packet pdf = ei::pmul(ei::pmul(x, inv_sqrt_2pi), ei::pexp(ei::pmul(ei::pset1<Packet>(T(-0.5)), ei::pmul(x, x))));
  return ei::pmul(g, ei::padd(cdf, pdf));
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}  // namespace detail

/// @brief `y[r] += bias` for every row, rows split over the kernel threads.
template <class T>
void add_bias_rows(MatrixView<T> y, const T* bias) {
  const index_t width = y.extent(1);
  parallel_chunks(y.extent(0), 32, [&](index_t begin, index_t end, index_t) {
    for (index_t r = begin; r < end; ++r) {
      T* row = y.data() + r * width;
      for (index_t j = 0; j < width; ++j) row[j] += bias[j];
    }
  });
}

/// @brief `out = in · W^T + b`.
/// @param[out] out (N, out_features)
/// @param in (N, in_features)
/// @param p weight (out_features, in_features), bias (out_features) or empty
template <class T>
void linear_forward(Cpu, MatrixView<T> out, MatrixView<const T> in, const LinearParams<T>& p) {
  KA_ASSERT(in.extent(1) == p.in_features() && out.extent(1) == p.out_features());
  KA_ASSERT(in.extent(0) == out.extent(0));
  detail::matmul(out.matrix(), in.matrix(), p.weight.matrix().transpose(), false);
  if (!p.bias.empty()) add_bias_rows(out, p.bias.data());
}

/// @brief Row-wise LayerNorm of `a + b` (b may be empty): the residual join of a post-LN layer.
/// @param[out] out (N, H); may alias @p a or @p b
/// @param[out] cache normalised input and rstd per row, or nullptr when no backward follows
/// @param a (N, H)
/// @param b (N, H) or an empty view
/// @param p gamma and beta, (H) each
/// @param eps added to the variance
template <class T>
void add_layernorm_forward(Cpu, MatrixView<T> out, std::type_identity_t<LayerNormCache<T>>* cache, MatrixView<const T> a,
                           MatrixView<const T> b, const LayerNormParams<T>& p, T eps) {
  const index_t rows = a.extent(0), width = a.extent(1);
  KA_ASSERT(out.extent(0) == rows && out.extent(1) == width && p.gamma.size() == width);
  KA_ASSERT(b.empty() || (b.extent(0) == rows && b.extent(1) == width));
  const T* g = p.gamma.data();
  const T* be = p.beta.data();
  parallel_chunks(rows, 16, [&](index_t first, index_t last, index_t) {
  for (index_t r = first; r < last; ++r) {
    const T* x = a.data() + r * width;
    const T* y = b.empty() ? nullptr : b.data() + r * width;
    T* o = out.data() + r * width;
    // Sum first (out may alias a or b), then two-pass mean and biased variance, each a
    // packet sum in a fixed order (a scalar sum is one long dependency chain).
    if (y) {
      for (index_t j = 0; j < width; ++j) o[j] = x[j] + y[j];
    } else if (o != x) {
      std::copy(x, x + width, o);
    }
    const T mean = detail::packet_sum(o, width) / static_cast<T>(width);
    const T var = detail::packet_sum_sq_dev(o, mean, width) / static_cast<T>(width);
    const T rstd = T(1) / std::sqrt(var + eps);
    if (cache) {
      T* xhat = cache->xhat.data() + r * width;
      for (index_t j = 0; j < width; ++j) {
        xhat[j] = (o[j] - mean) * rstd;
        o[j] = xhat[j] * g[j] + be[j];
      }
      cache->rstd.data()[r] = rstd;
    } else {
      for (index_t j = 0; j < width; ++j) o[j] = (o[j] - mean) * rstd * g[j] + be[j];
    }
  }
  });
}

/// @brief Row-wise LayerNorm.
template <class T>
void layernorm_forward(Cpu, MatrixView<T> out, std::type_identity_t<LayerNormCache<T>>* cache, MatrixView<const T> in,
                       const LayerNormParams<T>& p, T eps) {
  add_layernorm_forward(Cpu{}, out, cache, in, MatrixView<const T>{}, p, eps);
}

/// @brief GELU, erf form: `x · (1 + erf(x / sqrt 2)) / 2`, in place.
template <class T>
void gelu_inplace(Cpu, std::span<T> x) {
  const T inv_sqrt2 = static_cast<T>(0.70710678118654752440);
  if constexpr (std::is_same_v<T, float>) {
    // Eigen's vectorised float erf (within a few ulp of std::erf) instead of a scalar call
    // per element: the GELU otherwise costs as much as the FFN's matrix product. Chunks of
    // whole packets, so the result does not depend on the thread count.
    constexpr index_t w = detail::packet_size<T>();
    const index_t packets = (static_cast<index_t>(x.size()) + w - 1) / w;
    parallel_chunks(packets, 4096 / w, [&](index_t begin, index_t end, index_t) {
      const index_t first = begin * w, last = std::min(end * w, static_cast<index_t>(x.size()));
      detail::packet_apply(last - first, [](const auto& p) { return detail::gelu_packet<T>(p); }, x.data() + first,
                           static_cast<const T*>(x.data() + first));
    });
  } else {
    parallel_chunks(static_cast<index_t>(x.size()), 4096, [&](index_t begin, index_t end, index_t) {
      for (index_t i = begin; i < end; ++i) x[static_cast<std::size_t>(i)] = x[static_cast<std::size_t>(i)] * T(0.5) * (T(1) + std::erf(x[static_cast<std::size_t>(i)] * inv_sqrt2));
    });
  }
}

/// @brief The FFN's bias and erf-GELU in one pass: `pre += bias`, `act = GELU(pre)`.
/// @param[in,out] pre (N, F) the product without bias in, the GELU input out
/// @param[out] act (N, F); may be @p pre itself when the input need not be kept
/// @param bias (F)
template <class T>
void bias_gelu_forward(Cpu, MatrixView<T> pre, MatrixView<T> act, const T* bias) {
  const index_t rows = pre.extent(0), width = pre.extent(1);
  const T inv_sqrt2 = static_cast<T>(0.70710678118654752440);
  parallel_chunks(rows, 8, [&](index_t begin, index_t end, index_t) {
    using Arr = Eigen::Array<T, 1, Eigen::Dynamic>;
    Eigen::Map<const Arr> b(bias, width);
    for (index_t r = begin; r < end; ++r) {
      Eigen::Map<Arr> x(pre.data() + r * width, width);
      Eigen::Map<Arr> y(act.data() + r * width, width);
      x += b;
      if constexpr (std::is_same_v<T, float>) {
        detail::packet_apply(width, [](const auto& p) { return detail::gelu_packet<T>(p); }, y.data(),
                             static_cast<const T*>(x.data()));
      } else {
        for (index_t j = 0; j < width; ++j) y(j) = x(j) * T(0.5) * (T(1) + std::erf(x(j) * inv_sqrt2));
      }
    }
  });
}

/// @brief Dropout in place on a token tensor: element (r, c), at position r % seq of sequence
/// r / seq, is multiplied by `d.factor(token_element(r / seq, r % seq, c))` (0 or 1 / (1 - p)).
/// Per-sequence tensors (one row per sequence) pass seq = 1. Applying it to the gradient in
/// the backward pass is its own backward.
template <class T>
void dropout_inplace(Cpu, MatrixView<T> x, const Dropout& d, index_t seq) {
  if (!d.active()) return;
  KA_ASSERT(seq > 0 && x.extent(0) % seq == 0);
  const index_t rows = x.extent(0), width = x.extent(1);
  const DropoutMask<T> drop_mask(d);
  parallel_chunks(rows, 16, [&, drop_mask](index_t begin, index_t end, index_t) {
    for (index_t r = begin; r < end; ++r) {
      T* row = x.data() + r * width;
      drop_mask.apply(row, row, token_element(static_cast<std::uint64_t>(r / seq), static_cast<std::uint64_t>(r % seq), 0), width);
    }
  });
}

/// @brief The additive key mask of a batch: 0 for real tokens, @p fill for padding.
/// @param[out] out (B*T)
/// @param attention_mask (B*T), 1 for real tokens and 0 for padding
/// @param fill the value added to the scores of padded keys
template <class T>
void additive_key_mask(std::span<T> out, std::span<const std::int64_t> attention_mask, T fill) {
  KA_ASSERT(out.size() == attention_mask.size());
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = attention_mask[i] ? T(0) : fill;
}

/// @brief Softmax of every row of @p x in place: `x_ij = exp(x_ij - max_i) / sum_j exp(...)`,
/// with Eigen's vectorised exp. A term whose exp falls below the smallest normal number is
/// exactly 0 (Eigen's double exp returns a subnormal for the dtype's lowest value, which is
/// how padded keys are masked; their weight must be 0). Single-threaded: attention calls it
/// per (sequence, head) from its own threads.
///
/// Every term goes through the vector exp (the last partial vector of a row through a padded
/// copy) and the row sum adds whole vectors from the row's start, so the result depends only
/// on the values, not on the row's address. (Eigen's own loops start with scalar steps up to
/// an aligned address, and its scalar exp differs from the vector one in the last bit: the
/// same scores at another address gave another result.)
template <class T>
void softmax_rows(MatrixView<T> x) {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<T>::type;
  constexpr index_t w = ei::packet_traits<T>::size;
  const index_t rows = x.extent(0), cols = x.extent(1);
  constexpr T tiny = std::numeric_limits<T>::min();
  alignas(64) T part[w];
  for (index_t i = 0; i < rows; ++i) {
    T* r = x.data() + i * cols;
    // The row maximum (exact in any order): whole packets, then the rest.
    T mx = r[0];
    index_t j = 1;
    if (cols >= w) {
      const index_t whole = cols / w * w;
      Packet pm = ei::ploadu<Packet>(r);
      for (j = w; j < whole; j += w) pm = ei::pmax(pm, ei::ploadu<Packet>(r + j));
      mx = ei::predux_max(pm);
    }
    for (; j < cols; ++j) mx = r[j] > mx ? r[j] : mx;
    const Packet pmx = ei::pset1<Packet>(mx);
    j = 0;
    for (; j + w <= cols; j += w) ei::pstoreu(r + j, ei::pexp(ei::psub(ei::ploadu<Packet>(r + j), pmx)));
    const index_t rest = cols - j;
    if (rest > 0) {
      for (index_t l = 0; l < w; ++l) part[l] = l < rest ? r[j + l] : mx;
      ei::pstore(part, ei::pexp(ei::psub(ei::pload<Packet>(part), pmx)));
      for (index_t l = 0; l < rest; ++l) r[j + l] = part[l];
    }
    for (j = 0; j < cols; ++j) r[j] = r[j] < tiny ? T(0) : r[j];
    Packet acc = ei::pset1<Packet>(T(0));
    for (j = 0; j + w <= cols; j += w) acc = ei::padd(acc, ei::ploadu<Packet>(r + j));
    if (rest > 0) {
      for (index_t l = 0; l < w; ++l) part[l] = l < rest ? r[j + l] : T(0);
      acc = ei::padd(acc, ei::pload<Packet>(part));
    }
    const T inv = T(1) / ei::predux(acc);
    for (j = 0; j < cols; ++j) r[j] *= inv;
  }
}

/// @brief Scratch elements of one kernel thread in attention_forward and attention_backward:
/// 2·T·T, rounded up to a multiple of 16 so that every thread's slice has the alignment of
/// the scratch buffer. Eigen's vectorised loops and sums start with scalar steps up to an
/// aligned address, so a slice's alignment decides which elements take the scalar path; with
/// slices of different alignment the result of a (sequence, head) pair would depend on the
/// thread that computes it, and so on the thread count.
inline index_t attention_scratch_per_thread(index_t seq) noexcept { return (2 * seq * seq + 15) / 16 * 16; }

/// @brief Scratch elements attention_forward and attention_backward need for length @p seq.
inline std::size_t attention_scratch(index_t seq) {
  return static_cast<std::size_t>(attention_scratch_per_thread(seq) * kernel_threads());
}

/// @brief Scratch elements attention_forward(Cpu, ...) and attention_backward(Cpu, ...) need
/// for B sequences of length T, width H and A heads (the backend-generic spelling of
/// attention_scratch(T)).
inline std::size_t attention_scratch(Cpu, index_t /*batch*/, index_t seq, index_t /*width*/, index_t /*heads*/) {
  return attention_scratch(seq);
}

/// @brief `dst = src` (same shape).
template <class T>
void copy_matrix(Cpu, MatrixView<T> dst, MatrixView<const T> src) {
  KA_ASSERT(dst.size() == src.size());
  std::copy(src.data(), src.data() + src.size(), dst.data());
}

/// @brief @p src written into @p dst according to @p mode (see GradientMode).
template <class T>
void write_gradient(Cpu, MatrixView<T> dst, MatrixView<const T> src, GradientMode mode) {
  write_gradient(dst.matrix(), src.matrix(), mode);
}

/// @brief `dst += src` (same shape).
template <class T>
void add_into(Cpu, MatrixView<T> dst, MatrixView<const T> src) {
  dst.matrix() += src.matrix();
}

/// @brief `dst = 0`.
template <class T>
void fill_zero(Cpu, MatrixView<T> dst) {
  std::fill(dst.data(), dst.data() + dst.size(), T(0));
}

/// @brief `dst = alpha · src` (same shape; @p dst may be @p src).
template <class T>
void scale_copy(Cpu, MatrixView<T> dst, MatrixView<const T> src, T alpha) {
  KA_ASSERT(dst.size() == src.size());
  dst.matrix() = alpha * src.matrix();
}

/// @brief Row r of @p dst (R, W) = row r·stride of @p src (R·stride, W): one row per
/// sequence, e.g. the `<s>` rows of a batch.
template <class T>
void gather_rows(Cpu, MatrixView<T> dst, MatrixView<const T> src, index_t stride) {
  KA_ASSERT(src.extent(0) == dst.extent(0) * stride && src.extent(1) == dst.extent(1));
  for (index_t r = 0; r < dst.extent(0); ++r) dst.matrix().row(r) = src.matrix().row(r * stride);
}

/// @brief Row r·stride of @p dst (R·stride, W) = row r of @p src (R, W); other rows of
/// @p dst are left as they are. The reverse of gather_rows().
template <class T>
void scatter_rows(Cpu, MatrixView<T> dst, MatrixView<const T> src, index_t stride) {
  KA_ASSERT(dst.extent(0) == src.extent(0) * stride && src.extent(1) == dst.extent(1));
  for (index_t r = 0; r < src.extent(0); ++r) dst.matrix().row(r * stride) = src.matrix().row(r);
}

/// @brief Copy @p src from host memory into @p dst, in the backend's memory (plain copy).
template <class T>
void copy_from_host(Cpu, T* dst, std::span<const T> src) {
  std::copy(src.begin(), src.end(), dst);
}

/// @brief Copy @p src, in the backend's memory, into @p dst in host memory (plain copy).
template <class T>
void copy_to_host(Cpu, std::span<T> dst, const T* src) {
  std::copy(src, src + dst.size(), dst.begin());
}

/// @brief Multi-head scaled dot-product attention over projected Q, K, V.
///
/// For each sequence b and head h (columns h·d..h·d+d-1):
/// `ctx_bh = softmax(Q_bh K_bh^T / sqrt(d) + mask_b) V_bh`. Heads are read in place through
/// strided maps; nothing is copied.
/// @param[out] ctx (B*T, H)
/// @param[out] probs (B, A, T, T) attention probabilities kept for backward, or nullptr
/// @param q, k, v (B*T, H)
/// @param key_mask (B*T) additive mask per key, or empty for no mask
/// @param batch, seq, heads B, T and A
/// @param scratch at least attention_scratch(T) elements (attention_scratch_per_thread(T) per
///        kernel thread; results do not depend on the thread count when it is 64-byte aligned)
/// @param dropout dropout on the attention probabilities (element index
///        score_element(b*A + h, i, j)), or nullptr; @p probs keeps the values before dropout
template <class T>
void attention_forward(Cpu, MatrixView<T> ctx, std::type_identity_t<T>* probs, MatrixView<const T> q,
                       MatrixView<const T> k, MatrixView<const T> v, std::span<const T> key_mask,
                       index_t batch, index_t seq, index_t heads, T* scratch,
                       const Dropout* dropout = nullptr) {
  const index_t width = q.extent(1);
  const index_t d = width / heads;
  KA_ASSERT(q.extent(0) == batch * seq && d * heads == width);
  const T scale = std::sqrt(static_cast<T>(d));
  using detail::ConstStridedMap;
  using detail::StridedMap;
  const Eigen::OuterStride<> stride(width);
  const DropoutMask<T> drop_mask(dropout ? *dropout : Dropout{});
  // (sequence, head) pairs split over the kernel threads, each with its own scratch; the
  // small products run single-threaded inside.
  parallel_chunks(batch * heads, 1, [&, drop_mask](index_t first, index_t last, index_t thread) {
  T* scratch_t = scratch + thread * attention_scratch_per_thread(seq);
  for (index_t bh = first; bh < last; ++bh) {
    {
      const index_t b = bh / heads, h = bh % heads;
      const index_t offset = b * seq * width + h * d;
      ConstStridedMap<T> qh(q.data() + offset, seq, d, stride);
      ConstStridedMap<T> kh(k.data() + offset, seq, d, stride);
      ConstStridedMap<T> vh(v.data() + offset, seq, d, stride);
      StridedMap<T> ch(ctx.data() + offset, seq, d, stride);
      T* p = probs ? probs + (b * heads + h) * seq * seq : scratch_t;
      Eigen::Map<detail::RowMajorMatrix<T>> scores(p, seq, seq);
      detail::matmul(scores, qh, kh.transpose(), false);
      scores /= scale;
      if (!key_mask.empty()) {
        Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>> mask(key_mask.data() + b * seq, seq);
        scores.rowwise() += mask;
      }
      softmax_rows(MatrixView<T>(p, seq, seq));
      if (dropout && dropout->active()) {
        T* dropped = scratch_t + seq * seq;
        const auto bh = static_cast<std::uint64_t>(b * heads + h);
        for (index_t i = 0; i < seq; ++i)
          drop_mask.apply(dropped + i * seq, p + i * seq, score_element(bh, static_cast<std::uint64_t>(i), 0), seq);
        detail::matmul(ch, Eigen::Map<const detail::RowMajorMatrix<T>>(dropped, seq, seq), vh, false);
      } else {
        detail::matmul(ch, scores, vh, false);
      }
    }
  }
  });
}

/// @brief Embeddings: `LN((word[id] + token_type[tt]) + position[pos])` per token.
/// @param[out] out (N, H)
/// @param[out] cache LayerNorm statistics, or nullptr
/// @param ids, positions (N) token and position ids (already validated)
/// @param token_types (N), or empty for all zeros
/// @param p the embedding tables and their LayerNorm
/// @param eps LayerNorm epsilon
template <class T>
void embeddings_forward(Cpu, MatrixView<T> out, std::type_identity_t<LayerNormCache<T>>* cache,
                        std::span<const std::int64_t> ids, std::span<const std::int64_t> positions,
                        std::span<const std::int64_t> token_types, const EmbeddingParams<T>& p,
                        T eps) {
  const index_t n = out.extent(0), width = out.extent(1);
  KA_ASSERT(static_cast<index_t>(ids.size()) == n && static_cast<index_t>(positions.size()) == n);
  parallel_chunks(n, 16, [&](index_t begin, index_t end, index_t) {
  for (index_t i = begin; i < end; ++i) {
    const T* w = p.word.data() + ids[i] * width;
    const T* t = p.token_type.data() + (token_types.empty() ? 0 : token_types[i]) * width;
    const T* pos = p.position.data() + positions[i] * width;
    T* o = out.data() + i * width;
    for (index_t j = 0; j < width; ++j) o[j] = (w[j] + t[j]) + pos[j];
  }
  });
  layernorm_forward(Cpu{}, out, cache, MatrixView<const T>(out), p.norm, eps);
}

}  // namespace kadapter
