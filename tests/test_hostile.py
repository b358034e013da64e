"""Hostile input, round 2 (issue 32): tokenizer identity, output paths that are not ours to
replace, damaged checkpoints that cost memory or tracebacks. Each test failed on the main of
2026-12-07; docs/reliability.md lists the promises they keep."""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from nmt.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from nmt.config import TokenizerConfig
from nmt.ensemble import average_checkpoints
from nmt.errors import CheckpointError
from nmt.inference import load_translator
from nmt.tokenizer import build_tokenizer
from nmt.tokens import BOS, EOS, PAD, UNK
from nmt.training import train
from tests.commands import run_command
from tests.conftest import ENGLISH, SPANISH
from tests.test_reliability import run_config

# --------------------------------------------------------------------------- tokenizer identity


def _sentences(n: int = 600) -> tuple[list[str], list[str]]:
    src = [" ".join(SPANISH[(i * 7 + j) % len(SPANISH)] for j in range(1 + i % 5)) for i in range(n)]
    tgt = [" ".join(ENGLISH[(i * 7 + j) % len(ENGLISH)] for j in range(1 + i % 5)) for i in range(n)]
    return src, tgt


def _train_from_file(folder: Path, lines: list[str]) -> bytes:
    """A SentencePiece model trained the way SentencePiece is usually driven (from a file under
    ``folder``): the model records that file's path, so two folders give two byte strings."""
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(folder / "train.txt"),
        model_prefix=str(folder / "spm"),
        vocab_size=60,
        pad_id=PAD,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return (folder / "spm.model").read_bytes()


def test_a_tokenizer_is_identified_by_what_it_does_not_by_its_bytes(tmp_path):
    from nmt.tokenizer import model_identity

    lines = _sentences()[0]
    a, b = _train_from_file(tmp_path / "a", lines), _train_from_file(tmp_path / "b", lines)
    assert a != b  # the paths SentencePiece wrote into them
    assert model_identity(a) == model_identity(b)
    other = _train_from_file(tmp_path / "c", lines[:300])
    assert spm.SentencePieceProcessor(model_proto=other).get_piece_size() > 0
    assert model_identity(other) != model_identity(a)  # other pieces or scores
    assert model_identity(b"not a model") != model_identity(a)


def test_tokenizer_builds_are_reproducible_byte_for_byte(tmp_path):
    src, tgt = _sentences()
    cfg = TokenizerConfig(vocab_size=300)
    first = build_tokenizer(src, tgt, cfg, tmp_path / "one")
    again = build_tokenizer(src, tgt, cfg, tmp_path / "two")
    assert first.src_proto == again.src_proto
    assert not list((tmp_path / "one" / "spm").glob("*partial*"))


def test_a_tokenizer_build_writes_a_temporary_file_of_its_own(tmp_path):
    """Concurrent builds of one tokenizer each write aside under a name of their own: another
    writer's leftover at the old shared name (KEY.partial) is none of this build's business."""
    src, tgt = _sentences()
    cfg = TokenizerConfig(vocab_size=300)
    build_tokenizer(src, tgt, cfg, tmp_path)
    (model,) = (tmp_path / "spm").glob("joint-*.model")
    model.unlink()
    model.with_suffix(".partial").mkdir()  # another writer's, in the way of a shared name
    build_tokenizer(src, tgt, cfg, tmp_path)
    assert model.is_file() and model.with_suffix(".partial").is_dir()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, word_corpus) -> tuple[Path, Path]:
    """A 6-step run with a tokenizer cache of its own (the tests damage it)."""
    cache = tmp_path_factory.mktemp("own-cache")
    run_dir = tmp_path_factory.mktemp("small-run")
    train(run_config(word_corpus, cache, "train.max_steps=6"), run_dir)
    return run_dir, cache


@pytest.mark.parametrize("damage", ["truncated", "deleted", "another machine's"])
def test_a_run_resumes_after_its_tokenizer_cache_is_rebuilt(small_run, tmp_path, word_corpus, damage):
    run_dir, cache = small_run
    copy, own_cache = tmp_path / "run", tmp_path / "cache"
    shutil.copytree(run_dir, copy)
    shutil.copytree(cache, own_cache)
    (cached,) = (own_cache / "spm").glob("joint-*.model")
    if damage == "truncated":
        os.truncate(cached, 1000)
    elif damage == "deleted":
        cached.unlink()
    else:  # the same tokenizer, but other bytes (trained from a file of another path)
        cached.write_bytes(_with_another_training_path(cached.read_bytes()))
    before = (copy / "spm.model").read_bytes()
    summary = train(run_config(word_corpus, own_cache, "train.max_steps=9"), copy, resume=True)
    assert summary["steps"] == 9
    assert (copy / "spm.model").read_bytes() == before  # the run's own tokenizer, never overwritten


