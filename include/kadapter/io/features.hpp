/// @file features.hpp
/// @brief Word-level examples (datasets.hpp) to model inputs, built as the K-Adapter authors
/// build them: entity markers, one-hot marker rows, head labels, truncation and padding.
///
/// Builders are generic over a SubwordTokenizer. Under Convention::official they reproduce
/// the authors' feature code (microsoft/K-Adapter @ 43651cd: utils_glue.py,
/// examples/utils_glue.py, examples/utils_figer.py, examples/run_finetune_cosmosqa_adapter.py)
/// including its quirks, each noted where it is followed; Convention::standard fixes the ones
/// that only lose information. docs/data.md lists them all.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kadapter/core/error.hpp"
#include "kadapter/io/datasets.hpp"

namespace kadapter::io {

/// @brief What the feature builders need from a sub-word tokenizer (BPE or WordPiece).
///
/// - `tokenize_word(word, first_in_sequence)`: the pieces of one whitespace-free word (it
///   may hold punctuation, which the tokenizer splits as it would inside a text).
///   `first_in_sequence = false` means the word follows a space: a GPT-2/RoBERTa BPE gives
///   its first piece the `Ġ` space mark; `true` means no space before it (no mark).
///   WordPiece ignores the flag.
/// - `id(piece)`: the vocabulary id of a piece (the unknown id for an unknown piece).
/// - `cls_id()`, `sep_id()`, `pad_id()`: `<s>` / `[CLS]`, `</s>` / `[SEP]`, `<pad>` / `[PAD]`.
///
/// The authors' tokenizer (pytorch_transformers 1.x) strips every text it is given and puts
/// a space in front of it (tokenization_gpt2.py `_tokenize`: `text = " " + text`), so under
/// Convention::official every word is tokenized with `first_in_sequence = false`.
template <class T>
concept SubwordTokenizer = requires(const T& t, std::string_view s, bool first) {
  { t.tokenize_word(s, first) } -> std::convertible_to<std::vector<std::string>>;
  { t.id(s) } -> std::convertible_to<std::int64_t>;
  { t.cls_id() } -> std::convertible_to<std::int64_t>;
  { t.sep_id() } -> std::convertible_to<std::int64_t>;
  { t.pad_id() } -> std::convertible_to<std::int64_t>;
};

/// @brief Which feature conventions to follow (the data-side twin of kadapter::Compat).
enum class Convention {
  official,  ///< exactly the authors' features, quirks included
  standard,  ///< the same inputs, with the information-losing quirks fixed (see each builder)
};

/// @brief An example a builder left out, and why.
struct DroppedExample {
  std::size_t example = 0;  ///< index in the input span
  std::size_t record = 0;   ///< the example's record number in its file
  std::string reason;       ///< why it was left out
};

/// @brief Features built from a list of examples.
template <class Features>
struct FeatureSet {
  std::vector<Features> features;          ///< one per kept example, in order
  std::vector<std::size_t> example_index;  ///< features[i] came from examples[example_index[i]]
  std::vector<DroppedExample> dropped;     ///< examples left out
};

namespace detail::features {

inline bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/// Appends the ids of the words of `text` (split on ASCII whitespace, as the authors'
/// tokenizer splits a stripped text at spaces). `at_start` is true until a word is emitted;
/// only the standard convention passes it on as first_in_sequence.
template <SubwordTokenizer Tok>
void append_text(std::vector<std::int64_t>& ids, const Tok& tok, std::string_view text,
                 bool& at_start, Convention conv) {
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i])) ++i;
    std::size_t j = i;
    while (j < text.size() && !is_space(text[j])) ++j;
    if (j > i) {
      const bool first = conv == Convention::standard && at_start;
      for (const auto& p : tok.tokenize_word(text.substr(i, j - i), first))
        ids.push_back(static_cast<std::int64_t>(tok.id(p)));
      at_start = false;
    }
    i = j;
  }
}

