// The CPU backend's matrix products (detail::matmul, and detail::sgemm where the build has
// its own fp32 kernel) against a plain triple loop in double: every operand layout,
// overwrite and accumulate, edges of the register tile and of the packed blocks, sub-blocks
// of larger matrices, and thread-count independence.
//
// Built twice: once with the build's flags (AVX-512 on this project's machines) and once
// with AVX-512 switched off (test_gemm_avx2), so that both micro-kernels are checked.
#define BOOST_TEST_MODULE gemm
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "kadapter/kadapter.hpp"

using namespace kadapter;

namespace {

using RowMat = detail::RowMajorMatrix<float>;
using RowMatD = detail::RowMajorMatrix<double>;

RowMat random_matrix(index_t rows, index_t cols, std::mt19937& rng) {
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  RowMat m(rows, cols);
  for (index_t i = 0; i < m.size(); ++i) m.data()[i] = d(rng);
  return m;
}

// |computed - exact| <= gamma_k * sum_p |a_ip| |b_pj| with gamma_k = k u / (1 - k u),
// u = 2^-24: the classical bound for any order of a k-term float dot product (Higham,
// Accuracy and Stability of Numerical Algorithms, 3.1), plus one rounding of the addition
// to the old value of C when accumulating.
void check_product(const RowMat& got, const RowMatD& exact, const RowMatD& magnitude, index_t k, bool accumulate,
                   const RowMatD& old_c) {
  const double u = std::ldexp(1.0, -24);
  const double kk = static_cast<double>(k + (accumulate ? 1 : 0));
  const double gamma = kk * u / (1.0 - kk * u);
  double worst = 0;
  for (index_t i = 0; i < got.rows(); ++i)
    for (index_t j = 0; j < got.cols(); ++j) {
      const double bound = gamma * (magnitude(i, j) + (accumulate ? std::abs(old_c(i, j)) : 0.0)) + 1e-30;
      worst = std::max(worst, std::abs(got(i, j) - exact(i, j)) / bound);
    }
  BOOST_TEST(worst <= 1.0, "error reaches " << worst << " of the float dot-product bound");
}

// C (=|+=) op(A) · op(B), op chosen by the flags; checks matmul on maps of the operands.
void run_case(index_t m, index_t n, index_t k, bool a_transposed, bool b_transposed, bool accumulate,
              std::mt19937& rng) {
  BOOST_TEST_CONTEXT("m=" << m << " n=" << n << " k=" << k << " aT=" << a_transposed << " bT=" << b_transposed
                          << " acc=" << accumulate) {
    // Stored operands: A is m×k, or k×m when transposed; B is k×n, or n×k when transposed.
    const RowMat a_store = a_transposed ? random_matrix(k, m, rng) : random_matrix(m, k, rng);
    const RowMat b_store = b_transposed ? random_matrix(n, k, rng) : random_matrix(k, n, rng);
    const RowMat c0 = random_matrix(m, n, rng);
    RowMatD exact(m, n), magnitude(m, n);
    const RowMatD old_c = c0.cast<double>();
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) {
        double s = accumulate ? old_c(i, j) : 0.0, mag = 0;
        for (index_t p = 0; p < k; ++p) {
          const double av = a_transposed ? a_store(p, i) : a_store(i, p);
          const double bv = b_transposed ? b_store(j, p) : b_store(p, j);
          s += av * bv;
          mag += std::abs(av * bv);
        }
        exact(i, j) = s;
        magnitude(i, j) = mag;
      }
    RowMat c = c0;
    Eigen::Map<const RowMat> am(a_store.data(), a_store.rows(), a_store.cols());
    Eigen::Map<const RowMat> bm(b_store.data(), b_store.rows(), b_store.cols());
    Eigen::Map<RowMat> cm(c.data(), m, n);
    if (a_transposed && b_transposed) detail::matmul(cm, am.transpose(), bm.transpose(), accumulate);
    if (a_transposed && !b_transposed) detail::matmul(cm, am.transpose(), bm, accumulate);
    if (!a_transposed && b_transposed) detail::matmul(cm, am, bm.transpose(), accumulate);
    if (!a_transposed && !b_transposed) detail::matmul(cm, am, bm, accumulate);
    check_product(c, exact, magnitude, k, accumulate, old_c);
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(reports_its_kernel) {
  std::printf("fp32 product kernel: %s, %d kernel threads\n", detail::sgemm_isa(), kernel_threads());
#if defined(__AVX512F__) && !defined(KADAPTER_NO_OWN_SGEMM)
  BOOST_TEST(std::string(detail::sgemm_isa()) == "avx512");
#elif defined(__AVX2__) && defined(__FMA__) && !defined(KADAPTER_NO_OWN_SGEMM)
  BOOST_TEST(std::string(detail::sgemm_isa()) == "avx2");
#endif
}

BOOST_AUTO_TEST_CASE(every_layout_and_edge) {
  std::mt19937 rng(7);
  // Sizes around the register tile (8×48 or 6×16), the depth block (256) and the row block
  // (192), and 1.
  const index_t ms[] = {1, 5, 8, 13, 49, 200};
  const index_t ns[] = {1, 16, 47, 48, 97};
  const index_t ks[] = {1, 3, 256, 257, 600};
  for (index_t m : ms)
    for (index_t n : ns)
      for (index_t k : ks)
        for (int layout = 0; layout < 4; ++layout) run_case(m, n, k, layout & 1, layout & 2, (m + n + k + layout) % 2, rng);
}

BOOST_AUTO_TEST_CASE(model_shapes_on_all_threads) {
  std::mt19937 rng(11);
  // x · W^T, dY · W, dY^T · X at one of the training step's shapes.
  run_case(256, 768, 768, false, true, false, rng);
  run_case(256, 768, 768, false, false, true, rng);
  run_case(768, 768, 256, true, false, true, rng);
  run_case(1024, 3072, 96, false, true, false, rng);
}

BOOST_AUTO_TEST_CASE(sub_blocks_of_larger_matrices) {
  // The products of linear_concat_* read column blocks of W and write column blocks of dW:
  // strided operands and a destination whose rows are longer than its width.
  std::mt19937 rng(3);
  const index_t m = 70, n = 100, k = 300;
  const RowMat a = random_matrix(m, k + 20, rng), w = random_matrix(n + 10, k + 20, rng);
  RowMat c = random_matrix(m, n + 30, rng);
  const RowMat c0 = c;
  Eigen::Map<const RowMat> am(a.data(), a.rows(), a.cols()), wm(w.data(), w.rows(), w.cols());
  Eigen::Map<RowMat> cm(c.data(), c.rows(), c.cols());
  detail::matmul(cm.middleCols(10, n), am.middleCols(5, k), wm.block(3, 7, n, k).transpose(), true);
  RowMatD exact = c0.cast<double>(), magnitude = RowMatD::Zero(m, n + 30);
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < n; ++j)
      for (index_t p = 0; p < k; ++p) {
        const double t = static_cast<double>(a(i, 5 + p)) * w(3 + j, 7 + p);
        exact(i, 10 + j) += t;
        magnitude(i, 10 + j) += std::abs(t);
      }
  check_product(c, exact, magnitude, k, true, c0.cast<double>());
  // Columns outside the block are untouched.
  BOOST_TEST((c.leftCols(10).array() == c0.leftCols(10).array()).all());
  BOOST_TEST((c.rightCols(20).array() == c0.rightCols(20).array()).all());
}

BOOST_AUTO_TEST_CASE(empty_depth_and_thread_independence) {
  std::mt19937 rng(5);
  RowMat a(9, 0), b(0, 50);
  RowMat c = random_matrix(9, 50, rng);
  const RowMat c0 = c;
  Eigen::Map<RowMat> cm(c.data(), 9, 50);
  detail::matmul(cm, Eigen::Map<const RowMat>(a.data(), 9, 0), Eigen::Map<const RowMat>(b.data(), 0, 50), true);
  BOOST_TEST((c.array() == c0.array()).all());
  detail::matmul(cm, Eigen::Map<const RowMat>(a.data(), 9, 0), Eigen::Map<const RowMat>(b.data(), 0, 50), false);
  BOOST_TEST((c.array() == 0.0f).all());

  // The same product on one thread and on several: bit-identical, for a product large
  // enough to be split over the threads and for one that is not (fewer than 4e6
  // multiply-adds). At least two threads are asked for; the CTest variants *_thread_limit run
  // this with OMP_THREAD_LIMIT=1, where the team is smaller than asked for.
  const index_t shapes[][3] = {{300, 200, 520}, {56, 60, 893}};
  for (const auto& shape : shapes) {
    const index_t m = shape[0], n = shape[1], k = shape[2];
    const RowMat x = random_matrix(m, k, rng), w = random_matrix(n, k, rng);
    RowMat y1(m, n), yn(m, n);
    const int threads = Eigen::nbThreads();
    Eigen::setNbThreads(1);
    detail::matmul(Eigen::Map<RowMat>(y1.data(), m, n), Eigen::Map<const RowMat>(x.data(), m, k),
                   Eigen::Map<const RowMat>(w.data(), n, k).transpose(), false);
    Eigen::setNbThreads(std::max(2, threads));
    detail::matmul(Eigen::Map<RowMat>(yn.data(), m, n), Eigen::Map<const RowMat>(x.data(), m, k),
                   Eigen::Map<const RowMat>(w.data(), n, k).transpose(), false);
    Eigen::setNbThreads(threads);
    BOOST_TEST_CONTEXT("m=" << m << " n=" << n << " k=" << k) {
#if defined(_OPENMP)
      // With a team of one thread where two were asked for, a product left to Eigen (no own
      // kernel) is threaded by Eigen itself with blocking sized for two threads: correct, but
      // not bit-identical to the serial product. Check it against the exact product then.
      if (!detail::has_own_sgemm && omp_get_thread_limit() < 2) {
        RowMatD exact(m, n), magnitude(m, n);
        for (index_t i = 0; i < m; ++i)
          for (index_t j = 0; j < n; ++j) {
            double sum = 0, mag = 0;
            for (index_t p = 0; p < k; ++p) {
              sum += static_cast<double>(x(i, p)) * w(j, p);
              mag += std::abs(static_cast<double>(x(i, p)) * w(j, p));
            }
            exact(i, j) = sum;
            magnitude(i, j) = mag;
          }
        check_product(yn, exact, magnitude, k, false, exact);
        continue;
      }
#endif
      BOOST_TEST((y1.array() == yn.array()).all());
    }
  }
}

BOOST_AUTO_TEST_CASE(several_column_blocks_and_inside_a_parallel_region) {
  std::mt19937 rng(13);
  // n beyond one packed block of B (768 columns in the own kernel), and beyond several.
  run_case(20, 3100, 40, false, true, false, rng);
  run_case(40, 800, 300, false, false, false, rng);
  run_case(17, 3200, 9, false, false, true, rng);

  // Called from the threads of an enclosing parallel region (as attention does per head):
  // each call runs on its own thread and gives the serial result.
  const index_t m = 64, n = 64, k = 64;
  std::vector<RowMat> a, b, c, expected;
  for (int i = 0; i < 8; ++i) {
    a.push_back(random_matrix(m, k, rng));
    b.push_back(random_matrix(k, n, rng));
    c.emplace_back(m, n);
    expected.emplace_back(m, n);
    detail::matmul(Eigen::Map<RowMat>(expected[i].data(), m, n), Eigen::Map<const RowMat>(a[i].data(), m, k),
                   Eigen::Map<const RowMat>(b[i].data(), k, n), false);
  }
#if defined(_OPENMP)
#pragma omp parallel for num_threads(2)
#endif
  for (int i = 0; i < 8; ++i)
    detail::matmul(Eigen::Map<RowMat>(c[i].data(), m, n), Eigen::Map<const RowMat>(a[i].data(), m, k),
                   Eigen::Map<const RowMat>(b[i].data(), k, n), false);
  for (int i = 0; i < 8; ++i) BOOST_TEST((c[i].array() == expected[i].array()).all());
}

#if KADAPTER_OWN_SGEMM
BOOST_AUTO_TEST_CASE(small_path_equals_packed_path) {
  // Products with a small B run on one thread without packing A (attention's per-head
  // products); their results must be bit-identical to the packed kernel's, which computes
  // each element as the same chain of FMAs. Every layout, edges of the small tiles (rows,
  // whole and partial vectors), depth beyond one block, overwrite and accumulate.
  std::mt19937 rng(17);
  const index_t shapes[][3] = {{64, 64, 64}, {23, 23, 64}, {64, 64, 23}, {13, 40, 300}, {8, 16, 256},
                               {5, 97, 257}, {1, 1, 1}, {9, 33, 7}, {128, 64, 128}};
  for (const auto& s : shapes) {
    const index_t m = s[0], n = s[1], k = s[2];
    BOOST_REQUIRE(detail::sgemm_small_fits(n, k));
    for (int layout = 0; layout < 8; ++layout) {
      const bool at = layout & 1, bt = layout & 2, acc = layout & 4;
      const RowMat a = at ? random_matrix(k, m, rng) : random_matrix(m, k, rng);
      const RowMat b = bt ? random_matrix(n, k, rng) : random_matrix(k, n, rng);
      const RowMat c0 = random_matrix(m, n, rng);
      const index_t ars = at ? 1 : k, acs = at ? m : 1, brs = bt ? 1 : n, bcs = bt ? k : 1;
      RowMat small = c0, packed = c0;
      detail::sgemm_small(m, n, k, a.data(), ars, acs, b.data(), brs, bcs, small.data(), n, acc);
      detail::SgemmBuffer shared_b, packed_a;  // 64-byte aligned, as the packed kernel loads them
      detail::SgemmClaims claims;
      detail::sgemm_thread(m, n, k, a.data(), ars, acs, b.data(), brs, bcs, packed.data(), n, acc,
                           shared_b.get(3072 * 256), packed_a.get(192 * 256), claims, 0, 1);
      BOOST_TEST_CONTEXT("m=" << m << " n=" << n << " k=" << k << " aT=" << at << " bT=" << bt << " acc=" << acc) {
        BOOST_TEST((small.array() == packed.array()).all());
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(a_in_place_equals_a_packed) {
  // With contiguous rows, A is read in place by the packed kernel (whole MR-row panels; the
  // rest of a row block is packed). The same values stored transposed are always packed: the
  // two must be bit-identical. Rows not a multiple of MR, columns not a multiple of NR,
  // depth beyond one KC block, several column blocks, one thread and the whole team.
  std::mt19937 rng(23);
  using B = detail::SgemmBlocking;
  const index_t shapes[][3] = {{1024, 768, 768}, {B::mr * 40 + 3, B::nr * 3 + 7, B::kc * 2 + 9},
                               {B::mc + 1, B::nc + B::nr + 1, 100}, {B::mr - 1, 2 * B::nr, 513}};
  const int threads = Eigen::nbThreads();
  for (const auto& s : shapes) {
    const index_t m = s[0], n = s[1], k = s[2];
    const RowMat a = random_matrix(m, k, rng);
    const RowMat at = a.transpose();
    const RowMat b = random_matrix(n, k, rng);  // used as B = b^T, as the linear layers do
    const RowMat c0 = random_matrix(m, n, rng);
    for (const int team : {1, std::max(2, threads)})
      for (const bool acc : {false, true}) {
        Eigen::setNbThreads(team);
        RowMat in_place = c0, packed = c0;
        detail::sgemm(m, n, k, a.data(), k, 1, b.data(), 1, k, in_place.data(), n, acc);
        detail::sgemm(m, n, k, at.data(), 1, m, b.data(), 1, k, packed.data(), n, acc);
        BOOST_TEST_CONTEXT("m=" << m << " n=" << n << " k=" << k << " threads=" << team << " acc=" << acc) {
          BOOST_TEST((in_place.array() == packed.array()).all());
        }
      }
  }
  Eigen::setNbThreads(threads);

  // The packed kernel itself on one thread (sgemm would send the small shapes to the small
  // path): whole panels read in place leave the A buffer untouched, the last partial panel is
  // packed, and a transposed A is packed.
  for (const index_t m : {B::mr * 6, B::mr * 5 + 3}) {
    const index_t n = B::nr + 5, k = B::kc + 7;
    const RowMat a = random_matrix(m, k, rng), at = a.transpose(), b = random_matrix(k, n, rng);
    RowMat in_place(m, n), packed(m, n);
    detail::SgemmBuffer shared_b, packed_a;
    float* pa = packed_a.get(static_cast<std::size_t>(B::mc * B::kc));
    std::fill(pa, pa + B::mc * B::kc, std::numeric_limits<float>::quiet_NaN());
    {
      detail::SgemmClaims claims;
      detail::sgemm_thread(m, n, k, a.data(), k, 1, b.data(), n, 1, in_place.data(), n, false,
                           shared_b.get(static_cast<std::size_t>(B::nc * B::kc)), pa, claims, 0, 1);
    }
    const bool untouched = std::all_of(pa, pa + B::mc * B::kc, [](float v) { return std::isnan(v); });
    BOOST_TEST_CONTEXT("m=" << m) {
      BOOST_TEST(untouched == (m % B::mr == 0));  // a partial last panel is packed
      {
        detail::SgemmClaims claims;
        detail::sgemm_thread(m, n, k, at.data(), 1, m, b.data(), n, 1, packed.data(), n, false,
                             shared_b.get(static_cast<std::size_t>(B::nc * B::kc)), pa, claims, 0, 1);
      }
      BOOST_TEST(!std::all_of(pa, pa + B::mc * B::kc, [](float v) { return std::isnan(v); }));
      BOOST_TEST((in_place.array() == packed.array()).all());
    }
  }
}
#endif
