"""What every command-line entry point shares: errors as one clear line, not a traceback."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from omegaconf.errors import MissingMandatoryValue, ValidationError

from nmt.checkpoint import CheckpointError
from nmt.config import to_object
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
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


def command_line_overrides(argv: list[str]) -> dict[str, str]:
    """``key=value`` arguments as a dict (Hydra's ``+``/``++``/``~`` prefixes dropped), for
    checks that must happen before Hydra composes the config or creates a folder."""
    overrides = {}
    for arg in argv:
        if "=" in arg and not arg.startswith("-"):
            key, value = arg.split("=", 1)
            overrides[key.lstrip("+~")] = value
    return overrides


def refuse(message: str) -> NoReturn:
    """Exit 1 with ``message`` as one line on stderr."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)
