"""``nmt-train``: train the RNN Encoder–Decoder; the run folder is Hydra's output dir.

    nmt-train                                     # small model on the embedded Bible corpus
    nmt-train model=cho2014 train=paper           # the paper's sizes and Adadelta (a GPU job)
    nmt-train resume=outputs/bible_es_en/small/RUN train.max_epochs=30

The run folder holds everything translation needs: config.yaml, the tokenizer
(spm*.model), best.pt / last.pt / step-N.pt checkpoints, metrics.jsonl,
curves.png and TensorBoard events.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import hydra
import numpy as np
import sacrebleu
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from nmt.batching import Batch, ParallelIds, token_batches
from nmt.checkpoint import (
    CheckpointError, link_checkpoint, load_for_resume, prune_step_checkpoints, save_checkpoint,
)
from nmt.cli import copy_to_log_files
from nmt.config import CONF_DIR, DecodeConfig, OptimConfig, TrainRunConfig
from nmt.data import describe, load_corpus, text_column
from nmt.model import CELLS, build_model, count_parameters
from nmt.tokenizer import build_tokenizer, flat_ids, tokenize_corpus
from nmt.translate import decode_ids, pick_device

log = logging.getLogger(__name__)

# Exit status after a SIGTERM/SIGINT was honoured with a checkpoint: "try again later"
# (EX_TEMPFAIL), so a scheduler can requeue the job with ``resume=RUN_DIR``.
PREEMPTED_EXIT_CODE = 75


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stays non-finite); a checkpoint was written."""


# --------------------------------------------------------------------------- schedule


OPTIMIZERS = ("adam", "adadelta")
LR_SCHEDULES = ("constant", "inverse_sqrt", "plateau")


class LearningRateSchedule:
    """constant | inverse_sqrt (linear warmup, then decay with 1/sqrt(step)) | plateau.

    ``plateau`` multiplies the rate by ``lr_decay`` after ``lr_patience`` validations
    without improvement, down to ``min_lr``. All three may have a linear warmup.
    """

    def __init__(self, cfg: OptimConfig, optimizer: torch.optim.Optimizer):
        if cfg.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule={cfg.lr_schedule!r}: expected constant, inverse_sqrt or plateau")
        if cfg.lr_schedule == "inverse_sqrt" and not cfg.warmup_steps:
            raise ValueError("train.lr_schedule=inverse_sqrt needs train.warmup_steps > 0 (it decays after warmup)")
        self.cfg, self.optimizer = cfg, optimizer
        self.base_lr = cfg.lr
        self.bad_validations = 0

    def step(self, step: int) -> float:
        lr, warmup = self.base_lr, self.cfg.warmup_steps
        if warmup and step <= warmup:
            lr = self.base_lr * step / warmup
        elif self.cfg.lr_schedule == "inverse_sqrt" and warmup:
            lr = self.base_lr * math.sqrt(warmup / step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def validated(self, improved: bool) -> None:
        if self.cfg.lr_schedule != "plateau":
            return
        self.bad_validations = 0 if improved else self.bad_validations + 1
        if self.bad_validations > self.cfg.lr_patience:
            self.base_lr = max(self.cfg.min_lr, self.base_lr * self.cfg.lr_decay)
            self.bad_validations = 0
            log.info("validation stalled: learning rate now %.3g", self.base_lr)

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict) -> None:
        self.base_lr, self.bad_validations = state["base_lr"], state["bad_validations"]


def build_optimizer(cfg: OptimConfig, params, device: torch.device | None = None) -> torch.optim.Optimizer:
    """Adam is fused (one kernel for all parameters) on CUDA and CPU: fewer launches, and
    it can skip a step on the device (``found_inf``), which ``Trainer.train_step`` uses."""
    if cfg.optimizer == "adam":
        fused = device is not None and device.type in ("cuda", "cpu")
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, rho=cfg.rho, eps=cfg.eps, weight_decay=cfg.weight_decay)
    raise ValueError(f"train.optimizer={cfg.optimizer!r}: expected 'adam' or 'adadelta'")


