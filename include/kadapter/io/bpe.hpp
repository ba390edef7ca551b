/// @file bpe.hpp
/// @brief RoBERTa's byte-level BPE tokenizer (GPT-2's), identical to HuggingFace's
/// RobertaTokenizerFast.
///
/// The pipeline is HuggingFace `tokenizers`': special tokens are cut out of the raw text; each
/// remaining piece is split by the GPT-2 pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
/// (implemented by hand), each part's UTF-8 bytes are mapped to printable characters (GPT-2's
/// bytes_to_unicode) and merged by BPE in merge-rank order; then `<s> A </s>` or
/// `<s> A </s></s> B </s>`. Shared types (Encoding, EncodeOptions, ...) are in wordpiece.hpp.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kadapter/core/error.hpp"
#include "kadapter/io/unicode.hpp"
#include "kadapter/io/wordpiece.hpp"

namespace kadapter::io {

/// @brief Settings of the RoBERTa tokenizer. The defaults are roberta-base's.
struct RobertaTokenizerOptions {
  bool add_prefix_space = false;      ///< prepend a space to text not starting with one
  bool use_regex = true;              ///< split with the GPT-2 pattern (else: whole pieces)
  std::string bos_token = "<s>";      ///< starts every sequence (also the CLS token)
  std::string eos_token = "</s>";     ///< ends each sequence (also the SEP token)
  std::string unk_token = "<unk>";    ///< special token for unknown text
  std::string pad_token = "<pad>";    ///< padding
  std::string mask_token = "<mask>";  ///< masked-language-model token; takes the space before it
  std::optional<std::string> model_unk_token;  ///< BPE model's unknown token (RoBERTa: none)
  std::string continuing_subword_prefix;       ///< BPE prefix of non-initial pieces (RoBERTa: "")
  std::string end_of_word_suffix;              ///< BPE suffix of final pieces (RoBERTa: "")
  bool fuse_unk = false;               ///< merge runs of unknown characters into one unknown token
  bool byte_fallback = false;          ///< spell unknown characters as <0xXX> byte tokens
  std::size_t cache_capacity = 10000;  ///< words whose BPE result is remembered
};

namespace detail::tok {

/// GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others (0-32, 127-160,
/// 173) become U+0100, U+0101, ... in byte order.
inline const std::array<char32_t, 256>& byte_to_unicode() {
  static const std::array<char32_t, 256> table = [] {
    std::array<char32_t, 256> t{};
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      t[static_cast<std::size_t>(b)] = printable ? static_cast<char32_t>(b) : next++;
    }
    return t;
  }();
  return table;
}

/// Character class for the GPT-2 pattern.
enum class Gpt2Class { space, letter, number, other };

inline Gpt2Class gpt2_class(char32_t c) noexcept {
  if (unicode::is_white_space(c)) return Gpt2Class::space;
  if (unicode::is_letter(c)) return Gpt2Class::letter;
  if (unicode::is_number(c)) return Gpt2Class::number;
  return Gpt2Class::other;
}

/// End of the GPT-2 pattern's match starting at i (every position starts a match): the
/// alternatives are tried in order, as Oniguruma's backtracking does.
inline std::size_t gpt2_match_end(std::u32string_view s, std::size_t i) {
  const std::size_t n = s.size();
  const char32_t c = s[i];
  // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
  if (c == U'\'' && i + 1 < n) {
    const char32_t a = s[i + 1];
    if (a == U's' || a == U't' || a == U'm' || a == U'd') return i + 2;
    if (i + 2 < n) {
      const char32_t b = s[i + 2];
      if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l'))
        return i + 3;
    }
  }
  auto run_end = [&](std::size_t from, Gpt2Class k) {
    while (from < n && gpt2_class(s[from]) == k) ++from;
    return from;
  };
  //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
  if (c == U' ' && i + 1 < n) {
    const Gpt2Class next = gpt2_class(s[i + 1]);
    if (next != Gpt2Class::space) return run_end(i + 1, next);
  }
  const Gpt2Class k = gpt2_class(c);
  if (k != Gpt2Class::space) return run_end(i, k);
  // \s+(?!\S) | \s+ : a whitespace run, less its last character when a non-space follows
  const std::size_t end = run_end(i, Gpt2Class::space);
  if (end < n && end - i >= 2) return end - 1;
  return end;
}

/// Memory of BPE results per word (words under 256 bytes, up to `capacity` of them, then no
/// more); shared by copies of a tokenizer, safe across threads.
class BpeCache {
 public:
  static constexpr std::size_t longest_word = 255;
  explicit BpeCache(std::size_t capacity) : capacity_(capacity) {}
  bool find(const std::string& word, std::vector<Piece>& out) const {
    if (capacity_ == 0 || word.size() > longest_word) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = map_.find(word);
    if (it == map_.end()) return false;
    out.insert(out.end(), it->second.begin(), it->second.end());
    return true;
  }
  void store(const std::string& word, std::vector<Piece> pieces) {
    if (capacity_ == 0 || word.size() > longest_word) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (map_.size() < capacity_) map_.emplace(word, std::move(pieces));
  }

