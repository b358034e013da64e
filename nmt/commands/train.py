"""``nmt-train``: train a model; the run folder is Hydra's output dir.

    nmt-train                                     # small model on the embedded Bible corpus
    nmt-train model=cho2014 train=paper           # the paper's sizes and Adadelta (a GPU job)
    nmt-train resume=outputs/bible_es_en/small/RUN train.max_epochs=30
    torchrun --nproc_per_node=4 --no-python nmt-train hydra.run.dir=runs/big ...   # data-parallel

The run folder holds everything translation needs: config.yaml, the tokenizer
(spm*.model), best.pt / last.pt / step-N.pt checkpoints, metrics.jsonl,
curves.png, summary.json, train.log and TensorBoard events. Under torchrun, rank 0 owns it:
the other ranks compose their settings without a folder of their own (``main``), take
rank 0's settings and folder, and write nothing.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nmt.commands.app import check_command_line, claimed_run_folders, hydra_command, refuse
from nmt.config import CONF_DIR, TrainRunConfig, saved_data_path
from nmt.errors import CheckpointError, RunFolderError, SettingError, check_choice
from nmt.launch import PREEMPTED_EXIT_CODE, copy_to_log_files, restarted_by_torchrun, torchrun_rank
from nmt.run_folder import (
    LOCK_NAME,
    RESUMABLE_SETTINGS,
    damaged_config,
    has_trained,
    hold,
    new_run_problem,
    read_config,
    refused_resume_changes,
    release,
    resume_folder_problem,
)


def resume_config(
    run_dir: Path, overrides: list[str], settings: str = "config", composed: TrainRunConfig | None = None
) -> TrainRunConfig:
    """The run's own config.yaml (``settings="checkpoint"``: the settings its newest checkpoint
    saved), with overrides of ``RESUMABLE_SETTINGS`` (e.g. more epochs) applied. An override
    that restates the run's own value is allowed whatever its key (a job script's
    ``evaluate_test=false``); ``composed`` is what Hydra made of the command line, needed to
    compare a group's choice (``data=toy``) with the run's section."""
    check_choice("resume_settings", settings, ("config", "checkpoint"))
    problem = resume_folder_problem(run_dir, from_checkpoint=settings == "checkpoint")
    if problem:
        raise CheckpointError(problem)
    changes = [
        o.lstrip("+")
        for o in overrides
        if o.lstrip("+").split("=", 1)[0] not in ("resume", "resume_settings") and not o.startswith("hydra.")
    ]
    saved = saved_settings(run_dir, settings)
    keys = [change.split("=", 1)[0] for change in changes]
    composed = None if composed is None else OmegaConf.structured(composed)
    changes = [change for change in changes if not restates(change, saved, composed, keys)]
    problem = refused_resume_changes(changes)
    if problem:
        raise SettingError(problem)
    return OmegaConf.to_object(OmegaConf.merge(saved, OmegaConf.from_dotlist(changes)))


def restates(change: str, saved, composed, keys: list[str]) -> bool:
    """Whether the override ``change`` leaves the saved settings as they are (``composed``:
    Hydra's composition of the command line as a DictConfig, or None). For a section
    (``data=toy``), keys below it that other overrides set (``data.path=...``) are compared
    on their own."""
    key = change.split("=", 1)[0]
    if composed is not None:
        new = OmegaConf.select(composed, key, default=None)
    elif (CONF_DIR / key.replace(".", "/")).is_dir():
        return False  # a group's choice: only Hydra's composition says what it stands for
    else:
        try:
            new = OmegaConf.select(OmegaConf.merge(saved, OmegaConf.from_dotlist([change])), key)
        except OmegaConfBaseException:
            return False
    old = OmegaConf.select(saved, key, default=_NOT_SAVED)
    if old is _NOT_SAVED:  # no setting of the run (+experiment=...): nothing it could restate
        return False
    new, old = (OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for v in (new, old))
    if key == "data.path" and isinstance(new, str):
        new = saved_data_path(new)  # as train() saved it
    if isinstance(new, dict) and isinstance(old, dict):
        if key == "data" and new.get("path"):
            new["path"] = saved_data_path(new["path"])
        below = [other[len(key) + 1 :].split(".")[0] for other in keys if other.startswith(f"{key}.")]
        may_change = RESUMABLE_SETTINGS if key == "train" else set()  # train=debug does not undo train.max_steps=...
        for name in {*below, *may_change}:
            new.pop(name, None)
            old.pop(name, None)
    return new == old


_NOT_SAVED = object()


def saved_settings(run_dir: Path, settings: str = "config"):
    """The run's saved settings (config.yaml, or its newest checkpoint's) over the schema: a
    key or value of config.yaml that does not fit it is a one-line error naming the file."""
    if settings == "checkpoint":
        from nmt.training import settings_from_checkpoint

        return OmegaConf.merge(OmegaConf.structured(TrainRunConfig), settings_from_checkpoint(run_dir))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainRunConfig), read_config(run_dir))
        OmegaConf.to_object(merged)  # every value of its type
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise damaged_config(run_dir, f"does not fit the settings ({key + ': ' if key else ''}{message})") from None
    return merged


def run_train(cfg: TrainRunConfig) -> int:
    from hydra.core.hydra_config import HydraConfig

    from nmt.distributed import join
    from nmt.training import train

    world = join(cfg.train.device, cfg.train.dist_timeout_minutes)  # torchrun: connect to the other processes
    if not world.is_main:  # rank 0 logs and prints for the job
        logging.getLogger().setLevel(logging.WARNING)
        return train(None, None, world=world).get("exit_code", 0)
    hydra_cfg = HydraConfig.get()
    if cfg.resume:
        run_dir = Path(cfg.resume)
        if Path(hydra_cfg.runtime.output_dir).resolve() != run_dir.resolve():  # an interpolated hydra.run.dir
            raise SettingError(
                f"resume={cfg.resume} continues in its own folder, not in {hydra_cfg.runtime.output_dir}: "
                "leave hydra.run.dir out"
            )
        hold(run_dir)  # before config.yaml is read: another resume may be rewriting it
        cfg = resume_config(run_dir, list(hydra_cfg.overrides.task), cfg.resume_settings, composed=cfg)
        summary = train(cfg, run_dir, resume=True, world=world)
    else:  # the folder Hydra resolved, whatever the spelling of hydra.run.dir: train() checks it is free
        summary = train(cfg, Path(hydra_cfg.runtime.output_dir), world=world)
    if summary.get("exit_code") == PREEMPTED_EXIT_CODE:
        at = "during set-up" if summary["steps"] is None else f"at step {summary['steps']}; checkpoint saved"
        line = f"nmt-train: stopped by a signal {at}. Continue with: {relaunch(world.size)} resume={summary['run_dir']}"
    else:
        metric = cfg.train.early_stopping_metric
        best = summary.get(f"best_{metric}")
        best_text = f"best {metric} {best:.2f} at step {summary['best_step']}" if best is not None else f"no finite {metric}"
        test = f", test BLEU {summary['test_bleu_greedy']:.2f} (greedy)" if "test_bleu_greedy" in summary else ""
        line = (
            f"nmt-train: {summary['steps']} steps, {summary['epochs']} epochs in {summary['train_seconds']:.0f} s "
            f"({summary['reason']}); {best_text}{test}; "
            f"run folder {summary['run_dir']}"
        )
    print(line)
    copy_to_log_files(line)
    return summary.get("exit_code", 0)


def relaunch(processes: int) -> str:
    """The command that starts this job again: ``nmt-train``, or torchrun's for ``processes``
    (one machine's; on several, the job's own launch line)."""
    if processes == 1:
        return "nmt-train"
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", processes))
    if per_node == processes:
        return f"torchrun --standalone --nproc_per_node={processes} --no-python nmt-train"
    return "(the job's torchrun line, on every machine)"


def check_run_folder(overrides: dict[str, str]) -> None:
    """Before Hydra creates the run folder or writes into an existing one: a folder given
    on the command line must suit the command and not be held by another process (this
    one holds it from here on). ``train()`` checks the folder Hydra resolved once more."""
    resume, run_dir = overrides.get("resume"), overrides.get("hydra.run.dir")
    if torchrun_rank() > 0:  # rank 0 checks and holds the folder
        return
    if resume:
        from_checkpoint = overrides.get("resume_settings") == "checkpoint"
        problem = resume_folder_problem(resume, from_checkpoint=from_checkpoint)
        if not problem and not from_checkpoint:
            try:
                saved_settings(Path(resume))  # before Hydra writes into the folder
            except RunFolderError as err:
                problem = str(err)
        if problem:
            refuse(problem)
        if run_dir and Path(run_dir).resolve() != Path(resume).resolve():
            refuse(f"resume={resume} continues in its own folder: leave hydra.run.dir={run_dir} out")
        run_dir = resume
    elif run_dir:
        problem = new_run_problem(Path(run_dir), f"hydra.run.dir={run_dir}")
        if problem:
            refuse(problem)
        if "${" not in run_dir and not Path(run_dir).exists():
            # Made and held here, so that of two commands started at once with this folder the
            # second stops before its Hydra writes .hydra/ into the first one's run.
            top = next((p for p in [Path(run_dir).absolute(), *Path(run_dir).absolute().parents] if p.parent.exists()))
            try:
                Path(run_dir).mkdir(parents=True, exist_ok=True)
            except OSError as err:
                refuse(f"hydra.run.dir={run_dir}: cannot create the folder ({err.strerror})")
            atexit.register(remove_if_only_locked, Path(run_dir).absolute(), top)
    if run_dir and "${" not in run_dir and Path(run_dir).is_dir():
        try:
            hold(Path(run_dir))
        except RunFolderError as err:
            refuse(str(err))


def remove_if_only_locked(run_dir: Path, top: Path) -> None:
    """At exit: the folder ``check_run_folder`` made, and the parents it made up to ``top``,
    if nothing but the lock was written there (the command failed before Hydra started)."""
    if run_dir.is_dir() and set(os.listdir(run_dir)) <= {LOCK_NAME}:
        release(run_dir)
        (run_dir / LOCK_NAME).unlink(missing_ok=True)
        for folder in [run_dir, *run_dir.parents]:
            if not folder.is_relative_to(top) or any(folder.iterdir()):
                break
            folder.rmdir()


def clean_up_failed_run(code: int | None) -> None:
    """Remove the run folder of a command that failed before training made anything, if
    this process created it (a folder named with hydra.run.dir=... may be the user's)."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if code not in (0, None, PREEMPTED_EXIT_CODE) and run_dir.resolve() in claimed_run_folders():
        remove_if_unused(run_dir)


def remove_if_unused(run_dir: Path) -> None:
    """Delete a fresh run folder in which training made nothing (no checkpoint, no
    validation: only Hydra's files, the log, the lock, config.yaml and the tokenizer), and
    the parents it left empty (``outputs/DATA/MODEL``), so that failed attempts leave no
    empty runs behind."""
    run_dir, here = run_dir.resolve(), Path.cwd().resolve()
    if run_dir == here or not run_dir.is_dir() or has_trained(run_dir):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in run_dir.parents:
        if parent == here:
            break
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break


hydra_main = hydra_command("train", TrainRunConfig, run_train, check=check_run_folder, on_exit=clean_up_failed_run)


def torchrun_argv(argv: list[str]) -> list[str]:
    """The command line as this torchrun worker must compose it. Ranks other than 0 get no run
    folder, no .hydra/ and no log file (``hydra.run.dir=.``): rank 0 sends them its settings
    and folder. A worker that torchrun restarted (``--max-restarts``) resumes the folder that
    ``hydra.run.dir=`` names, once the first attempt has written its config.yaml there."""
    folder_args = ("hydra.run.dir=", "hydra.output_subdir=", "hydra/job_logging=")
    if torchrun_rank() > 0:
        return [a for a in argv if not a.lstrip("+").startswith(folder_args)] + [
            "hydra.run.dir=.",
            "hydra.output_subdir=null",
            "hydra/job_logging=stderr",
        ]
    run_dir = next((a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("hydra.run.dir=")), None)
    resumed = any(a.startswith("resume=") for a in argv)
    if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) and not run_dir and not resumed:
        print(
            "nmt-train: warning: torchrun --max-restarts without hydra.run.dir=...: a restarted job cannot find "
            "this run's folder and would start a new run",
            file=sys.stderr,
        )
    if restarted_by_torchrun() and run_dir and (Path(run_dir) / "config.yaml").is_file():
        print(f"nmt-train: restarted by torchrun; resuming {run_dir}", file=sys.stderr)
        # The settings that pick the device and the process group must stay those of the other ranks.
        return [f"resume={run_dir}"] + [a for a in argv if a.startswith(("train.dist_timeout_minutes=", "train.device="))]
    return argv


