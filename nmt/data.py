"""Parallel corpora: the embedded Bible, plain-text files, or any Hugging Face dataset.

Every source ends as a ``datasets.DatasetDict`` with splits train / validation /
test and columns ``src`` and ``tgt``. Lines are never shifted or silently lost:
files are split on "\\n" only, a line-count mismatch is an error, and every pair
that cleaning drops is counted in the log.

Hub corpora and plain-text files stay in Arrow from start to end (no Python
object per sentence): files are converted block by block into memory-mapped
Arrow files under ``data.cache_dir``, and WMT'14 En-Fr's 40 M pairs are cleaned
by ``datasets.map`` in as many processes as there are cores (``data.num_proc``),
the result cached beside the Arrow data.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import json
import logging
import os
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nmt.caches import arrow_problem, map_rebuilding_damaged_cache
from nmt.config import DataConfig
from nmt.errors import CorpusError

if TYPE_CHECKING:  # datasets takes a second to import: only what reads a corpus imports it
    import datasets

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


# Unicode line and paragraph separators, NEL, and other controls would break a
# line-oriented pipeline downstream; inside a sentence they are just whitespace.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200b\ufeff]")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFC, control characters and Unicode line breaks to spaces, whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def drop_reason(src: str, tgt: str, max_words: int = 0, max_length_ratio: float = 0.0) -> str:
    """Why a normalized pair is dropped: "" to keep it."""
    if not src or not tgt:
        return "empty"
    n_src, n_tgt = len(src.split()), len(tgt.split())
    if max_words and max(n_src, n_tgt) > max_words:
        return f"longer than {max_words} words"
    if max_length_ratio and max(n_src, n_tgt) > max_length_ratio * min(n_src, n_tgt):
        return f"length ratio above {max_length_ratio:g}"
    return ""


def clean_pairs(
    sources: list[str],
    targets: list[str],
    max_words: int = 0,
    max_length_ratio: float = 0.0,
) -> tuple[list[str], list[str], Counter]:
    """Normalize each pair; drop empty ones and (if limits are set) over-long or unbalanced ones.

    Returns the kept sources and targets and a Counter of dropped pairs by reason.
    """
    if len(sources) != len(targets):
        raise CorpusError(f"{len(sources)} sources but {len(targets)} targets")
    cleaned = _clean_batch({"src": sources, "tgt": targets}, max_words, max_length_ratio)
    kept = [i for i, reason in enumerate(cleaned["drop"]) if not reason]
    dropped = Counter(reason for reason in cleaned["drop"] if reason)
    return [cleaned["src"][i] for i in kept], [cleaned["tgt"][i] for i in kept], dropped


def _clean_batch(batch: dict, max_words: int, max_length_ratio: float, rules: str = "") -> dict:
    """``datasets.map`` body: normalized ``src`` / ``tgt`` and a ``drop`` reason per pair.

    ``rules`` (``_cleaning_rules()``) is unused here: passed in, it enters the cache key.
    """
    src = [normalize_text(text or "") for text in batch["src"]]  # a missing text (null) is empty
    tgt = [normalize_text(text or "") for text in batch["tgt"]]
    return {"src": src, "tgt": tgt, "drop": [drop_reason(s, t, max_words, max_length_ratio) for s, t in zip(src, tgt)]}


def _cleaning_rules() -> str:
    """A digest of the code and data that decide cleaning: part of ``datasets``' cache key.

    ``datasets`` names an importable function in its cache key, not its code, so a cached
    cleaned corpus would outlive a change to these rules (or to Python's Unicode tables).
    """
    parts = [inspect.getsource(f) for f in (normalize_text, drop_reason, _clean_batch)]
    parts += [_CONTROL.pattern, _SPACES.pattern, unicodedata.unidata_version]
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()[:16]


def worker_processes(num_proc: int, rows: int) -> int | None:
    """Processes for ``datasets.map`` over ``rows`` rows (None: this process).

    ``data.num_proc``, or with 0 one per core (up to 16) for splits of 200 000 pairs or
    more, where starting processes pays off. Never more than the cores this machine
    lets us use (a checkpoint's setting may come from a bigger machine), nor than one
    per 10 000 rows: a process costs about a second to start.
    """
    if hasattr(os, "process_cpu_count"):  # Python 3.13+: the CPUs this process may use
        cores = os.process_cpu_count() or 1
    elif hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    wanted = num_proc if num_proc > 0 else (min(cores, 16) if rows >= 200_000 else 1)
    processes = min(wanted, cores, -(-rows // 10_000))
    return processes if processes > 1 else None


# --------------------------------------------------------------------------- sources


def _read_embedded(folder: Path, cfg: DataConfig, splits) -> dict[str, tuple[list[str], list[str]]]:
    pairs = {}
    for split in splits:
        path = folder / f"{getattr(cfg.splits, split)}.jsonl.gz"
        if not path.exists():
            renamed = "" if getattr(cfg.splits, split) == split else f" (data.splits.{split}={getattr(cfg.splits, split)})"
            raise CorpusError(
                f"{path}{renamed}: missing; data.source=embedded reads the {{split}}.jsonl.gz files of "
                f"scripts/prepare_bible.py (rebuild them with it). For plain-text files in {folder} "
                "add data=files (data.format=tsv for {split}.tsv); for a Hugging Face dataset, data=hub"
            )
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


def _read_files(folder: Path, cfg: DataConfig, splits) -> dict[str, datasets.Dataset]:
    """Each split's files, converted once into memory-mapped Arrow (``_lines_to_arrow``)."""
    import datasets

    if cfg.format not in ("text", "tsv"):
        raise CorpusError(f"data.format={cfg.format!r}: expected 'text' or 'tsv'")
    cache = Path(cfg.cache_dir).expanduser() / "files"
    pairs = {}
    for split in splits:
        name = getattr(cfg.splits, split)
        if cfg.format == "tsv":
            path = folder / f"{name}.tsv"
            _require(path)
            pairs[split] = datasets.Dataset.from_file(str(_lines_to_arrow(path, cache, tsv=True)))
            continue
        src_path, tgt_path = folder / f"{name}.{cfg.src_lang}", folder / f"{name}.{cfg.tgt_lang}"
        _require(src_path)
        _require(tgt_path)
        src = datasets.Dataset.from_file(str(_lines_to_arrow(src_path, cache))).rename_column("text", "src")
        tgt = datasets.Dataset.from_file(str(_lines_to_arrow(tgt_path, cache))).rename_column("text", "tgt")
        if len(src) != len(tgt):
            raise CorpusError(
                f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: "
                "parallel files must have the same number of lines"
            )
        pairs[split] = datasets.concatenate_datasets([src, tgt], axis=1)
    return pairs


# A file is read this many bytes at a time, so memory stays flat whatever its size.
_BLOCK_BYTES = 1 << 24
# Part of the converted files' cache key: change it when the conversion changes.
_FILES_FORMAT = "lines-v1"


def _lines_to_arrow(path: Path, cache: Path, tsv: bool = False) -> Path:
    """A UTF-8 file's lines as an Arrow file (column ``text``, or ``src`` / ``tgt`` for TSV).

    The lines are exactly ``nmt.lines.split_lines``' (split on "\\n" only, a trailing "\\r"
    dropped), read block by block without a Python object per line. The result is
    cached under ``cache`` by the file's path, size and change times, so a
    corpus of tens of millions of lines is converted once and then memory-mapped;
    ``datasets`` caches the cleaned split beside it.
    """
    stat = path.stat()  # the change time too: a copy may carry over an older modification time
    identity = (_FILES_FORMAT, tsv, path.resolve(), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    key = hashlib.sha256(repr(identity).encode()).hexdigest()[:20]
    target = cache / f"{path.name}-{key}.arrow"
    if target.exists():
        problem = arrow_problem(target)
        if problem is None:
            return target
        log.warning("%s: damaged cache file (%s); converting %s again", target, problem, path)
        target.unlink(missing_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("src", pa.string()), ("tgt", pa.string())] if tsv else [("text", pa.string())])
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for first_line, lines in _line_blocks(path):
                columns = _tsv_fields(lines, path, first_line) if tsv else [lines]
                writer.write_batch(pa.record_batch(columns, schema=schema))
        os.replace(partial, target)  # whole or absent, even if two runs convert at once
    finally:
        partial.unlink(missing_ok=True)
    return target


def _line_blocks(path: Path):
    """Yield (number of the first line, Arrow array of lines) for each block of whole lines."""
    line_number, carry, at_start = 1, b"", True
    with open(path, "rb") as file:
        while True:
            chunk = file.read(_BLOCK_BYTES)
            if chunk:
                raw = carry + chunk
                end = raw.rfind(b"\n")
                if end < 0:  # no line ends in this block yet: read on
                    carry = raw
                    continue
                raw, carry = raw[:end], raw[end + 1 :]
            elif carry:  # the last line, without a final newline
                raw, carry = carry, b""
            else:
                return
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                line = line_number + raw.count(b"\n", 0, err.start)
                raise CorpusError(f"{path}:{line}: invalid UTF-8 ({err.reason}); re-encode the file as UTF-8") from None
            if at_start:
                text, at_start = text.removeprefix("\ufeff"), False
                if not text and not chunk:  # a file holding only a byte-order mark
                    return
            lines = pc.split_pattern(pa.array([text], pa.large_string()), "\n").flatten().cast(pa.string())
            if "\r" in text:  # CRLF: drop the "\r" that ends a line, keep any other
                lines = pc.if_else(pc.ends_with(lines, "\r"), pc.utf8_slice_codeunits(lines, 0, -1), lines)
            yield line_number, lines
            line_number += len(lines)


def _tsv_fields(lines: pa.Array, path: Path, first_line: int) -> list[pa.Array]:
    """The source and target fields of ``source<TAB>target`` lines; any other line is an error."""
    fields = pc.split_pattern(lines, "\t")
    counts = pc.list_value_length(fields)
    wrong = pc.not_equal(counts, 2)
    if pc.any(wrong).as_py():
        index = pc.index(wrong, True).as_py()
        raise CorpusError(
            f"{path}:{first_line + index}: expected 2 tab-separated fields (source, target), found {counts[index].as_py()}"
        )
    return [pc.list_element(fields, 0), pc.list_element(fields, 1)]


def _require(path: Path) -> None:
    if not path.exists():
        raise CorpusError(
            f"{path}: no such file; data=files expects train/validation/test.{{src_lang,tgt_lang}} "
            "(or {split}.tsv with data.format=tsv) in data.path"
        )


def _read_hub(cfg: DataConfig, splits) -> dict[str, datasets.Dataset]:
    """``datasets.load_dataset(path, name)``: a Hub id, or a local folder of the same layout."""
    import datasets

    if cfg.path.startswith((".", "/", "~")) and not Path(cfg.path).expanduser().exists():  # never a Hub id
        raise CorpusError(
            f"data.path={cfg.path}: no such folder (a local copy of a dataset, its splits as JSON lines, CSV or Parquet)"
        )
    try:
        loaded = datasets.load_dataset(cfg.path, cfg.hub_name)
    except Exception as err:  # the Hub raises many types: name the setting at fault
        hint = ""
        if "ConnectionError" in type(err).__name__:
            hint = "; without a network, point data.path at a local copy (a folder of the same layout)"
            if not os.environ.get("HF_HUB_OFFLINE"):
                hint += ", or set HF_HUB_OFFLINE=1 to use the datasets cache at once instead of retrying"
        raise CorpusError(
            f"data.path={cfg.path!r} data.hub_name={cfg.hub_name!r}: could not load ({type(err).__name__}: {err}){hint}"
        ) from err
    pairs = {}
    for split in splits:
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
            # The struct column becomes one column per language, still in Arrow.
            table = table.select_columns(["translation"]).flatten()
            languages = sorted(c.removeprefix("translation.") for c in table.column_names)
            for lang in (cfg.src_lang, cfg.tgt_lang):
                if lang not in languages:
                    raise CorpusError(
                        f"{cfg.path} [{name}]: translation has no language {lang!r} "
                        f"(it has {languages}); set data.src_lang / data.tgt_lang"
                    )
            columns = {f"translation.{cfg.src_lang}": "src", f"translation.{cfg.tgt_lang}": "tgt"}
        elif cfg.layout == "flat":
            for lang in (cfg.src_lang, cfg.tgt_lang):
                if lang not in table.column_names:
                    hint = (
                        "use data.layout=translation"
                        if "translation" in table.column_names
                        else "set data.src_lang / data.tgt_lang"
                    )
                    raise CorpusError(f"{cfg.path} [{name}]: no column {lang!r} (columns: {table.column_names}); {hint}")
            columns = {cfg.src_lang: "src", cfg.tgt_lang: "tgt"}
        else:
            raise CorpusError(f"data.layout={cfg.layout!r}: expected 'translation' or 'flat'")
        pairs[split] = table.select_columns(list(columns)).rename_columns(columns)
    return pairs


# --------------------------------------------------------------------------- entry point


def load_corpus(cfg: DataConfig, splits: tuple[str, ...] = SPLITS) -> datasets.DatasetDict:
    """Load, normalize and filter a corpus (``splits`` of it); log what was dropped and why."""
    import datasets

    if not sys.stderr.isatty():  # no carriage-return bars in a log file (tokenize_corpus's maps are later)
        datasets.disable_progress_bars()
    unknown = [split for split in splits if split not in SPLITS]
    if unknown:
        raise CorpusError(f"split={unknown[0]!r}: expected one of {list(SPLITS)}")
    for setting in ("path", "src_lang", "tgt_lang"):
        if not getattr(cfg, setting):
            raise CorpusError(
                f"data.{setting} is required for data={cfg.name} (e.g. data.{setting}="
                f"{ {'path': '/corpora/de-en', 'src_lang': 'de', 'tgt_lang': 'en'}[setting] })"
            )
    if cfg.source == "embedded":
        raw = _read_embedded(Path(cfg.path), cfg, splits)
    elif cfg.source == "files":
        folder = Path(cfg.path).expanduser()
        if not folder.is_dir():
            raise CorpusError(f"data.path={cfg.path!r}: not a folder")
        raw = _read_files(folder, cfg, splits)
    elif cfg.source == "hub":
        raw = _read_hub(cfg, splits)
    else:
        raise CorpusError(f"data.source={cfg.source!r}: expected 'embedded', 'files' or 'hub'")

    splits = {}
    for split, table in raw.items():
        if not isinstance(table, datasets.Dataset):  # (sources, targets) of the embedded corpus
            table = datasets.Dataset.from_dict({"src": table[0], "tgt": table[1]})
        splits[split] = _clean_split(table, split, cfg)
    return datasets.DatasetDict(splits)


def _clean_split(table: datasets.Dataset, split: str, cfg: DataConfig) -> datasets.Dataset:
    """Normalize and filter one split (batched ``datasets.map``); log what was dropped and why."""
    # Length limits shape what the model learns from; the evaluation splits
    # stay whole, or scores would not be comparable with other systems'.
    is_train = split == "train"
    if not len(table):
        raise CorpusError(f"{cfg.name} [{split}]: the split is empty; check data.path / data.splits.{split}")
    limits = {
        "max_words": cfg.max_words if is_train else 0,
        "max_length_ratio": cfg.max_length_ratio if is_train else 0.0,
        "rules": _cleaning_rules(),
    }
    cleaned = map_rebuilding_damaged_cache(
        table,
        f"{cfg.name} [{split}]: the cleaned split cached under {cfg.cache_dir}",
        function=_clean_batch,
        batched=True,
        batch_size=10_000,
        fn_kwargs=limits,
        num_proc=worker_processes(cfg.num_proc, len(table)),
        remove_columns=[c for c in table.column_names if c not in ("src", "tgt")],
        desc=f"cleaning {split}",
    )
    reasons = cleaned.data.column("drop")
    dropped = {r["values"]: r["counts"] for r in pc.value_counts(reasons).to_pylist() if r["values"]}
    keep = np.flatnonzero(pc.equal(reasons, "").to_numpy(zero_copy_only=False))
    if is_train and cfg.max_train_pairs:
        keep = keep[: cfg.max_train_pairs]
    cleaned = cleaned.remove_columns("drop")
    if len(keep) < len(cleaned):
        cleaned = cleaned.select(keep).flatten_indices()  # a plain table: columns read as one Arrow array
    if dropped:
        reasons_text = ", ".join(f"{n} {why}" for why, n in sorted(dropped.items()))
        log.info("%s %s: kept %d pairs, dropped %s", cfg.name, split, len(cleaned), reasons_text)
    if not len(cleaned):
        raise CorpusError(f"{cfg.name} [{split}]: no pairs left after cleaning")
    return cleaned


def text_column(table: datasets.Dataset, column: str) -> pa.ChunkedArray:
    """A text column as Arrow strings, without a Python object per sentence."""
    if table._indices is not None:  # a selected / shuffled view: materialize its rows
        table = table.flatten_indices()
    return table.data.column(column)


def describe(corpus: datasets.DatasetDict) -> dict:
    """Pairs and word counts per split, for logs and the README (computed in Arrow).

    Cleaned text is normalized (single spaces, no leading or trailing ones, never
    empty), so its words are its spaces plus one.
    """
    stats = {}
    for split, table in corpus.items():
        words = {
            side: int(pc.sum(pc.count_substring(text_column(table, side), " ")).as_py() or 0) + len(table)
            for side in ("src", "tgt")
        }
        stats[split] = {"pairs": len(table), "src_words": words["src"], "tgt_words": words["tgt"]}
    return stats
