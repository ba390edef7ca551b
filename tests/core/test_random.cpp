// Dropout masks: DropoutMask (the per-stream hash and scale computed once, an integer
// comparison per element) must draw exactly the mask of Dropout::factor, element by element,
// for probabilities that are and are not exact binary fractions.
#define BOOST_TEST_MODULE random
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <vector>

#include "kadapter/kadapter.hpp"

using namespace kadapter;

namespace {

template <class T>
void check_mask(const Dropout& d, std::uint64_t first, std::int64_t n) {
  const DropoutMask<T> mask(d);
  std::int64_t mismatches = 0, dropped = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    const std::uint64_t index = first + static_cast<std::uint64_t>(j);
    const T expected = d.factor<T>(index);
    mismatches += mask.factor(index) != expected;
    dropped += expected == T(0);
  }
  BOOST_TEST(mismatches == 0);
  // apply(), in place and out of place, is the same product.
  std::vector<T> src(static_cast<std::size_t>(n)), out(src.size()), in_place(src.size());
  for (std::int64_t j = 0; j < n; ++j) src[static_cast<std::size_t>(j)] = T(1) + static_cast<T>(j % 7);
  in_place = src;
  mask.apply(out.data(), src.data(), first, n);
  mask.apply(in_place.data(), in_place.data(), first, n);
  std::int64_t wrong = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    const T expected = src[static_cast<std::size_t>(j)] * d.factor<T>(first + static_cast<std::uint64_t>(j));
    wrong += out[static_cast<std::size_t>(j)] != expected;
    wrong += in_place[static_cast<std::size_t>(j)] != expected;
  }
  BOOST_TEST(wrong == 0);
  // The dropped fraction is p (binomial: within 6 standard deviations).
  const double p = d.p, rate = static_cast<double>(dropped) / static_cast<double>(n);
  BOOST_TEST(std::abs(rate - p) <= 6.0 * std::sqrt(p * (1.0 - p) / static_cast<double>(n)) + 1e-12);
}

}  // namespace

BOOST_AUTO_TEST_CASE(dropout_mask_matches_dropout_factor) {
  const float ps[] = {0.1f, 0.3f, 0.5f, 0.9f, 1e-7f, 0.9999999f, 0.0f, 0.25f};
  const std::uint64_t firsts[] = {0, token_element(3, 17, 0), score_element(12345, 63, 0), ~std::uint64_t{0} - 5000};
  std::uint64_t seed = 42;
  for (float p : ps)
    for (std::uint64_t first : firsts) {
      BOOST_TEST_CONTEXT("p=" << p << " first=" << first) {
        const Dropout d{p, seed++, dropout_stream(5, 1, 2)};
        check_mask<float>(d, first, 20000);
        check_mask<double>(d, first, 2000);
      }
    }
}
