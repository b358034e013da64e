"""Corpus sources (embedded, files, TSV, Hub layout through a local folder) and every validation error."""

import gzip
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from nmt.config import DataConfig, SplitNames
from nmt.data import clean_pairs, load_corpus, normalize_text
from nmt.errors import CorpusError
from nmt.lines import read_lines, split_lines

PAIRS = {
    "train": [("hola mundo", "hello world"), ("buenos días", "good morning"), ("  ", "empty source")],
    "validation": [("gracias", "thank you")],
    "test": [("adiós", "goodbye")],
}


def write_text_corpus(folder, pairs=PAIRS, src="es", tgt="en"):
    folder.mkdir(exist_ok=True)
    for split, rows in pairs.items():
        (folder / f"{split}.{src}").write_text("".join(s + "\n" for s, _ in rows), encoding="utf-8")
        (folder / f"{split}.{tgt}").write_text("".join(t + "\n" for _, t in rows), encoding="utf-8")
    return folder


def files_config(folder, **kw):
    kw.setdefault("cache_dir", str(folder.parent / "cache"))
    return DataConfig(name="test", source="files", path=str(folder), src_lang="es", tgt_lang="en", **kw)


def assert_layout(corpus):
    assert sorted(corpus) == ["test", "train", "validation"]
    for split in corpus.values():
        assert split.column_names == ["src", "tgt"]


def test_files_source_drops_and_counts_empty_pairs(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="nmt.data"):
        corpus = load_corpus(files_config(write_text_corpus(tmp_path / "c")))
    assert_layout(corpus)
    assert list(corpus["train"]["src"]) == ["hola mundo", "buenos días"]
    assert list(corpus["train"]["tgt"]) == ["hello world", "good morning"]
    assert "dropped 1 empty" in caplog.text


