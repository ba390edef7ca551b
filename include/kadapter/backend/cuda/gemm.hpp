/// @file gemm.hpp
/// @brief Row-major fp32 matrix products on cuBLASLt, with plans cached per shape.
///
/// cuBLASLt is column-major. A row-major (r, c) matrix with leading dimension ld is the
/// column-major (c, r) matrix with the same ld, so the row-major `C = op(A) op(B)` is the
/// column-major `C^T = op(B)^T op(A)^T`: gemm() hands cuBLASLt B's storage as its first
/// operand and A's as its second, each with the caller's transpose flag, and C as an (N, M)
/// result. A bias epilogue then adds one value per column of the row-major C, i.e. per output
/// feature, which is what a Linear layer needs.
///
/// Plans (the operation descriptor, three matrix layouts and the algorithm the heuristic
/// chose for the context's workspace) are built on a shape's first call and kept in the
/// Context. The compute type follows Context::math (fp32, TF32 or bf16 tensor cores, fp32
/// accumulation); a shape the tensor-core mode has no algorithm for is planned in fp32. The key includes each pointer's alignment (up to 256 bytes), since an algorithm
/// chosen for aligned data may not run on an attention head's offset view.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "kadapter/backend/cuda/runtime.hpp"

namespace kadapter::cuda {

/// @brief One row-major product `C = alpha · op(A) · op(B) + beta · C (+ bias per column)`,
/// optionally strided-batched.
struct Gemm {
  bool trans_a = false;   ///< A is stored (K, M) and used transposed
  bool trans_b = false;   ///< B is stored (N, K) and used transposed
  std::int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  std::int64_t lda = 0;   ///< row stride of A as stored
  const float* b = nullptr;
  std::int64_t ldb = 0;
  float* c = nullptr;
  std::int64_t ldc = 0;
  float alpha = 1.0f, beta = 0.0f;
  const float* bias = nullptr;  ///< (N) added to every row of C, or nullptr; 16-byte aligned
  std::int64_t batch = 1;       ///< products, each `stride_*` elements after the previous
  std::int64_t stride_a = 0, stride_b = 0, stride_c = 0;
};

namespace detail {
/// @brief The largest power of two up to 256 that divides the address of @p p.
inline unsigned alignment_of(const void* p) noexcept {
  const auto v = reinterpret_cast<std::uintptr_t>(p);
  unsigned a = 256;
  while (a > 4 && v % a != 0) a /= 2;
  return a;
}

/// @brief The alignment every column and batch of an fp32 matrix keeps: that of its base
/// pointer, of its leading dimension and (batched) of its batch stride, in bytes.
inline unsigned alignment_of(const float* p, std::int64_t ld, std::int64_t batch, std::int64_t stride) noexcept {
  unsigned a = alignment_of(p);
  auto bytes = [](std::int64_t elements) {
    return alignment_of(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(elements) * sizeof(float)));
  };
  if (ld > 0) a = std::min(a, bytes(ld));
  if (batch > 1) a = std::min(a, bytes(stride));
  return a;
}

inline void set_attr(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const void* v, std::size_t n) {
  check(cublasLtMatmulDescSetAttribute(d, attr, v, n), "cublasLtMatmulDescSetAttribute");
}

/// @brief Create @p out (owned by the caller's plan, also when an attribute call throws).
inline void make_layout(cublasLtMatrixLayout_t& out, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                        std::int64_t batch, std::int64_t stride) {
  check(cublasLtMatrixLayoutCreate(&out, CUDA_R_32F, static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(cols), ld),
        "cublasLtMatrixLayoutCreate");
  cublasLtMatrixLayout_t l = out;
  if (batch > 1) {
    const auto count = static_cast<std::int32_t>(batch);
    check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
          "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)");
    check(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride),
          "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)");
  }
}
}  // namespace detail

