/// @file datasets.hpp
/// @brief Readers for the K-Adapter data sets: T-REx-rc / TACRED relations, find_head and
/// CoNLL-U dependency heads, OpenEntity / FIGER entity typing, CosmosQA multiple choice.
///
/// Every reader returns word-level examples and a ReadReport. Bad records are handled by a
/// MalformedPolicy chosen by the caller: `fail` throws kadapter::Error at the first bad
/// record, `skip` leaves the record out and reports it. Every message names the file, the
/// record (1-based; JSON lines and CoNLL-U also give the line) and the field. A file that
/// cannot be opened, or a JSON-list file that is not valid JSON as a whole, always throws:
/// there is no record to skip. The formats and the authors' conventions are described in
/// docs/data.md.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <istream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kadapter/core/error.hpp"

namespace kadapter::io {

/// @brief What a reader does with a malformed record.
enum class MalformedPolicy {
  skip,  ///< leave the record out, count it and keep its message in the ReadReport
  fail,  ///< throw kadapter::Error at the first malformed record
};

/// @brief One record a reader left out under MalformedPolicy::skip.
struct SkippedRecord {
  std::size_t record = 0;  ///< 1-based record number (JSON-list element, JSON line, sentence)
  std::size_t line = 0;    ///< 1-based line of the problem, 0 where unknown (JSON lists)
  std::string field;       ///< the offending field, e.g. `subj_end` or `tokens[2]["3"].start`
  std::string message;     ///< full message: file, record, field and what was expected
};

/// @brief What a reader saw: records read, kept, filtered on purpose, and skipped.
struct ReadReport {
  std::string file;                    ///< the file name used in messages
  std::size_t records = 0;             ///< records seen (kept + filtered + skipped)
  std::size_t kept = 0;                ///< records returned as examples
  std::size_t filtered = 0;            ///< well-formed records dropped on purpose (negative_sample)
  std::vector<SkippedRecord> skipped;  ///< malformed records left out (MalformedPolicy::skip)

  /// @brief One line: "FILE: R records, K kept, F filtered, S skipped".
  std::string summary() const {
    return file + ": " + std::to_string(records) + " records, " + std::to_string(kept) + " kept, " +
           std::to_string(filtered) + " filtered, " + std::to_string(skipped.size()) + " skipped";
  }
};

/// @brief Examples read from one file together with the report.
template <class Example>
struct ReadResult {
  std::vector<Example> examples;  ///< the well-formed records, in file order
  ReadReport report;              ///< counts and messages
};

/// @brief Label names ↔ ids. Ids follow the order of `names()`.
class LabelMap {
 public:
  LabelMap() = default;
  /// @brief A map over the given names, id = position. @throws Error on a duplicate name
  explicit LabelMap(std::vector<std::string> names) {
    for (auto& n : names) {
      if (contains(n)) throw Error("label set: \"" + n + "\" appears twice");
      add(std::move(n));
    }
  }
  /// @brief Add a name if absent; returns its id.
  std::int64_t add(std::string name) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    const auto id = static_cast<std::int64_t>(names_.size());
    ids_.emplace(name, id);
    names_.push_back(std::move(name));
    return id;
  }
  /// @brief Whether the name is known.
  bool contains(std::string_view name) const { return ids_.count(std::string(name)) != 0; }
  /// @brief The id of a name. @throws Error when the name is not in the map
  std::int64_t id(std::string_view name) const {
    auto it = ids_.find(std::string(name));
    if (it == ids_.end())
      throw Error("label \"" + std::string(name) + "\" is not in the label set (" +
                  std::to_string(names_.size()) + " labels)");
    return it->second;
  }
  /// @brief The names in id order.
  const std::vector<std::string>& names() const noexcept { return names_; }
  /// @brief Number of labels.
  std::size_t size() const noexcept { return names_.size(); }

 private:
  std::vector<std::string> names_;
  std::unordered_map<std::string, std::int64_t> ids_;
};

/// @brief TACRED's 42 relations in the authors' order (examples/utils_glue.py `relations`);
/// `no_relation` has id 28, which their metric hard-codes.
inline const std::vector<std::string>& tacred_relations() {
  static const std::vector<std::string> r = {"per:siblings",
                                             "per:parents",
                                             "org:member_of",
                                             "per:origin",
                                             "per:alternate_names",
                                             "per:date_of_death",
                                             "per:title",
                                             "org:alternate_names",
                                             "per:countries_of_residence",
                                             "org:stateorprovince_of_headquarters",
                                             "per:city_of_death",
                                             "per:schools_attended",
                                             "per:employee_of",
                                             "org:members",
                                             "org:dissolved",
                                             "per:date_of_birth",
                                             "org:number_of_employees/members",
                                             "org:founded",
                                             "org:founded_by",
                                             "org:political/religious_affiliation",
                                             "org:website",
                                             "org:top_members/employees",
                                             "per:children",
                                             "per:cities_of_residence",
                                             "per:cause_of_death",
                                             "org:shareholders",
                                             "per:age",
                                             "per:religion",
                                             "no_relation",
                                             "org:parents",
                                             "org:subsidiaries",
                                             "per:country_of_birth",
                                             "per:stateorprovince_of_death",
                                             "per:city_of_birth",
                                             "per:stateorprovinces_of_residence",
                                             "org:country_of_headquarters",
                                             "per:other_family",
                                             "per:stateorprovince_of_birth",
                                             "per:country_of_death",
                                             "per:charges",
                                             "org:city_of_headquarters",
                                             "per:spouse"};
  return r;
}

