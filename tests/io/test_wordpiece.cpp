// BERT WordPiece parity with HuggingFace's BertTokenizerFast on the real all-MiniLM-L6-v2
// vocabulary (expectations from tests/fixtures/tokenizer/make_tokenizer_fixtures.py). The
// vocabulary is not committed (scripts/setup.sh fetches it): skipped when it is absent.
#define BOOST_TEST_MODULE wordpiece
#include "support/skippable_main.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kadapter/core/error.hpp"
#include "kadapter/io/wordpiece.hpp"

namespace fs = std::filesystem;
namespace io = kadapter::io;

namespace {

const fs::path kFixtures = fs::path(KA_FIXTURE_DIR) / "tokenizer";
const fs::path kModel = KA_MINILM_DIR;

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  BOOST_REQUIRE_MESSAGE(f, "cannot open " << path);
  std::vector<nlohmann::json> rows;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

/// Encode the corpus; count records whose input_ids or token_type_ids differ from HF's.
std::size_t corpus_mismatches(const io::BertTokenizer& tok, const char* label) {
  const auto corpus = read_jsonl(kFixtures / "corpus.jsonl");
  const auto expected = read_jsonl(kFixtures / "expected_bert.jsonl");
  BOOST_REQUIRE_EQUAL(corpus.size(), expected.size());
  BOOST_TEST(corpus.size() >= 2000u);
  std::size_t bad = 0, strings = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < corpus.size(); ++i) {
    const nlohmann::json& r = corpus[i];
    io::EncodeOptions o;
    if (r.contains("max_length")) o.max_length = r["max_length"].get<std::size_t>();
    const std::string strategy = r.value("truncation", "longest_first");
    if (strategy == "only_first") o.truncation = io::TruncationStrategy::only_first;
    if (strategy == "only_second") o.truncation = io::TruncationStrategy::only_second;
    const std::string text = r["text"].get<std::string>();
    const io::Encoding e = r.contains("pair")
                               ? tok.encode_pair(text, r["pair"].get<std::string>(), o)
                               : tok.encode(text, o);
    strings += r.contains("pair") ? 2 : 1;
    const auto ids = expected[i]["input_ids"].get<std::vector<std::int64_t>>();
    const auto types = expected[i]["token_type_ids"].get<std::vector<std::int64_t>>();
    if ((e.ids != ids || e.type_ids != types) && ++bad <= 10) {
      std::cerr << label << " mismatch on corpus line " << (i + 1) << ": " << r.dump()
                << "\n  expected " << expected[i].dump() << "\n  got      "
                << nlohmann::json(e.ids).dump() << " types " << nlohmann::json(e.type_ids).dump()
                << "\n  tokens   " << nlohmann::json(e.tokens).dump() << "\n";
    }
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::cout << label << ": " << (corpus.size() - bad) << " of " << corpus.size()
            << " corpus records (" << strings << " strings) identical to HuggingFace, " << ms
            << " ms\n";
  return bad;
}

}  // namespace

bool ka_test_can_run(std::string& why_not) {
  if (fs::exists(kModel / "vocab.txt") && fs::exists(kModel / "tokenizer.json")) return true;
  why_not = "the all-MiniLM-L6-v2 vocabulary is not installed at " + kModel.string() +
            " (scripts/setup.sh installs it)";
  return false;
}

BOOST_AUTO_TEST_CASE(bert_vocab_txt_matches_huggingface_on_the_corpus) {
  const io::BertTokenizer tok = io::BertTokenizer::from_vocab_file(kModel / "vocab.txt");
  BOOST_TEST(tok.vocab_size() == 30522u);
  BOOST_TEST(tok.cls_id() == 101);
  BOOST_TEST(tok.sep_id() == 102);
  BOOST_TEST(tok.pad_id() == 0);
  BOOST_TEST(tok.pad_token() == "[PAD]");
  BOOST_TEST(tok.unk_id() == 100);
  BOOST_TEST(tok.mask_id() == 103);
  BOOST_TEST(corpus_mismatches(tok, "BERT vocab.txt") == 0u);
}

BOOST_AUTO_TEST_CASE(bert_tokenizer_json_matches_huggingface_on_the_corpus) {
  const io::BertTokenizer tok = io::BertTokenizer::from_directory(kModel);
  BOOST_TEST(tok.options().lowercase);
  BOOST_TEST(!tok.options().strip_accents.has_value());
  BOOST_TEST(corpus_mismatches(tok, "BERT tokenizer.json") == 0u);
}

BOOST_AUTO_TEST_CASE(bert_behaviours) {
  const io::BertTokenizer tok = io::BertTokenizer::from_vocab_file(kModel / "vocab.txt");
  using V = std::vector<std::string>;
  BOOST_TEST(tok.tokenize("UNwant\u00E9d,running") == (V{"unwanted", ",", "running"}));
  BOOST_TEST(tok.tokenize("Hello [MASK] [mask]!") == (V{"hello", "[MASK]", "[", "mask", "]", "!"}));
  // HF's CJK ranges skip U+2B820..U+2B91F: no spaces around U+2B825, so one [UNK] word.
  BOOST_TEST(tok.encode("a\U0002B825b").ids == (std::vector<std::int64_t>{101, 100, 102}));
  BOOST_TEST(tok.encode("a\u4E00b").ids == (std::vector<std::int64_t>{101, 1037, 1740, 1038, 102}));
  io::EncodeOptions o;
  o.max_length = 8;
  o.pad_to_length = 12;
  const io::Encoding e = tok.encode_pair("one two three four five", "six seven eight", o);
  BOOST_TEST(e.size() == 12u);
  BOOST_TEST(e.ids[0] == 101);
  BOOST_TEST(e.ids[7] == 102);
  BOOST_TEST(e.ids[8] == 0);
  BOOST_TEST(e.attention_mask[7] == 1);
  BOOST_TEST(e.attention_mask[8] == 0);
  // longest_first: 5 + 3 tokens into 8 - 3 specials = 5 gives 3 + 2.
  BOOST_TEST(e.type_ids == (std::vector<std::int64_t>{0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0}));
}
