#!/usr/bin/env python3
"""Build the verse-aligned Spanish→English Bible corpus in data/bible-es-en/.

Sources (Debian packages, read with pysword):
  * sword-text-sparv -> SWORD module spaRV1909eb  (Reina-Valera 1909, Spanish)
  * sword-text-web   -> SWORD module engWEB2015eb (World English Bible, English)

Both texts are public domain.  Verses are aligned by reference (book, chapter,
verse) in KJV versification.  The OSIS markup is cleaned here (pysword's
clean=True glues words around footnotes), a few known versification
differences of the Spanish module are mapped back to KJV numbering, and the
pairs are split by whole books into train / validation / test.

Usage:
    apt-get install sword-text-sparv sword-text-web
    pip install pysword
    python scripts/prepare_bible.py [--sword-path /usr/share/sword] [--out data/bible-es-en]

The output is deterministic: running it twice gives byte-identical files.
See data/bible-es-en/README.md for the details of every rule below.
"""

import argparse
import collections
import gzip
import html
import json
import re
import sys
import unicodedata
from pathlib import Path

ES_MODULE = "spaRV1909eb"
EN_MODULE = "engWEB2015eb"

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data" / "bible-es-en"

# Whole-book split (OSIS abbreviations).  Everything else is train.
VALIDATION_BOOKS = ("Josh", "Phil", "Jas")
TEST_BOOKS = ("Judg", "Ruth", "Gal", "1Pet")

# --------------------------------------------------------------------------
# OSIS markup cleaning
# --------------------------------------------------------------------------

# Placeholder for removed markup.  Resolved to a space or to nothing once all
# tags are gone (see _resolve_sentinels), so removed footnotes never glue two
# words together and never leave a space before closing punctuation.
SENT = "\x00"

# Elements removed together with their content (footnotes, cross references,
# Song of Songs speaker labels).  Non-canonical <title>s are handled in
# _strip_titles.
DROP_WITH_CONTENT = ("note", "speaker")
# Inline elements: tag removed, text kept.
INLINE_TAGS = {
    "w", "transChange", "divineName", "seg", "hi", "q", "foreign", "name",
    "rdg", "catchWord", "reference", "added", "inscription",
}
# Block / milestone elements: replaced by a word boundary.
BLOCK_TAGS = {
    "div", "l", "lg", "p", "chapter", "verse", "milestone", "br", "lb",
    "list", "item", "title", "speaker", "note",
}

CLOSING_PUNCT = set(",.;:!?)]”’»")
OPENING_PUNCT = set("([“‘¡¿«")

TAG_RE = re.compile(r"<(/?)([A-Za-z][\w:]*)\b[^>]*?(/?)>")
PREVERSE_START_RE = re.compile(
    r'<div\b[^>]*subType="x-preverse"[^>]*\bsID="[^"]*"[^>]*/>')
TITLE_RE = re.compile(r"<title\b([^>]*)>(.*?)</title>", re.S)

# Spanish enclitic pronouns (sácalo, díjole, dadme ...).
ENCLITIC_RE = re.compile(r"(?:me|te|se|le|les|lo|los|la|las|nos|os)+")
VOWELS = "aeiouáéíóúü"
# Words whose written accent is regular although they look like a verb whose
# enclitic pronoun was split off (interrogatives, demonstratives).
ACCENTED_NON_VERBS = {
    "qué", "cuánto", "cuánta", "cuántos", "cuántas", "cómo", "dónde",
    "cuándo", "quién", "quiénes", "cuál", "cuáles", "éste", "ésta", "ése",
    "ésa", "éstos", "éstas", "ésos", "ésas", "aquél", "aquélla", "aquéllos",
    "aquéllas", "sólo",
}
# Nouns that look like plural imperatives (-ad, -ed, -id).
NOUNS_IN_D = {
    "ciudad", "verdad", "piedad", "maldad", "bondad", "heredad", "soledad",
    "sed", "red", "pared", "merced", "huésped", "césped", "david", "madrid",
}
MONOSYLLABIC_IMPERATIVES = {"di", "dí", "da", "haz", "ve", "pon", "ten", "sal", "ven"}


