/// @file metrics.hpp
/// @brief Evaluation metrics computed exactly as the K-Adapter authors compute them: TACRED
/// micro P/R/F1, entity-typing strict accuracy and loose micro / macro P/R/F1, multiple-choice
/// accuracy, dependency-head accuracy.
///
/// References are to microsoft/K-Adapter @ 43651cd. Where their formula would divide by zero
/// (and crash), the result here is 0 and the function's documentation says so.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kadapter/core/error.hpp"

namespace kadapter {

/// @brief Precision, recall and F1, each in [0, 1].
struct PrecisionRecallF1 {
  double precision = 0.0;  ///< correct / predicted
  double recall = 0.0;     ///< correct / gold
  double f1 = 0.0;         ///< harmonic mean
};

/// @brief Id of `no_relation` in the authors' TACRED label order (io::tacred_relations()),
/// the value their metric hard-codes (examples/utils_glue.py:616 `NO_RELATION = 28`).
inline constexpr std::int64_t tacred_no_relation_id = 28;

/// @brief Counts behind tacred_micro_prf().
struct RelationCounts {
  std::size_t correct = 0;  ///< predicted relation == gold relation, both not no_relation
  std::size_t guessed = 0;  ///< predictions other than no_relation
  std::size_t gold = 0;     ///< gold labels other than no_relation
};

namespace detail {

inline void check_same_size(std::size_t a, std::size_t b, const char* what) {
  if (a != b)
    throw Error(std::string(what) + ": " + std::to_string(a) + " predictions for " +
                std::to_string(b) + " gold labels");
}

/// f1 as the entity-typing scripts write it: 0 when recall is 0 (not when p + r is 0).
inline double typing_f1(double p, double r) { return r == 0.0 ? 0.0 : 2.0 * p * r / (p + r); }

}  // namespace detail

/// @brief The counts of the TACRED metric. @see tacred_micro_prf
inline RelationCounts tacred_counts(std::span<const std::int64_t> predicted,
                                    std::span<const std::int64_t> gold,
                                    std::int64_t no_relation_id = tacred_no_relation_id) {
  detail::check_same_size(predicted.size(), gold.size(), "tacred_micro_prf");
  RelationCounts c;
  for (std::size_t i = 0; i < gold.size(); ++i) {
    const bool guess_rel = predicted[i] != no_relation_id;
    const bool gold_rel = gold[i] != no_relation_id;
    if (guess_rel) ++c.guessed;
    if (gold_rel) ++c.gold;
    if (guess_rel && gold_rel && predicted[i] == gold[i]) ++c.correct;
  }
  return c;
}

/// @brief TACRED micro precision / recall / F1 over every relation except no_relation, as
/// examples/utils_glue.py `micro_f1_tacred` computes it (the usual TACRED scorer).
///
/// A prediction other than no_relation is a guess (a guess on a no_relation example is a
/// false positive); a gold label other than no_relation must be found (a no_relation guess
/// for it is a miss); correct = guess == gold, both not no_relation. Their edge cases:
/// precision is **1.0** when nothing was guessed; recall is 0 when there is no gold
/// relation; F1 is 0 when precision + recall is 0.
/// @param predicted predicted relation ids (argmax of the logits)
/// @param gold gold relation ids
/// @param no_relation_id id of no_relation (28 in the authors' label order)
/// @throws Error when the sizes differ
inline PrecisionRecallF1 tacred_micro_prf(std::span<const std::int64_t> predicted,
                                          std::span<const std::int64_t> gold,
                                          std::int64_t no_relation_id = tacred_no_relation_id) {
  const RelationCounts c = tacred_counts(predicted, gold, no_relation_id);
  PrecisionRecallF1 r;
  r.precision = c.guessed > 0 ? double(c.correct) / double(c.guessed) : 1.0;
  r.recall = c.gold > 0 ? double(c.correct) / double(c.gold) : 0.0;
  r.f1 =
      r.precision + r.recall > 0.0 ? 2.0 * r.precision * r.recall / (r.precision + r.recall) : 0.0;
  return r;
}

/// @brief How a type prediction is read off the logits.
enum class TypeDecision {
  positive_logit,   ///< logit > 0; the prediction may be empty (OpenEntity,
                    ///< examples/utils_glue.py:696; the `or == top` rule is commented out)
  positive_or_top,  ///< logit > 0, or equal to the row's maximum: never empty (the FIGER
                    ///< script's reported numbers, run_finetune_figer_adapter.py:308)
};

/// @brief Entity-typing scores.
struct EntityTypingScores {
  std::size_t examples = 0;       ///< number of examples (entities)
  std::size_t exact = 0;          ///< predicted set == gold set (their `cnt`)
  double strict_accuracy = 0.0;   ///< exact / examples
  PrecisionRecallF1 loose_micro;  ///< over all (entity, type) pairs
  PrecisionRecallF1 loose_macro;  ///< per-entity precision / recall averaged over entities
};

/// @brief Entity-typing scores from predicted and gold type-id sets, as the authors'
/// `entity_typing_accuracy` / `figer_scores` compute them (examples/utils_glue.py:653-704).
///
/// - strict accuracy: the share of entities whose predicted set equals the gold set (two
///   empty sets are equal);
/// - loose micro: precision = Σ|P∩G| / Σ|P| (0 when nothing is predicted), recall =
///   Σ|P∩G| / Σ|G| (their code divides by zero when there are no gold types; 0 here);
/// - loose macro: precision = Σ_{P≠∅} |P∩G|/|P| divided by the number of ALL entities (an
///   entity with an empty prediction adds 0 to the sum but still counts), recall =
///   Σ_{G≠∅} |P∩G|/|G| / number of entities (0 for no entities, where theirs divides by 0);
/// - F1 = 2PR / (P + R), and 0 whenever R = 0 (their `f1` tests only r).
///
/// Each entity may be weighted (FIGER's reported numbers count entities several times, see
/// figer_reported_scores()); weights scale every sum and count above.
/// @param predicted per entity, the predicted type ids (duplicates are ignored)
/// @param gold per entity, the gold type ids
/// @param weights per entity, how many times it counts (empty: once each)
/// @throws Error when the sizes differ
inline EntityTypingScores entity_typing_scores_from_sets(
    const std::vector<std::vector<std::int64_t>>& predicted,
    const std::vector<std::vector<std::int64_t>>& gold, std::span<const std::size_t> weights = {}) {
  detail::check_same_size(predicted.size(), gold.size(), "entity_typing_scores");
  if (!weights.empty()) detail::check_same_size(weights.size(), gold.size(), "weights");
  EntityTypingScores s;
  s.examples = gold.size();
  double n = 0, n_pred = 0, n_gold = 0, n_correct = 0, macro_p = 0, macro_r = 0;
  auto uniq = [](std::vector<std::int64_t> v) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
    return v;
  };
  for (std::size_t i = 0; i < gold.size(); ++i) {
    const double w = weights.empty() ? 1.0 : double(weights[i]);
    const auto p = uniq(predicted[i]), g = uniq(gold[i]);
    std::size_t both = 0;
    for (auto t : p)
      if (std::binary_search(g.begin(), g.end(), t)) ++both;
    if (p == g) ++s.exact;
    n += w;
    n_pred += w * double(p.size());
    n_gold += w * double(g.size());
    n_correct += w * double(both);
    if (!p.empty()) macro_p += w * double(both) / double(p.size());
    if (!g.empty()) macro_r += w * double(both) / double(g.size());
  }
  s.strict_accuracy = s.examples > 0 ? double(s.exact) / double(s.examples) : 0.0;
  s.loose_micro.precision = n_pred > 0 ? n_correct / n_pred : 0.0;
  s.loose_micro.recall = n_gold > 0 ? n_correct / n_gold : 0.0;
  s.loose_micro.f1 = detail::typing_f1(s.loose_micro.precision, s.loose_micro.recall);
  s.loose_macro.precision = n > 0 ? macro_p / n : 0.0;
  s.loose_macro.recall = n > 0 ? macro_r / n : 0.0;
  s.loose_macro.f1 = detail::typing_f1(s.loose_macro.precision, s.loose_macro.recall);
  return s;
}

