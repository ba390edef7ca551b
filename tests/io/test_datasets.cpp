// Data-set readers (include/kadapter/io/datasets.hpp) on small hand-written files, written
// into a temporary directory: well-formed records, and malformed ones under both policies
// (MalformedPolicy::skip reports them, MalformedPolicy::fail throws at the first). Every
// message must name the file, the record and the field.
#define BOOST_TEST_MODULE datasets
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kadapter/io/datasets.hpp"

namespace fs = std::filesystem;
using namespace kadapter;
using namespace kadapter::io;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("ka_datasets_" + std::to_string(::getpid()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  fs::path write(const std::string& name, const std::string& text) const {
    const fs::path p = path / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
};

const TempDir& tmp() {
  static TempDir d;
  return d;
}

bool has_all(const std::string& m, const std::vector<std::string>& words) {
  for (const auto& w : words)
    if (m.find(w) == std::string::npos) return false;
  return true;
}

// Runs f, expects an Error whose message holds every word.
template <class F>
void expect_error(F&& f, const std::vector<std::string>& words) {
  try {
    f();
    BOOST_FAIL("expected kadapter::Error");
  } catch (const Error& e) {
    BOOST_TEST_INFO("message: " << e.what());
    BOOST_TEST(has_all(e.what(), words));
  }
}

// Expects skipped record `i` of the report to be `record` with `field`, its message naming
// the file, the record and the field.
void expect_skipped(const ReadReport& r, std::size_t i, std::size_t record,
                    const std::string& field, const std::string& file_word) {
  BOOST_REQUIRE(i < r.skipped.size());
  const auto& s = r.skipped[i];
  BOOST_TEST_INFO("message: " << s.message);
  BOOST_TEST(s.record == record);
  BOOST_TEST(s.field == field);
  BOOST_TEST(has_all(s.message,
                     {file_word, "record " + std::to_string(record), "field \"" + field + "\""}));
}

const char* kRelationsGood = R"([
 {"token": ["Bill", "Gates", "founded", "Microsoft", "."], "subj_start": 0, "subj_end": 1,
  "obj_start": 3, "obj_end": 3, "relation": "org:founded_by"},
 {"token": ["He", "is", "here"], "subj_start": 0, "subj_end": 0, "obj_start": 2,
  "obj_end": 2, "relation": "no_relation"},
 {"token": ["She", "is", "there"], "subj_start": 0, "subj_end": 0, "obj_start": 2,
  "obj_end": 2, "relation": "no_relation"},
 {"token": ["It", "is", "so"], "subj_start": 2, "subj_end": 2, "obj_start": 0,
  "obj_end": 0, "relation": "no_relation"}
])";

// Records: 1 good, 2 missing relation, 3 subj_start a string, 4 subj_end >= len(token),
// 5 relation not in the label set, 6 not an object, 7 a token that is not a string.
const char* kRelationsBad = R"([
 {"token": ["a", "b"], "subj_start": 0, "subj_end": 0, "obj_start": 1, "obj_end": 1,
  "relation": "per:title"},
 {"token": ["a", "b"], "subj_start": 0, "subj_end": 0, "obj_start": 1, "obj_end": 1},
 {"token": ["a", "b"], "subj_start": "0", "subj_end": 0, "obj_start": 1, "obj_end": 1,
  "relation": "per:title"},
 {"token": ["a", "b"], "subj_start": 0, "subj_end": 2, "obj_start": 1, "obj_end": 1,
  "relation": "per:title"},
 {"token": ["a", "b"], "subj_start": 0, "subj_end": 0, "obj_start": 1, "obj_end": 1,
  "relation": "per:favourite_colour"},
 5,
 {"token": ["a", 7], "subj_start": 0, "subj_end": 0, "obj_start": 1, "obj_end": 1,
  "relation": "per:title"}
])";

}  // namespace

// ---- relations --------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(relations_read) {
  const auto p = tmp().write("tacred_train.json", kRelationsGood);
  const auto r = read_relations(p);
  BOOST_TEST(r.examples.size() == 4u);
  BOOST_TEST(r.report.records == 4u);
  BOOST_TEST(r.report.kept == 4u);
  BOOST_TEST(r.report.skipped.empty());
  const auto& e = r.examples[0];
  BOOST_TEST(e.tokens.size() == 5u);
  BOOST_TEST(e.tokens[3] == "Microsoft");
  BOOST_TEST(e.subj_end == 1);
  BOOST_TEST(e.obj_start == 3);
  BOOST_TEST(e.relation == "org:founded_by");
  BOOST_TEST(r.examples[3].record == 4u);
  BOOST_TEST(
      relation_labels(r.examples) == (std::vector<std::string>{"org:founded_by", "no_relation"}),
      boost::test_tools::per_element());
}

