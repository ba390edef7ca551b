/// @file gemm.hpp
/// @brief The CPU backend's own fp32 matrix product: packed panels and a register-blocked
/// micro-kernel for AVX-512 (8 × 48 tile) or AVX2 + FMA (6 × 16 tile).
///
/// Eigen 3.4's product kernel for AVX-512 uses a 48 × 4 register tile (12 accumulators) and
/// reaches about 60 % of the FMA peak of a core with two 512-bit FMA pipes (Zen 5: measured
/// 160 of 256 GFLOP/s per core); a tile of 24 accumulators, loaded with three vectors of B
/// and eight broadcasts of A per step, keeps both pipes busy (`bench/RESULTS.md` has the
/// numbers). The layout is the usual one of packed GEMMs:
///
/// - B (k × n) is packed per (KC × NC) block into panels of NR columns, each panel stored
///   k-major (NR consecutive floats per k), zero-padded past n;
/// - A (m × k) is packed per (MC × KC) block into panels of MR rows, k-major (MR consecutive
///   floats per k), zero-padded past m; when A's rows are contiguous (the forward's inputs,
///   the backward's output gradients) its whole MR-row panels are read in place instead, and
///   only a last partial panel is packed (the micro-kernel broadcasts from MR row pointers);
/// - the micro-kernel accumulates an MR × NR tile of C over one KC block in registers and
///   stores it (first block of an overwriting product) or adds it to C.
///
/// Threads: the kernel threads pack each B block together, then claim row panels of C from a
/// shared counter (guided sizes, sgemm_claim), each packing the claimed rows of A (if any); two
/// barriers per B block. Every element
/// of C is the same sequence of fused multiply-adds over k, in KC blocks added in order,
/// whichever thread computes it and however many threads there are, so the result does not
/// depend on the thread count. The packing buffers are kept per thread and grow once: no
/// allocation in a steady training loop, and none inside a parallel region.
///
/// Small products on one thread (attention's per-head products, called inside the (sequence,
/// head) loop) take a second path, sgemm_small: A read in place and broadcast, B read in
/// place when its rows are whole vectors, else copied once into a padded buffer, and a tile
/// of whole vectors whose last one may be partial. Packing both 64 × 64 operands and the
/// 48-column tile's waste on 64 columns had cost more than the arithmetic. Each element is
/// the same chain of FMAs as on the packed path, so the two paths agree bit for bit.
///
/// Operands are given as strided views, so transposed operands cost nothing: element (i, p)
/// of A is `a[i * a_row_stride + p * a_col_stride]`.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif
#if defined(_OPENMP)
#include <omp.h>
#endif

#include "kadapter/core/parallel.hpp"
#include "kadapter/core/tensor.hpp"

/// @def KADAPTER_OWN_SGEMM
/// @brief 1 when the fp32 products of the CPU backend use the kernel of this file (x86 with
/// AVX-512F, or AVX2 and FMA, at compile time, and not disabled by defining
/// `KADAPTER_NO_OWN_SGEMM`); 0 when they go to Eigen.
#if !defined(KADAPTER_NO_OWN_SGEMM) && (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)))
#define KADAPTER_OWN_SGEMM 1
#else
#define KADAPTER_OWN_SGEMM 0
#endif

