// Feature builders (include/kadapter/io/features.hpp) checked against hand-worked examples.
//
// The mock tokenizer below makes the expected ids easy to derive by hand:
//  - a word is cut into chunks of at most 4 bytes: "elephants" -> "elep" "hant" "s";
//  - unless first_in_sequence, the first chunk gets "_" in front (the mock's `Ġ`):
//    tokenize_word("elephants", false) = {"_elep", "hant", "s"};
//  - ids come from the table kVocab (unknown pieces -> 3); <s> = 0, <pad> = 1, </s> = 2.
// Under Convention::official every word is tokenized with first_in_sequence = false.
#define BOOST_TEST_MODULE features
#include <boost/test/unit_test.hpp>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "kadapter/io/datasets.hpp"
#include "kadapter/io/features.hpp"

using namespace kadapter;
using namespace kadapter::io;
using Ids = std::vector<std::int64_t>;

namespace {

const std::map<std::string, std::int64_t, std::less<>> kVocab = {
    {"<s>", 0},    {"<pad>", 1},  {"</s>", 2},   {"<unk>", 3},  {"@", 4},      {"#", 5},
    {"_@", 6},     {"_Bill", 10}, {"_Gate", 11}, {"s", 12},     {"_foun", 13}, {"ded", 14},
    {"_Micr", 15}, {"osof", 16},  {"t", 17},     {"_.", 18},    {"Bill", 19},  {"_a", 20},
    {"_b", 21},    {"_c", 22},    {"_d", 23},    {"_e", 24},    {"_f", 25},    {"_g", 26},
    {"_h", 27},    {"_i", 28},    {"_j", 29},    {"_k", 30},    {"_l", 31},    {"_m", 32},
    {"_Yest", 40}, {"erda", 41},  {"y", 42},     {"_spok", 43}, {"e.", 44},    {"_John", 45},
    {"_eats", 46}, {"_elep", 47}, {"hant", 48},  {"_Hell", 49}, {"o", 50},     {"_wor", 51},
    {"ld", 52},    {"_the", 60},  {"_cat", 61},  {"_sat", 62},  {"_why", 63},  {"_it", 64},
    {"_no", 65},   {"_yes", 66},  {"_mayb", 67}, {"e", 68},     {"the", 69},   {"why", 70},
    {"it", 71},    {"John", 72},  {"Yest", 73}};

struct MockTokenizer {
  std::vector<std::string> tokenize_word(std::string_view w, bool first_in_sequence) const {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < w.size(); i += 4) out.emplace_back(w.substr(i, 4));
    if (!out.empty() && !first_in_sequence) out[0] = "_" + out[0];
    return out;
  }
  std::int64_t id(std::string_view piece) const {
    auto it = kVocab.find(piece);
    return it == kVocab.end() ? 3 : it->second;
  }
  std::int64_t cls_id() const { return 0; }
  std::int64_t sep_id() const { return 2; }
  std::int64_t pad_id() const { return 1; }
};
static_assert(SubwordTokenizer<MockTokenizer>);

const MockTokenizer tok;

Ids padded(Ids v, std::size_t n, std::int64_t pad) {
  v.resize(n, pad);
  return v;
}

std::vector<float> hot(std::size_t n, std::size_t at) {
  std::vector<float> v(n, 0.0f);
  v[at] = 1.0f;
  return v;
}

Ids mask(std::size_t ones, std::size_t n) {
  Ids m(n, 0);
  for (std::size_t i = 0; i < ones; ++i) m[i] = 1;
  return m;
}

RelationExample bill_gates() {
  RelationExample ex;
  ex.tokens = {"Bill", "Gates", "founded", "Microsoft", "."};
  ex.subj_start = 0;
  ex.subj_end = 1;
  ex.obj_start = 3;
  ex.obj_end = 3;
  ex.relation = "founder";
  ex.record = 1;
  return ex;
}

const LabelMap kRelations(std::vector<std::string>{"other", "founder"});

}  // namespace

// ---- relation ---------------------------------------------------------------------------

