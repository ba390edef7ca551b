/// @file random.hpp
/// @brief Counter-based random numbers and the dropout masks drawn from them.
///
/// A value is a pure function of (seed, stream, index): no generator state, so a mask can be
/// regenerated in the backward pass instead of stored, the result does not depend on thread
/// scheduling, and a GPU kernel can draw the same numbers.
#pragma once

#include <cstdint>

#include "kadapter/config.hpp"

namespace kadapter {

/// @brief SplitMix64 finaliser: a bijective 64-bit mix with good avalanche.
KA_HOST_DEVICE constexpr std::uint64_t mix64(std::uint64_t z) noexcept {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// @brief A uniform number in [0, 1) (24 random bits) for element @p index of @p stream.
KA_HOST_DEVICE constexpr float uniform01(std::uint64_t seed, std::uint64_t stream,
                                         std::uint64_t index) noexcept {
  const std::uint64_t h = mix64(mix64(seed ^ mix64(stream)) + index);
  return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

/// @brief Dropout of one tensor in one step: drop with probability @p p, scale survivors
/// by 1 / (1 - p). Inactive (identity) when p == 0 or outside training.
struct Dropout {
  float p = 0.0f;               ///< drop probability
  std::uint64_t seed = 0;       ///< run seed
  std::uint64_t stream = 0;     ///< unique per (step, tensor): see dropout_stream()
  bool active() const noexcept { return p > 0.0f; }
  /// @brief The multiplier of element @p index: 0 or 1 / (1 - p).
  template <class T>
  T factor(std::uint64_t index) const noexcept {
    return uniform01(seed, stream, index) < p ? T(0) : T(1) / (T(1) - static_cast<T>(p));
  }
};

/// @brief The mask of one Dropout with its per-stream work done once, for loops over many
/// elements: `factor(i)` equals `Dropout::factor<T>(i)` for every index.
///
/// The hash of (seed, stream) and the survivor scale are computed at construction, and
/// `uniform01(...) < p` is compared as integers: the 24 random bits are below `p · 2^24`
/// exactly when they are below its ceiling (the float product is exact, a power-of-two
/// scaling). Held by value in a loop, nothing is reloaded per element and the loop vectorises.
template <class T>
struct DropoutMask {
  std::uint64_t key = 0;        ///< mix64(seed ^ mix64(stream))
  std::uint64_t threshold = 0;  ///< elements whose 24 bits are below this are dropped
  T scale = T(1);               ///< 1 / (1 - p)
  explicit DropoutMask(const Dropout& d) noexcept
      : key(mix64(d.seed ^ mix64(d.stream))), scale(T(1) / (T(1) - static_cast<T>(d.p))) {
    const float bound = d.p * 16777216.0f;  // exact
    if (bound > 0.0f) {                      // (p is in [0, 1); anything else drops nothing)
      const auto whole = static_cast<std::uint64_t>(bound);
      threshold = whole + (static_cast<float>(whole) < bound ? 1 : 0);
    }
  }
  /// @brief The multiplier of element @p index: 0 or 1 / (1 - p).
  T factor(std::uint64_t index) const noexcept { return (mix64(key + index) >> 40) < threshold ? T(0) : scale; }
  /// @brief `dst[j] = src[j] · factor(first + j)` for j < @p n (@p dst may be @p src, not
  /// otherwise overlap it).
  void apply(T* dst, const T* src, std::uint64_t first, std::int64_t n) const noexcept {
    const DropoutMask m = *this;
    if (dst == src) {
      for (std::int64_t j = 0; j < n; ++j) dst[j] *= m.factor(first + static_cast<std::uint64_t>(j));
    } else {
      const T* __restrict s = src;
      T* __restrict d = dst;
      for (std::int64_t j = 0; j < n; ++j) d[j] = s[j] * m.factor(first + static_cast<std::uint64_t>(j));
    }
  }
};

/// @brief Dropout element index of column @p c of position @p t of sequence @p b in a token
/// tensor (rows are the positions of sequences, one after another).
///
/// The index names the element, not its offset in memory, so a batch padded to its own
/// longest sequence draws the same mask for every real token as the same batch padded to the
/// maximum length (length bucketing changes no number). Limits: b < 2^24, t < 2^20, c < 2^20.
KA_HOST_DEVICE constexpr std::uint64_t token_element(std::uint64_t b, std::uint64_t t,
                                                     std::uint64_t c) noexcept {
  return (b << 40) | (t << 20) | c;
}

/// @brief Dropout element index of the attention probability of query @p i and key @p j of
/// head @p bh (= sequence · heads + head): independent of the padded length as token_element.
/// Limits: bh < 2^32, i and j < 2^16.
KA_HOST_DEVICE constexpr std::uint64_t score_element(std::uint64_t bh, std::uint64_t i,
                                                     std::uint64_t j) noexcept {
  return (bh << 32) | (i << 16) | j;
}

/// @brief Stream id of the dropout at @p site (a fixed number per dropout layer in a model)
/// in training step @p step and micro-batch @p micro.
constexpr std::uint64_t dropout_stream(std::uint64_t step, std::uint64_t micro,
                                       std::uint64_t site) noexcept {
  return mix64(mix64(step) ^ (micro << 20) ^ site);
}

}  // namespace kadapter