def _looks_like_split_enclitic(left, right):
    """True when the Spanish module split a verb from its enclitic pronoun.

    spaRV1909eb writes translator additions as <transChange> without spaces
    around them, e.g. "<w>sáca</w><transChange>lo</transChange>" (= sácalo)
    but also "<w>de Najoth</w><transChange>que es</transChange><w>en Rama</w>"
    (= "de Najoth que es en Rama").  Only the first kind is glued.
    """
    r = right.lower()
    if not ENCLITIC_RE.fullmatch(r):
        return False
    w = left.lower()
    if w in ACCENTED_NON_VERBS:
        return False
    if w in MONOSYLLABIC_IMPERATIVES:
        return True
    if w.endswith("ndo"):  # gerund: diciéndole
        return True
    if len(w) >= 3 and re.search(r"[aeií]r$", w):  # infinitive: sacarla
        return True
    if re.search(r"[aeií]d$", w) and w not in NOUNS_IN_D and not re.search(
            r"(?:idad|edad|tad)$", w):
        return True  # plural imperative: dadme, guardadlo
    # A written accent on the penultimate syllable of a word ending in a
    # vowel, n or s is not regular Spanish spelling: it is the accent of the
    # verb + enclitic word that the module split (sáca|lo, díjo|le).
    m = re.search("[áéíóú]", w)
    if m and w[-1] in VOWELS + "ns":
        nxt = w[m.end():m.end() + 1]
        hiatus = w[m.start()] in "íú" and nxt and nxt in VOWELS
        groups = re.findall(f"[{VOWELS}]+", w[m.end():])
        if not hiatus and len(groups) == 1:
            return True
    return False


def _fix_inline_boundaries(raw, counters):
    """Insert a space where two words touch only through inline tags."""

    def repl(m):
        left, tags = m.group(1), m.group(2)
        right = m.group(3)
        if _looks_like_split_enclitic(left, right):
            counters["es_enclitics_glued"] += 1
            return left + tags
        counters["inline_tag_boundaries_spaced"] += 1
        return left + tags + " "

    return re.sub(
        r"([^\W\d_]+)((?:</?(?:w|transChange|divineName|hi|seg|foreign)\b[^>]*>)+)"
        r"(?=([^\W\d_]+))",
        repl, raw)


def _strip_titles(raw, counters):
    def repl(m):
        attrs, content = m.group(1), m.group(2)
        if 'canonical="true"' in attrs and 'type="psalm"' in attrs:
            counters["en_psalm_titles_kept"] += 1
            return SENT + content + SENT
        counters["noncanonical_titles_removed"] += 1
        return SENT

    raw = TITLE_RE.sub(repl, raw)
    return re.sub(r"<title\b[^>]*/>", SENT, raw)


def _resolve_sentinels(text):
    """Turn each run of whitespace/placeholders into one space or nothing.

    A run that contains a placeholder vanishes before closing punctuation
    (so "offspring,<note/> who" and "God<note/>created" both come out
    right) and after an opening bracket/quote when the run holds no real
    whitespace; otherwise it becomes a single space.  Whitespace that was
    really in the text (e.g. before an opening ¡ ¿ “ ‘) is never removed.
    """

    def repl(m):
        run = m.group(0)
        s = m.string
        nxt = s[m.end():m.end() + 1]
        prev = s[m.start() - 1:m.start()] if m.start() else ""
        if nxt in CLOSING_PUNCT and nxt:
            return ""
        if prev in OPENING_PUNCT and prev and not any(c.isspace() for c in run):
            return ""
        return " "

    return re.sub(r"[\s\x00]*\x00[\s\x00]*", repl, text)


def clean_osis(raw, ref, counters):
    """Clean the OSIS markup of one verse to plain text."""
    # The WEB module appends its whole glossary to Revelation 22:21.
    idx = raw.find('type="glossary"')
    if idx >= 0:
        raw = raw[:raw.rfind("<", 0, idx)]
        counters["glossary_cut"] += 1
    # A pre-verse milestone after the verse's own text starts the text of a
    # following verse that this versification has no slot for (the WEB's
    # Romans 14:24-26 doxology is stored inside Romans 14:23).  Cut it.
    for m in PREVERSE_START_RE.finditer(raw):
        scratch = collections.Counter()
        before = _markup_to_text(raw[:m.start()], ref, scratch)
        after = _markup_to_text(raw[m.start():], ref, scratch)
        if before and after:
            raw = raw[:m.start()]
            counters["folded_following_verse_cut"] += 1
            counters.setdefault("_folded_refs", []).append(ref)
            break
    return _markup_to_text(raw, ref, counters)