def show_resumed_config(argv: list[str]) -> bool:
    """``nmt-train resume=RUN --cfg job [--package GROUP]``: print the settings the resume would
    train with (the run's config.yaml and the overrides it allows), not the defaults Hydra
    composes before ``run_train`` reads the run. Returns whether it printed."""
    options, plain, args = {}, [], iter(argv)
    for arg in args:
        name, equals, value = arg.partition("=")
        if name in ("--cfg", "-c", "--package", "-p"):  # Hydra's own options, --cfg job or --cfg=job
            options[name.lstrip("-")[0]] = value if equals else next(args, None)
        else:
            plain.append(arg)
    if options.get("c") != "job":
        return False  # Hydra answers: the composed defaults (or its own config) are what would run
    overrides = check_command_line(TrainRunConfig)
    if "resume" not in overrides:
        return False
    try:
        cfg = OmegaConf.structured(resume_config(Path(overrides["resume"]), plain, overrides.get("resume_settings", "config")))
    except (CheckpointError, SettingError) as err:
        refuse(str(err))
    package = options.get("p")
    if package and package != "_global_":
        cfg = OmegaConf.select(cfg, package)
        if cfg is None:
            refuse(f"--package {package}: no such section of the config; e.g. --package train")
    print(OmegaConf.to_yaml(cfg) if OmegaConf.is_config(cfg) else cfg, end="")
    return True


def main() -> None:
    sys.argv[1:] = torchrun_argv(sys.argv[1:])
    if not show_resumed_config(sys.argv[1:]):
        hydra_main()


if __name__ == "__main__":
    main()
