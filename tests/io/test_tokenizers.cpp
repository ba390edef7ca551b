// RoBERTa byte-level BPE parity with HuggingFace (RobertaTokenizerFast on a small BPE trained
// by tests/fixtures/tokenizer/make_tokenizer_fixtures.py), the Unicode helpers, WordPiece on a
// tiny vocabulary, and clear errors for malformed vocab / merges / tokenizer files. Always runs;
// the real-vocabulary BERT parity is in test_wordpiece.cpp.
#define BOOST_TEST_MODULE tokenizers
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kadapter/core/error.hpp"
#include "kadapter/io/bpe.hpp"
#include "kadapter/io/unicode.hpp"
#include "kadapter/io/wordpiece.hpp"

namespace fs = std::filesystem;
namespace io = kadapter::io;
namespace unicode = kadapter::io::unicode;
using kadapter::Error;

namespace {

const fs::path kFixtures = fs::path(KA_FIXTURE_DIR) / "tokenizer";
const fs::path kBpe = kFixtures / "bpe";

/// A fresh directory under the system temp directory, removed (with its contents) on exit.
struct TempDir {
  fs::path dir;
  TempDir() {
    static std::atomic<int> counter{0};
    dir = fs::temp_directory_path() /
          ("kadapter_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  fs::path write(const std::string& name, const std::string& text) const {
    const fs::path p = dir / name;
    std::ofstream f(p, std::ios::binary);
    f << text;
    return p;
  }
};

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  BOOST_REQUIRE_MESSAGE(f, "cannot open " << path);
  std::vector<nlohmann::json> rows;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

io::EncodeOptions options_of(const nlohmann::json& record) {
  io::EncodeOptions o;
  if (record.contains("max_length")) o.max_length = record["max_length"].get<std::size_t>();
  const std::string strategy = record.value("truncation", "longest_first");
  if (strategy == "only_first") o.truncation = io::TruncationStrategy::only_first;
  if (strategy == "only_second") o.truncation = io::TruncationStrategy::only_second;
  return o;
}

/// Whether `message` contains every one of `parts`; prints it on failure.
bool mentions(const std::string& message, std::initializer_list<std::string> parts) {
  for (const std::string& p : parts)
    if (message.find(p) == std::string::npos) {
      std::cerr << "error message \"" << message << "\" lacks \"" << p << "\"\n";
      return false;
    }
  return true;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

/// Encode the whole corpus with `tok` and count records whose ids differ from `expected`.
template <class Tokenizer>
std::size_t corpus_mismatches(const Tokenizer& tok, const std::vector<nlohmann::json>& corpus,
                              const std::vector<nlohmann::json>& expected, const char* label,
                              bool check_type_ids) {
  BOOST_REQUIRE_EQUAL(corpus.size(), expected.size());
  std::size_t bad = 0, strings = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < corpus.size(); ++i) {
    const nlohmann::json& r = corpus[i];
    const io::EncodeOptions o = options_of(r);
    const std::string text = r["text"].get<std::string>();
    const io::Encoding e = r.contains("pair")
                               ? tok.encode_pair(text, r["pair"].get<std::string>(), o)
                               : tok.encode(text, o);
    strings += r.contains("pair") ? 2 : 1;
    const auto want = expected[i]["input_ids"].get<std::vector<std::int64_t>>();
    bool ok = e.ids == want && e.attention_mask == std::vector<std::int64_t>(want.size(), 1);
    if (check_type_ids) {
      ok = ok && e.type_ids == expected[i]["token_type_ids"].get<std::vector<std::int64_t>>();
    } else {
      ok = ok && e.type_ids == std::vector<std::int64_t>(want.size(), 0);
    }
    if (!ok && ++bad <= 10) {
      std::cerr << label << " mismatch on corpus line " << (i + 1) << ": " << r.dump()
                << "\n  expected " << expected[i].dump() << "\n  got      "
                << nlohmann::json(e.ids).dump() << " types " << nlohmann::json(e.type_ids).dump()
                << "\n";
    }
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::cout << label << ": " << (corpus.size() - bad) << " of " << corpus.size()
            << " corpus records (" << strings << " strings) identical to HuggingFace, " << ms
            << " ms\n";
  return bad;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

// ---- Unicode helpers --------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(utf8_round_trip_and_errors) {
  const std::string text = "a\u00e9\u4e2d\U0001F600";
  const std::u32string cps = unicode::decode_utf8(text);
  BOOST_CHECK(cps == (std::u32string{U'a', 0xE9, 0x4E2D, 0x1F600}));
  BOOST_TEST(unicode::encode_utf8(cps) == text);
  struct Bad {
    std::string bytes;
    std::size_t offset;
  };
  for (const Bad& bad :
       {Bad{"ab\x80", 2}, Bad{"x\xC3", 1}, Bad{"\xC0\xAF", 0}, Bad{"ok\xED\xA0\x80", 2},
        Bad{"\xF4\x90\x80\x80", 0}, Bad{"\xE4\xB8z", 0}, Bad{"12\xFF", 2}}) {
    const std::string msg = error_of([&] { unicode::decode_utf8(bad.bytes, "input.txt"); });
    BOOST_TEST(mentions(msg, {"input.txt", "byte offset " + std::to_string(bad.offset)}));
  }
}

BOOST_AUTO_TEST_CASE(unicode_properties_and_case) {
  BOOST_TEST(unicode::unicode_version() == "14.0.0");
  BOOST_TEST((unicode::general_category(U'A') == unicode::Category::Lu));
  BOOST_TEST((unicode::general_category(0x0301) == unicode::Category::Mn));
  BOOST_TEST((unicode::general_category(0x0378) == unicode::Category::Cn));
  BOOST_TEST((unicode::general_category(0xE000) == unicode::Category::Co));
  BOOST_TEST((unicode::general_category(0x10FFFF) == unicode::Category::Cn));
  BOOST_TEST(unicode::is_letter(0x4E2D));
  BOOST_TEST(unicode::is_number(0x0663));  // ARABIC-INDIC DIGIT THREE
  BOOST_TEST(unicode::is_white_space(0x3000));
  BOOST_TEST(!unicode::is_white_space(0x1C));  // Python's isspace() says yes; White_Space no
  BOOST_CHECK(unicode::to_lowercase(U"\u0130") == U"i\u0307");  // İ: two code points
  BOOST_CHECK(unicode::to_lowercase(U"ΣΑΣ") == U"σασ");         // no final-sigma context
  BOOST_CHECK(unicode::to_lowercase(U"\u212A\u2126\u24B6\U00010400") == U"k\u03C9\u24D0\U00010428");
  BOOST_CHECK(unicode::nfd(U"\u00E9") == U"e\u0301");
  BOOST_CHECK(unicode::nfd(U"\uD55C") == U"\u1112\u1161\u11AB");    // Hangul syllable
  BOOST_CHECK(unicode::nfd(U"a\u0315\u0301") == U"a\u0301\u0315");  // canonical order
  BOOST_CHECK(unicode::nfd(U"\U00011938") == U"\U00011938");        // HF's NFD is Unicode 9.0
  BOOST_TEST(unicode::is_bert_punctuation(U'$'));
  BOOST_TEST(unicode::is_bert_punctuation(0x3002));
  BOOST_TEST(!unicode::is_bert_punctuation(0x2E43));  // P* only since Unicode 9.0
  BOOST_TEST(unicode::is_bert_other(0x200B));
  BOOST_TEST(!unicode::is_bert_other(0x0890));  // Cf only since Unicode 14.0
}

// ---- GPT-2 pre-tokenisation -------------------------------------------------------------

BOOST_AUTO_TEST_CASE(gpt2_pattern_splits_like_huggingface) {
  const io::RobertaTokenizer tok =
      io::RobertaTokenizer::from_files(kBpe / "vocab.json", kBpe / "merges.txt");
  using V = std::vector<std::string>;
  BOOST_TEST(tok.pre_tokenize("Hello  world's   !!") ==
             (V{"Hello", " ", " world", "'s", "  ", " !!"}));
  BOOST_TEST(tok.pre_tokenize("  hi") == (V{" ", " hi"}));
  BOOST_TEST(tok.pre_tokenize("a\u00a0b") == (V{"a", "\u00a0", "b"}));
  BOOST_TEST(tok.pre_tokenize("x \t\n y  ") == (V{"x", " \t\n", " y", "  "}));
  BOOST_TEST(tok.pre_tokenize("'s'S'll'LL'x") == (V{"'s", "'", "S", "'ll", "'", "LL", "'", "x"}));
  BOOST_TEST(tok.pre_tokenize("123abc 456 ...!? ok") == (V{"123", "abc", " 456", " ...!?", " ok"}));
  BOOST_TEST(tok.pre_tokenize(" 's") == (V{" '", "s"}));
  BOOST_TEST(tok.pre_tokenize("I'm   fine.\n\n") == (V{"I", "'m", "  ", " fine", ".", "\n\n"}));
}

// ---- BPE parity -------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(bpe_matches_huggingface_on_the_corpus) {
  const auto corpus = read_jsonl(kFixtures / "corpus.jsonl");
  const auto expected = read_jsonl(kFixtures / "expected_bpe.jsonl");
  BOOST_TEST(corpus.size() >= 2000u);

  const io::RobertaTokenizer from_files =
      io::RobertaTokenizer::from_files(kBpe / "vocab.json", kBpe / "merges.txt");
  BOOST_TEST(from_files.vocab_size() == 3000u);
  BOOST_TEST(corpus_mismatches(from_files, corpus, expected, "BPE vocab.json+merges.txt", false) ==
             0u);

  const io::RobertaTokenizer from_json =
      io::RobertaTokenizer::from_tokenizer_json(kBpe / "tokenizer.json");
  BOOST_TEST(corpus_mismatches(from_json, corpus, expected, "BPE tokenizer.json", false) == 0u);

  // The newer tokenizer.json form of merges: ["a", "b"] pairs.
  nlohmann::json j = nlohmann::json::parse(slurp(kBpe / "tokenizer.json"));
  for (auto& m : j["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const auto space = s.find(' ');
    m = nlohmann::json::array({s.substr(0, space), s.substr(space + 1)});
  }
  const io::RobertaTokenizer from_pairs =
      io::RobertaTokenizer::from_tokenizer_json_text(j.dump(), "pairs.json");
  BOOST_TEST(from_pairs.merge_count() == from_files.merge_count());
  BOOST_TEST(corpus_mismatches(from_pairs, corpus, expected, "BPE tokenizer.json (pair merges)",
                               false) == 0u);
}

BOOST_AUTO_TEST_CASE(bpe_special_tokens_truncation_and_padding) {
  const io::RobertaTokenizer tok =
      io::RobertaTokenizer::from_files(kBpe / "vocab.json", kBpe / "merges.txt");
  BOOST_TEST(tok.cls_id() == 0);
  BOOST_TEST(tok.pad_id() == 1);
  BOOST_TEST(tok.pad_token() == "<pad>");
  BOOST_TEST(tok.sep_id() == 2);
  const io::Encoding empty = tok.encode("");
  BOOST_TEST(empty.ids == (std::vector<std::int64_t>{0, 2}));
  const io::Encoding pair = tok.encode_pair("a", "b");
  BOOST_TEST(pair.ids.size() == 6u);
  BOOST_TEST(pair.ids[2] == 2);
  BOOST_TEST(pair.ids[3] == 2);
  // " <mask>" takes the space before it.
  BOOST_TEST(tok.encode("x <mask>").ids == tok.encode("x<mask>").ids);
  // Word-level helpers.
  BOOST_TEST(tok.tokenize_word("hello", false) == tok.tokenize(" hello"));
  BOOST_TEST(tok.tokenize_word("hello", true) == tok.tokenize("hello"));
  BOOST_TEST(tok.id("no-such-token") == 3);  // <unk>
  BOOST_TEST(tok.id("<mask>") == 4);

  io::EncodeOptions o;
  o.pad_to_length = 10;
  const io::Encoding padded = tok.encode("hi", o);
  BOOST_TEST(padded.size() == 10u);
  BOOST_TEST(padded.ids.back() == tok.pad_id());
  BOOST_TEST(padded.attention_mask.back() == 0);
  BOOST_TEST(padded.attention_mask.front() == 1);

  std::vector<io::Encoding> batch{tok.encode("a"), tok.encode("a longer text here")};
  io::pad_batch(batch, tok.pad_id(), tok.pad_token());
  BOOST_TEST(batch[0].size() == batch[1].size());

  io::EncodeOptions too_short;
  too_short.max_length = 3;
  BOOST_TEST(mentions(error_of([&] { tok.encode_pair("a", "b", too_short); }),
                      {"max_length 3", "4 special tokens"}));
  io::EncodeOptions only_second;
  only_second.max_length = 6;
  only_second.truncation = io::TruncationStrategy::only_second;
  BOOST_TEST(mentions(error_of([&] { tok.encode_pair("a b c d e f g", "x", only_second); }),
                      {"second sequence", "too short"}));
  BOOST_TEST(mentions(error_of([&] { tok.encode("ab\xC3(", {}); }), {"byte offset 2"}));
}

// ---- malformed BPE files ----------------------------------------------------------------

BOOST_AUTO_TEST_CASE(bpe_malformed_files_give_clear_errors) {
  TempDir tmp;
  const std::string vocab =
      R"({"<s>":0,"<pad>":1,"</s>":2,"<unk>":3,"<mask>":4,"a":5,"b":6,"ab":7,"c":8})";
  const fs::path good_vocab = tmp.write("vocab.json", vocab);
  const fs::path good_merges = tmp.write("merges.txt", "#version: 0.2\na b\n");
  BOOST_TEST(io::RobertaTokenizer::from_files(good_vocab, good_merges).merge_count() == 1u);

  auto load = [&](const fs::path& v, const fs::path& m) {
    return error_of([&] { io::RobertaTokenizer::from_files(v, m); });
  };
  BOOST_TEST(
      mentions(load(tmp.dir / "missing.json", good_merges), {"missing.json", "cannot open"}));
  BOOST_TEST(mentions(load(good_vocab, tmp.dir / "missing.txt"), {"missing.txt", "cannot open"}));
  BOOST_TEST(mentions(load(tmp.write("bad.json", "{\"a\": 1,"), good_merges),
                      {"bad.json", "not valid JSON"}));
  BOOST_TEST(mentions(load(tmp.write("array.json", "[1, 2]"), good_merges),
                      {"array.json", "JSON object"}));
  BOOST_TEST(mentions(load(tmp.write("str.json", R"({"a": "x"})"), good_merges),
                      {"str.json", "[\"a\"]", "token id"}));
  BOOST_TEST(mentions(load(good_vocab, tmp.write("one.txt", "#version: 0.2\na b\nab\n")),
                      {"one.txt line 3", "two tokens", "\"ab\""}));
  BOOST_TEST(mentions(load(good_vocab, tmp.write("three.txt", "a b c\n")),
                      {"three.txt line 1", "two tokens"}));
  BOOST_TEST(mentions(load(good_vocab, tmp.write("unknown.txt", "a b\nab zz\n")),
                      {"unknown.txt line 2", "\"zz\"", "not in the vocabulary"}));
  BOOST_TEST(mentions(load(good_vocab, tmp.write("merged.txt", "b c\n")),
                      {"merged.txt line 1", "merged token \"bc\""}));
  BOOST_TEST(mentions(load(tmp.write("nospecial.json", R"({"a":0,"b":1,"ab":2})"), good_merges),
                      {"nospecial.json", "\"<s>\"", "not in the vocabulary"}));
  BOOST_TEST(mentions(load(good_vocab, tmp.write("utf8.txt", "a b\n\xFF b\n")),
                      {"utf8.txt line 2", "invalid UTF-8"}));

  // tokenizer.json problems.
  nlohmann::json j = nlohmann::json::parse(slurp(kBpe / "tokenizer.json"));
  auto json_error = [](const nlohmann::json& doc) {
    return error_of([&] { io::RobertaTokenizer::from_tokenizer_json_text(doc.dump(), "t.json"); });
  };
  BOOST_TEST(
      mentions(error_of([] { io::RobertaTokenizer::from_tokenizer_json_text("{", "t.json"); }),
               {"t.json", "not valid JSON"}));
  BOOST_TEST(mentions(
      error_of([] { io::RobertaTokenizer::from_tokenizer_json_text("{\"model\": {\"x\": -1e999}}", "t.json"); }),
      {"t.json", "not valid JSON", "overflow"}));
  nlohmann::json k = j;
  k["model"]["dropout"] = 0.1;
  BOOST_TEST(mentions(json_error(k), {"t.json", "model.dropout"}));
  k = j;
  k["model"]["merges"] = "a b";
  BOOST_TEST(mentions(json_error(k), {"t.json", "model.merges"}));
  k = j;
  k["model"]["merges"][5] = "nospace";
  BOOST_TEST(mentions(json_error(k), {"t.json", "model.merges[5]", "two tokens"}));
  k = j;
  k["model"]["merges"][7] = nlohmann::json::array({"\xC4\xA0", "not-a-token"});
  BOOST_TEST(mentions(json_error(k), {"model.merges[7]", "\"not-a-token\""}));
  k = j;
  k["model"]["type"] = "WordPiece";
  BOOST_TEST(mentions(json_error(k), {"t.json", "WordPiece"}));
  k = j;
  k.erase("post_processor");
  BOOST_TEST(mentions(json_error(k), {"t.json", "post_processor"}));
  k = j;
  k["added_tokens"][0]["id"] = -1;
  BOOST_TEST(mentions(json_error(k), {"t.json", "added_tokens[0].id"}));
  k = j;
  k["added_tokens"][4]["single_word"] = true;
  BOOST_TEST(mentions(json_error(k), {"added_tokens[4].single_word"}));
}

// ---- WordPiece on a tiny vocabulary (always runs) -----------------------------------------

BOOST_AUTO_TEST_CASE(wordpiece_on_a_tiny_vocabulary) {
  const std::string vocab =
      "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nun\n##aff\n##able\nhello\n!\n,\nrunning\n##s\n"
      "e\n##e\n中\ni\n";
  const io::BertTokenizer tok = io::BertTokenizer::from_vocab_text(vocab, "tiny_vocab.txt");
  BOOST_TEST(tok.vocab_size() == 17u);
  using V = std::vector<std::string>;
  BOOST_TEST(tok.tokenize("UNAFFABLE hello!") == (V{"un", "##aff", "##able", "hello", "!"}));
  BOOST_TEST(tok.tokenize("Héllo,\tRUNNINGS") == (V{"hello", ",", "running", "##s"}));
  BOOST_TEST(tok.tokenize("unaffablex") == (V{"[UNK]"}));
  BOOST_TEST(tok.tokenize("a中b") == (V{"[UNK]", "中", "[UNK]"}));
  V hundred(100, "##e");
  hundred[0] = "e";
  BOOST_TEST(tok.tokenize(std::string(100, 'e')) == hundred);
  BOOST_TEST(tok.tokenize(std::string(101, 'e')) == (V{"[UNK]"}));
  BOOST_TEST(tok.tokenize("İ") == (V{"i"}));  // accent stripping before lower-casing
  BOOST_TEST(tok.tokenize("hello [MASK] [mask]") ==
             (V{"hello", "[MASK]", "[UNK]", "[UNK]", "[UNK]"}));
  BOOST_TEST(tok.normalize("A\u00A0B\x01\tC\u0301 中") == "a b c  中 ");

  const io::Encoding pair = tok.encode_pair("hello", "un");
  BOOST_TEST(pair.ids == (std::vector<std::int64_t>{2, 8, 3, 5, 3}));
  BOOST_TEST(pair.type_ids == (std::vector<std::int64_t>{0, 0, 0, 1, 1}));
  io::EncodeOptions o;
  o.max_length = 4;
  BOOST_TEST(tok.encode("hello hello hello", o).ids == (std::vector<std::int64_t>{2, 8, 8, 3}));

  auto load_error = [](const std::string& text) {
    return error_of([&] { io::BertTokenizer::from_vocab_text(text, "v.txt"); });
  };
  BOOST_TEST(mentions(load_error("[PAD]\n[CLS]\n[SEP]\n[MASK]\n"), {"v.txt", "\"[UNK]\""}));
  BOOST_TEST(mentions(load_error("[PAD]\n[UNK]\n\xC3\n"), {"v.txt", "invalid UTF-8", "line 3"}));
  BOOST_TEST(
      mentions(error_of([] { io::BertTokenizer::from_vocab_file("/nonexistent/vocab.txt"); }),
               {"/nonexistent/vocab.txt", "cannot open"}));
  BOOST_TEST(mentions(error_of([] {
                        io::BertTokenizer::from_tokenizer_json_text(R"({"model": {"type": "BPE"}})",
                                                                    "b.json");
                      }),
                      {"b.json", "not WordPiece"}));
  BOOST_TEST(tok.id("zzzz") == tok.unk_id());
  BOOST_TEST(tok.tokenize_word("Hello!", true) == (V{"hello", "!"}));
}