def _markup_to_text(raw, ref, counters):
    text = _fix_inline_boundaries(raw, counters)
    for name in DROP_WITH_CONTENT:
        text, n = re.subn(rf"<{name}\b[^>]*?/>", SENT, text)
        text, n2 = re.subn(rf"<{name}\b[^>]*>.*?</{name}>", SENT, text, flags=re.S)
        counters[f"{name}_elements_removed"] += n + n2
    text = _strip_titles(text, counters)

    def tag_repl(m):
        name = m.group(2)
        if name in INLINE_TAGS:
            return ""
        if name in BLOCK_TAGS:
            return SENT
        raise ValueError(f"{ref}: unknown OSIS element <{name}> in {raw!r}")

    text = TAG_RE.sub(tag_repl, text)
    if "<" in text or ">" in text:
        raise ValueError(f"{ref}: markup left after cleaning: {text!r}")
    text = html.unescape(text)
    text = _resolve_sentinels(text)
    text = unicodedata.normalize("NFC", text)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
                   for c in text)
    return re.sub(r"\s+", " ", text).strip()


# --------------------------------------------------------------------------
# Spanish-specific fixes
# --------------------------------------------------------------------------

# Reina-Valera appends the traditional (KJV-style) subscriptions to the last
# verse of the Pauline epistles and Hebrews; the WEB has none.  Cut from
# these phrases (each must be found right after "Amén.").
ES_SUBSCRIPTIONS = {
    "Rom 16:27": "Fué escrita de Corinto",
    "1Cor 16:24": "La primera á los Corintios",
    "2Cor 13:13": "La segunda Epístola á los Corintios",
    "Gal 6:18": "Enviada de Roma",
    "Eph 6:24": "Escrita de Roma á los Efesios",
    "Phil 4:23": "Escrita de Roma con Epafrodito",
    "Col 4:18": "Escrita de Roma á los Colosenses",
    "1Thess 5:28": "La primera epístola á los Tesalonicenses",
    "2Thess 3:18": "La segunda Epístola á los Tesalonicenses",
    "1Tim 6:21": "La primera epístola á Timoteo",
    "2Tim 4:22": "La segunda epístola á Timoteo",
    "Titus 3:15": "A Tito, el cual",
    "Phlm 1:25": "A Filemón fué enviada",
    "Heb 13:25": "Fué escrita á los Hebreos",
}

# Hebrew letter headings of Psalm 119 (both texts keep them, in capitals).
HEBREW_LETTERS = {
    "ALEPH", "BETH", "GIMEL", "DALETH", "HE", "VAU", "VAV", "ZAIN", "ZAYIN",
    "CHETH", "HETH", "TETH", "JOD", "YODH", "CAPH", "KAPH", "LAMED", "LAMEDH",
    "MEM", "NUN", "SAMECH", "SAMEKH", "AIN", "AYIN", "PE", "TZADDI", "TZADHE",
    "COPH", "KOPH", "QOPH", "RESH", "SCHIN", "SIN", "SHIN", "TAU", "TAV",
}

WORD_RE = re.compile(r"[^\W\d_]+")


def strip_subscription(ref, text, counters):
    phrase = ES_SUBSCRIPTIONS.get(ref)
    if phrase is None:
        return text
    idx = text.find(phrase)
    if idx < 0 or not text[:idx].rstrip().endswith("Amén."):
        raise ValueError(f"{ref}: subscription {phrase!r} not found in {text!r}")
    counters["es_subscriptions_removed"] += 1
    return text[:idx].rstrip()


def _sentence_initial(text, pos):
    before = text[:pos].rstrip()
    return not before or before[-1] in ".:;!?¡¿(" or bool(
        re.search(r"(?:^|\s)(?:%s)\.?$" % "|".join(HEBREW_LETTERS), before))


def build_case_model(texts):
    """Count lower-case vs. capitalised spellings of words in running text."""
    counts = collections.Counter()
    for text in texts:
        for m in WORD_RE.finditer(text):
            w = m.group(0)
            if w.isupper() or _sentence_initial(text, m.start()):
                continue
            counts[w] += 1
    return counts


