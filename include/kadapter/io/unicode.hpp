/// @file unicode.hpp
/// @brief UTF-8, general categories, lower-casing and NFD for the tokenizers.
///
/// The data come from unicode_tables.hpp, generated from Python's `unicodedata` (see
/// `unicode_version()`). Where HuggingFace `tokenizers` uses older Unicode data (its BERT
/// normaliser's control, punctuation and mark classes are Unicode 8.0, its NFD Unicode 9.0),
/// the functions named `bert_*` and `nfd` follow HuggingFace, so that token ids are identical.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

#include "kadapter/core/error.hpp"
#include "kadapter/io/unicode_tables.hpp"

namespace kadapter::io::unicode {

/// @brief Unicode general category (the two-letter codes of UnicodeData.txt).
enum class Category : std::uint8_t {
  // clang-format off
  Cn, Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps,
  Pe, Pi, Pf, Po, Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co,
  // clang-format on
};

namespace detail {

namespace data = kadapter::io::detail::unicode_data;

constexpr bool category_order_matches_table() {
  constexpr std::string_view names[] = {"Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd",
                                        "Nl", "No", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm",
                                        "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co"};
  if (std::size(names) != std::size(data::category_names)) return false;
  for (std::size_t i = 0; i < std::size(names); ++i)
    if (names[i] != data::category_names[i]) return false;
  return true;
}
static_assert(category_order_matches_table(),
              "Category must list the codes in the order of unicode_tables.hpp");
static_assert(std::size(data::category_run_start) == std::size(data::category_code));

/// Whether c lies in one of the sorted, disjoint ranges.
template <std::size_t N>
constexpr bool in_ranges(const data::CodePointRange (&ranges)[N], char32_t c) noexcept {
  const auto* it =
      std::upper_bound(std::begin(ranges), std::end(ranges), c,
                       [](char32_t v, const data::CodePointRange& r) { return v < r.first; });
  return it != std::begin(ranges) && c <= std::prev(it)->last;
}

/// The table entry for c in a table of Expansion sorted by `from`, or nullptr.
template <std::size_t N>
constexpr const data::Expansion* find_expansion(const data::Expansion (&table)[N],
                                                char32_t c) noexcept {
  const auto* it =
      std::lower_bound(std::begin(table), std::end(table), c,
                       [](const data::Expansion& e, char32_t v) { return e.from < v; });
  return it != std::end(table) && it->from == c ? it : nullptr;
}

inline constexpr char32_t hangul_first = 0xAC00;
inline constexpr char32_t hangul_leading_first = 0x1100;
inline constexpr char32_t hangul_vowel_first = 0x1161;
inline constexpr char32_t hangul_trailing_base = 0x11A7;
inline constexpr char32_t hangul_trailing_count = 28;
inline constexpr char32_t hangul_block = 21 * 28;  // vowels x trailing consonants
inline constexpr char32_t hangul_count = 19 * hangul_block;

}  // namespace detail

/// @brief Version of the Unicode Character Database behind the tables ("14.0.0").
inline constexpr std::string_view unicode_version() noexcept {
  return detail::data::unicode_version;
}

/// @brief Version of HuggingFace `tokenizers` whose Unicode quirks the `bert_*` tables follow.
inline constexpr std::string_view hf_tokenizers_version() noexcept {
  return detail::data::tokenizers_version;
}

/// @brief True for a Unicode scalar value: at most U+10FFFF and not a surrogate.
constexpr bool is_scalar_value(char32_t c) noexcept {
  return c <= 0x10FFFF && !(c >= 0xD800 && c <= 0xDFFF);
}

// ---- UTF-8 ------------------------------------------------------------------------------

/// @brief Decode UTF-8 into code points.
///
/// HuggingFace works on Rust strings, which are valid UTF-8 by construction, so malformed input
/// (a stray continuation byte, a truncated sequence, an overlong form, a surrogate or a value
/// above U+10FFFF) has no HuggingFace behaviour to copy and is rejected.
/// @param bytes the UTF-8 text
/// @param source what the text is, for the error message (a file name, "text", ...)
/// @throws Error naming the source and the byte offset of the first malformed sequence
inline std::u32string decode_utf8(std::string_view bytes, std::string_view source = "text") {
  std::u32string out;
  out.reserve(bytes.size());
  const std::size_t n = bytes.size();
  std::size_t i = 0;
  auto fail = [&](std::size_t offset, const char* what) {
    throw Error(std::string(source) + ": invalid UTF-8 at byte offset " + std::to_string(offset) +
                ": " + what);
  };
  while (i < n) {
    const auto lead = static_cast<unsigned char>(bytes[i]);
    if (lead < 0x80) {
      out.push_back(lead);
      ++i;
      continue;
    }
    std::size_t length = 0;
    char32_t c = 0;
    char32_t minimum = 0;
    if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2, c = lead & 0x1F, minimum = 0x80;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3, c = lead & 0x0F, minimum = 0x800;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4, c = lead & 0x07, minimum = 0x10000;
    } else if (lead >= 0x80 && lead <= 0xBF) {
      fail(i, "continuation byte without a lead byte");
    } else {
      fail(i, "byte that never starts a character (0xC0, 0xC1 or above 0xF4)");
    }
    if (i + length > n) fail(i, "sequence cut short by the end of the text");
    for (std::size_t k = 1; k < length; ++k) {
      const auto b = static_cast<unsigned char>(bytes[i + k]);
      if ((b & 0xC0) != 0x80) fail(i, "sequence cut short by a byte that is not a continuation");
      c = (c << 6) | (b & 0x3F);
    }
    if (c < minimum) fail(i, "overlong encoding");
    if (!is_scalar_value(c)) fail(i, "surrogate or value above U+10FFFF");
    out.push_back(c);
    i += length;
  }
  return out;
}

