"""The phrase-representation example of the README, from one trained run.

    python scripts/phrase_example.py --ckpt runs/demo-... --out docs/results/DATE-cpu-phrases

With the phrases of ``data/phrases/es.txt`` (``scripts/make_phrases.py``) it writes into
``--out``:

* ``phrases.png``: the 2-D map of their representations (``nmt-embed plot=``, the paper's Fig. 5),
* ``words.png``: the map of the source embeddings of the words they contain (Fig. 4),
* ``neighbours.md``: the nearest phrases of a few of them by cosine (``neighbours=``),
* ``table2.md``: the model's 5-best translations of a few of them (``nmt-translate nbest=5``,
  the paper's Table 2), and ``nbest.tsv``, the command's rows as it printed them,
* ``memory.jsonl``: peak memory of ``nmt-embed`` for 10 000 and 100 000 generated phrases,
  which stays flat because vectors are streamed to disk,

and prints one JSON line per step. The machine's load changes the times, not the maps.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHRASES = ROOT / "data" / "phrases" / "es.txt"
# Phrases whose neighbours and translations the README shows: a time span, a king, a land,
# a people, and the prophets' formula.
QUERIES = ["cuarenta años", "rey de babilonia", "tierra de egipto", "hijos de israel", "así ha dicho el señor"]


def nmt(command: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"nmt.commands.{command}", *args], input=stdin, text=True, capture_output=True, check=True
    )


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def neighbour_lists(phrases: list[str], table: Path, queries: list[str]) -> str:
    rows = [line.split("\t") for line in table.read_text(encoding="utf-8").splitlines()]
    lines = ["| phrase | its 5 nearest phrases (cosine) |", "|---|---|"]
    for query in queries:
        row = str(phrases.index(query))
        found = [f"{r[4]} ({float(r[3]):.2f})" for r in rows if r[0] == row]
        lines.append(f"| {query} | {', '.join(found)} |")
    return "\n".join(lines) + "\n"


def table2(nbest_tsv: str, queries: list[str]) -> str:
    lines = ["| source phrase | 5-best translations (log-probability) |", "|---|---|"]
    rows = [line.split("\t") for line in nbest_tsv.splitlines()]
    for i, query in enumerate(queries):
        found = [f"{r[4]} ({float(r[3]):.2f})" for r in rows if r[0] == str(i)]
        lines.append(f"| {query} | {'; '.join(found)} |")
    return "\n".join(lines) + "\n"


def peak_memory(ckpt: str, lines: int, folder: Path) -> dict:
    """nmt-embed of ``lines`` random phrases of the phrase list's words, in a process of its own."""
    words = " ".join(PHRASES.read_text(encoding="utf-8").split("\n")).split()
    rng = random.Random(0)
    source = folder / f"{lines}.txt"
    source.write_text(
        "".join(" ".join(rng.choice(words) for _ in range(rng.randint(2, 6))) + "\n" for _ in range(lines)), encoding="utf-8"
    )
    argv = [f"ckpt={ckpt}", f"input={source}", f"output={folder / f'{lines}.npy'}"]
    code = (
        f"import resource, sys; from nmt.commands.embed import main; sys.argv[1:] = {argv!r}\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    return {
        "lines": lines,
        "peak_rss_mb": round(int(result.stdout.split()[-1]) / 1024, 1),
        "seconds": round(seconds, 1),
        "output_mb": round((folder / f"{lines}.npy").stat().st_size / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a run folder or checkpoint (the demo's: runs/demo-...)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    phrases = PHRASES.read_text(encoding="utf-8").splitlines()
    ckpt = f"ckpt={args.ckpt}"

    nmt(
        "embed",
        ckpt,
        f"input={PHRASES}",
        f"output={args.out / 'phrases.npy'}",
        "neighbours=5",
        f"plot={args.out / 'phrases.png'}",
    )
    (args.out / "neighbours.md").write_text(neighbour_lists(phrases, args.out / "phrases.neighbours.tsv", QUERIES))
    emit({"step": "phrases", "phrases": len(phrases), "map": str(args.out / "phrases.png")})

    nmt("embed", ckpt, "words=true", f"input={PHRASES}", f"output={args.out / 'words.npy'}", f"plot={args.out / 'words.png'}")
    words = (args.out / "words.words.txt").read_text(encoding="utf-8").splitlines()
    emit({"step": "words", "words": len(words), "map": str(args.out / "words.png")})

    nbest = nmt("translate", ckpt, "decode=beam", "nbest=5", stdin="".join(q + "\n" for q in QUERIES)).stdout
    (args.out / "table2.md").write_text(table2(nbest, QUERIES))
    (args.out / "nbest.tsv").write_text(nbest)  # the command's own rows, every column
    emit({"step": "table2", "phrases": len(QUERIES), "file": str(args.out / "table2.md")})

    with tempfile.TemporaryDirectory() as tmp:
        for lines in (10_000, 100_000):
            record = {"step": "memory", **peak_memory(args.ckpt, lines, Path(tmp))}
            with open(args.out / "memory.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            emit(record)
    for name in ("phrases.npy", "words.npy"):  # big and reproducible: the maps and tables are the result
        (args.out / name).unlink()


if __name__ == "__main__":
    main()
