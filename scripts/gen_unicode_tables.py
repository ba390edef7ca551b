#!/usr/bin/env python3
"""Generate include/kadapter/io/unicode_tables.hpp, the Unicode data of the tokenizers.

The tables come from Python's `unicodedata` (the Unicode version is recorded in the header):

  * general categories of every code point (RoBERTa's byte-level pre-tokeniser: \\p{L}, \\p{N});
  * the White_Space property (Rust's char::is_whitespace, Oniguruma's \\s);
  * the lower-case mapping of every code point as Python's str.lower() / Rust's
    char::to_lowercase() give it for a single character (U+0130 becomes two code points);
  * canonical decompositions (NFD, Hangul syllables excepted: they are algorithmic) and
    canonical combining classes, for BERT's accent stripping.

HuggingFace `tokenizers` (the Rust library behind the fast tokenizers) does not use one Unicode
version throughout. Its BERT normaliser and pre-tokeniser take "control" (Cc, Cf, Co),
"punctuation" (P*) and "non-spacing mark" (Mn) from the unicode_categories crate, whose tables
are Unicode 8.0; its NFD comes from unicode-normalization-alignments, Unicode 9.0. To be
identical to it, this script asks the installed `tokenizers` package about every code point and
records where it differs from the `unicodedata` view; the header lists those exceptions. The
byte-level regex (Oniguruma) and the lower-casing agree with `unicodedata` on every code point;
the script checks that too and stops if a future `tokenizers` changes it.

Requirements: Python 3 and the `tokenizers` package (tested with 0.15.2, Python 3.11 whose
unicodedata is Unicode 14.0.0). Run from the repository root:

    python3 scripts/gen_unicode_tables.py [--output include/kadapter/io/unicode_tables.hpp]
"""

import argparse
import os
import sys
import unicodedata

try:
    import tokenizers
    from tokenizers import normalizers, pre_tokenizers
except ImportError:  # pragma: no cover - a clear message instead of a traceback
    sys.exit("gen_unicode_tables.py needs the `tokenizers` package (pip install tokenizers)")

MAX_CODE_POINT = 0x10FFFF
SURROGATES = range(0xD800, 0xE000)
HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3

# Order of the category codes in the generated table; unicode.hpp's enum follows it.
CATEGORIES = [
    "Cn", "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps",
    "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co",
]
PUNCTUATION = {"Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"}
ASCII_PUNCTUATION = set('!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~')


def code_points():
    """Every Unicode scalar value (no surrogates: HF's input is a Rust string)."""
    for cp in range(MAX_CODE_POINT + 1):
        if cp not in SURROGATES:
            yield cp


def white_space(cp):
    """The White_Space property. str.isspace() adds U+001C..U+001F, which are not White_Space."""
    return chr(cp).isspace() and not 0x1C <= cp <= 0x1F


def to_ranges(members):
    """Sorted code points -> list of inclusive (first, last) runs."""
    runs = []
    for cp in sorted(members):
        if runs and runs[-1][1] + 1 == cp:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp])
    return [tuple(r) for r in runs]


def describe(cps):
    """Short human-readable list of code points as ranges, for the header's comments."""
    parts = []
    for first, last in to_ranges(cps):
        parts.append(f"U+{first:04X}" if first == last else f"U+{first:04X}..U+{last:04X}")
    return ", ".join(parts) if parts else "none"


# --------------------------------------------------------------------------------------------
# What HuggingFace tokenizers does with each code point.