/// @brief OpenEntity's 9 types in the authors' order (examples/utils_glue.py).
inline const std::vector<std::string>& open_entity_types() {
  static const std::vector<std::string> t = {
      "entity", "location", "time", "organization", "object", "event", "place", "person", "group"};
  return t;
}

// ---- examples ---------------------------------------------------------------------------

/// @brief One relation example (T-REx-rc, TACRED): words with inclusive subject / object
/// word spans and the relation name.
struct RelationExample {
  std::vector<std::string> tokens;  ///< the sentence's words (`token`)
  std::int64_t subj_start = 0;      ///< first word of the subject
  std::int64_t subj_end = 0;        ///< last word of the subject (inclusive)
  std::int64_t obj_start = 0;       ///< first word of the object
  std::int64_t obj_end = 0;         ///< last word of the object (inclusive)
  std::string relation;             ///< relation name (`relation`)
  std::size_t record = 0;           ///< 1-based record number in the file
};

/// @brief One dependency-head example (find_head JSON or a CoNLL-U sentence).
struct HeadExample {
  std::string sent;                 ///< the sentence text (CoNLL-U: `# text`, else the words)
  std::vector<std::string> words;   ///< the words, in order
  std::vector<std::int64_t> heads;  ///< heads[i]: 1-based head of word i+1, 0 = root
  std::size_t record = 0;           ///< 1-based record (JSON element / sentence number)
};

/// @brief One entity-typing example (OpenEntity, FIGER): a sentence, the mention's character
/// span and its type names.
struct EntityTypingExample {
  std::string sent;                 ///< the sentence (UTF-8)
  std::int64_t start = 0;           ///< mention start, in Unicode code points (as Python)
  std::int64_t end = 0;             ///< mention end (exclusive), in code points
  std::size_t start_byte = 0;       ///< `start` as a byte offset into `sent`
  std::size_t end_byte = 0;         ///< `end` as a byte offset into `sent`
  std::vector<std::string> labels;  ///< type names
  std::size_t record = 0;           ///< 1-based record number

  /// @brief The text before the mention.
  std::string_view left() const { return std::string_view(sent).substr(0, start_byte); }
  /// @brief The mention.
  std::string_view mention() const {
    return std::string_view(sent).substr(start_byte, end_byte - start_byte);
  }
  /// @brief The text after the mention.
  std::string_view right() const { return std::string_view(sent).substr(end_byte); }
};

/// @brief One multiple-choice example (CosmosQA).
struct MultipleChoiceExample {
  std::string id;                     ///< `id` when the record has one
  std::string context;                ///< `context`
  std::string question;               ///< `question`
  std::vector<std::string> answers;   ///< `answer0` .. `answer3`
  std::optional<std::int64_t> label;  ///< index of the right answer; absent in unlabelled files
  std::size_t record = 0;             ///< 1-based record (non-blank line) number
};

// ---- options ----------------------------------------------------------------------------

/// @brief Options of read_relations().
struct RelationReadOptions {
  MalformedPolicy policy = MalformedPolicy::fail;  ///< what to do with a bad record
  /// When set, a relation outside this list makes the record malformed.
  std::optional<std::vector<std::string>> labels;
  /// The authors' negative sampling of training files (utils_glue.py TACREDProcessor /
  /// TREXProcessor `_create_examples`): a counter starts at `negative_sample`, every
  /// `no_relation` record decrements it and is kept only while the counter is still > 0,
  /// so the first `negative_sample - 1` no_relation records are kept (their off-by-one, kept
  /// for parity). Unset: keep them all. Set it for training files only, as they do.
  std::optional<std::int64_t> negative_sample;
  std::string no_relation = "no_relation";  ///< the name negative_sample counts
};

/// @brief Options of read_find_head() and read_conllu().
struct HeadReadOptions {
  MalformedPolicy policy = MalformedPolicy::fail;  ///< what to do with a bad record
};

/// @brief Options of read_entity_typing().
struct EntityTypingReadOptions {
  MalformedPolicy policy = MalformedPolicy::fail;  ///< what to do with a bad record
  /// When set (OpenEntity: open_entity_types()), a type outside it makes the record
  /// malformed. FIGER builds its list from the training file: see entity_type_labels().
  std::optional<std::vector<std::string>> labels;
};

