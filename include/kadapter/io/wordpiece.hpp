/// @file wordpiece.hpp
/// @brief BERT's WordPiece tokenizer, identical to HuggingFace's BertTokenizerFast, and the
/// pieces both tokenizers share: Encoding, truncation, padding and special-token matching.
///
/// The pipeline is HuggingFace `tokenizers`' (the Rust library behind the fast tokenizers):
/// special tokens are cut out of the raw text first; each remaining piece is normalised
/// (BertNormalizer), split into words (BertPreTokenizer) and each word into WordPieces; then
/// the sequences are truncated and framed by [CLS] / [SEP]. docs/tokenizers.md lists the exact
/// behaviours matched.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kadapter/core/error.hpp"
#include "kadapter/io/unicode.hpp"

namespace kadapter::io {

// ========================================================================================
// Shared by the BERT and the RoBERTa tokenizer.
// ========================================================================================

/// @brief One encoded sequence or pair, as HuggingFace's fast tokenizers return it.
struct Encoding {
  std::vector<std::int64_t> ids;             ///< input_ids
  std::vector<std::int64_t> type_ids;        ///< token_type_ids (all 0 for RoBERTa)
  std::vector<std::int64_t> attention_mask;  ///< 1 for real tokens, 0 for padding
  std::vector<std::string> tokens;           ///< the vocabulary strings of the ids

  /// @brief Number of tokens, padding included.
  std::size_t size() const noexcept { return ids.size(); }
};

/// @brief How a pair is cut down to max_length (HuggingFace's TruncationStrategy).
enum class TruncationStrategy {
  longest_first,  ///< take from the longer sequence; both end up with about half
  only_first,     ///< take only from the first sequence (error if it is too short)
  only_second,    ///< take only from the second sequence (error if it is too short)
};

/// @brief Which end of a sequence loses its tokens when truncated.
enum class TruncationSide { right, left };

/// @brief Options of encode() and encode_pair(). The defaults give what
/// `tokenizer(text)` / `tokenizer(a, b)` gives in transformers.
struct EncodeOptions {
  bool add_special_tokens = true;         ///< frame with [CLS]/[SEP] or `<s>`/`</s>`
  std::optional<std::size_t> max_length;  ///< truncate to this many tokens, specials included
  TruncationStrategy truncation = TruncationStrategy::longest_first;  ///< for pairs
  TruncationSide truncation_side = TruncationSide::right;             ///< which end to cut
  std::size_t pad_to_length = 0;  ///< pad on the right up to this length (0: none)
};

/// @brief A token cut out of the text before anything else (HuggingFace's AddedToken): the
/// special tokens, and any token a tokenizer.json adds.
struct AddedToken {
  std::string content;      ///< the text matched
  std::int64_t id = 0;      ///< its id
  bool lstrip = false;      ///< also take the whitespace before it (RoBERTa's `<mask>`)
  bool rstrip = false;      ///< also take the whitespace after it
  bool normalized = false;  ///< match it in the normalised text instead of the raw text
  bool special = true;      ///< a special token ([CLS], `<s>`, ...)
};

/// @brief Pad an encoding on the right up to `length` tokens (nothing if already as long).
/// Padding has type id 0 and attention mask 0, as HuggingFace pads.
inline void pad_encoding(Encoding& encoding, std::size_t length, std::int64_t pad_id,
                         const std::string& pad_token) {
  if (encoding.size() >= length) return;
  const std::size_t extra = length - encoding.size();
  encoding.ids.insert(encoding.ids.end(), extra, pad_id);
  encoding.type_ids.insert(encoding.type_ids.end(), extra, 0);
  encoding.attention_mask.insert(encoding.attention_mask.end(), extra, 0);
  encoding.tokens.insert(encoding.tokens.end(), extra, pad_token);
}

/// @brief Pad every encoding of a batch to the longest one, with a tokenizer's `pad_id()` and
/// `pad_token()`. @see pad_encoding
inline void pad_batch(std::vector<Encoding>& batch, std::int64_t pad_id,
                      const std::string& pad_token) {
  std::size_t longest = 0;
  for (const Encoding& e : batch) longest = std::max(longest, e.size());
  for (Encoding& e : batch) pad_encoding(e, longest, pad_id, pad_token);
}

namespace detail::tok {

/// A token of the model: id and vocabulary string.
struct Piece {
  std::int64_t id = 0;
  std::string token;
};

/// Hash for unordered maps keyed by std::string that accept std::string_view look-ups.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

/// A vocabulary: token string <-> id.
class Vocabulary {
 public:
  /// Add or replace a token (a later duplicate wins, as in HuggingFace's hash maps).
  void set(std::string token, std::int64_t id) {
    if (auto it = ids_.find(token); it != ids_.end()) {
      if (auto back = tokens_.find(it->second); back != tokens_.end() && back->second == token)
        tokens_.erase(back);
      it->second = id;
    } else {
      ids_.emplace(token, id);
    }
    tokens_[id] = std::move(token);
  }
  std::optional<std::int64_t> find(std::string_view token) const {
    const auto it = ids_.find(token);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }
  const std::string* token_of(std::int64_t id) const {
    const auto it = tokens_.find(id);
    return it == tokens_.end() ? nullptr : &it->second;
  }
  std::size_t size() const noexcept { return ids_.size(); }

