"""Never lose a run (issue 17): one process per run folder, an overwrite guard that judges
the folder Hydra resolved, runs that can always be resumed or removed, metrics that hold
each validation once, settings that cannot train garbage, damaged files named clearly.

Every test here fails on the code before these promises (docs/reliability.md, table 10+).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch

from nmt import run_folder
from nmt.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from nmt.commands.app import run_folder_for
from nmt.commands.train import resume_config
from nmt.config import check_ranges
from nmt.errors import RunFolderError, SettingError
from nmt.training import train
from tests.commands import run_command
from tests.conftest import TINY_MODEL, compose_config, word_corpus_overrides

QUICK = TINY_MODEL + [
    "train=debug",
    "train.device=cpu",
    "train.max_tokens=512",
    "train.max_steps=6",
    "train.val_every=3",
    "train.val_max_sentences=4",
    "train.log_every=1",
    "evaluate_test=false",
]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def quick_config(corpus, cache, *extra):
    return compose_config("train", word_corpus_overrides(corpus, cache) + QUICK + list(extra))


def nmt_train(*args, cwd=None, env=None, timeout=120) -> subprocess.CompletedProcess:
    return run_command("nmt.commands.train", *args, cwd=cwd, env=env or ENV, text=True, timeout=timeout)


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file of a run but Hydra's own (.hydra/), the log and the lock: name -> content hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".hydra" not in p.parts and p.name not in ("train.log", run_folder.LOCK_NAME)
    }


@pytest.fixture
def finished_run(tmp_path, trained_run) -> Path:
    """A copy of the session's trained run, for tests that point commands at it."""
    return Path(shutil.copytree(trained_run, tmp_path / "finished"))


# --------------------------------------------------------------------------- 1. the resolved folder


def test_an_interpolated_run_folder_cannot_overwrite_a_run(finished_run):
    before = fingerprint(finished_run)
    result = nmt_train("train=debug", "hydra.run.dir=${oc.env:RUNDIR}", env={**ENV, "RUNDIR": str(finished_run)})
    assert result.returncode == 1, result.stdout
    assert result.stderr.strip() == (
        f"error: {finished_run} already holds an nmt-train run: continue it with "
        f"resume={finished_run}, or choose another folder"
    )
    assert fingerprint(finished_run) == before  # best.pt, last.pt, config.yaml, metrics.jsonl: untouched


def test_a_run_that_lost_its_config_yaml_is_never_trained_into_again(finished_run):
    """Its checkpoints still hold a run (resume_settings=checkpoint recovers it): a new run is refused."""
    (finished_run / "config.yaml").unlink()
    before = fingerprint(finished_run)
    result = nmt_train("train=debug", f"hydra.run.dir={finished_run}")
    assert result.returncode == 1 and "already holds an nmt-train run" in result.stderr
    assert f"resume={finished_run} resume_settings=checkpoint (its config.yaml is gone)" in result.stderr
    assert fingerprint(finished_run) == before


def test_config_yaml_edited_by_hand_is_not_taken_for_cut_short(finished_run):
    config = finished_run / "config.yaml"
    original = config.read_text()
    for edited in (original + "# a note of mine\n", original.rstrip("\n")):  # a line added; the last newline gone
        config.write_text(edited)
        assert run_folder.read_config(finished_run)["train"]


def test_a_resume_with_an_interpolated_run_folder_elsewhere_is_refused(tmp_path, finished_run):
    other = tmp_path / "other"
    before = fingerprint(finished_run)
    result = nmt_train(
        f"resume={finished_run}", "train.max_steps=2000", "hydra.run.dir=${oc.env:OTHER}", env={**ENV, "OTHER": str(other)}
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: resume={finished_run} continues in its own folder, not in {other}: leave hydra.run.dir out"
    )
    assert fingerprint(finished_run) == before


