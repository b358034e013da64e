"""What nmt-serve does besides HTTP (``nmt.server``): the language pairs it holds, and one
worker thread that decodes the lines of concurrent requests together.

Requests put jobs on one queue; the worker takes the first job waiting, lets others join it
for at most ``batch_wait_s`` (or until ``batch_lines`` lines are waiting), and decodes the
lines of jobs that ask for the same pair and settings in one call of the library's
``translate_lines``, which batches them by tokens. The search is batch-invariant, so a line
gets the same translation alone or among others. The queue holds at most
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

    def describe(self) -> dict:
        """The pair as GET /v1/models shows it (no paths: clients need not know the server's files)."""
        info: dict[str, Any] = {"id": self.key, "source": self.spec.source, "target": self.spec.target}
        if self.translator is not None:
            from nmt.inference import has_alignments

            checkpoint = self.translator.checkpoint
            info.update(
                architecture=checkpoint.model_config.arch,
                rnn=checkpoint.model_config.rnn,
                members=len(self.translator.members),
                alignments=has_alignments(self.translator.model),
                precision=self.translator.precision,
            )
        decode = self.spec.decode
        info["defaults"] = {"beam_size": decode.beam_size, "length_penalty": decode.length_penalty, "nbest": decode.nbest}
        info["limits"] = {"max_beam_size": self.spec.max_beam_size, "max_nbest": self.spec.max_nbest}
        return info


@dataclass
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


_STOP = object()


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
        stopping = False
        while not stopping:
            job = self.queue.get()
            if job is _STOP:
                break
            jobs = [job]
            if self.batching and job.kind == "translate":
                stopping = self._gather(jobs)
            self._take(jobs)
            for group in _groups([j for j in jobs if not j.cancelled]):
                self._execute(group)

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

    def _gather(self, jobs: list[Job]) -> bool:
        """Let more jobs join ``jobs`` for up to ``batch_wait_s``; True if a stop came meanwhile."""
        deadline = time.perf_counter() + self.batch_wait_s
        lines = len(jobs[0].items)
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

    def _take(self, jobs: list[Job]) -> None:
        with self.lock:
            self.waiting_lines -= sum(len(job.items) for job in jobs)
        dropped = sum(job.cancelled for job in jobs)
        if dropped:
            log.info("nmt-serve: dropped %d request(s) whose clients went away", dropped)

    def _execute(self, group: list[Job]) -> None:
        first = group[0]
        try:
            if first.kind == "score":
                results = [self._score(job) for job in group]
            else:
                results = self._translate(group)
        except Exception as err:  # noqa: BLE001 - a failed decode answers its requests with 500, the server goes on
            log.exception("nmt-serve: decoding failed")
            for job in group:
                _settle(job, None, err)
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

    job.loop.call_soon_threadsafe(settle)
