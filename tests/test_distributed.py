"""Data-parallel training under torchrun (issue 14): CPU, gloo, tiny models, real processes.

Most tests launch ``torchrun`` (``python -m torch.distributed.run``) as a user would, so
they are among the slowest tests of the suite for their size (seconds of process start-up each).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nmt.distributed import World
from tests.conftest import TINY_MODEL, compose_config, word_corpus_overrides

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "ddp_worker.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, timeout: int = 180, cwd=None) -> subprocess.CompletedProcess:
    command = TORCHRUN + ["--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd)


def worker(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=120, env=ENV)


@pytest.mark.parametrize("arch", ["cho2014", "rnnsearch"])
def test_two_ranks_and_accumulation_make_the_update_of_the_union_batch(tmp_path, arch):
    two_ranks = torchrun(str(WORKER), "steps", str(tmp_path / "ddp.pt"), arch)
    assert two_ranks.returncode == 0, two_ranks.stderr[-3000:]
    single = worker("single", str(tmp_path / "single.pt"), arch)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp, others = (torch.load(tmp_path / name, weights_only=True) for name in ("ddp.pt", "single.pt"))
    acc, plain, union = others["acc"], others["plain"], others["union"]
    assert ddp["batches"] % 2 == 1, "the epoch should end on an odd batch, so that one rank idles"
    assert ddp["steps"] == acc["steps"] == union["steps"] == (ddp["batches"] + 1) // 2
    assert plain["steps"] == ddp["batches"]
    for name, weight in union["weights"].items():
        torch.testing.assert_close(ddp["weights"][name], weight, rtol=0, atol=2e-6, msg=f"2 ranks: {name}")
        torch.testing.assert_close(acc["weights"][name], weight, rtol=0, atol=2e-6, msg=f"accumulate=2: {name}")
    assert any((plain["weights"][n] - w).abs().max() > 1e-4 for n, w in union["weights"].items())


def test_the_first_rank_of_a_machine_builds_the_caches_the_others_reuse_them(tmp_path, word_corpus):
    log = tmp_path / "calls.log"
    result = torchrun(str(WORKER), "prepare", str(word_corpus), str(tmp_path / "cache"), str(log))
    assert result.returncode == 0, result.stderr[-3000:]
    calls = log.read_text().splitlines()
    assert {line.split()[0] for line in calls if not line.split()[1] == "ready"} == {"0"}
    assert [line.split()[1] for line in calls].count("tokenizer") == 1
    assert "0 tokenize" in calls
    ready = [line.split() for line in calls if line.split()[1] == "ready"]
    assert len(ready) == 2 and ready[0][2] == ready[1][2]  # the same tokenizer on both ranks


def train_args(corpus: Path, cache: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "-m",
        "nmt.commands.train",
        *word_corpus_overrides(corpus, cache),
        *TINY_MODEL,
        "train=debug",
        "train.max_epochs=100",
        "train.max_tokens=512",
        "train.lr=0.01",
        "train.device=cpu",
        "train.log_every=5",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def test_two_nodes_over_loopback_train_into_one_run_folder(tmp_path, word_corpus, cache_dir):
    """Two torchrun launchers, one process each, rendezvous on 127.0.0.1 as two machines would."""
    port, run_dir = free_port(), tmp_path / "run"
    launchers = []
    for node in (0, 1):
        cwd = tmp_path / f"node{node}"
        cwd.mkdir()
        launchers.append(
            subprocess.Popen(
                TORCHRUN
                + [
                    "--nnodes=2",
                    f"--node_rank={node}",
                    "--nproc_per_node=1",
                    "--rdzv_backend=c10d",
                    f"--rdzv_endpoint=127.0.0.1:{port}",
                    "--rdzv_id=nmt-test",
                    *train_args(word_corpus, cache_dir, run_dir, "train.max_steps=30", "train.val_every=10"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=ENV,
                cwd=cwd,
            )
        )
    outputs = [launcher.communicate(timeout=240) for launcher in launchers]
    for launcher, (_, stderr) in zip(launchers, outputs):
        assert launcher.returncode == 0, stderr[-3000:]
    # Only the run folder: neither node's working folder got anything (no Hydra files, no second run).
    assert sorted(os.listdir(tmp_path)) == ["node0", "node1", "run"]
    assert os.listdir(tmp_path / "node0") == os.listdir(tmp_path / "node1") == []
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [10, 20, 30]
    log_lines = (run_dir / "train.log").read_text().splitlines()
    assert len(log_lines) == len(set(log_lines)), "no line logged twice"
    assert sum("step 30: val loss" in line for line in log_lines) == 1
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] > 0
    assert sum("nmt-train: 30 steps" in stdout for stdout, _ in outputs) == 1  # printed by rank 0 only


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def test_sigterm_stops_every_rank_with_a_checkpoint_that_resumes_exactly(tmp_path, word_corpus, cache_dir):
    run_dir, dropout = tmp_path / "run", "model.dropout=0.2"  # dropout: every rank's random state matters
    command = TORCHRUN + [
        "--standalone",
        "--nproc_per_node=2",
        *train_args(word_corpus, cache_dir, run_dir, "train.max_steps=100000", "train.save_every=5", dropout),
    ]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
    wait_for(run_dir / "last.pt")
    launcher.send_signal(signal.SIGTERM)
    output = "".join(launcher.communicate(timeout=60))
    assert launcher.returncode != 0  # torchrun's own code for a signal; the workers exit 75
    assert "SIGTERM received: saving a checkpoint" in output
    assert "nmt-train: stopped by a signal at step" in output, output[-3000:]
    assert f"Continue with: torchrun --standalone --nproc_per_node=2 --no-python nmt-train resume={run_dir}" in output
    from nmt.checkpoint import read_checkpoint

    stopped = read_checkpoint(run_dir / "last.pt")
    assert stopped.training is not None and len(stopped.training.rng["ranks"]) == 2
    end = stopped.step + 7
    # as the closing line says: the console script, which no folder named nmt/ can shadow
    nmt_train = str(Path(sys.executable).parent / "nmt-train")
    resumed = torchrun("--no-python", nmt_train, f"resume={run_dir}", f"train.max_steps={end}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {run_dir / 'last.pt'} at step {stopped.step}" in resumed.stdout + resumed.stderr
    straight = torchrun(
        *train_args(word_corpus, cache_dir, tmp_path / "straight", f"train.max_steps={end}", "train.save_every=5", dropout),
        cwd=tmp_path,
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    after, reference = read_checkpoint(run_dir / "last.pt"), read_checkpoint(tmp_path / "straight" / "last.pt")
    assert after.step == reference.step == end
    for name, weight in reference.model_state.items():
        assert torch.equal(after.model_state[name], weight), f"{name} differs after the resume"


def test_a_killed_rank_fails_the_job_in_bounded_time_and_one_process_resumes_it(tmp_path, word_corpus, cache_dir):
    run_dir = tmp_path / "run"
    command = TORCHRUN + [
        "--standalone",
        "--nproc_per_node=2",
        *train_args(
            word_corpus, cache_dir, run_dir, "train.max_steps=100000", "train.save_every=5", "train.dist_timeout_minutes=0.5"
        ),
    ]
    launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path)
    wait_for(run_dir / "last.pt")
    workers = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    os.kill(int(workers[-1]), signal.SIGKILL)
    start = time.monotonic()
    _, stderr = launcher.communicate(timeout=90)
    assert launcher.returncode != 0
    assert time.monotonic() - start < 60
    # The run goes on in one process: another world size resumes (the batch order is the same).
    from nmt.checkpoint import read_checkpoint

    saved = read_checkpoint(run_dir / "last.pt").step
    alone = subprocess.run(
        [sys.executable, *train_args(word_corpus, cache_dir, run_dir)[:2], f"resume={run_dir}", f"train.max_steps={saved + 3}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        cwd=tmp_path,
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "the run was saved by 2 process(es) and continues on 1" in alone.stdout + alone.stderr
    assert read_checkpoint(run_dir / "last.pt").step == saved + 3


@pytest.mark.parametrize("setting", ["train.accumulate=0", "train.dist_timeout_minutes=0"])
def test_distributed_settings_are_checked(setting, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "nmt.commands.train", setting, "data=toy"],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {setting.split('=')[0]}=") and ": must be " in last


def test_the_command_line_each_torchrun_worker_composes(monkeypatch, tmp_path):
    from nmt.commands.train import torchrun_argv

    argv = [f"hydra.run.dir={tmp_path}", "train.lr=0.5", "train.device=cpu"]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert torchrun_argv(argv) == argv  # a RANK some cluster script exported: a plain run
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    assert torchrun_argv(argv + ["+hydra.output_subdir=x"]) == [
        "train.lr=0.5",
        "train.device=cpu",
        "hydra.run.dir=.",
        "hydra.output_subdir=null",
        "hydra/job_logging=stderr",
    ]
    monkeypatch.setenv("RANK", "0")
    assert torchrun_argv(argv) == argv
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert torchrun_argv(argv) == argv  # restarted before the first attempt wrote config.yaml: a new run
    (tmp_path / "config.yaml").write_text("train: {}\n")
    assert torchrun_argv(argv) == [f"resume={tmp_path}", "train.device=cpu"]


def test_leaving_collects_ddp_before_the_process_group_goes(tmp_path):
    """A rank's DDP can sit in a reference cycle (its first construction leaves one, through a
    frame of a lazy import): left to the interpreter's shutdown, its reducer and the gloo work
    it holds went after Python's objects, and a rank could abort at exit."""
    import gc
    import weakref

    import torch.distributed as dist

    from nmt.distributed import World, leave

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    gc.disable()  # as between two automatic collections
    try:

        def train_a_step() -> weakref.ref:
            ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4))
            ddp(torch.randn(2, 4)).sum().backward()
            ddp.cycle = [ddp]  # a cycle of its own, whatever torch's first construction leaves
            return weakref.ref(ddp)

        ddp = train_a_step()
        assert ddp() is not None  # the cycle outlives the function
        leave(World(rank=0, size=2))
        assert ddp() is None and not dist.is_initialized()
    finally:
        gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()


