"""Make data/phrases/: short Spanish phrases from the embedded corpus's train split, the input
of the phrase-representation example (README, "Phrase representations").

    python scripts/make_phrases.py                # writes data/phrases/es.txt and README.md
    python scripts/make_phrases.py --per-length 60 --output /tmp/phrases

The phrases are the most frequent n-grams of 2 to 6 words (``--per-length`` of each length),
counted within clauses (never across punctuation), lower-cased, and kept only when they
neither begin nor end with a function word ("de", "la", "y", ...): the frequent n-grams that
read as phrases ("el hijo de david", "dijo jehová", "tres días"), not as fragments ("y
el"). Deterministic: ties are broken alphabetically, so the same corpus gives the same file.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "bible-es-en" / "train.jsonl.gz"

# Spanish function words: a phrase does not begin or end with one of these.
FUNCTION_WORDS = set(
    """
a al ante con contra de del desde en entre hacia hasta para por según sin sobre tras
el la lo los las un una unos unas y e o u ni que porque pues mas pero si como cuando donde
se su sus mi mis tu tus me te le les nos os él ella ellos ellas yo tú no ya es era fué
este esta estos estas ese esa esos esas aquel aquella aquellos aquellas cual cuales quien
á ó é nuestro nuestra nuestros nuestras vuestro vuestra vuestros vuestras ha han he había habían
""".split()
)  # á, ó, é: the preposition and conjunctions as the 1909 spelling writes them
WORD = re.compile(r"[^\W\d_]+")  # letters, accented ones (â, î) included


def clauses(text: str) -> list[list[str]]:
    """The runs of words between punctuation marks, lower-cased."""
    return [WORD.findall(part) for part in re.split(r"[^\w\s]+", text.lower())]


def frequent_phrases(texts, lengths: range, per_length: int, min_count: int) -> list[tuple[str, int]]:
    counts = {n: Counter() for n in lengths}
    for text in texts:
        for words in clauses(text):
            for n in lengths:
                for i in range(len(words) - n + 1):
                    gram = words[i : i + n]
                    if gram[0] not in FUNCTION_WORDS and gram[-1] not in FUNCTION_WORDS:
                        counts[n][" ".join(gram)] += 1
    phrases = []
    for n in lengths:
        ranked = sorted(((c, p) for p, c in counts[n].items() if c >= min_count), key=lambda cp: (-cp[0], cp[1]))
        phrases += [(p, c) for c, p in ranked[:per_length]]
    return phrases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--output", type=Path, default=ROOT / "data" / "phrases")
    parser.add_argument("--per-length", type=int, default=80, help="phrases of each length (2 to 6 words)")
    parser.add_argument("--min-count", type=int, default=5, help="only n-grams seen at least this often")
    args = parser.parse_args()
    with gzip.open(args.corpus, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["es"] for line in f]
    phrases = frequent_phrases(texts, range(2, 7), args.per_length, args.min_count)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "es.txt").write_text("".join(p + "\n" for p, _ in phrases), encoding="utf-8")
    (args.output / "counts.tsv").write_text("".join(f"{p}\t{c}\n" for p, c in phrases), encoding="utf-8")
    by_length = Counter(len(p.split()) for p, _ in phrases)
    (args.output / "README.md").write_text(
        "# phrases: short Spanish phrases of the embedded corpus\n\n"
        f"{len(phrases)} phrases, the most frequent n-grams of 2 to 6 words of "
        "`data/bible-es-en/train.jsonl.gz` (Reina-Valera 1909, public domain), counted within clauses, "
        "lower-cased, with no function word at either end: "
        + ", ".join(f"{by_length[n]} of {n} words" for n in range(2, 7))
        + ".\n\n"
        "- `es.txt`: one phrase per line, by length, then by frequency (the input of `nmt-embed`).\n"
        "- `counts.tsv`: each phrase and how often it occurs in the train split.\n\n"
        f"Made by `python scripts/make_phrases.py --per-length {args.per_length} --min-count {args.min_count}`; "
        'the README\'s "Phrase representations" section maps them.\n',
        encoding="utf-8",
    )
    print(json.dumps({"phrases": len(phrases), "by_length": dict(sorted(by_length.items())), "output": str(args.output)}))


if __name__ == "__main__":
    main()
