"""Validation during training: the validation set, its loss, and the greedy BLEU and chrF
that early stopping and best.pt go by, and where each validation is recorded. Rank 0
computes them when several processes train."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from nmt import run_folder
from nmt.batching import ParallelIds, token_batches
from nmt.config import DecodeConfig
from nmt.inference import decode_ids
from nmt.metrics import bleu_and_chrf
from nmt.runtime import autocast, copy_to_log_files


@dataclass
class ValidationSet:
    ids: ParallelIds  # every validation pair, for the loss
    src_ids: list[list[int]]  # the sources translated for BLEU / chrF (train.val_max_sentences of them)
    refs: list[str]  # their reference translations
    detokenize: Callable[[list[list[int]]], list[str]]  # target ids -> text (Tokenizer.decode_tgt)


@torch.no_grad()
def mean_loss(model, data: ParallelIds, batch_tokens: int, device: torch.device, amp: bool = False) -> float:
    """Cross-entropy per target token over all of ``data`` (teacher-forced, in eval mode)."""
    model.eval()
    losses, tokens = [], 0
    budget = max(batch_tokens, int(max(data.src_lengths.max(), data.tgt_lengths.max())))
    for rows in token_batches(data.src_lengths, data.tgt_lengths, budget, shuffle=False):
        batch = data.collate(rows)
        n_tokens = batch.n_tgt_tokens
        batch = batch.to(device)
        with autocast(device, amp):
            loss_sum, _ = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, n_tokens=n_tokens)
        losses.append(loss_sum.float())
        tokens += n_tokens
    return float(torch.stack(losses).double().sum()) / max(tokens, 1) if losses else 0.0


def validation_metrics(trainer) -> dict:
    """Validation loss, greedy BLEU and chrF of the trainer's model, and the training figures since the last one."""
    start, p, val = time.perf_counter(), trainer.progress, trainer.data.validation
    val_loss = mean_loss(trainer.model, val.ids, trainer.opt.val_batch_tokens, trainer.device, trainer.amp)
    hyps = val.detokenize([h[0].tokens for h in decode_ids(trainer.model, val.src_ids, DecodeConfig(), trainer.device)])
    bleu, chrf = bleu_and_chrf(hyps, val.refs)
    return {
        "step": p.step,
        "epoch": trainer.epochs(),
        "train_loss": p.train_loss_sum / max(p.train_tokens, 1) if p.train_tokens else None,
        "val_loss": val_loss,
        "val_ppl": math.exp(min(val_loss, 50)),
        "val_bleu": bleu,
        "val_chrf": chrf,
        "tokens_per_s": p.train_tokens / max(p.interval_seconds, 1e-9),
        "lr": trainer.optimizer.param_groups[0]["lr"],
        "train_seconds": p.seconds,
        "val_seconds": time.perf_counter() - start,
        "skipped_steps": p.nonfinite_total,
    }


def record_validation(metrics: dict, run_dir, writer) -> None:
    """One validation in metrics.jsonl (when there is a run folder), TensorBoard (when open),
    and a line on the console and in train.log."""
    if run_dir is not None:
        run_folder.append_metrics(run_dir, metrics)
    if writer is not None:
        for key in ("train_loss", "val_loss", "val_bleu", "val_chrf", "tokens_per_s", "lr"):
            if metrics[key] is not None:
                writer.add_scalar(key, metrics[key], metrics["step"])
    line = (
        f"step {metrics['step']}: val loss {metrics['val_loss']:.3f} (ppl {metrics['val_ppl']:.1f}), BLEU "
        f"{metrics['val_bleu']:.2f}, chrF {metrics['val_chrf']:.2f}{' *' if metrics['best'] else ''}"
    )
    tqdm.write(line)
    copy_to_log_files(line)