namespace detail {
/// @brief Fill @p plan for @p key (cuBLASLt's view of @p g) with compute type @p compute.
inline void build_plan(Context& ctx, GemmPlan& plan, const GemmKey& key, const Gemm& g, int compute) {
  check(cublasLtMatmulDescCreate(&plan.op, static_cast<cublasComputeType_t>(compute), CUDA_R_32F),
        "cublasLtMatmulDescCreate");
  const cublasOperation_t ta = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t tb = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  detail::set_attr(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
  detail::set_attr(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
  const auto epilogue = static_cast<cublasLtEpilogue_t>(key.epilogue);
  detail::set_attr(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue);
  // Stored shapes, column-major: op N means (rows = m or k, ...) as cuBLASLt documents.
  detail::make_layout(plan.a, key.trans_a ? key.k : key.m, key.trans_a ? key.m : key.k, key.lda, key.batch, key.stride_a);
  detail::make_layout(plan.b, key.trans_b ? key.n : key.k, key.trans_b ? key.k : key.n, key.ldb, key.batch, key.stride_b);
  detail::make_layout(plan.c, key.m, key.n, key.ldc, key.batch, key.stride_c);
  cublasLtMatmulPreference_t pref = nullptr;
  check(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const std::uint64_t ws = ctx.workspace_bytes();
  const std::uint32_t aa = key.align_a, ab = key.align_b, ac = key.align_c;
  // Unchecked, a failed preference would leave the 256-byte default alignment, and the
  // heuristic could pick a kernel that faults on a less aligned view.
  const cublasLtMatmulPreferenceAttributes_t attrs[] = {
      CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  const void* values[] = {&ws, &aa, &ab, &ac, &ac};
  const std::size_t sizes[] = {sizeof ws, sizeof aa, sizeof ab, sizeof ac, sizeof ac};
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  for (std::size_t i = 0; i < 5 && st == CUBLAS_STATUS_SUCCESS; ++i)
    st = cublasLtMatmulPreferenceSetAttribute(pref, attrs[i], values[i], sizes[i]);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(ctx.lt(), plan.op, plan.a, plan.b, plan.c, plan.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  check(st, "cublasLtMatmulPreferenceSetAttribute / cublasLtMatmulAlgoGetHeuristic");
  if (found == 0)
    throw CudaError("cuBLASLt has no algorithm for a " + std::to_string(g.m) + "x" + std::to_string(g.n) + "x" +
                    std::to_string(g.k) + " product (batch " + std::to_string(g.batch) + ")");
  plan.algo = result.algo;
}
}  // namespace detail

/// @brief Run @p g on @p ctx's stream (see the file comment for the mapping to cuBLASLt).
/// @throws CudaError when cuBLASLt has no algorithm for the shape or the call fails, when a
/// size is negative or the batch is below 1, and for an empty sum (k = 0) with beta != 0 or
/// a bias
inline void gemm(Context& ctx, const Gemm& g) {
  if (g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 1)
    throw CudaError("cuda::gemm: m, n, k must be >= 0 and batch >= 1, got m " + std::to_string(g.m) + ", n " +
                    std::to_string(g.n) + ", k " + std::to_string(g.k) + ", batch " + std::to_string(g.batch));
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) {
    // An empty sum: C = beta · C (+ bias). Only the zero result is needed (no model has an
    // empty inner dimension); it is written here rather than handed to cuBLASLt.
    if (g.beta != 0.0f || g.bias)
      throw CudaError("cuda::gemm: a product with k = 0 and beta != 0 or a bias is not supported");
    for (std::int64_t i = 0; i < g.batch; ++i)
      check(cudaMemset2DAsync(g.c + i * g.stride_c, static_cast<std::size_t>(g.ldc) * sizeof(float), 0,
                              static_cast<std::size_t>(g.n) * sizeof(float), static_cast<std::size_t>(g.m), ctx.stream()),
            "cudaMemset2DAsync (empty product)");
    return;
  }
  if (ctx.plans().size() >= Context::kMaxPlans) {
    // Many distinct shapes (every padded length has its own attention plans): start over
    // rather than grow without bound. The stream is drained first, so no queued product
    // still refers to a plan's descriptors.
    ctx.synchronize();
    ctx.plans().clear();
  }
  GemmKey key;
  // cuBLASLt's view: D (N x M) = op(B^T stored) · op(A^T stored).
  key.trans_a = g.trans_b;
  key.trans_b = g.trans_a;
  key.m = g.n;
  key.n = g.m;
  key.k = g.k;
  key.lda = g.ldb;
  key.ldb = g.lda;
  key.ldc = g.ldc;
  key.batch = g.batch;
  key.stride_a = g.stride_b;
  key.stride_b = g.stride_a;
  key.stride_c = g.stride_c;
  key.epilogue = g.bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  key.compute = ctx.math == Math::tf32   ? CUBLAS_COMPUTE_32F_FAST_TF32
                : ctx.math == Math::bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                         : CUBLAS_COMPUTE_32F;
  key.align_a = detail::alignment_of(g.b, g.ldb, g.batch, g.stride_b);
  key.align_b = detail::alignment_of(g.a, g.lda, g.batch, g.stride_a);
  key.align_c = detail::alignment_of(g.c, g.ldc, g.batch, g.stride_c);
  // cuBLASLt's alignment preferences do not cover the bias; its bias kernels may need 16
  // bytes (linear_forward adds a less aligned bias itself).
  KA_ASSERT(!g.bias || detail::alignment_of(g.bias) >= 16);

  auto [it, fresh] = ctx.plans().try_emplace(key);
  GemmPlan& plan = it->second;
  if (fresh) {
    try {
      detail::build_plan(ctx, plan, key, g, key.compute);
    } catch (const CudaError&) {
      // A tensor-core mode may have no algorithm for an odd shape or alignment (an attention
      // head's offset view): that product runs in strict fp32 instead.
      if (key.compute == CUBLAS_COMPUTE_32F) {
        ctx.plans().erase(it);
        throw;
      }
      try {
        plan.reset();
        detail::build_plan(ctx, plan, key, g, CUBLAS_COMPUTE_32F);
        ++ctx.gemm_fallbacks;  // benchmarks report it: such products are not in tf32 / bf16
      } catch (...) {
        ctx.plans().erase(it);
        throw;
      }
    } catch (...) {
      ctx.plans().erase(it);
      throw;
    }
  }
  if (g.bias) detail::set_attr(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof g.bias);
  check(cublasLtMatmul(ctx.lt(), plan.op, &g.alpha, g.b, plan.a, g.a, plan.b, &g.beta, g.c, plan.c, g.c, plan.c,
                       &plan.algo, ctx.workspace(), ctx.workspace_bytes(), ctx.stream()),
        "cublasLtMatmul");
}


}  // namespace kadapter::cuda
