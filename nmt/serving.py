"""What nmt-serve does besides HTTP (``nmt.server``): the language pairs it holds, and one
worker thread that decodes the lines of concurrent requests together.

Requests put jobs on one queue; the worker takes the first job waiting and lets others join
it for at most ``batch_wait_s`` (or until ``batch_lines`` lines are waiting). Then, chunk by
chunk, it decodes the shortest jobs asking for the same pair and settings, about one decoding
batch of source text at a time, in one call of the library's ``translate_lines``, and answers
them at once; before each chunk, the jobs that arrived meanwhile join the ones waiting. So a
short request waits for at most one chunk, not for a batch of long ones (a job waiting
``STARVING_S`` goes next, however long). The search is batch-invariant, so a line gets the
same translation alone or among others. The queue holds at most
``max_queue_lines`` lines (``QueueFull`` beyond: memory stays bounded under any load), and a
job whose client went away before its turn is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from typing import Any

from nmt.config import DecodeConfig, ServedModel

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More lines are waiting than ``max_queue_lines``: the client should retry later."""


@dataclass
class Pair:
    """One language pair: its model (loaded by the worker) and what a request may ask of it."""

    spec: ServedModel
    translator: Any = None  # nmt.inference.Translator, once loaded

    @property
    def key(self) -> str:
        return f"{self.spec.source}-{self.spec.target}"

    def has_alignments(self) -> bool:
        from nmt.inference import has_alignments

        return self.translator is not None and has_alignments(self.translator.model)

    def describe(self) -> dict:
        """The pair as GET /v1/models shows it (no paths: clients need not know the server's files)."""
        info: dict[str, Any] = {"id": self.key, "source": self.spec.source, "target": self.spec.target}
        if self.translator is not None:
            checkpoint = self.translator.checkpoint
            info.update(
                architecture=checkpoint.model_config.arch,
                rnn=checkpoint.model_config.rnn,
                members=len(self.translator.members),
                alignments=self.has_alignments(),
                precision=self.translator.precision,
            )
        decode = self.spec.decode
        info["defaults"] = {"beam_size": decode.beam_size, "length_penalty": decode.length_penalty, "nbest": decode.nbest}
        info["limits"] = {"max_beam_size": self.spec.max_beam_size, "max_nbest": self.spec.max_nbest}
        return info