namespace kadapter::detail {

#if KADAPTER_OWN_SGEMM

/// @brief The vector instructions of the micro-kernel and its register tile.
#if defined(__AVX512F__)
struct SgemmIsa {
  using Vec = __m512;
  static constexpr int width = 16;   ///< floats per vector
  static constexpr int mr = 8;       ///< rows of the register tile
  static constexpr int nv = 3;       ///< vectors per row of the tile
  static constexpr const char* name = "avx512";
  static Vec zero() noexcept { return _mm512_setzero_ps(); }
  static Vec load(const float* p) noexcept { return _mm512_load_ps(p); }
  static Vec loadu(const float* p) noexcept { return _mm512_loadu_ps(p); }
  static void storeu(float* p, Vec v) noexcept { _mm512_storeu_ps(p, v); }
  static Vec broadcast(float x) noexcept { return _mm512_set1_ps(x); }
  static Vec fmadd(Vec a, Vec b, Vec c) noexcept { return _mm512_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) noexcept { return _mm512_add_ps(a, b); }
};
#else
struct SgemmIsa {
  using Vec = __m256;
  static constexpr int width = 8;
  static constexpr int mr = 6;
  static constexpr int nv = 2;
  static constexpr const char* name = "avx2";
  static Vec zero() noexcept { return _mm256_setzero_ps(); }
  static Vec load(const float* p) noexcept { return _mm256_load_ps(p); }
  static Vec loadu(const float* p) noexcept { return _mm256_loadu_ps(p); }
  static void storeu(float* p, Vec v) noexcept { _mm256_storeu_ps(p, v); }
  static Vec broadcast(float x) noexcept { return _mm256_set1_ps(x); }
  static Vec fmadd(Vec a, Vec b, Vec c) noexcept { return _mm256_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) noexcept { return _mm256_add_ps(a, b); }
};
#endif

/// @brief Block sizes: MR × NR register tile, KC depth per packed block, MC rows of A per
/// packed block (in L2), NC columns of B per packed block (in L3).
struct SgemmBlocking {
  static constexpr index_t mr = SgemmIsa::mr;
  static constexpr index_t nr = SgemmIsa::width * SgemmIsa::nv;
  static constexpr index_t kc = 256;
  static constexpr index_t mc = 192;
  // 768: a row block of C (MC × NC) stays in L2 beside its A block (3072 let C push both out
  // of L2 in the products with 3072 columns, 8-10 % slower).
  static constexpr index_t nc = 768;
  static_assert(nc % nr == 0 && mc % mr == 0, "blocks are whole panels");
};

/// @brief A 64-byte aligned float buffer that only grows.
class SgemmBuffer {
 public:
  SgemmBuffer() = default;
  SgemmBuffer(const SgemmBuffer&) = delete;
  SgemmBuffer& operator=(const SgemmBuffer&) = delete;
  ~SgemmBuffer() { std::free(data_); }
  float* get(std::size_t floats) {
    if (floats > size_) {
      std::free(data_);
      data_ = nullptr;
      size_ = 0;
      const std::size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
      data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!data_) throw std::bad_alloc();
      size_ = floats;
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  std::size_t size_ = 0;
};

/// @brief The packed-B buffer of the calling thread (shared with its team during a product).
inline SgemmBuffer& sgemm_b_buffer() {
  static thread_local SgemmBuffer buffer;
  return buffer;
}
/// @brief The packed-A buffers of the calling thread's team, one slice per thread (allocated
/// before the parallel region, so that a failed allocation throws in the caller).
inline SgemmBuffer& sgemm_a_buffer() {
  static thread_local SgemmBuffer buffer;
  return buffer;
}

/// @brief One step over k of an R × NV-vector register tile: `acc[i][j] += a(i) · b[j]`, B's
/// NV vectors read from @p b (aligned when @p Aligned), a(i) broadcast.
template <int R, int NV, bool Aligned, class A>
[[gnu::always_inline]] inline void sgemm_tile_step(typename SgemmIsa::Vec (&acc)[R][NV], const float* b,
                                                   A&& a) noexcept {
  using I = SgemmIsa;
  typename I::Vec bv[NV];
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) bv[j] = Aligned ? I::load(b + I::width * j) : I::loadu(b + I::width * j);
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    const typename I::Vec av = I::broadcast(a(i));
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = I::fmadd(av, bv[j], acc[i][j]);
  }
}

/// @brief The MR × NR tile product over @p kc steps of the packed panel @p b and the A panel
/// @p a, stored to (@p add false) or added to C (@p c, row stride @p ldc). @p a is packed
/// (k-major, MR floats per step) when @p ars is 0; otherwise it is read in place, MR rows of
/// stride @p ars with contiguous columns. Both give the same FMA chains. With @p NV below
/// the full NV, only the first NV vectors of each panel row are computed (a panel cut by the
/// edge of C): every computed element is the same FMA chain as in the full tile.
template <int NV = SgemmIsa::nv>
[[gnu::always_inline]] inline void sgemm_tile(index_t kc, const float* __restrict a, index_t ars,
                                              const float* __restrict b, float* c, index_t ldc,
                                              bool add) noexcept {
  using I = SgemmIsa;
  constexpr int mr = I::mr, nv = NV, w = I::width, stride = I::width * I::nv;
  static_assert(NV >= 1 && NV <= I::nv);
  typename I::Vec acc[mr][nv];
#pragma GCC unroll 16
  for (int i = 0; i < mr; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < nv; ++j) acc[i][j] = I::zero();
  if (ars == 0) {
    for (index_t p = 0; p < kc; ++p, a += mr, b += stride)
      sgemm_tile_step<mr, nv, true>(acc, b, [&](int i) { return a[i]; });
  } else {
    const float* ar[mr];
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i) ar[i] = a + i * ars;
    for (index_t p = 0; p < kc; ++p, b += stride) sgemm_tile_step<mr, nv, true>(acc, b, [&](int i) { return ar[i][p]; });
  }
  if (add) {
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < nv; ++j) I::storeu(c + i * ldc + w * j, I::add(I::loadu(c + i * ldc + w * j), acc[i][j]));
  } else {
#pragma GCC unroll 16
    for (int i = 0; i < mr; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < nv; ++j) I::storeu(c + i * ldc + w * j, acc[i][j]);
  }
}