def probe_bert_sets():
    """HF's BERT control, punctuation and non-spacing-mark sets, and their differences."""
    clean = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    strip = normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    nfd = normalizers.NFD()
    bert_pre = pre_tokenizers.BertPreTokenizer()

    other, punctuation, nonspacing = set(), set(), set()
    exceptions = {"other": set(), "punctuation": set(), "nonspacing": set()}
    for cp in code_points():
        c = chr(cp)
        category = unicodedata.category(c)
        # Control: clean_text drops NUL, U+FFFD and Cc/Cf/Co except \t \n \r.
        if cp not in (0, 0xFFFD, 0x09, 0x0A, 0x0D):
            hf = clean.normalize_str(c) == ""
            ucd = category in ("Cc", "Cf", "Co")
            if hf:
                other.add(cp)
            if hf != ucd:
                exceptions["other"].add(cp)
        elif category in ("Cc", "Cf", "Co"):
            other.add(cp)  # same class for the table; the C++ code handles these itself
        # Punctuation: BertPreTokenizer isolates ASCII punctuation and P*.
        pieces = len(bert_pre.pre_tokenize_str("a" + c + "a"))
        if not white_space(cp):
            hf = pieces == 3
            ucd = category in PUNCTUATION or c in ASCII_PUNCTUATION
            if hf and c not in ASCII_PUNCTUATION:
                punctuation.add(cp)
            if hf != ucd:
                exceptions["punctuation"].add(cp)
        # Non-spacing marks: observable on characters that NFD leaves alone.
        if nfd.normalize_str(c) == c:
            hf = strip.normalize_str(c) == ""
            ucd = category == "Mn"
        else:
            hf = ucd = category == "Mn"  # never seen after NFD: keep the unicodedata value
        if hf:
            nonspacing.add(cp)
        if hf != ucd:
            exceptions["nonspacing"].add(cp)
    return other, punctuation, nonspacing, exceptions


def probe_decompositions():
    """Full canonical decompositions as HF's NFD gives them (Hangul syllables excepted)."""
    nfd = normalizers.NFD()
    table, exceptions = {}, set()
    for cp in code_points():
        if HANGUL_FIRST <= cp <= HANGUL_LAST:
            continue
        c = chr(cp)
        ucd = unicodedata.normalize("NFD", c)
        hf = nfd.normalize_str(c)
        if hf != ucd:
            exceptions.add(cp)
        if hf != c:
            table[cp] = [ord(x) for x in hf]
    return table, exceptions


def probe_combining_classes():
    """Canonical combining classes as HF's NFD orders marks; returns ({cp: ccc}, exceptions)."""
    nfd = normalizers.NFD()
    low, high = "\u0334", "\u0301"  # combining classes 1 and 230
    table, exceptions = {}, set()
    for cp in code_points():
        ccc = unicodedata.combining(chr(cp))
        if ccc == 0:
            continue
        # A mark of class k > 1 moves behind a following class-1 mark; a class-1 mark moves in
        # front of a preceding class-230 mark. A mark HF does not know has class 0: no move.
        probe = "a" + chr(cp) + low if ccc > 1 else "a" + high + chr(cp)
        if nfd.normalize_str(probe) == unicodedata.normalize("NFD", probe):
            table[cp] = ccc
        else:
            exceptions.add(cp)
    return table, exceptions


def check_lowercase_and_regex_classes():
    """HF's lower-casing and byte-level regex classes must equal unicodedata's everywhere."""
    lower = normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bad = []
    for cp in code_points():
        c = chr(cp)
        if lower.normalize_str(c) != c.lower():
            bad.append(f"lowercase U+{cp:04X}")
        category = unicodedata.category(c)
        if white_space(cp):
            expected = "S"
        elif category[0] in "LN":
            expected = category[0]
        else:
            expected = "O"
        for prefix, cls in (("a", "L"), ("1", "N"), ("!", "O")):
            if len(byte_level.pre_tokenize_str(prefix + c)) == 1:
                got = cls
                break
        else:
            got = "S"
        if got != expected:
            bad.append(f"byte-level class of U+{cp:04X}: tokenizers {got}, unicodedata {expected}")
    if bad:
        sys.exit("tokenizers disagrees with unicodedata:\n  " + "\n  ".join(bad[:50]))


# --------------------------------------------------------------------------------------------
# Output.

def emit_list(values, per_line, fmt):
    lines = []
    for i in range(0, len(values), per_line):
        lines.append("    " + " ".join(fmt(v) + "," for v in values[i:i + per_line]))
    return "\n".join(lines)


def emit_ranges(name, ranges, doc):
    body = emit_list(ranges, 4, lambda r: f"{{0x{r[0]:05X}, 0x{r[1]:05X}}}")
    return (f"/// {doc}\ninline constexpr CodePointRange {name}[] = {{\n{body}\n}};\n")


