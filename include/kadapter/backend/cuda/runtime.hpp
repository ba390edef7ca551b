/// @file runtime.hpp
/// @brief The CUDA runtime side of the GPU backend: errors, device buffers and the per-thread
/// Context (stream, cuBLASLt handle and workspace, plan cache, scratch for small uploads,
/// pinned staging for host-to-device copies).
///
/// Host code only: it compiles with nvcc or with a plain C++ compiler that sees the CUDA
/// headers. The kernels are in kernels.hpp and need nvcc.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <compare>
#include <cstddef>
#include <cstring>
#include <cstdint>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kadapter/config.hpp"
#include "kadapter/core/backend.hpp"
#include "kadapter/core/workspace.hpp"

namespace kadapter::cuda {

/// @brief A failed CUDA runtime or cuBLASLt call (out of device memory, no device, a launch
/// error). The message names the call and the status.
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// @brief Throw CudaError naming @p what unless @p e is cudaSuccess.
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw CudaError(std::string(what) + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

/// @brief Throw CudaError naming @p what unless @p s is CUBLAS_STATUS_SUCCESS.
inline void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw CudaError(std::string(what) + " failed: " + cublasLtGetStatusName(s) + " (" + cublasLtGetStatusString(s) + ")");
}

/// @brief Throw CudaError if the last kernel launch failed (a bad configuration; errors inside
/// the kernel surface at the next synchronising call).
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

/// @brief Whether a CUDA device is usable in this process.
inline bool device_available() noexcept {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

/// @brief An owning device allocation of @p n elements of @p T (cudaMalloc / cudaFree).
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t n) { resize(n); }
  /// @brief A device copy of @p host.
  explicit DeviceBuffer(std::span<const T> host) {
    resize(host.size());
    upload(host);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  ~DeviceBuffer() { release(); }

  /// @brief Reallocate for @p n elements (contents are lost).
  void resize(std::size_t n) {
    if (n == size_) return;
    release();
    if (n > 0) check(cudaMalloc(reinterpret_cast<void**>(&data_), n * sizeof(T)), "cudaMalloc");
    size_ = n;
  }
  /// @brief Copy @p host (at most size() elements) to the start of the buffer, on the
  /// calling thread's Context stream (after the work queued there), and wait for it.
  void upload(std::span<const T> host);
  /// @brief The whole buffer copied to the host, after the work queued on the calling
  /// thread's Context stream.
  std::vector<T> download() const;
  T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  void release() noexcept {
    if (data_) cudaFree(data_);
    data_ = nullptr;
    size_ = 0;
  }
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

/// @brief The arithmetic of the backend's matrix products. Inputs, outputs and accumulation
/// are fp32 in every mode; tf32 and bf16 let cuBLASLt round the inputs to TF32 (10-bit
/// mantissa) or bf16 (7-bit mantissa) for the tensor cores. Parameters, activations,
/// gradients and the optimizer stay fp32 (bf16 "compute" with fp32 master weights).
enum class Math {
  fp32,  ///< strict fp32 (CUBLAS_COMPUTE_32F)
  tf32,  ///< TF32 tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32), about 1e-3 relative error
  bf16,  ///< bf16 tensor cores (CUBLAS_COMPUTE_32F_FAST_16BF), about 1e-2 relative error
};

/// @brief The name of @p m as the command line spells it.
inline const char* math_name(Math m) noexcept {
  return m == Math::fp32 ? "fp32" : m == Math::tf32 ? "tf32" : "bf16";
}

/// @brief A cuBLASLt matmul plan: operation descriptor, the three layouts and the algorithm
/// the heuristic chose, built once per shape (see gemm.hpp).
struct GemmPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  GemmPlan() = default;
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  ~GemmPlan() { reset(); }
  /// @brief Destroy the descriptors and leave the plan empty.
  void reset() noexcept {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (op) cublasLtMatmulDescDestroy(op);
    a = b = c = nullptr;
    op = nullptr;
  }
};

/// @brief What identifies a plan: cuBLASLt's (column-major) operation, sizes, leading
/// dimensions, batch strides, epilogue, compute type and the pointers' alignment.
struct GemmKey {
  bool trans_a = false, trans_b = false;
  std::int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  std::int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
  int epilogue = 0;
  int compute = 0;
  unsigned align_a = 0, align_b = 0, align_c = 0;
  auto operator<=>(const GemmKey&) const = default;
};

/// @brief Per-thread GPU state: the stream every kernel and product of the backend runs on,
/// the cuBLASLt handle, its workspace, the plan cache and a scratch area for small uploads
/// (labels, masks) and reductions. Created on first use on the current device.
class Context {
 public:
  /// @brief cuBLASLt workspace: 32 MiB, what NVIDIA recommends for Hopper.
  static constexpr std::size_t kWorkspaceBytes = std::size_t{32} << 20;
  /// @brief Plans kept before the cache starts over (see cuda::gemm).
  static constexpr std::size_t kMaxPlans = 4096;