/// Appends words[b, e) as Python's `" ".join(words[b:e])` then tokenize() would.
template <SubwordTokenizer Tok>
void append_words(std::vector<std::int64_t>& ids, const Tok& tok,
                  const std::vector<std::string>& words, std::int64_t b, std::int64_t e,
                  bool& at_start, Convention conv) {
  const auto n = static_cast<std::int64_t>(words.size());
  b = std::clamp<std::int64_t>(b, 0, n);
  e = std::clamp<std::int64_t>(e, 0, n);
  for (std::int64_t k = b; k < e; ++k)
    append_text(ids, tok, words[static_cast<std::size_t>(k)], at_start, conv);
}

inline void check_max_len(std::int64_t max_len, std::int64_t least, const char* builder) {
  if (max_len < least)
    throw Error(std::string(builder) + ": max_seq_length = " + std::to_string(max_len) +
                " is too small (expected at least " + std::to_string(least) + ")");
}

inline std::vector<float> one_hot(std::int64_t n, std::int64_t at) {
  std::vector<float> v(static_cast<std::size_t>(n), 0.0f);
  v[static_cast<std::size_t>(at)] = 1.0f;
  return v;
}

inline void pad_to(std::vector<std::int64_t>& ids, std::vector<std::int64_t>& mask,
                   std::int64_t max_len, std::int64_t pad) {
  mask.assign(ids.size(), 1);
  ids.resize(static_cast<std::size_t>(max_len), pad);
  mask.resize(static_cast<std::size_t>(max_len), 0);
}

inline std::string rec(std::size_t record) { return "record " + std::to_string(record) + ": "; }

template <class F, class Ex, class Make>
FeatureSet<F> build_all(const std::vector<Ex>& xs, Make&& make) {
  FeatureSet<F> out;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    std::string why;
    if (auto f = make(xs[i], &why)) {
      out.features.push_back(std::move(*f));
      out.example_index.push_back(i);
    } else {
      out.dropped.push_back(DroppedExample{i, xs[i].record, std::move(why)});
    }
  }
  return out;
}

}  // namespace detail::features

// ---- relation classification: fac pre-training (T-REx-rc), TACRED -----------------------

/// @brief What to do when a marker's position falls outside the sequence after truncation.
enum class MarkerOverflow {
  drop,   ///< fac-adapter (utils_glue.py:557-561): position >= max_seq_length drops the example
  clamp,  ///< TACRED script (examples/utils_glue.py:466-469): position > max_seq_length
          ///< becomes max_seq_length - 10 (position == max_seq_length, an IndexError in their
          ///< code, is clamped the same way here)
};

/// @brief Options of make_relation_features().
struct RelationFeatureOptions {
  std::int64_t max_seq_length = 128;               ///< T (fac pre-training 64, TACRED 184)
  Convention convention = Convention::official;    ///< see make_relation_features()
  MarkerOverflow overflow = MarkerOverflow::drop;  ///< official only: drop (fac) or clamp (TACRED)
};

/// @brief Inputs of one relation example.
struct RelationFeatures {
  std::vector<std::int64_t> input_ids;       ///< (T) `<s>` sentence-with-markers `</s>` pads
  std::vector<std::int64_t> attention_mask;  ///< (T) 1 for real tokens, 0 for padding
  std::vector<float> subj_special_start_id;  ///< (T) one-hot at the first `@`
  std::vector<float> obj_special_start_id;   ///< (T) one-hot at the first `#`
  std::int64_t subj_pos = 0;                 ///< position of the one in subj_special_start_id
  std::int64_t obj_pos = 0;                  ///< position of the one in obj_special_start_id
  std::int64_t label = 0;                    ///< relation id
};