 private:
  std::size_t capacity_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, std::vector<Piece>> map_;
};

/// One merge rule's result: its rank (position in the merges list) and the merged token's id.
struct MergeResult {
  std::uint32_t rank = 0;
  std::int64_t new_id = 0;
};

/// A merge rule as read from a file: the two tokens and where it came from (for errors).
struct MergeRule {
  std::string left;
  std::string right;
  std::string where;
};

/// merges.txt text: "#version" lines skipped, then "left right" per line.
inline std::vector<MergeRule> merge_rules_from_text(const std::string& text,
                                                    const std::string& file) {
  std::vector<MergeRule> rules;
  std::size_t line_start = 0, line_number = 0;
  while (line_start < text.size()) {
    std::size_t line_end = text.find('\n', line_start);
    if (line_end == std::string::npos) line_end = text.size();
    std::string_view line(text.data() + line_start, line_end - line_start);
    line_start = line_end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::string where = file + " line " + std::to_string(line_number);
    if (line.substr(0, 8) == "#version") continue;
    unicode::decode_utf8(line, where);
    const std::size_t space = line.find(' ');
    if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos)
      throw Error(where + ": expected two tokens separated by one space, got \"" +
                  std::string(line) + "\"");
    rules.push_back(
        {std::string(line.substr(0, space)), std::string(line.substr(space + 1)), where});
  }
  return rules;
}

}  // namespace detail::tok

/// @brief RoBERTa tokenizer: byte-level BPE identical to HuggingFace's RobertaTokenizerFast
/// (`tokenizers` ByteLevel pre-tokenizer, BPE model and RobertaProcessing).
///
/// Load it from vocab.json + merges.txt (from_files) or a tokenizer.json (from_tokenizer_json).
/// Encoding is const and thread-safe; copies share one BPE cache.
class RobertaTokenizer {
 public:
  /// @brief Build from the texts of vocab.json ({token: id}) and merges.txt ("a b" per line
  /// in rank order, "#version" lines skipped), with RoBERTa's special tokens.
  /// @param vocab_text contents of vocab.json
  /// @param vocab_file its name, for error messages
  /// @param merges_text contents of merges.txt
  /// @param merges_file its name, for error messages
  /// @param options pre-tokenizer, model and special-token settings
  /// @throws Error for bad JSON, a malformed merges line, a merge of tokens missing from the
  /// vocabulary, or a special token missing from it
  static RobertaTokenizer from_strings(const std::string& vocab_text, const std::string& vocab_file,
                                       const std::string& merges_text,
                                       const std::string& merges_file,
                                       RobertaTokenizerOptions options = {}) {
    const nlohmann::json vocab_json = detail::tok::parse_json(vocab_text, vocab_file);
    detail::tok::Vocabulary vocab =
        detail::tok::vocabulary_from_json(vocab_json, vocab_file, "the top level");
    std::vector<detail::tok::MergeRule> rules =
        detail::tok::merge_rules_from_text(merges_text, merges_file);
    return RobertaTokenizer(std::move(vocab), vocab_file, rules, std::move(options), std::nullopt,
                            std::nullopt);
  }