// The authors' negative sampling keeps the first negative_sample - 1 no_relation records.
BOOST_AUTO_TEST_CASE(relations_negative_sample) {
  RelationReadOptions o;
  o.negative_sample = 3;  // 3 no_relation records: keeps 2, filters 1
  auto r = parse_relations(kRelationsGood, "train.json", o);
  BOOST_TEST(r.examples.size() == 3u);
  BOOST_TEST(r.report.filtered == 1u);
  BOOST_TEST(r.examples[2].record == 3u);
  o.negative_sample = 1;  // keeps none
  r = parse_relations(kRelationsGood, "train.json", o);
  BOOST_TEST(r.examples.size() == 1u);
  BOOST_TEST(r.report.filtered == 3u);
  BOOST_TEST(r.report.summary() == "train.json: 4 records, 1 kept, 3 filtered, 0 skipped");
}

BOOST_AUTO_TEST_CASE(relations_malformed_skip) {
  const auto p = tmp().write("bad_relations.json", kRelationsBad);
  RelationReadOptions o;
  o.policy = MalformedPolicy::skip;
  o.labels = tacred_relations();
  const auto r = read_relations(p, o);
  BOOST_TEST(r.examples.size() == 1u);
  BOOST_TEST(r.report.records == 7u);
  BOOST_TEST(r.report.skipped.size() == 6u);
  expect_skipped(r.report, 0, 2, "relation", "bad_relations.json");
  BOOST_TEST(r.report.skipped[0].message.find("missing") != std::string::npos);
  expect_skipped(r.report, 1, 3, "subj_start", "bad_relations.json");
  BOOST_TEST(r.report.skipped[1].message.find("expected an integer, got a string") !=
             std::string::npos);
  expect_skipped(r.report, 2, 4, "subj_end", "bad_relations.json");
  BOOST_TEST(r.report.skipped[2].message.find("out of range (expected < len(token) = 2)") !=
             std::string::npos);
  expect_skipped(r.report, 3, 5, "relation", "bad_relations.json");
  BOOST_TEST(r.report.skipped[3].message.find("not in the label set") != std::string::npos);
  BOOST_TEST(r.report.skipped[4].record == 6u);
  BOOST_TEST(r.report.skipped[4].message.find("expected a JSON object") != std::string::npos);
  expect_skipped(r.report, 5, 7, "token[1]", "bad_relations.json");
}

BOOST_AUTO_TEST_CASE(relations_malformed_fail) {
  const auto p = tmp().write("bad_relations.json", kRelationsBad);
  RelationReadOptions o;  // fail is the default
  expect_error([&] { (void)read_relations(p, o); },
               {"bad_relations.json", "record 2", "field \"relation\"", "missing"});
  // Invalid JSON as a whole: both policies throw, naming the file and the line.
  const auto broken = tmp().write("broken.json", "[\n {\"token\": [\"a\"],\n oops\n]");
  expect_error([&] { (void)read_relations(broken, o); },
               {"broken.json", "not valid JSON", "line 3"});
  o.policy = MalformedPolicy::skip;
  expect_error([&] { (void)read_relations(broken, o); }, {"broken.json", "not valid JSON"});
  // A number beyond a double's range is not a syntax error to the JSON parser: still an Error.
  const auto huge = tmp().write("huge.json", "[{\"token\": [\"a\"], \"subj_start\": 1e999}]");
  expect_error([&] { (void)read_relations(huge, o); }, {"huge.json", "not valid JSON", "number overflow"});
  expect_error([&] { (void)parse_relations("{\"token\": []}", "obj.json", o); },
               {"obj.json", "expected a JSON list"});
  expect_error([&] { (void)read_relations(tmp().path / "absent.json", o); },
               {"absent.json", "cannot open"});
}