// "Bill Gates founded Microsoft ." subject = words 0..1, object = word 3. Subject first:
//   [] @ [Bill Gates] @ [founded] # [Microsoft] # [.]
// pieces: @ _Bill _Gate s @ _foun ded # _Micr osof t # _.      (13 pieces)
// ids:    4  10    11   12 4  13   14  5  15   16  17 5  18
// then <s> (0) in front and </s> (2) at the end: the first @ at 1, the first # at 8.
BOOST_AUTO_TEST_CASE(relation_markers_and_rows) {
  RelationFeatureOptions o;
  o.max_seq_length = 20;
  const auto f = make_relation_features(bill_gates(), tok, kRelations, o);
  BOOST_REQUIRE(f);
  const Ids ids = {0, 4, 10, 11, 12, 4, 13, 14, 5, 15, 16, 17, 5, 18, 2};
  BOOST_TEST(f->input_ids == padded(ids, 20, 1), boost::test_tools::per_element());
  BOOST_TEST(f->attention_mask == mask(15, 20), boost::test_tools::per_element());
  BOOST_TEST(f->subj_pos == 1);
  BOOST_TEST(f->obj_pos == 8);
  BOOST_TEST(f->subj_special_start_id == hot(20, 1), boost::test_tools::per_element());
  BOOST_TEST(f->obj_special_start_id == hot(20, 8), boost::test_tools::per_element());
  BOOST_TEST(f->label == 1);
}

// Object before subject (obj_start < subj_start): the object's # pair comes first.
//   # [Bill Gates] # [founded] @ [Microsoft] @ [.]  -> the first # at 1, the first @ at 8.
BOOST_AUTO_TEST_CASE(relation_object_first) {
  RelationExample ex = bill_gates();
  std::swap(ex.subj_start, ex.obj_start);
  std::swap(ex.subj_end, ex.obj_end);
  RelationFeatureOptions o;
  o.max_seq_length = 16;
  const auto f = make_relation_features(ex, tok, kRelations, o);
  BOOST_REQUIRE(f);
  const Ids ids = {0, 5, 10, 11, 12, 5, 13, 14, 4, 15, 16, 17, 4, 18, 2, 1};
  BOOST_TEST(f->input_ids == ids, boost::test_tools::per_element());
  BOOST_TEST(f->obj_pos == 1);
  BOOST_TEST(f->subj_pos == 8);
}

// Truncation keeps max - 2 pieces. max 10: 8 pieces "@ _Bill _Gate s @ _foun ded #", the #
// at 8 survives. max 9: 7 pieces, the # is cut but its position 8 < 9, so (official) the
// row stays on position 8, which is now </s>. Standard drops that example. max 8: position
// 8 >= 8, dropped (fac-adapter rule).
BOOST_AUTO_TEST_CASE(relation_truncation) {
  RelationFeatureOptions o;
  o.max_seq_length = 10;
  auto f = make_relation_features(bill_gates(), tok, kRelations, o);
  BOOST_REQUIRE(f);
  BOOST_TEST(f->input_ids == (Ids{0, 4, 10, 11, 12, 4, 13, 14, 5, 2}),
             boost::test_tools::per_element());
  BOOST_TEST(f->obj_pos == 8);

  o.max_seq_length = 9;
  f = make_relation_features(bill_gates(), tok, kRelations, o);
  BOOST_REQUIRE(f);
  BOOST_TEST(f->input_ids == (Ids{0, 4, 10, 11, 12, 4, 13, 14, 2}),
             boost::test_tools::per_element());
  BOOST_TEST(f->obj_pos == 8);
  BOOST_TEST(f->input_ids[8] == 2);  // the row points at </s>: the authors' quirk

  o.convention = Convention::standard;
  std::string why;
  BOOST_TEST(!make_relation_features(bill_gates(), tok, kRelations, o, &why));
  BOOST_TEST(why.find("object marker is cut off") != std::string::npos);

  o.convention = Convention::official;
  o.max_seq_length = 8;
  why.clear();
  BOOST_TEST(!make_relation_features(bill_gates(), tok, kRelations, o, &why));
  BOOST_TEST(why.find("record 1") != std::string::npos);
}

// TACRED's clamp rule. Words a..m (13), subject = a, object = m:
//   @ _a @ _b _c _d _e _f _g _h _i _j _k _l # _m #   -> the first # at index 14, position 15.
// max 12 keeps 10 pieces (@ _a @ _b .. _h); 15 > 12 so the object row moves to 12 - 10 = 2.
BOOST_AUTO_TEST_CASE(relation_clamp_like_tacred) {
  RelationExample ex;
  for (char c = 'a'; c <= 'm'; ++c) ex.tokens.push_back(std::string(1, c));
  ex.subj_start = ex.subj_end = 0;
  ex.obj_start = ex.obj_end = 12;
  ex.relation = "other";
  RelationFeatureOptions o;
  o.max_seq_length = 12;
  o.overflow = MarkerOverflow::clamp;
  const auto f = make_relation_features(ex, tok, kRelations, o);
  BOOST_REQUIRE(f);
  BOOST_TEST(f->input_ids == (Ids{0, 4, 20, 4, 21, 22, 23, 24, 25, 26, 27, 2}),
             boost::test_tools::per_element());
  BOOST_TEST(f->subj_pos == 1);
  BOOST_TEST(f->obj_pos == 2);
  BOOST_TEST(f->obj_special_start_id == hot(12, 2), boost::test_tools::per_element());
  BOOST_TEST(f->label == 0);
  o.overflow = MarkerOverflow::drop;
  BOOST_TEST(!make_relation_features(ex, tok, kRelations, o));
}