/// @brief A full tile (not inlined, so that the loop around it stays small), A packed.
[[gnu::noinline]] inline void sgemm_full_tile(index_t kc, const float* a, const float* b, float* c, index_t ldc,
                                              bool add) noexcept {
  sgemm_tile(kc, a, 0, b, c, ldc, add);
}

/// @brief A full tile with A read in place (MR rows of stride @p ars > 0, contiguous columns).
[[gnu::noinline]] inline void sgemm_full_tile_in_place(index_t kc, const float* a, index_t ars, const float* b,
                                                       float* c, index_t ldc, bool add) noexcept {
  sgemm_tile(kc, a, ars, b, c, ldc, add);
}

/// @brief A tile cut by the edge of C: computed whole into a scratch tile (the packed panels
/// are zero-padded; A in place, @p ars > 0, only with all MR rows), then its @p rows × @p cols
/// part stored or added.
[[gnu::noinline]] inline void sgemm_edge_tile(index_t kc, const float* a, index_t ars, const float* b, float* c,
                                              index_t ldc, bool add, index_t rows, index_t cols) noexcept {
  constexpr index_t mr = SgemmBlocking::mr, nr = SgemmBlocking::nr;
  alignas(64) float tile[mr * nr];
  // Only the vectors that hold columns of C are computed (a panel of 256 columns ends in 16
  // of the AVX-512 tile's 48: a third of the work instead of all of it).
  static_assert(SgemmIsa::nv <= 3);
  const index_t vectors = (cols + SgemmIsa::width - 1) / SgemmIsa::width;
  if (vectors == 1) {
    sgemm_tile<1>(kc, a, ars, b, tile, nr, false);
  } else if (vectors == 2 && SgemmIsa::nv >= 2) {
    sgemm_tile<(SgemmIsa::nv >= 2 ? 2 : 1)>(kc, a, ars, b, tile, nr, false);
  } else {
    sgemm_tile(kc, a, ars, b, tile, nr, false);
  }
  for (index_t i = 0; i < rows; ++i) {
    float* ci = c + i * ldc;
    const float* ti = tile + i * nr;
    if (add) {
      for (index_t j = 0; j < cols; ++j) ci[j] += ti[j];
    } else {
      for (index_t j = 0; j < cols; ++j) ci[j] = ti[j];
    }
  }
}

/// @brief `dst[c * ds + r] = src[r * ss + c]` for an 8 × 8 block (AVX shuffles).
[[gnu::always_inline]] inline void sgemm_transpose8(const float* src, index_t ss, float* dst, index_t ds) noexcept {
  __m256 r[8], t[8], u[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ss);
#pragma GCC unroll 4
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ds, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ds, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}

