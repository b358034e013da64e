"""Output files written whole or not at all, together, and never over what is not a regular file.

Every command that writes files (translations, alignments, scores, vectors, a report, its
figures) writes them through ``OutputFiles``: aside under a hidden temporary name, renamed
over their names only once everything succeeded. A failed write names its file.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import tempfile
from pathlib import Path

from nmt.errors import OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)


def not_regular(path: str | Path) -> str | None:
    """What ``path`` is if it exists and is not a regular file (nor a link to one), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    kinds = (
        (stat.S_ISREG, None),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


class _Flushing:
    """A standard stream flushed after each write: each chunk is out as soon as it is done."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, data) -> None:
        self.stream.write(data)
        self.stream.flush()


class _Named:
    """A stream whose failed writes name its file (an OSError of a write carries no file name)."""

    def __init__(self, stream, path: str):
        self.stream, self.path = stream, path

    def write(self, data) -> None:
        try:
            self.stream.write(data)
        except OSError as err:
            raise write_error(self.path, err) from err

    def __getattr__(self, name):  # seek, tell, flush: what numpy's and matplotlib's writers use
        return getattr(self.stream, name)


def write_error(path: str | Path, err: OSError) -> OutputError:
    return OutputError(
        f"{path}: could not write it ({err.strerror or err}); nothing was written there. "
        "Free disk space or fix the folder's permissions"
    )


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


class OutputFiles:
    """The output files of one command, written whole or not at all, together: each is written
    to a hidden temporary file beside it, and all are renamed over their names only when the
    block ends without an error; an error leaves none of them (and files that were there as
    they were). A write that fails names its file. /dev/stdout, /dev/null, a FIFO and the like
    are written through, never replaced (``through=False`` refuses them instead).

        with OutputFiles() as outputs:
            with outputs.open("a.txt") as out: ...
            with outputs.open("b.npy", binary=True) as out: ...
    """

    def __init__(self):
        self._staged: list[tuple[str, Path, str]] = []  # (temporary file, target, name as given)

    def __enter__(self) -> OutputFiles:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    @contextlib.contextmanager
    def open(self, path: str, binary: bool = False, through: bool = True):
        mode, encoding = ("wb", None) if binary else ("w", "utf-8")
        # /dev/stdout and the like go through the standard stream they name: reopened, a file
        # behind them ("> out 2>&1") would be truncated, or written at another position than
        # the log lines sent there.
        kind = not_regular(path)
        names_a_stream = Path(os.path.abspath(path)).parts[1:2] in (("dev",), ("proc",))  # /dev/stdout, /proc/self/fd/1
        standard = _standard_stream(path, binary) if names_a_stream or kind else None
        if (standard is not None or kind) and not through:
            what = kind or "the standard output or error stream"
            raise OutputError(f"{path}: {what}, which writing this file would replace; give a file name")
        if standard is not None:
            yield _Named(standard, path)
            return
        if kind:  # /dev/null, a FIFO: written as it is, never replaced
            with open(path, mode.replace("w", "a"), encoding=encoding) as out:
                yield _Named(out, path)
            return
        target = Path(os.path.realpath(path))  # through a symbolic link, to the file it names
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as err:
            raise write_error(path, err) from err
        self._staged.append((tmp, target, path))
        os.chmod(tmp, 0o666 & ~_UMASK)  # temporary files are private (0600); outputs need not be
        out = open(fd, mode, encoding=encoding)  # noqa: SIM115 - closed below, its error named
        try:
            yield _Named(out, path)
        finally:
            try:
                out.close()  # flushes: a full disk may show only here
            except OSError as err:
                raise write_error(path, err) from err

    def commit(self) -> None:
        """Rename every staged file over its name (nothing can fail short of the folder going)."""
        staged, self._staged = self._staged, []
        try:
            while staged:
                tmp, target, path = staged[0]
                try:
                    os.replace(tmp, target)
                except OSError as err:
                    raise write_error(path, err) from err
                staged.pop(0)
        finally:
            for tmp, _, _ in staged:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def discard(self) -> None:
        for tmp, _, _ in self._staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._staged = []