// Standard convention: the sentence's first word without the space mark: "Bill" -> 19.
BOOST_AUTO_TEST_CASE(relation_standard_spacing) {
  RelationFeatureOptions o;
  o.max_seq_length = 15;
  o.convention = Convention::standard;
  const auto f = make_relation_features(bill_gates(), tok, kRelations, o);
  BOOST_REQUIRE(f);
  BOOST_TEST(f->input_ids == (Ids{0, 4, 19, 11, 12, 4, 13, 14, 5, 15, 16, 17, 5, 18, 2}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(relation_bad_label_and_options) {
  RelationExample ex = bill_gates();
  ex.relation = "unknown";
  ex.record = 7;
  RelationFeatureOptions o;
  o.max_seq_length = 20;
  try {
    (void)make_relation_features(ex, tok, kRelations, o);
    BOOST_FAIL("expected an Error");
  } catch (const Error& e) {
    BOOST_TEST(std::string(e.what()).find("record 7") != std::string::npos);
    BOOST_TEST(std::string(e.what()).find("unknown") != std::string::npos);
  }
  o.max_seq_length = 2;
  BOOST_CHECK_THROW((void)make_relation_features(bill_gates(), tok, kRelations, o), Error);
  // A list: the label map built from the data, in order of first appearance.
  std::vector<RelationExample> xs = {bill_gates(), bill_gates()};
  xs[1].relation = "other";
  const LabelMap built(relation_labels(xs));
  BOOST_TEST(built.names() == (std::vector<std::string>{"founder", "other"}),
             boost::test_tools::per_element());
  o.max_seq_length = 8;  // both dropped (the # lies at position 8)
  const auto set = build_relation_features(xs, tok, built, o);
  BOOST_TEST(set.features.size() == 0u);
  BOOST_TEST(set.dropped.size() == 2u);
}

// ---- entity typing ----------------------------------------------------------------------

// "Yesterday Bill Gates spoke." mention = characters 10..20 ("Bill Gates").
//   left "Yesterday " -> _Yest erda y (40 41 42); marker tokenize("@") -> _@ (6);
//   mention -> _Bill _Gate s (10 11 12); _@ (6); right " spoke." -> _spok e. (43 44)
//   sequence: <s> 40 41 42 6 10 11 12 6 43 44 </s> (12 tokens), start at 1 + 3 = 4.
// labels person (7) and entity (0) over open_entity_types().
BOOST_AUTO_TEST_CASE(entity_typing_markers) {
  EntityTypingExample ex;
  ex.sent = "Yesterday Bill Gates spoke.";
  ex.start = 10;
  ex.end = 20;
  ex.start_byte = 10;
  ex.end_byte = 20;
  ex.labels = {"person", "entity"};
  const LabelMap types(open_entity_types());
  EntityTypingFeatureOptions o;
  o.max_seq_length = 14;
  auto f = make_entity_typing_features(ex, tok, types, o);
  BOOST_REQUIRE(f);
  const Ids ids = {0, 40, 41, 42, 6, 10, 11, 12, 6, 43, 44, 2};
  BOOST_TEST(f->input_ids == padded(ids, 14, 1), boost::test_tools::per_element());
  BOOST_TEST(f->attention_mask == mask(12, 14), boost::test_tools::per_element());
  BOOST_TEST(f->start_pos == 4);
  BOOST_TEST(f->start_id == hot(14, 4), boost::test_tools::per_element());
  BOOST_TEST(f->labels == (std::vector<float>{1, 0, 0, 0, 0, 0, 0, 1, 0}),
             boost::test_tools::per_element());

  // 12 tokens and max 12: OpenEntity keeps it (no padding), FIGER's rule (>= max) drops it.
  o.max_seq_length = 12;
  BOOST_TEST(make_entity_typing_features(ex, tok, types, o).has_value());
  o.drop_at_max_length = true;
  BOOST_TEST(!make_entity_typing_features(ex, tok, types, o).has_value());
  o.drop_at_max_length = false;
  o.max_seq_length = 11;
  std::string why;
  BOOST_TEST(!make_entity_typing_features(ex, tok, types, o, &why).has_value());
  BOOST_TEST(why.find("12 tokens") != std::string::npos);

  // Standard: "Yesterday" is the first word -> Yest (73) erda y.
  o.max_seq_length = 12;
  o.convention = Convention::standard;
  f = make_entity_typing_features(ex, tok, types, o);
  BOOST_REQUIRE(f);
  BOOST_TEST(f->input_ids[1] == 73);

  ex.labels = {"dinosaur"};
  BOOST_CHECK_THROW((void)make_entity_typing_features(ex, tok, types, o), Error);
  ex.labels = {"person"};
  ex.end_byte = 99;  // a hand-made example whose offsets do not fit: an Error, not a crash
  BOOST_CHECK_THROW((void)make_entity_typing_features(ex, tok, types, o), Error);
}

// A mention at the very start: left is empty, so the @ is right after <s> (start 1).
BOOST_AUTO_TEST_CASE(entity_typing_mention_first) {
  EntityTypingExample ex;
  ex.sent = "Bill spoke.";
  ex.start = 0;
  ex.end = 4;
  ex.start_byte = 0;
  ex.end_byte = 4;
  ex.labels = {"person"};
  EntityTypingFeatureOptions o;
  o.max_seq_length = 8;
  const auto f = make_entity_typing_features(ex, tok, LabelMap(open_entity_types()), o);
  BOOST_REQUIRE(f);
  BOOST_TEST(f->input_ids == (Ids{0, 6, 10, 6, 43, 44, 2, 1}), boost::test_tools::per_element());
  BOOST_TEST(f->start_pos == 1);
}

// ---- head prediction --------------------------------------------------------------------

// "John eats elephants ." heads: John -> 2, eats -> 0 (root), elephants -> 2, . -> 2.
// pieces: <s> _John _eats _elep hant s _. </s>    (positions 0..7)
//          0   45    46    47    48  12 18  2
// first pieces: John 1, eats 2, elephants 3, . 6.
// Official labels: position k (k = 1..4) gets word k's label = sub_word_indexes[head], where
// sub_word_indexes = [1, 1+1, 2+1, 3+1, 6+1] = [1, 2, 3, 4, 7]:
//   John -> [2] = 3, eats (root) -> [0] = 1, elephants -> 3, . -> 3;  then 0 for </s> slot.
//   labels = 0 3 1 3 3 0 0 0 ...   (positions 3..5 hold word labels although pieces 4,5 are
//   "hant s": the per-word / per-piece drift); loss mask = attention mask (8 ones).
// Standard labels at first pieces: John@1 -> 2, eats@2 -> 0, elephants@3 -> 2, .@6 -> 2.
BOOST_AUTO_TEST_CASE(head_labels) {
  HeadExample ex;
  ex.words = {"John", "eats", "elephants", "."};
  ex.heads = {2, 0, 2, 2};
  ex.record = 3;
  HeadFeatureOptions o;
  o.max_seq_length = 10;
  auto f = make_head_features(ex, tok, o);
  BOOST_REQUIRE(f);
  const Ids ids = {0, 45, 46, 47, 48, 12, 18, 2};
  BOOST_TEST(f->input_ids == padded(ids, 10, 1), boost::test_tools::per_element());
  BOOST_TEST(f->attention_mask == mask(8, 10), boost::test_tools::per_element());
  BOOST_TEST(f->labels == (Ids{0, 3, 1, 3, 3, 0, 0, 0, 0, 0}), boost::test_tools::per_element());
  BOOST_TEST(f->loss_mask == f->attention_mask, boost::test_tools::per_element());

  o.convention = Convention::standard;
  f = make_head_features(ex, tok, o);
  BOOST_REQUIRE(f);
  BOOST_TEST(f->input_ids[1] == 72);  // "John" first in sequence: no space mark
  BOOST_TEST(f->labels == (Ids{0, 2, 0, 2, 0, 0, 2, 0, 0, 0}), boost::test_tools::per_element());
  BOOST_TEST(f->loss_mask == (Ids{0, 1, 1, 1, 0, 0, 1, 0, 0, 0}), boost::test_tools::per_element());

  // 8 tokens: official needs 8 < max (max 8 drops), standard needs 8 <= max.
  o.max_seq_length = 8;
  BOOST_TEST(make_head_features(ex, tok, o).has_value());
  o.convention = Convention::official;
  std::string why;
  BOOST_TEST(!make_head_features(ex, tok, o, &why).has_value());
  BOOST_TEST(why.find("record 3") != std::string::npos);
}

// "Hello world": Hello's head is word 2, the last word. The authors' lookup table has no
// entry for the last word, so official drops the sentence; standard keeps it.
// Standard: <s> _Hell o _wor ld </s>: Hello@1 -> 3 (world's first piece), world@3 -> root 0.
BOOST_AUTO_TEST_CASE(head_last_word_quirk) {
  HeadExample ex;
  ex.words = {"Hello", "world"};
  ex.heads = {2, 0};
  HeadFeatureOptions o;
  o.max_seq_length = 8;
  std::string why;
  BOOST_TEST(!make_head_features(ex, tok, o, &why).has_value());
  BOOST_TEST(why.find("last word") != std::string::npos);
  o.convention = Convention::standard;
  const auto f = make_head_features(ex, tok, o);
  BOOST_REQUIRE(f);
  BOOST_TEST(f->labels == (Ids{0, 3, 0, 0, 0, 0, 0, 0}), boost::test_tools::per_element());
  BOOST_TEST(f->loss_mask == (Ids{0, 1, 0, 1, 0, 0, 0, 0}), boost::test_tools::per_element());

  const auto set = build_head_features(std::vector<HeadExample>{ex}, tok, HeadFeatureOptions{});
  BOOST_TEST(set.dropped.size() == 1u);
  ex.heads = {5, 0};
  BOOST_CHECK_THROW((void)make_head_features(ex, tok, o), Error);
}

// ---- multiple choice --------------------------------------------------------------------

// context "the cat sat" -> _the _cat _sat (60 61 62); question "why" -> _why (63);
// answers it / no / yes / maybe -> _it (64) / _no (65) / _yes (66) / _mayb e (67 68).
// Layout (the code's): <s> context </s> question </s> answer </s>, padded with 0.
BOOST_AUTO_TEST_CASE(multiple_choice_layout_and_truncation) {
  MultipleChoiceExample ex;
  ex.context = "the cat sat";
  ex.question = "why";
  ex.answers = {"it", "no", "yes", "maybe"};
  ex.label = 2;
  MultipleChoiceFeatureOptions o;
  o.max_seq_length = 12;
  auto f = make_multiple_choice_features(ex, tok, o);
  BOOST_REQUIRE(f.input_ids.size() == 4u);
  BOOST_TEST(f.label == 2);
  BOOST_TEST(f.input_ids[0] == (Ids{0, 60, 61, 62, 2, 63, 2, 64, 2, 0, 0, 0}),
             boost::test_tools::per_element());
  BOOST_TEST(f.attention_mask[0] == mask(9, 12), boost::test_tools::per_element());
  BOOST_TEST(f.input_ids[3] == (Ids{0, 60, 61, 62, 2, 63, 2, 67, 68, 2, 0, 0}),
             boost::test_tools::per_element());

  // max 7 -> 4 pieces for context + answer side. Answer 0: context 3, side "_why </s> _it" 3:
  // tie -> pop the side (3 -> 2), then the context is longer -> pop it (3 -> 2).
  o.max_seq_length = 7;
  f = make_multiple_choice_features(ex, tok, o);
  BOOST_TEST(f.input_ids[0] == (Ids{0, 60, 61, 2, 63, 2, 2}), boost::test_tools::per_element());
  // Answer 3 at max 8 (5 pieces): side "_why </s> _mayb e" (4) > context (3): pop "e";
  // then 3 vs 3, tie -> pop "_mayb": the answer is gone, the inner </s> stays.
  o.max_seq_length = 8;
  f = make_multiple_choice_features(ex, tok, o);
  BOOST_TEST(f.input_ids[3] == (Ids{0, 60, 61, 62, 2, 63, 2, 2}), boost::test_tools::per_element());

  // Standard: padding with <pad> (1), first words of each part without the space mark.
  o.max_seq_length = 11;
  o.convention = Convention::standard;
  f = make_multiple_choice_features(ex, tok, o);
  BOOST_TEST(f.input_ids[0] == (Ids{0, 69, 61, 62, 2, 70, 2, 71, 2, 1, 1}),
             boost::test_tools::per_element());

  ex.label.reset();
  BOOST_TEST(
      build_multiple_choice_features(std::vector<MultipleChoiceExample>{ex}, tok, o)[0].label ==
      -1);
}