def normalize_drop_cap(text, ref, case_counts, counters):
    """Undo the typographic capitals at the start of each chapter.

    Reina-Valera prints the first word(s) of every chapter in capitals
    ("EN el principio", "Y ACONTECIÓ", "Salmo de David. ¡OH Jehová").  The
    first run of all-capital words that starts a sentence in verse 1 is
    recased: its first word gets an initial capital, the others get the
    spelling that is more frequent elsewhere in the text, capitalised when
    unseen or tied (so "Y ACONTECIÓ" -> "Y aconteció" but "Y JEHOVÁ" ->
    "Y Jehová", "Y ACHAB" -> "Y Achab").
    """
    is_ps119 = ref.startswith("Ps 119:")
    words = list(WORD_RE.finditer(text))
    for i, m in enumerate(words):
        w = m.group(0)
        if len(w) < 2 or not w.isupper() or (is_ps119 and w in HEBREW_LETTERS):
            continue
        # extend back over single capital letters directly before (Y, E, A, Á)
        start = i
        while (start > 0 and len(words[start - 1].group(0)) == 1
               and words[start - 1].group(0).isupper()
               and text[words[start - 1].end():words[start].start()] == " "):
            start -= 1
        if not _sentence_initial(text, words[start].start()):
            return text
        end = i
        while (end + 1 < len(words) and words[end + 1].group(0).isupper()
               and text[words[end].end():words[end + 1].start()].strip() in ("", "-")
               and not (is_ps119 and words[end + 1].group(0) in HEBREW_LETTERS)):
            end += 1
        out = []
        last = 0
        for j in range(start, end + 1):
            wm = words[j]
            word = wm.group(0)
            lower = word.lower()
            title = word[0] + word[1:].lower()
            if j == start:
                new = title
            else:
                new = lower if case_counts[lower] > case_counts[title] else title
            out.append(text[last:wm.start()])
            out.append(new)
            last = wm.end()
        out.append(text[last:])
        counters["es_drop_caps_recased"] += 1
        return "".join(out)
    return text


# --------------------------------------------------------------------------
# Versification: where spaRV1909eb is not really in KJV numbering
# --------------------------------------------------------------------------
#
# The Spanish module is stored in KJV slots, but in a few chapters the
# Reina-Valera text follows its own (Hebrew/Vulgate-like) numbering: the
# chapter starts one verse earlier or later, and the verses that do not fit
# are either left empty or merged into the chapter's last slot.  Each KJV
# reference below names the Spanish slot(s) that hold its text; None means
# the Spanish text of that KJV verse is merged with a neighbour in one slot
# and cannot be separated, so the pair is dropped.  Found by aligning verse
# lengths and checked by eye.

ES_VERSIFICATION = {}


def _map(book, ch, v1, v2, es_ch, es_v1):
    for i, v in enumerate(range(v1, v2 + 1)):
        ES_VERSIFICATION[f"{book} {ch}:{v}"] = [f"{book} {es_ch}:{es_v1 + i}"]


def _join(book, ch, v, es_ch, es_vs):
    ES_VERSIFICATION[f"{book} {ch}:{v}"] = [f"{book} {es_ch}:{x}" for x in es_vs]


def _merged(book, ch, vs):
    for v in vs:
        ES_VERSIFICATION[f"{book} {ch}:{v}"] = None