/// @brief Pack rows [0, @p mc) and depth [0, @p kc) of A (element (i, p) at
/// `a[i * rs + p * cs]`) into MR-row panels.
inline void sgemm_pack_a(float* dst, const float* a, index_t rs, index_t cs, index_t mc, index_t kc) noexcept {
  constexpr index_t mr = SgemmBlocking::mr;
  for (index_t i = 0; i < mc; i += mr) {
    const index_t rows = std::min(mr, mc - i);
    float* d = dst + i * kc;
    if (cs == 1 && mr == 8 && rows == mr) {  // rows of A are contiguous: 8 × 8 transposes
      index_t p = 0;
      for (; p + 8 <= kc; p += 8) sgemm_transpose8(a + i * rs + p, rs, d + p * mr, mr);
      for (; p < kc; ++p)
        for (index_t r = 0; r < mr; ++r) d[p * mr + r] = a[(i + r) * rs + p];
    } else if (cs == 1) {
      for (index_t r = 0; r < rows; ++r) {
        const float* s = a + (i + r) * rs;
        for (index_t p = 0; p < kc; ++p) d[p * mr + r] = s[p];
      }
      for (index_t r = rows; r < mr; ++r)
        for (index_t p = 0; p < kc; ++p) d[p * mr + r] = 0.0f;
    } else if (rs == 1 && rows == mr) {  // columns of A are contiguous: copies of MR floats
      for (index_t p = 0; p < kc; ++p) {
        const float* s = a + i + p * cs;
#pragma GCC unroll 8
        for (index_t r = 0; r < mr; ++r) d[p * mr + r] = s[r];
      }
    } else {
      for (index_t p = 0; p < kc; ++p) {
        const float* s = a + i * rs + p * cs;
        for (index_t r = 0; r < rows; ++r) d[p * mr + r] = s[r * rs];
        for (index_t r = rows; r < mr; ++r) d[p * mr + r] = 0.0f;
      }
    }
  }
}

/// @brief Pack panels [@p q0, @p q1) (NR columns each) of the @p kc × @p nc block of B
/// (element (p, j) at `b[p * rs + j * cs]`).
inline void sgemm_pack_b(float* dst, const float* b, index_t rs, index_t cs, index_t kc, index_t nc, index_t q0,
                         index_t q1) noexcept {
  constexpr index_t nr = SgemmBlocking::nr;
  for (index_t q = q0; q < q1; ++q) {
    const index_t j = q * nr, cols = std::min(nr, nc - j);
    float* d = dst + q * nr * kc;
    if (cs == 1 && cols == nr) {  // rows of B are contiguous, a whole panel: NR-float copies
      const float* s = b + j;
      for (index_t p = 0; p < kc; ++p) {
#pragma GCC unroll 4
        for (index_t v = 0; v < nr; v += SgemmIsa::width) SgemmIsa::storeu(d + p * nr + v, SgemmIsa::loadu(s + p * rs + v));
      }
    } else if (cs == 1) {  // rows of B are contiguous
      for (index_t p = 0; p < kc; ++p) {
        const float* s = b + p * rs + j;
        index_t c = 0;
        for (; c < cols; ++c) d[p * nr + c] = s[c];
        for (; c < nr; ++c) d[p * nr + c] = 0.0f;
      }
    } else {
      index_t c = 0;
      if (rs == 1) {  // columns of B are contiguous (B = W^T): 8 × 8 transposes
        for (; c + 8 <= cols; c += 8) {
          const float* s = b + (j + c) * cs;
          index_t p = 0;
          for (; p + 8 <= kc; p += 8) sgemm_transpose8(s + p, cs, d + p * nr + c, nr);
          for (; p < kc; ++p)
            for (index_t cc = 0; cc < 8; ++cc) d[p * nr + c + cc] = s[cc * cs + p];
        }
      }
      for (; c < cols; ++c) {
        const float* s = b + (j + c) * cs;
        for (index_t p = 0; p < kc; ++p) d[p * nr + c] = s[p * rs];
      }
      for (index_t c = cols; c < nr; ++c)
        for (index_t p = 0; p < kc; ++p) d[p * nr + c] = 0.0f;
    }
  }
}

/// @brief The work counters a team shares during one product: the next row panel of C to
/// compute and the next column panel of B to pack, one pair per parity of the block number
/// (a pair is reset by thread 0 after the block that used it, while the other pair is in use).
struct SgemmClaims {
  std::atomic<index_t> row_panel[2] = {0, 0};
  std::atomic<index_t> col_panel[2] = {0, 0};
};

/// @brief Claim the next items of [0, @p total) from @p next: a share of what is left
/// (guided: about 1 / (2 · @p nt) of it, at least @p min_take, at most @p max_take), so that
/// a thread slowed down by something else on its core takes less of the block and the team
/// waits for at most one small claim at the barrier. False when nothing is left.
inline bool sgemm_claim(std::atomic<index_t>& next, index_t total, int nt, index_t min_take, index_t max_take,
                        index_t& begin, index_t& end) noexcept {
  index_t cur = next.load(std::memory_order_relaxed);
  index_t take = 0;
  do {
    if (cur >= total) return false;
    take = std::min(total - cur, std::clamp<index_t>((total - cur + 2 * nt - 1) / (2 * nt), min_take, max_take));
  } while (!next.compare_exchange_weak(cur, cur + take, std::memory_order_relaxed));
  begin = cur;
  end = cur + take;
  return true;
}