// ---- find_head --------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(find_head_read) {
  // Word offsets count code points: "Zoë" is 3 characters (4 bytes).
  const auto p = tmp().write("find_head.json", R"([
 {"sent": "Zoë eats .", "tokens": [{"1": {"start": 0, "end": 3}}, {"2": {"start": 4, "end": 8}},
   {"3": {"start": 9, "end": 10}}],
  "pairs": [{"dependent_index": 1, "governor_index": 2, "dep": "nsubj"},
            {"dependent_index": 2, "governor_index": 0, "dep": "root"},
            {"dependent_index": 3, "governor_index": 2, "dep": "punct"}]}
])");
  const auto r = read_find_head(p);
  BOOST_REQUIRE(r.examples.size() == 1u);
  const auto& e = r.examples[0];
  BOOST_TEST(e.words == (std::vector<std::string>{"Zoë", "eats", "."}),
             boost::test_tools::per_element());
  BOOST_TEST(e.heads == (std::vector<std::int64_t>{2, 0, 2}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(find_head_malformed) {
  // 1: governor 4 of 2 words; 2: tokens[1] without key "2"; 3: word 2 has no pair;
  // 4: end past the sentence; 5: good.
  const std::string text = R"([
 {"sent": "a b", "tokens": [{"1": {"start": 0, "end": 1}}, {"2": {"start": 2, "end": 3}}],
  "pairs": [{"dependent_index": 1, "governor_index": 4}, {"dependent_index": 2, "governor_index": 0}]},
 {"sent": "a b", "tokens": [{"1": {"start": 0, "end": 1}}, {"3": {"start": 2, "end": 3}}],
  "pairs": [{"dependent_index": 1, "governor_index": 2}, {"dependent_index": 2, "governor_index": 0}]},
 {"sent": "a b", "tokens": [{"1": {"start": 0, "end": 1}}, {"2": {"start": 2, "end": 3}}],
  "pairs": [{"dependent_index": 1, "governor_index": 0}]},
 {"sent": "a b", "tokens": [{"1": {"start": 0, "end": 1}}, {"2": {"start": 2, "end": 9}}],
  "pairs": [{"dependent_index": 1, "governor_index": 2}, {"dependent_index": 2, "governor_index": 0}]},
 {"sent": "a b", "tokens": [{"1": {"start": 0, "end": 1}}, {"2": {"start": 2, "end": 3}}],
  "pairs": [{"dependent_index": 1, "governor_index": 2}, {"dependent_index": 2, "governor_index": 0}]}
])";
  HeadReadOptions o;
  o.policy = MalformedPolicy::skip;
  const auto r = parse_find_head(text, "fh.json", o);
  BOOST_TEST(r.examples.size() == 1u);
  BOOST_TEST(r.examples[0].record == 5u);
  BOOST_TEST(r.report.skipped.size() == 4u);
  expect_skipped(r.report, 0, 1, "pairs[0].governor_index", "fh.json");
  BOOST_TEST(r.report.skipped[0].message.find("head index 4 is out of range") != std::string::npos);
  expect_skipped(r.report, 1, 2, "tokens[1]", "fh.json");
  expect_skipped(r.report, 2, 3, "pairs", "fh.json");
  expect_skipped(r.report, 3, 4, "tokens[1][\"2\"].end", "fh.json");
  o.policy = MalformedPolicy::fail;
  expect_error([&] { (void)parse_find_head(text, "fh.json", o); },
               {"fh.json", "record 1", "field \"pairs[0].governor_index\""});
}

// ---- CoNLL-U ----------------------------------------------------------------------------

namespace {
// Sentence 1 (lines 1-8): comments, a multiword token 2-3 and an empty node 3.1 are skipped.
// Sentence 2 (lines 10-12): line 11 has 4 columns. Sentence 3 (lines 14-16): HEAD "x" on
// line 15. Sentence 4 (lines 18-19): HEAD 5 for 2 words on line 19. Sentence 5: good.
const char* kConllu =
    "# sent_id = 1\n"
    "# text = Zoë's cat\n"
    "1\tZoë\tZoë\tPROPN\t_\t_\t3\tnmod:poss\t_\t_\n"
    "2-3\tcat's\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "2\t's\t's\tPART\t_\t_\t1\tcase\t_\t_\n"
    "3\tcat\tcat\tNOUN\t_\t_\t0\troot\t_\t_\n"
    "3.1\tsat\tsit\tVERB\t_\t_\t_\t_\t3:conj\t_\n"
    "\n"
    "\n"
    "1\tA\ta\tDET\t_\t_\t2\tdet\t_\t_\n"
    "2\tdog\tdog\tNOUN\n"
    "\n"
    "\n"
    "1\tA\ta\tDET\t_\t_\t2\tdet\t_\t_\n"
    "2\tdog\tdog\tNOUN\t_\t_\tx\troot\t_\t_\n"
    "\n"
    "\n"
    "1\tA\ta\tDET\t_\t_\t2\tdet\t_\t_\n"
    "2\tdog\tdog\tNOUN\t_\t_\t5\troot\t_\t_\n"
    "\n"
    "1\tRun\trun\tVERB\t_\t_\t0\troot\t_\t_\n";
}  // namespace

