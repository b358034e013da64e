"""Data-parallel training with PyTorch's own engine: ``torchrun`` starts the processes,
``torch.distributed`` connects them (NCCL on CUDA, gloo on a CPU) and
``DistributedDataParallel`` averages the gradients.

    torchrun --nproc_per_node=8 --no-python nmt-train model=cho2014 train=paper

``World`` is what the trainer knows of it: this process's rank, how many there are, and
the few collective operations training needs (a barrier, a broadcast from rank 0, an
"any rank?" vote). Without torchrun's environment it is a world of one, and every
operation is a no-op: a plain ``nmt-train`` runs exactly as it always did. The trainer's
rank-aware pieces live here too: the loss as the module DDP wraps, each rank's share of
a step's batches, the vote to stop, and each rank's random state on resume.

How the work is shared (``step_share``): every rank derives the same epoch's
token-budget batches from the seed and the epoch, so each knows them all; one optimizer
step takes the next ``world_size * accumulate`` of them and rank r trains on batches r,
r + world_size, ... of that group. The loss is divided by the target tokens of the whole
group, counted on the host from the batch lengths every rank knows, so one update is the
single-process update over the union of the ranks' batches, and no device sync is needed
to learn the count.
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from nmt.batching import ParallelIds
from nmt.errors import SettingError
from nmt.launch import launched_by_torchrun, restarted_by_torchrun, torchrun_rank  # noqa: F401
from nmt.runtime import set_rng_state

log = logging.getLogger(__name__)


@dataclass
class World:
    """The processes training together; ``World()`` is one process on its own."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = ""  # this process's device under torchrun: cuda:LOCAL_RANK or cpu

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run folder, logs, and validates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        values = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def any(self, *flags: bool) -> list[bool]:
        """For each flag, true on every rank if it is true on any: decisions all ranks take
        together, in one all-reduce."""
        if not self.distributed:
            return list(flags)
        votes = torch.tensor([float(flag) for flag in flags], device=_collective_device())
        dist.all_reduce(votes, op=dist.ReduceOp.MAX)
        return [bool(vote) for vote in votes.tolist()]

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place (asynchronous to the host on CUDA)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def join(device_setting: str, timeout_minutes: float) -> World:
    """Join torchrun's process group, if this process was started by torchrun (with more
    than one process); the world's ``device`` is this rank's (``cuda`` becomes ``cuda:LOCAL_RANK``).

    ``timeout_minutes`` bounds every wait on the other ranks: if one dies, the others
    fail with an error after at most that long instead of hanging."""
    if not launched_by_torchrun():
        return World()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_setting.startswith("cuda") or (device_setting == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise SettingError(
                f"train.device={device_setting}: CUDA is not available on this machine; use train.device=cpu (gloo)"
            )
        if world.local_rank >= torch.cuda.device_count():
            raise SettingError(
                f"LOCAL_RANK={world.local_rank} but this machine has {torch.cuda.device_count()} "
                "GPU(s): give torchrun --nproc_per_node at most that many"
            )
        torch.cuda.set_device(world.local_rank)
    world.device = f"cuda:{world.local_rank}" if use_cuda else "cpu"
    if not dist.is_initialized():
        timeout = datetime.timedelta(minutes=timeout_minutes)
        # torchrun's store outlives a restart (--max-restarts); keys of our own per attempt
        # keep a restarted rank from connecting to the address a dead one left there.
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        store = dist.TCPStore(
            os.environ["MASTER_ADDR"],
            int(os.environ["MASTER_PORT"]),
            world.size,
            is_master=not agent_store and world.rank == 0,
            timeout=timeout,
        )
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(
            "nccl" if use_cuda else "gloo",
            store=dist.PrefixStore(f"nmt/attempt-{attempt}", store),
            rank=world.rank,
            world_size=world.size,
            timeout=timeout,
        )
    log.info(
        "rank %d of %d (local rank %d), %s backend, on %s",
        world.rank,
        world.size,
        world.local_rank,
        dist.get_backend(),
        world.device,
    )
    return world


def leave(world: World) -> None:
    """Leave the process group, after collecting what still refers to it (DDP's reducer and
    the gloo work it holds live in reference cycles): left to the interpreter's shutdown, a
    gloo thread could free a tensor of Python's after Python is gone, and abort the process."""
    if world.distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def step_share(group: list[np.ndarray], world: World, accumulate: int) -> list[np.ndarray | None]:
    """This rank's ``accumulate`` batches of one optimizer step's ``group`` (the next
    ``world.size * accumulate`` batches of the epoch, fewer at its end): batch ``k * size +
    rank`` for k < accumulate, None where the group has run out (the rank then runs that
    micro-step on nothing, so that every rank takes part in every gradient reduction)."""
    return [group[i] if i < len(group) else None for i in range(world.rank, world.size * accumulate, world.size)]


class LossModule(torch.nn.Module):
    """``model.loss`` as a module's ``forward``: what DistributedDataParallel wraps, since it
    synchronizes the gradients of what its forward ran."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args):
        return self.model.loss(*args)


def step_batches(train: ParallelIds, group: list, world: World, accumulate: int, device: torch.device):
    """This rank's micro-batches of one step's ``group`` of batches (``step_share``),
    the target tokens of the whole group, and which micro-batches are idle (stand-ins that count for
    nothing, for a rank whose share ran out at the end of an epoch)."""
    share = step_share(group, world, accumulate)
    if not world.distributed:  # one process: no stand-ins needed
        share = [rows for rows in share if rows is not None]
    micro = [train.collate(group[0] if rows is None else rows) for rows in share]
    if device.type == "cuda":
        micro = [batch.pin_memory() for batch in micro]
    total = sum(int(train.tgt_lengths[rows].sum()) for rows in group)
    return micro, total, tuple(i for i, rows in enumerate(share) if rows is None)


def stop_votes(world: World, step: int, read_every: int, *flags: bool) -> list[bool]:
    """Whether to stop (on a signal, at the time limit): with several processes all must
    stop at the same step, so they vote, every ``read_every`` steps (where the losses are
    read anyway); one process decides at every step."""
    if world.distributed and step % read_every:
        return [False] * len(flags)
    return world.any(*flags)


def restore_rng(saved: dict, world: World, device: torch.device, seed: int, step: int) -> None:
    """Each rank's random state as the checkpoint saved it; with another number of ranks than
    saved, rank 0 takes the saved one and the others a seed of their own."""
    ranks = saved.get("ranks")
    if ranks is not None and len(ranks) == world.size:
        set_rng_state(ranks[world.rank], device)
    elif world.rank == 0:
        set_rng_state(saved, device)
    else:
        torch.manual_seed(seed + 1000 * world.rank + step)