/// @brief Options of read_multiple_choice().
struct MultipleChoiceReadOptions {
  MalformedPolicy policy = MalformedPolicy::fail;  ///< what to do with a bad record
  bool require_label = true;    ///< a record without `label` is malformed (test files: false)
  std::size_t num_answers = 4;  ///< fields `answer0` .. `answer{n-1}`
};

namespace detail::datasets {

/// Thrown inside a record's parser; turned into a message by for_record().
struct RecordError {
  std::string field;
  std::string what;
  std::size_t line = 0;  // overrides the record's line when set (CoNLL-U)
};

inline std::string short_dump(const nlohmann::json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

inline std::string type_of(const nlohmann::json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number_float()) return "a floating-point number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  if (v.is_boolean()) return "a boolean";
  return "null";
}

inline const nlohmann::json& member(const nlohmann::json& obj, const std::string& key,
                                    const std::string& path, const char* expected = "a value") {
  auto it = obj.find(key);
  if (it == obj.end()) throw RecordError{path, std::string("missing (expected ") + expected + ")"};
  return *it;
}

inline std::string as_string(const nlohmann::json& v, const std::string& path) {
  if (!v.is_string())
    throw RecordError{path, "expected a string, got " + type_of(v) + " " + short_dump(v)};
  return v.get<std::string>();
}

inline std::int64_t as_int(const nlohmann::json& v, const std::string& path) {
  if (v.is_number_unsigned()) {
    if (v.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
      throw RecordError{path, "integer " + short_dump(v) + " is too large"};
    return static_cast<std::int64_t>(v.get<std::uint64_t>());
  }
  if (!v.is_number_integer())
    throw RecordError{path, "expected an integer, got " + type_of(v) + " " + short_dump(v)};
  return v.get<std::int64_t>();
}

inline const nlohmann::json& as_array(const nlohmann::json& v, const std::string& path) {
  if (!v.is_array())
    throw RecordError{path, "expected an array, got " + type_of(v) + " " + short_dump(v)};
  return v;
}

inline const nlohmann::json& as_object(const nlohmann::json& v, const std::string& path) {
  if (!v.is_object())
    throw RecordError{path, "expected an object, got " + type_of(v) + " " + short_dump(v)};
  return v;
}

inline std::string str_field(const nlohmann::json& o, const std::string& key) {
  return as_string(member(o, key, key, "a string"), key);
}
inline std::int64_t int_field(const nlohmann::json& o, const std::string& key) {
  return as_int(member(o, key, key, "an integer"), key);
}
inline std::string indexed(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

/// Byte offset of every code point of a UTF-8 string, plus the size at the end
/// (size = code points + 1). Python slices `str` by code points; we keep bytes.
inline std::vector<std::size_t> utf8_offsets(std::string_view s) {
  std::vector<std::size_t> off;
  off.reserve(s.size() + 1);
  for (std::size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0u) != 0x80u) off.push_back(i);
  off.push_back(s.size());
  return off;
}

/// Runs one record's parser: counts it, and on RecordError throws (fail) or reports (skip).
template <class Fn>
void for_record(ReadReport& rep, MalformedPolicy policy, std::size_t record, std::size_t line,
                Fn&& fn) {
  ++rep.records;
  try {
    fn();
  } catch (const RecordError& e) {
    if (e.line != 0) line = e.line;
    std::string msg = rep.file + ": record " + std::to_string(record);
    if (line != 0) msg += " (line " + std::to_string(line) + ")";
    if (!e.field.empty()) msg += ": field \"" + e.field + "\"";
    msg += ": " + e.what;
    if (policy == MalformedPolicy::fail) throw Error(msg);
    rep.skipped.push_back(SkippedRecord{record, line, e.field, std::move(msg)});
  }
}

inline std::string read_all(const std::filesystem::path& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  if (!f || std::filesystem::is_directory(path))
    throw Error(path.string() + (std::filesystem::is_directory(path) ? ": is a directory, expected the " : ": cannot open the ") + what + " file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// Parses a whole JSON-list file; a syntax error names the line.
inline nlohmann::json parse_json_list(std::string_view text, const std::string& file) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    const std::size_t at = std::min<std::size_t>(e.byte, text.size());
    const auto line =
        1 + std::count(text.begin(),
                       text.begin() + static_cast<std::ptrdiff_t>(at > 0 ? at - 1 : 0), '\n');
    throw Error(file + ": not valid JSON (near line " + std::to_string(line) + ", byte " +
                std::to_string(e.byte) + "): " + e.what());
  } catch (const nlohmann::json::exception& e) {  // a number too large for a double
    throw Error(file + ": not valid JSON: " + e.what());
  }
  if (!j.is_array())
    throw Error(file + ": expected a JSON list of records at the top level, got " + type_of(j));
  return j;
}

/// Calls fn(record_json, record_number, line) for every non-blank line of a JSON-lines
/// stream; a line that is not valid JSON, or not an object, is a malformed record.
template <class Fn>
void each_json_line(std::istream& in, ReadReport& rep, MalformedPolicy policy, Fn&& fn) {
  std::string text;
  std::size_t line = 0, record = 0;
  while (std::getline(in, text)) {
    ++line;
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) continue;
    ++record;
    for_record(rep, policy, record, line, [&] {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(text);
      } catch (const nlohmann::json::exception& e) {  // a syntax error or a number too large
        throw RecordError{"", std::string("not valid JSON: ") + e.what()};
      }
      if (!j.is_object()) throw RecordError{"", "expected a JSON object, got " + type_of(j)};
      fn(j, record, line);
    });
  }
}

