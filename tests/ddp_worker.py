"""A torchrun worker for tests/test_distributed.py (also run as one plain process).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py steps OUT.pt [ARCH]
    python tests/ddp_worker.py single OUT.pt [ARCH]
    python -m torch.distributed.run ... tests/ddp_worker.py prepare CORPUS CACHE LOG

``steps``: a tiny model (ARCH: cho2014, the default, or rnnsearch) trained for one epoch on
random pairs with ``Trainer.fit`` (the epoch ends on an odd number of batches, so one rank
idles in the last step); rank 0 saves the weights. ``single``, in one process: the same
with ``train.accumulate=2``, with 1, and the epoch with each step trained on the union of
the batches two ranks would take (one batch, collated from both). ``prepare``: the data
preparation of ``nmt.training.build_trainer`` on a word corpus, with every tokenizer
training and every batch tokenized for a cache appended to LOG as "RANK what".
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from nmt.architectures import build_model
from nmt.batching import ParallelIds, token_batches
from nmt.config import ModelConfig, OptimConfig
from nmt.distributed import join, leave
from nmt.trainer import Trainer, TrainingData

CPU = torch.device("cpu")
OPT = OptimConfig(max_tokens=60, max_epochs=1, val_every=0, log_every=1, lr=0.01)


def pairs() -> ParallelIds:
    rng = np.random.default_rng(3)
    src = [rng.integers(4, 30, rng.integers(1, 9)).tolist() for _ in range(51)]
    tgt = [rng.integers(4, 30, rng.integers(1, 9)).tolist() for _ in range(51)]
    return ParallelIds.from_lists(src, tgt)


ARCH = "cho2014"  # set from the command line


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    sizes = {"embed_size": 8, "hidden_size": 12, "maxout_size": 6, "dropout": 0.0}
    if ARCH == "rnnsearch":
        sizes.update(arch="rnnsearch", attention_size=10)
    return build_model(ModelConfig(**sizes), 30, 30)


def steps(accumulate: int) -> dict:
    """One epoch of ``Trainer.fit`` (under torchrun: on every rank)."""
    world = join("cpu", 1.0)
    model, data = tiny_model(), pairs()
    opt = OptimConfig(**{**OPT.__dict__, "accumulate": accumulate})
    trainer = Trainer(model, TrainingData(data), opt, CPU, world=world)
    reason = trainer.fit()
    result = {
        "weights": model.state_dict(),
        "steps": trainer.progress.step,
        "reason": reason,
        "rank": world.rank,
        "batches": len(token_batches(data.src_lengths, data.tgt_lengths, OPT.max_tokens, seed=OPT.seed)),
    }
    del trainer  # its DDP goes before the process group does (see nmt.distributed.leave)
    leave(world)
    return result


def union() -> dict:
    """The same epoch, each step on one batch: the union of two consecutive batches."""
    model, data = tiny_model(), pairs()
    trainer = Trainer(model, TrainingData(data), OPT, CPU)
    batches = token_batches(data.src_lengths, data.tgt_lengths, OPT.max_tokens, shuffle=True, seed=OPT.seed, epoch=0)
    for step, start in enumerate(range(0, len(batches), 2), 1):
        trainer.schedule.step(step)
        trainer.train_step(data.collate(np.concatenate(batches[start : start + 2])))
    return {"weights": model.state_dict(), "steps": len(range(0, len(batches), 2))}


def prepare(corpus: str, cache: str, log: str) -> None:
    import nmt.tokenizer
    from nmt.training import build_trainer
    from tests.conftest import compose_config, word_corpus_overrides

    world = join("cpu", 1.0)

    def logged(what, function):
        def call(*args, **kwargs):
            with open(log, "a") as f:
                f.write(f"{world.rank} {what}\n")
            return function(*args, **kwargs)

        return call

    nmt.tokenizer._train_model = logged("tokenizer", nmt.tokenizer._train_model)
    # Called by tokenize_corpus only for a split it does not find cached.
    nmt.tokenizer.Tokenizer.encode_src = logged("tokenize", nmt.tokenizer.Tokenizer.encode_src)
    cfg = compose_config("train", word_corpus_overrides(corpus, cache) + ["train.device=cpu"])
    trainer, _ = build_trainer(cfg, None, world)
    with open(log, "a") as f:
        f.write(f"{world.rank} ready {trainer.tokenizer.fingerprint()}\n")
    del trainer
    leave(world)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    command, *args = sys.argv[1:]
    if command in ("steps", "single") and len(args) > 1:
        ARCH = args[1]
    if command == "steps":  # under torchrun
        result = steps(1)
        if result["rank"] == 0:
            torch.save(result, args[0])
    elif command == "single":  # one process: accumulate=2, plain, and the union batches
        torch.save({"acc": steps(2), "plain": steps(1), "union": union()}, args[0])
    else:
        prepare(*args)
