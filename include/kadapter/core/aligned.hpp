/// @file aligned.hpp
/// @brief A 64-byte-aligned allocator for the library's long-lived arrays.
///
/// Eigen's vectorised kernels peel loops according to the addresses they are given, so
/// the rounding of a reduction can depend on alignment. Allocating every parameter,
/// gradient and activation array on a 64-byte boundary makes results independent of where
/// the heap happened to place them (a resumed run reproduces an uninterrupted one bit for bit).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace kadapter {

/// @brief Standard allocator returning 64-byte-aligned storage.
template <class T>
struct AlignedAllocator {
  using value_type = T;
  static constexpr std::size_t alignment = 64;
  AlignedAllocator() noexcept = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) noexcept {}  // NOLINT(implicit)
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{alignment}));
  }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{alignment}); }
  template <class U>
  bool operator==(const AlignedAllocator<U>&) const noexcept { return true; }
};

/// @brief A std::vector whose data is 64-byte aligned.
template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace kadapter