@dataclass(eq=False)  # one job is itself only (chunks are picked out by identity)
class Job:
    """One request's work: ``translate`` (lines) or ``score`` (pairs of lines)."""

    pair: Pair
    kind: str
    items: list  # lines, or (source, target) pairs
    decode: DecodeConfig | None = None
    alignments: bool = False
    future: asyncio.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None
    cancelled: bool = False  # its client went away: dropped unless already decoding
    queued_at: float = field(default_factory=time.perf_counter)

    def batch_key(self) -> tuple:
        return (self.kind, self.pair.key, astuple(self.decode) if self.decode else None)

    def size(self) -> int:
        """Characters of source text: how long the job takes, roughly."""
        return sum(len(item) if isinstance(item, str) else len(item[0]) + len(item[1]) for item in self.items)

    def longest(self) -> int:
        """Characters of its longest line: a batch decodes until its longest output ends."""
        return max((len(item) if isinstance(item, str) else len(item[0]) for item in self.items), default=0)

    def chunk_chars(self) -> int:
        """About one decoding batch of source text (``DecodeConfig.batch_tokens`` over the beam
        on a CPU, as ``decode_ids`` batches; four characters a subword)."""
        return CHARS_PER_SUBWORD * (self.decode.batch_tokens // max(1, self.decode.beam_size)) if self.decode else 0


_STOP = object()
STARVING_S = 2.0  # a job that has waited this long is decoded next, however long it is
CHARS_PER_SUBWORD = 4


class Worker:
    """Loads the pairs' models, then decodes jobs until ``stop``; see the module's docstring."""

    def __init__(
        self,
        pairs: list[Pair],
        device: str = "auto",
        precision: str = "auto",
        threads: int = 0,
        batching: bool = True,
        batch_wait_s: float = 0.005,
        batch_lines: int = 128,
        max_queue_lines: int = 2000,
        max_source_subwords: int = 250,
    ):
        self.pairs = {pair.key: pair for pair in pairs}
        self.device, self.precision, self.threads = device, precision, threads
        self.batching, self.batch_wait_s, self.batch_lines = batching, batch_wait_s, batch_lines
        self.max_queue_lines, self.max_source_subwords = max_queue_lines, max_source_subwords
        self.queue: queue.Queue = queue.Queue()
        self.waiting_lines = 0
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.failed: str | None = None  # why loading failed: the server answers 503 with it
        self.on_failure: Callable[[], None] | None = None  # called (from the thread) when loading fails
        self.thread = threading.Thread(target=self._run, name="nmt-serve-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the jobs already queued, then end the thread."""
        self.queue.put(_STOP)
        self.thread.join(timeout)

    def submit(self, job: Job) -> asyncio.Future:
        """Queue ``job`` (from the event loop); its future gets the results, in order."""
        with self.lock:
            if self.waiting_lines + len(job.items) > self.max_queue_lines:
                raise QueueFull(f"{self.waiting_lines} lines are waiting (max_queue_lines={self.max_queue_lines})")
            self.waiting_lines += len(job.items)
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        self.queue.put(job)
        return job.future

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            self._load()
        except Exception as err:  # noqa: BLE001 - any reason it cannot serve goes to /health and the log
            self.failed = str(err)
            if self.on_failure is not None:
                self.on_failure()
            return
        pending: list[Job] = []  # taken from the queue, not yet decoded
        stopping = False
        while pending or not stopping:
            if not pending:
                job = self.queue.get()  # nothing to do: wait for work
                if job is _STOP:
                    break
                pending.append(job)
                if self.batching:
                    stopping = self._gather(pending, self.batch_wait_s)
            elif self.batching and not stopping:
                stopping = self._arrived(pending)
                if not stopping and sum(len(job.items) for job in pending) < self.batch_lines // 2:
                    stopping = self._gather(pending, self.batch_wait_s)  # few left: let the answered clients send again
            self._drop_cancelled(pending)
            if pending:
                chunk = self._next_chunk(pending) if self.batching else [pending[0]]
                taken = {id(job) for job in chunk}
                pending = [job for job in pending if id(job) not in taken]
                for group in _groups(chunk):
                    self._execute(group)
                self._done(chunk)

    def _load(self) -> None:
        import torch

        from nmt.inference import load_translator

        if self.threads:
            torch.set_num_threads(self.threads)
        for pair in self.pairs.values():
            start = time.perf_counter()
            pair.translator = load_translator(pair.spec.ckpt, self.device, precision=self.precision)
            log.info("nmt-serve: %s: %s loaded in %.1f s", pair.key, pair.translator.name, time.perf_counter() - start)
        self.ready.set()

    def _gather(self, jobs: list[Job], wait_s: float) -> bool:
        """Add the jobs arriving within ``wait_s`` (at most ``batch_lines`` lines in all) to
        ``jobs``; True if a stop came meanwhile."""
        deadline = time.perf_counter() + wait_s
        lines = sum(len(job.items) for job in jobs)
        while lines < self.batch_lines:
            left = deadline - time.perf_counter()
            try:
                job = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                return False
            if job is _STOP:
                return True
            jobs.append(job)
            lines += len(job.items)
        return False

    def _arrived(self, jobs: list[Job]) -> bool:
        """Add every job that arrived while the last chunk decoded (the queue's bound holds
        them already); True if a stop came meanwhile."""
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return False
            if job is _STOP:
                return True
            jobs.append(job)

    def _next_chunk(self, pending: list[Job]) -> list[Job]:
        """What to decode next: the jobs of the shortest lines first (a job that waited
        ``STARVING_S`` goes first whatever its length), with the same pair and settings and
        lines at most about three times as long, up to ``batch_lines`` lines and about a decoding
        batch's worth of source text. Each chunk is answered as soon as it is decoded, so a
        short request does not wait for long ones."""
        now = time.perf_counter()
        # The starving first, oldest first; then the shortest lines.
        pending.sort(key=lambda job: (0, job.queued_at) if now - job.queued_at >= STARVING_S else (1, job.longest()))
        key, chunk, lines, chars = pending[0].batch_key(), [], 0, 0
        for job in pending:
            if job.batch_key() != key:
                continue
            full = lines + len(job.items) > self.batch_lines or chars + job.size() > job.chunk_chars()
            if chunk and (full or job.longest() > 3 * chunk[0].longest() + 40):  # short lines do not wait for long ones
                break
            chunk.append(job)
            lines, chars = lines + len(job.items), chars + job.size()
        return chunk

    def _drop_cancelled(self, pending: list[Job]) -> None:
        gone = [job for job in pending if job.cancelled]
        if gone:
            pending[:] = [job for job in pending if not job.cancelled]
            self._done(gone)
            log.info("nmt-serve: dropped %d request(s) whose clients went away", len(gone))

    def _done(self, jobs: list[Job]) -> None:
        with self.lock:
            self.waiting_lines -= sum(len(job.items) for job in jobs)

    def _execute(self, group: list[Job]) -> None:
        first = group[0]
        try:
            if first.kind == "score":
                results = [self._score(job) for job in group]
            else:
                results = self._translate(group)
        except Exception as err:  # noqa: BLE001 - a failed decode answers its requests with 500, the server goes on
            if len(group) > 1:  # one job's input may be at fault: the others should not fail with it
                for job in group:
                    self._execute([job])
                return
            log.exception("nmt-serve: decoding failed")
            _settle(first, None, err)
            return
        for job, result in zip(group, results):
            _settle(job, result, None)

    def _translate(self, group: list[Job]) -> list[list]:
        from nmt.inference import alignment_records, translate_lines

        translator = group[0].pair.translator
        lines = [line for job in group for line in job.items]
        results = translate_lines(translator, lines, group[0].decode, self.max_source_subwords)
        out, start = [], 0
        for job in group:
            rows = results[start : start + len(job.items)]
            start += len(job.items)
            aligned = alignment_records(translator, job.items, rows, self.max_source_subwords) if job.alignments else None
            out.append([(row, aligned[i] if aligned else None) for i, row in enumerate(rows)])
        return out

    def _score(self, job: Job) -> list[tuple[float, int]]:
        from nmt.data import normalize_text
        from nmt.inference import score_pairs

        pairs = [(normalize_text(source), normalize_text(target)) for source, target in job.items]
        return score_pairs(job.pair.translator, pairs)


def _groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs that can be decoded in one call (same kind, pair and settings), in arrival order."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        key = job.batch_key() if job.kind == "translate" else (id(job),)
        groups.setdefault(key, []).append(job)
    return list(groups.values())


def _settle(job: Job, result: Any, error: BaseException | None) -> None:
    def settle(future: asyncio.Future = job.future) -> None:
        if not future.done():  # done: the request was cancelled meanwhile
            future.set_exception(error) if error is not None else future.set_result(result)

    if not job.loop.is_closed():  # closed: the server gave up waiting (its shutdown's grace period ended)
        job.loop.call_soon_threadsafe(settle)