def wrap_comment(text, width=96):
    words, lines, line = text.split(), [], "//"
    for w in words:
        if len(line) + 1 + len(w) > width:
            lines.append(line)
            line = "//"
        line += " " + w
    lines.append(line)
    return "\n".join(lines)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "..", "include", "kadapter", "io", "unicode_tables.hpp")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=default_out)
    args = parser.parse_args()

    version = unicodedata.unidata_version
    print(f"unicodedata {version}, tokenizers {tokenizers.__version__}; probing every code point")

    check_lowercase_and_regex_classes()

    # General categories as runs covering 0..0x10FFFF.
    starts, codes = [], []
    previous = None
    for cp in range(MAX_CODE_POINT + 1):
        cat = unicodedata.category(chr(cp))
        if cat != previous:
            starts.append(cp)
            codes.append(CATEGORIES.index(cat))
            previous = cat

    spaces = [cp for cp in range(0x3001) if white_space(cp)]

    lower_single, lower_multi = [], []
    for cp in code_points():
        low = chr(cp).lower()
        if low == chr(cp):
            continue
        if len(low) == 1:
            lower_single.append((cp, ord(low)))
        else:
            lower_multi.append((cp, [ord(x) for x in low]))

    decompositions, nfd_exceptions = probe_decompositions()
    ccc, ccc_exceptions = probe_combining_classes()
    other, punctuation, nonspacing, bert_exceptions = probe_bert_sets()

    ccc_runs = []
    for cp in sorted(ccc):
        if ccc_runs and ccc_runs[-1][1] + 1 == cp and ccc_runs[-1][2] == ccc[cp]:
            ccc_runs[-1][1] = cp
        else:
            ccc_runs.append([cp, cp, ccc[cp]])

    pool, index = [], []
    for cp in sorted(decompositions):
        seq = decompositions[cp]
        index.append((cp, len(pool), len(seq)))
        pool.extend(seq)

    lower_runs = []  # [first, last, stride, delta]
    for cp, low in lower_single:
        delta = low - cp
        if lower_runs:
            run = lower_runs[-1]
            step = cp - run[1]
            if run[3] == delta and (run[2] == step or (run[0] == run[1] and step in (1, 2))):
                run[1], run[2] = cp, step
                continue
        lower_runs.append([cp, cp, 1, delta])

    multi_pool, multi_index = [], []
    for cp, seq in lower_multi:
        multi_index.append((cp, len(multi_pool), len(seq)))
        multi_pool.extend(seq)

    out = []
    out.append(f"""/// @file unicode_tables.hpp
/// @brief Unicode {version} data for the tokenizers, generated by scripts/gen_unicode_tables.py.
///
/// Do not edit: rerun `python3 scripts/gen_unicode_tables.py`. Sources: Python's `unicodedata`
/// (Unicode {version}), and HuggingFace `tokenizers` {tokenizers.__version__} for the places
/// where it uses older Unicode data (listed below). unicode.hpp reads these tables.
#pragma once

#include <cstdint>
#include <string_view>

namespace kadapter::io::detail::unicode_data {{

/// Unicode version of `unicodedata` that produced the tables.
inline constexpr std::string_view unicode_version = "{version}";
/// Version of HuggingFace `tokenizers` whose behaviour the BERT and NFD tables reproduce.
inline constexpr std::string_view tokenizers_version = "{tokenizers.__version__}";

/// An inclusive range of code points.
struct CodePointRange {{
  char32_t first;
  char32_t last;
}};

/// General-category codes, in the order of `category_code`'s values.
inline constexpr std::string_view category_names[] = {{
{emit_list(CATEGORIES, 15, lambda c: f'"{c}"')}
}};

/// First code point of each run of equal general category; runs cover 0..0x10FFFF.
inline constexpr char32_t category_run_start[] = {{
{emit_list(starts, 10, lambda v: f"0x{v:05X}")}
}};

/// General category of each run (an index into category_names).
inline constexpr std::uint8_t category_code[] = {{
{emit_list(codes, 24, lambda v: str(v))}
}};

/// The White_Space property (all below U+3001).
inline constexpr char32_t white_space[] = {{
{emit_list(spaces, 10, lambda v: f"0x{v:04X}")}
}};

/// Code points first, first + stride, ..., up to last, each lower-casing to itself + delta.
struct LowercaseRun {{
  char32_t first;
  char32_t last;
  std::uint8_t stride;
  std::int32_t delta;
}};

/// Lower-case mappings to one code point (str.lower() of the single character), as runs.
inline constexpr LowercaseRun lowercase_single[] = {{
{emit_list(lower_runs, 3, lambda r: f"{{0x{r[0]:05X}, 0x{r[1]:05X}, {r[2]}, {r[3]}}}")}
}};

/// A code point and where its expansion starts in a pool, and how long it is.
struct Expansion {{
  char32_t from;
  std::uint16_t offset;
  std::uint8_t length;
}};

/// Lower-case mappings to several code points (U+0130 becomes "i" + U+0307).
inline constexpr Expansion lowercase_multi[] = {{
{emit_list(multi_index, 4, lambda e: f"{{0x{e[0]:05X}, {e[1]}, {e[2]}}}")}
}};

/// Code points of lowercase_multi's expansions.
inline constexpr char32_t lowercase_multi_pool[] = {{
{emit_list(multi_pool, 10, lambda v: f"0x{v:04X}")}
}};

{wrap_comment("Exceptions to Unicode " + version + " canonical decompositions, as HF's NFD "
              "(unicode-normalization-alignments, Unicode 9.0) has them: "
              + describe(nfd_exceptions) + ".")}

/// Full canonical decompositions (Hangul syllables excepted), sorted by code point.
inline constexpr Expansion decomposition[] = {{
{emit_list(index, 4, lambda e: f"{{0x{e[0]:05X}, {e[1]}, {e[2]}}}")}
}};

/// Code points of the decompositions.
inline constexpr char32_t decomposition_pool[] = {{
{emit_list(pool, 10, lambda v: f"0x{v:05X}")}
}};

/// A range of code points with the same non-zero canonical combining class.
struct CombiningClassRange {{
  char32_t first;
  char32_t last;
  std::uint8_t combining_class;
}};

{wrap_comment("Marks with a Unicode " + version + " combining class that HF's NFD treats as class "
              "0 (added after Unicode 9.0): " + describe(ccc_exceptions) + ".")}

/// Non-zero canonical combining classes.
inline constexpr CombiningClassRange combining_class[] = {{
{emit_list(ccc_runs, 3, lambda r: f"{{0x{r[0]:05X}, 0x{r[1]:05X}, {r[2]}}}")}
}};

{wrap_comment("HF's BERT normaliser drops Cc, Cf and Co as of Unicode 8.0. Differences from "
              "Unicode " + version + ": " + describe(bert_exceptions['other']) + ".")}

""")
    out.append(emit_ranges("bert_other", to_ranges(other),
                           "Cc, Cf and Co as HF's BERT normaliser sees them."))
    out.append("\n" + wrap_comment(
        "HF's BERT pre-tokeniser isolates ASCII punctuation and P* as of Unicode 8.0. "
        "Differences from Unicode " + version + " (P* or ASCII punctuation): "
        + describe(bert_exceptions["punctuation"]) + ".") + "\n\n")
    out.append(emit_ranges("bert_punctuation", to_ranges(punctuation),
                           "P* as HF's BERT pre-tokeniser sees it (ASCII punctuation apart)."))
    out.append("\n" + wrap_comment(
        "HF's BERT accent stripping drops Mn as of Unicode 8.0. Differences from Unicode "
        + version + ": " + describe(bert_exceptions["nonspacing"]) + ".") + "\n\n")
    out.append(emit_ranges("bert_nonspacing_mark", to_ranges(nonspacing),
                           "Mn as HF's BERT accent stripping sees it."))
    out.append("\n}  // namespace kadapter::io::detail::unicode_data\n")

    text = "".join(out)
    with open(args.output, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"wrote {args.output}: {len(starts)} category runs, {len(lower_single)} lower-case "
          f"pairs in {len(lower_runs)} runs, {len(index)} decompositions, "
          f"{len(ccc_runs)} combining-class runs; "
          f"HF exceptions: {len(bert_exceptions['other'])} control, "
          f"{len(bert_exceptions['punctuation'])} punctuation, "
          f"{len(bert_exceptions['nonspacing'])} Mn, {len(nfd_exceptions)} NFD, "
          f"{len(ccc_exceptions)} combining class")


if __name__ == "__main__":
    main()
