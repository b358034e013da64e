"""The training loop: a ready model and ready token ids in, trained weights, validation
metrics and checkpoints out.

``Trainer`` knows no corpus and no tokenizer file: ``nmt.training`` prepares the data
and builds the model, and a test or a benchmark can hand it a tiny model and an
in-memory id table instead. With a ``run_dir`` it writes checkpoints and metrics
there; without one it only trains.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from nmt import run_folder
from nmt.batching import Batch, ParallelIds, token_batches
from nmt.checkpoint import (
    Checkpoint,
    TrainingState,
    link_checkpoint,
    pack_checkpoint,
    prune_step_checkpoints,
    save_checkpoint,
)
from nmt.config import DataConfig, OptimConfig
from nmt.distributed import LossModule, World, restore_rng, step_batches, stop_votes
from nmt.errors import CheckpointError, SettingError, TrainingError, check_choice
from nmt.optim import LearningRateSchedule, build_optimizer, restore_optimizer_kind, skips_on_device
from nmt.progress import ProgressLog
from nmt.runtime import StopRequest, autocast, rng_state
from nmt.validation import ValidationSet, record_validation, validation_metrics

log = logging.getLogger(__name__)

PROGRESS_BAR = {"unit": "step", "desc": "training", "mininterval": 1.0, "dynamic_ncols": True}
PROGRESS_LOG_SECONDS = 60.0  # without a terminal (no bar): a progress line this often
# train.early_stopping_metric -> whether a higher value is better
EARLY_STOPPING_METRICS = {"val_bleu": True, "val_chrf": True, "val_loss": False}


def higher_is_better(metric: str) -> bool:
    check_choice("train.early_stopping_metric", metric, EARLY_STOPPING_METRICS)
    return EARLY_STOPPING_METRICS[metric]


@dataclass
class TrainingData:
    train: ParallelIds
    validation: ValidationSet | None = None  # None: no validation (and so no early stopping)


class StepResult(NamedTuple):
    """One training step as the device left it; ``Trainer.settle_steps`` reads it later."""

    loss_sum: torch.Tensor  # summed cross-entropy of the batch (float32 scalar, on the device)
    n_tokens: int  # real target tokens, counted on the host
    finite: torch.Tensor  # bool scalar: False if the loss or gradient was not finite (step skipped)


@dataclass
class Progress:
    """Where training is; saved in every checkpoint so a resume continues exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of the current epoch already trained on
    best_value: float | None = None
    best_step: int = 0
    bad_validations: int = 0
    nonfinite_in_a_row: int = 0
    nonfinite_total: int = 0
    train_loss_sum: float = 0.0  # since the last validation
    train_tokens: int = 0
    log_loss_sum: float = 0.0  # since the last log line
    log_tokens: int = 0
    interval_seconds: float = 0.0  # step time behind train_tokens
    seconds: float = 0.0  # training wall time across resumes
    history: list = field(default_factory=list)  # train loss per log interval: (step, loss)
    world_size: int = 1  # processes training together (torchrun), as of the last step

    def book_step(self, loss: float, n_tokens: int, finite: bool) -> None:
        """Count one trained step's loss, or one skipped (non-finite) step."""
        if finite:
            self.nonfinite_in_a_row = 0
            self.train_loss_sum += loss
            self.train_tokens += n_tokens
            self.log_loss_sum += loss
            self.log_tokens += n_tokens
        else:
            self.nonfinite_in_a_row += 1
            self.nonfinite_total += 1


def clipped_grad_norm(model: torch.nn.Module, clip_norm: float) -> torch.Tensor:
    """The gradient's norm (on the device), after clipping it to ``clip_norm`` when that is > 0."""
    if clip_norm:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None])
    )


def check_same_run(checkpoint: Checkpoint, model: torch.nn.Module, tokenizer) -> None:
    """Refuse to resume ``checkpoint`` into another model or tokenizer than it was trained with."""
    saved = {
        "config": asdict(checkpoint.model_config),
        "src_vocab_size": checkpoint.src_vocab_size,
        "tgt_vocab_size": checkpoint.tgt_vocab_size,
    }
    if saved != model.model_config():
        raise CheckpointError(f"{checkpoint.path}: trained with model {saved}, which differs from the current config")
    if tokenizer is not None and checkpoint.tokenizer_identity() != tokenizer.identity():
        raise CheckpointError(
            f"{checkpoint.path}: trained with another SentencePiece model than the one built "
            "now (did the corpus or data.tokenizer settings change?)"
        )