/// @brief Thread @p t's part of a product computed by a team of @p nt (all of it when nt = 1):
/// per (KC × NC) block of B, the team packs B's column panels into @p shared_b, claiming them
/// a few at a time, then claims row panels of C (packing their A into this thread's
/// @p packed_a slice) until none are left. Which thread computes which rows changes from run
/// to run; the result does not, since every element is the same chain of FMAs wherever it is
/// computed. @p claims must be zero at the start and shared by the team.
inline void sgemm_thread(index_t m, index_t n, index_t k, const float* a, index_t ars, index_t acs, const float* b,
                         index_t brs, index_t bcs, float* c, index_t ldc, bool accumulate, float* shared_b,
                         float* packed_a, SgemmClaims& claims, int t, int nt) {
  using B = SgemmBlocking;
  const index_t panels = (m + B::mr - 1) / B::mr;
  const bool a_in_place = acs == 1 && ars > 0;
  int parity = 0;
  for (index_t jc = 0; jc < n; jc += B::nc) {
    const index_t nc = std::min(B::nc, n - jc);
    const index_t col_panels = (nc + B::nr - 1) / B::nr;
    for (index_t pc = 0; pc < k; pc += B::kc) {
      const index_t kc = std::min(B::kc, k - pc);
      const bool add = accumulate || pc > 0;
      index_t first = 0, last = 0;
      while (sgemm_claim(claims.col_panel[parity], col_panels, nt, 1, 4, first, last))
        sgemm_pack_b(shared_b, b + pc * brs + jc * bcs, brs, bcs, kc, nc, first, last);
#if defined(_OPENMP)
      if (nt > 1) {
#pragma omp barrier
      }
#endif
      while (sgemm_claim(claims.row_panel[parity], panels, nt, 1, B::mc / B::mr, first, last)) {
        const index_t ic = first * B::mr, mc = std::min(m, last * B::mr) - ic;
        // Rows of A that are contiguous are read in place (full MR-row panels), the rest packed.
        const index_t whole = a_in_place ? mc / B::mr * B::mr : 0;
        if (whole < mc) sgemm_pack_a(packed_a + whole * kc, a + (ic + whole) * ars + pc * acs, ars, acs, mc - whole, kc);
        for (index_t q = 0; q < col_panels; ++q) {
          const index_t j = q * B::nr, cols = std::min(B::nr, nc - j);
          const float* bq = shared_b + q * B::nr * kc;
          for (index_t i = 0; i < mc; i += B::mr) {
            const index_t rows = std::min(B::mr, mc - i);
            float* ct = c + (ic + i) * ldc + jc + j;
            const bool in_place = i < whole;
            const float* at = in_place ? a + (ic + i) * ars + pc : packed_a + i * kc;
            if (rows == B::mr && cols == B::nr) {
              if (in_place) {
                sgemm_full_tile_in_place(kc, at, ars, bq, ct, ldc, add);
              } else {
                sgemm_full_tile(kc, at, bq, ct, ldc, add);
              }
            } else {
              sgemm_edge_tile(kc, at, in_place ? ars : 0, bq, ct, ldc, add, rows, cols);
            }
          }
        }
      }
#if defined(_OPENMP)
      if (nt > 1) {
#pragma omp barrier
      }
#endif
      if (t == 0) {
        claims.row_panel[parity].store(0, std::memory_order_relaxed);
        claims.col_panel[parity].store(0, std::memory_order_relaxed);
      }
      parity ^= 1;
    }
  }
}

/// @brief Tile sizes of the small-product path: MR rows × NV vectors.
struct SgemmSmallBlocking {
#if defined(__AVX512F__)
  static constexpr int mr = 8;
  static constexpr int nv = 2;
#else
  static constexpr int mr = 6;
  static constexpr int nv = 2;
#endif
  /// Largest packed or read B (k × n floats) handled by the small path: it stays in L2.
  static constexpr index_t max_b = 64 * 1024;
};