class OneProcessPosingAsTwo(World):
    """Rank 0 of a world of two, whose collective operations have nobody to wait for."""

    def broadcast(self, value):
        return value

    def any(self, *flags: bool) -> list[bool]:
        return list(flags)


def test_a_failing_rank_lets_go_of_its_trainer_before_leaving(tmp_path, word_corpus, cache_dir, monkeypatch):
    """The error's traceback holds train_session's frame, and so the trainer and its DDP:
    train() clears it, so that leave() still collects them before the process group goes."""
    import gc
    import weakref

    import torch.distributed as dist

    from nmt import training

    trainers, alive_when_leaving = [], []

    def failing_fit(self, stop=None):
        trainers.append(weakref.ref(self))
        raise RuntimeError("a failure in training")

    def leave(world):
        gc.collect()
        alive_when_leaving.append(trainers[0]() is not None)
        dist.destroy_process_group()

    monkeypatch.setattr(training.Trainer, "fit", failing_fit)
    monkeypatch.setattr(training, "leave", leave)
    settings = [*word_corpus_overrides(word_corpus, cache_dir), *TINY_MODEL, "train=debug", "train.device=cpu"]
    cfg = compose_config("train", settings)
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="a failure in training"):
            training.train(cfg, tmp_path / "run", world=OneProcessPosingAsTwo(rank=0, size=2))
        assert alive_when_leaving == [False]
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
