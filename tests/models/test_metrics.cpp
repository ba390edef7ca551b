// Metrics (include/kadapter/train/metrics.hpp) on small hand-checked cases, including the
// authors' edge cases (no predictions, everything no_relation, empty type sets).
#define BOOST_TEST_MODULE metrics
#include <boost/test/unit_test.hpp>
#include <cstdint>
#include <vector>

#include "kadapter/train/metrics.hpp"

using namespace kadapter;
using Ids = std::vector<std::int64_t>;
namespace tt = boost::test_tools;

namespace {
constexpr std::int64_t NR = tacred_no_relation_id;  // 28
}

// ---- TACRED -----------------------------------------------------------------------------

// gold 1 2 NR 3 NR, predicted 1 NR 5 4 NR:
//  guesses (predicted != NR): 1, 5, 4 -> 3; gold relations: 1, 2, 3 -> 3; correct: #0 -> 1.
//  P = 1/3, R = 1/3, F1 = 1/3. (#1: NR guess for gold 2 = a miss; #2: guess 5 on a NR
//  example = a false positive; #3: wrong relation = both.)
BOOST_AUTO_TEST_CASE(tacred_micro) {
  const Ids gold = {1, 2, NR, 3, NR}, pred = {1, NR, 5, 4, NR};
  const auto c = tacred_counts(pred, gold);
  BOOST_TEST(c.correct == 1u);
  BOOST_TEST(c.guessed == 3u);
  BOOST_TEST(c.gold == 3u);
  const auto r = tacred_micro_prf(pred, gold);
  BOOST_TEST(r.precision == 1.0 / 3, tt::tolerance(1e-12));
  BOOST_TEST(r.recall == 1.0 / 3, tt::tolerance(1e-12));
  BOOST_TEST(r.f1 == 1.0 / 3, tt::tolerance(1e-12));
}