/// @brief An R × NV-vector tile of a small product over @p kc steps: A read in place
/// (element (i, p) at `a[i * ars + p * acs]`, broadcast), B row-major with row stride @p ldb
/// and whole vectors readable; the last vector stores only @p last_cols columns of C.
/// The arithmetic is sgemm_tile's: one FMA chain per element from zero, then stored or added.
template <int R, int NV>
[[gnu::noinline]] void sgemm_small_tile(index_t kc, const float* a, index_t ars, index_t acs, const float* b,
                                        index_t ldb, float* c, index_t ldc, bool add, int last_cols) noexcept {
  using I = SgemmIsa;
  constexpr int w = I::width;
  typename I::Vec acc[R][NV];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = I::zero();
  const float* ar[R];
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) ar[i] = a + i * ars;
  for (index_t p = 0; p < kc; ++p, b += ldb) sgemm_tile_step<R, NV, false>(acc, b, [&](int i) { return ar[i][p * acs]; });
#pragma GCC unroll 16
  for (int i = 0; i < R; ++i) {
    float* ci = c + i * ldc;
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) {
      if (j + 1 < NV || last_cols == w) {
        I::storeu(ci + w * j, add ? I::add(I::loadu(ci + w * j), acc[i][j]) : acc[i][j]);
      } else {
        alignas(64) float part[w];
        I::storeu(part, acc[i][j]);
        for (int l = 0; l < last_cols; ++l) ci[w * j + l] = add ? ci[w * j + l] + part[l] : part[l];
      }
    }
  }
}

/// @brief The small-product tile for @p rows (1..MR) and @p vectors (1..NV).
using SgemmSmallTileFn = void (*)(index_t, const float*, index_t, index_t, const float*, index_t, float*, index_t,
                                  bool, int) noexcept;
template <int... Rs, int... Vs>
constexpr auto sgemm_small_table(std::integer_sequence<int, Rs...>, std::integer_sequence<int, Vs...> vs) {
  constexpr int nv = sizeof...(Vs);
  std::array<SgemmSmallTileFn, sizeof...(Rs) * nv> table{};
  std::size_t slot = 0;
  (
      [&]<int R>() {
        ((table[slot++] = &sgemm_small_tile<R + 1, Vs + 1>), ...);
      }.template operator()<Rs>(),
      ...);
  (void)vs;
  return table;
}
inline SgemmSmallTileFn sgemm_small_tile_for(int rows, int vectors) noexcept {
  using S = SgemmSmallBlocking;
  static constexpr auto table =
      sgemm_small_table(std::make_integer_sequence<int, S::mr>{}, std::make_integer_sequence<int, S::nv>{});
  return table[static_cast<std::size_t>((rows - 1) * S::nv + (vectors - 1))];
}

/// @brief The packed-B buffer of the small path (per thread).
inline SgemmBuffer& sgemm_small_b_buffer() {
  static thread_local SgemmBuffer buffer;
  return buffer;
}

/// @brief Whether sgemm runs a product of these sizes on the small path: on one thread, with
/// B (k × n, padded to whole vectors) small enough to stay in L2. Attention's per-head products.
inline bool sgemm_small_fits(index_t n, index_t k) noexcept {
  const index_t np = (n + SgemmIsa::width - 1) / SgemmIsa::width * SgemmIsa::width;
  return np * k <= SgemmSmallBlocking::max_b;
}