def test_a_resume_without_its_own_tokenizer_takes_its_checkpoint_s(small_run, tmp_path, word_corpus):
    """A damaged spm.model in the run folder: the tokenizer the checkpoint carries wins over
    the cache's (here another machine's build of it), and is written back to the folder."""
    run_dir, cache = small_run
    copy, own_cache = tmp_path / "run", tmp_path / "cache"
    shutil.copytree(run_dir, copy)
    shutil.copytree(cache, own_cache)
    (cached,) = (own_cache / "spm").glob("joint-*.model")
    cached.write_bytes(_with_another_training_path(cached.read_bytes()))
    (copy / "spm.model").write_bytes(b"damaged")
    carried = read_checkpoint(copy / "last.pt").src_proto
    assert train(run_config(word_corpus, own_cache, "train.max_steps=9"), copy, resume=True)["steps"] == 9
    assert (copy / "spm.model").read_bytes() == carried != cached.read_bytes()


def _with_another_training_path(proto: bytes) -> bytes:
    """The same SentencePiece model, as another machine's build writes it: another input path."""
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    model = model_pb2.ModelProto()
    model.ParseFromString(proto)
    model.trainer_spec.input[:] = ["/tmp/elsewhere/tmpk3x9/train.txt"]
    model.trainer_spec.model_prefix = "/tmp/elsewhere/tmpk3x9/spm"
    changed = model.SerializeToString()
    assert changed != proto
    return changed


def _rebuilt_elsewhere(checkpoint: Path, out: Path) -> Path:
    state = load_checkpoint(checkpoint)
    for side in ("src", "tgt"):
        proto = _with_another_training_path(bytes(state["tokenizer"][side].numpy()))
        state["tokenizer"][side] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    state.pop("format")
    save_checkpoint(state, out)
    return out


def test_ensembles_and_averages_take_one_tokenizer_built_by_two_caches(trained_run, tmp_path):
    """Seeds trained on different machines: identical tokenizers in other bytes."""
    elsewhere = _rebuilt_elsewhere(trained_run / "best.pt", tmp_path / "elsewhere.pt")
    assert read_checkpoint(elsewhere).src_proto != read_checkpoint(trained_run / "best.pt").src_proto
    translator = load_translator([trained_run / "best.pt", elsewhere])
    assert len(translator.members) == 2
    averaged = average_checkpoints([trained_run / "best.pt", elsewhere])
    assert averaged.tgt_vocab_size == read_checkpoint(elsewhere).tgt_vocab_size


# --------------------------------------------------------------------------- output paths


def _average(ckpts: list[Path], output: Path) -> subprocess.CompletedProcess:
    return run_command("nmt.commands.average", f"ckpts=[{','.join(str(c) for c in ckpts)}]", f"output={output}", text=True)


