"""What every command-line entry point shares: errors as one clear line, not a traceback."""

from __future__ import annotations

import logging
import os
import sys

from nmt.checkpoint import CheckpointError
from nmt.data import CorpusError
from nmt.report import ReportError

log = logging.getLogger("nmt")

# Errors whose message already says which file, line or setting is at fault.
USER_ERRORS: tuple[type[Exception], ...] = (
    CorpusError, CheckpointError, ReportError, OSError, ValueError, RuntimeError,
)


def run_cli(command, cfg) -> None:
    """Run ``command(cfg)``; exit with its return code, or 1 with the error's message.

    Set NMT_DEBUG=1 to see the full traceback instead.
    """
    try:
        code = command(cfg)
    except USER_ERRORS as err:
        if os.environ.get("NMT_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)