  Context() {
    workspace_.resize(kWorkspaceBytes);
    check(cublasLtCreate(&lt_), "cublasLtCreate");
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context() {
    plans_.clear();
    if (lt_) cublasLtDestroy(lt_);
    release_staging();
  }

  /// @brief The stream the backend runs on (default: the legacy default stream).
  cudaStream_t stream() const noexcept { return stream_; }
  /// @brief Run on @p s from now on. Waits for the old stream first: the workspace and the
  /// scratch area may still be in use there.
  void set_stream(cudaStream_t s) {
    synchronize();
    stream_ = s;
  }
  cublasLtHandle_t lt() const noexcept { return lt_; }
  void* workspace() const noexcept { return workspace_.data(); }
  std::size_t workspace_bytes() const noexcept { return workspace_.size(); }
  /// @brief How the matrix products compute (every other kernel is fp32 whatever this says).
  /// Default fp32: results match the CPU backend within 1e-5.
  Math math = Math::fp32;
  /// @brief Product plans built in strict fp32 because the tf32 / bf16 mode had no algorithm
  /// for them (see cuda::gemm; counted again when the plan cache starts over).
  std::size_t gemm_fallbacks = 0;

  std::map<GemmKey, GemmPlan>& plans() noexcept { return plans_; }

  /// @brief A device scratch area of at least @p bytes (grown on demand; contents are not
  /// kept across calls that grow it). Synchronises the stream before growing.
  void* scratch(std::size_t bytes) {
    if (bytes > scratch_.size()) {
      check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
      scratch_.resize(bytes);
    }
    return scratch_.data();
  }

  /// @brief Wait for everything queued on the stream.
  void synchronize() const { check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

  /// @brief Pinned host memory the staged copies go through: kStagingSlots slots of this size.
  static constexpr std::size_t kStagingSlotBytes = std::size_t{4} << 20;
  static constexpr std::size_t kStagingSlots = 4;

  /// @brief Queue a copy of @p bytes bytes from host memory @p src to device memory @p dst
  /// on the stream, after the work queued there. @p src may be reused or freed as soon as
  /// this returns: the bytes are first copied into pinned staging memory, and the device
  /// copy reads them from there. (A cudaMemcpyAsync straight from pageable memory "might be
  /// synchronous" with respect to the host, CUDA's documentation says, which does not promise
  /// that the source has been read when the call returns.)
  ///
  /// The staging memory is a ring of slots; small copies share a slot, larger ones are cut
  /// into slot-sized pieces. Before a slot is written again, the host waits for the event
  /// recorded after the last copy that read it (every copy records its slot's event), so the
  /// device side never waits.
  void copy_to_device(void* dst, const void* src, std::size_t bytes) {
    if (bytes == 0) return;
    if (!staging_[0].host) allocate_staging();
    auto* d = static_cast<std::byte*>(dst);
    const auto* s = static_cast<const std::byte*>(src);
    while (bytes > 0) {
      // A copy that fits in a slot is not split across two.
      if (staging_[slot_].used + std::min(bytes, kStagingSlotBytes) > kStagingSlotBytes) next_slot();
      Slot& slot = staging_[slot_];
      const std::size_t chunk = std::min(bytes, kStagingSlotBytes - slot.used);
      std::byte* pinned = slot.host + slot.used;
      std::memcpy(pinned, s, chunk);
      check(cudaMemcpyAsync(d, pinned, chunk, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync to device");
      check(cudaEventRecord(slot.read, stream_), "cudaEventRecord (staging)");
      slot.used = std::min(kStagingSlotBytes, (slot.used + chunk + 255) / 256 * 256);
      d += chunk;
      s += chunk;
      bytes -= chunk;
    }
  }

 private:
  struct Slot {
    std::byte* host = nullptr;    ///< kStagingSlotBytes of pinned memory
    cudaEvent_t read = nullptr;   ///< recorded after the last copy that reads the slot
    std::size_t used = 0;         ///< bytes handed out since the slot was last reused
  };

  void allocate_staging() {
    void* p = nullptr;
    check(cudaHostAlloc(&p, kStagingSlots * kStagingSlotBytes, cudaHostAllocDefault), "cudaHostAlloc (staging)");
    for (std::size_t i = 0; i < kStagingSlots; ++i) {
      staging_[i].host = static_cast<std::byte*>(p) + i * kStagingSlotBytes;
      staging_[i].used = 0;
    }
    try {
      for (Slot& slot : staging_)
        check(cudaEventCreateWithFlags(&slot.read, cudaEventDisableTiming), "cudaEventCreateWithFlags (staging)");
    } catch (...) {
      release_staging();
      throw;
    }
    slot_ = 0;
  }

  /// @brief Open the next slot once the copies that last read it are done.
  void next_slot() {
    slot_ = (slot_ + 1) % kStagingSlots;
    // An event never recorded counts as complete.
    check(cudaEventSynchronize(staging_[slot_].read), "cudaEventSynchronize (staging)");
    staging_[slot_].used = 0;
  }

  void release_staging() noexcept {
    if (!staging_[0].host) return;
    // No queued copy may still read the pinned memory: wait for each slot's last copy (by
    // its event, not the stream, which the caller of set_stream may have destroyed by now).
    for (Slot& slot : staging_) {
      if (slot.read) cudaEventSynchronize(slot.read);
      if (slot.read) cudaEventDestroy(slot.read);
      slot.read = nullptr;
    }
    cudaFreeHost(staging_[0].host);
    for (Slot& slot : staging_) slot.host = nullptr;
  }

  cublasLtHandle_t lt_ = nullptr;
  cudaStream_t stream_ = nullptr;
  DeviceBuffer<std::byte> workspace_;
  DeviceBuffer<std::byte> scratch_;
  std::map<GemmKey, GemmPlan> plans_;
  std::array<Slot, kStagingSlots> staging_{};
  std::size_t slot_ = 0;
};

/// @brief The calling thread's Context.
inline Context& context() {
  thread_local Context ctx;
  return ctx;
}

template <class T>
void DeviceBuffer<T>::upload(std::span<const T> host) {
  if (host.size() > size_) throw std::length_error("DeviceBuffer::upload: more elements than the buffer holds");
  if (host.empty()) return;
  Context& ctx = context();
  check(cudaMemcpyAsync(data_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, ctx.stream()),
        "cudaMemcpyAsync to device");
  ctx.synchronize();
}

template <class T>
std::vector<T> DeviceBuffer<T>::download() const {
  std::vector<T> host(size_);
  if (size_ == 0) return host;
  Context& ctx = context();
  check(cudaMemcpyAsync(host.data(), data_, size_ * sizeof(T), cudaMemcpyDeviceToHost, ctx.stream()),
        "cudaMemcpyAsync to host");
  ctx.synchronize();
  return host;
}

}  // namespace kadapter::cuda

namespace kadapter {
/// @brief BackendVector<T, Cuda> is a device buffer.
template <class T>
struct BackendStorage<T, Cuda> {
  using type = cuda::DeviceBuffer<T>;
};

/// @brief Workspace<T, Cuda> slices are device memory (cudaMalloc aligns to 256 bytes).
template <>
struct WorkspaceMemory<Cuda> {
  static void* allocate(std::size_t bytes) {
    void* p = nullptr;
    cuda::check(cudaMalloc(&p, bytes), "cudaMalloc (workspace)");
    return p;
  }
  static void release(void* p) noexcept { cudaFree(p); }
};
}  // namespace kadapter