/// @brief The predicted type ids of one row of logits under a TypeDecision.
template <class T>
std::vector<std::int64_t> decide_types(std::span<const T> row, TypeDecision rule) {
  std::vector<std::int64_t> out;
  if (row.empty()) return out;
  T top = row[0];
  for (auto v : row) top = v > top ? v : top;
  for (std::size_t i = 0; i < row.size(); ++i)
    if (row[i] > T(0) || (rule == TypeDecision::positive_or_top && row[i] == top))
      out.push_back(static_cast<std::int64_t>(i));
  return out;
}

namespace detail {

template <class T>
void typing_sets(std::span<const T> logits, std::span<const T> gold, std::size_t num_types,
                 TypeDecision rule, std::vector<std::vector<std::int64_t>>& p,
                 std::vector<std::vector<std::int64_t>>& g) {
  if (num_types == 0) throw Error("entity_typing_scores: num_types must be positive");
  if (logits.size() % num_types != 0 || logits.size() != gold.size())
    throw Error("entity_typing_scores: logits (" + std::to_string(logits.size()) + ") and gold (" +
                std::to_string(gold.size()) + ") must both hold examples x " +
                std::to_string(num_types) + " values");
  const std::size_t n = logits.size() / num_types;
  for (std::size_t i = 0; i < n; ++i) {
    p.push_back(decide_types(logits.subspan(i * num_types, num_types), rule));
    std::vector<std::int64_t> gi;
    for (std::size_t t = 0; t < num_types; ++t)
      if (gold[i * num_types + t] > T(0)) gi.push_back(static_cast<std::int64_t>(t));
    g.push_back(std::move(gi));
  }
}

}  // namespace detail

