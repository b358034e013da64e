"""A training run from its settings: data preparation (corpus -> tokenizer -> id tables),
the model, the ``Trainer``, and the run folder's closing files.

``train(cfg, run_dir)`` is what ``nmt-train`` calls once Hydra has composed ``cfg``. Under
torchrun every process calls it: rank 0 with the settings and the run folder, which it
sends the others (``nmt.distributed``); only rank 0 writes into the folder.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from nmt import run_folder
from nmt.architectures import architecture, build_model, count_parameters
from nmt.batching import ParallelIds
from nmt.checkpoint import (
    STEP_CHECKPOINT,
    has_step_checkpoints,
    load_for_resume,
    read_checkpoint,
    step_checkpoints,
)
from nmt.config import DataConfig, DecodeConfig, TrainRunConfig, check_ranges, saved_data_path
from nmt.data import describe, load_corpus, text_column
from nmt.distributed import World, leave
from nmt.ensemble import save_average
from nmt.errors import CheckpointError, CorpusError, RunFolderError, SettingError
from nmt.inference import decode_ids
from nmt.metrics import bleu_and_chrf
from nmt.optim import check_optim_settings
from nmt.runtime import PREEMPTED_EXIT_CODE, StoppedDuringSetup, StopRequest, configure_device, seed_everything
from nmt.tokenizer import Tokenizer, build_tokenizer, flat_ids, tokenize_corpus
from nmt.trainer import Trainer, TrainingData, ValidationSet, higher_is_better

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    data: TrainingData
    test_src_ids: list[list[int]]
    test_refs: list[str]


def split_ids(table, limit: int = 0, split: str = "train") -> tuple[ParallelIds, np.ndarray]:
    """A tokenized split's ids, and the rows they came from: with ``limit``, the pairs
    with a longer side (subwords) are left out, and counted in the log."""
    data = ParallelIds(*flat_ids(table, "src_ids"), *flat_ids(table, "tgt_ids"))
    rows = np.arange(len(data))
    if limit:
        longest = np.maximum(data.src_lengths, data.tgt_lengths)
        keep = longest <= limit
        if len(data) and not keep.any():  # (validation would fail at its first run, a whole epoch in)
            raise SettingError(
                f"train.max_subwords={limit} leaves no {'training' if split == 'train' else split} pair: all "
                f"{len(data)} have a side longer (the shortest: {int(longest.min())} subwords); raise train.max_subwords"
            )
        if not keep.all():
            log.info(
                "skipping %d %s pairs longer than %d subwords (train.max_subwords); %d remain",
                int((~keep).sum()),
                "training" if split == "train" else split,
                limit,
                int(keep.sum()),
            )
            rows = np.flatnonzero(keep)
            data = data.select(rows)
    return data, rows


def prepare_data(
    cfg: DataConfig, max_subwords: int = 0, val_max_sentences: int = 0, tokenizer: Tokenizer | None = None
) -> PreparedData:
    """Load and clean the corpus, train (or reuse) its tokenizer (or take ``tokenizer``),
    tokenize every split (cached).

    ``max_subwords`` limits the validation pairs as it limits the training pairs: one
    sentence of a million characters would otherwise cost minutes and gigabytes in
    every validation."""
    corpus = load_corpus(cfg)
    for split, stats in describe(corpus).items():
        log.info("%s %s: %d pairs, %d / %d words", cfg.name, split, stats["pairs"], stats["src_words"], stats["tgt_words"])
    cache = Path(cfg.cache_dir).expanduser()
    train = corpus["train"]
    if tokenizer is None:
        tokenizer = build_tokenizer(text_column(train, "src"), text_column(train, "tgt"), cfg.tokenizer, cache)
    tokenized = tokenize_corpus(corpus, tokenizer, cache, cfg.num_proc)
    train_ids, _ = split_ids(tokenized["train"], limit=max_subwords)
    validation = tokenized["validation"]
    val_ids, val_rows = split_ids(validation, limit=max_subwords, split="validation")
    if val_max_sentences:
        val_rows = val_rows[:val_max_sentences]
    decoded = validation.select(val_rows) if len(val_rows) < len(validation) else validation
    val_refs, val_src_ids = list(decoded["tgt"]), [list(map(int, ids)) for ids in decoded["src_ids"]]
    data = TrainingData(train_ids, ValidationSet(val_ids, val_src_ids, val_refs, tokenizer.decode_tgt))
    test = tokenized["test"]
    return PreparedData(tokenizer, data, [list(map(int, ids)) for ids in test["src_ids"]], list(test["tgt"]))


def check_settings(cfg: TrainRunConfig, resumed: bool = False) -> None:
    """Reject impossible settings before the corpus is read (minutes, on a large one)."""
    opt = cfg.train
    higher_is_better(opt.early_stopping_metric)
    check_optim_settings(opt)
    architecture(cfg.model)
    check_ranges(cfg)
    if cfg.model.arch == "cho2014" and cfg.model.attention_size and not resumed:  # (older runs may hold one)
        raise SettingError(
            f"model.attention_size={cfg.model.attention_size}: the cho2014 model has no attention, so it would "
            "change nothing; leave it out, or train the attention model (model=rnnsearch or model=rnnsearch_small)"
        )
    if opt.average_last > opt.keep_last:
        raise SettingError(
            f"train.average_last={opt.average_last} averages step checkpoints, of which only "
            f"train.keep_last={opt.keep_last} are kept: raise train.keep_last to at least "
            f"{opt.average_last}"
        )
    if opt.max_subwords and opt.max_tokens < opt.max_subwords:
        raise SettingError(
            f"train.max_tokens={opt.max_tokens} is smaller than the longest pair allowed "
            f"(train.max_subwords={opt.max_subwords}), which would not fit a batch: raise "
            "train.max_tokens or lower train.max_subwords"
        )


def build_trainer(
    cfg: TrainRunConfig, run_dir: Path | None, world: World | None = None, resume: bool = False
) -> tuple[Trainer, PreparedData]:
    """Device, seed, data and a fresh model of ``cfg.model.arch``: the ``Trainer`` of a run
    folder (the tokenizer is saved there; None on ranks other than 0), and its data. A
    ``resume`` takes the run folder's own tokenizer where it has an intact one, and never
    writes over it: the cache's may have been rebuilt, deleted or brought from elsewhere."""
    opt, world = cfg.train, world or World()
    # Under torchrun, this rank's device (cuda:LOCAL_RANK or cpu); train.device stays as given.
    device = configure_device(world.device or opt.device, opt.tf32, opt.deterministic)
    seed_everything(opt.seed)
    # Rank 0 trains the tokenizer (SentencePiece training is not deterministic) and sends it
    # to all; the first process of each other machine then tokenizes the corpus into its
    # cache, and the remaining processes find it there: no two processes write one cache file.
    args = (cfg.data, opt.max_subwords, opt.val_max_sentences)
    own, in_folder = run_tokenizer(run_dir) if resume and world.is_main else (None, False)
    prepared = prepare_data(*args, tokenizer=own) if world.is_main else None
    protos = world.broadcast((prepared.tokenizer.src_proto, prepared.tokenizer.tgt_proto) if world.is_main else None)
    if not world.is_main and not world.local_rank:
        prepared = prepare_data(*args, tokenizer=Tokenizer(*protos))
    world.barrier()
    if world.local_rank:
        prepared = prepare_data(*args, tokenizer=Tokenizer(*protos))
    tokenizer = prepared.tokenizer
    if run_dir is not None and not in_folder:
        tokenizer.save(run_dir)
    model = build_model(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size).to(device)
    if world.rank:  # dropout of its own on each rank (the weights come from rank 0)
        torch.manual_seed(opt.seed + 1000 * world.rank)
    trainer = Trainer(model, prepared.data, opt, device, run_dir, tokenizer, cfg.data, world)
    log.info(
        "model: %s (%s), %.1fM parameters, %s cell, on %s%s",
        cfg.model.name,
        cfg.model.arch,
        count_parameters(model) / 1e6,
        "lstm" if cfg.model.rnn == "lstm" else cfg.model.cell,
        device,
        " (bf16 autocast)" if trainer.amp else "",
    )
    return trainer, prepared