  /// @brief Load vocab.json and merges.txt. @see from_strings
  static RobertaTokenizer from_files(const std::filesystem::path& vocab_json,
                                     const std::filesystem::path& merges_txt,
                                     RobertaTokenizerOptions options = {}) {
    return from_strings(detail::tok::read_text_file(vocab_json, "BPE vocabulary"),
                        vocab_json.string(), detail::tok::read_text_file(merges_txt, "BPE merges"),
                        merges_txt.string(), std::move(options));
  }

  /// @brief Build from the text of a HuggingFace tokenizer.json with a BPE model (merges as
  /// "a b" strings or ["a", "b"] pairs), no normaliser, a ByteLevel pre-tokenizer and a
  /// RobertaProcessing / TemplateProcessing post-processor. Its "truncation" and "padding"
  /// entries are ignored: pass EncodeOptions, as transformers passes its call arguments.
  /// @throws Error naming the file and field for anything missing or unsupported
  static RobertaTokenizer from_tokenizer_json_text(const std::string& text,
                                                   const std::string& file) {
    const nlohmann::json root = detail::tok::parse_json(text, file);
    if (!root.is_object()) throw Error(file + ": expected a JSON object at the top level");
    const nlohmann::json* model = detail::tok::json_field(root, "model", file, "(top level)");
    if (!model) throw Error(file + ": \"model\" is missing");
    const std::string type = detail::tok::json_string(*model, "type", "BPE", file, "model");
    if (type != "BPE")
      throw Error(file + ": model type \"" + type +
                  "\" is not BPE (use BertTokenizer for WordPiece)");
    if (detail::tok::json_field(*model, "dropout", file, "model"))
      throw Error(file + ": \"model.dropout\" is set: BPE dropout is random and not supported");
    RobertaTokenizerOptions options;
    if (detail::tok::json_field(*model, "unk_token", file, "model"))
      options.model_unk_token = detail::tok::json_string(*model, "unk_token", "", file, "model");
    options.continuing_subword_prefix =
        detail::tok::json_string(*model, "continuing_subword_prefix", "", file, "model");
    options.end_of_word_suffix =
        detail::tok::json_string(*model, "end_of_word_suffix", "", file, "model");
    options.fuse_unk = detail::tok::json_bool(*model, "fuse_unk", false, file, "model");
    options.byte_fallback = detail::tok::json_bool(*model, "byte_fallback", false, file, "model");
    const nlohmann::json* vocab_json = detail::tok::json_field(*model, "vocab", file, "model");
    if (!vocab_json) throw Error(file + ": \"model.vocab\" is missing");
    const nlohmann::json* merges_json = detail::tok::json_field(*model, "merges", file, "model");
    if (!merges_json || !merges_json->is_array())
      throw Error(file + ": \"model.merges\" must be an array");
    std::vector<detail::tok::MergeRule> rules;
    for (std::size_t i = 0; i < merges_json->size(); ++i) {
      const nlohmann::json& m = (*merges_json)[i];
      const std::string where = file + ": \"model.merges[" + std::to_string(i) + "]\"";
      if (m.is_string()) {
        const std::string line = m.get<std::string>();
        if (line.rfind("#version", 0) == 0) continue;
        const std::size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
          throw Error(where + ": expected two tokens separated by one space, got \"" + line + "\"");
        rules.push_back({line.substr(0, space), line.substr(space + 1), where});
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        rules.push_back({m[0].get<std::string>(), m[1].get<std::string>(), where});
      } else {
        throw Error(where + ": expected \"a b\" or [\"a\", \"b\"], got " + m.dump());
      }
    }
    if (detail::tok::json_field(root, "normalizer", file, "(top level)"))
      throw Error(
          file +
          ": \"normalizer\" must be null: byte-level BPE with a normaliser is not supported");
    const nlohmann::json* pre = detail::tok::json_field(root, "pre_tokenizer", file, "(top level)");
    const std::string pre_type =
        pre ? detail::tok::json_string(*pre, "type", "", file, "pre_tokenizer") : "none";
    if (pre_type != "ByteLevel")
      throw Error(file + ": pre_tokenizer \"" + pre_type +
                  "\" is not supported (expected ByteLevel)");
    options.add_prefix_space =
        detail::tok::json_bool(*pre, "add_prefix_space", true, file, "pre_tokenizer");
    options.use_regex = detail::tok::json_bool(*pre, "use_regex", true, file, "pre_tokenizer");
    detail::tok::PostProcessor processor = detail::tok::post_processor_from_json(root, file);
    if (processor.single.empty() || processor.single.front().specials.size() != 1 ||
        processor.single.back().specials.size() != 1)
      throw Error(
          file +
          ": the post_processor must frame a sequence with one token on each side (<s> A </s>)");
    options.bos_token = processor.single.front().specials.front().token;
    options.eos_token = processor.single.back().specials.front().token;
    if (const nlohmann::json* padding =
            detail::tok::json_field(root, "padding", file, "(top level)"))
      options.pad_token = detail::tok::json_string(*padding, "pad_token", "<pad>", file, "padding");
    return RobertaTokenizer(detail::tok::vocabulary_from_json(*vocab_json, file, "\"model.vocab\""),
                            file, rules, std::move(options),
                            detail::tok::added_tokens_from_json(root, file), std::move(processor));
  }