BOOST_AUTO_TEST_CASE(conllu_read_and_malformed) {
  const auto p = tmp().write("ud.conllu", kConllu);
  HeadReadOptions o;
  o.policy = MalformedPolicy::skip;
  const auto r = read_conllu(p, o);
  BOOST_TEST(r.report.records == 5u);
  BOOST_REQUIRE(r.examples.size() == 2u);
  const auto& e = r.examples[0];
  BOOST_TEST(e.sent == "Zoë's cat");
  BOOST_TEST(e.words == (std::vector<std::string>{"Zoë", "'s", "cat"}),
             boost::test_tools::per_element());
  BOOST_TEST(e.heads == (std::vector<std::int64_t>{3, 1, 0}), boost::test_tools::per_element());
  BOOST_TEST(r.examples[1].sent == "Run");  // no "# text": the words joined
  BOOST_TEST(r.examples[1].record == 5u);
  BOOST_TEST(r.report.skipped.size() == 3u);
  expect_skipped(r.report, 0, 2, "columns", "ud.conllu");
  BOOST_TEST(r.report.skipped[0].line == 11u);
  BOOST_TEST(has_all(r.report.skipped[0].message, {"(line 11)", "got 4"}));
  expect_skipped(r.report, 1, 3, "HEAD", "ud.conllu");
  BOOST_TEST(r.report.skipped[1].line == 15u);
  expect_skipped(r.report, 2, 4, "HEAD", "ud.conllu");
  BOOST_TEST(has_all(r.report.skipped[2].message, {"(line 19)", "\"5\"", "0..2"}));

  o.policy = MalformedPolicy::fail;
  expect_error([&] { (void)read_conllu(p, o); },
               {"ud.conllu", "record 2", "line 11", "field \"columns\"", "10 tab-separated"});
  std::istringstream gap("1\ta\ta\tX\t_\t_\t0\troot\t_\t_\n3\tb\tb\tX\t_\t_\t1\tdep\t_\t_\n");
  expect_error([&] { (void)parse_conllu(gap, "gap.conllu", o); },
               {"gap.conllu", "record 1", "line 2", "field \"ID\"", "expected word number 2"});
}

