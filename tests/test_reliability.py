"""Crash-safe training and hostile input: the promises of docs/reliability.md, end to end.

One tiny model (TINY_MODEL, dropout on so that RNG state matters) trained for
N=12 steps on the word corpus is the reference every resume is compared with,
bit for bit. With train.max_tokens=768 an epoch is 7 batches, so the N/2=6
checkpoint falls mid-epoch and the run crosses an epoch boundary; with
val_every=3, plateau decay after every stalled validation and patience>0, the
validation, early-stopping and learning-rate state all change along the way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

import nmt.inference
import nmt.training
from nmt.checkpoint import CheckpointError, load_checkpoint, load_for_resume, read_checkpoint
from nmt.commands.train import resume_config
from nmt.commands.translate import run_translate
from nmt.data import normalize_text
from nmt.errors import TrainingError
from nmt.inference import load_translator
from nmt.model import RNNEncoderDecoder
from nmt.run_folder import read_metrics
from nmt.runtime import PREEMPTED_EXIT_CODE, StopRequest, configure_device
from nmt.search import Hypothesis
from nmt.trainer import Trainer
from nmt.training import build_trainer, train
from tests.commands import run_command
from tests.conftest import TINY_MODEL, TINY_RNNSEARCH, compose_config, word_corpus_overrides

N = 12

RUN = [o for o in TINY_MODEL if not o.startswith("model.dropout")] + [
    "model.dropout=0.3",  # dropout draws from the RNG: a resume must restore it
    "train=debug",
    "train.device=cpu",
    "train.max_epochs=100",
    "train.max_tokens=768",
    "train.val_every=3",
    "train.val_max_sentences=4",
    "train.log_every=1",
    "train.lr=0.003",
    "train.lr_schedule=plateau",
    "train.lr_patience=0",
    "train.lr_decay=0.5",
    "train.patience=100",
    "train.early_stopping_metric=val_bleu",
    "train.keep_last=2",
    "train.save_every=0",
    "train.clip_norm=1.0",
    "train.max_nonfinite_steps=10",
    "train.seed=1",
    "evaluate_test=false",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads are ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_config(corpus, cache, *extra):
    return compose_config("train", word_corpus_overrides(corpus, cache) + RUN + list(extra))


def model_of(run_dir: Path) -> dict:
    return load_checkpoint(Path(run_dir) / "last.pt")["model"]


def assert_same_parameters(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def losses(run_dir: Path) -> list[tuple]:
    """Per validation: what must be the same, bit for bit (not the timings)."""
    return [
        (m["step"], m["train_loss"], m["val_loss"], m["val_bleu"], m["lr"], m["best"], m["skipped_steps"])
        for m in read_metrics(run_dir)
    ]


def progress_of(run_dir: Path) -> dict:
    progress = dict(load_checkpoint(Path(run_dir) / "last.pt")["train_state"]["progress"])
    del progress["seconds"]
    return progress


@pytest.fixture(scope="module")
def straight(tmp_path_factory, word_corpus, cache_dir) -> Path:
    """N steps in one go: the reference run."""
    run_dir = tmp_path_factory.mktemp("straight")
    summary = train(run_config(word_corpus, cache_dir, f"train.max_steps={N}"), run_dir)
    assert summary["steps"] == N and summary["reason"] == "max_steps"
    return run_dir


# --------------------------------------------------------------------------- checkpoints and exact resume


def test_step_checkpoints_are_pruned_to_keep_last(straight):
    names = {p.name for p in straight.iterdir()}
    assert {"best.pt", "last.pt", "config.yaml"} <= names
    assert sorted(n for n in names if n.startswith("step-")) == ["step-12.pt", "step-9.pt"]  # keep_last=2
    assert not [n for n in names if n.endswith(".tmp")]
    assert "train_state" in load_checkpoint(straight / "last.pt")
    assert "train_state" not in load_checkpoint(straight / "best.pt")


def test_resume_is_exact(straight, tmp_path, word_corpus, cache_dir):
    """N/2 steps, stop, resume to N == N steps straight: every parameter, every logged loss."""
    half = train(run_config(word_corpus, cache_dir, f"train.max_steps={N // 2}"), tmp_path)
    assert half["steps"] == N // 2
    at_half = progress_of(tmp_path)
    assert at_half["epoch"] == 0 and 0 < at_half["batch_in_epoch"] < 7, f"not mid-epoch: {at_half}"
    assert at_half["bad_validations"] or at_half["best_step"]  # early-stopping state is there to restore

    resumed = train(run_config(word_corpus, cache_dir, f"train.max_steps={N}"), tmp_path, resume=True)
    assert resumed["steps"] == N
    assert_same_parameters(model_of(tmp_path), model_of(straight))
    assert losses(tmp_path) == losses(straight)
    assert progress_of(tmp_path)["epoch"] == 1  # crossed an epoch boundary after resuming
    for key in ("epoch", "batch_in_epoch", "best_value", "best_step", "bad_validations", "history"):
        assert progress_of(tmp_path)[key] == progress_of(straight)[key], key
    ours, theirs = (load_checkpoint(d / "last.pt")["train_state"] for d in (tmp_path, straight))
    assert ours["schedule"] == theirs["schedule"] and ours["schedule"]["base_lr"] < 0.003  # plateau decayed
    for a, b in zip(ours["optimizer"]["state"].values(), theirs["optimizer"]["state"].values()):
        for key in a:
            assert torch.equal(a[key], b[key])
    # the resume's overrides are the run's config now: a plain resume=RUN_DIR keeps them
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["max_steps"] == N


def test_reading_losses_less_often_changes_nothing(tmp_path, word_corpus, cache_dir):
    """The host reads the device's losses every min(log_every, max_nonfinite_steps) steps:
    how often changes no number (here across an epoch boundary, no validation in between)."""
    runs = {}
    for every in (1, 5):
        run_dir = tmp_path / f"every-{every}"
        train(
            run_config(
                word_corpus,
                cache_dir,
                f"train.max_steps={N}",
                "train.val_every=0",
                f"train.log_every={every}",
                f"train.max_nonfinite_steps={max(every, 2)}",
            ),
            run_dir,
        )
        runs[every] = run_dir
    assert_same_parameters(model_of(runs[5]), model_of(runs[1]))
    assert losses(runs[5]) == losses(runs[1])
    assert progress_of(runs[1])["epoch"] >= 1, "the run should cross an epoch boundary"
    ours, theirs = progress_of(runs[5]), progress_of(runs[1])
    for key in ("train_loss_sum", "train_tokens", "nonfinite_total", "best_value", "epoch", "batch_in_epoch"):
        assert ours[key] == theirs[key], key
    a, b = (load_checkpoint(d / "last.pt")["train_state"]["optimizer"]["state"] for d in (runs[5], runs[1]))
    for x, y in zip(a.values(), b.values()):
        for key in x:
            assert torch.equal(x[key], y[key]), key


def test_resuming_a_run_at_its_limit_says_which_setting_to_raise(straight, tmp_path, word_corpus, cache_dir, caplog):
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    with caplog.at_level(logging.WARNING, logger="nmt.trainer"):
        summary = train(run_config(word_corpus, cache_dir, f"train.max_steps={N}"), run_dir, resume=True)
    assert summary["steps"] == N
    assert f"already reached train.max_steps={N}: nothing left to train" in caplog.text
    assert f"(resume={run_dir} train.max_steps=...)" in caplog.text


def test_resuming_a_finished_run_decodes_nothing_and_rewrites_nothing(tmp_path, word_corpus, cache_dir, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = run_config(
        word_corpus, cache_dir, "train.max_steps=4", "evaluate_test=true", "train.average_last=2", "train.save_every=2"
    )
    first = train(cfg, run_dir)
    assert "test_bleu_greedy" in first and first["averaged_steps"][-1] == 4
    files = {
        path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in run_dir.glob("*") if path.suffix in (".pt", ".json")
    }

    def decoded_again(*args, **kwargs):
        raise AssertionError("the test split was decoded again")

    monkeypatch.setattr(nmt.training, "greedy_test_scores", decoded_again)
    again = train(cfg, run_dir, resume=True)
    assert again == first
    assert {
        path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in run_dir.glob("*") if path.name in files
    } == files
    moved = tmp_path / "moved"
    shutil.move(run_dir, moved)
    assert train(cfg, moved, resume=True) == {**first, "run_dir": str(moved)}  # the summary names where it is now
    monkeypatch.undo()
    (moved / "last.pt").write_bytes(b"PK")  # damaged: the resume falls back to step-4.pt, and finish() repairs last.pt
    assert train(cfg, moved, resume=True)["steps"] == 4
    assert load_checkpoint(moved / "last.pt")["step"] == 4
    run_dir = moved
    more = train(
        run_config(
            word_corpus, cache_dir, "train.max_steps=6", "evaluate_test=true", "train.average_last=2", "train.save_every=2"
        ),
        run_dir,
        resume=True,
    )
    assert more["steps"] == 6 and "test_bleu_greedy" in more and more["averaged_steps"][-1] == 6


def test_resume_from_a_plain_adam_checkpoint_continues_with_fused_adam(straight, tmp_path, word_corpus, cache_dir):
    """Checkpoints from before Adam was fused (fused: None, CPU step counts) resume into the fused
    optimizer, which then skips non-finite steps on the device, and the run stays exact."""
    from nmt.optim import skips_on_device

    train(run_config(word_corpus, cache_dir, f"train.max_steps={N // 2}"), tmp_path)
    for name in ("last.pt",) + tuple(p.name for p in tmp_path.glob("step-*.pt")):
        state = load_checkpoint(tmp_path / name)
        optimizer = state["train_state"]["optimizer"]
        for group in optimizer["param_groups"]:
            group["fused"], group["foreach"] = None, None
        for param_state in optimizer["state"].values():
            param_state["step"] = param_state["step"].cpu()
        torch.save(state, tmp_path / name)
    trainer, _ = build_trainer(run_config(word_corpus, cache_dir, f"train.max_steps={N}"), tmp_path)
    trainer.restore(load_for_resume(tmp_path))
    assert skips_on_device(trainer.optimizer)
    resumed = train(run_config(word_corpus, cache_dir, f"train.max_steps={N}"), tmp_path, resume=True)
    assert resumed["steps"] == N
    assert_same_parameters(model_of(tmp_path), model_of(straight))


@pytest.fixture
def no_default_sigterm():
    """Where training did not catch SIGTERM, this records it instead of killing pytest."""
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, previous)


def _signal_self_after(monkeypatch, step: int, signum=signal.SIGTERM) -> None:
    """Deliver a real signal to this process right after training step ``step``."""
    original = Trainer.train_step

    def train_step(self, batch, *args):
        out = original(self, batch, *args)
        if self.progress.step + 1 == step:  # progress.step counts this step once it returns
            signal.pthread_kill(threading.main_thread().ident, signum)
        return out

    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_preempted_then_resumed_is_exact(straight, tmp_path, word_corpus, cache_dir, monkeypatch, no_default_sigterm):
    """A SIGTERM between validations, mid-epoch: checkpoint, exit code 75, and an exact resume."""
    cfg = run_config(word_corpus, cache_dir, f"train.max_steps={N}")
    _signal_self_after(monkeypatch, 5)
    summary = train(cfg, tmp_path)
    assert not no_default_sigterm  # training's own handler took it
    assert summary["reason"] == "signal" and summary["exit_code"] == PREEMPTED_EXIT_CODE == 75
    assert summary["steps"] == 5
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 5
    assert (tmp_path / "step-5.pt").exists()
    assert not isinstance(getattr(signal.getsignal(signal.SIGTERM), "__self__", None), StopRequest)  # restored
    monkeypatch.undo()

    train(cfg, tmp_path, resume=True)
    assert_same_parameters(model_of(tmp_path), model_of(straight))
    assert losses(tmp_path) == losses(straight)


def test_resume_falls_back_to_an_older_step_checkpoint(straight, tmp_path, word_corpus, cache_dir, caplog):
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    last = run_dir / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # cut in half
    (run_dir / "step-12.pt").write_bytes(b"not a checkpoint at all")
    # metrics from before the crash, kept up to step 9 (what the step-9 checkpoint knew)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines if json.loads(line)["step"] <= 9))
    with caplog.at_level(logging.INFO, logger="nmt"):
        train(run_config(word_corpus, cache_dir, f"train.max_steps={N}"), run_dir, resume=True)
    assert "last.pt: truncated or corrupt" in caplog.text and "step-12.pt" in caplog.text
    assert "resumed from" in caplog.text and "step-9.pt at step 9" in caplog.text
    assert_same_parameters(model_of(run_dir), model_of(straight))
    assert losses(run_dir) == losses(straight)


def test_resume_config_allows_only_train_overrides(straight):
    cfg = resume_config(
        straight, ["resume=" + str(straight), "hydra.run.dir=/elsewhere", "train.max_steps=30", "train.patience=9"]
    )
    assert cfg.train.max_steps == 30 and cfg.train.patience == 9
    assert cfg.model.hidden_size == 64 and cfg.model.dropout == 0.3  # the run's own, not the defaults
    assert cfg.data.src_lang == "es" and cfg.resume is None
    # what is optimized cannot change: it would not match the restored optimizer state
    for bad in (
        ["model.hidden_size=8"],
        ["data.path=/tmp"],
        ["train=paper"],
        ["evaluate_test=true"],
        ["train.lr=0.5"],
        ["train.optimizer=adadelta"],
        ["train.early_stopping_metric=val_loss"],
    ):
        with pytest.raises(ValueError, match="cannot change when resuming"):
            resume_config(straight, bad)
    with pytest.raises(CheckpointError, match="no config.yaml"):
        resume_config(straight / "tensorboard", [])


def test_cfg_job_of_a_resume_prints_the_settings_it_would_train_with(straight):
    """--cfg job shows the run's own settings with the resume's overrides, not the defaults,
    and touches nothing in the run folder."""
    before = sorted(path.relative_to(straight) for path in straight.rglob("*"))
    shown = run_command("nmt.commands.train", f"resume={straight}", "train.max_steps=99", "--cfg", "job", text=True)
    assert shown.returncode == 0, shown.stderr
    cfg = yaml.safe_load(shown.stdout)
    assert cfg["train"]["max_steps"] == 99 and cfg["model"]["hidden_size"] == 64 and cfg["model"]["dropout"] == 0.3
    section = run_command("nmt.commands.train", f"resume={straight}", "--cfg", "job", "--package", "model", text=True)
    assert yaml.safe_load(section.stdout)["hidden_size"] == 64
    refused = run_command("nmt.commands.train", f"resume={straight}", "model.hidden_size=8", "--cfg", "job", text=True)
    assert refused.returncode == 1 and refused.stderr.startswith("error: resume: model.hidden_size=8 cannot change")
    assert len(refused.stderr.splitlines()) == 1
    assert sorted(path.relative_to(straight) for path in straight.rglob("*")) == before


def test_resume_allows_restating_the_run_s_own_values(straight, word_corpus, cache_dir):
    """A job script that starts a run and resumes it with the same command line is not refused."""
    restated = ["evaluate_test=false", "train.lr=0.003", "+model.hidden_size=64", "model.dropout=0.3", "train.max_steps=20"]
    cfg = resume_config(straight, restated)
    assert cfg.train.max_steps == 20 and cfg.train.lr == 0.003 and cfg.model.hidden_size == 64
    with pytest.raises(ValueError, match=r"resume: train.lr=0.004 model.dropout=0.2 cannot change when resuming"):
        resume_config(straight, ["train.lr=0.004", "model.dropout=0.2", "evaluate_test=false"])
    # A group's choice is compared with what Hydra composed of the command line.
    same_corpus = word_corpus_overrides(word_corpus, cache_dir)
    composed = compose_config("train", same_corpus + RUN)
    assert resume_config(straight, same_corpus, composed=composed).data.path == str(word_corpus)
    with pytest.raises(ValueError, match="cannot change when resuming"):
        resume_config(straight, ["data=files"])  # without the composition: refused, not guessed
    other = compose_config("train", ["data=toy"] + RUN)
    with pytest.raises(ValueError, match=r"resume: data=toy cannot change"):
        resume_config(straight, ["data=toy"], composed=other)
    # data.path as typed (relative) restates the absolute path train() saved
    relative = [o if not o.startswith("data.path=") else f"data.path={os.path.relpath(word_corpus)}" for o in same_corpus]
    assert resume_config(straight, relative, composed=compose_config("train", relative + RUN)).data.path == str(word_corpus)
    # train=debug restated after the run's max_steps changed: a limit may change, so it is no change
    line = same_corpus + RUN
    assert resume_config(straight, ["train=debug"], composed=compose_config("train", line)).train.max_steps == N
    # a recipe is never a restatement: the run has no setting "experiment"
    recipe = compose_config("train", ["+experiment=bible_rnnsearch"])
    with pytest.raises(ValueError, match=r"resume: experiment=bible_rnnsearch cannot change"):
        resume_config(straight, ["+experiment=bible_rnnsearch"], composed=recipe)


# --------------------------------------------------------------------------- signals, for real


def _wait(predicate, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def _nmt_train(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "nmt.commands.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"nmt-train did not finish in {timeout} s\n{out}\n{err}")


@pytest.mark.parametrize("model", [TINY_MODEL, TINY_RNNSEARCH], ids=["cho2014", "rnnsearch"])
def test_sigterm_checkpoints_exits_75_and_resume_continues(tmp_path, word_corpus, cache_dir, model):
    run_dir = tmp_path / "run"
    forever = (
        word_corpus_overrides(word_corpus, cache_dir)
        + model
        + [
            "train=debug",
            "train.device=cpu",
            "train.max_steps=0",
            "train.max_epochs=100000",  # hours
            "train.max_tokens=256",
            "train.val_every=0",
            "train.save_every=2",
            "train.keep_last=2",
            "train.val_max_sentences=4",
            "evaluate_test=false",
            f"hydra.run.dir={run_dir}",
        ]
    )
    proc = _nmt_train(forever, tmp_path)
    try:
        # training is under way once a step checkpoint appears
        started = _wait(lambda: any(run_dir.glob("step-*.pt")), timeout=120, proc=proc)
        assert started, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == PREEMPTED_EXIT_CODE, err
    assert "SIGTERM received" in out + err
    assert "stopped by a signal at step" in out and f"nmt-train resume={run_dir}" in out
    assert "Traceback" not in err
    stopped = load_checkpoint(run_dir / "last.pt")
    step = stopped["step"]
    assert step >= 2 and stopped["train_state"]["progress"]["step"] == step
    assert json.loads((run_dir / "summary.json").read_text())["reason"] == "signal"
    assert "stopped by a signal at step" in (run_dir / "train.log").read_text()

    # No hydra.run.dir: ${nmt_run_folder:${resume},...} makes the resumed run's folder the old one.
    proc = _nmt_train([f"resume={run_dir}", f"train.max_steps={step + 2}"], tmp_path)
    out, err = _finish(proc)
    assert proc.returncode == 0, err
    assert f"resumed from {run_dir / 'last.pt'} at step {step}" in out + err
    assert f"{step + 2} steps" in out
    assert load_checkpoint(run_dir / "last.pt")["step"] == step + 2
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == step + 2
    log_file = (run_dir / "train.log").read_text()  # the console's validation and summary lines too
    assert f"step {step + 2}: val loss" in log_file and f"nmt-train: {step + 2} steps" in log_file
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["max_steps"] == step + 2
    started = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    assert "train.max_epochs=100000" in started and not any(o.startswith("resume=") for o in started)  # kept
    (resumed,) = (run_dir / ".hydra").glob("*/overrides.yaml")  # the resume's own record beside it
    assert yaml.safe_load(resumed.read_text())[0] == f"resume={run_dir}"
    assert not (tmp_path / "outputs").exists()  # nothing went to a fresh run folder


def test_sigint_sets_the_flag_and_a_second_sigint_aborts(no_default_sigterm, caplog):
    main = threading.main_thread().ident
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop
        signal.pthread_kill(main, signal.SIGTERM)
        assert _wait(lambda: bool(stop), 5)
        assert stop.signal_name == "SIGTERM"
        assert "SIGTERM received: saving a checkpoint" in caplog.text and "Ctrl-C" not in caplog.text  # a scheduler's
        signal.pthread_kill(main, signal.SIGTERM)  # a second SIGTERM: still just the flag
        time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt):
            signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C after a stop request: out at once
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # restored
    assert not no_default_sigterm
    with StopRequest() as stop:
        signal.pthread_kill(main, signal.SIGINT)  # the first Ctrl-C only asks ...
        assert _wait(lambda: bool(stop), 5) and stop.signal_name == "SIGINT"
        assert "(Ctrl-C again to abort)" in caplog.text
        with pytest.raises(KeyboardInterrupt):  # ... the second one aborts
            signal.pthread_kill(main, signal.SIGINT)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                pass


# --------------------------------------------------------------------------- non-finite loss or gradient


def _inject(monkeypatch, nan_loss_calls=(), inf_grad_calls=(), snapshots=None):
    """Poison chosen training steps (1-based calls): NaN loss, or an infinite gradient via a hook."""
    calls = {"loss": 0, "step": 0}
    original_loss, original_step = RNNEncoderDecoder.loss, Trainer.train_step

    def loss(self, *args, **kwargs):
        loss_sum, n_tokens = original_loss(self, *args, **kwargs)
        if self.training:
            calls["loss"] += 1
            if calls["loss"] in nan_loss_calls:
                loss_sum = loss_sum * float("nan")
        return loss_sum, n_tokens

    def train_step(self, batch, *args):
        calls["step"] += 1
        before = {k: v.clone() for k, v in self.model.state_dict().items()}
        opt_before = [{k: v.clone() for k, v in s.items()} for s in self.optimizer.state.values()]
        hook = None
        if calls["step"] in inf_grad_calls:
            hook = self.model.tgt_embed.weight.register_hook(lambda g: torch.full_like(g, float("inf")))
        try:
            out = original_step(self, batch, *args)
        finally:
            if hook is not None:
                hook.remove()
        if snapshots is not None:
            after = self.model.state_dict()
            snapshots.append(
                {
                    "call": calls["step"],
                    "skipped": not bool(out.finite),
                    "unchanged": all(torch.equal(before[k], after[k]) for k in before),
                    "optimizer_unchanged": all(
                        all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(opt_before, self.optimizer.state.values())
                    ),
                    "params": {k: v.clone() for k, v in after.items()},
                }
            )
        return out

    monkeypatch.setattr(RNNEncoderDecoder, "loss", loss)
    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_nonfinite_steps_are_skipped_counted_and_logged(tmp_path, word_corpus, cache_dir, monkeypatch, caplog):
    snapshots = []
    _inject(monkeypatch, nan_loss_calls={3}, inf_grad_calls={5}, snapshots=snapshots)
    cfg = run_config(
        word_corpus, cache_dir, "train.max_steps=8", "train.val_every=4", "train.max_nonfinite_steps=2"
    )  # 2 in a row would stop: these are not in a row
    with caplog.at_level(logging.WARNING, logger="nmt.trainer"):
        summary = train(cfg, tmp_path)
    assert summary["steps"] == 8 and summary["skipped_steps"] == 2
    assert [s["call"] for s in snapshots if s["skipped"]] == [3, 5]
    for s in snapshots:
        assert s["unchanged"] == s["skipped"], s["call"]  # skipped: not one weight moved; else they did
        if s["skipped"]:
            assert s["optimizer_unchanged"]  # Adam's moments and step count too
    assert "step 3: non-finite loss or gradient; step skipped" in caplog.text
    assert "step 5: non-finite loss or gradient; step skipped" in caplog.text
    assert [m["skipped_steps"] for m in read_metrics(tmp_path)] == [1, 2]
    for value in model_of(tmp_path).values():
        assert torch.isfinite(value.float()).all()


def test_too_many_nonfinite_steps_in_a_row_stop_with_a_checkpoint(tmp_path, word_corpus, cache_dir, monkeypatch):
    """Steps are read every log_every steps (and before a validation): the run of 3 skipped
    steps (3-5) is found at the first read after step 5; training stops there, and the
    checkpoint holds the weights of step 2, the last finite one."""
    snapshots = []
    _inject(monkeypatch, nan_loss_calls=set(range(3, 100)), snapshots=snapshots)
    cfg = run_config(
        word_corpus,
        cache_dir,
        "train.max_steps=50",
        "train.max_nonfinite_steps=3",
        "train.log_every=4",
        "train.val_every=0",  # read at step 4, then 7 (epoch end) or 8
        "train.clip_norm=0",
    )  # the unclipped path computes its own gradient norm
    with pytest.raises(TrainingError) as err:
        train(cfg, tmp_path)
    saved = load_checkpoint(tmp_path / "last.pt")
    stopped = saved["step"]
    assert 5 < stopped <= 8
    message = str(err.value)
    assert f"3 consecutive steps had a non-finite loss or gradient (steps 3-5); stopped at step {stopped}" in message
    assert str(tmp_path) in message
    assert [s["skipped"] for s in snapshots] == [False, False] + [True] * (stopped - 2)
    assert saved["train_state"]["progress"]["nonfinite_total"] == stopped - 2
    assert_same_parameters(saved["model"], snapshots[1]["params"])  # the weights after step 2, finite


def test_nonfinite_steps_are_skipped_by_the_host_for_optimizers_that_cannot(tmp_path, word_corpus, cache_dir, monkeypatch):
    """Adadelta has no fused form: the host reads the finite flag (one sync) and skips the update."""
    snapshots = []
    _inject(monkeypatch, nan_loss_calls={2}, snapshots=snapshots)
    cfg = run_config(word_corpus, cache_dir, "train.max_steps=3", "train.optimizer=adadelta", "train.lr=1.0")
    summary = train(cfg, tmp_path)
    assert summary["skipped_steps"] == 1
    assert [(s["skipped"], s["unchanged"]) for s in snapshots] == [(False, False), (True, True), (False, False)]
    assert snapshots[1]["optimizer_unchanged"]


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_same_config_same_run(straight, tmp_path, word_corpus, cache_dir):
    train(run_config(word_corpus, cache_dir, f"train.max_steps={N}"), tmp_path)
    assert_same_parameters(model_of(tmp_path), model_of(straight))
    assert losses(tmp_path) == losses(straight)


def test_deterministic_flag_sets_cudnn_and_cublas(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        configure_device("cpu", deterministic=False)
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ and not torch.backends.cudnn.deterministic

        configure_device("cpu", deterministic=True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()

        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own choice is kept
        configure_device("cpu", deterministic=True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)


# --------------------------------------------------------------------------- hostile translation input

LONG = ("casa perro 🐶 gato " * 7000)[:100_000]
HOSTILE_LINES = [  # (raw bytes of the line, how it ends)
    (b"uno dos tres", b"\n"),
    (b"", b"\n"),
    (b"   \t  ", b"\r\n"),
    ("\u3000\u00a0 ".encode(), b"\n"),  # ideographic space and no-break space only
    (b"casa \x00 perro \x1b[31m gato \x07 rojo", b"\r\n"),
    (b"\x00\x07\x1b", b"\n"),  # control characters only: an empty line
    ("uno\u2028dos\u2029tres".encode(), b"\n"),  # Unicode line/paragraph separators stay inside
    ("cuatro\u0085cinco".encode(), b"\r\n"),  # NEL too
    (b"seis\rsiete", b"\n"),  # a lone CR inside a line
    (LONG.encode(), b"\n"),
    ("مرحبا بالعالم".encode(), b"\r\n"),  # right to left
    ("שלום עולם uno".encode(), b"\n"),
    ("perro 🐶 gato 🐱 👩‍👩‍👧 🇪🇸".encode(), b"\n"),
    (b"rojo \xff\xfe azul \xc3 (broken UTF-8)", b"\r\n"),
    (b"", b"\r\n"),
    ("\u2028".encode(), b"\n"),
    (b"diez", b""),  # no newline at the end of the file
]
INVALID_LINE = 14  # 1-based number of the line with invalid UTF-8


@pytest.fixture(scope="module")
def hostile_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "hostile.txt"
    path.write_bytes(b"".join(line + end for line, end in HOSTILE_LINES))
    assert len(LONG) == 100_000
    return path


def expected_texts() -> list[str]:
    return [line.decode("utf-8", errors="replace") for line, _ in HOSTILE_LINES]


def empty_indices() -> list[int]:
    return [i for i, text in enumerate(expected_texts()) if not normalize_text(text)]


def translate_file(ckpt, src: Path, out: Path, *overrides: str) -> list[str]:
    cfg = compose_config(
        "translate", [f"ckpt={ckpt}", f"input={src}", f"output={out}", "device=cpu", "replace_invalid_utf8=true", *overrides]
    )
    assert run_translate(cfg) == 0
    raw = out.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw
    return raw.decode("utf-8").split("\n")[:-1]  # split on "\n" only: U+2028 in output would show


def test_hostile_input_one_line_out_per_line_in_in_order(straight, hostile_file, tmp_path, monkeypatch):
    """With a search that echoes its source, every output line must be its own input line, normalized."""

    def echo_search(model, src, src_lengths, *args, **kwargs):
        return [[Hypothesis(src[i, : int(src_lengths[i]) - 1].tolist(), 0.0, 0.0)] for i in range(len(src))]

    monkeypatch.setattr(nmt.inference, "search", echo_search)
    texts = expected_texts()
    tokenizer = load_translator(straight, "cpu").tokenizer
    for batch_tokens in (6000, 300, 1):
        out = translate_file(
            straight, hostile_file, tmp_path / f"echo-{batch_tokens}.txt", f"decode.batch_tokens={batch_tokens}"
        )
        assert len(out) == len(texts)
        for i, (got, text) in enumerate(zip(out, texts)):
            ids = tokenizer.encode_src([normalize_text(text)])[0][:250]  # max_source_subwords
            assert got == normalize_text(tokenizer.decode_tgt([ids])[0]), i
            if i not in (9, 13):  # the 100 000-character line is cut to 250 subwords; SentencePiece drops U+FFFD
                assert got == normalize_text(text), i
        assert out[0] == "uno dos tres" and out[10] == "مرحبا بالعالم" and out[13].startswith("rojo azul")
        assert [i for i, line in enumerate(out) if not line] == empty_indices()
        assert 0 < len(out[9]) < 2000 and normalize_text(LONG).startswith(out[9])


@pytest.mark.parametrize("decode", ["greedy", "beam"])
def test_hostile_input_real_search(straight, hostile_file, tmp_path, decode):
    """The real model, greedy and beam, several batch sizes: one line per line, empties where inputs are."""
    for batch_tokens in (6000, 64):
        out = translate_file(
            straight,
            hostile_file,
            tmp_path / f"{decode}-{batch_tokens}.txt",
            f"decode={decode}",
            f"decode.batch_tokens={batch_tokens}",
        )
        assert len(out) == len(HOSTILE_LINES)
        assert [i for i, line in enumerate(out) if not line] == empty_indices()
        for line in out:
            assert line == normalize_text(line)  # one clean line each: no control or separator characters


def _nmt_translate(*args: str) -> subprocess.CompletedProcess:
    return run_command("nmt.commands.translate", *args, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_hostile_input_through_the_cli(straight, hostile_file, tmp_path):
    out = tmp_path / "out.txt"
    proc = _nmt_translate(
        f"ckpt={straight}",
        f"input={hostile_file}",
        f"output={out}",
        "replace_invalid_utf8=true",
        "decode=beam",
        "decode.batch_tokens=200",
        "device=cpu",
    )
    assert proc.returncode == 0, proc.stderr
    lines = out.read_bytes().decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == len(HOSTILE_LINES)
    assert [i for i, line in enumerate(lines[:-1]) if not line] == empty_indices()


def test_invalid_utf8_without_replacement_is_an_error_naming_the_line(straight, hostile_file, tmp_path):
    out = tmp_path / "out.txt"
    proc = _nmt_translate(f"ckpt={straight}", f"input={hostile_file}", f"output={out}", "device=cpu")
    assert proc.returncode == 1
    assert f"{hostile_file}:{INVALID_LINE}: invalid UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing half-written


def test_a_validation_metric_that_is_not_finite_is_never_best(tmp_path, word_corpus, cache_dir, monkeypatch):
    """A NaN first validation would be best.pt for good (nothing compares better than NaN)."""
    import nmt.trainer

    real, calls = nmt.trainer.validation_metrics, []

    def nan_first(trainer):
        metrics = real(trainer)
        calls.append(metrics["step"])
        if len(calls) == 1:
            metrics = {**metrics, trainer.opt.early_stopping_metric: float("nan")}
        return metrics

    monkeypatch.setattr(nmt.trainer, "validation_metrics", nan_first)
    summary = train(run_config(word_corpus, cache_dir, "train.max_steps=4", "train.val_every=2"), tmp_path)
    rows = read_metrics(tmp_path)
    assert calls == [2, 4] and [row["best"] for row in rows] == [False, True]
    assert summary["best_step"] == 4 and read_checkpoint(tmp_path / "best.pt").step == 4
