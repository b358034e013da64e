"""What a command needs before it knows it will train or translate: how it was launched
(torchrun), its exit codes, and its log files. No PyTorch here, so that ``--help`` and a
refused command line start in the time Python and Hydra take."""

from __future__ import annotations

import logging
import os

# Exit status after a SIGTERM/SIGINT was honoured with a checkpoint: "try again later"
# (EX_TEMPFAIL), so a scheduler can requeue the job with ``resume=RUN_DIR``.
PREEMPTED_EXIT_CODE = 75


def launched_by_torchrun() -> bool:
    """Whether torchrun started this process as one of several (its environment, not just a
    ``RANK`` some cluster scripts export)."""
    return "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def torchrun_rank() -> int:
    """This process's global rank as torchrun sets it (0 without torchrun)."""
    return int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0


def restarted_by_torchrun() -> bool:
    """Whether torchrun restarted this worker after a failure (``--max-restarts``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def copy_to_log_files(message: str, level: int = logging.INFO) -> None:
    """Write ``message`` to the log files only (e.g. a run's train.log).

    For lines the console already shows through ``tqdm.write`` or ``print`` (validation
    results, the closing summary, errors), so that the log file holds them too."""
    root = logging.getLogger()
    record = root.makeRecord("nmt", level, __file__, 0, message, None, None)
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
