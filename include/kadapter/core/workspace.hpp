/// @file workspace.hpp
/// @brief A growable arena of scratch memory with an allocation counter.
#pragma once

#include <cstddef>
#include <memory>
#include <new>

#include "kadapter/config.hpp"
#include "kadapter/core/aligned.hpp"
#include "kadapter/core/backend.hpp"

namespace kadapter {

/// @brief Where a backend's workspace memory comes from: `allocate(bytes)` returns memory
/// aligned to at least 64 bytes, `release(p)` frees it. Host memory for Cpu; the CUDA
/// backend (backend/cuda/runtime.hpp) specialises it with device memory.
template <class B>
struct WorkspaceMemory;

template <>
struct WorkspaceMemory<Cpu> {
  static void* allocate(std::size_t bytes) { return ::operator new[](bytes, std::align_val_t{64}); }
  static void release(void* p) noexcept { ::operator delete[](p, std::align_val_t{64}); }
};

/// @brief The owning array type of backend @p B: `type` has `resize(n)`, `data()` and
/// `size()`. AlignedVector for Cpu; the CUDA backend specialises it with a device buffer
/// (whose resize() does not keep the contents).
template <class T, class B>
struct BackendStorage;

template <class T>
struct BackendStorage<T, Cpu> {
  using type = AlignedVector<T>;
};

/// @brief An owning array of @p T in the memory of backend @p B.
template <class T, class B>
using BackendVector = typename BackendStorage<T, B>::type;

/// @brief Scratch memory for one element type, handed out as consecutive slices.
///
/// A step calls reset(), then take() for each buffer it needs. When the slices asked for
/// exceed the capacity, the arena grows to fit (one new allocation, counted by
/// allocations()); later steps of the same or smaller size allocate nothing. Slices stay
/// valid until the next reset(). Memory is 64-byte aligned, in the memory of backend @p B
/// (host memory for Cpu, device memory for Cuda).
template <class T, class B = Cpu>
class Workspace {
 public:
  Workspace() = default;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  Workspace(Workspace&&) noexcept = default;
  Workspace& operator=(Workspace&&) noexcept = default;

  /// @brief Make room for at least @p count elements (allocates only when growing).
  void reserve(std::size_t count) {
    if (count <= capacity_) return;
    KA_ASSERT(used_ == 0 && "reserve() may not move slices already handed out");
    data_.reset(static_cast<T*>(WorkspaceMemory<B>::allocate(count * sizeof(T))));
    capacity_ = count;
    ++allocations_;
  }

  /// @brief Start a new step: every slice handed out before is released.
  void reset() noexcept { used_ = 0; }

  /// @brief Release the slices handed out after the point @p mark (a value of used()).
  void rewind(std::size_t mark) noexcept {
    KA_ASSERT(mark <= used_);
    used_ = mark;
  }

  /// @brief The next @p count elements (rounded up to keep 64-byte alignment).
  ///
  /// Slices must be planned: call reserve() with the step's total before the first take().
  /// A take() past the capacity is a bug in the caller's planning.
  T* take(std::size_t count) noexcept {
    const std::size_t rounded = round_up(count);
    KA_ASSERT(used_ + rounded <= capacity_ && "Workspace: reserve() the step's total first");
    T* p = data_.get() + used_;
    used_ += rounded;
    return p;
  }

  /// @brief Elements needed for slices of the given sizes, including alignment padding.
  static constexpr std::size_t padded(std::size_t count) noexcept { return round_up(count); }

  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t used() const noexcept { return used_; }
  /// @brief How many times the arena has allocated memory since construction.
  std::size_t allocations() const noexcept { return allocations_; }

 private:
  static constexpr std::size_t kAlign = 64;
  static constexpr std::size_t kAlignElems = kAlign / sizeof(T) > 0 ? kAlign / sizeof(T) : 1;
  static constexpr std::size_t round_up(std::size_t n) noexcept {
    return (n + kAlignElems - 1) / kAlignElems * kAlignElems;
  }
  struct Deleter {
    void operator()(T* p) const noexcept { WorkspaceMemory<B>::release(p); }
  };
  std::unique_ptr<T, Deleter> data_;
  std::size_t capacity_ = 0;
  std::size_t used_ = 0;
  std::size_t allocations_ = 0;
};

}  // namespace kadapter