  /// @brief Load a tokenizer.json. @see from_tokenizer_json_text
  static RobertaTokenizer from_tokenizer_json(const std::filesystem::path& path) {
    return from_tokenizer_json_text(detail::tok::read_text_file(path, "tokenizer file"),
                                    path.string());
  }

  /// @brief Load a model directory: its tokenizer.json if there is one, else vocab.json and
  /// merges.txt with the default options.
  static RobertaTokenizer from_directory(const std::filesystem::path& dir) {
    if (std::filesystem::exists(dir / "tokenizer.json"))
      return from_tokenizer_json(dir / "tokenizer.json");
    return from_files(dir / "vocab.json", dir / "merges.txt");
  }

  /// @brief Encode one text: `<s> tokens </s>`, truncated and padded as the options say.
  /// @throws Error for invalid UTF-8 or impossible truncation
  Encoding encode(std::string_view text, const EncodeOptions& options = {}) const {
    return detail::tok::assemble(tokenize_to_pieces(text), std::nullopt, processor_, options, pad_);
  }

  /// @brief Encode a pair: `<s> a </s></s> b </s>`; token_type_ids are all 0, as RoBERTa's.
  /// @throws Error for invalid UTF-8 or impossible truncation
  Encoding encode_pair(std::string_view a, std::string_view b,
                       const EncodeOptions& options = {}) const {
    return detail::tok::assemble(tokenize_to_pieces(a), tokenize_to_pieces(b), processor_, options,
                                 pad_);
  }

  /// @brief The BPE tokens of a text (byte-level strings such as "Ġhello"), without `<s>` `</s>`.
  std::vector<std::string> tokenize(std::string_view text) const {
    std::vector<std::string> out;
    for (detail::tok::Piece& p : tokenize_to_pieces(text)) out.push_back(std::move(p.token));
    return out;
  }

  /// @brief The parts the GPT-2 pattern splits a text into (before byte mapping and BPE).
  std::vector<std::string> pre_tokenize(std::string_view text) const {
    std::vector<std::string> out;
    const std::u32string s = unicode::decode_utf8(text);
    for (std::size_t i = 0; i < s.size();) {
      const std::size_t end = options_.use_regex ? detail::tok::gpt2_match_end(s, i) : s.size();
      out.push_back(unicode::encode_utf8(std::u32string_view(s).substr(i, end - i)));
      i = end;
    }
    return out;
  }

  /// @brief The BPE tokens of one word as the GPT-2 tokenizer sees it after a space
  /// (`first_in_sequence` false: the first piece carries the "Ġ" space mark) or at the start
  /// of a text (true: no mark). For word-level feature builders.
  std::vector<std::string> tokenize_word(std::string_view word, bool first_in_sequence) const {
    if (first_in_sequence) return tokenize(word);
    std::string spaced = " ";
    spaced += word;
    return tokenize(spaced);
  }

