"""The errors nmt raises on purpose. Each message names the file, line or setting at
fault and what to do; the command layer prints it as one line instead of a traceback.

Every class derives from ``NmtError`` (what the commands catch) and from the built-in
exception it used to be, so ``except ValueError`` around library calls keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable


class NmtError(Exception):
    """Base of every error whose message is meant for the user as it is."""


class SettingError(NmtError, ValueError):
    """A setting (``model.cell``, ``train.lr``, ...) that cannot work."""


class CorpusError(NmtError, ValueError):
    """A corpus that cannot be read as given; the message names the file and what to do."""


class CheckpointError(NmtError, RuntimeError):
    """A checkpoint that cannot be written or read; the message names the file."""


class ReportError(NmtError, ValueError):
    """A problem with an evaluation's input files or arguments."""


class RunFolderError(NmtError, RuntimeError):
    """A run folder that cannot be used as asked: held by another process, already a run, damaged."""


class OutputError(NmtError, OSError):
    """An output file that cannot be written (a full disk, no permission); the message names it."""


class TrainingError(NmtError, RuntimeError):
    """Training cannot go on (e.g. the loss stays non-finite); a checkpoint was written."""


def check_choice(setting: str, value: str, choices: Iterable[str]) -> None:
    """Refuse ``value`` for ``setting`` unless it is one of ``choices`` (a registry's keys)."""
    choices = list(choices)
    if value not in choices:
        raise SettingError(f"{setting}={value!r}: expected one of {', '.join(choices)}")