/// Calls fn(record_json, record_number) for every element of a JSON list.
template <class Fn>
void each_json_element(const nlohmann::json& list, ReadReport& rep, MalformedPolicy policy,
                       Fn&& fn) {
  std::size_t record = 0;
  for (const auto& j : list) {
    ++record;
    for_record(rep, policy, record, 0, [&] {
      if (!j.is_object()) throw RecordError{"", "expected a JSON object, got " + type_of(j)};
      fn(j, record);
    });
  }
}

inline void check_span(std::int64_t start, std::int64_t end, std::size_t n,
                       const std::string& start_name, const std::string& end_name,
                       const std::string& len_name) {
  if (start < 0) throw RecordError{start_name, std::to_string(start) + " is negative"};
  if (end < start)
    throw RecordError{
        end_name, std::to_string(end) + " is before " + start_name + " = " + std::to_string(start)};
  if (static_cast<std::uint64_t>(end) >= n)
    throw RecordError{end_name, std::to_string(end) + " is out of range (expected < " + len_name +
                                    " = " + std::to_string(n) + ")"};
}

inline RelationExample parse_relation(const nlohmann::json& j, std::size_t record,
                                      const std::optional<std::vector<std::string>>& labels) {
  RelationExample ex;
  ex.record = record;
  const auto& toks = as_array(member(j, "token", "token", "an array of words"), "token");
  ex.tokens.reserve(toks.size());
  for (std::size_t i = 0; i < toks.size(); ++i)
    ex.tokens.push_back(as_string(toks[i], indexed("token", i)));
  ex.subj_start = int_field(j, "subj_start");
  ex.subj_end = int_field(j, "subj_end");
  ex.obj_start = int_field(j, "obj_start");
  ex.obj_end = int_field(j, "obj_end");
  ex.relation = str_field(j, "relation");
  check_span(ex.subj_start, ex.subj_end, ex.tokens.size(), "subj_start", "subj_end", "len(token)");
  check_span(ex.obj_start, ex.obj_end, ex.tokens.size(), "obj_start", "obj_end", "len(token)");
  if (labels && std::find(labels->begin(), labels->end(), ex.relation) == labels->end())
    throw RecordError{"relation", "\"" + ex.relation + "\" is not in the label set (" +
                                      std::to_string(labels->size()) + " labels)"};
  return ex;
}

inline HeadExample parse_find_head(const nlohmann::json& j, std::size_t record) {
  HeadExample ex;
  ex.record = record;
  ex.sent = str_field(j, "sent");
  const auto cps = utf8_offsets(ex.sent);
  const std::size_t ncp = cps.size() - 1;
  const auto& toks = as_array(member(j, "tokens", "tokens", "an array of word offsets"), "tokens");
  const std::size_t n = toks.size();
  for (std::size_t i = 0; i < n; ++i) {
    const std::string p = indexed("tokens", i);
    const auto& t = as_object(toks[i], p);
    const std::string key = std::to_string(i + 1);
    const std::string kp = p + "[\"" + key + "\"]";
    auto it = t.find(key);
    if (it == t.end())
      throw RecordError{p, "expected the key \"" + key + "\" (word i+1), got " + short_dump(t)};
    const auto& se = as_object(*it, kp);
    const std::int64_t s = as_int(member(se, "start", kp + ".start", "an integer"), kp + ".start");
    const std::int64_t e = as_int(member(se, "end", kp + ".end", "an integer"), kp + ".end");
    if (s < 0 || static_cast<std::uint64_t>(s) > ncp)
      throw RecordError{kp + ".start", std::to_string(s) + " is out of range (expected 0.." +
                                           std::to_string(ncp) + " = len(sent))"};
    if (e < s || static_cast<std::uint64_t>(e) > ncp)
      throw RecordError{kp + ".end", std::to_string(e) + " is out of range (expected " +
                                         std::to_string(s) + ".." + std::to_string(ncp) +
                                         " = start..len(sent))"};
    ex.words.push_back(
        ex.sent.substr(cps[static_cast<std::size_t>(s)],
                       cps[static_cast<std::size_t>(e)] - cps[static_cast<std::size_t>(s)]));
  }
  // The authors build {dependent_index: governor_index}, so a repeated dependent keeps its
  // last pair (utils_glue.py:204).
  std::vector<std::int64_t> head(n, -1);
  const auto& pairs =
      as_array(member(j, "pairs", "pairs", "an array of dependency pairs"), "pairs");
  for (std::size_t k = 0; k < pairs.size(); ++k) {
    const std::string p = indexed("pairs", k);
    const auto& pr = as_object(pairs[k], p);
    const std::int64_t d =
        as_int(member(pr, "dependent_index", p + ".dependent_index", "an integer"),
               p + ".dependent_index");
    const std::int64_t g = as_int(member(pr, "governor_index", p + ".governor_index", "an integer"),
                                  p + ".governor_index");
    if (d < 1 || static_cast<std::uint64_t>(d) > n)
      throw RecordError{p + ".dependent_index", std::to_string(d) +
                                                    " is out of range (expected 1.." +
                                                    std::to_string(n) + " = len(tokens))"};
    if (g < 0 || static_cast<std::uint64_t>(g) > n)
      throw RecordError{p + ".governor_index", "head index " + std::to_string(g) +
                                                   " is out of range (expected 0.." +
                                                   std::to_string(n) + ", 0 = root)"};
    head[static_cast<std::size_t>(d - 1)] = g;
  }
  for (std::size_t i = 0; i < n; ++i)
    if (head[i] < 0)
      throw RecordError{"pairs", "no pair has dependent_index " + std::to_string(i + 1) +
                                     " (every word needs a head)"};
  ex.heads = std::move(head);
  return ex;
}

