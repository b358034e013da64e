"""The ``input=`` / ``output=`` files of nmt-translate and nmt-score: checked before any
model is loaded, read line-exactly (stdin by default), written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from nmt.errors import SettingError
from nmt.lines import line_chunks, read_lines, split_lines
from nmt.output_files import OutputFiles, _Flushing, not_regular


def check_input(path: str | None, expected: str = "a text file, one sentence per line", setting: str = "input") -> None:
    """Fail on a missing input= file before the checkpoint is loaded, naming the setting."""
    if path is not None and (Path(path).is_dir() or not Path(path).exists()):  # a pipe is fine
        where = "a folder" if Path(path).is_dir() else "no such file"
        stdin = " (or leave input= out and pipe it to stdin)" if setting == "input" else ""
        raise SettingError(f"{setting}={path}: {where}; give {expected}{stdin}")


def check_output(path: str | None, input_path: str | None = None, setting: str = "output", through: bool = True) -> None:
    """Fail on an output= that cannot be written before any decoding, naming the setting.
    ``through``: a device, FIFO or standard stream that exists there is written through (a
    text stream); without it such a path is refused, as the output would replace it."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise SettingError(f"{setting}={path}: a folder; give a file name")
    if not target.parent.is_dir():
        raise SettingError(f"{setting}={path}: no folder {target.parent}; create it first")
    if not through:
        problem = not_regular(target)
        if problem:
            raise SettingError(f"{setting}={path}: {problem}, which writing this file would replace; give a file name")
    if input_path is not None and same_file(target, input_path):
        raise SettingError(f"{setting}={path} is the input file, which writing would destroy; choose another {setting}=")


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one file: by identity (device and inode) where both exist, so
    a hard link or another spelling is the same file; else by their resolved paths."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_not_overwritten(outputs: list[Path], inputs: dict[str, str | None], hint: str) -> None:
    """Refuse when an input file (``{setting: path}``) is one of ``outputs``, by identity."""
    for setting, path in inputs.items():
        if path is None or not Path(path).exists():
            continue
        for output in outputs:
            if same_file(output, path):
                raise SettingError(f"{setting}={path} is {output}, which writing would destroy; {hint}")


def read_input(path: str | None, replace_invalid: bool) -> list[str]:
    if path is not None:
        return read_lines(Path(path), replace_invalid)
    return split_lines(sys.stdin.buffer.read(), "<stdin>", replace_invalid)


def write_output(path: str | None, text: str) -> None:
    """``text`` to stdout, or to ``path`` whole or not at all (``output_stream``)."""
    with output_stream(path) as out:
        out.write(text)


def input_chunks(path: str | None, replace_invalid: bool, max_lines: int = 5000) -> Iterator[list[str]]:
    """The input's lines (``input=`` or stdin) in chunks of at most ``max_lines``, read as they come."""
    if path is None:
        yield from line_chunks(sys.stdin.buffer, "<stdin>", replace_invalid, max_lines)
        return
    with open(path, "rb") as stream:
        yield from line_chunks(stream, path, replace_invalid, max_lines)


def count_lines(path: str) -> int:
    """Lines of a file (an unterminated last line counts), read in blocks: for a progress bar's total."""
    count, last = 0, b"\n"
    with open(path, "rb") as stream:
        while block := stream.read(1 << 24):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


@contextlib.contextmanager
def output_stream(path: str | None, binary: bool = False):
    """Where output lines go, chunk by chunk: stdout (flushed after each write), or ``output=``,
    written aside and renamed over it at the end (``OutputFiles``), so that a failed run leaves
    no partial file (and an existing one as it was)."""
    if path is None:
        yield _Flushing(sys.stdout.buffer if binary else sys.stdout)
        return
    with OutputFiles() as outputs, outputs.open(path, binary) as out:
        yield out