/// @brief Entity-typing scores from logits and multi-hot gold rows (a type is gold when its
/// value is > 0). OpenEntity: TypeDecision::positive_logit.
/// @see entity_typing_scores_from_sets
/// @param logits (examples, num_types) row-major
/// @param gold (examples, num_types) row-major, multi-hot
/// @param num_types number of types
/// @param rule how predictions are read off the logits
/// @throws Error when the sizes do not fit
template <class T>
EntityTypingScores entity_typing_scores(std::span<const T> logits, std::span<const T> gold,
                                        std::size_t num_types,
                                        TypeDecision rule = TypeDecision::positive_logit) {
  std::vector<std::vector<std::int64_t>> p, g;
  detail::typing_sets(logits, gold, num_types, rule, p, g);
  return entity_typing_scores_from_sets(p, g);
}

/// @brief The FIGER numbers exactly as run_finetune_figer_adapter.py reports them
/// (`ERINE_accuracy`, `ERINE_micro`, `ERINE_macro`, lines 355-437).
///
/// Predictions use TypeDecision::positive_or_top. The strict accuracy is right (per-batch
/// exact counts over the examples), but the lists for loose micro / macro are extended after
/// every batch with the predictions of ALL batches so far (`accuracy(preds, ...)` on the
/// accumulated `preds`, line 379), so the entities of batch b (1-based) of B are counted
/// B - b + 1 times. Pass the evaluation batch size to reproduce this; the unbiased numbers
/// are entity_typing_scores(..., TypeDecision::positive_or_top).
/// @param logits (examples, num_types) row-major
/// @param gold (examples, num_types) row-major, multi-hot
/// @param num_types number of types
/// @param batch_size the evaluation batch size (per_gpu_eval_batch_size × GPUs)
/// @throws Error when the sizes do not fit or batch_size is 0
template <class T>
EntityTypingScores figer_reported_scores(std::span<const T> logits, std::span<const T> gold,
                                         std::size_t num_types, std::size_t batch_size) {
  if (batch_size == 0) throw Error("figer_reported_scores: batch_size must be positive");
  std::vector<std::vector<std::int64_t>> p, g;
  detail::typing_sets(logits, gold, num_types, TypeDecision::positive_or_top, p, g);
  const std::size_t n = p.size(), batches = (n + batch_size - 1) / batch_size;
  std::vector<std::size_t> w(n);
  for (std::size_t i = 0; i < n; ++i) w[i] = batches - i / batch_size;
  EntityTypingScores s = entity_typing_scores_from_sets(p, g, w);
  return s;  // strict accuracy / exact are unweighted, as ERINE_accuracy is
}