/// @brief Build the inputs of one relation example as utils_glue.py
/// `convert_examples_to_features_trex` / examples/utils_glue.py
/// `convert_examples_to_features_tacred` do.
///
/// The sentence is cut into five word ranges around the two spans, in sentence order, each
/// tokenized on its own (`tokenizer.tokenize(" ".join(words[a:b]))`) with the literal pieces
/// `@` (subject) and `#` (object) around the spans: `tok.id("@")`, `tok.id("#")`, not the
/// space-marked `Ġ@` the entity-typing builder uses. If subj_start < obj_start the subject
/// comes first, otherwise (also when they start together) the object does; word ranges use
/// Python slice semantics, so overlapping spans repeat or lose words exactly as theirs do.
/// The pieces are cut to max_seq_length - 2 from the end (`_truncate_seq_pair(tokens, [],
/// max - 2)`), then `<s>` / `</s>` added and padding with `tok.pad_id()`. The marker rows
/// point at the first `@` / `#`, found before truncation: a marker cut off by truncation at
/// position max - 1 leaves its row on `</s>` (their quirk, kept under official); positions
/// beyond that are handled by `opt.overflow`.
///
/// Convention::standard: the sentence's first word is tokenized with first_in_sequence =
/// true, and an example whose `@` or `#` was cut off by truncation is dropped.
/// @param ex the example
/// @param tok the tokenizer
/// @param labels relation name → id
/// @param opt length, convention, overflow rule
/// @param why receives the reason when the example is dropped (may be null)
/// @return the features, or nothing when the example is dropped
/// @throws Error when the relation is not in `labels` or max_seq_length is too small
template <SubwordTokenizer Tok>
std::optional<RelationFeatures> make_relation_features(const RelationExample& ex, const Tok& tok,
                                                       const LabelMap& labels,
                                                       const RelationFeatureOptions& opt,
                                                       std::string* why = nullptr) {
  const std::int64_t T = opt.max_seq_length;
  detail::features::check_max_len(T, opt.overflow == MarkerOverflow::clamp ? 10 : 3,
                                  "relation features");
  RelationFeatures f;
  try {
    f.label = labels.id(ex.relation);
  } catch (const Error& e) {
    throw Error(detail::features::rec(ex.record) + e.what());
  }
  const std::int64_t at = tok.id("@"), hash = tok.id("#");
  const auto& w = ex.tokens;
  std::vector<std::int64_t> ids;
  bool at_start = true;
  const Convention c = opt.convention;
  std::int64_t subj = 0, obj = 0;
  auto span = [&](std::int64_t& pos, std::int64_t marker, std::int64_t s, std::int64_t e) {
    pos = static_cast<std::int64_t>(ids.size());
    ids.push_back(marker);
    detail::features::append_words(ids, tok, w, s, e + 1, at_start, c);
    ids.push_back(marker);
  };
  if (ex.subj_start < ex.obj_start) {
    detail::features::append_words(ids, tok, w, 0, ex.subj_start, at_start, c);
    span(subj, at, ex.subj_start, ex.subj_end);
    detail::features::append_words(ids, tok, w, ex.subj_end + 1, ex.obj_start, at_start, c);
    span(obj, hash, ex.obj_start, ex.obj_end);
    detail::features::append_words(ids, tok, w, ex.obj_end + 1, static_cast<std::int64_t>(w.size()),
                                   at_start, c);
  } else {
    detail::features::append_words(ids, tok, w, 0, ex.obj_start, at_start, c);
    span(obj, hash, ex.obj_start, ex.obj_end);
    detail::features::append_words(ids, tok, w, ex.obj_end + 1, ex.subj_start, at_start, c);
    span(subj, at, ex.subj_start, ex.subj_end);
    detail::features::append_words(ids, tok, w, ex.subj_end + 1,
                                   static_cast<std::int64_t>(w.size()), at_start, c);
  }
  if (static_cast<std::int64_t>(ids.size()) > T - 2) ids.resize(static_cast<std::size_t>(T - 2));
  ids.insert(ids.begin(), tok.cls_id());
  ids.push_back(tok.sep_id());
  ++subj;
  ++obj;
  if (c == Convention::standard) {
    if (subj >= T - 1 || obj >= T - 1) {
      if (why)
        *why = detail::features::rec(ex.record) + "the " +
               std::string(subj >= T - 1 ? "subject" : "object") +
               " marker is cut off by truncation to max_seq_length = " + std::to_string(T);
      return std::nullopt;
    }
  } else if (opt.overflow == MarkerOverflow::drop) {
    if (subj >= T || obj >= T) {
      if (why)
        *why = detail::features::rec(ex.record) + "the " +
               std::string(subj >= T ? "subject" : "object") + " marker lies at position " +
               std::to_string(std::max(subj, obj)) + " >= max_seq_length = " + std::to_string(T) +
               " (dropped as in fac-adapter)";
      return std::nullopt;
    }
  } else {
    if (subj >= T) subj = T - 10;
    if (obj >= T) obj = T - 10;
  }
  f.subj_pos = subj;
  f.obj_pos = obj;
  detail::features::pad_to(ids, f.attention_mask, T, tok.pad_id());
  f.input_ids = std::move(ids);
  f.subj_special_start_id = detail::features::one_hot(T, subj);
  f.obj_special_start_id = detail::features::one_hot(T, obj);
  return f;
}