def run_tokenizer(run_dir: Path) -> tuple[Tokenizer | None, bool]:
    """The tokenizer a resumed run trained with, and whether its folder holds it intact: the
    folder's spm.model (or spm.src.model + spm.tgt.model); where that is missing or damaged
    (said in a warning), the one its newest checkpoint carries; (None, False) for a run that
    saved no checkpoint yet (the cache's build is then the run's from step 0)."""
    if any((Path(run_dir) / name).is_file() for name in ("spm.model", "spm.src.model")):
        try:
            tokenizer = Tokenizer.load(run_dir)
            log.info("tokenizer: the run's own %s", "spm.model" if tokenizer.joint else "spm.src.model + spm.tgt.model")
            return tokenizer, True
        except (CorpusError, RuntimeError, OSError) as err:  # SentencePiece: "ParseFromArray"; a missing half
            log.warning("%s: the run's tokenizer cannot be read (%s); taking the one its checkpoint carries", run_dir, err)
    if not has_step_checkpoints(run_dir):
        return None, False
    try:
        checkpoint = load_for_resume(run_dir)
    except CheckpointError:  # resume_trainer says why, in its own words
        return None, False
    log.info("tokenizer: the one %s carries (written to the run folder again)", checkpoint.path)
    return checkpoint.tokenizer(), False