# Numbers 12:16 = RV 13:1; RV 13:33 holds KJV 13:32-33.
_map("Num", 12, 16, 16, 13, 1); _map("Num", 13, 1, 31, 13, 2); _merged("Num", 13, [32, 33])
# Numbers 29:40 = RV 30:1; RV 30:16 holds KJV 30:15-16.
_map("Num", 29, 40, 40, 30, 1); _map("Num", 30, 1, 14, 30, 2); _merged("Num", 30, [15, 16])
# Judges 14:18 is split over RV 14:18-19; RV 14:20 holds KJV 14:19-20.
_join("Judg", 14, 18, 14, [18, 19]); _merged("Judg", 14, [19, 20])
# 1 Samuel 23:29 = RV 24:1; RV 24:22 holds KJV 24:21-22.
_map("1Sam", 23, 29, 29, 24, 1); _map("1Sam", 24, 1, 20, 24, 2); _merged("1Sam", 24, [21, 22])
# 2 Samuel 20:25-26 are one RV verse (20:25).
_merged("2Sam", 20, [25, 26])
# 1 Kings 22:43 is split over RV 22:43-44; RV 22:53 holds KJV 22:52-53.
_join("1Kgs", 22, 43, 22, [43, 44]); _map("1Kgs", 22, 44, 51, 22, 45); _merged("1Kgs", 22, [52, 53])
# 1 Chronicles 1:30-31 are one RV verse; KJV 1:32 is split over RV 1:31-32.
_merged("1Chr", 1, [30, 31]); _join("1Chr", 1, 32, 1, [31, 32])
# 1 Chronicles 21:15 is split over RV 21:15-16; RV 21:30 holds KJV 21:29-30.
_join("1Chr", 21, 15, 21, [15, 16]); _map("1Chr", 21, 16, 28, 21, 17); _merged("1Chr", 21, [29, 30])
# 2 Chronicles 33:10-11 are one RV verse (33:10).
_merged("2Chr", 33, [10, 11]); _map("2Chr", 33, 12, 25, 33, 11)
# Job 35:15-16 are one RV verse.
_merged("Job", 35, [15, 16])
# Job 38:39-41 = RV 39:1-3; RV 39:30 holds KJV 39:27-30 and 40:1-5;
# KJV 40:6-24 = RV 40:1-19.
_map("Job", 38, 39, 41, 39, 1); _map("Job", 39, 1, 26, 39, 4)
_merged("Job", 39, [27, 28, 29, 30]); _merged("Job", 40, [1, 2, 3, 4, 5])
_map("Job", 40, 6, 24, 40, 1)
# Hosea 11:12 = RV 12:1; RV 12:14 holds KJV 12:13-14.
_map("Hos", 11, 12, 12, 12, 1); _map("Hos", 12, 1, 12, 12, 2); _merged("Hos", 12, [13, 14])
# Jonah 1:17 = RV 2:1; RV 2:10 holds KJV 2:9-10.
_map("Jonah", 1, 17, 17, 2, 1); _map("Jonah", 2, 1, 8, 2, 2); _merged("Jonah", 2, [9, 10])
# Acts 19:40-41 are one RV verse.
_merged("Acts", 19, [40, 41])
# 2 Corinthians 13:12-13 are one RV verse; KJV 13:14 = RV 13:13.
_merged("2Cor", 13, [12, 13]); _map("2Cor", 13, 14, 14, 13, 13)


# --------------------------------------------------------------------------
# Reading the modules
# --------------------------------------------------------------------------