/// @brief make_relation_features() over a list; dropped examples are reported.
template <SubwordTokenizer Tok>
FeatureSet<RelationFeatures> build_relation_features(const std::vector<RelationExample>& xs,
                                                     const Tok& tok, const LabelMap& labels,
                                                     const RelationFeatureOptions& opt) {
  return detail::features::build_all<RelationFeatures>(
      xs, [&](const RelationExample& x, std::string* why) {
        return make_relation_features(x, tok, labels, opt, why);
      });
}

// ---- entity typing: OpenEntity, FIGER ---------------------------------------------------

/// @brief Options of make_entity_typing_features().
struct EntityTypingFeatureOptions {
  std::int64_t max_seq_length = 256;             ///< T (the published runs use 256)
  Convention convention = Convention::official;  ///< see make_entity_typing_features()
  /// FIGER rule (examples/utils_figer.py:208-209): drop when the sequence has
  /// >= max_seq_length tokens. Otherwise (OpenEntity) drop only when it has more: the
  /// authors' OpenEntity code has no check and fails an assert on such a sequence.
  bool drop_at_max_length = false;
};

/// @brief Inputs of one entity-typing example.
struct EntityTypingFeatures {
  std::vector<std::int64_t> input_ids;       ///< (T) `<s>` left `@` mention `@` right `</s>` pads
  std::vector<std::int64_t> attention_mask;  ///< (T) 1 for real tokens, 0 for padding
  std::vector<float> start_id;               ///< (T) one-hot at the first `@`
  std::int64_t start_pos = 0;                ///< position of the one in start_id
  std::vector<float> labels;                 ///< (types) multi-hot
};

/// @brief Build the inputs of one entity-typing example as examples/utils_glue.py and
/// examples/utils_figer.py `convert_examples_to_features_entity_typing` do.
///
/// The sentence is cut at the mention's character offsets into left / mention / right, each
/// tokenized on its own, with `tokenizer.tokenize("@")` before and after the mention:
/// `tok.tokenize_word("@", false)`, i.e. the space-marked `Ġ@` for RoBERTa (unlike the
/// literal `@` of the relation builder). No truncation (see drop_at_max_length); padding
/// with `tok.pad_id()`; `start_id` is one-hot at `1 + len(left pieces)`.
///
/// Convention::standard: the sentence's first word is tokenized with first_in_sequence = true.
/// @param ex the example
/// @param tok the tokenizer
/// @param types type name → id (OpenEntity: open_entity_types(); FIGER: entity_type_labels())
/// @param opt length, convention, length rule
/// @param why receives the reason when the example is dropped (may be null)
/// @throws Error when a type is not in `types`, the mention bytes do not fit the sentence
/// or max_seq_length is too small
template <SubwordTokenizer Tok>
std::optional<EntityTypingFeatures> make_entity_typing_features(
    const EntityTypingExample& ex, const Tok& tok, const LabelMap& types,
    const EntityTypingFeatureOptions& opt, std::string* why = nullptr) {
  const std::int64_t T = opt.max_seq_length;
  detail::features::check_max_len(T, 4, "entity-typing features");
  if (ex.start_byte > ex.end_byte || ex.end_byte > ex.sent.size())
    throw Error(detail::features::rec(ex.record) + "mention bytes [" +
                std::to_string(ex.start_byte) + ", " + std::to_string(ex.end_byte) +
                ") do not fit the sentence of " + std::to_string(ex.sent.size()) + " bytes");
  EntityTypingFeatures f;
  f.labels.assign(types.size(), 0.0f);
  for (const auto& l : ex.labels) {
    try {
      f.labels[static_cast<std::size_t>(types.id(l))] = 1.0f;
    } catch (const Error& e) {
      throw Error(detail::features::rec(ex.record) + e.what());
    }
  }
  std::vector<std::int64_t> marker;
  for (const auto& p : tok.tokenize_word("@", false))
    marker.push_back(static_cast<std::int64_t>(tok.id(p)));
  std::vector<std::int64_t> ids{static_cast<std::int64_t>(tok.cls_id())};
  bool at_start = true;
  detail::features::append_text(ids, tok, ex.left(), at_start, opt.convention);
  f.start_pos = static_cast<std::int64_t>(ids.size());
  ids.insert(ids.end(), marker.begin(), marker.end());
  detail::features::append_text(ids, tok, ex.mention(), at_start, opt.convention);
  ids.insert(ids.end(), marker.begin(), marker.end());
  detail::features::append_text(ids, tok, ex.right(), at_start, opt.convention);
  ids.push_back(tok.sep_id());
  const auto len = static_cast<std::int64_t>(ids.size());
  if (len > T || (opt.drop_at_max_length && len >= T)) {
    if (why)
      *why = detail::features::rec(ex.record) + "the sequence has " + std::to_string(len) +
             " tokens, " + (len > T ? "more than" : "not fewer than") +
             " max_seq_length = " + std::to_string(T);
    return std::nullopt;
  }
  detail::features::pad_to(ids, f.attention_mask, T, tok.pad_id());
  f.input_ids = std::move(ids);
  f.start_id = detail::features::one_hot(T, f.start_pos);
  return f;
}

