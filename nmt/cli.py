"""What every command-line entry point shares: errors as one clear line, not a traceback."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from omegaconf.errors import MissingMandatoryValue, ValidationError

from nmt.checkpoint import CheckpointError
from nmt.config import setting_problem, to_object
from nmt.data import CorpusError
from nmt.report import ReportError

log = logging.getLogger("nmt")

# Errors whose message already says which file, line or setting is at fault.
USER_ERRORS: tuple[type[Exception], ...] = (
    CorpusError, CheckpointError, ReportError, OSError, ValueError, RuntimeError,
    MissingMandatoryValue, ValidationError,
)


def run_cli(command, cfg) -> None:
    """Run ``command`` on the typed config; exit with its return code, or 1 with the error's message.

    Set NMT_DEBUG=1 to see the full traceback instead.
    """
    try:
        code = command(to_object(cfg))  # a missing ckpt=... surfaces here
    except USER_ERRORS as err:
        if os.environ.get("NMT_DEBUG"):
            raise
        if isinstance(err, MissingMandatoryValue):
            message = f"{err.full_key} is required: add {err.full_key}=... to the command line"
        else:
            message = str(err)
        refuse(message)
    sys.exit(code or 0)


def command_line_overrides(argv: list[str]) -> dict[str, str]:
    """Plain ``key=value`` overrides among ``argv``, parsed as Hydra parses them (quotes,
    escapes, ``null``), for checks that must happen before Hydra composes the config or
    creates a folder. Deletions (``~key``), sweeps (``a,b``), nulls and interpolations are
    left out; anything Hydra cannot parse is left to Hydra to report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    overrides = {}
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 - Hydra reports its own syntax errors
            continue
        value = None if override.is_delete() or override.is_sweep_override() else override.value()
        if value is not None and "${" not in str(value):
            overrides[override.key_or_group] = value if isinstance(value, str) else str(value)
    return overrides


def check_command_line(schema: type) -> dict[str, str]:
    """The command line's plain overrides, after refusing (in one line, before Hydra makes
    anything) any that cannot work with ``schema``: see ``nmt.config.setting_problem``."""
    overrides = command_line_overrides(sys.argv[1:])
    for key, value in overrides.items():
        problem = setting_problem(key, value, schema)
        if problem:
            refuse(problem)
    return overrides


def refuse(message: str) -> NoReturn:
    """Exit 1 with ``message`` as one line on stderr (and in the run's log file, if any)."""
    print(f"error: {message}", file=sys.stderr)
    copy_to_log_files(f"error: {message}", logging.ERROR)
    sys.exit(1)


def copy_to_log_files(message: str, level: int = logging.INFO) -> None:
    """Write ``message`` to the log files only (Hydra's job log, e.g. a run's train.log).

    For lines the console already shows through ``tqdm.write`` or ``print`` (validation
    results, the closing summary, errors), so that the log file holds them too."""
    root = logging.getLogger()
    record = root.makeRecord(log.name, level, __file__, 0, message, None, None)
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
