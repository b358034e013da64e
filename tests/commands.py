"""The commands as a user runs them (``python -m nmt.commands.X ARGS``), without paying
Python's and torch's start-up (two seconds) for each.

Every run is a process of its own, forked from a server that imported torch, Hydra and the
command layer once (multiprocessing's forkserver: a clean single-threaded process, not the
test process). The run gets its own argv, stdin, stdout, stderr, environment and working
folder, and its exit status is the command's. What it cannot stand in for stays a real
``subprocess``: what a fresh interpreter imports, signals sent to a process's pid, terminals,
torchrun.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
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


def _run_module(module: str, args: list[str], env: dict, cwd: str | None, stdin: str, stdout: str, stderr: str) -> None:
    """The child: ``python -m module args`` on the given files, as ``python`` would set it up."""
    for fd, path, flags in ((0, stdin, os.O_RDONLY), (1, stdout, os.O_WRONLY), (2, stderr, os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own streams, as Python opens them)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, errors="backslashreplace", buffering=1)  # noqa: SIM115
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
) -> subprocess.CompletedProcess:
    """What ``subprocess.run([sys.executable, "-m", module, *args], input=stdin,
    capture_output=True, ...)`` returns, from a forked process (see the module's docstring)."""
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
        if process.exitcode is None:
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([module, *args], timeout)
        out, err = (Path(path).read_bytes() for path in paths[1:])
    if text:
        out, err = out.decode(), err.decode()
    return subprocess.CompletedProcess([sys.executable, "-m", module, *args], process.exitcode, out, err)