/// @brief make_entity_typing_features() over a list; dropped examples are reported.
template <SubwordTokenizer Tok>
FeatureSet<EntityTypingFeatures> build_entity_typing_features(
    const std::vector<EntityTypingExample>& xs, const Tok& tok, const LabelMap& types,
    const EntityTypingFeatureOptions& opt) {
  return detail::features::build_all<EntityTypingFeatures>(
      xs, [&](const EntityTypingExample& x, std::string* why) {
        return make_entity_typing_features(x, tok, types, opt, why);
      });
}

// ---- dependency-head prediction: lin pre-training ---------------------------------------

/// @brief Options of make_head_features().
struct HeadFeatureOptions {
  std::int64_t max_seq_length = 64;              ///< T; also the number of head classes
  Convention convention = Convention::official;  ///< see make_head_features()
};

/// @brief Inputs and per-position head labels of one sentence.
struct HeadFeatures {
  std::vector<std::int64_t> input_ids;       ///< (T) `<s>` word pieces `</s>` pads
  std::vector<std::int64_t> attention_mask;  ///< (T) 1 for real tokens, 0 for padding
  std::vector<std::int64_t> labels;          ///< (T) head class of each position
  std::vector<std::int64_t> loss_mask;       ///< (T) 1 where the loss and accuracy count
};