 private:
  std::unordered_map<std::string, std::int64_t, StringHash, std::equal_to<>> ids_;
  std::unordered_map<std::int64_t, std::string> tokens_;
};

/// Part of a text around added tokens: either plain text or one added token.
struct Segment {
  std::u32string text;
  const AddedToken* token = nullptr;  // null for plain text
};

/// Finds added tokens in text the way HuggingFace's AddedVocabulary does: leftmost-longest,
/// non-overlapping matches (Aho-Corasick LeftmostLongest), then lstrip / rstrip widening.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;

  /// tokens: all added tokens; normalize: the tokenizer's normaliser, applied to the patterns
  /// of tokens with `normalized` set (their matches are searched in normalised text).
  AddedTokenMatcher(std::vector<AddedToken> tokens,
                    const std::function<std::u32string(std::u32string_view)>& normalize)
      : tokens_(std::move(tokens)) {
    for (std::size_t i = 0; i < tokens_.size(); ++i) {
      const AddedToken& t = tokens_[i];
      if (t.content.empty()) continue;
      std::u32string pattern = unicode::decode_utf8(t.content, "added token");
      if (t.normalized) pattern = normalize(pattern);
      if (pattern.empty()) continue;
      PatternSet& set = t.normalized ? normalized_ : raw_;
      set.by_first[pattern.front()].push_back({std::move(pattern), i});
    }
    for (PatternSet* set : {&raw_, &normalized_})
      for (auto& [first, list] : set->by_first)
        std::stable_sort(list.begin(), list.end(), [](const Pattern& a, const Pattern& b) {
          return a.text.size() > b.text.size();
        });
  }

  const std::vector<AddedToken>& tokens() const noexcept { return tokens_; }

  /// Split text around the tokens matched in the raw text (normalized == false) or in the
  /// normalised text (normalized == true). Empty pieces are dropped, as HuggingFace does.
  std::vector<Segment> split(std::u32string_view text, bool normalized) const {
    const PatternSet& set = normalized ? normalized_ : raw_;
    std::vector<Segment> out;
    if (text.empty()) return out;
    if (set.by_first.empty()) {
      out.push_back({std::u32string(text), nullptr});
      return out;
    }
    const std::size_t n = text.size();
    std::size_t start_offset = 0;
    std::size_t search_from = 0;
    while (search_from < n) {
      std::size_t match_start = n, match_length = 0, token_index = 0;
      for (std::size_t i = search_from; i < n && match_length == 0; ++i) {
        const auto it = set.by_first.find(text[i]);
        if (it == set.by_first.end()) continue;
        for (const Pattern& p : it->second) {  // longest first
          if (text.compare(i, p.text.size(), p.text) == 0) {
            match_start = i, match_length = p.text.size(), token_index = p.token_index;
            break;
          }
        }
      }
      if (match_length == 0) break;
      const AddedToken& token = tokens_[token_index];
      std::size_t start = match_start, stop = match_start + match_length;
      search_from = stop;
      if (token.lstrip) {
        std::size_t widened = start;
        while (widened > 0 && unicode::is_white_space(text[widened - 1])) --widened;
        start = std::max(widened, start_offset);
      }
      if (token.rstrip)
        while (stop < n && unicode::is_white_space(text[stop])) ++stop;
      if (start_offset < start)
        out.push_back({std::u32string(text.substr(start_offset, start - start_offset)), nullptr});
      out.push_back({std::u32string(text.substr(start, stop - start)), &token});
      start_offset = stop;
    }
    if (start_offset < n) out.push_back({std::u32string(text.substr(start_offset)), nullptr});
    return out;
  }

 private:
  struct Pattern {
    std::u32string text;
    std::size_t token_index;
  };
  struct PatternSet {
    std::unordered_map<char32_t, std::vector<Pattern>> by_first;
  };
  std::vector<AddedToken> tokens_;
  PatternSet raw_;
  PatternSet normalized_;
};

/// One element of a post-processing template: a sequence (A or B) or special tokens.
struct TemplateItem {
  int sequence = -1;  // 0 for A, 1 for B, -1 for special tokens
  std::vector<Piece> specials;
  std::int64_t type_id = 0;
};

/// HuggingFace's post-processor as a template (TemplateProcessing; BertProcessing and
/// RobertaProcessing are its special cases).
struct PostProcessor {
  std::vector<TemplateItem> single;
  std::vector<TemplateItem> pair;

  std::size_t added_tokens(bool is_pair) const {
    std::size_t n = 0;
    for (const TemplateItem& item : is_pair ? pair : single) n += item.specials.size();
    return n;
  }