  /// @brief Id of a vocabulary token, if present.
  std::optional<std::int64_t> token_to_id(std::string_view token) const {
    return vocab_.find(token);
  }
  /// @brief Id of a token, or of the unknown token (`<unk>`) for one not in the vocabulary.
  /// @throws Error if the token is unknown and the vocabulary has no unknown token
  std::int64_t id(std::string_view token) const {
    if (const auto found = vocab_.find(token)) return *found;
    if (const auto unk = vocab_.find(options_.unk_token)) return *unk;
    throw Error("BPE vocabulary: \"" + std::string(token) + "\" is not in it and there is no \"" +
                options_.unk_token + "\" token");
  }
  /// @brief Token of an id; Error if the id is not in the vocabulary.
  const std::string& id_to_token(std::int64_t id) const {
    if (const std::string* t = vocab_.token_of(id)) return *t;
    throw Error("BPE vocabulary: no token has id " + std::to_string(id));
  }
  /// @brief Number of tokens in the vocabulary.
  std::size_t vocab_size() const noexcept { return vocab_.size(); }
  /// @brief Number of merge rules.
  std::size_t merge_count() const noexcept { return merges_.size(); }
  /// @brief The settings in use.
  const RobertaTokenizerOptions& options() const noexcept { return options_; }
  /// @brief Id of `<s>` (BOS / CLS).
  std::int64_t cls_id() const noexcept { return cls_id_; }
  /// @brief Id of `</s>` (EOS / SEP).
  std::int64_t sep_id() const noexcept { return sep_id_; }
  /// @brief Id of `<pad>`.
  std::int64_t pad_id() const noexcept { return pad_.id; }
  /// @brief Text of the padding token (`<pad>` unless the tokenizer names another), for
  /// pad_batch(batch, pad_id(), pad_token()).
  const std::string& pad_token() const noexcept { return options_.pad_token; }

 private:
  // added / processor unset: those of vocab.json + merges.txt (RoBERTa's special tokens).
  RobertaTokenizer(detail::tok::Vocabulary vocab, const std::string& vocab_file,
                   const std::vector<detail::tok::MergeRule>& rules,
                   RobertaTokenizerOptions options, std::optional<std::vector<AddedToken>> added,
                   std::optional<detail::tok::PostProcessor> processor)
      : vocab_(std::move(vocab)),
        options_(std::move(options)),
        cache_(std::make_shared<detail::tok::BpeCache>(options_.cache_capacity)) {
    const std::size_t prefix_length = options_.continuing_subword_prefix.size();
    for (std::size_t rank = 0; rank < rules.size(); ++rank) {
      const detail::tok::MergeRule& rule = rules[rank];
      auto id_of = [&](const std::string& token, const char* what) {
        const auto id = vocab_.find(token);
        if (!id)
          throw Error(rule.where + ": " + what + " \"" + token + "\" is not in the vocabulary (" +
                      vocab_file + ")");
        return *id;
      };
      const std::int64_t left = id_of(rule.left, "merge token");
      const std::int64_t right = id_of(rule.right, "merge token");
      if (rule.right.size() < prefix_length)
        throw Error(rule.where + ": merge token \"" + rule.right +
                    "\" is shorter than the continuing-subword prefix");
      const std::int64_t merged =
          id_of(rule.left + rule.right.substr(prefix_length), "merged token");
      merges_[pair_key(left, right)] = {static_cast<std::uint32_t>(rank), merged};
    }
    auto require = [&](const std::string& token, const char* role) {
      const auto id = vocab_.find(token);
      if (!id)
        throw Error(vocab_file + ": the " + std::string(role) + " token \"" + token +
                    "\" is not in the vocabulary");
      return *id;
    };
    if (options_.model_unk_token) model_unk_id_ = require(*options_.model_unk_token, "unknown");
    if (!added) {  // as transformers' RobertaTokenizerFast registers its special tokens
      added.emplace();
      added->push_back(
          {options_.bos_token, require(options_.bos_token, "BOS"), false, false, true, true});
      added->push_back(
          {options_.pad_token, require(options_.pad_token, "padding"), false, false, true, true});
      added->push_back(
          {options_.eos_token, require(options_.eos_token, "EOS"), false, false, true, true});
      added->push_back(
          {options_.unk_token, require(options_.unk_token, "unknown"), false, false, true, true});
      added->push_back(
          {options_.mask_token, require(options_.mask_token, "mask"), true, false, false, true});
    }
    for (const AddedToken& t : *added)
      if (!vocab_.token_of(t.id)) vocab_.set(t.content, t.id);
    cls_id_ = require(options_.bos_token, "BOS");
    sep_id_ = require(options_.eos_token, "EOS");
    pad_ = {require(options_.pad_token, "padding"), options_.pad_token};
    processor_ = processor
                     ? std::move(*processor)
                     : detail::tok::PostProcessor::framed({cls_id_, options_.bos_token},
                                                          {sep_id_, options_.eos_token}, 2, 0);
    added_ = detail::tok::AddedTokenMatcher(
        std::move(*added), [](std::u32string_view s) { return std::u32string(s); });
    const auto& bytes = detail::tok::byte_to_unicode();
    for (std::size_t b = 0; b < 256; ++b) {
      byte_string_[b].clear();
      unicode::append_utf8(byte_string_[b], bytes[b]);
    }
  }