/// @brief Build the inputs and head labels of one sentence as utils_glue.py
/// `convert_examples_to_features_find_head` does (official), or aligned (standard).
///
/// Every word is tokenized on its own (`tokenizer.tokenize(word)`), sequence
/// `<s> pieces </s>`, padding with `tok.pad_id()`.
///
/// Convention::official reproduces the authors' labels exactly (utils_glue.py:204-250):
/// - a head word g ≥ 1 is labelled `first_piece_position(g) + 1`: their `sub_word_indexes`
///   counts positions from 1 (`[cls] index=1`) while the model's classes count from 0, so
///   the label points one past the head's first piece; the root (g = 0) is labelled 1;
/// - the labels are per word, not per piece: position 0 (`<s>`) gets 0, position k (1 ≤ k ≤
///   n) gets the label of word k, whatever piece sits there, the rest 0 — so with multi-piece
///   words labels and pieces drift apart;
/// - a sentence in which some word's head is the last word is dropped (their lookup table
///   stops before the last word: KeyError, swallowed by `except: continue`);
/// - a sentence of >= max_seq_length tokens is dropped (no truncation);
/// - loss_mask = attention_mask: the loss and the accuracy count every real position,
///   `<s>` and `</s>` included (label 0).
///
/// Convention::standard: the label at each word's first piece is the 0-based position of its
/// head's first piece, root → 0 (`<s>`); loss_mask is 1 on first pieces only (other
/// positions are labelled 0 and masked); no sentence is dropped for its last word; sentences
/// of more than max_seq_length tokens, or with a word that has no pieces, are dropped.
/// @param ex the sentence
/// @param tok the tokenizer
/// @param opt length and convention
/// @param why receives the reason when the sentence is dropped (may be null)
/// @throws Error when max_seq_length is too small or the heads do not fit the words
template <SubwordTokenizer Tok>
std::optional<HeadFeatures> make_head_features(const HeadExample& ex, const Tok& tok,
                                               const HeadFeatureOptions& opt,
                                               std::string* why = nullptr) {
  const std::int64_t T = opt.max_seq_length;
  detail::features::check_max_len(T, 3, "head features");
  const std::size_t n = ex.words.size();
  if (ex.heads.size() != n)
    throw Error(detail::features::rec(ex.record) + "heads has " + std::to_string(ex.heads.size()) +
                " entries for " + std::to_string(n) + " words");
  for (auto h : ex.heads)
    if (h < 0 || static_cast<std::size_t>(h) > n)
      throw Error(detail::features::rec(ex.record) + "head index " + std::to_string(h) +
                  " is out of range (expected 0.." + std::to_string(n) + ")");
  auto drop = [&](std::string r) -> std::optional<HeadFeatures> {
    if (why) *why = detail::features::rec(ex.record) + std::move(r);
    return std::nullopt;
  };
  std::vector<std::int64_t> ids{static_cast<std::int64_t>(tok.cls_id())};
  std::vector<std::int64_t> first(n + 1, 0);  // first[k]: 0-based position of word k's first piece
  std::vector<std::size_t> pieces(n + 1, 0);
  bool at_start = true;
  for (std::size_t k = 1; k <= n; ++k) {
    first[k] = static_cast<std::int64_t>(ids.size());
    detail::features::append_text(ids, tok, ex.words[k - 1], at_start, opt.convention);
    pieces[k] = ids.size() - static_cast<std::size_t>(first[k]);
  }
  ids.push_back(tok.sep_id());
  const auto len = static_cast<std::int64_t>(ids.size());
  HeadFeatures f;
  f.labels.assign(static_cast<std::size_t>(T), 0);
  if (opt.convention == Convention::official) {
    for (std::size_t k = 0; k < n; ++k)
      if (static_cast<std::size_t>(ex.heads[k]) == n)
        return drop("word " + std::to_string(k + 1) + " has the last word as its head, which " +
                    "the authors' lookup table omits (sentence dropped, as in utils_glue.py)");
    if (len >= T)
      return drop("the sentence has " + std::to_string(len) + " tokens, not fewer than " +
                  "max_seq_length = " + std::to_string(T));
    if (static_cast<std::int64_t>(n) + 2 > T)
      return drop(std::to_string(n) + " words need " + std::to_string(n + 2) +
                  " label slots, more than max_seq_length = " + std::to_string(T));
    // sub_word_indexes: [1] then (position of word k's first piece) + 1 for k = 1..n.
    for (std::size_t k = 1; k <= n; ++k) {
      const auto g = static_cast<std::size_t>(ex.heads[k - 1]);
      f.labels[k] = g == 0 ? 1 : first[g] + 1;
    }
    detail::features::pad_to(ids, f.attention_mask, T, tok.pad_id());
    f.loss_mask = f.attention_mask;
  } else {
    if (len > T)
      return drop("the sentence has " + std::to_string(len) + " tokens, more than " +
                  "max_seq_length = " + std::to_string(T));
    for (std::size_t k = 1; k <= n; ++k)
      if (pieces[k] == 0)
        return drop("word " + std::to_string(k) + " (\"" + ex.words[k - 1] +
                    "\") has no sub-word pieces");
    f.loss_mask.assign(static_cast<std::size_t>(T), 0);
    for (std::size_t k = 1; k <= n; ++k) {
      const auto g = static_cast<std::size_t>(ex.heads[k - 1]);
      const auto p = static_cast<std::size_t>(first[k]);
      f.labels[p] = g == 0 ? 0 : first[g];
      f.loss_mask[p] = 1;
    }
    detail::features::pad_to(ids, f.attention_mask, T, tok.pad_id());
  }
  f.input_ids = std::move(ids);
  return f;
}

/// @brief make_head_features() over a list; dropped sentences are reported.
template <SubwordTokenizer Tok>
FeatureSet<HeadFeatures> build_head_features(const std::vector<HeadExample>& xs, const Tok& tok,
                                             const HeadFeatureOptions& opt) {
  return detail::features::build_all<HeadFeatures>(xs, [&](const HeadExample& x, std::string* why) {
    return make_head_features(x, tok, opt, why);
  });
}

