"""``nmt-train``: train a model; the run folder is Hydra's output dir.

    nmt-train                                     # small model on the embedded Bible corpus
    nmt-train model=cho2014 train=paper           # the paper's sizes and Adadelta (a GPU job)
    nmt-train resume=outputs/bible_es_en/small/RUN train.max_epochs=30

The run folder holds everything translation needs: config.yaml, the tokenizer
(spm*.model), best.pt / last.pt / step-N.pt checkpoints, metrics.jsonl,
curves.png, summary.json, train.log and TensorBoard events.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from nmt.commands.app import hydra_command, refuse
from nmt.config import TrainRunConfig
from nmt.errors import CheckpointError, SettingError
from nmt.run_folder import refused_resume_changes, resume_folder_problem
from nmt.runtime import PREEMPTED_EXIT_CODE, copy_to_log_files
from nmt.training import train


def resume_config(run_dir: Path, overrides: list[str]) -> TrainRunConfig:
    """The run's own config.yaml, with overrides of ``RESUMABLE_SETTINGS`` (e.g. more epochs) applied."""
    problem = resume_folder_problem(run_dir)
    if problem:
        raise CheckpointError(problem)
    changes = [o for o in overrides if o.lstrip("+").split("=", 1)[0] != "resume" and not o.startswith("hydra.")]
    problem = refused_resume_changes(changes)
    if problem:
        raise SettingError(problem)
    merged = OmegaConf.merge(OmegaConf.structured(TrainRunConfig), OmegaConf.load(Path(run_dir) / "config.yaml"),
                             OmegaConf.from_dotlist(changes))
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


def check_run_folder(overrides: dict[str, str]) -> None:
    """Before Hydra creates the run folder (or writes into an existing one)."""
    resume, run_dir = overrides.get("resume"), overrides.get("hydra.run.dir")
    if resume:
        problem = resume_folder_problem(resume)
        if problem:
            refuse(problem)
        if run_dir and Path(run_dir).resolve() != Path(resume).resolve():
            refuse(f"resume={resume} continues in its own folder: leave hydra.run.dir={run_dir} out")
    elif run_dir and (Path(run_dir) / "config.yaml").exists():
        refuse(f"hydra.run.dir={run_dir} already holds an nmt-train run: continue it with resume={run_dir}, "
               "or choose another folder")


def clean_up_failed_run(code: int | None) -> None:
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    # Only a folder Hydra named (outputs/.../TIMESTAMP) is new for sure; one chosen
    # with hydra.run.dir=... may have existed (or be the current directory).
    named_by_user = any(o.startswith("hydra.run.dir=") for o in hydra_cfg.overrides.hydra)
    if code not in (0, None, PREEMPTED_EXIT_CODE) and not named_by_user:
        remove_if_unused(Path(hydra_cfg.runtime.output_dir), f"{hydra_cfg.job.name}.log")


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


main = hydra_command("train", TrainRunConfig, run_train, check=check_run_folder, on_exit=clean_up_failed_run)

if __name__ == "__main__":
    main()