  static std::uint64_t pair_key(std::int64_t left, std::int64_t right) noexcept {
    return (static_cast<std::uint64_t>(left) << 32) | static_cast<std::uint64_t>(right);
  }

  const detail::tok::MergeResult* find_merge(std::int64_t left, std::int64_t right) const {
    const auto it = merges_.find(pair_key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  /// BPE of one pre-tokenized part (its UTF-8 bytes), appended to out: HuggingFace's
  /// merge_word + Word::merge_all, merge by merge in (rank, position) order.
  void bpe(std::string_view word, std::vector<detail::tok::Piece>& out) const {
    const std::string key(word);
    if (cache_->find(key, out)) return;

    struct Symbol {
      std::int64_t id;
      std::ptrdiff_t prev;
      std::ptrdiff_t next;
      std::size_t length;  // bytes of the original text; 0 once merged into its left neighbour
    };
    std::vector<Symbol> symbols;
    symbols.reserve(word.size());
    auto add = [&symbols](std::int64_t id, std::size_t length) {
      const auto index = static_cast<std::ptrdiff_t>(symbols.size());
      if (!symbols.empty()) symbols.back().next = index;
      symbols.push_back({id, index - 1, -1, length});
    };
    // A pending unknown token (id, bytes), added once a known character follows.
    bool has_unknown = false;
    std::int64_t unknown_id = 0;
    std::size_t unknown_length = 0;
    std::string s;
    for (std::size_t i = 0; i < word.size(); ++i) {
      const auto byte = static_cast<unsigned char>(word[i]);
      s.clear();
      if (i > 0) s += options_.continuing_subword_prefix;
      s += byte_string_[byte];
      if (i + 1 == word.size()) s += options_.end_of_word_suffix;
      if (const auto id = vocab_.find(s)) {
        if (has_unknown) add(unknown_id, unknown_length), has_unknown = false;
        add(*id, 1);
        continue;
      }
      if (options_.byte_fallback) {  // every byte of s as <0xXX>, or none of them
        static constexpr char hex[] = "0123456789ABCDEF";
        std::vector<std::int64_t> byte_ids;
        for (const char ch : s) {
          const auto b = static_cast<unsigned char>(ch);
          const auto id = vocab_.find(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");
          if (!id) break;
          byte_ids.push_back(*id);
        }
        if (byte_ids.size() == s.size()) {
          for (const std::int64_t id : byte_ids) add(id, 1);
          continue;
        }
      }
      if (model_unk_id_) {
        if (has_unknown && options_.fuse_unk) {
          unknown_length += 1;
        } else {
          if (has_unknown) add(unknown_id, unknown_length);
          has_unknown = true;
          unknown_id = *model_unk_id_;
          unknown_length = 1;
        }
      }
    }
    if (has_unknown) add(unknown_id, unknown_length);

    struct Candidate {
      std::uint32_t rank;
      std::size_t position;
      std::int64_t new_id;
    };
    auto later = [](const Candidate& a, const Candidate& b) {
      return a.rank != b.rank ? a.rank > b.rank : a.position > b.position;
    };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> queue(later);
    for (std::size_t i = 0; i + 1 < symbols.size(); ++i)
      if (const detail::tok::MergeResult* m = find_merge(symbols[i].id, symbols[i + 1].id))
        queue.push({m->rank, i, m->new_id});
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      Symbol& current = symbols[top.position];
      if (current.length == 0 || current.next < 0) continue;
      const Symbol right = symbols[static_cast<std::size_t>(current.next)];
      const detail::tok::MergeResult* m = find_merge(current.id, right.id);
      if (!m || m->new_id != top.new_id) continue;  // stale entry
      symbols[static_cast<std::size_t>(current.next)].length = 0;
      current.id = top.new_id;
      current.length += right.length;
      current.next = right.next;
      if (right.next >= 0)
        symbols[static_cast<std::size_t>(right.next)].prev =
            static_cast<std::ptrdiff_t>(top.position);
      if (current.prev >= 0) {
        const Symbol& left = symbols[static_cast<std::size_t>(current.prev)];
        if (const detail::tok::MergeResult* lm = find_merge(left.id, current.id))
          queue.push({lm->rank, static_cast<std::size_t>(current.prev), lm->new_id});
      }
      if (current.next >= 0) {
        const Symbol& next = symbols[static_cast<std::size_t>(current.next)];
        if (const detail::tok::MergeResult* rm = find_merge(current.id, next.id))
          queue.push({rm->rank, top.position, rm->new_id});
      }
    }
    std::vector<detail::tok::Piece> result;
    for (const Symbol& sym : symbols)
      if (sym.length != 0) result.push_back({sym.id, id_to_token(sym.id)});
    out.insert(out.end(), result.begin(), result.end());
    cache_->store(key, std::move(result));
  }

  /// ByteLevel pre-tokenizer + BPE on a piece of text without added tokens.
  void pre_tokenize_and_model(std::u32string text, std::vector<detail::tok::Piece>& out) const {
    if (options_.add_prefix_space && text.front() != U' ') text.insert(text.begin(), U' ');
    std::string part;
    for (std::size_t i = 0; i < text.size();) {
      const std::size_t end =
          options_.use_regex ? detail::tok::gpt2_match_end(text, i) : text.size();
      part.clear();
      for (std::size_t k = i; k < end; ++k) unicode::append_utf8(part, text[k]);
      bpe(part, out);
      i = end;
    }
  }

  std::vector<detail::tok::Piece> tokenize_to_pieces(std::string_view text) const {
    std::vector<detail::tok::Piece> out;
    for (detail::tok::Segment& raw : added_.split(unicode::decode_utf8(text), false)) {
      if (raw.token) {
        out.push_back({raw.token->id, raw.token->content});
        continue;
      }
      for (detail::tok::Segment& seg : added_.split(raw.text, true)) {
        if (seg.token) {
          out.push_back({seg.token->id, seg.token->content});
        } else {
          pre_tokenize_and_model(std::move(seg.text), out);
        }
      }
    }
    return out;
  }

  detail::tok::Vocabulary vocab_;
  RobertaTokenizerOptions options_;
  std::unordered_map<std::uint64_t, detail::tok::MergeResult> merges_;
  std::optional<std::int64_t> model_unk_id_;
  detail::tok::AddedTokenMatcher added_;
  detail::tok::PostProcessor processor_;
  detail::tok::Piece pad_;
  std::int64_t cls_id_ = 0, sep_id_ = 0;
  std::array<std::string, 256> byte_string_;
  std::shared_ptr<detail::tok::BpeCache> cache_;
};

}  // namespace kadapter::io
