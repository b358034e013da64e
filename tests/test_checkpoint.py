"""Checkpoint files: atomic writes, pruning, safe loading, clear errors (docs/reliability.md).

Everything here works on small synthetic states, so it runs in seconds; the
training-level guarantees (exact resume, preemption, ...) are in test_reliability.py.
"""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch

from nmt import checkpoint
from nmt.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    load_for_resume,
    prune_step_checkpoints,
    read_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)

REAL_TORCH_SAVE = torch.save


def state(value: float, train_state: bool = True, size: int = 4096) -> dict:
    """A checkpoint-shaped state: tensors, nested plain data and (optionally) training state."""
    s = {
        "model": {"w": torch.full((size,), value), "b": torch.arange(7)},
        "model_config": {"config": {"hidden_size": 8}, "src_vocab_size": 10, "tgt_vocab_size": 10},
        "tokenizer": {"src": torch.zeros(100, dtype=torch.uint8), "tgt": torch.zeros(100, dtype=torch.uint8)},
        "data_config": {"name": "toy"},
        "step": int(value),
    }
    if train_state:
        s["train_state"] = {
            "progress": {"step": int(value), "history": [(1, 2.0)]},
            "rng": {"python": [1, 2, 3]},
            "optimizer": {},
            "schedule": {},
            "train_config": {},
        }
    return s


FIXTURE = Path(__file__).parent / "fixtures" / "tiny-cho2014.pt"


def resumable_state(step: int) -> dict:
    """A real model's checkpoint (the tiny fixture's weights and tokenizer) with a training state at ``step``."""
    s = {key: value for key, value in load_checkpoint(FIXTURE).items() if key != "format"}
    s["step"] = step
    s["train_state"] = {
        "progress": {"step": step, "epoch": 0, "batch_in_epoch": step},
        "rng": {"python": [1, 2, 3]},
        "optimizer": {},
        "schedule": {},
        "train_config": {},
    }
    return s


def files(folder: Path) -> set[str]:
    """Every entry of the folder, hidden temporary files included."""
    return set(os.listdir(folder))


def assert_intact(path: Path, value: float) -> None:
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT
    assert torch.equal(loaded["model"]["w"], torch.full((4096,), value))


# --------------------------------------------------------------------------- atomic writes


def test_save_then_load_round_trip(tmp_path):
    save_checkpoint(state(3.0), tmp_path / "run" / "last.pt")  # creates the folder
    loaded = load_checkpoint(tmp_path / "run" / "last.pt")
    assert loaded["step"] == 3 and loaded["train_state"]["progress"]["history"] == [(1, 2.0)]
    assert files(tmp_path / "run") == {"last.pt"}


def _crash_mid_write(obj, f, *args, **kwargs):
    """Write the first half of a real checkpoint, then die (power cut, OOM kill, Ctrl-C)."""
    REAL_TORCH_SAVE(obj, f, *args, **kwargs)
    f.flush()
    f.seek(f.tell() // 2)
    f.truncate()
    raise KeyboardInterrupt


def _fail(exc):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.mark.parametrize(
    "target, replacement, expected",
    [
        ("torch.save", _crash_mid_write, KeyboardInterrupt),
        ("os.replace", _fail(OSError(errno.EIO, "Input/output error")), CheckpointError),
        ("os.fsync", _fail(OSError(errno.EIO, "Input/output error")), CheckpointError),
    ],
    ids=["crash-inside-torch.save", "os.replace-fails", "fsync-fails"],
)
def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch, target, replacement, expected):
    path = tmp_path / "last.pt"
    save_checkpoint(state(1.0), path)
    module, name = target.split(".")
    monkeypatch.setattr(getattr(checkpoint, module), name, replacement)
    with pytest.raises(expected):
        save_checkpoint(state(2.0), path)
    monkeypatch.undo()
    assert_intact(path, 1.0)  # the old checkpoint, whole
    assert files(tmp_path) == {"last.pt"}  # no .last.pt.*.tmp left behind