  /// [CLS] A [SEP] / [CLS] A [SEP] B [SEP]; the second sequence and its [SEP] get
  /// `second_type_id` (1 for BERT, 0 for RoBERTa). `separator_between` is how many [SEP]
  /// stand between A and B (1 for BERT, 2 for RoBERTa).
  static PostProcessor framed(const Piece& cls, const Piece& sep, std::size_t separator_between,
                              std::int64_t second_type_id) {
    PostProcessor p;
    p.single = {{-1, {cls}, 0}, {0, {}, 0}, {-1, {sep}, 0}};
    p.pair = {{-1, {cls}, 0},
              {0, {}, 0},
              {-1, std::vector<Piece>(separator_between, sep), 0},
              {1, {}, second_type_id},
              {-1, {sep}, second_type_id}};
    return p;
  }
};

/// Keep `length` pieces of a sequence, cutting at the given side.
inline void truncate_pieces(std::vector<Piece>& pieces, std::size_t length, TruncationSide side) {
  if (pieces.size() <= length) return;
  if (side == TruncationSide::right) {
    pieces.resize(length);
  } else {
    pieces.erase(pieces.begin(), pieces.end() - static_cast<std::ptrdiff_t>(length));
  }
}

/// HuggingFace's truncate_encodings, with max_length already reduced by the special tokens.
inline void truncate_sequences(std::vector<Piece>& first, std::vector<Piece>* second,
                               std::size_t max_length, const EncodeOptions& options) {
  const TruncationSide side = options.truncation_side;
  if (max_length == 0) {
    first.clear();
    if (second) second->clear();
    return;
  }
  const std::size_t total = first.size() + (second ? second->size() : 0);
  if (total <= max_length) return;
  const std::size_t to_remove = total - max_length;
  if (options.truncation == TruncationStrategy::longest_first) {
    if (!second) {
      truncate_pieces(first, total - to_remove, side);
      return;
    }
    std::size_t n1 = first.size(), n2 = second->size();
    const bool swapped = n1 > n2;
    if (swapped) std::swap(n1, n2);
    n2 = n1 > max_length ? n1 : std::max(n1, max_length - n1);
    if (n1 + n2 > max_length) {
      n1 = max_length / 2;
      n2 = n1 + max_length % 2;
    }
    if (swapped) std::swap(n1, n2);
    truncate_pieces(first, n1, side);
    truncate_pieces(*second, n2, side);
    return;
  }
  const bool cut_first = options.truncation == TruncationStrategy::only_first;
  if (!cut_first && !second) throw Error("truncation only_second: there is no second sequence");
  std::vector<Piece>& target = cut_first ? first : *second;
  if (target.size() <= to_remove)
    throw Error("truncation: the " + std::string(cut_first ? "first" : "second") + " sequence (" +
                std::to_string(target.size()) + " tokens) is too short to reach max_length " +
                std::to_string(max_length));
  truncate_pieces(target, target.size() - to_remove, side);
}

/// Truncate, frame with special tokens and pad: HuggingFace's post_process.
inline Encoding assemble(std::vector<Piece> first, std::optional<std::vector<Piece>> second,
                         const PostProcessor& processor, const EncodeOptions& options,
                         const Piece& pad) {
  const bool is_pair = second.has_value();
  if (options.max_length) {
    const std::size_t added = options.add_special_tokens ? processor.added_tokens(is_pair) : 0;
    if (*options.max_length < added)
      throw Error("max_length " + std::to_string(*options.max_length) + " is smaller than the " +
                  std::to_string(added) + " special tokens of a " +
                  (is_pair ? "pair" : "single sequence"));
    truncate_sequences(first, is_pair ? &*second : nullptr, *options.max_length - added, options);
  }
  Encoding out;
  auto append = [&out](const std::vector<Piece>& pieces, std::int64_t type_id) {
    for (const Piece& p : pieces) {
      out.ids.push_back(p.id);
      out.type_ids.push_back(type_id);
      out.attention_mask.push_back(1);
      out.tokens.push_back(p.token);
    }
  };
  for (const TemplateItem& item : is_pair ? processor.pair : processor.single) {
    if (item.sequence == 0) {
      append(first, item.type_id);
    } else if (item.sequence == 1) {
      append(*second, item.type_id);
    } else if (options.add_special_tokens) {
      append(item.specials, item.type_id);
    }
  }
  pad_encoding(out, options.pad_to_length, pad.id, pad.token);
  return out;
}

/// Whole file as a string; Error naming the file if it cannot be read.
inline std::string read_text_file(const std::filesystem::path& path, std::string_view what) {
  std::ifstream f(path, std::ios::binary);
  if (!f || std::filesystem::is_directory(path))
    throw Error(path.string() + ": cannot open the " + std::string(what) + " (missing, unreadable or a directory)");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) throw Error(path.string() + ": cannot read the " + std::string(what));
  return ss.str();
}

/// Parse JSON text; Error naming the file if it is not JSON.
inline nlohmann::json parse_json(const std::string& text, const std::string& file) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {  // a syntax error or a number too large
    throw Error(file + ": not valid JSON: " + e.what());
  }
}