def read_module(bible, books):
    """Return {ref: raw OSIS} for every verse slot of the given books."""
    out = {}
    for book in books:
        for ch, n in enumerate(book.chapter_lengths, 1):
            for v in range(1, n + 1):
                out[f"{book.osis_name} {ch}:{v}"] = bible.get(
                    books=[book.osis_name], chapters=[ch], verses=[v], clean=False)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sword-path", default="/usr/share/sword",
                    help="SWORD library root (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="output directory (default: data/bible-es-en in the repo)")
    args = ap.parse_args(argv)

    from pysword.modules import SwordModules  # imported late: only needed here

    library = SwordModules(args.sword_path)
    confs = library.parse_modules()
    es_bible = library.get_bible_from_module(ES_MODULE)
    en_bible = library.get_bible_from_module(EN_MODULE)

    es_books = [b for t in ("ot", "nt") for b in es_bible.get_structure().get_books()[t]]
    en_books = {b.osis_name: b for t in ("ot", "nt")
                for b in en_bible.get_structure().get_books().get(t, [])}
    assert len(es_books) == 66, len(es_books)
    book_names = {b.osis_name: b.name for b in es_books}

    # The WEB module uses NRSVA versification: the same 66 books, plus one
    # extra (empty) slot each in 3 John 1:15 and Revelation 12:18.
    en_extra = []
    for b in es_books:
        eb = en_books[b.osis_name]
        for ch, (n_es, n_en) in enumerate(zip(b.chapter_lengths, eb.chapter_lengths), 1):
            if n_en < n_es:
                raise SystemExit(f"{b.osis_name} {ch}: WEB has fewer verses ({n_en} < {n_es})")
            en_extra += [f"{b.osis_name} {ch}:{v}" for v in range(n_es + 1, n_en + 1)]

    print("reading modules ...", file=sys.stderr)
    es_raw = read_module(es_bible, es_books)
    en_raw = read_module(en_bible, [en_books[b.osis_name] for b in es_books])

    counters = collections.Counter()
    es_counters = collections.Counter()
    en_counters = collections.Counter()

    en_text = {}
    for ref, raw in en_raw.items():
        en_text[ref] = clean_osis(raw, ref, en_counters)
    for ref in en_extra:
        if en_text.get(ref):
            raise SystemExit(f"{ref}: NRSVA-only WEB verse is not empty: {en_text[ref]!r}")

    es_text = {}
    for ref, raw in es_raw.items():
        es_text[ref] = strip_subscription(ref, clean_osis(raw, ref, es_counters), es_counters)
    case_counts = build_case_model(es_text.values())
    for ref, text in es_text.items():
        if ref.endswith(":1") and text:
            es_text[ref] = normalize_drop_cap(text, ref, case_counts, es_counters)

    # Align by KJV reference.
    drops = collections.defaultdict(list)
    used_es = collections.Counter()
    pairs = []
    for ref in es_raw:  # KJV canonical order
        slots = ES_VERSIFICATION.get(ref, [ref])
        if slots is None:
            drops["es_verses_merged"].append(ref)
            continue
        used_es.update(slots)
        es = " ".join(es_text[s] for s in slots if es_text[s])
        en = en_text[ref]
        if not es and not en:
            drops["both_empty"].append(ref)
        elif not es:
            drops["es_empty"].append(ref)
        elif not en:
            drops["en_empty"].append(ref)
        else:
            if slots != [ref]:
                counters["pairs_with_remapped_es_verse"] += 1
            pairs.append({"ref": ref, "book": book_names[ref.split()[0]], "es": es, "en": en})

    # Every Spanish verse is used at most once; the unused non-empty ones are
    # exactly the merged slots.
    if any(n > 1 for n in used_es.values()):
        raise SystemExit(f"Spanish slot used twice: {[s for s, n in used_es.items() if n > 1]}")
    unused = [r for r in es_raw if es_text[r] and r not in used_es]
    counters["es_slots_holding_merged_verses"] = len(unused)

    for p in pairs:
        for side in ("es", "en"):
            t = p[side]
            assert t == t.strip() and "  " not in t, p
            assert not any(unicodedata.category(c) == "Cc" for c in t), p
            assert "<" not in t and ">" not in t, p
            assert unicodedata.normalize("NFC", t) == t, p

    splits = {"train": [], "validation": [], "test": []}
    for p in pairs:
        book = p["ref"].split()[0]
        split = ("validation" if book in VALIDATION_BOOKS
                 else "test" if book in TEST_BOOKS else "train")
        splits[split].append(p)

    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        path = args.out / f"{name}.jsonl.gz"
        with open(path, "wb") as raw_f:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw_f, mtime=0,
                               compresslevel=9) as gz:
                for row in rows:
                    gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))

    folded = en_counters.pop("_folded_refs", []) + es_counters.pop("_folded_refs", [])
    stats = {
        "sources": {
            "es": {"module": ES_MODULE, "debian_package": "sword-text-sparv",
                   "module_version": confs[ES_MODULE].get("version"),
                   "versification": confs[ES_MODULE].get("versification")},
            "en": {"module": EN_MODULE, "debian_package": "sword-text-web",
                   "module_version": confs[EN_MODULE].get("version"),
                   "versification": confs[EN_MODULE].get("versification")},
        },
        "verse_slots_kjv": len(es_raw),
        "pairs": {name: len(rows) for name, rows in splits.items()},
        "pairs_total": len(pairs),
        "books": {name: sorted({r["ref"].split()[0] for r in rows},
                               key=list(book_names).index)
                  for name, rows in splits.items()},
        "dropped": {reason: {"count": len(refs), "refs": refs}
                    for reason, refs in sorted(drops.items())},
        "dropped_total": sum(len(v) for v in drops.values()),
        "en_nrsva_only_slots_skipped": en_extra,
        "en_folded_following_verse_cut": folded,
        "cleaning": {
            "es": dict(sorted(es_counters.items())),
            "en": dict(sorted(en_counters.items())),
            "alignment": dict(sorted(counters.items())),
        },
        "characters": {
            side: sum(len(p[side]) for p in pairs) for side in ("es", "en")},
    }
    with open(args.out / "stats.json", "w", encoding="utf-8") as f:
        json.dump(stats, f, ensure_ascii=False, indent=2)
        f.write("\n")

    print(json.dumps({"pairs": stats["pairs"],
                      "dropped": {k: v["count"] for k, v in stats["dropped"].items()}},
                     ensure_ascii=False), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