def test_tsv_source(tmp_path):
    for split, rows in PAIRS.items():
        (tmp_path / f"{split}.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in rows), encoding="utf-8")
    corpus = load_corpus(files_config(tmp_path, format="tsv"))
    assert_layout(corpus)
    assert corpus["validation"][0] == {"src": "gracias", "tgt": "thank you"}


def test_tsv_wrong_field_count_names_line(tmp_path):
    for split in ("train", "validation", "test"):
        (tmp_path / f"{split}.tsv").write_text("a\tb\nno tab here\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"train\.tsv:2: expected 2 tab-separated fields"):
        load_corpus(files_config(tmp_path, format="tsv"))


def test_embedded_source(tmp_path):
    for split, rows in PAIRS.items():
        with gzip.open(tmp_path / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
            for i, (es, en) in enumerate(rows):
                f.write(json.dumps({"ref": f"X {i}", "es": es, "en": en}) + "\n")
    corpus = load_corpus(DataConfig(name="e", source="embedded", path=str(tmp_path)))
    assert_layout(corpus)
    assert corpus["test"][0] == {"src": "adiós", "tgt": "goodbye"}
    reverse = load_corpus(DataConfig(name="e", source="embedded", path=str(tmp_path), src_lang="en", tgt_lang="es"))
    assert reverse["test"][0] == {"src": "goodbye", "tgt": "adiós"}
    with pytest.raises(CorpusError, match="no language 'fr'"):
        load_corpus(DataConfig(name="e", source="embedded", path=str(tmp_path), tgt_lang="fr"))
    # data.splits names the files, as for data=files and data=hub
    renamed = DataConfig(name="e", source="embedded", path=str(tmp_path), splits=SplitNames(test="validation"))
    assert load_corpus(renamed)["test"][0] == {"src": "gracias", "tgt": "thank you"}
    with pytest.raises(CorpusError, match=r"nosplit\.jsonl\.gz \(data\.splits\.train=nosplit\): missing"):
        load_corpus(DataConfig(name="e", source="embedded", path=str(tmp_path), splits=SplitNames(train="nosplit")))


def test_plain_files_without_data_files_get_a_hint_to_add_it(tmp_path):
    """data.path=FOLDER alone keeps the default embedded source: say how to read files."""
    folder = write_text_corpus(tmp_path / "c")
    with pytest.raises(CorpusError, match=r"train\.jsonl\.gz: missing; .* add data=files"):
        load_corpus(DataConfig(path=str(folder)))


def write_hub_folder(folder, layout):
    folder.mkdir()
    for split, rows in PAIRS.items():
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for es, en in rows:
                row = {"translation": {"es": es, "en": en}} if layout == "translation" else {"es": es, "en": en}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return folder


@pytest.mark.parametrize("layout", ["translation", "flat"])
def test_hub_source_through_local_folder(tmp_path, layout):
    """data=hub calls datasets.load_dataset(path, name): a local folder of the Hub's layout works the same."""
    folder = write_hub_folder(tmp_path / "hub", layout)
    corpus = load_corpus(DataConfig(name="h", source="hub", path=str(folder), src_lang="es", tgt_lang="en", layout=layout))
    assert_layout(corpus)
    assert list(corpus["train"]["tgt"]) == ["hello world", "good morning"]


def test_hub_errors_name_the_setting(tmp_path):
    folder = write_hub_folder(tmp_path / "hub", "translation")
    (tmp_path / "README.md").write_text("not a dataset\n")
    with pytest.raises(CorpusError, match=r"data.splits.validation='dev'.*'validation'"):
        load_corpus(DataConfig(name="h", source="hub", path=str(folder), splits=SplitNames(validation="dev")))
    with pytest.raises(CorpusError, match="use data.layout=translation"):
        load_corpus(DataConfig(name="h", source="hub", path=str(folder), layout="flat", src_lang="es"))
    with pytest.raises(CorpusError, match="no language 'de'"):
        load_corpus(DataConfig(name="h", source="hub", path=str(folder), src_lang="de"))
    for missing in (str(tmp_path / "nowhere"), "./corp/nowhere"):  # a local path, not a Hub id: no retries
        with pytest.raises(CorpusError, match=f"data.path={missing}: no such folder"):
            load_corpus(DataConfig(name="h", source="hub", path=missing))
    with pytest.raises(CorpusError, match="could not load"):
        load_corpus(DataConfig(name="h", source="hub", path=str(tmp_path / "README.md")))


def test_an_unreachable_hub_says_how_to_work_offline(monkeypatch):
    def unreachable(path, name):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    config = DataConfig(name="w", source="hub", path="wmt14", hub_name="fr-en", src_lang="en", tgt_lang="fr")
    with pytest.raises(CorpusError, match=r"data.path='wmt14' .* point data.path at a local copy .* HF_HUB_OFFLINE=1"):
        load_corpus(config)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # already offline: only the local copy helps
    with pytest.raises(CorpusError, match=r"a local copy \(a folder of the same layout\)$"):
        load_corpus(config)


def test_line_count_mismatch_names_both_files_and_counts(tmp_path):
    folder = write_text_corpus(tmp_path / "c")
    (folder / "validation.en").write_text("thank you\nextra line\n", encoding="utf-8")
    with pytest.raises(CorpusError) as err:
        load_corpus(files_config(folder))
    message = str(err.value)
    assert "validation.es has 1 lines" in message and "validation.en has 2" in message


def test_invalid_utf8_names_file_and_line(tmp_path):
    folder = write_text_corpus(tmp_path / "c")
    (folder / "train.es").write_bytes(b"hola mundo\nbuenos d\xedas\n \n")
    with pytest.raises(CorpusError, match=r"train\.es:2: invalid UTF-8"):
        load_corpus(files_config(folder))


def test_missing_file_and_bad_settings(tmp_path):
    folder = write_text_corpus(tmp_path / "c")
    (folder / "test.en").unlink()
    with pytest.raises(CorpusError, match=r"test\.en: no such file"):
        load_corpus(files_config(folder))
    with pytest.raises(CorpusError, match="not a folder"):
        load_corpus(files_config(tmp_path / "missing"))
    with pytest.raises(CorpusError, match="data.source='ftp'"):
        load_corpus(DataConfig(source="ftp"))


def test_line_breaks_inside_lines_never_shift_lines(tmp_path):
    """\\r, U+2028, U+0085 and control characters stay inside their line."""
    raw = "uno\r\ndos\u2028tres\ncuatro\u0085cinco\nseis\x0bsiete\x1c\nocho\r\n".encode("utf-8")
    path = tmp_path / "x.txt"
    path.write_bytes(raw)
    lines = read_lines(path)
    assert [normalize_text(line) for line in lines] == ["uno", "dos tres", "cuatro cinco", "seis siete", "ocho"]


def test_normalization_nfc_and_whitespace():
    assert normalize_text("  Jose\u0301 \t  and\u00a0\u200bMari\u0301a  ") == "José and María"


def test_length_and_ratio_filters_apply_to_train_only(tmp_path, caplog):
    long = " ".join(["palabra"] * 30)
    pairs = {
        "train": [("a b", "a b"), (long, long), ("uno", " ".join(["x"] * 9))],
        "validation": [(long, long)],
        "test": [("uno", " ".join(["x"] * 9))],
    }
    with caplog.at_level(logging.INFO, logger="nmt.data"):
        corpus = load_corpus(files_config(write_text_corpus(tmp_path / "c", pairs), max_words=20, max_length_ratio=3))
    assert len(corpus["train"]) == 1
    assert len(corpus["validation"]) == 1 and len(corpus["test"]) == 1  # evaluation splits stay whole
    assert "1 longer than 20 words" in caplog.text and "1 length ratio above 3" in caplog.text


def test_clean_pairs_counts_reasons():
    src, tgt, dropped = clean_pairs(["a", "", "b c d e f"], ["a", "b", "x"], max_words=4)
    assert (src, tgt) == (["a"], ["a"])
    assert dropped == {"empty": 1, "longer than 4 words": 1}


@pytest.mark.parametrize("group", ["files", "hub"])
def test_files_and_hub_require_path_and_languages(group):
    from tests.conftest import compose_config

    cfg = compose_config("train", [f"data={group}"]).data
    with pytest.raises(CorpusError, match=f"data.path is required for data={group}"):
        load_corpus(cfg)
    cfg = compose_config("train", [f"data={group}", "data.path=/x"]).data
    with pytest.raises(CorpusError, match="data.src_lang is required"):
        load_corpus(cfg)


def test_cleaning_in_several_processes_gives_the_same_corpus(tmp_path, caplog):
    """data.num_proc > 1 (what large corpora get by default): the same pairs, order and counts."""
    long = " ".join(["palabra"] * 30)
    rows = [(f"frase {i}", f"sentence {i}") for i in range(40)] + [(long, long), ("", "x")] * 3
    pairs = {"train": rows, "validation": rows[:5], "test": rows[:5]}
    folder = write_text_corpus(tmp_path / "c", pairs)
    with caplog.at_level(logging.INFO, logger="nmt.data"):
        one = load_corpus(files_config(folder, max_words=20, num_proc=1))
        logged = caplog.text
        caplog.clear()
        two = load_corpus(files_config(folder, max_words=20, num_proc=2))
    for split in one:
        assert one[split].to_dict() == two[split].to_dict(), split
    assert len(one["train"]) == 40
    assert "3 empty, 3 longer than 20 words" in logged and "3 empty, 3 longer than 20 words" in caplog.text


@pytest.mark.parametrize("cores", [1, 4, 32])
def test_worker_processes_only_for_large_splits_and_never_more_than_the_cores(monkeypatch, cores):
    import os

    from nmt.data import worker_processes

    monkeypatch.setattr(os, "process_cpu_count", lambda: cores, raising=False)
    one_process = None
    assert worker_processes(0, 1_000) is one_process  # starting processes costs more than it saves
    assert worker_processes(0, 10_000_000) == (min(cores, 16) if cores > 1 else one_process)
    assert worker_processes(1, 10_000_000) is one_process
    assert worker_processes(2, 10_000_000) == (2 if cores > 1 else one_process)  # asked for explicitly
    assert worker_processes(64, 10_000_000) == (cores if cores > 1 else one_process)  # a bigger machine's setting
    assert worker_processes(8, 900) is one_process  # a small split: nmt-evaluate with a checkpoint's setting
    assert worker_processes(8, 15_000) == (2 if cores > 1 else one_process)  # one process per 10 000 rows at most


def test_hub_missing_texts_count_as_empty(tmp_path, caplog):
    """A null text in an Arrow column is an empty side: dropped and counted, never a crash."""
    folder = tmp_path / "hub"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        rows = [{"es": "hola", "en": "hello"}, {"es": None, "en": "lost"}, {"es": "adiós", "en": "goodbye"}]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="nmt.data"):
        corpus = load_corpus(DataConfig(name="h", source="hub", path=str(folder), src_lang="es", tgt_lang="en", layout="flat"))
    assert list(corpus["train"]["src"]) == ["hola", "adiós"]
    assert "h train: kept 2 pairs, dropped 1 empty" in caplog.text


def test_describe_counts_words_in_arrow(tmp_path):
    from nmt.data import describe

    corpus = load_corpus(files_config(write_text_corpus(tmp_path / "c")))
    stats = describe(corpus)
    assert stats["train"] == {"pairs": 2, "src_words": 4, "tgt_words": 4}
    assert stats["validation"] == {"pairs": 1, "src_words": 1, "tgt_words": 2}


def test_loading_one_split_reads_only_that_split(tmp_path):
    """nmt-evaluate loads the split it scores, never a large training split."""
    folder = write_text_corpus(tmp_path / "c")
    (folder / "train.es").unlink()  # would be an error if it were read
    (folder / "train.en").unlink()
    corpus = load_corpus(files_config(folder), splits=("test",))
    assert list(corpus) == ["test"] and list(corpus["test"]["tgt"]) == ["goodbye"]
    with pytest.raises(CorpusError, match="split='dev': expected one of"):
        load_corpus(files_config(folder), splits=("dev",))


def test_an_empty_split_is_a_corpus_error(tmp_path):
    folder = write_text_corpus(tmp_path / "c")
    (folder / "test.es").write_text("", encoding="utf-8")
    (folder / "test.en").write_text("", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"\[test\]: the split is empty"):
        load_corpus(files_config(folder))


def test_cached_cleaning_is_redone_when_the_cleaning_rules_change(tmp_path, monkeypatch):
    """A Hub corpus's cleaned splits are cached by datasets; the cache key holds a digest of the
    cleaning code (datasets itself keys an importable function by its name only)."""
    import nmt.data as data

    folder = write_hub_folder(tmp_path / "hub", "translation")
    cfg = DataConfig(name="h", source="hub", path=str(folder), src_lang="es", tgt_lang="en")
    calls = []
    original = data.drop_reason
    monkeypatch.setattr(data, "drop_reason", lambda *a: calls.append(1) or original(*a))
    for rules, recomputed in (("A", True), ("A", False), ("B", True)):
        monkeypatch.setattr(data, "_cleaning_rules", lambda rules=rules: rules)
        calls.clear()
        load_corpus(cfg)
        assert bool(calls) == recomputed, rules


def test_cleaning_rules_digest_changes_with_the_cleaning_code(monkeypatch):
    import nmt.data as data

    before = data._cleaning_rules()
    assert before == data._cleaning_rules()
    monkeypatch.setattr(data, "_SPACES", __import__("re").compile(r"[ \t]+"))  # another rule
    assert data._cleaning_rules() != before


TRICKY_LINES = "\ufeffuno\r\ndos\u2028tres\r\n\r\ncuatro\rcinco\n\nseis €😀\nsiete\r".encode("utf-8")


@pytest.mark.parametrize("block_bytes", [1, 3, 7, 1 << 24])
@pytest.mark.parametrize("ending", [b"", b"\n", b"\r\n"])
def test_files_are_converted_block_by_block_into_exactly_their_lines(tmp_path, monkeypatch, block_bytes, ending):
    """Plain-text files go to Arrow a block at a time; whatever the block boundaries (inside a
    line, a CRLF, a multi-byte character), the lines are those of ``split_lines``."""
    import datasets

    import nmt.data as data

    monkeypatch.setattr(data, "_BLOCK_BYTES", block_bytes)
    raw = TRICKY_LINES + ending
    path = tmp_path / "x.txt"
    path.write_bytes(raw)
    converted = datasets.Dataset.from_file(str(data._lines_to_arrow(path, tmp_path / "cache")))
    assert converted["text"] == split_lines(raw, "x.txt")
    for raw in (b"", b"\n", "\ufeff".encode(), "\ufeff\n".encode(), b"\n\n"):  # the edge cases
        path.write_bytes(raw)
        converted = datasets.Dataset.from_file(str(data._lines_to_arrow(path, tmp_path / "cache")))
        assert converted["text"] == split_lines(raw, "x.txt"), raw


def test_file_errors_name_the_line_whatever_block_it_is_in(tmp_path, monkeypatch):
    import nmt.data as data

    monkeypatch.setattr(data, "_BLOCK_BYTES", 8)  # many blocks
    folder = write_text_corpus(tmp_path / "c")
    (folder / "train.es").write_bytes(b"hola mundo\nbuenos dias\nuno\nbuenos d\xedas\n")
    with pytest.raises(CorpusError, match=r"train\.es:4: invalid UTF-8"):
        load_corpus(files_config(folder))
    (folder / "train.tsv").write_text("uno\tone\ndos\ttwo\ntres\tthree\ncuatro four\n", encoding="utf-8")
    for split in ("validation", "test"):
        (folder / f"{split}.tsv").write_text("uno\tone\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"train\.tsv:4: expected 2 tab-separated fields .* found 1"):
        load_corpus(files_config(folder, format="tsv"))


def test_converted_files_are_reused_until_a_file_changes(tmp_path, monkeypatch):
    """A file is converted to Arrow once; changed, it is converted again (the key holds its
    size and modification time), and the corpus follows the new text."""
    import nmt.data as data

    folder = write_text_corpus(tmp_path / "c")
    cfg = files_config(folder)
    load_corpus(cfg)
    calls = []
    original = data._line_blocks
    monkeypatch.setattr(data, "_line_blocks", lambda path: calls.append(path.name) or original(path))
    assert list(load_corpus(cfg)["test"]["src"]) == ["adiós"] and calls == []
    (folder / "test.es").write_text("hasta luego\n", encoding="utf-8")
    assert list(load_corpus(cfg)["test"]["src"]) == ["hasta luego"] and calls == ["test.es"]
    assert not list((tmp_path / "cache" / "files").glob("*.partial"))


def test_bench_data_compares_like_with_like(tmp_path, monkeypatch):
    """scripts/bench_data.py: its synthetic files are parallel, and the project's loader and
    the whole-file reference it is timed against (nmt.reference_corpus) load the very same corpus."""
    from nmt.reference_corpus import reference_load_corpus, train_fingerprint, write_text_corpus

    corpus = tmp_path / "corpus"
    write_text_corpus(corpus, pairs=500)
    for split, n in (("train", 500), ("validation", 2000), ("test", 2000)):
        assert len(read_lines(corpus / f"{split}.es")) == len(read_lines(corpus / f"{split}.en")) == n
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    cfg = DataConfig(
        name="synthetic",
        source="files",
        path=str(corpus),
        src_lang="es",
        tgt_lang="en",
        cache_dir=str(tmp_path / "cache"),
        num_proc=1,
    )
    nmt = load_corpus(cfg)["train"]
    reference = reference_load_corpus(DataConfig(**{**cfg.__dict__, "cache_dir": str(tmp_path / "reference-cache")}))
    assert train_fingerprint(nmt) == train_fingerprint(reference["train"]) and len(nmt) > 400
    # and the script's own measuring processes, as its main run starts them
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_data.py"
    measured = {}
    for impl in ("nmt", "reference"):
        result = subprocess.run(
            [sys.executable, str(script), "--child", impl, "--corpus", str(corpus), "--cache", str(tmp_path / f"child-{impl}")],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf")},
        )
        assert result.returncode == 0, result.stderr[-2000:]
        measured[impl] = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["nmt"]["fingerprint"] == measured["reference"]["fingerprint"] == train_fingerprint(nmt)
    assert measured["nmt"]["peak_rss_gb"] > 0 and measured["reference"]["seconds"] > 0