def warn_about_resume(progress: Progress, opt: OptimConfig, world: World, run_dir) -> None:
    """What a resumed run should know: another number of processes, or nothing left to train.
    Rank 0 alone says it (the others have no run folder to name)."""
    if not world.is_main:
        progress.world_size = world.size
        return
    if progress.world_size != world.size:
        log.warning(
            "the run was saved by %d process(es) and continues on %d: a step now takes %d batches "
            "instead of %d (the batch order stays the same)",
            progress.world_size,
            world.size,
            world.size * opt.accumulate,
            progress.world_size * opt.accumulate,
        )
        progress.world_size = world.size
    for name, limit, done in (
        ("train.max_steps", opt.max_steps, progress.step),
        ("train.max_epochs", opt.max_epochs, progress.epoch),
    ):
        if limit and done >= limit:
            log.warning(
                "the run has already reached %s=%d: nothing left to train; raise it on the command line (resume=%s %s=...)",
                name,
                limit,
                run_dir,
                name,
            )
            break


def log_interval(p: Progress, bar, writer, lr: float, log_start: float) -> float:
    """The progress bar's figures and TensorBoard's step loss for the steps since ``log_start``; returns now."""
    now = time.perf_counter()
    if p.log_tokens:
        loss = p.log_loss_sum / p.log_tokens
        p.history.append((p.step, loss))
        bar.set_postfix(
            loss=f"{loss:.3f}",
            tok_s=f"{p.log_tokens / (now - log_start):.0f}",
            lr=f"{lr:.2g}",
            epoch=p.epoch + 1,
            refresh=False,
        )
        if writer is not None:
            writer.add_scalar("train_loss_step", loss, p.step)
    p.log_loss_sum, p.log_tokens = 0.0, 0
    return now


