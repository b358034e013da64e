"""Checks on the committed Spanish→English Bible corpus (data/bible-es-en/).

Reads only the committed files; needs neither pysword nor the SWORD modules.
Rebuild the data with scripts/prepare_bible.py.
"""

import gzip
import json
import re
import unicodedata
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "bible-es-en"
SPLITS = ("train", "validation", "test")
MIN_PAIRS = {"train": 29000, "validation": 800, "test": 900}
REF_RE = re.compile(r"^(?P<book>[1-3]?[A-Z][A-Za-z]+) (?P<ch>[1-9]\d*):(?P<v>[1-9]\d*)$")


@pytest.fixture(scope="module")
def corpus():
    out = {}
    for split in SPLITS:
        with gzip.open(DATA / f"{split}.jsonl.gz", "rt", encoding="utf-8") as f:
            out[split] = [json.loads(line) for line in f]
    return out


@pytest.fixture(scope="module")
def by_ref(corpus):
    return {row["ref"]: row for rows in corpus.values() for row in rows}


def test_pair_counts(corpus):
    for split, minimum in MIN_PAIRS.items():
        assert len(corpus[split]) >= minimum, split


def test_stats_match_files(corpus):
    stats = json.loads((DATA / "stats.json").read_text(encoding="utf-8"))
    assert stats["pairs"] == {s: len(corpus[s]) for s in SPLITS}
    assert stats["pairs_total"] == sum(len(r) for r in corpus.values())
    dropped = sum(v["count"] for v in stats["dropped"].values())
    assert dropped == stats["dropped_total"]
    assert stats["pairs_total"] + dropped == stats["verse_slots_kjv"] == 31102


def test_record_format(corpus):
    seen = set()
    for rows in corpus.values():
        for row in rows:
            assert set(row) == {"ref", "book", "es", "en"}
            assert REF_RE.match(row["ref"]), row["ref"]
            assert row["ref"] not in seen, row["ref"]
            seen.add(row["ref"])


def test_canonical_order(corpus):
    for split, rows in corpus.items():
        book_order = []
        last = None
        for row in rows:
            m = REF_RE.match(row["ref"])
            book, ch, v = m["book"], int(m["ch"]), int(m["v"])
            if not book_order or book_order[-1] != book:
                assert book not in book_order, f"{split}: {book} is not contiguous"
                book_order.append(book)
                last = None
            if last is not None:
                assert (ch, v) > last, row["ref"]
            last = (ch, v)


def test_gzip_is_deterministic():
    for split in SPLITS:
        header = (DATA / f"{split}.jsonl.gz").read_bytes()[:10]
        assert header[:2] == b"\x1f\x8b"
        assert header[4:8] == b"\x00\x00\x00\x00", "gzip mtime must be 0"


def test_splits_hold_disjoint_whole_books(corpus):
    books = {s: {row["book"] for row in corpus[s]} for s in SPLITS}
    osis = {s: {row["ref"].split()[0] for row in corpus[s]} for s in SPLITS}
    assert books["validation"] == {"Joshua", "Philippians", "James"}
    assert osis["validation"] == {"Josh", "Phil", "Jas"}
    assert books["test"] == {"Judges", "Ruth", "Galatians", "I Peter"}
    assert osis["test"] == {"Judg", "Ruth", "Gal", "1Pet"}
    assert not books["train"] & books["validation"]
    assert not books["train"] & books["test"]
    assert not books["validation"] & books["test"]
    assert len(books["train"]) == 66 - 3 - 4
    # one book name per OSIS abbreviation
    names = {}
    for rows in corpus.values():
        for row in rows:
            assert names.setdefault(row["ref"].split()[0], row["book"]) == row["book"]


def test_genesis_1_1(by_ref):
    assert by_ref["Gen 1:1"]["en"] == "In the beginning, God created the heavens and the earth."
    assert by_ref["Gen 1:1"]["es"] == "En el principio crió Dios los cielos y la tierra."