# --------------------------------------------------------------------------- 2. one process per folder


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding ``folder`` until it is killed."""
    code = (
        f"from nmt import run_folder; import time; run_folder.hold({str(folder)!r}); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_folder_refuses_a_second_process_naming_the_holder(tmp_path, finished_run):
    holder = _holder(finished_run)
    try:
        before = fingerprint(finished_run)
        resumed = nmt_train(f"resume={finished_run}", "train.max_steps=2000")
        assert resumed.returncode == 1
        assert resumed.stderr.strip() == (
            f"error: {finished_run.resolve()} is in use by another nmt process (PID "
            f"{holder.pid}): one run folder takes one process at a time; wait for it "
            "to end, or stop it"
        )
        assert fingerprint(finished_run) == before and not (finished_run / ".hydra").exists()
        with pytest.raises(RunFolderError, match=f"PID {holder.pid}"):
            run_folder.hold(finished_run)  # the library refuses too
        fresh = tmp_path / "fresh"
        fresh_holder = _holder(fresh)
        try:
            assert "is in use by another nmt process" in nmt_train("train=debug", f"hydra.run.dir={fresh}").stderr
            assert sorted(os.listdir(fresh)) == [run_folder.LOCK_NAME]  # nothing written
        finally:
            fresh_holder.kill()
            fresh_holder.wait()
    finally:
        holder.kill()  # SIGKILL: the operating system releases the lock
        holder.wait()
    assert run_folder.hold(finished_run) is True
    run_folder.release(finished_run)


def test_a_named_folder_that_does_not_exist_yet_is_held_before_hydra_starts(tmp_path):
    """Of two commands started at once with one new hydra.run.dir, the second stops before
    its Hydra writes .hydra/ there: the first made and holds the folder already."""
    from nmt.commands.train import check_run_folder

    new = tmp_path / "new" / "run"
    check_run_folder({"hydra.run.dir": str(new)})
    try:
        assert new.is_dir() and sorted(os.listdir(new)) == [run_folder.LOCK_NAME]
        probe = "from nmt import run_folder; run_folder.hold(%r)" % str(new)
        other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=60)
        assert other.returncode == 1 and f"PID {os.getpid()}" in other.stderr
    finally:
        run_folder.release(new)
    # A command that then fails before Hydra starts leaves nothing of what this made.
    gone = tmp_path / "gone" / "a" / "run"
    code = f"from nmt.commands.train import check_run_folder; check_run_folder({{'hydra.run.dir': {str(gone)!r}}}); exit(1)"
    failed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert failed.returncode == 1 and not (tmp_path / "gone").exists()


@pytest.mark.parametrize("below", [False, True])
def test_a_named_folder_that_is_a_file_is_one_line(tmp_path, capsys, below):
    from nmt.commands.train import check_run_folder

    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    run_dir = notes / "run" if below else notes
    with pytest.raises(SystemExit) as exit_:
        check_run_folder({"hydra.run.dir": str(run_dir)})
    assert exit_.value.code == 1
    problem = capsys.readouterr().err.strip().splitlines()
    assert len(problem) == 1 and problem[0].startswith(f"error: hydra.run.dir={run_dir}: ")
    assert "is a file" in problem[0] or "not a directory" in problem[0].lower()
    assert notes.read_text() == "mine\n"


def test_default_run_folders_never_collide(tmp_path):
    name = str(tmp_path / "outputs" / "bible_es_en" / "small" / "2026-12-01_10-00-00")
    Path(name).mkdir(parents=True)  # another process's run, started in the same second
    first = run_folder_for(None, name)
    assert first == f"{name}-2" and Path(first).is_dir()
    assert run_folder_for(None, name) == first  # Hydra may resolve it again: the same folder
    assert str(run_folder.claim_new_folder(name)) == f"{name}-3"
    assert run_folder_for(str(tmp_path / "old"), name) == str(tmp_path / "old")  # resume: its own folder


# --------------------------------------------------------------------------- 5. never stuck between states


def test_a_run_killed_before_its_first_checkpoint_can_be_resumed_from_step_0(tmp_path, word_corpus, cache_dir, monkeypatch):
    import nmt.training

    cfg = quick_config(word_corpus, cache_dir)
    straight = train(quick_config(word_corpus, cache_dir), tmp_path / "straight")
    run_dir = tmp_path / "killed"

    def killed(*args, **kwargs):  # the process dies during set-up: config.yaml is there, no checkpoint
        raise KeyboardInterrupt

    monkeypatch.setattr(nmt.training, "build_trainer", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run_dir)
    monkeypatch.undo()
    assert (run_dir / "config.yaml").exists() and not list(run_dir.glob("*.pt"))
    assert run_folder.new_run_problem(run_dir) is None  # nothing to lose: a new run may take the folder too
    summary = train(resume_config(run_dir, []), run_dir, resume=True)
    assert summary["steps"] == straight["steps"] == 6
    resumed, fresh = load_checkpoint(run_dir / "last.pt")["model"], load_checkpoint(tmp_path / "straight" / "last.pt")
    assert all(torch.equal(resumed[k], fresh["model"][k]) for k in resumed)
    assert [m["step"] for m in run_folder.read_metrics(run_dir)] == [3, 6]


def test_a_failed_run_leaves_no_folder_hydra_named(tmp_path):
    """A failure after config.yaml is written (the corpus is missing) removes the new folder too."""
    result = nmt_train(
        "train=debug", "data=files", f"data.path={tmp_path / 'missing'}", "data.src_lang=es", "data.tgt_lang=en", cwd=tmp_path
    )
    assert result.returncode == 1 and "missing" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_sigterm_during_set_up_exits_75_and_the_folder_resumes(tmp_path, word_corpus, cache_dir):
    run_dir = tmp_path / "run"
    overrides = word_corpus_overrides(word_corpus, cache_dir) + QUICK + [f"hydra.run.dir={run_dir}"]
    script = textwrap.dedent(f"""
        import sys, time
        import nmt.training
        from nmt.commands.train import main
        def slow_corpus(*args, **kwargs):  # a large corpus: minutes of loading
            print("loading", flush=True)
            time.sleep(120)
        nmt.training.load_corpus = slow_corpus
        sys.argv = ["nmt-train", *{overrides!r}]
        main()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "loading"
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert time.monotonic() - start < 20  # not after the two minutes of loading
    assert f"stopped by a signal during set-up. Continue with: nmt-train resume={run_dir}" in out
    assert run_folder.resume_folder_problem(run_dir) is None
    summary = train(resume_config(run_dir, []), run_dir, resume=True)
    assert summary["steps"] == 6