// ---- multiple choice: CosmosQA ----------------------------------------------------------

/// @brief Options of make_multiple_choice_features().
struct MultipleChoiceFeatureOptions {
  std::int64_t max_seq_length = 256;             ///< T (the published run uses 256)
  Convention convention = Convention::official;  ///< see make_multiple_choice_features()
};

/// @brief Inputs of one question: one sequence per answer.
struct MultipleChoiceFeatures {
  std::vector<std::vector<std::int64_t>> input_ids;       ///< (choices, T)
  std::vector<std::vector<std::int64_t>> attention_mask;  ///< (choices, T)
  std::int64_t label = -1;                                ///< right answer, -1 when unknown
};

/// @brief Build one sequence per answer as run_finetune_cosmosqa_adapter.py
/// (`read_examples_origin` + `convert_examples_to_features`) does.
///
/// The code's layout is `<s> context </s> question </s> answer </s>`: ONE `</s>` between
/// the parts, not the `</s></s>` pairs of RoBERTa's sentence-pair format that the paper's
/// description suggests. The answer side is `tokenize(question + " </s> " + answer)`, in
/// which the tokenizer keeps `</s>` as the special token; the context and that answer side
/// are cut to max_seq_length - 3 by `_truncate_seq_pair` (pop the last piece of the longer
/// side, of the answer side on a tie — so the inner `</s>` can be cut too).
///
/// Convention::official pads input_ids with 0 (which is `<s>` in RoBERTa, not `<pad>` = 1:
/// their code hard-codes `[0] * padding_length`); Convention::standard pads with
/// `tok.pad_id()` and tokenizes the first word of the context, the question and each answer
/// with first_in_sequence = true. Nothing is dropped.
/// @param ex the question
/// @param tok the tokenizer
/// @param opt length and convention
/// @throws Error when max_seq_length is too small
template <SubwordTokenizer Tok>
MultipleChoiceFeatures make_multiple_choice_features(const MultipleChoiceExample& ex,
                                                     const Tok& tok,
                                                     const MultipleChoiceFeatureOptions& opt) {
  const std::int64_t T = opt.max_seq_length;
  detail::features::check_max_len(T, 3, "multiple-choice features");
  const Convention c = opt.convention;
  std::vector<std::int64_t> context;
  bool at_start = true;
  detail::features::append_text(context, tok, ex.context, at_start, c);
  const std::int64_t pad = c == Convention::official ? 0 : tok.pad_id();
  MultipleChoiceFeatures f;
  f.label = ex.label.value_or(-1);
  for (const auto& answer : ex.answers) {
    std::vector<std::int64_t> a = context, b;
    at_start = true;
    detail::features::append_text(b, tok, ex.question, at_start, c);
    b.push_back(tok.sep_id());
    at_start = true;
    detail::features::append_text(b, tok, answer, at_start, c);
    while (static_cast<std::int64_t>(a.size() + b.size()) > T - 3) {
      if (a.size() > b.size())
        a.pop_back();
      else
        b.pop_back();
    }
    std::vector<std::int64_t> ids{static_cast<std::int64_t>(tok.cls_id())};
    ids.insert(ids.end(), a.begin(), a.end());
    ids.push_back(tok.sep_id());
    ids.insert(ids.end(), b.begin(), b.end());
    ids.push_back(tok.sep_id());
    std::vector<std::int64_t> mask;
    detail::features::pad_to(ids, mask, T, pad);
    f.input_ids.push_back(std::move(ids));
    f.attention_mask.push_back(std::move(mask));
  }
  return f;
}

/// @brief make_multiple_choice_features() over a list.
template <SubwordTokenizer Tok>
std::vector<MultipleChoiceFeatures> build_multiple_choice_features(
    const std::vector<MultipleChoiceExample>& xs, const Tok& tok,
    const MultipleChoiceFeatureOptions& opt) {
  std::vector<MultipleChoiceFeatures> out;
  out.reserve(xs.size());
  for (const auto& x : xs) out.push_back(make_multiple_choice_features(x, tok, opt));
  return out;
}

}  // namespace kadapter::io
