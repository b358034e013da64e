"""The ``input=`` / ``output=`` files of nmt-translate and nmt-score: checked before any
model is loaded, read line-exactly (stdin by default), written in one go."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nmt.data import read_lines, split_lines
from nmt.errors import SettingError


def check_input(path: str | None, expected: str = "a text file, one sentence per line") -> None:
    """Fail on a missing input= file before the checkpoint is loaded, naming the setting."""
    if path is not None and (Path(path).is_dir() or not Path(path).exists()):  # a pipe is fine
        where = "a folder" if Path(path).is_dir() else "no such file"
        raise SettingError(f"input={path}: {where}; give {expected} (or leave input= out and pipe it to stdin)")


def check_output(path: str | None, input_path: str | None = None) -> None:
    """Fail on an output= that cannot be written before any decoding, naming the setting."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise SettingError(f"output={path}: a folder; give a file name")
    if not target.parent.is_dir():
        raise SettingError(f"output={path}: no folder {target.parent}; create it first")
    # By identity (device and inode), not by name: a hard link or another spelling of the
    # input's path is the same file.
    if input_path is not None and target.exists() and Path(input_path).exists() and os.path.samefile(target, input_path):
        raise SettingError(f"output={path} is the input file, which writing would destroy; choose another output=")


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