def test_leftover_temporary_files_are_removed_on_resume(tmp_path, word_corpus, cache_dir):
    run_dir = tmp_path / "run"
    train(quick_config(word_corpus, cache_dir, "train.max_steps=3"), run_dir)
    leftovers = [
        run_dir / ".last.pt.k2j4x.tmp",
        run_dir / ".step-3.pt.link.tmp",
        run_dir / ".config.yaml.tmp",
        run_dir / ".metrics.jsonl.tmp",
    ]
    for path in leftovers:
        path.write_bytes(b"half a checkpoint")
    (run_dir / "notes.tmp").write_text("the user's")
    (run_dir / ".notes.tmp").write_text("the user's, hidden")
    train(resume_config(run_dir, ["train.max_steps=6"]), run_dir, resume=True)
    assert not any(path.exists() for path in leftovers)
    assert (run_dir / "notes.tmp").exists() and (run_dir / ".notes.tmp").exists()


# --------------------------------------------------------------------------- 6. a damaged config.yaml


def _cut_at_a_line(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[: len(lines) // 2])  # still valid YAML, half of the settings gone


@pytest.mark.parametrize(
    "damage,problem",
    [
        (lambda text: "", "is empty"),
        (lambda text: "train: [unclosed\n", "cannot be read (ParserError"),
        (lambda text: "just text\n", "lacks its data, model, train section(s)"),
        (_cut_at_a_line, "was cut short (its closing line '# end of the settings' is missing)"),
        (lambda text: text.replace("  max_steps: ", "  max_steps: six #"), "does not fit the settings (train.max_steps: "),
        (lambda text: text.replace("  max_steps: ", "  max_stepz: "), "does not fit the settings (train.max_stepz: "),
    ],
)
def test_a_damaged_config_yaml_is_refused_before_anything_is_touched(finished_run, damage, problem):
    config = finished_run / "config.yaml"
    damaged = damage(config.read_text())
    assert damaged != config.read_text()
    config.write_text(damaged)
    before = fingerprint(finished_run)
    result = nmt_train(f"resume={finished_run}")
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith(f"error: {finished_run / 'config.yaml'} {problem}") and len(line.splitlines()) == 1
    assert f"nmt-train resume={finished_run} resume_settings=checkpoint rewrites config.yaml" in line
    assert fingerprint(finished_run) == before  # spm.model, checkpoints: as they were
    assert not (finished_run / ".hydra").exists()


def test_resume_settings_checkpoint_recovers_the_run_s_settings(finished_run, trained_run):
    (finished_run / "config.yaml").unlink()
    assert "add resume_settings=checkpoint" in run_folder.resume_folder_problem(finished_run)
    recovered = resume_config(finished_run, ["train.max_steps=2000"], settings="checkpoint")
    original = resume_config(trained_run, ["train.max_steps=2000"])
    assert recovered.model == original.model and recovered.data == original.data
    assert recovered.train == original.train


# --------------------------------------------------------------------------- 7. each validation once


def test_a_resume_keeps_each_validation_once_and_survives_a_torn_line(tmp_path, word_corpus, cache_dir, caplog):
    run_dir = tmp_path / "run"
    train(quick_config(word_corpus, cache_dir, "train.max_steps=3"), run_dir)  # validates and saves at step 3
    with open(run_dir / "metrics.jsonl", "a") as f:  # killed after the row of step 6, before its checkpoint
        f.write(json.dumps({"step": 6, "val_loss": 1.0}) + "\n" + '{"step": 9, "val_lo')  # and mid-write
    assert [m["step"] for m in run_folder.read_metrics(run_dir)] == [3, 6]
    assert "the last line is incomplete" in caplog.text
    train(resume_config(run_dir, ["train.max_steps=6"]), run_dir, resume=True)
    rows = run_folder.read_metrics(run_dir)
    assert [m["step"] for m in rows] == [3, 6] and rows[1]["val_loss"] != 1.0


def test_a_damaged_metrics_line_names_the_file_and_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 3}\nnot json\n{"step": 6}\n')
    with pytest.raises(RunFolderError, match=r"metrics.jsonl, line 2: not a metrics row"):
        run_folder.read_metrics(tmp_path)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=inf", "train.lr=inf: must be a finite number, greater than 0"),
        ("train.lr=nan", "train.lr=nan: must be a finite number, greater than 0"),
        ("train.clip_norm=-1", "train.clip_norm=-1.0: must be at least 0"),
        ("train.log_every=0", "train.log_every=0: must be at least 1"),
        ("train.max_steps=-1", "train.max_steps=-1: must be at least 0"),
        ("train.seed=-1", "train.seed=-1: must be at least 0"),
        ("train.label_smoothing=1", "train.label_smoothing=1.0: must be at least 0 and below 1"),
        ("train.betas=[0.9,1.0]", "train.betas=[0.9, 1.0]: must be at least 0 and below 1"),
        ("train.betas=[0.9]", "train.betas=[0.9]: Adam takes two, e.g. train.betas=[0.9,0.98]"),
        ("model.output_rank=-1", "model.output_rank=-1: must be at least 0"),
        ("data.max_train_pairs=-1", "data.max_train_pairs=-1: must be at least 0"),
        ("train.max_tokens=100", "train.max_tokens=100 is smaller than the longest pair allowed (train.max_subwords=128)"),
    ],
)
def test_settings_that_train_garbage_fail_before_set_up(tmp_path, override, message, monkeypatch):
    import nmt.training

    monkeypatch.setattr(nmt.training, "load_corpus", lambda *a, **k: pytest.fail("the corpus was read"))
    with pytest.raises(SettingError) as err:
        train(compose_config("train", ["train=debug", override]), tmp_path / "run")
    assert str(err.value).startswith(message)
    assert not (tmp_path / "run").exists()