inline EntityTypingExample parse_entity_typing(
    const nlohmann::json& j, std::size_t record,
    const std::optional<std::vector<std::string>>& labels) {
  EntityTypingExample ex;
  ex.record = record;
  ex.sent = str_field(j, "sent");
  ex.start = int_field(j, "start");
  ex.end = int_field(j, "end");
  const auto cps = utf8_offsets(ex.sent);
  const std::size_t ncp = cps.size() - 1;
  if (ex.start < 0 || static_cast<std::uint64_t>(ex.start) > ncp)
    throw RecordError{"start", std::to_string(ex.start) + " is out of range (expected 0.." +
                                   std::to_string(ncp) + " = len(sent), in characters)"};
  if (ex.end < ex.start || static_cast<std::uint64_t>(ex.end) > ncp)
    throw RecordError{"end", std::to_string(ex.end) + " is out of range (expected " +
                                 std::to_string(ex.start) + ".." + std::to_string(ncp) +
                                 " = start..len(sent), in characters)"};
  ex.start_byte = cps[static_cast<std::size_t>(ex.start)];
  ex.end_byte = cps[static_cast<std::size_t>(ex.end)];
  const auto& ls = as_array(member(j, "labels", "labels", "an array of type names"), "labels");
  for (std::size_t i = 0; i < ls.size(); ++i) {
    std::string l = as_string(ls[i], indexed("labels", i));
    if (labels && std::find(labels->begin(), labels->end(), l) == labels->end())
      throw RecordError{indexed("labels", i), "\"" + l + "\" is not in the label set (" +
                                                  std::to_string(labels->size()) + " types)"};
    ex.labels.push_back(std::move(l));
  }
  return ex;
}

inline MultipleChoiceExample parse_multiple_choice(const nlohmann::json& j, std::size_t record,
                                                   const MultipleChoiceReadOptions& opt) {
  MultipleChoiceExample ex;
  ex.record = record;
  if (auto it = j.find("id"); it != j.end() && it->is_string()) ex.id = it->get<std::string>();
  ex.context = str_field(j, "context");
  ex.question = str_field(j, "question");
  for (std::size_t i = 0; i < opt.num_answers; ++i)
    ex.answers.push_back(str_field(j, "answer" + std::to_string(i)));
  auto it = j.find("label");
  if (it == j.end()) {
    if (opt.require_label) throw RecordError{"label", "missing (expected an answer index)"};
    return ex;
  }
  // The authors' reader does int(label): integers and numeric strings both occur.
  std::int64_t label = 0;
  if (it->is_string()) {
    const std::string s = it->get<std::string>();
    std::size_t used = 0;
    bool ok = !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
    if (ok) {
      try {
        label = static_cast<std::int64_t>(std::stoll(s, &used));
      } catch (...) {
        ok = false;
      }
    }
    if (!ok || used != s.size())
      throw RecordError{"label", "expected an answer index, got \"" + s + "\""};
  } else {
    label = as_int(*it, "label");
  }
  if (label < 0 || static_cast<std::uint64_t>(label) >= opt.num_answers)
    throw RecordError{"label", std::to_string(label) + " is out of range (expected 0.." +
                                   std::to_string(opt.num_answers - 1) + ")"};
  ex.label = label;
  return ex;
}

inline std::vector<std::string> split_tabs(const std::string& s) {
  std::vector<std::string> out;
  std::size_t b = 0;
  for (;;) {
    const std::size_t e = s.find('\t', b);
    out.push_back(s.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (e == std::string::npos) break;
    b = e + 1;
  }
  return out;
}

inline bool all_digits(std::string_view s) {
  return !s.empty() && s.size() < 10 && s.find_first_not_of("0123456789") == std::string::npos;
}

}  // namespace detail::datasets

// ---- relation: T-REx-rc, TACRED ---------------------------------------------------------