def test_prune_keeps_exactly_k_newest_step_checkpoints(tmp_path):
    for step in (5, 9, 10, 100, 20, 7):
        save_checkpoint(state(float(step)), tmp_path / f"step-{step}.pt")
    for name in ("best.pt", "last.pt"):
        save_checkpoint(state(0.0), tmp_path / name)
    prune_step_checkpoints(tmp_path, keep=3)
    # numeric order, not text order ("step-9" > "step-100" as text)
    assert files(tmp_path) == {"best.pt", "last.pt", "step-100.pt", "step-20.pt", "step-10.pt"}
    prune_step_checkpoints(tmp_path, keep=1)
    assert files(tmp_path) == {"best.pt", "last.pt", "step-100.pt"}


def test_prune_and_resume_consider_only_the_trainers_step_checkpoints(tmp_path):
    """A user's step-80-backup.pt is never deleted; step-best.pt never crashes a resume."""
    for name in ("step-80-backup.pt", "step-best.pt", "step-5.pt", "step-9.pt", "step-\u0669\u0669.pt"):
        save_checkpoint(resumable_state(9), tmp_path / name)
    (tmp_path / "step-0.pt").mkdir()  # a folder of that name is not a checkpoint either
    prune_step_checkpoints(tmp_path, keep=1)
    # Arabic-Indic digits (step-٩٩.pt) are no step number of ours, however \d reads them.
    assert files(tmp_path) == {"step-80-backup.pt", "step-best.pt", "step-9.pt", "step-\u0669\u0669.pt", "step-0.pt"}
    assert load_for_resume(tmp_path).path == tmp_path / "step-9.pt"


# --------------------------------------------------------------------------- disk full, unwritable folder