def test_betas_are_checked_only_for_adam():
    from nmt.config import OptimConfig
    from nmt.optim import check_optim_settings

    check_optim_settings(OptimConfig(optimizer="adadelta", betas=[0.9]))  # Adadelta has no betas to use
    with pytest.raises(SettingError, match=r"train.betas=\[0.9\]: Adam takes two"):
        check_optim_settings(OptimConfig(optimizer="adam", betas=[0.9]))


@pytest.mark.parametrize(
    "command, override, message",
    [
        ("translate", "decode.length_penalty=nan", "decode.length_penalty=nan: must be a finite number"),
        ("translate", "decode.max_len_a=-1", "decode.max_len_a=-1.0: must be at least 0 and at most 100"),
        ("translate", "decode.max_len_b=-5", "decode.max_len_b=-5: must be at least 0 and at most 10000"),
        ("translate", "decode.max_len_b=100000000", "decode.max_len_b=100000000: must be at least 0 and at most 10000"),
        ("translate", "max_source_subwords=-1", "max_source_subwords=-1: must be at least 1"),
        ("evaluate", "max_sentences=-1", "max_sentences=-1: must be at least 0"),
        ("evaluate", "n_examples=-1", "n_examples=-1: must be at least 0"),
        ("score", "batch_tokens=0", "batch_tokens=0: must be at least 1"),
    ],
)
def test_negative_counts_and_absurd_lengths_are_refused(command, override, message):
    with pytest.raises(SettingError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        check_ranges(compose_config(command, ["ckpt=x", override]))


def test_refused_settings_are_one_line_before_the_checkpoint_is_read():
    result = run_command("nmt.commands.translate", "ckpt=missing.pt", "max_source_subwords=-1", stdin="hola\n", text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: max_source_subwords=-1: must be at least 1"


def test_max_subwords_that_leaves_no_pair_says_so(tmp_path, word_corpus, cache_dir):
    with pytest.raises(
        SettingError,
        match=r"train.max_subwords=1 leaves no training pair: all 400 have a side "
        r"longer \(the shortest: \d+ subwords\)",
    ):
        train(quick_config(word_corpus, cache_dir, "train.max_subwords=1"), tmp_path / "run")


def test_max_subwords_that_leaves_no_validation_pair_says_so_before_training():
    # Before, training ran until its first validation (an epoch, with no checkpoint) and died there.
    import datasets

    from nmt.training import split_ids

    table = datasets.Dataset.from_dict({"src_ids": [[4, 5, 6, 7], [4, 5, 6]], "tgt_ids": [[4, 5], [4, 5, 6, 7, 8]]})
    with pytest.raises(SettingError, match=r"^train.max_subwords=3 leaves no validation pair: all 2 have a side longer "):
        split_ids(table, limit=3, split="validation")
    kept, rows = split_ids(table, limit=5, split="validation")  # (lengths count the EOS)
    assert rows.tolist() == [0] and len(kept) == 1


def test_weights_that_are_not_finite_are_never_saved(tmp_path):
    state = {"model": {"w": torch.tensor([1.0, float("nan")]), "steps": torch.tensor([3])}, "step": 7}
    with pytest.raises(
        CheckpointError,
        match=r"best.pt not written: the model's weights are not finite "
        r"\(NaN or inf\) at step 7",
    ):
        save_checkpoint(state, tmp_path / "best.pt")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- damaged checkpoints


def _rewrite_entry(source: Path, target: Path, suffix: str, change) -> None:
    """Copy a checkpoint's zip, changing the entry whose name ends with ``suffix`` (CRCs stay valid)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as new:
        for info in old.infolist():
            data = old.read(info.filename)
            new.writestr(info, change(data) if info.filename.endswith(suffix) else data)


def test_damaged_checkpoints_are_one_line_naming_the_file(tmp_path, trained_run):
    best = trained_run / "best.pt"
    flipped = tmp_path / "flipped.pt"
    data = bytearray(best.read_bytes())
    data[len(data) // 2] ^= 0x04  # one bit, inside a tensor's data
    flipped.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"flipped.pt: damaged: .* does not match its checksum"):
        read_checkpoint(flipped)

    garbled = tmp_path / "garbled.pt"
    _rewrite_entry(best, garbled, "data.pkl", lambda data: data[:2] + b"garbage" + data[9:])
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(garbled)
    assert str(err.value).startswith(f"{garbled}: refused: its pickle is corrupt")
    assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value)

    state = load_checkpoint(best)
    incomplete = {key: value for key, value in state.items() if key not in ("format", "tokenizer")}
    save_checkpoint(incomplete, tmp_path / "incomplete.pt")
    with pytest.raises(CheckpointError, match=r"incomplete.pt: incomplete nmt checkpoint \(KeyError: 'tokenizer'\)"):
        read_checkpoint(tmp_path / "incomplete.pt")

    bad_tokenizer = {**state, "tokenizer": {"src": torch.full((64,), 7, dtype=torch.uint8), "tgt": state["tokenizer"]["tgt"]}}
    del bad_tokenizer["format"]
    save_checkpoint(bad_tokenizer, tmp_path / "tokenizer.pt")
    result = run_command("nmt.commands.translate", f"ckpt={tmp_path / 'tokenizer.pt'}", stdin="hola\n", text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {tmp_path / 'tokenizer.pt'}: its tokenizer (the SentencePiece model it "
        "carries) is damaged and cannot be read; use another checkpoint of the run"
    )


# --------------------------------------------------------------------------- damaged caches


def test_damaged_cache_files_are_named_and_rebuilt(tmp_path, word_corpus, caplog):
    from nmt.training import prepare_data

    cfg = quick_config(word_corpus, tmp_path / "cache").data
    before = prepare_data(cfg)
    cached = sorted(p for p in (tmp_path / "cache").rglob("*") if p.suffix in (".arrow", ".model"))
    assert {p.parent.name for p in cached} == {"files", "spm", "tokenized"}
    # A full disk or a killed copy: every cache file cut in half, in three rounds, since a
    # rebuilt file may change the names of those made from it: datasets' cleaned splits
    # (files/cache-*), the converted text files and tokenized splits, the tokenizer.
    rounds = [
        [p for p in cached if p.name.startswith("cache-")],
        [p for p in cached if p.suffix == ".arrow" and not p.name.startswith("cache-")],
        [p for p in cached if p.suffix == ".model"],
    ]
    for damaged in rounds:
        caplog.clear()
        for path in damaged:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        after = prepare_data(cfg)
        warnings = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        for path in damaged:  # datasets names its cache files; the warning names the split and the folder
            assert str(path) in warnings or (path.name.startswith("cache-") and "cleaned split cached under" in warnings), path
        pieces = [before.tokenizer.src.id_to_piece(i) for i in range(before.tokenizer.src_vocab_size)]
        assert [after.tokenizer.src.id_to_piece(i) for i in range(after.tokenizer.src_vocab_size)] == pieces
        assert after.data.train.src_values.tolist() == before.data.train.src_values.tolist()
        assert after.test_src_ids == before.test_src_ids
    # Bytes overwritten inside the text (a bad disk, a stray write), the size unchanged: the
    # files still frame, but their strings are no longer UTF-8. Found, named, rebuilt: the
    # cleaned splits of datasets.map first, then the converted text files.
    first_line = (word_corpus / "train.es").read_text().splitlines()[0].encode()
    for cleaned in (True, False):
        texts = [p for p in (tmp_path / "cache" / "files").glob("*.arrow") if p.name.startswith("cache-") == cleaned]
        hit = []
        for path in texts:
            data = bytearray(path.read_bytes())
            at = data.find(first_line)
            if at >= 0:
                data[at : at + 3] = b"\xff\xfe\xff"
                path.write_bytes(bytes(data))
                hit.append(path)
        assert hit, cleaned
        caplog.clear()
        after = prepare_data(cfg)
        warnings = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
        # (files left from the rounds above may be hit too, and are no longer read)
        assert "Invalid UTF8" in warnings and any(str(path) in warnings for path in hit), (cleaned, warnings)
        assert after.data.train.src_values.tolist() == before.data.train.src_values.tolist()


def test_validation_pairs_longer_than_max_subwords_are_left_out_and_counted(tmp_path, word_corpus, caplog):
    from nmt.training import prepare_data

    caplog.set_level(logging.INFO)

    cfg = quick_config(word_corpus, tmp_path / "cache").data
    full = prepare_data(cfg).data.validation
    limited = prepare_data(cfg, max_subwords=6).data.validation
    longest = [max(s, t) for s, t in zip(full.ids.src_lengths, full.ids.tgt_lengths)]
    kept = [i for i, n in enumerate(longest) if n <= 6]
    assert 0 < len(kept) < len(longest)
    assert len(limited.ids) == len(limited.src_ids) == len(limited.refs) == len(kept)
    assert limited.refs == [full.refs[i] for i in kept]
    assert f"skipping {len(longest) - len(kept)} validation pairs longer than 6 subwords" in caplog.text


# --------------------------------------------------------------------------- nmt-translate streams


def test_translate_writes_each_chunk_as_it_comes_from_a_pipe(any_run):
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmt.commands.translate", f"ckpt={any_run}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        proc.stdin.write(b"uno dos\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "no translation within 60 s of the first line: nmt-translate waited for the end of its input"
        assert proc.stdout.readline() == b"one two\n"  # before the input has ended
        proc.stdin.write(b"\n  \nuno dos\n")
        proc.stdin.close()
        assert proc.stdout.read() == b"\n\none two\n"
    finally:
        proc.kill()
        proc.wait()


def test_translate_streams_long_inputs_and_fails_without_a_partial_output(tmp_path, any_run):
    source = tmp_path / "source.txt"
    lines = ["uno dos", "", "gato"] * 4000  # 12 000 lines: three chunks
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "out.txt"
    translate = ("nmt.commands.translate", f"ckpt={any_run}", f"input={source}", f"output={output}")
    result = run_command(*translate, "nbest=2", text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr
    rows = [row.split("\t") for row in output.read_text().splitlines()]
    assert [int(row[0]) for row in rows[-3:]] == [11998, 11999, 11999]  # line numbers run on across chunks
    assert {row[4] for row in rows if int(row[0]) % 3 == 1} == {""}
    previous = output.read_bytes()
    source.write_bytes(source.read_bytes() + b"\xff\n")  # invalid UTF-8 on line 12 001
    result = run_command(*translate, text=True, timeout=300, env=ENV)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {source}:12001: invalid UTF-8 (invalid start byte at byte 1 of the line); re-encode the input as UTF-8"
    )
    assert output.read_bytes() == previous and sorted(os.listdir(tmp_path)) == ["out.txt", "source.txt"]


def nmt_evaluate(*args: str) -> subprocess.CompletedProcess:
    return run_command("nmt.commands.evaluate", *args, text=True, timeout=120)


def test_evaluate_never_writes_its_report_over_an_input(tmp_path):
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "hypotheses.txt").write_text("one two\n")
    hyps = tmp_path / "hyps.txt"
    os.link(report_dir / "hypotheses.txt", hyps)  # another name, the same file
    result = nmt_evaluate(f"hyps={hyps}", f"refs={hyps}", f"report_dir={report_dir}")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: hyps={hyps} is {report_dir / 'hypotheses.txt'}, which writing would destroy; choose another report_dir="
    )
    assert sorted(os.listdir(report_dir)) == ["hypotheses.txt"]


def test_evaluate_never_removes_an_input_named_as_an_old_report_s_figure(tmp_path):
    """A replaced report drops the old report's figures (those its report.json lists): never one that is an input."""
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    hyps = report_dir / "alignment-1.png"
    hyps.write_text("one two\n")
    result = nmt_evaluate(f"hyps={hyps}", f"refs={hyps}", f"report_dir={report_dir}")
    assert result.returncode == 0, result.stderr  # no earlier report: the file is not one of its figures
    assert hyps.read_text() == "one two\n"
    report = json.loads((report_dir / "report.json").read_text())
    (report_dir / "report.json").write_text(json.dumps({**report, "figures": [{"title": "a", "file": hyps.name}]}))
    result = nmt_evaluate(f"hyps={hyps}", f"refs={hyps}", f"report_dir={report_dir}")
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: hyps={hyps} is {hyps}, which writing would destroy; choose another report_dir="
    assert hyps.read_text() == "one two\n"
