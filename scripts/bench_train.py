#!/usr/bin/env python3
"""Training throughput: the project's train step against a tutorial-style reference, one run.

    python scripts/bench_train.py                      # all configurations (a GPU job)
    python scripts/bench_train.py --quick              # CPU-sized, under two minutes
    python scripts/bench_train.py --configs yardstick-b1024 --out bench.jsonl
    python scripts/bench_train.py --ddp 2 --device cpu --threads 1   # 2 torchrun ranks against 1

For each configuration both implementations train one epoch over the same
synthetic sentences (random token ids; target lengths fixed or drawn from a
range, EOS included), starting from the same weights, after a few untimed
warm-up steps on other batches (``--rounds`` epochs each, the median epoch
reported). They take turns (``--block``): one step each on
a CPU, so that other jobs on a shared machine slow both alike; a whole epoch
each on CUDA.

nmt        the loop body of ``Trainer.fit``: ``ParallelIds.collate`` of a
           ``token_batches`` batch (bucketed by length, token budget counted with
           padding), ``pin_memory`` on CUDA, then ``Trainer.train_step`` itself,
           called on a ``Trainer`` built from the model and the synthetic ids
           alone (``nmt_trainer`` below): ``model.loss`` (real positions only
           through the output layer, fused GRU decoder), Adam with the default
           ``OptimConfig``, ``clip_grad_norm_(1.0)``, bf16 autocast and TF32 on CUDA.
reference  ``ReferenceSeq2Seq`` (nmt/reference.py; ``ReferenceRNNSearch`` for the
           attention model, its alignment model computed whole at every step) trained as tutorials
           do: random-order batches of a fixed number of sentences padded to
           the longest (the same mean batch size as nmt's), the decoder unrolled
           step by step with ``nn.GRUCell``, full logits at every position,
           ``nn.CrossEntropyLoss(ignore_index=PAD)``, float32 (PyTorch defaults:
           no TF32 for matrix products), the same Adam and clipping.

An ``rnnsearch-X`` configuration, measured after ``X`` in the same run, adds a line with the
attention model's cost per target token relative to the Cho model's at the same sizes.

Throughput counts non-padding target tokens (EOS included) over the timed
epoch; device work is synchronized before the clock is read. One JSON line per
measurement, then one comparison line per configuration with the speedup and
the targets. ``collate_share`` is the part of the wall time spent building
batches on the CPU (on a GPU this overlaps the device's work on the step
before: ``Trainer.train_step`` reads nothing back, losses are read once per
timed chunk as ``Trainer.settle_steps`` reads them every ``train.log_every`` steps);
``--profile`` prints where the device time of a few nmt steps goes. On CUDA
the nmt line also carries ``host_syncs_per_step``: the synchronizing calls of
a few steps, counted by ``torch.cuda.set_sync_debug_mode`` (0 is the aim).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

from nmt.architectures import build_model  # noqa: E402
from nmt.batching import ParallelIds, token_batches  # noqa: E402
from nmt.config import OptimConfig  # noqa: E402
from nmt.reference import (  # noqa: E402
    reference_for,
    reference_optimizer,
    reference_train_step,
    synthetic_corpus,
)
from nmt.trainer import StepResult, Trainer, TrainingData  # noqa: E402

# Configurations. lengths: target tokens per sentence incl. EOS (low, high), sources
# alike; batch: sentences per batch (fixed lengths, exact); max_tokens: nmt's token
# budget (the reference then takes the same mean number of sentences per batch).
# arch: the model (default cho2014); a "rnnsearch-" configuration is the attention model at
# the same sizes as the configuration it is named after, whose cost per token it is compared with.
CONFIGS = {
    "yardstick-b1024": {"size": "yardstick", "lengths": (30, 30), "batch": 1024},
    "yardstick-b128": {"size": "yardstick", "lengths": (30, 30), "batch": 128},
    "yardstick-var": {"size": "yardstick", "lengths": (10, 50), "max_tokens": 30_720},
    "small-var": {"size": "small", "lengths": (10, 50), "max_tokens": 4096},
    "rnnsearch-yardstick-var": {"size": "yardstick", "arch": "rnnsearch", "lengths": (10, 50), "max_tokens": 30_720},
    "rnnsearch-small-var": {"size": "small", "arch": "rnnsearch", "lengths": (10, 50), "max_tokens": 4096},
}
DEFAULT_CONFIGS = list(CONFIGS)
QUICK = {"configs": ["small-var", "rnnsearch-small-var"], "max_tokens": 1200, "steps": 6, "warmup": 1}


# --------------------------------------------------------------------------- data


def corpus_size(lengths: tuple[int, int], max_tokens: int, steps: int) -> int:
    """Sentences for about ``steps`` nmt batches of ``max_tokens`` (exactly, for fixed lengths)."""
    low, high = lengths
    if low == high:
        return max(1, max_tokens // high) * steps
    mean_longest = (low + high) / 2 * 1.07  # max(source, target) runs a little above the mean
    return max(1, int(steps * max_tokens / mean_longest))


def nmt_batches(data: ParallelIds, max_tokens: int, epoch: int) -> list[np.ndarray]:
    """The batches nmt-train would make for this epoch."""
    return token_batches(data.src_lengths, data.tgt_lengths, max_tokens, shuffle=True, seed=1, epoch=epoch)


def reference_batches(n: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """Random order, fixed number of sentences per batch: no length bucketing."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