def nonfinite_error(limit: int, failed_at: int, step: int, run_dir) -> TrainingError:
    return TrainingError(
        f"{limit} consecutive steps had a non-finite loss or gradient (steps {failed_at - limit + 1}-{failed_at}); "
        f"stopped at step {step}"
        + (f" with a checkpoint in {run_dir} (weights of the last finite step)" if run_dir else "")
        + ". Lower train.lr, enable train.clip_norm, or check the data."
    )


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        data: TrainingData,
        opt: OptimConfig,
        device: torch.device,
        run_dir: Path | None = None,
        tokenizer=None,
        data_config: DataConfig | None = None,
        world: World | None = None,
    ):
        """``model``: any architecture of ``nmt.architectures``, on ``device``. ``run_dir``: where checkpoints
        and metrics go, with the ``tokenizer`` and ``data_config`` that checkpoints carry; None writes nothing
        (what ranks other than 0 get). ``world``: the processes training together (``nmt.distributed``)."""
        if run_dir is not None and (tokenizer is None or data_config is None):
            raise SettingError("a Trainer that writes a run folder needs the tokenizer and data settings")
        self.model, self.data, self.opt, self.device = model, data, opt, device
        self.world = world or World()
        self.run_dir = None if run_dir is None else Path(run_dir)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.tokenizer, self.data_config = tokenizer, data_config
        self.maximize = higher_is_better(opt.early_stopping_metric)
        # torch.compile(model) would compile forward() only; training calls model.loss.
        self.ddp = None
        if self.world.distributed:  # also makes every rank start from rank 0's weights
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                LossModule(model), device_ids=[device.index] if device.type == "cuda" else None
            )
        loss = self.ddp or model.loss
        self.loss_fn = torch.compile(loss) if opt.compile else loss
        self.optimizer = build_optimizer(opt, model.parameters(), device)
        self.schedule = LearningRateSchedule(opt, self.optimizer)
        self.amp = opt.amp and device.type == "cuda"
        self.progress = Progress(world_size=self.world.size)
        self.pending: list[tuple[int, StepResult]] = []  # (step, result) trained but not yet read
        self.writer = None  # TensorBoard, opened by fit()
        self.epoch_batches = 1  # batches in the current epoch, known once fit() has made them

    def epochs(self) -> float:
        """Epochs trained, with the current one's fraction."""
        return self.progress.epoch + self.progress.batch_in_epoch / max(1, self.epoch_batches)

    # ----------------------------------------------------------------- checkpoints

    def save(self, name: str, with_training_state: bool = True) -> None:
        """Rank 0 writes; every rank must call it (the training state holds every rank's random state)."""
        self.settle_steps()  # the progress saved includes every step trained
        rngs = self.world.gather(rng_state(self.device)) if with_training_state else []
        if self.run_dir is None:
            return
        p, tok, training = self.progress, self.tokenizer, None
        if with_training_state:
            rng = {**rngs[0], "ranks": rngs} if self.world.distributed else rngs[0]
            training = TrainingState(self.optimizer.state_dict(), self.schedule.state_dict(), asdict(p), rng, asdict(self.opt))
        state = pack_checkpoint(
            self.model, tok.src_proto, tok.tgt_proto, self.data_config, p.step, p.epoch, p.best_value, training
        )
        save_checkpoint(state, self.run_dir / name)

    def save_step_checkpoints(self) -> None:
        """last.pt, and step-N.pt (the same file, hard-linked) when keep_last > 0."""
        if not self.opt.keep_last or self.run_dir is None:
            self.save("last.pt")
            return
        step_name = f"step-{self.progress.step}.pt"
        self.save(step_name)
        link_checkpoint(self.run_dir / step_name, self.run_dir / "last.pt")
        prune_step_checkpoints(self.run_dir, self.opt.keep_last)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue exactly where ``checkpoint`` (a resumable one) left off."""
        check_same_run(checkpoint, self.model, self.tokenizer)
        self.model.load_state_dict(checkpoint.model_state)
        fused = [group.get("fused") for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(checkpoint.training.optimizer)
        restore_optimizer_kind(self.optimizer, fused)
        self.schedule.load_state_dict(checkpoint.training.schedule)
        self.progress = p = Progress(**checkpoint.training.progress)
        restore_rng(checkpoint.training.rng, self.world, self.device, self.opt.seed, p.step)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", checkpoint.path, p.step, p.epoch + 1, p.batch_in_epoch)
        warn_about_resume(p, self.opt, self.world, self.run_dir)

    # ----------------------------------------------------------------- one step

    def train_step(self, batch: Batch | list[Batch], total_tokens: int | None = None, idle: tuple[int, ...] = ()) -> StepResult:
        """Forward, backward, clip, update, without waiting for the device (``settle_steps``
        reads many steps' losses at once; a non-finite step is skipped on the device, by
        fused Adam's ``found_inf``; Adadelta syncs once per step).

        ``batch``: one batch, or this rank's micro-batches of one step (``train.accumulate``),
        gradients summed, the loss divided by ``total_tokens``: the step's target tokens on
        all ranks, counted on the host (default: these batches'). Micro-batches at ``idle``
        count for nothing (a rank whose share ran out at an epoch's end still takes part)."""
        batches = [batch] if isinstance(batch, Batch) else batch
        total = total_tokens or sum(b.n_tgt_tokens for i, b in enumerate(batches) if i not in idle)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        for i, micro in enumerate(batches):
            n_tokens = micro.n_tgt_tokens
            micro = micro.to(self.device, non_blocking=True)
            # DDP averages gradients over the ranks: * world.size / total makes it the sum / total.
            ranks = 0.0 if i in idle else self.world.size
            synced = self.ddp is None or i == len(batches) - 1  # gradients are exchanged once per step
            with contextlib.nullcontext() if synced else self.ddp.no_sync():
                with autocast(self.device, self.amp):
                    micro_loss, _ = self.loss_fn(
                        micro.src, micro.src_lengths, micro.tgt_in, micro.tgt_out, self.opt.label_smoothing, n_tokens
                    )
                (micro_loss * ranks / total).backward()
            if i not in idle:
                loss_sum = loss_sum + micro_loss.detach().float()
        self.world.all_reduce_sum_(loss_sum)  # the step's loss on all ranks, so that all skip alike
        grad_norm = clipped_grad_norm(self.model, self.opt.clip_norm)
        finite = torch.isfinite(loss_sum) & torch.isfinite(grad_norm)
        if skips_on_device(self.optimizer):
            self.optimizer.found_inf = (~finite).float()
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # non-fused Adam refuses a step while it is set
        elif finite.item():
            self.optimizer.step()
        return StepResult(loss_sum, total, finite)

    def settle_steps(self) -> None:
        """Read the losses of the steps trained since the last call (one device sync) and
        book them in ``progress``; called every ``min(train.log_every,
        train.max_nonfinite_steps)`` steps and before any validation or checkpoint.
        ``train.max_nonfinite_steps`` skipped steps in a row stop training here, with a
        checkpoint (the weights are those of the last finite step: skipped steps moved none).
        """
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        start = time.perf_counter()
        values = torch.stack([torch.stack([r.loss_sum, r.finite.float()]) for _, r in pending]).tolist()
        waited = time.perf_counter() - start  # the device finishing the queued steps: training time
        p = self.progress
        p.seconds += waited
        p.interval_seconds += waited
        failed_at = None
        for (step, result), (loss, finite) in zip(pending, values):
            p.book_step(loss, result.n_tokens, bool(finite))
            if finite:
                continue
            log.warning("step %d: non-finite loss or gradient; step skipped (%d in a row)", step, p.nonfinite_in_a_row)
            if p.nonfinite_in_a_row >= self.opt.max_nonfinite_steps and failed_at is None:
                failed_at = step
        if failed_at is not None:
            self.save_step_checkpoints()
            raise nonfinite_error(self.opt.max_nonfinite_steps, failed_at, p.step, self.run_dir)

    # ----------------------------------------------------------------- validation

    def validate(self) -> dict:
        """Validation loss, greedy BLEU / chrF; metrics.jsonl, best.pt, step checkpoints (only those without data)."""
        self.settle_steps()
        p = self.progress
        if self.data.validation is None:
            self.save_step_checkpoints()
            return {}
        # Rank 0 validates; every rank takes the same decisions from its figures.
        metrics = self.world.broadcast(validation_metrics(self) if self.world.is_main else None)
        value = metrics[self.opt.early_stopping_metric]
        none_yet = p.best_value is None or not math.isfinite(p.best_value)  # (an older release kept NaN bests)
        improved = math.isfinite(value) and (none_yet or (value > p.best_value if self.maximize else value < p.best_value))
        if improved:
            p.best_value, p.best_step, p.bad_validations = value, p.step, 0
        else:
            p.bad_validations += 1
        self.schedule.validated(improved)
        metrics["best"] = improved
        p.train_loss_sum, p.train_tokens, p.interval_seconds = 0.0, 0, 0.0
        if self.world.is_main:
            record_validation(metrics, self.run_dir, self.writer)
        if improved:
            self.save("best.pt", with_training_state=False)
        self.save_step_checkpoints()
        return metrics

    # ----------------------------------------------------------------- the loop

    def should_stop_early(self) -> bool:
        return bool(self.opt.patience) and self.progress.bad_validations >= self.opt.patience

    def fit(self, stop: StopRequest | None = None) -> str:
        """Train until max_epochs / max_steps / max_minutes / early stopping / a signal. Returns why it stopped."""
        opt, p, train = self.opt, self.progress, self.data.train
        self.writer = run_folder.tensorboard_writer(self.run_dir) if self.run_dir is not None else None
        bar = tqdm(total=opt.max_steps or None, initial=p.step, disable=None if self.world.is_main else True, **PROGRESS_BAR)
        lines = ProgressLog(PROGRESS_LOG_SECONDS, opt.max_minutes, enabled=self.world.is_main and bar.disable)  # no terminal
        log_start = session_start = time.perf_counter()
        # The host reads the device's losses at each log line, and often enough that a run
        # of non-finite steps stops training within max_nonfinite_steps more.
        read_every = max(1, min(opt.log_every, opt.max_nonfinite_steps))
        per_step = self.world.size * opt.accumulate  # batches of the epoch one optimizer step takes
        try:
            while p.epoch < opt.max_epochs:
                # Every rank derives the same batches: the order is a function of the seed and epoch.
                batches = token_batches(
                    train.src_lengths, train.tgt_lengths, opt.max_tokens, shuffle=True, seed=opt.seed, epoch=p.epoch
                )
                self.epoch_batches = len(batches)
                while p.batch_in_epoch < len(batches):
                    out_of_time = bool(opt.max_minutes) and time.perf_counter() - session_start >= 60 * opt.max_minutes
                    signalled, out_of_time = stop_votes(self.world, p.step, read_every, bool(stop), out_of_time)
                    if signalled:
                        self.save_step_checkpoints()
                        return "signal"
                    if opt.max_steps and p.step >= opt.max_steps:
                        return "max_steps"
                    if out_of_time:
                        return "max_minutes"
                    step_start = time.perf_counter()
                    # While the device runs the step launched last, the host builds this step's batches.
                    group = batches[p.batch_in_epoch : p.batch_in_epoch + per_step]
                    micro, total, idle = step_batches(train, group, self.world, opt.accumulate, self.device)
                    lr = self.schedule.step(p.step + 1)
                    self.pending.append((p.step + 1, self.train_step(micro, total, idle)))
                    p.batch_in_epoch += len(group)
                    p.step += 1
                    elapsed = time.perf_counter() - step_start
                    p.seconds += elapsed
                    p.interval_seconds += elapsed
                    bar.update(1)
                    lines.maybe(p, lr, p.batch_in_epoch / max(1, len(batches)))
                    if p.step % read_every == 0:
                        self.settle_steps()
                    if p.step % opt.log_every == 0:
                        log_start = log_interval(p, bar, self.writer, lr, log_start)
                    if opt.val_every and p.step % opt.val_every == 0:
                        self.validate()
                        if self.should_stop_early():
                            return "early_stopping"
                    elif opt.save_every and p.step % opt.save_every == 0:
                        self.save_step_checkpoints()
                p.epoch += 1
                p.batch_in_epoch = 0
                if not opt.val_every:
                    self.validate()
                    if self.should_stop_early():
                        return "early_stopping"
            return "max_epochs"
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