def test_no_glossary(corpus, by_ref):
    rev = by_ref["Rev 22:21"]
    assert rev["en"].endswith("Amen.")
    assert rev["es"].endswith("Amén.")
    for rows in corpus.values():
        for row in rows:
            for side in ("es", "en"):
                assert len(row[side]) < 2000, row["ref"]
                assert "Glossary" not in row[side], row["ref"]
                assert "Abaddon is Hebrew" not in row[side], row["ref"]


def test_footnotes_removed_without_gluing_words(corpus, by_ref):
    assert "tree of life" in by_ref["Rev 22:19"]["en"]
    assert "six hundred shekels of gold" in by_ref["1Chr 21:25"]["en"]
    glued = ("Godcreated", "treeof", "shekelsof", "Lordwill")
    # Spanish module writes translator additions without spaces around them
    glued_es = ("primerdía", "Najothque", "oyeronesta", "entradoJesús", "losdones")
    for rows in corpus.values():
        for row in rows:
            for word in glued:
                assert word not in row["en"], (row["ref"], word)
            for word in glued_es:
                assert word not in row["es"], (row["ref"], word)
            # footnote text (e.g. "1:1 The Hebrew word rendered ...") is gone
            assert "Hebrew word rendered" not in row["en"], row["ref"]
            assert not re.search(r"\bTR (reads|adds|omits)\b", row["en"]), row["ref"]


def test_no_markup_left(corpus):
    for rows in corpus.values():
        for row in rows:
            for side in ("es", "en"):
                text = row[side]
                assert "<" not in text and ">" not in text, row["ref"]
                assert not re.search(r"&(amp|lt|gt|quot|#\d+);", text), row["ref"]


def test_text_is_clean(corpus):
    for rows in corpus.values():
        for row in rows:
            for side in ("es", "en"):
                text = row[side]
                assert text, row["ref"]
                assert text == text.strip(), row["ref"]
                assert "  " not in text, row["ref"]
                assert unicodedata.normalize("NFC", text) == text, row["ref"]
                assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in text), row["ref"]
                assert not re.search(r" [,.;:!?](?!\S)", text) or row["ref"] == "John 16:18", row["ref"]


def test_psalm_titles_kept_on_both_sides(by_ref):
    ps3 = by_ref["Ps 3:1"]
    assert ps3["en"].startswith("A Psalm by David, when he fled from Absalom his son. Yahweh,")
    assert ps3["es"].startswith("Salmo de David, cuando huía de delante de Absalom su hijo. ¡Oh Jehová,")
    assert by_ref["Ps 119:1"]["en"].startswith("ALEPH Blessed")
    assert by_ref["Ps 119:1"]["es"].startswith("ALEPH. Bienaventurados")


def test_song_of_songs_speaker_labels_removed(by_ref):
    assert not by_ref["Song 1:5"]["en"].startswith(("Beloved", "Lover", "Friends"))


def test_spanish_subscriptions_removed(by_ref):
    for ref in ("1Cor 16:24", "Gal 6:18", "Heb 13:25", "Phlm 1:25", "2Cor 13:14"):
        assert by_ref[ref]["es"].endswith("Amén."), ref
        assert "escrita" not in by_ref[ref]["es"].lower(), ref


def test_versification_remapped(by_ref):
    # Reina-Valera starts Numbers 13 / Jonah 2 one verse earlier than the KJV
    assert by_ref["Num 12:16"]["es"].startswith("Y después movió el pueblo de Haseroth")
    assert by_ref["Num 13:1"]["es"].startswith("Y Jehová habló á Moisés")
    assert "gran pez" in by_ref["Jonah 1:17"]["es"]
    assert by_ref["Jonah 2:1"]["es"].startswith("Y oró Jonás")
    assert by_ref["Job 38:39"]["es"].startswith("¿Cazarás tú la presa para el león?")
    assert by_ref["Job 40:6"]["es"].startswith("Entonces respondió Jehová á Job")
    # WEB stores the Romans doxology at 14:24-26, folded into 14:23: cut
    assert by_ref["Rom 14:23"]["en"].endswith("whatever is not of faith is sin.")
    assert "Rom 16:25" not in by_ref
    # both modules hold 3 John 14-15 (KJV numbering) in one verse
    assert by_ref["3John 1:14"]["en"].endswith("Greet the friends by name.")
