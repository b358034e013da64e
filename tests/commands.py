"""The commands as a user runs them (``python -m nmt.commands.X ARGS``), without paying
Python's and torch's start-up (two seconds) for each.

Every run is a process of its own, forked from a server that imported torch, Hydra and the
command layer once (multiprocessing's forkserver: a clean single-threaded process, not the
test process). The run gets its own argv, stdin, stdout, stderr, environment (but for the
few settings Python reads at start-up: ``READ_AT_START_UP``) and working folder, and its
exit status is the command's. What it cannot stand in for stays a real ``subprocess``: what
a fresh interpreter imports and what happens at its shutdown (a forked process ends with
``os._exit``): each command runs in one at least once (``fresh_interpreter=True``); signals
sent to a process's pid, terminals, torchrun.
"""

from __future__ import annotations

import atexit
import io
import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

PRELOAD = ["torch", "hydra", "omegaconf", "sentencepiece", "sacrebleu", "nmt.commands.app", "nmt.inference", "nmt.training"]
_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


# Read once, when Python or torch starts: the server's values would hold in the child, so a
# run asking for others is refused. (OMP_NUM_THREADS is applied; PYTHONUNBUFFERED changes
# nothing here, as the outputs are read when the process has ended.)
READ_AT_START_UP = ("PYTHONPATH", "PYTHONIOENCODING", "PYTHONWARNINGS", "PYTHONHASHSEED", "PYTHONUTF8")
READ_AT_START_UP += ("LANG", "LC_ALL", "LC_CTYPE", "MKL_NUM_THREADS", "TQDM_DISABLE")


def _run_module(module: str, args: list[str], env: dict, cwd: str | None, stdin: str, stdout: str, stderr: str) -> None:
    """The child: ``python -m module args`` on the given files, as ``python`` would set it up."""
    os.setpgrp()  # a group of its own, so that a timeout kills the processes it started too
    for fd, path, flags in ((0, stdin, os.O_RDONLY), (1, stdout, os.O_WRONLY), (2, stderr, os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own streams, as Python opens them)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, errors="backslashreplace", buffering=1)  # noqa: SIM115
    differ = [key for key in READ_AT_START_UP if env.get(key) != os.environ.get(key)]
    if differ:
        raise RuntimeError(f"run_command cannot give a forked process other {', '.join(differ)}: use subprocess.run")
    if env.get("OMP_NUM_THREADS") != os.environ.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]) if env.get("OMP_NUM_THREADS") else os.cpu_count())
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    sys.argv = [module, *args]  # runpy puts the module's file first
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends its children with os._exit
        sys.stdout.flush()
        sys.stderr.flush()


def run_command(
    module: str,
    *args: str,
    stdin: str | bytes | None = None,
    env: dict | None = None,
    cwd: str | Path | None = None,
    timeout: float = 180,
    text: bool = False,
    fresh_interpreter: bool = False,
) -> subprocess.CompletedProcess:
    """What ``subprocess.run([sys.executable, "-m", module, *args], input=stdin,
    capture_output=True, ...)`` returns, from a forked process (see the module's docstring),
    or with ``fresh_interpreter`` from that very ``subprocess.run``."""
    if fresh_interpreter:
        command = [sys.executable, "-m", module, *args]
        if text and isinstance(stdin, bytes):
            stdin = stdin.decode()
        return subprocess.run(command, input=stdin, capture_output=True, env=env, cwd=cwd, timeout=timeout, text=text)
    with tempfile.TemporaryDirectory(prefix="nmt-command-") as folder:
        paths = [os.path.join(folder, name) for name in ("stdin", "stdout", "stderr")]
        Path(paths[0]).write_bytes(stdin.encode() if isinstance(stdin, str) else (stdin or b""))
        for path in paths[1:]:
            Path(path).touch()
        environment = dict(os.environ if env is None else env)
        process = _forkserver().Process(
            target=_run_module, args=(module, list(args), environment, None if cwd is None else str(cwd), *paths)
        )
        process.start()
        process.join(timeout)
        timed_out = process.exitcode is None
        if timed_out:
            os.killpg(process.pid, signal.SIGKILL)
            process.join()
        out, err = (Path(path).read_bytes() for path in paths[1:])
    if text:  # as subprocess.run(text=True) reads them: UTF-8, universal newlines
        out, err = (io.TextIOWrapper(io.BytesIO(data), encoding="utf-8").read() for data in (out, err))
    command = [sys.executable, "-m", module, *args]
    if timed_out:
        raise subprocess.TimeoutExpired(command, timeout, output=out, stderr=err)
    return subprocess.CompletedProcess(command, process.exitcode, out, err)