/// @brief Parse the text of a relation file: a JSON list of `{"token": [words],
/// "subj_start", "subj_end", "obj_start", "obj_end", "relation"}` (inclusive word spans).
///
/// Malformed: not an object, a missing or mistyped field, a span with start > end or
/// end ≥ len(token), a relation outside `opt.labels` when given.
/// @param text the file's text
/// @param file the file name used in messages
/// @param opt policy, label set and negative sampling
/// @throws Error for invalid JSON as a whole, or the first malformed record under `fail`
inline ReadResult<RelationExample> parse_relations(std::string_view text, const std::string& file,
                                                   const RelationReadOptions& opt = {}) {
  ReadResult<RelationExample> out;
  out.report.file = file;
  const nlohmann::json list = detail::datasets::parse_json_list(text, file);
  std::int64_t negatives_left = opt.negative_sample.value_or(0);
  detail::datasets::each_json_element(
      list, out.report, opt.policy, [&](const nlohmann::json& j, std::size_t record) {
        RelationExample ex = detail::datasets::parse_relation(j, record, opt.labels);
        if (opt.negative_sample && ex.relation == opt.no_relation) {
          // utils_glue.py: `no_relation_number -= 1; if no_relation_number >
          // 0: keep`.
          --negatives_left;
          if (negatives_left <= 0) {
            ++out.report.filtered;
            return;
          }
        }
        out.examples.push_back(std::move(ex));
      });
  out.report.kept = out.examples.size();
  return out;
}

/// @brief Read a T-REx-rc or TACRED file (whole-file JSON parse). @see parse_relations
inline ReadResult<RelationExample> read_relations(const std::filesystem::path& path,
                                                  const RelationReadOptions& opt = {}) {
  return parse_relations(detail::datasets::read_all(path, "relation"), path.string(), opt);
}

// ---- dependency heads: find_head, CoNLL-U -----------------------------------------------

/// @brief Parse the text of a find_head file: a JSON list of `{"sent": str, "tokens":
/// [{"1": {"start", "end"}}, {"2": ...}, ...], "pairs": [{"dependent_index",
/// "governor_index", ...}, ...]}`.
///
/// Word i (1-based) is `sent[start:end]` in code points, as Python slices. Heads are 1-based
/// word indices, 0 = root. Malformed: element i of `tokens` without the key "i+1", offsets
/// outside the sentence, an index outside 1..n (dependent) or 0..n (governor), a word
/// without a pair. A repeated dependent keeps its last pair, as the authors' dict does.
/// @param text the file's text
/// @param file the file name used in messages
/// @param opt the malformed-record policy
/// @throws Error for invalid JSON as a whole, or the first malformed record under `fail`
inline ReadResult<HeadExample> parse_find_head(std::string_view text, const std::string& file,
                                               const HeadReadOptions& opt = {}) {
  ReadResult<HeadExample> out;
  out.report.file = file;
  const nlohmann::json list = detail::datasets::parse_json_list(text, file);
  detail::datasets::each_json_element(
      list, out.report, opt.policy, [&](const nlohmann::json& j, std::size_t record) {
        out.examples.push_back(detail::datasets::parse_find_head(j, record));
      });
  out.report.kept = out.examples.size();
  return out;
}

/// @brief Read a find_head file (whole-file JSON parse). @see parse_find_head
inline ReadResult<HeadExample> read_find_head(const std::filesystem::path& path,
                                              const HeadReadOptions& opt = {}) {
  return parse_find_head(detail::datasets::read_all(path, "find_head"), path.string(), opt);
}