def train(cfg: TrainRunConfig | None, run_dir: Path | None, resume: bool = False, world: World | None = None) -> dict:
    """Train (or, with ``resume``, continue the run in ``run_dir``); returns the summary.

    The folder is held by this process throughout (``run_folder.hold``). A new run writes
    config.yaml before anything else, so a run stopped at any moment can be resumed; a
    resume of a run that saved no checkpoint yet starts it from step 0. ``world``: the
    processes of a torchrun job (``nmt.distributed.join``); ranks other than 0 pass no
    settings and no folder, and follow rank 0's."""
    world, acquired = world or World(), False
    try:
        if world.is_main:  # everything that can refuse the run, before the other ranks are told of it
            check_settings(cfg, resumed=resume)
            cfg.data.path = saved_data_path(cfg.data.path)
            run_dir = Path(run_dir)
            acquired = run_folder.hold(run_dir)
            problem = None if resume else run_folder.new_run_problem(run_dir)
            if problem:
                raise RunFolderError(problem)
            run_folder.remove_leftovers(run_dir)
            if not resume:
                run_folder.write_config(run_dir, cfg)
        cfg, run_dir, resume = world.broadcast((cfg, run_dir, resume))
        summary = train_session(cfg, run_dir, resume, world)
    except BaseException as err:
        if world.distributed:  # the traceback holds train_session's frame, and so the trainer: let go of it for leave()
            traceback.clear_frames(err.__traceback__)
        raise
    finally:
        if acquired:
            run_folder.release(run_dir)
        leave(world)
    return summary


def train_session(cfg: TrainRunConfig, run_dir: Path, resume: bool, world: World) -> dict:
    """Build the trainer, train, and finish (``train`` holds the folder and the process group
    around it); nothing refers to the trainer once this returns, so that ``leave`` collects it,
    DDP's reducer with it, before it destroys the process group."""
    with StopRequest(setting_up=True) as stop:
        try:
            trainer, prepared = build_trainer(cfg, run_dir if world.is_main else None, world, resume=resume)
            restored = resume_trainer(trainer, cfg, run_dir) if resume else None
        except StoppedDuringSetup:
            return {"reason": "signal", "steps": None, "run_dir": str(run_dir), "exit_code": PREEMPTED_EXIT_CODE}
        stop.setting_up = False
        start = trainer.progress.step
        reason = trainer.fit(stop)
        # Nothing trained, from an intact last.pt (a fallback to step-N.pt lets finish() rewrite it)
        finished = restored is not None and restored.name == "last.pt" and trainer.progress.step == start
        finished = finished and reason != "signal" and world.is_main
        summary = world.broadcast(standing_summary(run_dir, cfg, start) if finished else None)
        if summary is None:
            summary = finish(trainer, reason, prepared if cfg.evaluate_test else None)
    if reason == "signal":
        summary["exit_code"] = PREEMPTED_EXIT_CODE
    return summary


def resume_trainer(trainer: Trainer, cfg: TrainRunConfig, run_dir: Path) -> Path | None:
    """Restore the newest intact checkpoint of the run in ``run_dir`` (none yet: start at step
    0); metrics.jsonl keeps the validations up to it; config.yaml takes the resume's overrides.
    Under torchrun rank 0 reads the checkpoint and sends it to the others. Returns the
    checkpoint file restored, or None."""
    world, checkpoint = trainer.world, None
    if world.is_main and (has_step_checkpoints(run_dir) or any(run_dir.glob("*.pt"))):
        checkpoint = load_for_resume(run_dir, log)  # only best.pt, say: an error, never a restart
    checkpoint = world.broadcast(checkpoint)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    elif world.is_main:
        log.info("%s: no checkpoint saved yet; starting the run from step 0 with its config.yaml", run_dir)
    restored = None if checkpoint is None else Path(checkpoint.path)
    if not world.is_main:
        return restored
    run_folder.drop_metrics_after(run_dir, trainer.progress.step)
    # After a successful resume only, so that train.* overrides (more steps, say) hold for
    # the next plain ``resume=RUN_DIR``; written aside and renamed, never left half-written.
    run_folder.write_config(run_dir, cfg)
    return restored