def _partial_then_enospc(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullDisk:
    """A file whose writes fail with ENOSPC after a few KiB, as a full disk's do."""

    def __init__(self, f, room: int = 2048):
        self.f, self.room = f, room

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.f.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _real_save_on_full_disk(obj, f, *args, **kwargs):
    # torch.save itself meets the failing write: it raises a RuntimeError
    # ("unexpected pos ..."), not the OSError, which save_checkpoint must still report.
    REAL_TORCH_SAVE(obj, _FullDisk(f), *args, **kwargs)


@pytest.mark.parametrize(
    "fake_save", [_partial_then_enospc, _real_save_on_full_disk], ids=["OSError-from-save", "write-fails-inside-torch.save"]
)
def test_disk_full_is_a_clear_error_and_keeps_previous(tmp_path, monkeypatch, fake_save):
    path = tmp_path / "last.pt"
    save_checkpoint(state(1.0), path)
    monkeypatch.setattr(checkpoint.torch, "save", fake_save)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(state(2.0), path)
    monkeypatch.undo()
    message = str(err.value)
    assert str(path) in message and "No space left on device" in message
    assert "previous checkpoint is intact" in message
    assert_intact(path, 1.0)
    assert files(tmp_path) == {"last.pt"}


class _InterruptedWrite(_FullDisk):
    """A file whose write is cut by Ctrl-C after a few KiB (the second Ctrl-C of a run
    saving the checkpoint the first one asked for)."""

    def write(self, data) -> int:
        if len(bytes(data)) > self.room:
            raise KeyboardInterrupt
        return super().write(data)


def test_ctrl_c_during_a_save_aborts_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """torch.save turns the KeyboardInterrupt into a RuntimeError ("unexpected pos ...");
    save_checkpoint gives the interrupt back, so the command says "interrupted (Ctrl-C)"."""
    path = tmp_path / "last.pt"
    save_checkpoint(state(1.0), path)
    monkeypatch.setattr(checkpoint.torch, "save", lambda obj, f, *a, **k: REAL_TORCH_SAVE(obj, _InterruptedWrite(f), *a, **k))
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(state(2.0), path)
    monkeypatch.undo()
    assert_intact(path, 1.0)
    assert files(tmp_path) == {"last.pt"}


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE / SIGXFSZ behaviour is Linux's")
def test_real_write_failure_from_the_kernel(tmp_path):
    """No monkeypatching: the kernel refuses the write (RLIMIT_FSIZE -> EFBIG) in a child process."""
    script = textwrap.dedent(f"""
        import os, resource, signal, torch
        from nmt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
        path = {str(tmp_path / "last.pt")!r}
        save_checkpoint({{"w": torch.zeros(10)}}, path)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        try:
            save_checkpoint({{"w": torch.ones(1 << 20)}}, path)
        except CheckpointError as err:
            print("CheckpointError:", err)
        assert load_checkpoint(path)["w"].shape == (10,)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "CheckpointError: could not write checkpoint" in proc.stdout
    assert "File too large" in proc.stdout
    assert files(tmp_path) == {"last.pt"}


def test_unwritable_folder_is_a_clear_error_simulated(tmp_path, monkeypatch):
    """What a read-only folder does to the temporary file, even where root ignores chmod."""
    path = tmp_path / "last.pt"
    save_checkpoint(state(1.0), path)
    monkeypatch.setattr(
        checkpoint.tempfile, "NamedTemporaryFile", _fail(PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    )
    with pytest.raises(CheckpointError, match="Permission denied") as err:
        save_checkpoint(state(2.0), path)
    monkeypatch.undo()
    assert str(path) in str(err.value)
    assert_intact(path, 1.0)


def test_read_only_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "run"
    path = folder / "last.pt"
    save_checkpoint(state(1.0), path)
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("chmod does not stop this user (root) from writing")
        with pytest.raises(CheckpointError, match="Permission denied") as err:
            save_checkpoint(state(2.0), path)
        assert str(path) in str(err.value)
        assert_intact(path, 1.0)
        assert files(folder) == {"last.pt"}
    finally:
        folder.chmod(0o700)


# --------------------------------------------------------------------------- safe loading


class _Exploit:
    """Pickles as "call os.system(...)": what a booby-trapped checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > '{self.marker}'",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "model": {"w": torch.zeros(2)}, "x": _Exploit(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value) and "refused" in str(err.value)
    assert not marker.exists()
    # load_checkpoint is what stands between the file and the exploit: a plain
    # unpickler runs it (a harmless echo here).
    if writer == "pickle":
        with open(path, "rb") as f:
            pickle.load(f)
        assert marker.exists()


def _truncate_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "damage",
    [
        _truncate_half,
        lambda data: data[:-10],
        lambda data: b"",
        lambda data: b"hello world" * 3,  # not a zip, not a pickle: a KeyError inside torch.load
        lambda data: data[:200],
    ],
    ids=["half", "tail-cut", "empty", "garbage", "header-only"],
)
def test_corrupt_checkpoint_is_a_checkpoint_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "last.pt"
    save_checkpoint(state(1.0), path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_foreign_and_missing_files_are_checkpoint_errors(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")  # a torch file, not ours
    with pytest.raises(CheckpointError, match="not an nmt checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK")  # a checkpoint cut short
    with pytest.raises(CheckpointError, match="cut.pt: truncated or corrupt checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "README.md").write_text("# not a checkpoint\n")  # a text file: not a security refusal
    with pytest.raises(CheckpointError, match="README.md: not an nmt checkpoint; nmt-train writes best.pt"):
        load_checkpoint(tmp_path / "README.md")
    with pytest.raises(CheckpointError, match="without best.pt or last.pt"):
        resolve_checkpoint(tmp_path)


def test_resume_falls_back_past_corrupt_checkpoints(tmp_path, caplog):
    import logging

    save_checkpoint(resumable_state(10), tmp_path / "step-10.pt")
    save_checkpoint(resumable_state(20), tmp_path / "step-20.pt")
    save_checkpoint(resumable_state(20), tmp_path / "last.pt")
    save_checkpoint(state(20.0, train_state=False), tmp_path / "best.pt")  # never a resume point
    (tmp_path / "last.pt").write_bytes(_truncate_half((tmp_path / "last.pt").read_bytes()))
    (tmp_path / "step-20.pt").write_bytes(b"\x00" * 1000)
    log = logging.getLogger("test-resume")
    with caplog.at_level(logging.WARNING, logger="test-resume"):
        loaded = load_for_resume(tmp_path, log)
    assert loaded.path == tmp_path / "step-10.pt" and loaded.step == 10
    assert "last.pt" in caplog.text and "step-20.pt" in caplog.text

    (tmp_path / "step-10.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no loadable training checkpoint") as err:
        load_for_resume(tmp_path)
    assert "last.pt" in str(err.value) and "step-10.pt" in str(err.value)


@pytest.mark.parametrize(
    "damage,problem",
    [
        (lambda s: s["model"].pop("tgt_embed.weight"), "its weights do not fit its cho2014 model (missing tgt_embed.weight)"),
        (lambda s: s["model"].update(extra=torch.zeros(1)), "its weights do not fit its cho2014 model (unexpected extra)"),
        (
            lambda s: s["model"].update({"src_embed.weight": torch.zeros(3, 3)}),
            "its weights do not fit its cho2014 model (wrong shape src_embed.weight)",
        ),
        (lambda s: s["train_state"]["progress"].pop("step"), "its training progress is incomplete"),
        (lambda s: s["train_state"]["progress"].update(step=3), "its training progress says step 3 but the checkpoint step 20"),
        (lambda s: s["tokenizer"].update(src=torch.zeros(50, dtype=torch.uint8)), "its tokenizer"),
        (lambda s: s["model_config"]["config"].update(arch="transformer"), "its model settings cannot be built"),
    ],
)
def test_a_resume_skips_checkpoints_that_load_but_do_not_fit(tmp_path, caplog, damage, problem):
    """Right format, wrong contents: a newest checkpoint that would resume wrongly (from step 0,
    with a missing weight, an unreadable tokenizer) is named and skipped for the next intact one."""
    import logging

    save_checkpoint(resumable_state(10), tmp_path / "step-10.pt")
    damaged = resumable_state(20)
    damage(damaged)
    save_checkpoint(damaged, tmp_path / "last.pt")
    with caplog.at_level(logging.WARNING, logger="test-resume"):
        loaded = load_for_resume(tmp_path, logging.getLogger("test-resume"))
    assert loaded.path == tmp_path / "step-10.pt"
    assert f"{tmp_path / 'last.pt'}: {problem}" in caplog.text


def test_weights_that_do_not_fit_are_one_line_naming_the_file(tmp_path):
    damaged = resumable_state(20)
    damaged["model"].pop("encoder.rnn.weight_ih_l0")
    save_checkpoint(damaged, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / "bad.pt").build_model()
    assert str(err.value) == (
        f"{tmp_path / 'bad.pt'}: its weights do not fit its cho2014 model (missing encoder.rnn.weight_ih_l0); "
        "use another checkpoint of the run"
    )


def test_temporary_files_live_next_to_the_target(tmp_path, monkeypatch):
    """Same folder, so os.replace is a rename on one file system, never a copy."""
    seen = []
    real = tempfile.NamedTemporaryFile

    def spy(*args, **kwargs):
        seen.append(Path(kwargs["dir"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint.tempfile, "NamedTemporaryFile", spy)
    save_checkpoint(state(1.0), tmp_path / "sub" / "last.pt")
    assert seen == [tmp_path / "sub"]


def test_link_checkpoint_replaces_target_without_rewriting(tmp_path):
    from nmt.checkpoint import link_checkpoint

    save_checkpoint({"step": 1, "w": torch.ones(3)}, tmp_path / "last.pt")
    save_checkpoint({"step": 2, "w": torch.zeros(3)}, tmp_path / "step-2.pt")
    link_checkpoint(tmp_path / "step-2.pt", tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2
    assert os.path.samefile(tmp_path / "last.pt", tmp_path / "step-2.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "step-2.pt"]
