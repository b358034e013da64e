"""A training run from its settings: data preparation (corpus -> tokenizer -> id tables),
the model, the ``Trainer``, and the run folder's closing files.

``train(cfg, run_dir)`` is what ``nmt-train`` calls once Hydra has composed ``cfg``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmt import run_folder
from nmt.architectures import architecture, build_model, count_parameters
from nmt.batching import ParallelIds
from nmt.checkpoint import load_for_resume, read_checkpoint
from nmt.config import DataConfig, DecodeConfig, TrainRunConfig
from nmt.data import describe, load_corpus, text_column
from nmt.errors import SettingError
from nmt.inference import decode_ids
from nmt.metrics import bleu_and_chrf
from nmt.optim import check_optim_settings
from nmt.runtime import PREEMPTED_EXIT_CODE, StopRequest, configure_device, seed_everything
from nmt.tokenizer import Tokenizer, build_tokenizer, flat_ids, tokenize_corpus
from nmt.trainer import Trainer, TrainingData, ValidationSet, higher_is_better

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    data: TrainingData
    test_src_ids: list[list[int]]
    test_refs: list[str]


def split_ids(table, limit: int = 0) -> ParallelIds:
    """A tokenized split's ids; with ``limit``, without the pairs that have a longer side."""
    data = ParallelIds(*flat_ids(table, "src_ids"), *flat_ids(table, "tgt_ids"))
    if limit:
        keep = np.maximum(data.src_lengths, data.tgt_lengths) <= limit
        if not keep.all():
            log.info("skipping %d training pairs longer than %d subwords (train.max_subwords)",
                     int((~keep).sum()), limit)
            data = data.select(np.flatnonzero(keep))
    return data


def prepare_data(cfg: DataConfig, max_subwords: int = 0, val_max_sentences: int = 0) -> PreparedData:
    """Load and clean the corpus, train (or reuse) its tokenizer, tokenize every split (cached)."""
    corpus = load_corpus(cfg)
    for split, stats in describe(corpus).items():
        log.info("%s %s: %d pairs, %d / %d words", cfg.name, split, stats["pairs"],
                 stats["src_words"], stats["tgt_words"])
    cache = Path(cfg.cache_dir).expanduser()
    train = corpus["train"]
    tokenizer = build_tokenizer(text_column(train, "src"), text_column(train, "tgt"), cfg.tokenizer, cache)
    tokenized = tokenize_corpus(corpus, tokenizer, cache, cfg.num_proc)
    validation = tokenized["validation"]
    val_refs = list(validation["tgt"])
    val_src_ids = [list(map(int, ids)) for ids in validation["src_ids"]]
    if val_max_sentences:
        val_refs, val_src_ids = val_refs[:val_max_sentences], val_src_ids[:val_max_sentences]
    data = TrainingData(split_ids(tokenized["train"], limit=max_subwords),
                        ValidationSet(split_ids(validation), val_src_ids, val_refs, tokenizer.decode_tgt))
    test = tokenized["test"]
    return PreparedData(tokenizer, data, [list(map(int, ids)) for ids in test["src_ids"]], list(test["tgt"]))


def check_settings(cfg: TrainRunConfig) -> None:
    """Reject impossible settings before the corpus is read (minutes, on a large one)."""
    opt, model = cfg.train, cfg.model
    higher_is_better(opt.early_stopping_metric)
    check_optim_settings(opt)
    architecture(model)
    positive = {"train.lr": opt.lr, "train.max_tokens": opt.max_tokens, "train.max_epochs": opt.max_epochs,
                "model.embed_size": model.embed_size,
                "model.hidden_size": model.hidden_size, "model.maxout_size": model.maxout_size,
                "data.tokenizer.vocab_size": cfg.data.tokenizer.vocab_size}
    for key, value in positive.items():
        if not value > 0:
            raise SettingError(f"{key}={value}: must be greater than 0")
    if not 0 <= model.dropout < 1:
        raise SettingError(f"model.dropout={model.dropout}: must be at least 0 and below 1")


def build_trainer(cfg: TrainRunConfig, run_dir: Path) -> tuple[Trainer, PreparedData]:
    """Device, seed, data and a fresh model of ``cfg.model.arch``: the ``Trainer`` of a run
    folder (the tokenizer is saved there), and the data it was built on."""
    opt = cfg.train
    device = configure_device(opt.device, opt.tf32, opt.deterministic)
    seed_everything(opt.seed)
    prepared = prepare_data(cfg.data, opt.max_subwords, opt.val_max_sentences)
    tokenizer = prepared.tokenizer
    tokenizer.save(run_dir)
    model = build_model(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size).to(device)
    trainer = Trainer(model, prepared.data, opt, device, run_dir, tokenizer, cfg.data)
    log.info("model: %s (%s), %.1fM parameters, %s cell, on %s%s", cfg.model.name, cfg.model.arch,
             count_parameters(model) / 1e6, cfg.model.cell, device, " (bf16 autocast)" if trainer.amp else "")
    return trainer, prepared


def train(cfg: TrainRunConfig, run_dir: Path, resume: bool = False) -> dict:
    """Train (or, with ``resume``, continue the run in ``run_dir``); returns the summary."""
    check_settings(cfg)
    local = Path(cfg.data.path).expanduser()
    if cfg.data.path and local.exists():  # so that the saved config works from any folder
        cfg.data.path = str(local.resolve())
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer, prepared = build_trainer(cfg, run_dir)
    if resume:
        trainer.restore(load_for_resume(run_dir, log))
    # After a successful resume too, so that train.* overrides (more steps, say) hold for
    # the next plain ``resume=RUN_DIR``; written aside and renamed, never left half-written.
    run_folder.write_config(run_dir, cfg)
    with StopRequest() as stop:
        reason = trainer.fit(stop)
        summary = finish(trainer, reason, prepared if cfg.evaluate_test else None)
    if reason == "signal":
        summary["exit_code"] = PREEMPTED_EXIT_CODE
    return summary


def finish(trainer: Trainer, reason: str, test: PreparedData | None) -> dict:
    """Final validation if the last one is stale, curves, test scores of best.pt; summary.json."""
    p, run_dir = trainer.progress, trainer.run_dir
    last_validated = run_folder.last_metrics(run_dir)
    if reason != "signal" and (last_validated is None or last_validated["step"] != p.step):
        trainer.validate()
    else:
        trainer.save("last.pt")
    run_folder.plot_curves(run_dir)
    metric = trainer.opt.early_stopping_metric
    summary = {
        "reason": reason, "steps": p.step, "epochs": round(trainer.epochs(), 2), "best_step": p.best_step,
        f"best_{metric}": p.best_value, "train_seconds": round(p.seconds, 1), "skipped_steps": p.nonfinite_total,
        "run_dir": str(run_dir),
    }
    if test is not None and reason != "signal" and (run_dir / "best.pt").exists():
        summary.update(best_test_scores(trainer, test))
    run_folder.write_summary(run_dir, summary)
    return summary


def best_test_scores(trainer: Trainer, test: PreparedData) -> dict:
    """Greedy BLEU / chrF of best.pt on the test split (nmt-evaluate gives the full report)."""
    trainer.model.load_state_dict(read_checkpoint(trainer.run_dir / "best.pt").model_state)
    hyps = decode_ids(trainer.model, test.test_src_ids, DecodeConfig(), trainer.device)
    bleu, chrf = bleu_and_chrf(test.tokenizer.decode_tgt([h[0].tokens for h in hyps]), test.test_refs)
    return {"test_bleu_greedy": round(bleu, 2), "test_chrf_greedy": round(chrf, 2)}
