/// @file tensor.hpp
/// @brief Row-major tensor views with compile-time or run-time extents.
///
/// A TensorView is a non-owning pointer plus extents. Each extent is either fixed at compile
/// time (a positive number) or `dynamic`, like Eigen's `Dynamic` or `std::dynamic_extent`:
/// `TensorView<float, dynamic, dynamic, 768>` is a (B, T, 768) view whose last extent the
/// compiler knows. Views are always dense and row-major (the last index varies fastest).
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <type_traits>

#include <Eigen/Core>

#include "kadapter/config.hpp"

namespace kadapter {

/// @brief Marker for an extent only known at run time.
inline constexpr index_t dynamic = -1;

/// @brief The extents of a tensor: compile-time values where given, run-time ones elsewhere.
/// @tparam E one entry per dimension, a positive size or `dynamic`.
template <index_t... E>
class Extents {
 public:
  static constexpr std::size_t rank = sizeof...(E);
  static constexpr std::array<index_t, rank> static_extents{E...};

  /// @brief All-zero dynamic extents (static ones keep their value).
  constexpr Extents() noexcept : values_{(E == dynamic ? index_t{0} : E)...} {}

  /// @brief Extents from one run-time value per dimension; static ones must agree.
  template <class... I>
    requires(sizeof...(I) == rank && (std::is_integral_v<I> && ...))
  constexpr explicit Extents(I... values) noexcept : values_{static_cast<index_t>(values)...} {
    for (std::size_t i = 0; i < rank; ++i) {
      KA_ASSERT(static_extents[i] == dynamic || static_extents[i] == values_[i]);
      KA_ASSERT(values_[i] >= 0);
    }
  }

  /// @brief Extent of dimension @p i.
  constexpr index_t operator[](std::size_t i) const noexcept { return values_[i]; }

  /// @brief Number of elements (product of all extents).
  constexpr index_t size() const noexcept {
    index_t n = 1;
    for (index_t v : values_) n *= v;
    return n;
  }

  /// @brief Compile-time extent of the last dimension, or `dynamic`.
  static constexpr index_t static_last() noexcept { return static_extents[rank - 1]; }

  constexpr const std::array<index_t, rank>& values() const noexcept { return values_; }

 private:
  std::array<index_t, rank> values_;
};

/// @brief A dense row-major view of @p T with extents @p E.
/// @tparam T element type (const-qualified for read-only views).
/// @tparam E extents, one per dimension (a number or `dynamic`).
template <class T, index_t... E>
class TensorView {
 public:
  using element_type = T;
  using extents_type = Extents<E...>;
  static constexpr std::size_t rank = sizeof...(E);
  static_assert(rank >= 1, "a TensorView needs at least one dimension");

  constexpr TensorView() noexcept = default;

  /// @brief View @p data with run-time extents (static extents must agree).
  template <class... I>
    requires(sizeof...(I) == rank && (std::is_integral_v<I> && ...))
  constexpr TensorView(T* data, I... extents) noexcept : data_(data), extents_(extents...) {}

  constexpr TensorView(T* data, const extents_type& extents) noexcept
      : data_(data), extents_(extents) {}

  /// @brief A read-only view converts from a mutable one.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  constexpr TensorView(const TensorView<U, E...>& other) noexcept  // NOLINT(implicit)
      : data_(other.data()), extents_(other.extents()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr const extents_type& extents() const noexcept { return extents_; }
  constexpr index_t extent(std::size_t i) const noexcept { return extents_[i]; }
  constexpr index_t size() const noexcept { return extents_.size(); }
  constexpr bool empty() const noexcept { return size() == 0; }

  /// @brief The elements as a flat span.
  constexpr std::span<T> span() const noexcept {
    return {data_, static_cast<std::size_t>(size())};
  }

  /// @brief Element access with one index per dimension.
  template <class... I>
    requires(sizeof...(I) == rank && (std::is_integral_v<I> && ...))
  constexpr T& operator()(I... idx) const noexcept {
    const std::array<index_t, rank> ix{static_cast<index_t>(idx)...};
    index_t offset = 0;
    for (std::size_t d = 0; d < rank; ++d) {
      KA_ASSERT(ix[d] >= 0 && ix[d] < extents_[d]);
      offset = offset * extents_[d] + ix[d];
    }
    return data_[offset];
  }

  /// @brief Slice along the first dimension: a view of rank-1 fewer dimensions.
  constexpr auto operator[](index_t i) const noexcept
    requires(rank >= 2)
  {
    return slice_first<E...>(i);
  }

  /// @brief The view as a (rows, cols) row-major Eigen map, where cols is the last extent.
  auto matrix() const noexcept {
    using Mat = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic,
                              Eigen::RowMajor>;
    using MapT = std::conditional_t<std::is_const_v<T>, Eigen::Map<const Mat>, Eigen::Map<Mat>>;
    const index_t cols = extents_[rank - 1];
    return MapT(data_, cols == 0 ? 0 : size() / cols, cols);
  }

  /// @brief The elements as an Eigen column-vector map.
  auto vector() const noexcept {
    using Vec = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, 1>;
    using MapT = std::conditional_t<std::is_const_v<T>, Eigen::Map<const Vec>, Eigen::Map<Vec>>;
    return MapT(data_, size());
  }

 private:
  template <index_t First, index_t... Rest>
  constexpr TensorView<T, Rest...> slice_first(index_t i) const noexcept {
    KA_ASSERT(i >= 0 && i < extents_[0]);
    std::array<index_t, rank - 1> rest{};
    for (std::size_t d = 1; d < rank; ++d) rest[d - 1] = extents_[d];
    const index_t stride = size() / (extents_[0] == 0 ? 1 : extents_[0]);
    return std::apply(
        [&](auto... r) { return TensorView<T, Rest...>(data_ + i * stride, r...); }, rest);
  }

  T* data_ = nullptr;
  extents_type extents_{};
};

/// @brief Rank-1 view, run-time length.
template <class T>
using VectorView = TensorView<T, dynamic>;
/// @brief Rank-2 view (rows, cols), run-time extents.
template <class T>
using MatrixView = TensorView<T, dynamic, dynamic>;

/// @brief Rows of width W (compile-time when W is a number): the (tokens, features) shape
/// every per-token layer works on.
template <class T, index_t W = dynamic>
using RowsView = TensorView<T, dynamic, W>;

}  // namespace kadapter