/// @brief Read CoNLL-U (Universal Dependencies) sentences from a stream, line by line.
///
/// Uses the ID (1), FORM (2) and HEAD (7) columns; lines must have the 10 tab-separated
/// columns of the format. Comment lines (`#`) are skipped, except `# text = ...` which
/// becomes HeadExample::sent (otherwise the words joined by spaces); multiword-token lines
/// (`1-2`) and empty nodes (`1.1`) are skipped. A record is a sentence (blank-line
/// separated). Malformed: too few / many columns, an ID that is not the next word number,
/// an empty FORM, a HEAD that is not an integer in 0..n.
/// @param in the stream
/// @param file the file name used in messages
/// @param opt the malformed-record policy
/// @throws Error for the first malformed sentence under `fail`
inline ReadResult<HeadExample> parse_conllu(std::istream& in, const std::string& file,
                                            const HeadReadOptions& opt = {}) {
  ReadResult<HeadExample> out;
  out.report.file = file;
  std::vector<std::pair<std::size_t, std::string>> lines;  // (line number, text) of a sentence
  std::string text_comment;
  bool have_text = false;
  std::size_t record = 0;
  auto flush = [&] {
    if (lines.empty()) {
      have_text = false;
      text_comment.clear();
      return;
    }
    ++record;
    detail::datasets::for_record(out.report, opt.policy, record, 0, [&] {
      HeadExample ex;
      ex.record = record;
      std::vector<std::size_t> head_line;
      std::vector<std::string> head_text;
      for (const auto& [ln, s] : lines) {
        const auto cols = detail::datasets::split_tabs(s);
        if (cols.size() != 10)
          throw detail::datasets::RecordError{
              "columns", "expected 10 tab-separated columns, got " + std::to_string(cols.size()),
              ln};
        const std::string& id = cols[0];
        if (id.find('-') != std::string::npos || id.find('.') != std::string::npos) continue;
        if (!detail::datasets::all_digits(id) || std::stoul(id) != ex.words.size() + 1)
          throw detail::datasets::RecordError{"ID",
                                              "expected word number " +
                                                  std::to_string(ex.words.size() + 1) + ", got \"" +
                                                  id + "\"",
                                              ln};
        if (cols[1].empty()) throw detail::datasets::RecordError{"FORM", "empty", ln};
        ex.words.push_back(cols[1]);
        head_line.push_back(ln);
        head_text.push_back(cols[6]);
      }
      const std::size_t n = ex.words.size();
      if (n == 0)
        throw detail::datasets::RecordError{"ID", "the sentence has no words", lines[0].first};
      for (std::size_t i = 0; i < n; ++i) {
        if (!detail::datasets::all_digits(head_text[i]) || std::stoul(head_text[i]) > n)
          throw detail::datasets::RecordError{
              "HEAD",
              "head index \"" + head_text[i] + "\" is not an integer in 0.." + std::to_string(n),
              head_line[i]};
        ex.heads.push_back(static_cast<std::int64_t>(std::stoul(head_text[i])));
      }
      if (have_text) {
        ex.sent = text_comment;
      } else {
        for (std::size_t i = 0; i < n; ++i) ex.sent += (i ? " " : "") + ex.words[i];
      }
      out.examples.push_back(std::move(ex));
    });
    lines.clear();
    have_text = false;
    text_comment.clear();
  };
  std::string s;
  std::size_t ln = 0;
  while (std::getline(in, s)) {
    ++ln;
    if (!s.empty() && s.back() == '\r') s.pop_back();
    if (s.find_first_not_of(" \t") == std::string::npos) {
      flush();
    } else if (s[0] == '#') {
      static constexpr std::string_view kText = "# text = ";
      if (s.rfind(kText, 0) == 0) {
        text_comment = s.substr(kText.size());
        have_text = true;
      }
    } else {
      lines.emplace_back(ln, s);
    }
  }
  flush();
  out.report.kept = out.examples.size();
  return out;
}

/// @brief Read a CoNLL-U file, streaming line by line. @see parse_conllu
inline ReadResult<HeadExample> read_conllu(const std::filesystem::path& path,
                                           const HeadReadOptions& opt = {}) {
  std::ifstream f(path, std::ios::binary);
  if (!f || std::filesystem::is_directory(path)) throw Error(path.string() + ": cannot open the CoNLL-U file (missing, unreadable or a directory)");
  return parse_conllu(f, path.string(), opt);
}

// ---- entity typing: OpenEntity, FIGER ---------------------------------------------------

/// @brief Parse entity-typing records `{"sent": str, "start": char, "end": char, "labels":
/// [type names]}` from text that is either a JSON list (what the authors' loaders read:
/// `json.load`) or JSON lines (one object per line); the first non-blank character decides.
///
/// Offsets count Unicode code points, as Python slices. Malformed: a missing or mistyped
/// field, offsets outside the sentence or end < start, a type outside `opt.labels`.
/// @param text the file's text
/// @param file the file name used in messages
/// @param opt policy and label set
/// @throws Error for an invalid JSON list, or the first malformed record under `fail`
inline ReadResult<EntityTypingExample> parse_entity_typing(
    std::string_view text, const std::string& file, const EntityTypingReadOptions& opt = {}) {
  ReadResult<EntityTypingExample> out;
  out.report.file = file;
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && text[first] == '[') {
    const nlohmann::json list = detail::datasets::parse_json_list(text, file);
    detail::datasets::each_json_element(
        list, out.report, opt.policy, [&](const nlohmann::json& j, std::size_t record) {
          out.examples.push_back(detail::datasets::parse_entity_typing(j, record, opt.labels));
        });
  } else {
    std::istringstream in{std::string(text)};
    detail::datasets::each_json_line(
        in, out.report, opt.policy, [&](const nlohmann::json& j, std::size_t record, std::size_t) {
          out.examples.push_back(detail::datasets::parse_entity_typing(j, record, opt.labels));
        });
  }
  out.report.kept = out.examples.size();
  return out;
}

