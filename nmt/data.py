"""Parallel corpora: the embedded Bible, plain-text files, or any Hugging Face dataset.

Every source ends as a ``datasets.DatasetDict`` with splits train / validation /
test and columns ``src`` and ``tgt``. Lines are never shifted or silently lost:
files are split on "\\n" only, a line-count mismatch is an error, and every pair
that cleaning drops is counted in the log.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import unicodedata
from collections import Counter
from pathlib import Path

import datasets

from nmt.config import DataConfig

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


class CorpusError(ValueError):
    """A corpus that cannot be read as given; the message names the file and what to do."""


# Unicode line and paragraph separators, NEL, and other controls would break a
# line-oriented pipeline downstream; inside a sentence they are just whitespace.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200b\ufeff]")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFC, control characters and Unicode line breaks to spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def split_lines(raw: bytes, name: str, replace_invalid: bool = False) -> list[str]:
    """Decode UTF-8 bytes into lines split on "\\n" only.

    ``str.splitlines`` would also split on "\\r", U+0085 and U+2028, shifting every
    later line against its translation. A trailing "\\r" per line (CRLF files) and a
    leading byte-order mark are dropped. Invalid UTF-8 is an error naming ``name``
    and the line, or (``replace_invalid``) becomes U+FFFD.
    """
    try:
        text = raw.decode("utf-8", errors="replace" if replace_invalid else "strict")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1  # only on failure: which line is it?
        raise CorpusError(
            f"{name}:{line}: invalid UTF-8 ({err.reason} at byte {err.start}); re-encode the input as UTF-8"
        ) from None
    text = text.removeprefix("\ufeff")
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_lines(path: Path, replace_invalid: bool = False) -> list[str]:
    """The lines of a UTF-8 file (see ``split_lines``)."""
    return split_lines(Path(path).read_bytes(), str(path), replace_invalid)


def clean_pairs(
    sources: list[str],
    targets: list[str],
    max_words: int = 0,
    max_length_ratio: float = 0.0,
) -> tuple[list[str], list[str], Counter]:
    """Normalize each pair; drop empty ones and (if limits are set) over-long or unbalanced ones.

    Returns the kept sources and targets and a Counter of dropped pairs by reason.
    """
    kept_src, kept_tgt, dropped = [], [], Counter()
    for src, tgt in zip(sources, targets, strict=True):
        src, tgt = normalize_text(src), normalize_text(tgt)
        if not src or not tgt:
            dropped["empty"] += 1
            continue
        n_src, n_tgt = len(src.split()), len(tgt.split())
        if max_words and max(n_src, n_tgt) > max_words:
            dropped[f"longer than {max_words} words"] += 1
            continue
        if max_length_ratio and max(n_src, n_tgt) > max_length_ratio * min(n_src, n_tgt):
            dropped[f"length ratio above {max_length_ratio:g}"] += 1
            continue
        kept_src.append(src)
        kept_tgt.append(tgt)
    return kept_src, kept_tgt, dropped


# --------------------------------------------------------------------------- sources


def _read_embedded(folder: Path, cfg: DataConfig) -> dict[str, tuple[list[str], list[str]]]:
    pairs = {}
    for split in SPLITS:
        path = folder / f"{split}.jsonl.gz"
        if not path.exists():
            raise CorpusError(f"{path}: missing; rebuild it with scripts/prepare_bible.py")
        src, tgt = [], []
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                record = json.loads(line)
                try:
                    src.append(record[cfg.src_lang])
                    tgt.append(record[cfg.tgt_lang])
                except KeyError as err:
                    raise CorpusError(
                        f"{path}:{number}: no language {err}; this corpus has "
                        f"{sorted(k for k in record if len(k) == 2)} (set data.src_lang / data.tgt_lang)"
                    ) from None
        pairs[split] = (src, tgt)
    return pairs


def _read_files(folder: Path, cfg: DataConfig) -> dict[str, tuple[list[str], list[str]]]:
    pairs = {}
    for split in SPLITS:
        name = getattr(cfg.splits, split)
        if cfg.format == "tsv":
            path = folder / f"{name}.tsv"
            _require(path)
            src, tgt = [], []
            for number, line in enumerate(read_lines(path), start=1):
                fields = line.split("\t")
                if len(fields) != 2:
                    raise CorpusError(
                        f"{path}:{number}: expected 2 tab-separated fields (source, target), "
                        f"found {len(fields)}"
                    )
                src.append(fields[0])
                tgt.append(fields[1])
        elif cfg.format == "text":
            src_path, tgt_path = folder / f"{name}.{cfg.src_lang}", folder / f"{name}.{cfg.tgt_lang}"
            _require(src_path)
            _require(tgt_path)
            src, tgt = read_lines(src_path), read_lines(tgt_path)
            if len(src) != len(tgt):
                raise CorpusError(
                    f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: "
                    "parallel files must have the same number of lines"
                )
        else:
            raise CorpusError(f"data.format={cfg.format!r}: expected 'text' or 'tsv'")
        pairs[split] = (src, tgt)
    return pairs


def _require(path: Path) -> None:
    if not path.exists():
        raise CorpusError(
            f"{path}: no such file; data=files expects train/validation/test.{{src_lang,tgt_lang}} "
            "(or {split}.tsv with data.format=tsv) in data.path"
        )


def _read_hub(cfg: DataConfig) -> dict[str, tuple[list[str], list[str]]]:
    """``datasets.load_dataset(path, name)``: a Hub id, or a local folder of the same layout."""
    try:
        loaded = datasets.load_dataset(cfg.path, cfg.hub_name)
    except Exception as err:  # the Hub raises many types: name the setting at fault
        raise CorpusError(
            f"data.path={cfg.path!r} data.hub_name={cfg.hub_name!r}: could not load "
            f"({type(err).__name__}: {err})"
        ) from err
    pairs = {}
    for split in SPLITS:
        name = getattr(cfg.splits, split)
        if name not in loaded:
            raise CorpusError(
                f"data.splits.{split}={name!r}: not in dataset {cfg.path!r}, which has "
                f"{sorted(loaded)}; set data.splits.{split}"
            )
        table = loaded[name]
        if cfg.layout == "translation":
            if "translation" not in table.column_names:
                raise CorpusError(
                    f"{cfg.path} [{name}]: no 'translation' column (columns: {table.column_names}); "
                    "use data.layout=flat for one column per language"
                )
            rows = table["translation"]
            src, tgt = _pick(rows, cfg, name, lambda row, lang: row[lang])
        elif cfg.layout == "flat":
            for lang in (cfg.src_lang, cfg.tgt_lang):
                if lang not in table.column_names:
                    hint = ("use data.layout=translation" if "translation" in table.column_names
                            else "set data.src_lang / data.tgt_lang")
                    raise CorpusError(
                        f"{cfg.path} [{name}]: no column {lang!r} (columns: {table.column_names}); {hint}"
                    )
            src, tgt = list(table[cfg.src_lang]), list(table[cfg.tgt_lang])
        else:
            raise CorpusError(f"data.layout={cfg.layout!r}: expected 'translation' or 'flat'")
        pairs[split] = (src, tgt)
    return pairs


def _pick(rows, cfg: DataConfig, split: str, get):
    try:
        return [get(r, cfg.src_lang) for r in rows], [get(r, cfg.tgt_lang) for r in rows]
    except KeyError as err:
        raise CorpusError(
            f"{cfg.path} [{split}]: translation has no language {err} "
            f"(it has {sorted(rows[0]) if len(rows) else []}); set data.src_lang / data.tgt_lang"
        ) from None


# --------------------------------------------------------------------------- entry point


def load_corpus(cfg: DataConfig) -> datasets.DatasetDict:
    """Load, normalize and filter a corpus; log what was dropped and why."""
    for setting in ("path", "src_lang", "tgt_lang"):
        if not getattr(cfg, setting):
            raise CorpusError(f"data.{setting} is required for data={cfg.name} (e.g. data.{setting}="
                              f"{ {'path': '/corpora/de-en', 'src_lang': 'de', 'tgt_lang': 'en'}[setting]})")
    if cfg.source == "embedded":
        raw = _read_embedded(Path(cfg.path), cfg)
    elif cfg.source == "files":
        folder = Path(cfg.path).expanduser()
        if not folder.is_dir():
            raise CorpusError(f"data.path={cfg.path!r}: not a folder")
        raw = _read_files(folder, cfg)
    elif cfg.source == "hub":
        raw = _read_hub(cfg)
    else:
        raise CorpusError(f"data.source={cfg.source!r}: expected 'embedded', 'files' or 'hub'")

    splits = {}
    for split, (src, tgt) in raw.items():
        # Length limits shape what the model learns from; the evaluation splits
        # stay whole, or scores would not be comparable with other systems'.
        is_train = split == "train"
        src, tgt, dropped = clean_pairs(
            src,
            tgt,
            max_words=cfg.max_words if is_train else 0,
            max_length_ratio=cfg.max_length_ratio if is_train else 0.0,
        )
        if is_train and cfg.max_train_pairs:
            src, tgt = src[: cfg.max_train_pairs], tgt[: cfg.max_train_pairs]
        if dropped:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(dropped.items()))
            log.info("%s %s: kept %d pairs, dropped %s", cfg.name, split, len(src), reasons)
        if not src:
            raise CorpusError(f"{cfg.name} [{split}]: no pairs left after cleaning")
        splits[split] = datasets.Dataset.from_dict({"src": src, "tgt": tgt})
    return datasets.DatasetDict(splits)


def describe(corpus: datasets.DatasetDict) -> dict:
    """Pairs and word counts per split, for logs and the README."""
    stats = {}
    for split, table in corpus.items():
        src_words = sum(len(s.split()) for s in table["src"])
        tgt_words = sum(len(t.split()) for t in table["tgt"])
        stats[split] = {"pairs": len(table), "src_words": src_words, "tgt_words": tgt_words}
    return stats
