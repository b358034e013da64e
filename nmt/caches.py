"""Damaged cache files: every Arrow file under the cache is checked before it is trusted.

A cache file cut short (a full disk, a killed copy) or with bytes overwritten would
otherwise fail every later run with pyarrow's or Python's message, naming no file;
here it is named in a warning and built again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:  # datasets takes a second to import: only what reads a corpus imports it
    import datasets

log = logging.getLogger(__name__)


def arrow_problem(path: Path) -> str | None:
    """Why the Arrow stream file ``path`` (a cache file) cannot be read whole, or None.

    A cache file cut short by a full disk or a killed copy would otherwise fail every run
    with pyarrow's "Expected to be able to read N bytes", naming no file, and bytes
    overwritten in its text later with a UnicodeDecodeError. Each record batch of the
    memory-mapped file is read and fully validated (offsets in bounds and increasing,
    strings valid UTF-8): one pass over the file, no copy. Overwritten numbers (ids) are
    valid numbers, and go unseen (Arrow files carry no checksums)."""
    try:
        with pa.memory_map(str(path)) as source:
            for batch in pa.ipc.open_stream(source):
                batch.validate(full=True)
    except (OSError, pa.ArrowException) as err:
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return None


def map_rebuilding_damaged_cache(
    table: datasets.Dataset, what: str, check: Callable[[datasets.Dataset], str | None] | None = None, **map_args
) -> datasets.Dataset:
    """``table.map(**map_args)``; if the cached result it reuses cannot be read, does not
    validate (``arrow_problem``), or holds what ``check`` refuses (e.g. ids outside the
    vocabulary), warn naming ``what`` and compute it again (once) instead of failing with
    pyarrow's message (or an index error), now or later."""
    try:
        result = table.map(**map_args)
        problem = next(
            (f"{entry['filename']}: {p}" for entry in result.cache_files if (p := arrow_problem(Path(entry["filename"])))),
            None,
        )
        if problem is None and check is not None and (found := check(result)):
            files = ", ".join(entry["filename"] for entry in result.cache_files) or "in memory"
            problem = f"{files}: {found}"
    except (OSError, pa.ArrowException) as err:
        if map_args.get("load_from_cache_file") is False or getattr(err, "errno", None) is not None:
            raise  # a full disk or a permission, not a damaged file (pyarrow's read errors carry no errno)
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        if map_args.get("cache_file_name"):
            problem = f"{map_args['cache_file_name']}: {problem}"
    if problem is None or map_args.get("load_from_cache_file") is False:
        return result
    log.warning("%s cannot be read (%s); rebuilding it", what, problem)
    result = None  # let go of the damaged file's memory map before it is replaced (Windows cannot otherwise)
    return table.map(**{**map_args, "load_from_cache_file": False})