/// @brief Row-wise argmax of a (rows, cols) row-major matrix; the first maximum wins, as in
/// numpy / torch argmax.
template <class T>
std::vector<std::int64_t> argmax_rows(std::span<const T> m, std::size_t cols) {
  if (cols == 0 || m.size() % cols != 0)
    throw Error("argmax_rows: " + std::to_string(m.size()) + " values are not rows of " +
                std::to_string(cols));
  std::vector<std::int64_t> out(m.size() / cols);
  for (std::size_t r = 0; r < out.size(); ++r) {
    std::size_t best = 0;
    for (std::size_t c = 1; c < cols; ++c)
      if (m[r * cols + c] > m[r * cols + best]) best = c;
    out[r] = static_cast<std::int64_t>(best);
  }
  return out;
}

/// @brief Multiple-choice accuracy: the share of questions whose highest-scoring choice (first
/// on ties) is the right one (run_finetune_cosmosqa_adapter.py `accuracy`, summed over
/// batches and divided by the number of examples). 0 for no questions.
/// @param scores (questions, choices) row-major
/// @param labels right choice per question
/// @param choices number of choices (CosmosQA: 4)
/// @throws Error when the sizes do not fit
template <class T>
double multiple_choice_accuracy(std::span<const T> scores, std::span<const std::int64_t> labels,
                                std::size_t choices = 4) {
  const auto pred = argmax_rows(scores, choices);
  detail::check_same_size(pred.size(), labels.size(), "multiple_choice_accuracy");
  if (pred.empty()) return 0.0;
  std::size_t ok = 0;
  for (std::size_t i = 0; i < pred.size(); ++i) ok += pred[i] == labels[i];
  return double(ok) / double(pred.size());
}

/// @brief Head-prediction accuracy pooled over the positions whose mask is 1 (real tokens:
/// pass the attention mask for the authors' positions, or HeadFeatures::loss_mask). 0 when
/// no position counts.
/// @param predicted predicted head position per token (argmax over max_seq_length)
/// @param gold gold label per token
/// @param mask 1 where the token counts
/// @throws Error when the sizes differ
inline double head_accuracy(std::span<const std::int64_t> predicted,
                            std::span<const std::int64_t> gold,
                            std::span<const std::int64_t> mask) {
  detail::check_same_size(predicted.size(), gold.size(), "head_accuracy");
  detail::check_same_size(mask.size(), gold.size(), "head_accuracy mask");
  std::size_t n = 0, ok = 0;
  for (std::size_t i = 0; i < gold.size(); ++i)
    if (mask[i] == 1) {
      ++n;
      ok += predicted[i] == gold[i];
    }
  return n > 0 ? double(ok) / double(n) : 0.0;
}

/// @brief Head-prediction accuracy as lin-adapter.py `evaluate` reports it: the accuracy over
/// real tokens (attention_mask == 1, `<s>` and `</s>` included) of each batch, averaged over
/// batches (lines 283-302) — so a short last batch weighs as much as a full one. A batch
/// without real tokens counts as accuracy 0 (numpy's mean of nothing is nan there).
/// @param predicted (sequences, seq_len) predicted head positions, row-major
/// @param gold (sequences, seq_len) gold labels
/// @param mask (sequences, seq_len) attention mask
/// @param seq_len max_seq_length
/// @param batch_size the evaluation batch size
/// @throws Error when the sizes do not fit
inline double head_accuracy_batch_mean(std::span<const std::int64_t> predicted,
                                       std::span<const std::int64_t> gold,
                                       std::span<const std::int64_t> mask, std::size_t seq_len,
                                       std::size_t batch_size) {
  detail::check_same_size(predicted.size(), gold.size(), "head_accuracy_batch_mean");
  detail::check_same_size(mask.size(), gold.size(), "head_accuracy_batch_mean mask");
  if (seq_len == 0 || batch_size == 0 || gold.size() % seq_len != 0)
    throw Error("head_accuracy_batch_mean: " + std::to_string(gold.size()) +
                " values are not sequences of " + std::to_string(seq_len) +
                " (batch_size must be positive)");
  const std::size_t per_batch = seq_len * batch_size;
  double sum = 0;
  std::size_t batches = 0;
  for (std::size_t b = 0; b < gold.size(); b += per_batch) {
    const std::size_t e = std::min(gold.size(), b + per_batch);
    sum +=
        head_accuracy(predicted.subspan(b, e - b), gold.subspan(b, e - b), mask.subspan(b, e - b));
    ++batches;
  }
  return batches > 0 ? sum / double(batches) : 0.0;
}

}  // namespace kadapter
