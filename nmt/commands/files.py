"""The ``input=`` / ``output=`` files of nmt-translate and nmt-score: checked before any
model is loaded, read line-exactly (stdin by default), written whole or not at all."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nmt.errors import SettingError
from nmt.lines import line_chunks, read_lines, split_lines

_UMASK = os.umask(0)
os.umask(_UMASK)


def check_input(path: str | None, expected: str = "a text file, one sentence per line", setting: str = "input") -> None:
    """Fail on a missing input= file before the checkpoint is loaded, naming the setting."""
    if path is not None and (Path(path).is_dir() or not Path(path).exists()):  # a pipe is fine
        where = "a folder" if Path(path).is_dir() else "no such file"
        stdin = " (or leave input= out and pipe it to stdin)" if setting == "input" else ""
        raise SettingError(f"{setting}={path}: {where}; give {expected}{stdin}")


def check_output(path: str | None, input_path: str | None = None, setting: str = "output") -> None:
    """Fail on an output= that cannot be written before any decoding, naming the setting."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise SettingError(f"{setting}={path}: a folder; give a file name")
    if not target.parent.is_dir():
        raise SettingError(f"{setting}={path}: no folder {target.parent}; create it first")
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
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(path).write_text(text, encoding="utf-8")


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


class _Flushing:
    """A standard stream flushed after each write: each chunk is out as soon as it is done."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, data) -> None:
        self.stream.write(data)
        self.stream.flush()


def _standard_stream(path: str, binary: bool):
    """sys.stdout or sys.stderr when ``path`` is the file it writes to (/dev/stdout, /dev/fd/2,
    or the log file both go to): written through that stream, at its own position."""
    try:
        named = os.stat(path)
    except OSError:
        return None
    for stream in (sys.stdout, sys.stderr):
        try:
            actual = os.fstat(stream.fileno())
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # closed or not a real file
            continue
        if (named.st_dev, named.st_ino) == (actual.st_dev, actual.st_ino):
            stream.flush()
            return _Flushing(stream.buffer if binary else stream)
    return None


@contextlib.contextmanager
def output_stream(path: str | None, binary: bool = False):
    """Where output lines go, chunk by chunk: stdout (flushed after each write), or ``output=``,
    written to a hidden temporary file beside it and renamed over it at the end, so that a
    failed run leaves no partial file (and an existing one as it was)."""
    if path is None:
        yield _Flushing(sys.stdout.buffer if binary else sys.stdout)
        return
    mode, encoding = ("wb", None) if binary else ("w", "utf-8")
    # /dev/stdout, /dev/null, a FIFO: written as they are, never replaced. /dev/stdout and the
    # like go through the standard stream they name: reopened, a file behind them ("> out 2>&1")
    # would be truncated, or written at another position than the log lines sent there.
    special = Path(os.path.abspath(path)).parts[1:2] in (("dev",), ("proc",))
    if special or (Path(path).exists() and not Path(path).is_file()):
        standard = _standard_stream(path, binary)
        if standard is not None:
            yield standard
            return
        with open(path, mode.replace("w", "a"), encoding=encoding) as out:
            yield out
        return
    target = Path(os.path.realpath(path))  # through a symbolic link, to the file it names
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # temporary files are private (0600); outputs need not be
        with open(fd, mode, encoding=encoding) as out:
            yield out
        os.replace(tmp, target)
        tmp = None
    finally:
        if tmp is not None:
            os.unlink(tmp)
