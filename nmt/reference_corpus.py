"""The reference of corpus loading: plain-text files read whole into Python strings, then
cleaned as nmt cleans them. scripts/bench_data.py times ``nmt.data.load_corpus`` against
it, and tests/test_data.py checks that both load the same corpus. Imports no torch, so
that the benchmark's memory figures are the loaders' own (the model references are in
``nmt.reference``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nmt.config import DataConfig


def write_text_corpus(folder: Path, pairs: int, seed: int = 0) -> int:
    """Synthetic parallel files (train: ``pairs`` lines; validation, test: 2 000); returns bytes written."""
    rng = np.random.default_rng(seed)
    syllables = np.array([c + v for c in "bcdfglmnprstvz" for v in "aeiou"])
    words = np.unique(["".join(rng.choice(syllables, rng.integers(1, 5))) for _ in range(30_000)])
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for split, n in (("train", pairs), ("validation", 2_000), ("test", 2_000)):
        lengths = rng.integers(3, 41, size=n)
        for side in ("es", "en"):
            # the target side a little longer or shorter, as translations are
            side_lengths = lengths if side == "es" else np.maximum(1, lengths + rng.integers(-3, 4, size=n))
            ids = rng.choice(len(words), size=int(side_lengths.sum()), p=weights)
            with open(folder / f"{split}.{side}", "w", encoding="utf-8") as f:
                for start in range(0, n, 100_000):  # in slices, so memory stays small
                    stop = min(n, start + 100_000)
                    offsets = np.concatenate([[0], np.cumsum(side_lengths[start:stop])]) + side_lengths[:start].sum()
                    text = "".join(" ".join(words[ids[a:b]]) + "\n" for a, b in zip(offsets[:-1], offsets[1:]))
                    f.write(text)
            written += (folder / f"{split}.{side}").stat().st_size
    return written


def reference_load_corpus(cfg: DataConfig) -> dict:
    """``data=files`` read the plain way: each file whole into Python strings, then nmt's cleaning."""
    import datasets

    from nmt.data import SPLITS, _clean_split
    from nmt.lines import read_lines

    loaded = {}
    for split in SPLITS:
        src, tgt = (read_lines(Path(cfg.path) / f"{split}.{side}") for side in (cfg.src_lang, cfg.tgt_lang))
        loaded[split] = _clean_split(datasets.Dataset.from_dict({"src": src, "tgt": tgt}), split, cfg)
        del src, tgt
    return loaded


def train_fingerprint(train) -> list[int]:
    """What two loaders of one corpus must agree on: the pairs kept and every character of them."""
    import pyarrow.compute as pc

    return [len(train)] + [int(pc.sum(pc.utf8_length(train.data.column(side))).as_py()) for side in ("src", "tgt")]