// gold 1 2 3 NR, predicted 1 2 NR NR: P = 2/2 = 1, R = 2/3, F1 = 2·(2/3)/(5/3) = 0.8.
BOOST_AUTO_TEST_CASE(tacred_precision_recall_differ) {
  const auto r = tacred_micro_prf(Ids{1, 2, NR, NR}, Ids{1, 2, 3, NR});
  BOOST_TEST(r.precision == 1.0, tt::tolerance(1e-12));
  BOOST_TEST(r.recall == 2.0 / 3, tt::tolerance(1e-12));
  BOOST_TEST(r.f1 == 0.8, tt::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(tacred_edge_cases) {
  // Only no_relation guesses: nothing guessed -> precision 1.0 (their convention), R = 0.
  auto r = tacred_micro_prf(Ids{NR, NR}, Ids{1, 2});
  BOOST_TEST(r.precision == 1.0);
  BOOST_TEST(r.recall == 0.0);
  BOOST_TEST(r.f1 == 0.0);
  // Everything no_relation, gold and guess: P = 1, R = 0 (no gold), F1 = 0.
  r = tacred_micro_prf(Ids{NR, NR, NR}, Ids{NR, NR, NR});
  BOOST_TEST(r.precision == 1.0);
  BOOST_TEST(r.recall == 0.0);
  BOOST_TEST(r.f1 == 0.0);
  // Gold all no_relation, one guess: a false positive: P = 0, R = 0, F1 = 0.
  r = tacred_micro_prf(Ids{4, NR}, Ids{NR, NR});
  BOOST_TEST(r.precision == 0.0);
  BOOST_TEST(r.f1 == 0.0);
  // No examples at all.
  r = tacred_micro_prf(Ids{}, Ids{});
  BOOST_TEST(r.precision == 1.0);
  BOOST_TEST(r.f1 == 0.0);
  // Another no_relation id (a label map built from the data): 0.
  r = tacred_micro_prf(Ids{0, 1, 2}, Ids{1, 1, 0}, 0);
  BOOST_TEST(r.precision == 0.5);  // guesses 1, 2; correct 1
  BOOST_TEST(r.recall == 0.5);     // gold 1, 1; correct 1
  BOOST_CHECK_THROW(tacred_micro_prf(Ids{1}, Ids{1, 2}), Error);
}

// ---- entity typing ----------------------------------------------------------------------

namespace {
// 3 entities x 4 types.
//  #0 logits  2 -1 .5 -3 -> {0, 2}; gold {0}
//  #1 logits -1 -2 -3 -4 -> {} (positive_logit) or {0} (positive_or_top); gold {1}
//  #2 logits -1  3 -1  1 -> {1, 3}; gold {1, 3}
const std::vector<float> kLogits = {2, -1, .5f, -3, -1, -2, -3, -4, -1, 3, -1, 1};
const std::vector<float> kGold = {1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 1};
}  // namespace

// positive_logit: exact = #2 -> 1/3.
//  micro: predicted 2+0+2 = 4, gold 1+1+2 = 4, correct 1+0+2 = 3: P = R = F1 = 3/4.
//  macro: P = (1/2 + [#1 empty: adds 0] + 1) / 3 = 1/2; R = (1 + 0 + 1) / 3 = 2/3;
//         F1 = 2·(1/2)(2/3) / (7/6) = 4/7.
BOOST_AUTO_TEST_CASE(entity_typing_open_entity) {
  const auto s = entity_typing_scores<float>(kLogits, kGold, 4);
  BOOST_TEST(s.examples == 3u);
  BOOST_TEST(s.exact == 1u);
  BOOST_TEST(s.strict_accuracy == 1.0 / 3, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_micro.precision == 0.75, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_micro.recall == 0.75, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_micro.f1 == 0.75, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_macro.precision == 0.5, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_macro.recall == 2.0 / 3, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_macro.f1 == 4.0 / 7, tt::tolerance(1e-12));
}

// positive_or_top: #1 predicts {0} (its top logit). micro: predicted 5, correct 3, gold 4:
// P = 3/5, R = 3/4, F1 = 2·.45/1.35 = 2/3. macro unchanged (#1 adds 0/1 to P): 1/2, 2/3.
BOOST_AUTO_TEST_CASE(entity_typing_top_fallback) {
  const auto s = entity_typing_scores<float>(kLogits, kGold, 4, TypeDecision::positive_or_top);
  BOOST_TEST(s.exact == 1u);
  BOOST_TEST(s.loose_micro.precision == 0.6, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_micro.recall == 0.75, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_micro.f1 == 2.0 / 3, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_macro.precision == 0.5, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_macro.f1 == 4.0 / 7, tt::tolerance(1e-12));
  BOOST_TEST(
      decide_types<float>(std::vector<float>{-1, -1}, TypeDecision::positive_or_top) == (Ids{0, 1}),
      tt::per_element());  // ties at the top: every maximum counts
}

// The FIGER script's reported numbers, batch size 2: batches {#0, #1}, {#2}; the lists are
// extended with all predictions so far after each batch -> #0, #1 twice, #2 once.
//  micro: predicted 2·2 + 2·1 + 2 = 8, gold 2·1 + 2·1 + 2 = 6, correct 2·1 + 0 + 2 = 4:
//         P = 1/2, R = 2/3, F1 = 4/7.
//  macro over 5 entries: P = (2·1/2 + 2·0 + 1)/5 = 0.4, R = (2·1 + 2·0 + 1)/5 = 0.6,
//         F1 = 2·.24/1 = 0.48. Strict accuracy is unweighted: 1/3.
BOOST_AUTO_TEST_CASE(entity_typing_figer_reported) {
  const auto s = figer_reported_scores<float>(kLogits, kGold, 4, 2);
  BOOST_TEST(s.strict_accuracy == 1.0 / 3, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_micro.precision == 0.5, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_micro.recall == 2.0 / 3, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_micro.f1 == 4.0 / 7, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_macro.precision == 0.4, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_macro.recall == 0.6, tt::tolerance(1e-12));
  BOOST_TEST(s.loose_macro.f1 == 0.48, tt::tolerance(1e-12));
  // One batch holding everything: no duplication, equal to the plain top-fallback scores.
  const auto one = figer_reported_scores<float>(kLogits, kGold, 4, 8);
  BOOST_TEST(one.loose_micro.f1 == 2.0 / 3, tt::tolerance(1e-12));
  BOOST_CHECK_THROW(figer_reported_scores<float>(kLogits, kGold, 4, 0), Error);
}

BOOST_AUTO_TEST_CASE(entity_typing_edge_cases) {
  // No predictions at all: P = 0 (micro and macro), R = 0, F1 = 0.
  const std::vector<float> neg(8, -1.0f), gold = {1, 0, 0, 0, 0, 0, 1, 1};
  auto s = entity_typing_scores<float>(neg, gold, 4);
  BOOST_TEST(s.loose_micro.precision == 0.0);
  BOOST_TEST(s.loose_micro.recall == 0.0);
  BOOST_TEST(s.loose_micro.f1 == 0.0);
  BOOST_TEST(s.loose_macro.precision == 0.0);
  BOOST_TEST(s.exact == 0u);
  // No gold types and no predictions: the sets match (strict 1), recall 0 where their code
  // divides by zero, F1 0.
  const std::vector<float> zero(8, 0.0f);
  s = entity_typing_scores<float>(neg, zero, 4);
  BOOST_TEST(s.exact == 2u);
  BOOST_TEST(s.strict_accuracy == 1.0);
  BOOST_TEST(s.loose_micro.recall == 0.0);
  BOOST_TEST(s.loose_micro.f1 == 0.0);
  // From sets, duplicates ignored; no entities at all.
  s = entity_typing_scores_from_sets({{2, 2, 1}}, {{1, 2}});
  BOOST_TEST(s.exact == 1u);
  BOOST_TEST(s.loose_micro.f1 == 1.0);
  s = entity_typing_scores_from_sets({}, {});
  BOOST_TEST(s.strict_accuracy == 0.0);
  BOOST_TEST(s.loose_macro.f1 == 0.0);
  BOOST_CHECK_THROW(entity_typing_scores<float>(kLogits, kGold, 5), Error);
}

// ---- multiple choice, head prediction ---------------------------------------------------

// scores: [1 3 3 0] -> 1 (first maximum), [5 0 0 0] -> 0, [0 0 0 .5] -> 3; labels 1 2 3:
// 2 of 3 right.
BOOST_AUTO_TEST_CASE(multiple_choice) {
  const std::vector<double> scores = {1, 3, 3, 0, 5, 0, 0, 0, 0, 0, 0, .5};
  BOOST_TEST(argmax_rows<double>(scores, 4) == (Ids{1, 0, 3}), tt::per_element());
  BOOST_TEST(multiple_choice_accuracy<double>(scores, Ids{1, 2, 3}) == 2.0 / 3,
             tt::tolerance(1e-12));
  BOOST_TEST(multiple_choice_accuracy<double>(std::vector<double>{}, Ids{}) == 0.0);
  BOOST_CHECK_THROW(multiple_choice_accuracy<double>(scores, Ids{1, 2}), Error);
  BOOST_CHECK_THROW(argmax_rows<double>(scores, 5), Error);
}

// 3 sequences of 4 positions. Real tokens (mask 1): seq 0: 4 (3 right), seq 1: 2 (2 right),
// seq 2: 2 (0 right). Pooled: 5 / 8. Batch mean with batch 2: batch {0, 1}: 5/6, batch {2}:
// 0 -> (5/6 + 0) / 2 = 5/12.
BOOST_AUTO_TEST_CASE(head_prediction) {
  const Ids mask = {1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0};
  const Ids gold = {0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0};
  const Ids pred = {0, 2, 0, 3, 0, 1, 5, 5, 1, 1, 0, 0};
  BOOST_TEST(head_accuracy(pred, gold, mask) == 5.0 / 8, tt::tolerance(1e-12));
  BOOST_TEST(head_accuracy_batch_mean(pred, gold, mask, 4, 2) == 5.0 / 12, tt::tolerance(1e-12));
  BOOST_TEST(head_accuracy_batch_mean(pred, gold, mask, 4, 3) == 5.0 / 8, tt::tolerance(1e-12));
  BOOST_TEST(head_accuracy(Ids{1}, Ids{1}, Ids{0}) == 0.0);  // nothing counts
  BOOST_CHECK_THROW(head_accuracy_batch_mean(pred, gold, mask, 5, 2), Error);
  BOOST_CHECK_THROW(head_accuracy(pred, gold, Ids{1}), Error);
}