/// @brief Read an OpenEntity / FIGER file (JSON list or JSON lines, see parse_entity_typing).
/// JSON lines are read line by line without loading the whole file.
inline ReadResult<EntityTypingExample> read_entity_typing(const std::filesystem::path& path,
                                                          const EntityTypingReadOptions& opt = {}) {
  std::ifstream f(path, std::ios::binary);
  if (!f || std::filesystem::is_directory(path)) throw Error(path.string() + ": cannot open the entity-typing file (missing, unreadable or a directory)");
  char c = 0;
  while (f.get(c) && (c == ' ' || c == '\t' || c == '\r' || c == '\n')) {
  }
  if (f && c == '[')
    return parse_entity_typing(detail::datasets::read_all(path, "entity-typing"), path.string(),
                               opt);
  f.clear();
  f.seekg(0);
  ReadResult<EntityTypingExample> out;
  out.report.file = path.string();
  detail::datasets::each_json_line(
      f, out.report, opt.policy, [&](const nlohmann::json& j, std::size_t record, std::size_t) {
        out.examples.push_back(detail::datasets::parse_entity_typing(j, record, opt.labels));
      });
  out.report.kept = out.examples.size();
  return out;
}

/// @brief The type list built from training examples as the FIGER script does when
/// `labels.json` is absent: every type in order of first appearance
/// (run_finetune_figer_adapter.py, `d = {}` ... `list(d.keys())`).
inline std::vector<std::string> entity_type_labels(const std::vector<EntityTypingExample>& xs) {
  LabelMap m;
  for (const auto& x : xs)
    for (const auto& l : x.labels) m.add(l);
  return m.names();
}

/// @brief Relation names in order of first appearance (a label map built from the data).
inline std::vector<std::string> relation_labels(const std::vector<RelationExample>& xs) {
  LabelMap m;
  for (const auto& x : xs) m.add(x.relation);
  return m.names();
}

/// @brief Parse a label list: one label per line, in id order. Text after a tab is a
/// description and ignored (`P17<TAB>country`); spaces around the name and blank lines are
/// ignored, and a `\r` before the newline and a UTF-8 byte-order mark are dropped.
/// @param text the file's text
/// @param file the file name used in messages
/// @throws Error naming the file and line for a line with no name before its tab or a name
/// listed twice, and for a list with no label
inline std::vector<std::string> parse_label_list(std::string_view text, const std::string& file) {
  std::vector<std::string> names;
  std::map<std::string, std::size_t, std::less<>> line_of;
  std::size_t line = 0, pos = 0;
  if (text.starts_with("\xEF\xBB\xBF")) pos = 3;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    ++line;
    std::string_view l = text.substr(pos, end - pos);
    pos = end + 1;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (l.find_first_not_of(" \t") == std::string_view::npos) continue;
    std::string_view name = l.substr(0, l.find('\t'));
    const auto b = name.find_first_not_of(' ');
    name = b == std::string_view::npos ? std::string_view{} : name.substr(b, name.find_last_not_of(' ') - b + 1);
    if (name.empty())
      throw Error(file + ": line " + std::to_string(line) + ": no label name before the tab (expected NAME or NAME<TAB>description)");
    if (const auto it = line_of.find(name); it != line_of.end())
      throw Error(file + ": line " + std::to_string(line) + ": label \"" + std::string(name) + "\" is listed again (first on line " +
                  std::to_string(it->second) + ")");
    line_of.emplace(std::string(name), line);
    names.emplace_back(name);
  }
  if (names.empty()) throw Error(file + ": lists no labels (expected one label name per line)");
  return names;
}

/// @brief Read a label list file (`relations.txt`, `types.txt`). @see parse_label_list
inline std::vector<std::string> read_label_list(const std::filesystem::path& path) {
  return parse_label_list(detail::datasets::read_all(path, "label list"), path.string());
}

// ---- multiple choice: CosmosQA ----------------------------------------------------------

/// @brief Read CosmosQA JSON lines `{"context", "question", "answer0".."answer3", "label"}`
/// from a stream, line by line (blank lines are skipped; records are numbered by non-blank
/// line). `label` may be an integer or a numeric string (the authors apply `int()`).
/// @param in the stream
/// @param file the file name used in messages
/// @param opt policy, whether a label is required, number of answers
/// @throws Error for the first malformed record under `fail`
inline ReadResult<MultipleChoiceExample> parse_multiple_choice(
    std::istream& in, const std::string& file, const MultipleChoiceReadOptions& opt = {}) {
  ReadResult<MultipleChoiceExample> out;
  out.report.file = file;
  detail::datasets::each_json_line(
      in, out.report, opt.policy, [&](const nlohmann::json& j, std::size_t record, std::size_t) {
        out.examples.push_back(detail::datasets::parse_multiple_choice(j, record, opt));
      });
  out.report.kept = out.examples.size();
  return out;
}

/// @brief Read a CosmosQA `.jsonl` file, streaming. @see parse_multiple_choice
inline ReadResult<MultipleChoiceExample> read_multiple_choice(
    const std::filesystem::path& path, const MultipleChoiceReadOptions& opt = {}) {
  std::ifstream f(path, std::ios::binary);
  if (!f || std::filesystem::is_directory(path)) throw Error(path.string() + ": cannot open the multiple-choice file (missing, unreadable or a directory)");
  return parse_multiple_choice(f, path.string(), opt);
}

}  // namespace kadapter::io
