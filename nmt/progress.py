"""Progress that a log file can show: when there is no terminal for a progress bar (a batch
job, ``nmt-train ... > train.out 2>&1``), a line every ``every`` seconds of wall time."""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("nmt.trainer")
LOG_EVERY_SECONDS = 60.0  # ProgressBar's log lines without a terminal: this often


class ProgressLog:
    """``nmt-train``'s periodic line: step, epoch, the training loss since the last validation,
    target tokens/s since the last line, the learning rate and the time left in the budget."""

    def __init__(self, every: float = 60.0, max_minutes: float = 0.0, enabled: bool | None = None):
        self.every, self.max_minutes = every, max_minutes
        self.enabled = not sys.stderr.isatty() if enabled is None else enabled
        self.start = self.last = time.perf_counter()
        self.seen: int | None = None  # progress.train_tokens at the last call (it restarts at 0 after a validation)
        self.tokens = 0  # target tokens trained since the last line

    def maybe(self, progress, lr: float, epoch_fraction: float) -> None:
        """Count the tokens trained since the last call; log a line if ``every`` seconds have
        passed since the last one (``progress``: the trainer's ``Progress``), called each step."""
        if not self.enabled:
            return
        now, current = time.perf_counter(), progress.train_tokens
        if self.seen is not None:  # (not the first call: a resumed run starts from its checkpoint's count)
            self.tokens += current - self.seen if current >= self.seen else current
        self.seen = current
        if now - self.last < self.every:
            return
        loss = f"{progress.train_loss_sum / current:.3f}" if current else "-"
        left = ""
        if self.max_minutes:
            minutes = max(0.0, self.max_minutes - (now - self.start) / 60)
            left = f", {minutes:.1f} of train.max_minutes={self.max_minutes:g} left"
        log.info(
            "step %d, epoch %.2f: train loss %s, %.0f target tokens/s, lr %.3g%s",
            progress.step,
            progress.epoch + epoch_fraction,
            loss,
            self.tokens / max(now - self.last, 1e-9),
            lr,
            left,
        )
        self.last, self.tokens = now, 0


class ProgressBar:
    """tqdm's bar on a terminal; without one (a log file), a log line every ``every`` seconds
    (default ``LOG_EVERY_SECONDS``):
    ``translating: 1200 of 4000 sent (231.4 sent/s)``. ``enabled=False``: neither."""

    def __init__(self, total: int | None, desc: str, unit: str, enabled: bool = True, every: float | None = None):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, disable=None if enabled else True)
        self.logs = enabled and self.bar.disable  # tqdm draws nothing without a terminal
        self.total, self.desc, self.unit = total, desc, unit
        self.every = LOG_EVERY_SECONDS if every is None else every
        self.count, self.start = 0, time.perf_counter()
        self.last = self.start

    def update(self, n: int = 1) -> None:
        self.bar.update(n)
        self.count += n
        now = time.perf_counter()
        if self.logs and now - self.last >= self.every:
            of = f" of {self.total}" if self.total else ""
            rate = self.count / max(now - self.start, 1e-9)
            logging.getLogger("nmt.progress").info(
                "%s: %d%s %s (%.1f %s/s)", self.desc, self.count, of, self.unit, rate, self.unit
            )
            self.last = now

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