def restore_optimizer_kind(optimizer: torch.optim.Optimizer, fused: list) -> None:
    """After ``load_state_dict``: keep the implementation ``build_optimizer`` chose.

    ``load_state_dict`` takes ``fused`` / ``foreach`` from the saved param groups, so a
    checkpoint from a non-fused optimizer (older versions, or another device) would
    bring the host-checked path back. Fused Adam keeps its step counts as float32 on
    the parameters' device; the plain one as CPU tensors.
    """
    for group, want in zip(optimizer.param_groups, fused):
        if group.get("fused") == want:
            continue
        group["fused"], group["foreach"] = want, None
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if "step" in state:
                state["step"] = state["step"].to(param.device if want else "cpu", torch.float32)
        log.info("optimizer state loaded into %s Adam", "fused" if want else "plain")


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` honours ``optimizer.found_inf`` (fused Adam does: it then
    leaves weights, moments and step count as they were, without the host looking)."""
    return isinstance(optimizer, torch.optim.Adam) and all(g.get("fused") for g in optimizer.param_groups)


# --------------------------------------------------------------------------- state


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


def higher_is_better(metric: str) -> bool:
    if metric not in ("val_bleu", "val_chrf", "val_loss"):
        raise ValueError(f"train.early_stopping_metric={metric!r}: expected val_bleu, val_chrf or val_loss")
    return metric != "val_loss"


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_device(cfg: OptimConfig) -> torch.device:
    device = pick_device(cfg.device, setting="train.device")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    if cfg.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; cuDNN needs its flag.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device


# --------------------------------------------------------------------------- signals


class StopRequest:
    """SIGTERM / SIGINT set a flag; training checkpoints at the next step boundary.

    A second SIGINT (Ctrl-C twice) aborts at once.
    """

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        log.warning("%s received: saving a checkpoint at the next step boundary (Ctrl-C again to abort)",
                    self.signal_name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __bool__(self):
        return self.signal_name is not None


# --------------------------------------------------------------------------- the trainer


class Trainer:
    def __init__(self, cfg: TrainRunConfig, run_dir: Path):
        self.cfg, self.opt = cfg, cfg.train
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.device = configure_device(self.opt)
        seed_everything(self.opt.seed)
        self.maximize = higher_is_better(self.opt.early_stopping_metric)

        corpus = load_corpus(cfg.data)
        for split, stats in describe(corpus).items():
            log.info("%s %s: %d pairs, %d / %d words", cfg.data.name, split, stats["pairs"],
                     stats["src_words"], stats["tgt_words"])
        cache = Path(cfg.data.cache_dir).expanduser()
        train = corpus["train"]
        self.tokenizer = build_tokenizer(text_column(train, "src"), text_column(train, "tgt"), cfg.data.tokenizer, cache)
        self.tokenizer.save(self.run_dir)
        tokenized = tokenize_corpus(corpus, self.tokenizer, cache, cfg.data.num_proc)
        self.train_data = self._split_ids(tokenized["train"], limit=self.opt.max_subwords)
        self.val_data = self._split_ids(tokenized["validation"])
        self.val_refs = list(tokenized["validation"]["tgt"])
        self.val_src_ids = [list(map(int, ids)) for ids in tokenized["validation"]["src_ids"]]
        if self.opt.val_max_sentences:
            n = self.opt.val_max_sentences
            self.val_refs, self.val_src_ids = self.val_refs[:n], self.val_src_ids[:n]
        self.test_split = tokenized["test"]

        self.model = build_model(cfg.model, self.tokenizer.src_vocab_size, self.tokenizer.tgt_vocab_size)
        self.model.to(self.device)
        # torch.compile(model) would compile forward() only; training calls model.loss.
        self.loss_fn = torch.compile(self.model.loss) if self.opt.compile else self.model.loss
        self.optimizer = build_optimizer(self.opt, self.model.parameters(), self.device)
        self.schedule = LearningRateSchedule(self.opt, self.optimizer)
        self.amp = self.opt.amp and self.device.type == "cuda"
        self.progress = Progress()
        self.pending: list[tuple[int, StepResult]] = []  # (step, result) trained but not yet read
        self.writer = None  # TensorBoard, opened by fit()
        self._epoch_batches = 1
        log.info("model: %s, %.1fM parameters, %s cell, on %s%s", cfg.model.name,
                 count_parameters(self.model) / 1e6, cfg.model.cell, self.device, " (bf16 autocast)" if self.amp else "")

    def _split_ids(self, table, limit: int = 0) -> ParallelIds:
        data = ParallelIds(*flat_ids(table, "src_ids"), *flat_ids(table, "tgt_ids"))
        if limit:
            keep = np.maximum(data.src_lengths, data.tgt_lengths) <= limit
            if not keep.all():
                log.info("skipping %d training pairs longer than %d subwords (train.max_subwords)",
                         int((~keep).sum()), limit)
                data = data.select(np.flatnonzero(keep))
        return data

    # ----------------------------------------------------------------- checkpoints

    def checkpoint_state(self, with_training_state: bool = True) -> dict:
        state = {
            "model": self.model.state_dict(),
            "model_config": self.model.model_config(),
            "tokenizer": {
                "src": torch.frombuffer(bytearray(self.tokenizer.src_proto), dtype=torch.uint8),
                "tgt": torch.frombuffer(bytearray(self.tokenizer.tgt_proto), dtype=torch.uint8),
            },
            "data_config": asdict(self.cfg.data),
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            "best_value": self.progress.best_value,
        }
        if with_training_state:
            state["train_state"] = {
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "progress": asdict(self.progress),
                "rng": rng_state(self.device),
                "train_config": asdict(self.cfg.train),
            }
        return state

    def save(self, name: str, with_training_state: bool = True) -> None:
        self.settle_steps()  # the progress saved includes every step trained
        save_checkpoint(self.checkpoint_state(with_training_state), self.run_dir / name)

    def save_step_checkpoints(self) -> None:
        """last.pt, and step-N.pt (the same file, hard-linked) when keep_last > 0."""
        if not self.opt.keep_last:
            self.save("last.pt")
            return
        step_name = f"step-{self.progress.step}.pt"
        self.save(step_name)
        link_checkpoint(self.run_dir / step_name, self.run_dir / "last.pt")
        prune_step_checkpoints(self.run_dir, self.opt.keep_last)

    def resume(self) -> None:
        state, path = load_for_resume(self.run_dir, log)
        saved = state["model_config"]
        if saved != self.model.model_config():
            raise CheckpointError(f"{path}: trained with model {saved}, which differs from the current config")
        saved_tokenizer = (bytes(state["tokenizer"]["src"].numpy()), bytes(state["tokenizer"]["tgt"].numpy()))
        if saved_tokenizer != (self.tokenizer.src_proto, self.tokenizer.tgt_proto):
            raise CheckpointError(
                f"{path}: trained with another SentencePiece model than the one built now "
                "(did the corpus or data.tokenizer settings change?)"
            )
        self.model.load_state_dict(state["model"])
        train_state = state["train_state"]
        fused = [group.get("fused") for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(train_state["optimizer"])
        restore_optimizer_kind(self.optimizer, fused)
        self.schedule.load_state_dict(train_state["schedule"])
        self.progress = Progress(**train_state["progress"])
        set_rng_state(train_state["rng"], self.device)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.progress.step,
                 self.progress.epoch + 1, self.progress.batch_in_epoch)
        for name, limit, done in (("train.max_steps", self.opt.max_steps, self.progress.step),
                                  ("train.max_epochs", self.opt.max_epochs, self.progress.epoch)):
            if limit and done >= limit:
                log.warning("the run has already reached %s=%d: nothing left to train; raise it on the "
                            "command line (resume=%s %s=...)", name, limit, self.run_dir, name)
                break

    # ----------------------------------------------------------------- one step

    def train_step(self, batch: Batch) -> StepResult:
        """Forward, backward, clip, update, without waiting for the device.

        Reading a number off a GPU makes the host wait until the GPU has caught up, and
        the GPU then idles while the host builds and launches the next batch. So the
        loss stays on the device (``settle_steps`` reads many steps at once), the token
        count comes from the batch while it is still on the host, and a step with a
        non-finite loss or gradient is skipped on the device: fused Adam's ``found_inf``
        leaves weights, moments and step count as they were. Optimizers that cannot do
        that (Adadelta) make the host look, one sync per step.
        """
        self.model.train()
        n_tokens = batch.n_tgt_tokens
        batch = batch.to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss_sum, _ = self.loss_fn(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out,
                                       self.opt.label_smoothing, n_tokens)
        self.optimizer.zero_grad(set_to_none=True)
        (loss_sum / n_tokens).backward()
        if self.opt.clip_norm:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.opt.clip_norm)
        else:
            grad_norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in self.model.parameters() if p.grad is not None])
            )
        loss_sum = loss_sum.detach().float()
        finite = torch.isfinite(loss_sum) & torch.isfinite(grad_norm)
        if skips_on_device(self.optimizer):
            self.optimizer.found_inf = (~finite).float()
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # non-fused Adam refuses a step while it is set
        elif finite.item():
            self.optimizer.step()
        return StepResult(loss_sum, n_tokens, finite)

    def settle_steps(self) -> None:
        """Read the losses of the steps trained since the last call (one device sync) and
        book them in ``progress``: losses and tokens of finite steps, skipped steps.

        Called every ``min(train.log_every, train.max_nonfinite_steps)`` steps and before
        any validation or checkpoint.
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
            if finite:
                p.nonfinite_in_a_row = 0
                p.train_loss_sum += loss
                p.train_tokens += result.n_tokens
                p.log_loss_sum += loss
                p.log_tokens += result.n_tokens
                continue
            p.nonfinite_in_a_row += 1
            p.nonfinite_total += 1
            log.warning("step %d: non-finite loss or gradient; step skipped (%d in a row)", step, p.nonfinite_in_a_row)
            if p.nonfinite_in_a_row >= self.opt.max_nonfinite_steps and failed_at is None:
                failed_at = step
        if failed_at is not None:
            self.save_step_checkpoints()
            limit = self.opt.max_nonfinite_steps
            raise TrainingError(
                f"{limit} consecutive steps had a non-finite loss or gradient (steps {failed_at - limit + 1}-"
                f"{failed_at}); stopped at step {p.step} with a checkpoint in {self.run_dir} (weights of the "
                "last finite step). Lower train.lr, enable train.clip_norm, or check the data."
            )

    # ----------------------------------------------------------------- validation

    @torch.no_grad()
    def validation_loss(self) -> float:
        self.model.eval()
        losses, tokens = [], 0
        for rows in token_batches(self.val_data.src_lengths, self.val_data.tgt_lengths,
                                  max(self.opt.val_batch_tokens, int(max(self.val_data.src_lengths.max(),
                                                                          self.val_data.tgt_lengths.max()))),
                                  shuffle=False):
            batch = self.val_data.collate(rows)
            n_tokens = batch.n_tgt_tokens
            batch = batch.to(self.device)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss_sum, _ = self.model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, n_tokens=n_tokens)
            losses.append(loss_sum.float())
            tokens += n_tokens
        return float(torch.stack(losses).double().sum()) / max(tokens, 1) if losses else 0.0

    def validation_translations(self, src_ids: list[list[int]], decode: DecodeConfig) -> list[str]:
        hyps = decode_ids(self.model, src_ids, decode, self.device)
        return self.tokenizer.decode_tgt([h[0].tokens for h in hyps])

    def validate(self) -> dict:
        self.settle_steps()
        start = time.perf_counter()
        val_loss = self.validation_loss()
        hyps = self.validation_translations(self.val_src_ids, DecodeConfig())
        bleu = sacrebleu.corpus_bleu(hyps, [self.val_refs]).score
        chrf = sacrebleu.corpus_chrf(hyps, [self.val_refs]).score
        p = self.progress
        train_loss = p.train_loss_sum / max(p.train_tokens, 1) if p.train_tokens else None
        metrics = {
            "step": p.step,
            "epoch": p.epoch + p.batch_in_epoch / max(1, self._epoch_batches),
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_ppl": math.exp(min(val_loss, 50)),
            "val_bleu": bleu,
            "val_chrf": chrf,
            "tokens_per_s": p.train_tokens / max(p.interval_seconds, 1e-9),
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_seconds": p.seconds,
            "val_seconds": time.perf_counter() - start,
            "skipped_steps": p.nonfinite_total,
        }
        value = metrics[self.opt.early_stopping_metric]
        improved = p.best_value is None or (value > p.best_value if self.maximize else value < p.best_value)
        if improved:
            p.best_value, p.best_step, p.bad_validations = value, p.step, 0
        else:
            p.bad_validations += 1
        self.schedule.validated(improved)
        metrics["best"] = improved
        p.train_loss_sum, p.train_tokens, p.interval_seconds = 0.0, 0, 0.0
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.writer is not None:
            for key in ("train_loss", "val_loss", "val_bleu", "val_chrf", "tokens_per_s", "lr"):
                if metrics[key] is not None:
                    self.writer.add_scalar(key, metrics[key], p.step)
        if improved:
            self.save("best.pt", with_training_state=False)
        self.save_step_checkpoints()
        line = (f"step {p.step}: val loss {val_loss:.3f} (ppl {metrics['val_ppl']:.1f}), BLEU {bleu:.2f}, "
                f"chrF {chrf:.2f}{' *' if improved else ''}")
        tqdm.write(line)
        copy_to_log_files(line)
        return metrics

    # ----------------------------------------------------------------- the loop

    def should_stop_early(self) -> bool:
        return bool(self.opt.patience) and self.progress.bad_validations >= self.opt.patience

    def fit(self, stop: StopRequest) -> str:
        """Train until max_epochs / max_steps / early stopping / a signal. Returns why it stopped."""
        opt, p = self.opt, self.progress
        self.writer = _tensorboard_writer(self.run_dir)
        reason = "max_epochs"
        bar = tqdm(total=opt.max_steps or None, initial=p.step, unit="step", dynamic_ncols=True,
                   desc="training", mininterval=1.0)
        log_start = session_start = time.perf_counter()
        # The host reads the device's losses at each log line, and often enough that a run
        # of non-finite steps stops training within max_nonfinite_steps more.
        read_every = max(1, min(opt.log_every, opt.max_nonfinite_steps))
        try:
            while p.epoch < opt.max_epochs:
                batches = token_batches(self.train_data.src_lengths, self.train_data.tgt_lengths,
                                        opt.max_tokens, shuffle=True, seed=opt.seed, epoch=p.epoch)
                self._epoch_batches = len(batches)
                while p.batch_in_epoch < len(batches):
                    if stop:
                        self.save_step_checkpoints()
                        return "signal"
                    if opt.max_steps and p.step >= opt.max_steps:
                        return "max_steps"
                    if opt.max_minutes and time.perf_counter() - session_start >= 60 * opt.max_minutes:
                        return "max_minutes"
                    step_start = time.perf_counter()
                    # While the device runs the step launched last, the host builds this batch.
                    batch = self.train_data.collate(batches[p.batch_in_epoch])
                    if self.device.type == "cuda":
                        batch = batch.pin_memory()
                    lr = self.schedule.step(p.step + 1)
                    self.pending.append((p.step + 1, self.train_step(batch)))
                    p.batch_in_epoch += 1
                    p.step += 1
                    elapsed = time.perf_counter() - step_start
                    p.seconds += elapsed
                    p.interval_seconds += elapsed
                    bar.update(1)
                    if p.step % read_every == 0:
                        self.settle_steps()
                    if p.step % opt.log_every == 0:
                        now = time.perf_counter()
                        if p.log_tokens:
                            loss = p.log_loss_sum / p.log_tokens
                            p.history.append((p.step, loss))
                            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{p.log_tokens / (now - log_start):.0f}",
                                            lr=f"{lr:.2g}", epoch=p.epoch + 1, refresh=False)
                            if self.writer is not None:
                                self.writer.add_scalar("train_loss_step", loss, p.step)
                        p.log_loss_sum, p.log_tokens, log_start = 0.0, 0, now
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
            return reason
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()

    def finish(self, reason: str) -> dict:
        """Final validation if the last one is stale, curves, test score; a one-line summary."""
        p = self.progress
        last_validated = _last_metrics(self.run_dir)
        if reason != "signal" and (last_validated is None or last_validated["step"] != p.step):
            self.validate()
        else:
            self.save("last.pt")
        plot_curves(self.run_dir)
        summary = {
            "reason": reason, "steps": p.step, "epochs": round(p.epoch + p.batch_in_epoch / max(1, self._epoch_batches), 2),
            "best_step": p.best_step, f"best_{self.opt.early_stopping_metric}": p.best_value,
            "train_seconds": round(p.seconds, 1), "skipped_steps": p.nonfinite_total, "run_dir": str(self.run_dir),
        }
        if self.cfg.evaluate_test and reason != "signal" and (self.run_dir / "best.pt").exists():
            summary.update(self.test_scores())
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    def test_scores(self) -> dict:
        """Greedy BLEU / chrF of the best checkpoint on the test split (nmt-evaluate gives the full report)."""
        from nmt.checkpoint import load_checkpoint

        best = load_checkpoint(self.run_dir / "best.pt")
        self.model.load_state_dict(best["model"])
        src_ids = [list(map(int, ids)) for ids in self.test_split["src_ids"]]
        hyps = self.validation_translations(src_ids, DecodeConfig())
        refs = list(self.test_split["tgt"])
        return {"test_bleu_greedy": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
                "test_chrf_greedy": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)}


def _tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _last_metrics(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return None
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    return json.loads(lines[-1]) if lines else None


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(run_dir: Path) -> Path | None:
    """curves.png: training and validation loss, and validation BLEU / chrF, against steps."""
    metrics = read_metrics(run_dir) if (Path(run_dir) / "metrics.jsonl").exists() else []
    if not metrics:
        return None
    from matplotlib.figure import Figure

    steps = [m["step"] for m in metrics]
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, bleu_ax = fig.subplots(1, 2)
    train = [(m["step"], m["train_loss"]) for m in metrics if m["train_loss"] is not None]
    if train:
        loss_ax.plot(*zip(*train), marker="o", label="train")
    loss_ax.plot(steps, [m["val_loss"] for m in metrics], marker="o", label="validation")
    loss_ax.set(xlabel="step", ylabel="cross-entropy per token", title="loss")
    loss_ax.legend()
    bleu_ax.plot(steps, [m["val_bleu"] for m in metrics], marker="o", label="BLEU")
    bleu_ax.plot(steps, [m["val_chrf"] for m in metrics], marker="o", label="chrF")
    bleu_ax.set(xlabel="step", title="validation (greedy)")
    bleu_ax.legend()
    path = Path(run_dir) / "curves.png"
    fig.savefig(path, dpi=100)
    return path


def check_settings(cfg: TrainRunConfig) -> None:
    """Reject impossible settings before the corpus is read (minutes, on a large one)."""
    opt, model = cfg.train, cfg.model
    higher_is_better(opt.early_stopping_metric)
    choices = {"train.optimizer": (opt.optimizer, OPTIMIZERS), "train.lr_schedule": (opt.lr_schedule, LR_SCHEDULES),
               "model.cell": (model.cell, tuple(CELLS))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{key}={value!r}: expected one of {', '.join(allowed)}")
    positive = {"train.lr": opt.lr, "train.max_tokens": opt.max_tokens, "train.max_epochs": opt.max_epochs,
                "model.embed_size": model.embed_size,
                "model.hidden_size": model.hidden_size, "model.maxout_size": model.maxout_size,
                "data.tokenizer.vocab_size": cfg.data.tokenizer.vocab_size}
    for key, value in positive.items():
        if not value > 0:
            raise ValueError(f"{key}={value}: must be greater than 0")
    if not 0 <= model.dropout < 1:
        raise ValueError(f"model.dropout={model.dropout}: must be at least 0 and below 1")


def train(cfg: TrainRunConfig, run_dir: Path, resume: bool = False) -> dict:
    """Train (or, with ``resume``, continue the run in ``run_dir``); returns the summary."""
    check_settings(cfg)
    local = Path(cfg.data.path).expanduser()
    if cfg.data.path and local.exists():  # so that the saved config works from any folder
        cfg.data.path = str(local.resolve())
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir)
    if resume:
        trainer.resume()
    # After a successful resume too, so that train.* overrides (more steps, say) hold for
    # the next plain ``resume=RUN_DIR``; written aside and renamed, never left half-written.
    OmegaConf.save(OmegaConf.structured(cfg), run_dir / ".config.yaml.tmp")
    os.replace(run_dir / ".config.yaml.tmp", run_dir / "config.yaml")
    with StopRequest() as stop:
        reason = trainer.fit(stop)
        summary = trainer.finish(reason)
    if reason == "signal":
        summary["exit_code"] = PREEMPTED_EXIT_CODE
    return summary


# What may change when a run resumes: how long and how often, not what is optimized.
# (A new optimizer, learning rate or early-stopping metric would not match the
# restored optimizer state, schedule and best value.)
RESUMABLE_SETTINGS = {
    "max_epochs", "max_steps", "max_minutes", "patience", "val_every", "val_max_sentences",
    "val_batch_tokens", "save_every", "keep_last", "log_every", "max_nonfinite_steps", "device",
}


def resume_folder_problem(run_dir: str | Path) -> str | None:
    """Why ``resume=run_dir`` cannot work, or None."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        parent = run_dir.parent
        hint = f"; to continue that run: resume={parent}" if (parent / "config.yaml").exists() else ""
        return (f"resume={run_dir} is a file: resume takes an nmt-train run folder and continues from its "
                f"newest intact checkpoint{hint}")
    if not run_dir.is_dir():
        return f"resume={run_dir}: no such folder; pass the folder of an nmt-train run"
    if not (run_dir / "config.yaml").exists():
        return f"resume={run_dir}: no config.yaml there; is it an nmt-train run folder?"
    return None


def resume_config(run_dir: Path, overrides: list[str]) -> TrainRunConfig:
    """The run's own config.yaml, with overrides of ``RESUMABLE_SETTINGS`` (e.g. more epochs) applied."""
    path = Path(run_dir) / "config.yaml"
    problem = resume_folder_problem(run_dir)
    if problem:
        raise CheckpointError(problem)
    changes = [o for o in overrides if o.lstrip("+").split("=", 1)[0] != "resume" and not o.startswith("hydra.")]
    bad = [o for o in changes if o.split("=", 1)[0].removeprefix("train.") not in RESUMABLE_SETTINGS
           or not o.startswith("train.")]
    if bad:
        allowed = ", ".join(f"train.{name}" for name in sorted(RESUMABLE_SETTINGS))
        raise ValueError(f"resume: {' '.join(bad)} cannot change when resuming; these can: {allowed}")
    merged = OmegaConf.merge(OmegaConf.structured(TrainRunConfig), OmegaConf.load(path), OmegaConf.from_dotlist(changes))
    return OmegaConf.to_object(merged)


def run_train(cfg: TrainRunConfig) -> int:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    if cfg.resume:
        run_dir = Path(cfg.resume)
        cfg = resume_config(run_dir, list(hydra_cfg.overrides.task))
        summary = train(cfg, run_dir, resume=True)
    else:
        summary = train(cfg, Path(hydra_cfg.runtime.output_dir))
    if summary.get("exit_code") == PREEMPTED_EXIT_CODE:
        line = (f"nmt-train: stopped by a signal at step {summary['steps']}; checkpoint saved. "
                f"Continue with: nmt-train resume={summary['run_dir']}")
    else:
        metric = cfg.train.early_stopping_metric
        best = summary.get(f"best_{metric}")
        test = f", test BLEU {summary['test_bleu_greedy']:.2f} (greedy)" if "test_bleu_greedy" in summary else ""
        line = (f"nmt-train: {summary['steps']} steps, {summary['epochs']} epochs in {summary['train_seconds']:.0f} s "
                f"({summary['reason']}); best {metric} {best:.2f} at step {summary['best_step']}{test}; "
                f"run folder {summary['run_dir']}")
    print(line)
    copy_to_log_files(line)
    return summary.get("exit_code", 0)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from nmt.cli import run_cli

    try:
        run_cli(run_train, cfg)
    except SystemExit as exit_:
        hydra_cfg = HydraConfig.get()
        # Only a folder Hydra named (outputs/.../TIMESTAMP) is new for sure; one chosen
        # with hydra.run.dir=... may have existed (or be the current directory).
        named_by_user = any(o.startswith("hydra.run.dir=") for o in hydra_cfg.overrides.hydra)
        if exit_.code not in (0, None, PREEMPTED_EXIT_CODE) and not named_by_user:
            remove_if_unused(Path(hydra_cfg.runtime.output_dir), f"{hydra_cfg.job.name}.log")
        raise


def remove_if_unused(run_dir: Path, log_name: str) -> None:
    """Delete a fresh run folder of a command that failed before writing anything of its
    own (only ``.hydra/`` and the job log are there), and the parents it left empty
    (``outputs/DATA/MODEL``), so that failed attempts leave no empty runs behind."""
    run_dir, here = run_dir.resolve(), Path.cwd().resolve()
    if run_dir == here or not run_dir.is_dir() or not set(os.listdir(run_dir)) <= {".hydra", log_name}:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.parents:
        if parent == here:
            break
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break


def main() -> None:
    import sys

    from nmt.cli import check_command_line, refuse

    overrides = check_command_line(TrainRunConfig)
    resume, run_dir = overrides.get("resume"), overrides.get("hydra.run.dir")
    # Checked before Hydra creates the run folder (or writes into an existing one).
    if resume:
        problem = resume_folder_problem(resume)
        if problem:
            refuse(problem)
        if run_dir and Path(run_dir).resolve() != Path(resume).resolve():
            refuse(f"resume={resume} continues in its own folder: leave hydra.run.dir={run_dir} out")
    elif run_dir and (Path(run_dir) / "config.yaml").exists():
        refuse(f"hydra.run.dir={run_dir} already holds an nmt-train run: continue it with resume={run_dir}, "
               "or choose another folder")
    _hydra_main()


if __name__ == "__main__":
    main()