// ---- entity typing ----------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(entity_typing_list_and_lines) {
  // Offsets are code points: in "Zoë met Ann." Ann is characters 8..11, bytes 9..12.
  const auto list = tmp().write("oe.json", R"([
 {"sent": "Zoë met Ann.", "start": 8, "end": 11, "labels": ["person", "entity"]},
 {"sent": "Paris", "start": 0, "end": 5, "labels": ["location"]}
])");
  EntityTypingReadOptions o;
  o.labels = open_entity_types();
  const auto r = read_entity_typing(list, o);
  BOOST_REQUIRE(r.examples.size() == 2u);
  const auto& e = r.examples[0];
  BOOST_TEST(e.start_byte == 9u);
  BOOST_TEST(e.end_byte == 12u);
  BOOST_TEST(e.left() == "Zoë met ");
  BOOST_TEST(e.mention() == "Ann");
  BOOST_TEST(e.right() == ".");
  BOOST_TEST(e.labels == (std::vector<std::string>{"person", "entity"}),
             boost::test_tools::per_element());

  // JSON lines (streamed), with a blank line; FIGER-style type list from the data.
  const auto lines = tmp().write("figer.json",
                                 "{\"sent\": \"Ann ran\", \"start\": 0, \"end\": 3, \"labels\": "
                                 "[\"/person\", \"/person/athlete\"]}\n"
                                 "\n"
                                 "{\"sent\": \"in Rome\", \"start\": 3, \"end\": 7, \"labels\": "
                                 "[\"/location\", \"/person\"]}\n");
  const auto f = read_entity_typing(lines);
  BOOST_REQUIRE(f.examples.size() == 2u);
  BOOST_TEST(f.examples[1].mention() == "Rome");
  BOOST_TEST(f.examples[1].record == 2u);
  BOOST_TEST(entity_type_labels(f.examples) ==
                 (std::vector<std::string>{"/person", "/person/athlete", "/location"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(entity_typing_malformed) {
  // JSON lines: 1 good; 2 label outside the set; 3 end < start; 4 not JSON; 5 start a float;
  // 6 missing sent; 7 end past the sentence.
  const std::string text =
      "{\"sent\": \"Ann ran\", \"start\": 0, \"end\": 3, \"labels\": [\"person\"]}\n"
      "{\"sent\": \"Ann ran\", \"start\": 0, \"end\": 3, \"labels\": [\"person\", \"robot\"]}\n"
      "{\"sent\": \"Ann ran\", \"start\": 3, \"end\": 1, \"labels\": []}\n"
      "{\"sent\": \"Ann ran\", \"start\": 0,\n"
      "{\"sent\": \"Ann ran\", \"start\": 0.5, \"end\": 3, \"labels\": []}\n"
      "{\"start\": 0, \"end\": 3, \"labels\": []}\n"
      "{\"sent\": \"Ann\", \"start\": 0, \"end\": 4, \"labels\": []}\n";
  const auto p = tmp().write("et.jsonl", text);
  EntityTypingReadOptions o;
  o.labels = open_entity_types();
  o.policy = MalformedPolicy::skip;
  const auto r = read_entity_typing(p, o);
  BOOST_TEST(r.examples.size() == 1u);
  BOOST_TEST(r.report.skipped.size() == 6u);
  expect_skipped(r.report, 0, 2, "labels[1]", "et.jsonl");
  BOOST_TEST(has_all(r.report.skipped[0].message, {"(line 2)", "\"robot\"", "label set"}));
  expect_skipped(r.report, 1, 3, "end", "et.jsonl");
  BOOST_TEST(r.report.skipped[2].record == 4u);
  BOOST_TEST(has_all(r.report.skipped[2].message, {"et.jsonl", "record 4", "not valid JSON"}));
  expect_skipped(r.report, 3, 5, "start", "et.jsonl");
  expect_skipped(r.report, 4, 6, "sent", "et.jsonl");
  expect_skipped(r.report, 5, 7, "end", "et.jsonl");
  o.policy = MalformedPolicy::fail;
  expect_error([&] { (void)read_entity_typing(p, o); },
               {"et.jsonl", "record 2 (line 2)", "field \"labels[1]\"", "robot"});
}

// ---- CosmosQA ---------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(cosmosqa_read_and_malformed) {
  // 1 good (int label), 2 good (string label), blank line, 3 missing answer3, 4 label 7,
  // 5 label a list, 6 not JSON, 7 a number beyond a double's range.
  const std::string text =
      "{\"id\": \"q1\", \"context\": \"c\", \"question\": \"q\", \"answer0\": \"a\", "
      "\"answer1\": \"b\", \"answer2\": \"c\", \"answer3\": \"d\", \"label\": 0}\n"
      "{\"context\": \"c\", \"question\": \"q\", \"answer0\": \"a\", "
      "\"answer1\": \"b\", \"answer2\": \"c\", \"answer3\": \"d\", \"label\": \"2\"}\n"
      "\n"
      "{\"context\": \"c\", \"question\": \"q\", \"answer0\": \"a\", "
      "\"answer1\": \"b\", \"answer2\": \"c\", \"label\": 1}\n"
      "{\"context\": \"c\", \"question\": \"q\", \"answer0\": \"a\", "
      "\"answer1\": \"b\", \"answer2\": \"c\", \"answer3\": \"d\", \"label\": 7}\n"
      "{\"context\": \"c\", \"question\": \"q\", \"answer0\": \"a\", "
      "\"answer1\": \"b\", \"answer2\": \"c\", \"answer3\": \"d\", \"label\": [1]}\n"
      "{\"context\": \"c\"\n"
      "{\"context\": \"c\", \"label\": 1e400}\n";
  const auto p = tmp().write("cosmos.jsonl", text);
  MultipleChoiceReadOptions o;
  o.policy = MalformedPolicy::skip;
  const auto r = read_multiple_choice(p, o);
  BOOST_REQUIRE(r.examples.size() == 2u);
  BOOST_TEST(r.examples[0].id == "q1");
  BOOST_TEST(r.examples[0].answers.size() == 4u);
  BOOST_TEST(r.examples[0].answers[3] == "d");
  BOOST_TEST(*r.examples[0].label == 0);
  BOOST_TEST(*r.examples[1].label == 2);
  BOOST_TEST(r.report.records == 7u);
  BOOST_TEST(r.report.skipped.size() == 5u);
  expect_skipped(r.report, 0, 3, "answer3", "cosmos.jsonl");
  BOOST_TEST(r.report.skipped[0].line == 4u);
  expect_skipped(r.report, 1, 4, "label", "cosmos.jsonl");
  BOOST_TEST(r.report.skipped[1].message.find("7 is out of range") != std::string::npos);
  expect_skipped(r.report, 2, 5, "label", "cosmos.jsonl");
  BOOST_TEST(r.report.skipped[3].message.find("not valid JSON") != std::string::npos);
  BOOST_TEST(has_all(r.report.skipped[4].message, {"cosmos.jsonl", "record 7", "not valid JSON", "overflow"}));
  o.policy = MalformedPolicy::fail;
  expect_error([&] { (void)read_multiple_choice(p, o); },
               {"cosmos.jsonl", "record 3 (line 4)", "field \"answer3\"", "missing"});

  // Unlabelled test file.
  std::istringstream test_file(
      "{\"context\": \"c\", \"question\": \"q\", \"answer0\": \"a\", \"answer1\": \"b\", "
      "\"answer2\": \"c\", \"answer3\": \"d\"}\n");
  o.require_label = false;
  const auto t = parse_multiple_choice(test_file, "test.jsonl", o);
  BOOST_REQUIRE(t.examples.size() == 1u);
  BOOST_TEST(!t.examples[0].label.has_value());
}

BOOST_AUTO_TEST_CASE(label_map) {
  LabelMap m(tacred_relations());
  BOOST_TEST(m.size() == 42u);
  BOOST_TEST(m.id("no_relation") == 28);
  BOOST_TEST(m.id("per:spouse") == 41);
  BOOST_CHECK_THROW((void)m.id("per:pet"), Error);
  BOOST_CHECK_THROW(LabelMap(std::vector<std::string>{"a", "a"}), Error);
  BOOST_TEST(LabelMap(open_entity_types()).id("person") == 7);
}

// Label lists (relations.txt, types.txt): names in line order, descriptions after a tab
// ignored; a nameless line, a repeated name and an empty list are errors naming the line.
BOOST_AUTO_TEST_CASE(label_list) {
  BOOST_TEST(parse_label_list("P17\tcountry\r\n\n  P30 \tcontinent\nno_relation\n", "r.txt") ==
             (std::vector<std::string>{"P17", "P30", "no_relation"}));
  BOOST_TEST(parse_label_list("a\nb", "r.txt") == (std::vector<std::string>{"a", "b"}));
  BOOST_TEST(parse_label_list("\xEF\xBB\xBF" "a\tfirst\n", "r.txt") == (std::vector<std::string>{"a"}));
  auto fails = [](std::string_view text, const std::string& words) {
    try {
      (void)parse_label_list(text, "r.txt");
      BOOST_ERROR("no error for: " << text);
    } catch (const Error& e) {
      BOOST_TEST(std::string(e.what()).find(words) != std::string::npos, e.what());
    }
  };
  fails("a\n\tdescription\n", "r.txt: line 2: no label name before the tab");
  fails("a\nb\n\na\tagain\n", "r.txt: line 4: label \"a\" is listed again (first on line 1)");
  fails("\n \n", "r.txt: lists no labels");
  TempDir dir;
  std::ofstream(dir.path / "types.txt") << "person\nlocation\n";
  BOOST_TEST(read_label_list(dir.path / "types.txt") == (std::vector<std::string>{"person", "location"}));
  BOOST_CHECK_THROW((void)read_label_list(dir.path / "missing.txt"), Error);
}