/// j[key] if present and not null, else nullptr; Error if j is not an object.
inline const nlohmann::json* json_field(const nlohmann::json& j, const std::string& key,
                                        const std::string& file, const std::string& where) {
  if (!j.is_object()) throw Error(file + ": \"" + where + "\" must be a JSON object");
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

inline bool json_bool(const nlohmann::json& j, const std::string& key, bool fallback,
                      const std::string& file, const std::string& where) {
  const nlohmann::json* v = json_field(j, key, file, where);
  if (!v) return fallback;
  if (!v->is_boolean())
    throw Error(file + ": \"" + where + "." + key + "\" must be true or false, got " + v->dump());
  return v->get<bool>();
}

inline std::string json_string(const nlohmann::json& j, const std::string& key,
                               const std::string& fallback, const std::string& file,
                               const std::string& where) {
  const nlohmann::json* v = json_field(j, key, file, where);
  if (!v) return fallback;
  if (!v->is_string())
    throw Error(file + ": \"" + where + "." + key + "\" must be a string, got " + v->dump());
  return v->get<std::string>();
}

inline std::int64_t json_id(const nlohmann::json& v, const std::string& file,
                            const std::string& where) {
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0 ||
      v.get<std::int64_t>() > std::int64_t{0xFFFFFFFF})
    throw Error(file + ": " + where + " must be a token id (an integer from 0 to 2^32 - 1), got " +
                v.dump());
  return v.get<std::int64_t>();
}

/// A JSON {token: id} object as a Vocabulary (vocab.json, tokenizer.json's model.vocab).
inline Vocabulary vocabulary_from_json(const nlohmann::json& j, const std::string& file,
                                       const std::string& where) {
  if (!j.is_object())
    throw Error(file + ": " + where + " must be a JSON object mapping tokens to ids");
  Vocabulary vocab;
  for (const auto& [token, id] : j.items()) {
    unicode::decode_utf8(token, file);  // nlohmann keeps bytes as they are: check them
    vocab.set(token, json_id(id, file, where + "[\"" + token + "\"]"));
  }
  return vocab;
}

/// tokenizer.json's added_tokens, each checked against the vocabulary.
inline std::vector<AddedToken> added_tokens_from_json(const nlohmann::json& root,
                                                      const std::string& file) {
  std::vector<AddedToken> out;
  const nlohmann::json* list = json_field(root, "added_tokens", file, "(top level)");
  if (!list) return out;
  if (!list->is_array()) throw Error(file + ": \"added_tokens\" must be an array");
  for (std::size_t i = 0; i < list->size(); ++i) {
    const nlohmann::json& t = (*list)[i];
    const std::string where = "added_tokens[" + std::to_string(i) + "]";
    if (!t.is_object()) throw Error(file + ": \"" + where + "\" must be an object");
    AddedToken token;
    if (!t.contains("id")) throw Error(file + ": \"" + where + "\" has no \"id\"");
    token.id = json_id(t.at("id"), file, "\"" + where + ".id\"");
    token.content = json_string(t, "content", "", file, where);
    if (token.content.empty())
      throw Error(file + ": \"" + where + ".content\" must be a non-empty string");
    unicode::decode_utf8(token.content, file);
    token.lstrip = json_bool(t, "lstrip", false, file, where);
    token.rstrip = json_bool(t, "rstrip", false, file, where);
    token.normalized =
        json_bool(t, "normalized", !json_bool(t, "special", false, file, where), file, where);
    token.special = json_bool(t, "special", false, file, where);
    if (json_bool(t, "single_word", false, file, where))
      throw Error(file + ": \"" + where +
                  ".single_word\" is true: single-word added tokens are not supported");
    out.push_back(std::move(token));
  }
  return out;
}

/// One special token of a template: its id list from post_processor.special_tokens.
inline std::vector<Piece> template_specials(const nlohmann::json& specials, const std::string& name,
                                            const std::string& file) {
  const std::string where = "post_processor.special_tokens[\"" + name + "\"]";
  if (!specials.is_object() || !specials.contains(name))
    throw Error(file + ": \"" + where + "\" is missing");
  const nlohmann::json& s = specials.at(name);
  if (!s.is_object() || !s.contains("ids") || !s["ids"].is_array() || !s.contains("tokens") ||
      !s["tokens"].is_array() || s["ids"].size() != s["tokens"].size())
    throw Error(file + ": \"" + where + "\" must have arrays \"ids\" and \"tokens\" of one length");
  std::vector<Piece> out;
  for (std::size_t i = 0; i < s["ids"].size(); ++i) {
    if (!s["tokens"][i].is_string())
      throw Error(file + ": \"" + where + ".tokens\" must hold strings");
    out.push_back(
        {json_id(s["ids"][i], file, "\"" + where + ".ids\""), s["tokens"][i].get<std::string>()});
  }
  return out;
}