def _special_files(tmp_path: Path) -> list[Path]:
    """A FIFO, and where this process may make one (root), a character device like /dev/full."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    found = [fifo]
    try:
        os.mknod(tmp_path / "full", 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        found.append(tmp_path / "full")
    except (PermissionError, OSError):
        pass
    return found


def test_an_average_never_replaces_a_device_or_a_fifo(trained_run, tmp_path):
    for special in _special_files(tmp_path):
        kind = os.stat(special).st_mode
        result = _average([trained_run / "best.pt"] * 2, special)
        assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
        assert f"error: output={special}: a " in result.stderr and "which writing this file would replace" in result.stderr
        assert os.stat(special).st_mode == kind  # still what it was
    with pytest.raises(CheckpointError, match="a FIFO"):  # the library refuses too (train.average_last, say)
        save_checkpoint(load_checkpoint(trained_run / "best.pt"), tmp_path / "fifo")


def test_an_average_never_overwrites_a_run_folder_s_own_files(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    (run_dir / ".hydra" / "config.yaml").write_text("x: 1\n")
    (run_dir / ".nmt-train.lock").write_text("")
    (run_dir / "train.log").write_text("a log\n")
    owned = ["config.yaml", "spm.model", "metrics.jsonl", "train.log", "summary.json", ".nmt-train.lock", ".hydra/config.yaml"]
    before = {name: (run_dir / name).read_bytes() for name in owned}
    for name in owned:
        result = _average([run_dir / "best.pt"] * 2, run_dir / name)
        assert result.returncode == 1, (name, result.stderr)
        assert "exists and is not an earlier output of nmt-average" in result.stderr and len(result.stderr.splitlines()) == 1
    assert {name: (run_dir / name).read_bytes() for name in owned} == before
    # a new file, then an earlier output of nmt-average: both fine
    assert _average([run_dir / "best.pt"] * 2, run_dir / "averaged.pt").returncode == 0
    again = _average([run_dir / "best.pt", run_dir / "last.pt"], run_dir / "averaged.pt")
    assert again.returncode == 0, again.stderr


def test_an_evaluation_leaves_a_folder_s_own_figures_alone(trained_rnnsearch_run, tmp_path):
    folder = tmp_path / "myreport"
    folder.mkdir()
    mine = {"alignment-9.png": b"my figure", "bleu_by_length_compared.png": b"my other figure", "notes.md": b"notes"}
    for name, data in mine.items():
        (folder / name).write_bytes(data)
    args = [f"ckpt={trained_rnnsearch_run}", f"report_dir={folder}", "max_sentences=4", "decode=greedy", "n_alignments=1"]
    result = run_command("nmt.commands.evaluate", *args, text=True)
    assert result.returncode == 0, result.stderr
    assert {name: (folder / name).read_bytes() for name in mine} == mine
    drawn = json.loads((folder / "report.json").read_text())["figures"]
    assert [figure["file"] for figure in drawn] == ["alignment-1.png"] and (folder / "alignment-1.png").is_file()
    # a second report in the folder replaces the first one's figures, and still not the user's
    result = run_command("nmt.commands.evaluate", *args[:-1], "n_alignments=0", text=True)
    assert result.returncode == 0, result.stderr
    assert not (folder / "alignment-1.png").exists()
    assert {name: (folder / name).read_bytes() for name in mine} == mine


def test_a_report_never_writes_into_a_fifo(trained_run, tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    os.mkfifo(folder / "report.md")
    result = run_command("nmt.commands.evaluate", f"ckpt={trained_run}", f"report_dir={folder}", "max_sentences=2", timeout=60)
    assert result.returncode == 1
    assert b"report.md is a FIFO (named pipe), which the report would replace" in result.stderr
    assert stat.S_ISFIFO(os.stat(folder / "report.md").st_mode) and not (folder / "report.json").exists()


def _with_file_size_limit(limit: int):
    """A child process that may write files of at most ``limit`` bytes, as on a full disk (EFBIG)."""

    def set_up():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_up


def _command(module: str, *args: str, stdin: str, limit: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        input=stdin,
        capture_output=True,
        text=True,
        preexec_fn=_with_file_size_limit(limit),
        timeout=180,
    )


def test_a_failed_write_names_its_file_and_leaves_no_output(trained_run, tmp_path):
    lines = "\n".join(" ".join(SPANISH[i : i + 5]) for i in range(10)) * 20 + "\n"  # 200 lines
    output = tmp_path / "out.txt"
    result = _command("nmt.commands.translate", f"ckpt={trained_run}", f"output={output}", stdin=lines, limit=1000)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: {output}: could not write it (File too large)")
    assert sorted(tmp_path.iterdir()) == []  # no partial file, no temporary one
    # nmt-embed: its first output (the vectors, 40 x 64 floats) fits, the neighbours' table does not
    vectors, neighbours = tmp_path / "v.npy", tmp_path / "n.tsv"
    args = [f"ckpt={trained_run}", f"output={vectors}", "neighbours=30", f"neighbours_output={neighbours}"]
    result = _command("nmt.commands.embed", *args, stdin="\n".join(lines.splitlines()[:40]) + "\n", limit=20000)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: {neighbours}: could not write it (File too large)")
    assert sorted(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- damaged checkpoints and caches


def _crafted(source: Path, out: Path, change) -> Path:
    state = load_checkpoint(source)
    change(state)
    state.pop("format")
    torch.save({"format": "nmt-checkpoint-1", **state}, out)
    return out


def _translate(ckpt: Path) -> subprocess.CompletedProcess:
    return run_command("nmt.commands.translate", f"ckpt={ckpt}", stdin="uno dos\n", text=True)


def test_a_checkpoint_claiming_a_huge_vocabulary_is_refused_before_any_model_is_built(trained_run, tmp_path, monkeypatch):
    import nmt.architectures

    crafted = _crafted(trained_run / "best.pt", tmp_path / "huge.pt", lambda s: s["model_config"].update(src_vocab_size=10**6))
    built = []
    real = nmt.architectures.build_model

    def recording(*args, **kwargs):
        built.append(str(torch.empty(0).device))  # the device a new tensor lands on: meta costs nothing
        return real(*args, **kwargs)

    monkeypatch.setattr(nmt.architectures, "build_model", recording)
    with pytest.raises(CheckpointError, match=r"huge\.pt: its weights do not fit its cho2014 model \(wrong shape "):
        load_translator(crafted, "cpu")
    assert built and set(built) == {"meta"}
    result = _translate(crafted)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1 and "wrong shape" in result.stderr


def test_a_checkpoint_s_settings_are_checked_as_the_command_line_s(trained_run, tmp_path):
    hidden = load_checkpoint(trained_run / "best.pt")["model_config"]["config"]["hidden_size"]

    def setting(value):
        return lambda state: state["model_config"]["config"].update(hidden_size=value)

    as_text = _crafted(trained_run / "best.pt", tmp_path / "text.pt", setting(str(hidden)))
    assert _translate(as_text).returncode == 0  # "64" is 64, as model.hidden_size=64 would be
    for name, value in (("word", "many"), ("negative", -3), ("list", [1])):
        crafted = _crafted(trained_run / "best.pt", tmp_path / f"{name}.pt", setting(value))
        result = _translate(crafted)
        assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
        assert f"error: {crafted}: its saved settings do not fit this version's (" in result.stderr
        assert "hidden_size" in result.stderr


def test_a_checkpoint_with_weights_that_are_not_finite_is_refused(trained_run, tmp_path):
    def poison(state):
        name = sorted(state["model"])[0]
        state["model"][name] = torch.full_like(state["model"][name], float("nan"))

    crafted = _crafted(trained_run / "best.pt", tmp_path / "nan.pt", poison)
    name = sorted(load_checkpoint(crafted)["model"])[0]
    result = _translate(crafted)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert f"error: {crafted}: its weights are not finite (NaN or inf) in {name}" in result.stderr
    evaluated = run_command("nmt.commands.evaluate", f"ckpt={crafted}", f"report_dir={tmp_path / 'r'}", text=True)
    assert evaluated.returncode == 1 and "not finite" in evaluated.stderr and not (tmp_path / "r").exists()


def test_a_tokenized_cache_with_ids_outside_the_vocabulary_is_rebuilt(tmp_path, caplog):
    import datasets
    import pyarrow as pa

    from nmt.tokenizer import tokenize_corpus

    src, tgt = _sentences(50)
    tokenizer = build_tokenizer(src, tgt, TokenizerConfig(vocab_size=300), tmp_path)
    corpus = datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"src": src, "tgt": tgt})})
    tokenize_corpus(corpus, tokenizer, tmp_path)
    (cache_file,) = (tmp_path / "tokenized").glob("validation-*.arrow")
    with pa.memory_map(str(cache_file)) as source:
        table = pa.ipc.open_stream(source).read_all()
    ids = table.column("tgt_ids").to_pylist()
    ids[3][0] = 99999  # a damaged number: valid Arrow, no checksum to say so
    table = table.set_column(
        table.schema.get_field_index("tgt_ids"), "tgt_ids", pa.array(ids, table.schema.field("tgt_ids").type)
    )
    with pa.OSFile(str(cache_file), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with caplog.at_level(logging.WARNING):
        again = tokenize_corpus(corpus, tokenizer, tmp_path)["validation"]
    assert f"{cache_file}: tgt_ids holds id 99999, outside the vocabulary of" in caplog.text and "rebuilding it" in caplog.text
    assert max(max(row) for row in again["tgt_ids"]) < tokenizer.tgt_vocab_size


# --------------------------------------------------------------------------- torchrun


def test_python_m_from_the_folder_above_a_checkout_named_nmt_says_what_hides_the_package(tmp_path):
    (tmp_path / "nmt").symlink_to(Path(__file__).resolve().parents[1])  # a checkout folder named nmt/
    result = subprocess.run(
        [sys.executable, "-m", "nmt.commands.train", "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: the folder {tmp_path / 'nmt'} (a checkout of nmt?) hides the installed nmt package from 'python -m': "
        "run from another folder, or use the command itself (nmt-train ..., torchrun --standalone "
        "--nproc_per_node=N --no-python nmt-train ...)"
    ]


def test_only_rank_0_says_that_a_resumed_run_has_nothing_left_to_train(caplog, tmp_path):
    from nmt.config import OptimConfig
    from nmt.distributed import World
    from nmt.trainer import Progress, warn_about_resume

    opt = OptimConfig(max_steps=10)
    with caplog.at_level(logging.WARNING):
        warn_about_resume(Progress(step=10, world_size=2), opt, World(rank=1, size=2), None)
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING):
        warn_about_resume(Progress(step=10, world_size=2), opt, World(rank=0, size=2), tmp_path)
    assert f"nothing left to train; raise it on the command line (resume={tmp_path} train.max_steps=...)" in caplog.text


def test_every_test_docs_reliability_md_names_exists():
    """The promises' table names its tests: a renamed or removed test breaks the build, not the page."""
    import re

    root = Path(__file__).resolve().parents[1]
    named = re.findall(r"tests/(\w+\.py)::(\w+)", (root / "docs" / "reliability.md").read_text(encoding="utf-8"))
    assert len(named) > 40
    missing = [f"{file}::{name}" for file, name in named if f"def {name}(" not in (root / "tests" / file).read_text("utf-8")]
    assert not missing