def settings_from_checkpoint(run_dir: Path) -> dict:
    """A run's settings as its newest intact training checkpoint saved them (the shape of
    config.yaml), for a resume whose config.yaml is lost or damaged."""
    checkpoint = load_for_resume(run_dir, log)
    return {
        "data": asdict(checkpoint.data_config),
        "model": asdict(checkpoint.model_config),
        "train": checkpoint.training.train_config,
    }


def standing_summary(run_dir: Path, cfg: TrainRunConfig, step: int) -> dict | None:
    """The summary.json of a run resumed with nothing left to train, if it is that of its
    step and holds all ``finish`` would write again (so the test split is not decoded twice
    and the checkpoints stay untouched); else None."""
    summary = run_folder.read_summary(run_dir)
    complete = summary is not None and summary.get("steps") == step and summary.get("reason") not in (None, "signal")
    complete = complete and (not cfg.evaluate_test or "test_bleu_greedy" in summary or not (run_dir / "best.pt").exists())
    complete = complete and (not cfg.train.average_last or "averaged_steps" in summary)
    if not complete:
        return None
    log.info("nothing trained in this session: %s of step %d stands", run_dir / "summary.json", step)
    return {**summary, "run_dir": str(run_dir)}  # the folder may have moved since


def finish(trainer: Trainer, reason: str, test: PreparedData | None) -> dict:
    """Final validation if the last one is stale, curves, test scores of best.pt; summary.json."""
    p, run_dir, world = trainer.progress, trainer.run_dir, trainer.world
    last_validated = run_folder.last_metrics(run_dir) if world.is_main else None
    stale = reason != "signal" and (last_validated is None or last_validated["step"] != p.step)
    if world.broadcast(stale):  # every rank takes part in a validation and a save
        trainer.validate()
    else:
        trainer.save("last.pt")
    if not world.is_main:
        return {"reason": reason, "steps": p.step, "run_dir": None}
    run_folder.plot_curves(run_dir)
    metric = trainer.opt.early_stopping_metric
    summary = {
        "reason": reason,
        "steps": p.step,
        "epochs": round(trainer.epochs(), 2),
        "best_step": p.best_step,
        f"best_{metric}": p.best_value,
        "train_seconds": round(p.seconds, 1),
        "skipped_steps": p.nonfinite_total,
        "run_dir": str(run_dir),
    }
    averaged = None
    if trainer.opt.average_last and reason != "signal":
        steps = step_checkpoints(run_dir)[-trainer.opt.average_last :]
        if len(steps) < trainer.opt.average_last:
            log.warning(
                "train.average_last=%d: the run saved %d step checkpoint(s); averaging those",
                trainer.opt.average_last,
                len(steps),
            )
        try:
            averaged = save_average(steps, run_dir / "averaged.pt") if steps else None
        except CheckpointError as err:  # e.g. a damaged step checkpoint that a resume fell back past
            log.warning("train.average_last: no averaged.pt (%s); nmt-average can average other checkpoints", err)
        if averaged is not None:
            summary["averaged_steps"] = [int(STEP_CHECKPOINT.fullmatch(path.name)[1]) for path in steps]
            log.info("averaged.pt: the mean of %s", ", ".join(path.name for path in steps))
    if test is not None and reason != "signal" and (run_dir / "best.pt").exists():
        summary.update(greedy_test_scores(trainer, test, run_dir / "best.pt"))
        if averaged is not None:
            summary.update(greedy_test_scores(trainer, test, averaged, prefix="averaged_"))
    run_folder.write_summary(run_dir, summary)
    return summary


def greedy_test_scores(trainer: Trainer, test: PreparedData, checkpoint: Path, prefix: str = "") -> dict:
    """Greedy BLEU / chrF of ``checkpoint`` on the test split (nmt-evaluate gives the full report)."""
    trainer.model.load_state_dict(read_checkpoint(checkpoint).model_state)
    hyps = decode_ids(trainer.model, test.test_src_ids, DecodeConfig(), trainer.device)
    bleu, chrf = bleu_and_chrf(test.tokenizer.decode_tgt([h[0].tokens for h in hyps]), test.test_refs)
    return {f"{prefix}test_bleu_greedy": round(bleu, 2), f"{prefix}test_chrf_greedy": round(chrf, 2)}