/// tokenizer.json's post_processor: TemplateProcessing, BertProcessing or RobertaProcessing.
inline PostProcessor post_processor_from_json(const nlohmann::json& root, const std::string& file) {
  const nlohmann::json* pp = json_field(root, "post_processor", file, "(top level)");
  if (!pp) throw Error(file + ": \"post_processor\" is missing (expected the special tokens)");
  const std::string type = json_string(*pp, "type", "", file, "post_processor");
  auto token_pair = [&](const char* key) {
    const nlohmann::json* v = json_field(*pp, key, file, "post_processor");
    if (!v || !v->is_array() || v->size() != 2 || !(*v)[0].is_string())
      throw Error(file + ": \"post_processor." + key + "\" must be [token, id]");
    return Piece{json_id((*v)[1], file, "\"post_processor." + std::string(key) + "[1]\""),
                 (*v)[0].get<std::string>()};
  };
  if (type == "BertProcessing")
    return PostProcessor::framed(token_pair("cls"), token_pair("sep"), 1, 1);
  if (type == "RobertaProcessing")
    return PostProcessor::framed(token_pair("cls"), token_pair("sep"), 2, 0);
  if (type != "TemplateProcessing")
    throw Error(
        file + ": post_processor type \"" + type +
        "\" is not supported (expected TemplateProcessing, BertProcessing or RobertaProcessing)");
  const nlohmann::json* specials = json_field(*pp, "special_tokens", file, "post_processor");
  if (!specials) throw Error(file + ": \"post_processor.special_tokens\" is missing");
  PostProcessor out;
  for (const char* which : {"single", "pair"}) {
    const nlohmann::json* items = json_field(*pp, which, file, "post_processor");
    const std::string where = std::string("post_processor.") + which;
    if (!items || !items->is_array()) throw Error(file + ": \"" + where + "\" must be an array");
    std::vector<TemplateItem>& target = std::string(which) == "single" ? out.single : out.pair;
    for (const nlohmann::json& item : *items) {
      TemplateItem t;
      if (item.is_object() && item.contains("Sequence") && item["Sequence"].is_object()) {
        const std::string id = json_string(item["Sequence"], "id", "", file, where);
        if (id != "A" && id != "B")
          throw Error(file + ": \"" + where + "\": Sequence id must be \"A\" or \"B\"");
        t.sequence = id == "A" ? 0 : 1;
        if (std::string(which) == "single" && t.sequence == 1)
          throw Error(file + ": \"" + where + "\" may not use sequence B");
        t.type_id = json_id(item["Sequence"].value("type_id", nlohmann::json(0)), file,
                            "\"" + where + "\" type_id");
      } else if (item.is_object() && item.contains("SpecialToken") &&
                 item["SpecialToken"].is_object()) {
        const std::string id = json_string(item["SpecialToken"], "id", "", file, where);
        t.specials = template_specials(*specials, id, file);
        t.type_id = json_id(item["SpecialToken"].value("type_id", nlohmann::json(0)), file,
                            "\"" + where + "\" type_id");
      } else {
        throw Error(file + ": \"" + where +
                    "\" items must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
      target.push_back(std::move(t));
    }
  }
  return out;
}

}  // namespace detail::tok

// ========================================================================================
// BERT
// ========================================================================================

/// @brief Settings of the BERT tokenizer (HuggingFace's BertNormalizer and WordPiece model).
/// The defaults are bert-base-uncased's and all-MiniLM-L6-v2's.
struct BertTokenizerOptions {
  bool clean_text = true;             ///< drop NUL, U+FFFD, controls; whitespace becomes ' '
  bool handle_chinese_chars = true;   ///< put spaces around CJK ideographs
  std::optional<bool> strip_accents;  ///< NFD then drop Mn; unset: follow `lowercase`
  bool lowercase = true;              ///< lower-case (after stripping accents)
  std::string unk_token = "[UNK]";    ///< replaces words that cannot be split into WordPieces
  std::string cls_token = "[CLS]";    ///< starts every sequence
  std::string sep_token = "[SEP]";    ///< ends each sequence
  std::string pad_token = "[PAD]";    ///< padding
  std::string mask_token = "[MASK]";  ///< masked-language-model token
  std::string continuing_subword_prefix = "##";  ///< marks a WordPiece inside a word
  std::size_t max_input_chars_per_word = 100;    ///< longer words become [UNK]
};

/// @brief Whether c is a "Chinese character" for BERT, exactly as HuggingFace `tokenizers`
/// defines it. Its ranges differ from the original BERT code's in one place: U+2B820..U+2B91F
/// (part of CJK Extension E) is not included (HuggingFace starts that range at U+2B920).
constexpr bool is_bert_chinese_char(char32_t c) noexcept {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
         (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/// @brief BERT tokenizer: BasicTokenizer + WordPiece, identical to HuggingFace's
/// BertTokenizerFast (`tokenizers` BertNormalizer, BertPreTokenizer, WordPiece and the
/// [CLS] A [SEP] B [SEP] template).
///
/// Load it from a `vocab.txt` (from_vocab_file) or a `tokenizer.json` (from_tokenizer_json).
/// Encoding is const and thread-safe.
class BertTokenizer {
 public:
  /// @brief Build from the text of a vocab.txt: one token per line, the id is the line number
  /// (0-based); trailing whitespace of a line is dropped; a later duplicate wins.
  /// @param text the file's contents
  /// @param file the file name used in error messages
  /// @param options normaliser and special-token settings
  /// @throws Error for invalid UTF-8 or a special token missing from the vocabulary
  static BertTokenizer from_vocab_text(const std::string& text, const std::string& file,
                                       BertTokenizerOptions options = {}) {
    detail::tok::Vocabulary vocab;
    std::size_t line_start = 0;
    std::int64_t index = 0;
    while (line_start < text.size()) {
      std::size_t line_end = text.find('\n', line_start);
      if (line_end == std::string::npos) line_end = text.size();
      std::string_view line(text.data() + line_start, line_end - line_start);
      std::u32string token;
      try {
        token = unicode::decode_utf8(line, file);
      } catch (const Error& e) {
        throw Error(std::string(e.what()) + " (line " + std::to_string(index + 1) + ")");
      }
      while (!token.empty() && unicode::is_white_space(token.back())) token.pop_back();
      vocab.set(unicode::encode_utf8(token), index);
      ++index;
      line_start = line_end + 1;
    }
    return BertTokenizer(std::move(vocab), std::move(options), std::nullopt, std::nullopt, file);
  }

  /// @brief Load a vocab.txt. @see from_vocab_text
  static BertTokenizer from_vocab_file(const std::filesystem::path& path,
                                       BertTokenizerOptions options = {}) {
    return from_vocab_text(detail::tok::read_text_file(path, "WordPiece vocabulary"), path.string(),
                           std::move(options));
  }

  /// @brief Build from the text of a HuggingFace tokenizer.json with a WordPiece model, a
  /// BertNormalizer (or none), a BertPreTokenizer and a TemplateProcessing / BertProcessing
  /// post-processor. Its "truncation" and "padding" entries are ignored: pass EncodeOptions,
  /// as transformers passes its call arguments.
  /// @throws Error naming the file and field for anything missing or unsupported
  static BertTokenizer from_tokenizer_json_text(const std::string& text, const std::string& file) {
    const nlohmann::json root = detail::tok::parse_json(text, file);
    if (!root.is_object()) throw Error(file + ": expected a JSON object at the top level");
    const nlohmann::json* model = detail::tok::json_field(root, "model", file, "(top level)");
    if (!model) throw Error(file + ": \"model\" is missing");
    const std::string type = detail::tok::json_string(*model, "type", "WordPiece", file, "model");
    if (type != "WordPiece")
      throw Error(file + ": model type \"" + type +
                  "\" is not WordPiece (use RobertaTokenizer for BPE)");
    const nlohmann::json* vocab_json = detail::tok::json_field(*model, "vocab", file, "model");
    if (!vocab_json) throw Error(file + ": \"model.vocab\" is missing");
    BertTokenizerOptions options;
    options.unk_token = detail::tok::json_string(*model, "unk_token", "[UNK]", file, "model");
    options.continuing_subword_prefix =
        detail::tok::json_string(*model, "continuing_subword_prefix", "##", file, "model");
    if (const nlohmann::json* m =
            detail::tok::json_field(*model, "max_input_chars_per_word", file, "model")) {
      if (!m->is_number_unsigned())
        throw Error(file + ": \"model.max_input_chars_per_word\" must be a non-negative integer");
      options.max_input_chars_per_word = m->get<std::size_t>();
    }
    if (const nlohmann::json* n =
            detail::tok::json_field(root, "normalizer", file, "(top level)")) {
      const std::string ntype = detail::tok::json_string(*n, "type", "", file, "normalizer");
      if (ntype != "BertNormalizer")
        throw Error(file + ": normalizer type \"" + ntype +
                    "\" is not supported (expected BertNormalizer)");
      options.clean_text = detail::tok::json_bool(*n, "clean_text", true, file, "normalizer");
      options.handle_chinese_chars =
          detail::tok::json_bool(*n, "handle_chinese_chars", true, file, "normalizer");
      options.lowercase = detail::tok::json_bool(*n, "lowercase", true, file, "normalizer");
      if (const nlohmann::json* s =
              detail::tok::json_field(*n, "strip_accents", file, "normalizer")) {
        if (!s->is_boolean())
          throw Error(file + ": \"normalizer.strip_accents\" must be true, false or null");
        options.strip_accents = s->get<bool>();
      }
    } else {
      options.clean_text = options.handle_chinese_chars = options.lowercase = false;
      options.strip_accents = false;
    }
    const nlohmann::json* pre = detail::tok::json_field(root, "pre_tokenizer", file, "(top level)");
    const std::string pre_type =
        pre ? detail::tok::json_string(*pre, "type", "", file, "pre_tokenizer") : "none";
    if (pre_type != "BertPreTokenizer")
      throw Error(file + ": pre_tokenizer \"" + pre_type +
                  "\" is not supported (expected BertPreTokenizer)");
    detail::tok::PostProcessor processor = detail::tok::post_processor_from_json(root, file);
    if (const nlohmann::json* padding =
            detail::tok::json_field(root, "padding", file, "(top level)"))
      options.pad_token = detail::tok::json_string(*padding, "pad_token", "[PAD]", file, "padding");
    return BertTokenizer(detail::tok::vocabulary_from_json(*vocab_json, file, "\"model.vocab\""),
                         std::move(options), detail::tok::added_tokens_from_json(root, file),
                         std::move(processor), file);
  }

  /// @brief Load a tokenizer.json. @see from_tokenizer_json_text
  static BertTokenizer from_tokenizer_json(const std::filesystem::path& path) {
    return from_tokenizer_json_text(detail::tok::read_text_file(path, "tokenizer file"),
                                    path.string());
  }

  /// @brief Load a model directory: its tokenizer.json if there is one, else its vocab.txt with
  /// the default options (lower-casing on).
  static BertTokenizer from_directory(const std::filesystem::path& dir) {
    if (std::filesystem::exists(dir / "tokenizer.json"))
      return from_tokenizer_json(dir / "tokenizer.json");
    return from_vocab_file(dir / "vocab.txt");
  }

  /// @brief Encode one text: [CLS] tokens [SEP], truncated and padded as the options say.
  /// @throws Error for invalid UTF-8 or impossible truncation
  Encoding encode(std::string_view text, const EncodeOptions& options = {}) const {
    return detail::tok::assemble(tokenize_to_pieces(text), std::nullopt, processor_, options, pad_);
  }

  /// @brief Encode a pair: [CLS] a [SEP] b [SEP], token_type_ids 0 for a and 1 for b.
  /// @throws Error for invalid UTF-8 or impossible truncation
  Encoding encode_pair(std::string_view a, std::string_view b,
                       const EncodeOptions& options = {}) const {
    return detail::tok::assemble(tokenize_to_pieces(a), tokenize_to_pieces(b), processor_, options,
                                 pad_);
  }

  /// @brief The WordPiece tokens of a text, without special tokens around it.
  std::vector<std::string> tokenize(std::string_view text) const {
    std::vector<std::string> out;
    for (detail::tok::Piece& p : tokenize_to_pieces(text)) out.push_back(std::move(p.token));
    return out;
  }

  /// @brief The normalised text (BertNormalizer: clean, CJK spacing, accents, lower case).
  std::string normalize(std::string_view text) const {
    return unicode::encode_utf8(normalize_code_points(unicode::decode_utf8(text)));
  }

  /// @brief The WordPiece tokens of one word (`first_in_sequence` is ignored: WordPiece has
  /// no space mark). For word-level feature builders.
  std::vector<std::string> tokenize_word(std::string_view word, bool first_in_sequence) const {
    static_cast<void>(first_in_sequence);
    return tokenize(word);
  }

  /// @brief Id of a vocabulary token, if present.
  std::optional<std::int64_t> token_to_id(std::string_view token) const {
    return vocab_.find(token);
  }
  /// @brief Id of a token, or the [UNK] id for one not in the vocabulary.
  std::int64_t id(std::string_view token) const { return vocab_.find(token).value_or(unk_id_); }
  /// @brief Token of an id; Error if the id is not in the vocabulary.
  const std::string& id_to_token(std::int64_t id) const {
    if (const std::string* t = vocab_.token_of(id)) return *t;
    throw Error("BERT vocabulary: no token has id " + std::to_string(id));
  }
  /// @brief Number of tokens in the vocabulary.
  std::size_t vocab_size() const noexcept { return vocab_.size(); }
  /// @brief The settings in use.
  const BertTokenizerOptions& options() const noexcept { return options_; }
  /// @brief Id of [CLS].
  std::int64_t cls_id() const noexcept { return cls_id_; }
  /// @brief Id of [SEP].
  std::int64_t sep_id() const noexcept { return sep_id_; }
  /// @brief Id of [PAD].
  std::int64_t pad_id() const noexcept { return pad_.id; }
  /// @brief Text of the padding token ([PAD] unless the tokenizer names another), for
  /// pad_batch(batch, pad_id(), pad_token()).
  const std::string& pad_token() const noexcept { return options_.pad_token; }
  /// @brief Id of [UNK].
  std::int64_t unk_id() const noexcept { return unk_id_; }
  /// @brief Id of [MASK].
  std::int64_t mask_id() const noexcept { return mask_id_; }

 private:
  // added / processor unset: those of a vocab.txt (the five special tokens, [CLS] A [SEP]).
  BertTokenizer(detail::tok::Vocabulary vocab, BertTokenizerOptions options,
                std::optional<std::vector<AddedToken>> added,
                std::optional<detail::tok::PostProcessor> processor, const std::string& file)
      : vocab_(std::move(vocab)), options_(std::move(options)) {
    auto require = [&](const std::string& token, const char* role) {
      const auto id = vocab_.find(token);
      if (!id)
        throw Error(file + ": the " + std::string(role) + " token \"" + token +
                    "\" is not in the vocabulary");
      return *id;
    };
    unk_id_ = require(options_.unk_token, "unknown");
    cls_id_ = require(options_.cls_token, "CLS");
    sep_id_ = require(options_.sep_token, "SEP");
    pad_ = {require(options_.pad_token, "padding"), options_.pad_token};
    mask_id_ = require(options_.mask_token, "mask");
    if (!added) {  // vocab.txt: the five special tokens, matched in the raw text
      added.emplace();
      for (const auto& [token, id] :
           {std::pair{options_.pad_token, pad_.id}, std::pair{options_.unk_token, unk_id_},
            std::pair{options_.cls_token, cls_id_}, std::pair{options_.sep_token, sep_id_},
            std::pair{options_.mask_token, mask_id_}})
        added->push_back({token, id, false, false, false, true});
    }
    for (const AddedToken& t : *added)
      if (!vocab_.token_of(t.id)) vocab_.set(t.content, t.id);
    processor_ = processor
                     ? std::move(*processor)
                     : detail::tok::PostProcessor::framed({cls_id_, options_.cls_token},
                                                          {sep_id_, options_.sep_token}, 1, 1);
    added_ = detail::tok::AddedTokenMatcher(
        std::move(*added), [this](std::u32string_view s) { return normalize_code_points(s); });
  }

  std::u32string normalize_code_points(std::u32string_view text) const {
    std::u32string out;
    out.reserve(text.size());
    for (char32_t c : text) {
      if (options_.clean_text) {
        if (c == 0 || c == 0xFFFD) continue;
        const bool kept_control = c == U'\t' || c == U'\n' || c == U'\r';
        if (!kept_control && unicode::is_bert_other(c)) continue;
        if (kept_control || unicode::is_white_space(c)) c = U' ';
      }
      if (options_.handle_chinese_chars && is_bert_chinese_char(c)) {
        out.push_back(U' ');
        out.push_back(c);
        out.push_back(U' ');
      } else {
        out.push_back(c);
      }
    }
    if (options_.strip_accents.value_or(options_.lowercase)) {
      std::u32string decomposed = unicode::nfd(out);
      out.clear();
      for (char32_t c : decomposed)
        if (!unicode::is_bert_nonspacing_mark(c)) out.push_back(c);
    }
    if (options_.lowercase) out = unicode::to_lowercase(out);
    return out;
  }

  /// BertPreTokenizer: split on whitespace (dropped) and around punctuation (kept alone).
  void pre_tokenize_and_model(std::u32string_view text,
                              std::vector<detail::tok::Piece>& out) const {
    std::size_t i = 0;
    const std::size_t n = text.size();
    while (i < n) {
      const char32_t c = text[i];
      if (unicode::is_white_space(c)) {
        ++i;
      } else if (unicode::is_bert_punctuation(c)) {
        word_pieces(text.substr(i, 1), out);
        ++i;
      } else {
        std::size_t end = i + 1;
        while (end < n && !unicode::is_white_space(text[end]) &&
               !unicode::is_bert_punctuation(text[end]))
          ++end;
        word_pieces(text.substr(i, end - i), out);
        i = end;
      }
    }
  }

  /// WordPiece: greedy longest-match-first; a word that cannot be covered, or that has more
  /// than max_input_chars_per_word code points, becomes one [UNK].
  void word_pieces(std::u32string_view word, std::vector<detail::tok::Piece>& out) const {
    if (word.size() > options_.max_input_chars_per_word) {
      out.push_back({unk_id_, options_.unk_token});
      return;
    }
    const std::size_t first_new = out.size();
    std::size_t start = 0;
    std::string candidate;
    while (start < word.size()) {
      std::size_t end = word.size();
      bool found = false;
      while (start < end) {
        candidate.clear();
        if (start > 0) candidate = options_.continuing_subword_prefix;
        for (std::size_t k = start; k < end; ++k) unicode::append_utf8(candidate, word[k]);
        if (const auto id = vocab_.find(candidate)) {
          out.push_back({*id, candidate});
          found = true;
          break;
        }
        --end;
      }
      if (!found) {
        out.resize(first_new);
        out.push_back({unk_id_, options_.unk_token});
        return;
      }
      start = end;
    }
  }

  std::vector<detail::tok::Piece> tokenize_to_pieces(std::string_view text) const {
    std::vector<detail::tok::Piece> out;
    for (const detail::tok::Segment& raw : added_.split(unicode::decode_utf8(text), false)) {
      if (raw.token) {
        out.push_back({raw.token->id, raw.token->content});
        continue;
      }
      for (const detail::tok::Segment& seg : added_.split(normalize_code_points(raw.text), true)) {
        if (seg.token) {
          out.push_back({seg.token->id, seg.token->content});
        } else {
          pre_tokenize_and_model(seg.text, out);
        }
      }
    }
    return out;
  }

  detail::tok::Vocabulary vocab_;
  BertTokenizerOptions options_;
  detail::tok::AddedTokenMatcher added_;
  detail::tok::PostProcessor processor_;
  detail::tok::Piece pad_;
  std::int64_t unk_id_ = 0, cls_id_ = 0, sep_id_ = 0, mask_id_ = 0;
};

}  // namespace kadapter::io