# --------------------------------------------------------------------------- after review


def test_an_earlier_report_s_list_cannot_make_evaluate_remove_other_files(trained_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(trained_run, folder)
    crafted = {"figures": [{"title": "x", "file": "best.pt"}, {"title": "y", "file": "spm.model"}]}
    (folder / "report.json").write_text(json.dumps(crafted))
    from nmt.report import earlier_report_files

    assert "best.pt" not in earlier_report_files(folder) and "spm.model" not in earlier_report_files(folder)


def test_a_report_never_replaces_a_file_no_earlier_report_wrote(trained_rnnsearch_run, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "report.md").write_text("my notes")
    args = [f"ckpt={trained_rnnsearch_run}", f"report_dir={folder}", "max_sentences=4", "decode=greedy"]
    result = run_command("nmt.commands.evaluate", *args, text=True)
    assert result.returncode == 1 and "report.md is not a file of an earlier report" in result.stderr
    (folder / "report.md").unlink()
    (folder / "alignment-1.png").write_bytes(b"mine")  # the figure it would draw for line 1
    result = run_command("nmt.commands.evaluate", *args, "n_alignments=1", text=True)
    assert result.returncode == 1 and "alignment-1.png is not a figure of an earlier report" in result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["alignment-1.png"]  # no report, no temporary file
    assert (folder / "alignment-1.png").read_bytes() == b"mine"


def test_a_regular_file_under_dev_is_replaced_whole_not_appended_to(trained_run, tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm")
    output = shm / f"nmt-test-{os.getpid()}.txt"
    output.write_text("OLD CONTENT\n")
    try:
        result = run_command("nmt.commands.translate", f"ckpt={trained_run}", f"output={output}", stdin="uno dos\n", text=True)
        assert result.returncode == 0, result.stderr
        assert "OLD CONTENT" not in output.read_text() and len(output.read_text().splitlines()) == 1
    finally:
        output.unlink(missing_ok=True)


def test_the_cached_tokenizer_is_readable_by_others(tmp_path):
    src, tgt = _sentences()
    build_tokenizer(src, tgt, TokenizerConfig(vocab_size=300), tmp_path)
    (model,) = (tmp_path / "spm").glob("joint-*.model")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(model).st_mode) == 0o666 & ~umask


def test_a_crafted_tokenizer_proto_is_no_traceback():
    from nmt.tokenizer import model_identity

    for crafted in (bytes([0x15, 0xFF, 0xFF, 0xFF, 0xFF]), bytes([0x12, 0x05, 0x08]), bytes([0x12]), b"\x00"):
        assert len(model_identity(crafted)) == 64