/// @brief Append the UTF-8 form of one scalar value (anything else becomes U+FFFD).
inline void append_utf8(std::string& out, char32_t c) {
  if (!is_scalar_value(c)) c = 0xFFFD;
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

/// @brief Encode code points as UTF-8. @see append_utf8
inline std::string encode_utf8(std::u32string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char32_t c : text) append_utf8(out, c);
  return out;
}

/// @brief Number of bytes of the UTF-8 form of a scalar value.
constexpr std::size_t utf8_length(char32_t c) noexcept {
  return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
}

// ---- properties -------------------------------------------------------------------------

/// @brief General category of a code point (Cn for unassigned ones and for non-scalars).
constexpr Category general_category(char32_t c) noexcept {
  if (c > 0x10FFFF) return Category::Cn;
  const auto& starts = detail::data::category_run_start;
  const auto* it = std::upper_bound(std::begin(starts), std::end(starts), c);
  const auto run = static_cast<std::size_t>(std::prev(it) - std::begin(starts));
  return static_cast<Category>(detail::data::category_code[run]);
}

/// @brief Letter: Lu, Ll, Lt, Lm or Lo (the regex class \\p{L}).
constexpr bool is_letter(char32_t c) noexcept {
  const Category k = general_category(c);
  return k >= Category::Lu && k <= Category::Lo;
}

/// @brief Number: Nd, Nl or No (the regex class \\p{N}).
constexpr bool is_number(char32_t c) noexcept {
  const Category k = general_category(c);
  return k >= Category::Nd && k <= Category::No;
}

/// @brief Punctuation: Pc, Pd, Ps, Pe, Pi, Pf or Po.
constexpr bool is_punctuation(char32_t c) noexcept {
  const Category k = general_category(c);
  return k >= Category::Pc && k <= Category::Po;
}

/// @brief The White_Space property: Rust's `char::is_whitespace`, the regex class \\s.
constexpr bool is_white_space(char32_t c) noexcept {
  if (c > 0x3000) return false;
  const auto& table = detail::data::white_space;
  return std::binary_search(std::begin(table), std::end(table), c);
}

// ---- lower-casing -----------------------------------------------------------------------

/// @brief Append the full lower-case mapping of c, as Rust's `char::to_lowercase` and
/// Python's `str.lower` of the single character give it (U+0130 "İ" becomes "i" + U+0307;
/// a capital sigma always becomes "σ": there is no word context).
inline void append_lowercase(std::u32string& out, char32_t c) {
  using namespace detail;
  if (c < 0x80) {
    out.push_back(c >= U'A' && c <= U'Z' ? c + 32 : c);
    return;
  }
  if (const data::Expansion* e = find_expansion(data::lowercase_multi, c)) {
    out.append(&data::lowercase_multi_pool[e->offset], e->length);
    return;
  }
  const auto& runs = data::lowercase_single;
  const auto* it =
      std::upper_bound(std::begin(runs), std::end(runs), c,
                       [](char32_t v, const data::LowercaseRun& r) { return v < r.first; });
  if (it != std::begin(runs)) {
    const data::LowercaseRun& run = *std::prev(it);
    if (c <= run.last && (c - run.first) % run.stride == 0) {
      out.push_back(static_cast<char32_t>(static_cast<std::int64_t>(c) + run.delta));
      return;
    }
  }
  out.push_back(c);
}