/// @brief A small product on the calling thread, without packing A (read in place) and
/// packing B only when its rows are not contiguous whole vectors (row-major with n a multiple
/// of the vector width is read in place). Each element of C is the same chain of FMAs as in
/// sgemm_thread (from zero over each KC block, blocks added in order), so the two paths give
/// identical results.
inline void sgemm_small(index_t m, index_t n, index_t k, const float* a, index_t ars, index_t acs, const float* b,
                        index_t brs, index_t bcs, float* c, index_t ldc, bool accumulate) {
  using S = SgemmSmallBlocking;
  constexpr index_t w = SgemmIsa::width;
  const index_t np = (n + w - 1) / w * w;
  const float* bp = b;
  index_t ldb = brs;
  if (bcs != 1 || np != n) {
    float* buf = sgemm_small_b_buffer().get(static_cast<std::size_t>(np * k));
    if (brs == 1 && n % 8 == 0) {  // columns of B are contiguous (B = K^T): 8 × 8 transposes
      for (index_t j = 0; j < n; j += 8) {
        index_t p = 0;
        for (; p + 8 <= k; p += 8) sgemm_transpose8(b + j * bcs + p, bcs, buf + p * np + j, np);
        for (; p < k; ++p)
          for (index_t jj = j; jj < j + 8; ++jj) buf[p * np + jj] = b[jj * bcs + p];
      }
    } else {
      for (index_t p = 0; p < k; ++p)
        for (index_t j = 0; j < n; ++j) buf[p * np + j] = b[p * brs + j * bcs];
    }
    for (index_t p = 0; p < k; ++p)
      for (index_t j = n; j < np; ++j) buf[p * np + j] = 0.0f;
    bp = buf;
    ldb = np;
  }
  constexpr index_t group = S::nv * w;
  for (index_t pc = 0; pc < k; pc += SgemmBlocking::kc) {
    const index_t kc = std::min(SgemmBlocking::kc, k - pc);
    const bool add = accumulate || pc > 0;
    for (index_t j = 0; j < n; j += group) {
      const index_t cols = std::min(group, n - j);
      const int vectors = static_cast<int>((cols + w - 1) / w);
      const int last_cols = static_cast<int>(cols - (vectors - 1) * w);
      const float* bj = bp + pc * ldb + j;
      for (index_t i = 0; i < m; i += S::mr) {
        const int rows = static_cast<int>(std::min<index_t>(S::mr, m - i));
        sgemm_small_tile_for(rows, vectors)(kc, a + i * ars + pc * acs, ars, acs, bj, ldb, c + i * ldc + j, ldc, add,
                                            last_cols);
      }
    }
  }
}

#endif  // KADAPTER_OWN_SGEMM

/// @brief Whether this build's fp32 products use the kernel of this file.
inline constexpr bool has_own_sgemm = KADAPTER_OWN_SGEMM != 0;

/// @brief The micro-kernel's instruction set: "avx512", "avx2" or "eigen" (no own kernel).
inline const char* sgemm_isa() noexcept {
#if KADAPTER_OWN_SGEMM
  return SgemmIsa::name;
#else
  return "eigen";
#endif
}

#if KADAPTER_OWN_SGEMM
/// @brief `C = A · B` (@p accumulate false) or `C += A · B`, fp32.
///
/// C is m × n, row-major with row stride @p ldc; element (i, p) of A is
/// `a[i * ars + p * acs]`, element (p, j) of B is `b[p * brs + j * bcs]`. Runs on the kernel
/// threads unless called inside a parallel region. C must not overlap A or B.
inline void sgemm(index_t m, index_t n, index_t k, const float* a, index_t ars, index_t acs, const float* b,
                  index_t brs, index_t bcs, float* c, index_t ldc, bool accumulate) {
  using B = SgemmBlocking;
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (index_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    return;
  }
  int nt = 1;
#if defined(_OPENMP)
  // Two threads need at least a few row panels each to be worth a barrier per block.
  if (!omp_in_parallel()) nt = static_cast<int>(std::clamp<index_t>(m / (4 * B::mr), 1, kernel_threads()));
#endif
  if (nt == 1 && sgemm_small_fits(n, k)) {
    sgemm_small(m, n, k, a, ars, acs, b, brs, bcs, c, ldc, accumulate);
    return;
  }
  const index_t nc_max = std::min(B::nc, (n + B::nr - 1) / B::nr * B::nr);
  float* shared_b = sgemm_b_buffer().get(static_cast<std::size_t>(nc_max * std::min(B::kc, k)));
  // One A slice per thread, enough for MC rows (or all of m) by KC.
  const index_t a_slice = (std::min(B::mc, (m + B::mr - 1) / B::mr * B::mr) * std::min(B::kc, k) + 15) / 16 * 16;
  float* packed_a = sgemm_a_buffer().get(static_cast<std::size_t>(a_slice * nt));
  SgemmClaims claims;
#if defined(_OPENMP)
  if (nt > 1) {
#pragma omp parallel num_threads(nt)
    sgemm_thread(m, n, k, a, ars, acs, b, brs, bcs, c, ldc, accumulate, shared_b,
                 packed_a + a_slice * omp_get_thread_num(), claims, omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  sgemm_thread(m, n, k, a, ars, acs, b, brs, bcs, c, ldc, accumulate, shared_b, packed_a, claims, 0, 1);
}
#endif

}  // namespace kadapter::detail