# --------------------------------------------------------------------------- the two training steps


def nmt_trainer(model: nn.Module, data: ParallelIds, device: torch.device, compile_model: bool = False) -> Trainer:
    """A ``Trainer`` on ``data`` with the default settings; it writes no run folder."""
    return Trainer(model, TrainingData(data), OptimConfig(compile=compile_model), device)


def nmt_fit_step(trainer: Trainer, data: ParallelIds, rows: np.ndarray) -> tuple[StepResult, float]:
    """One iteration of ``Trainer.fit``'s loop: collate, pin, ``train_step`` (nothing read back).

    Returns the step's result, still on the device, and the seconds spent collating.
    """
    start = time.perf_counter()
    batch = data.collate(rows)
    if trainer.device.type == "cuda":
        batch = batch.pin_memory()
    collate_seconds = time.perf_counter() - start
    return trainer.train_step(batch), collate_seconds


# --------------------------------------------------------------------------- timing


class Contender:
    """One implementation under test: its step function, batches, and what it has measured."""

    def __init__(self, name: str, step, batches, warmup, tf32: bool, batching: str, precision: str):
        self.name, self.step, self.batches, self.warmup = name, step, batches, warmup
        self.tf32, self.batching, self.precision = tf32, batching, precision
        self.seconds = self.collate_seconds = self.loss_sum = 0.0
        self.tokens = self.finite_tokens = self.skipped = self.done = 0
        self.peak_bytes = 0
        self.rounds: list[tuple[float, int]] = []  # (seconds, target tokens) of each epoch
        self._mark = (0.0, 0)

    def start_round(self) -> None:
        self.done, self._mark = 0, (self.seconds, self.tokens)

    def end_round(self) -> None:
        self.rounds.append((self.seconds - self._mark[0], self.tokens - self._mark[1]))

    @property
    def finished(self) -> bool:
        return self.done >= len(self.batches)

    def run(self, device: torch.device, n_steps: int) -> None:
        """Time the next ``n_steps`` batches (device synchronized at both ends).

        The losses are read once, at the end, as ``Trainer.settle_steps`` reads them.
        """
        bc.set_matmul_tf32(device, self.tf32)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        chunk = self.batches[self.done : self.done + n_steps]
        results = []
        with bc.Timer(device) as timer:
            for rows in chunk:
                result, collate_seconds = self.step(rows)
                results.append(result)
                self.collate_seconds += collate_seconds
            values = torch.stack([torch.stack([r.loss_sum, r.finite.float()]) for r in results]).tolist()
        for result, (loss, finite) in zip(results, values):
            self.tokens += result.n_tokens
            if finite:
                self.loss_sum += loss
                self.finite_tokens += result.n_tokens
            else:
                self.skipped += 1
        self.seconds += timer.seconds
        self.done += len(chunk)
        if device.type == "cuda":
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(device))

    def median_round(self) -> tuple[float, int]:
        """The (seconds, tokens) of the epoch with the median throughput."""
        return sorted(self.rounds, key=lambda r: r[1] / r[0])[len(self.rounds) // 2]


def take_turns(contenders: list[Contender], device: torch.device, block: int, rounds: int = 1) -> None:
    """Warm every contender up, then time ``rounds`` epochs of each, in turns of ``block`` steps.

    ``block`` 0: a whole epoch per turn. Turns of one step put a shared, busy CPU's
    slow moments on both sides alike; on a GPU of one's own a whole epoch per turn
    keeps each loop as ``Trainer.fit`` runs it.
    """
    for c in contenders:
        bc.set_matmul_tf32(device, c.tf32)
        for rows in c.warmup:
            c.step(rows)
    for _ in range(rounds):
        for c in contenders:
            c.start_round()
        while not all(c.finished for c in contenders):
            for c in contenders:
                if not c.finished:
                    c.run(device, block or len(c.batches))
        for c in contenders:
            c.end_round()


def measure(name: str, config: dict, args, device: torch.device, out: bc.JsonLines) -> dict:
    size, arch = config["size"], config.get("arch", "cho2014")
    model_cfg, vocab = bc.model_config(size, arch)
    low, high = config["lengths"]
    max_tokens = args.max_tokens or config.get("max_tokens") or config["batch"] * high
    data = synthetic_corpus(corpus_size(config["lengths"], max_tokens, args.steps), config["lengths"], vocab)
    n = len(data)

    torch.manual_seed(0)
    model = build_model(model_cfg, vocab, vocab).to(device)
    reference = reference_for(model)  # same initial weights

    batches = nmt_batches(data, max_tokens, epoch=0)
    ref_batch = max(1, round(n / len(batches)))
    contenders = []
    if "nmt" in args.impls:
        trainer = nmt_trainer(model, data, device, args.compile)
        contenders.append(
            Contender(
                "nmt",
                lambda rows: nmt_fit_step(trainer, data, rows),
                batches,
                nmt_batches(data, max_tokens, epoch=1)[: args.warmup],
                tf32=trainer.opt.tf32,
                batching="token_batches (length-bucketed)",
                precision=("bf16 autocast, TF32" if trainer.amp else "float32") + (", torch.compile" if args.compile else ""),
            )
        )
    if "reference" in args.impls:
        optimizer = reference_optimizer(reference)

        def ref_step(rows):
            start = time.perf_counter()
            batch = data.collate(rows)
            collate_seconds = time.perf_counter() - start
            batch_tokens = batch.n_tgt_tokens
            # reads the loss: loss.item(); `reference` is deleted only after the last step
            mean = reference_train_step(reference, optimizer, batch, device)  # noqa: F821
            finite = torch.tensor(np.isfinite(mean))
            return StepResult(torch.tensor(mean * batch_tokens, dtype=torch.float32), batch_tokens, finite), collate_seconds

        contenders.append(
            Contender(
                "reference",
                ref_step,
                reference_batches(n, ref_batch, seed=0),
                reference_batches(n, ref_batch, seed=1)[: args.warmup],
                tf32=False,
                batching=f"random order, {ref_batch} sentences per batch",
                precision="float32",
            )
        )
    block = args.block if args.block is not None else (0 if device.type == "cuda" else 1)
    rounds = args.rounds or (3 if device.type == "cuda" else 1)
    take_turns(contenders, device, block, rounds)

    syncs = count_host_syncs(contenders[0].step, contenders[0].warmup, device) if "nmt" in args.impls else None
    shape = (
        f"{max_tokens // high} sentences x {low} target tokens"
        if low == high
        else f"token budget {max_tokens}, lengths {low}-{high}"
    )
    sizes = {**bc.size_record(size, arch), "data": shape, "sentences": n}
    results = {}
    for c in contenders:
        padded = sum(len(rows) * int(data.tgt_lengths[rows].max()) for rows in c.batches)
        seconds, tokens = c.median_round()
        record = {
            **bc.common_fields("train", device),
            "config": name,
            "impl": c.name,
            "sizes": sizes,
            "batching": c.batching,
            "precision": c.precision,
            "steps": len(c.batches),
            "turns": "one step each" if block == 1 else (f"{block} steps each" if block else "one epoch each"),
            "tgt_tokens": tokens,
            "padding_fraction": bc.rounded(1 - tokens / padded, 3),
            "seconds": bc.rounded(seconds),
            "tgt_tokens_per_s": bc.rounded(tokens / seconds),
            "sentences_per_s": bc.rounded(n / seconds),
            "ms_per_step": bc.rounded(1000 * seconds / len(c.batches)),
            "epochs": rounds,
            "epochs_tgt_tokens_per_s": [bc.rounded(t / s) for s, t in c.rounds],
            "collate_share": bc.rounded(c.collate_seconds / c.seconds, 3),
            "mean_loss": bc.rounded(c.loss_sum / max(1, c.finite_tokens)),  # over the steps not skipped
            "skipped_steps": c.skipped,
        }
        if c.name == "nmt" and syncs is not None:
            record["host_syncs_per_step"] = syncs  # torch.cuda.set_sync_debug_mode over the warm-up batches
        if device.type == "cuda":  # both models and optimizer states are resident throughout
            record["peak_memory_gb"] = bc.rounded(c.peak_bytes / 2**30, 3)
        out.emit(record)
        results[c.name] = record
    if args.profile and "nmt" in args.impls:
        profile_steps(contenders[0].step, contenders[0].warmup or batches[:1], device, name)
    del model, reference, contenders
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def count_host_syncs(step, batches, device: torch.device) -> float | None:
    """Host-device synchronizations per nmt training step, as CUDA's sync debug mode
    reports them (a warning per synchronizing call); None off CUDA."""
    if device.type != "cuda" or not batches:
        return None
    import warnings

    bc.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for rows in batches:
                step(rows)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # Only "called a synchronizing CUDA operation" counts: the first use of the debug mode
    # also warns that it "is a prototype feature", which is no sync (H100 run, 2026-11-26).
    syncs = [str(w.message) for w in caught if "called a synchronizing" in str(w.message)]
    if syncs:
        print(f"--- synchronizing calls in {len(batches)} nmt steps: {syncs[:3]}", file=sys.stderr)
    return len(syncs) / len(batches)


def profile_steps(step, batches, device: torch.device, name: str) -> None:
    """Print the operators that take the most time over a few steps (to stderr)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for rows in batches:
            step(rows)
        bc.synchronize(device)
    print(f"--- profile of {len(batches)} nmt steps, {name} ---", file=sys.stderr)
    for sort_by in (["self_device_time_total", "self_cuda_time_total"] if device.type == "cuda" else []) + [
        "self_cpu_time_total"
    ]:
        try:  # the name of the device-time column changed across PyTorch versions
            print(prof.key_averages().table(sort_by=sort_by, row_limit=25), file=sys.stderr)
            break
        except (AttributeError, KeyError):
            continue


def targets_for(name: str, device: torch.device) -> tuple[dict, str]:
    """The targets of a comparison and the hardware they were set for."""
    if device.type == "cuda":
        target = {"min_speedup": 1.4}
        if name == "yardstick-b1024":
            target["min_nmt_tgt_tokens_per_s"] = 1.0e6
        return target, "H100"
    return {"min_speedup": 1.5 if CONFIGS[name].get("arch") == "rnnsearch" else 1.1}, "2-core CPU"


def attention_cost_line(name: str, results: dict, device: torch.device) -> dict | None:
    """The attention model's training cost per target token relative to the Cho model's at
    the same sizes and data, when both configurations ran (``rnnsearch-X`` against ``X``)."""
    base = name.removeprefix("rnnsearch-")
    if base == name or base not in results or "nmt" not in results[base] or "nmt" not in results[name]:
        return None
    cho, attention = results[base]["nmt"], results[name]["nmt"]
    return {
        **bc.common_fields("train", device),
        "config": f"{name}/{base}",
        "impl": "nmt",
        "comparison": "cost_per_token_ratio = Cho tokens/s / RNNsearch tokens/s, same sizes and data",
        "sizes": attention["sizes"],
        "cho_tgt_tokens_per_s": cho["tgt_tokens_per_s"],
        "rnnsearch_tgt_tokens_per_s": attention["tgt_tokens_per_s"],
        "cost_per_token_ratio": bc.rounded(cho["tgt_tokens_per_s"] / attention["tgt_tokens_per_s"], 3),
    }


# --------------------------------------------------------------------------- data-parallel scaling


def ddp_worker(args) -> None:
    """One torchrun process of ``--ddp``: ``Trainer`` steps as ``Trainer.fit`` takes them
    (``step_batches``: N batches a step, one per rank), timed on rank 0 between barriers."""
    import json

    from nmt.distributed import join, leave, step_batches

    world = join("cpu" if args.device == "cpu" else "auto", 10.0)
    device = torch.device(world.device) if world.distributed else bc.setup_device(args.device)
    config = CONFIGS[args.configs.split(",")[0]]
    model_cfg, vocab = bc.model_config(config["size"], config.get("arch", "cho2014"))
    max_tokens = args.max_tokens or config.get("max_tokens") or config["batch"] * config["lengths"][1]
    steps, warmup = args.steps or 20, 3 if args.warmup is None else args.warmup
    data = synthetic_corpus(corpus_size(config["lengths"], max_tokens, (steps + warmup) * world.size), config["lengths"], vocab)
    torch.manual_seed(0)
    trainer = Trainer(build_model(model_cfg, vocab, vocab).to(device), TrainingData(data), OptimConfig(), device, world=world)
    batches = nmt_batches(data, max_tokens, epoch=0)
    groups = [batches[i : i + world.size] for i in range(0, len(batches) - world.size + 1, world.size)]
    tokens, results = 0, []
    for i, group in enumerate(groups[: warmup + steps]):
        if i == warmup:
            world.barrier()
            bc.synchronize(device)
            start = time.perf_counter()
        micro, total, idle = step_batches(data, group, world, 1, device)
        results.append(trainer.train_step(micro, total, idle))
        tokens += total if i >= warmup else 0
    torch.stack([r.loss_sum for r in results]).tolist()  # read the losses, as settle_steps does
    world.barrier()
    seconds = time.perf_counter() - start
    if world.is_main:
        print(
            "DDP-RESULT "
            + json.dumps(
                {"ranks": world.size, "steps": len(groups[warmup : warmup + steps]), "tgt_tokens": tokens, "seconds": seconds}
            ),
            flush=True,
        )
    leave(world)


def measure_ddp(args, device: torch.device, out: bc.JsonLines) -> None:
    """``--ddp N``: N torchrun processes against one, the same batch per rank, in one run."""
    import json
    import subprocess

    name = (args.configs or "small-var").split(",")[0]
    threads = args.threads or 1
    results = {}
    for ranks in (1, args.ddp):
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={ranks}",
            __file__,
            "--ddp-worker",
            "--configs",
            name,
            "--device",
            args.device,
            "--threads",
            str(threads),
        ]
        for flag, value in (("--steps", args.steps), ("--warmup", args.warmup), ("--max-tokens", args.max_tokens)):
            if value is not None:
                command += [flag, str(value)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        if done.returncode:
            raise SystemExit(f"torchrun with {ranks} process(es) failed:\n{done.stderr[-3000:]}")
        result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("DDP-RESULT "))[11:])
        results[ranks] = {**result, "tgt_tokens_per_s": bc.rounded(result["tgt_tokens"] / result["seconds"])}
        out.emit(
            {
                **bc.common_fields("train-ddp", device),
                "config": name,
                "impl": "nmt",
                "ranks": ranks,
                "threads_per_rank": threads,
                "sizes": bc.size_record(CONFIGS[name]["size"], CONFIGS[name].get("arch", "cho2014")),
                **results[ranks],
            }
        )
    one, many = results[1]["tgt_tokens_per_s"], results[args.ddp]["tgt_tokens_per_s"]
    out.emit(
        {
            **bc.common_fields("train-ddp", device),
            "config": name,
            "impl": f"nmt x{args.ddp}/nmt x1",
            "comparison": "scaling_efficiency = tokens/s of N ranks / (N x tokens/s of one), same batch per rank",
            "speedup": bc.rounded(many / one, 3),
            "scaling_efficiency": bc.rounded(many / (args.ddp * one), 3),
        }
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs",
        default=None,
        help=f"comma-separated, from {', '.join(CONFIGS)} (default: all; --quick: {', '.join(QUICK['configs'])})",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument(
        "--quick", action="store_true", help="CPU-sized: small model, small batches, few steps (under two minutes on 2 cores)"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps per implementation, about (default 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default 3)")
    parser.add_argument("--max-tokens", type=int, default=None, help="override every configuration's token budget")
    parser.add_argument("--impls", default="nmt,reference", help="which implementations to time (default: both)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed epochs per implementation, the median reported (default: 3 on CUDA, 1 on CPU)",
    )
    parser.add_argument(
        "--block",
        type=int,
        default=None,
        help="timed steps per turn, the implementations taking turns; 0: a whole epoch each "
        "(default: 1 on CPU, where other jobs may share the cores; 0 on CUDA)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the nmt model (train.compile=true)")
    parser.add_argument(
        "--profile", action="store_true", help="after timing, print a torch.profiler table of a few nmt steps (stderr)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    parser.add_argument(
        "--ddp",
        type=int,
        default=0,
        help="N > 1: data-parallel scaling instead: N torchrun processes against one, the same "
        "batch per rank (the first of --configs; default small-var)",
    )
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ddp_worker:
        ddp_worker(args)
        return 0
    if args.ddp > 1:
        measure_ddp(args, bc.setup_device(args.device), bc.JsonLines(args.out))
        return 0

    if args.quick:
        args.configs = args.configs or ",".join(QUICK["configs"])
        args.max_tokens = args.max_tokens or QUICK["max_tokens"]
        args.steps = args.steps or QUICK["steps"]
        args.warmup = QUICK["warmup"] if args.warmup is None else args.warmup
    names = (args.configs or ",".join(DEFAULT_CONFIGS)).split(",")
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")
    args.steps = args.steps or 20
    args.warmup = 3 if args.warmup is None else args.warmup
    args.impls = args.impls.split(",")
    device = bc.setup_device(args.device)
    out = bc.JsonLines(args.out)

    measured_configs = {}
    for name in names:
        results = measured_configs[name] = measure(name, CONFIGS[name], args, device, out)
        if (cost := attention_cost_line(name, measured_configs, device)) is not None:
            out.emit(cost)
        if set(results) != {"nmt", "reference"}:
            continue
        nmt, ref = results["nmt"], results["reference"]
        measured = {
            "speedup": bc.rounded(nmt["tgt_tokens_per_s"] / ref["tgt_tokens_per_s"], 3),
            "nmt_tgt_tokens_per_s": nmt["tgt_tokens_per_s"],
            "reference_tgt_tokens_per_s": ref["tgt_tokens_per_s"],
        }
        target, hardware = targets_for(name, device)
        met, all_met = bc.check_targets(measured, target)
        out.emit(
            {
                **bc.common_fields("train", device),
                "config": name,
                "impl": "nmt/reference",
                "comparison": "speedup = nmt / reference, non-padding target tokens per second",
                "sizes": nmt["sizes"],
                **measured,
                "target": target,
                "target_hardware": hardware,
                "target_met": met,
                "met": all_met,
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