/// @brief Lower-case every code point. @see append_lowercase
inline std::u32string to_lowercase(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) append_lowercase(out, c);
  return out;
}

// ---- canonical decomposition ------------------------------------------------------------

/// @brief Canonical combining class, as HuggingFace's NFD knows it (marks added after
/// Unicode 9.0 have class 0 there; the generated table lists them).
constexpr std::uint8_t combining_class(char32_t c) noexcept {
  using namespace detail;
  if (c < 0x300) return 0;
  const auto& table = data::combining_class;
  const auto* it =
      std::upper_bound(std::begin(table), std::end(table), c,
                       [](char32_t v, const data::CombiningClassRange& r) { return v < r.first; });
  if (it == std::begin(table)) return 0;
  const data::CombiningClassRange& r = *std::prev(it);
  return c <= r.last ? r.combining_class : 0;
}

/// @brief Append the full canonical decomposition of c (c itself when it has none), Hangul
/// syllables included.
inline void append_canonical_decomposition(std::u32string& out, char32_t c) {
  using namespace detail;
  if (c < 0xC0) {
    out.push_back(c);
    return;
  }
  if (c >= hangul_first && c < hangul_first + hangul_count) {
    const char32_t index = c - hangul_first;
    out.push_back(hangul_leading_first + index / hangul_block);
    out.push_back(hangul_vowel_first + (index % hangul_block) / hangul_trailing_count);
    if (const char32_t trailing = index % hangul_trailing_count; trailing != 0)
      out.push_back(hangul_trailing_base + trailing);
    return;
  }
  if (const data::Expansion* e = find_expansion(data::decomposition, c)) {
    out.append(&data::decomposition_pool[e->offset], e->length);
    return;
  }
  out.push_back(c);
}

/// @brief Canonical decomposition (NFD): decompose, then put each run of marks with a non-zero
/// combining class in stable order of class. Follows HuggingFace's NFD data (see the tables).
inline std::u32string nfd(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size() + text.size() / 4);
  for (char32_t c : text) append_canonical_decomposition(out, c);
  std::size_t i = 0;
  while (i < out.size()) {
    if (combining_class(out[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t end = i + 1;
    while (end < out.size() && combining_class(out[end]) != 0) ++end;
    if (end - i > 1)
      std::stable_sort(out.begin() + static_cast<std::ptrdiff_t>(i),
                       out.begin() + static_cast<std::ptrdiff_t>(end), [](char32_t a, char32_t b) {
                         return combining_class(a) < combining_class(b);
                       });
    i = end;
  }
  return out;
}

// ---- HuggingFace BERT character classes -------------------------------------------------

/// @brief Cc, Cf or Co as HuggingFace's BertNormalizer sees them (Unicode 8.0): the
/// characters its clean_text step removes (it keeps \\t, \\n and \\r, and removes NUL and
/// U+FFFD too; see BertTokenizer).
constexpr bool is_bert_other(char32_t c) noexcept {
  return detail::in_ranges(detail::data::bert_other, c);
}

/// @brief The punctuation that HuggingFace's BertPreTokenizer isolates: ASCII punctuation
/// (including symbols such as $, +, ^ and `) and P* as of Unicode 8.0.
constexpr bool is_bert_punctuation(char32_t c) noexcept {
  if (c < 0x80)
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
           (c >= 0x7B && c <= 0x7E);
  return detail::in_ranges(detail::data::bert_punctuation, c);
}

/// @brief Mn as HuggingFace's BERT accent stripping sees it (Unicode 8.0).
constexpr bool is_bert_nonspacing_mark(char32_t c) noexcept {
  return c >= 0x300 && detail::in_ranges(detail::data::bert_nonspacing_mark, c);
}

}  // namespace kadapter::io::unicode
