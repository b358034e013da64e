"""``nmt-average``: one checkpoint whose weights are the mean of several checkpoints'.

    nmt-average ckpt=outputs/RUN last=5 output=outputs/RUN/averaged.pt
    nmt-average 'ckpts=[a.pt,b.pt,c.pt]' output=averaged.pt

The output is a normal, self-contained checkpoint (the newest input's settings and
tokenizer, no training state) that nmt-translate, nmt-evaluate and nmt-score take.
"""

from __future__ import annotations

from pathlib import Path

from nmt.commands.app import hydra_command
from nmt.commands.files import check_not_overwritten, check_output
from nmt.config import AverageConfig
from nmt.errors import CheckpointError, SettingError


def newest_step_checkpoints(run_dir: Path, k: int) -> list[Path]:
    """The run's newest ``k`` step-N.pt, oldest first; fewer is an error naming the run."""
    from nmt.checkpoint import step_checkpoints

    steps = step_checkpoints(run_dir)
    if len(steps) < k:
        raise CheckpointError(
            f"ckpt={run_dir}: {len(steps)} step checkpoint(s) (step-N.pt), fewer than last={k}; lower last=, "
            "or train with more of them: a run keeps its newest train.keep_last, written at each validation "
            "(train.val_every) or every train.save_every steps"
        )
    return steps[-k:]


def run_average(cfg: AverageConfig) -> int:
    from nmt.checkpoint import AVERAGE_ORIGIN, STEP_CHECKPOINT, checkpoint_origin
    from nmt.ensemble import save_average

    if (cfg.ckpt is None) == (cfg.ckpts is None):
        raise SettingError("give ckpt=RUN_DIR (its newest last=K step checkpoints) or ckpts=[A.pt,B.pt,...]")
    if cfg.ckpts is not None:
        paths = [Path(path) for path in cfg.ckpts]
        if not paths:
            raise SettingError("ckpts=[]: give the checkpoint files to average")
    else:
        if not Path(cfg.ckpt).exists():
            raise SettingError(f"ckpt={cfg.ckpt}: no such run folder")
        if not Path(cfg.ckpt).is_dir():
            raise SettingError(f"ckpt={cfg.ckpt}: not a run folder; for checkpoint files use ckpts=[A.pt,B.pt,...]")
        paths = newest_step_checkpoints(Path(cfg.ckpt), cfg.last)
    check_output(cfg.output, through=False)
    output = Path(cfg.output)
    if (output.name in ("best.pt", "last.pt") or STEP_CHECKPOINT.fullmatch(output.name)) and (
        (output.parent / "config.yaml").exists() or (output.parent / "last.pt").exists()
    ):  # nmt-evaluate, resume and pruning would take the average for the run's own checkpoint
        raise SettingError(
            f"output={cfg.output}: {output.parent} is a run folder and nmt-train writes and reads its {output.name}; "
            f"choose another name, e.g. output={output.parent / 'averaged.pt'}"
        )
    inputs = [f"ckpts[{i}]" for i in range(len(paths))] if cfg.ckpts is not None else ["ckpt"] * len(paths)
    for setting, path in zip(inputs, paths):
        check_not_overwritten([output], {setting: str(path)}, "choose another output=")
    if output.exists() and checkpoint_origin(output) != AVERAGE_ORIGIN:  # a run's config.yaml, spm.model, lock ...
        raise SettingError(
            f"output={cfg.output}: exists and is not an earlier output of nmt-average, so not its to replace; "
            f"choose a new file name (or remove {cfg.output} first: averages written before 2026-12-08 carry no mark)"
        )
    save_average(paths, output)
    names = paths[0].name if len(paths) == 1 else f"{paths[0].name} ... {paths[-1].name}"
    print(f"nmt-average: {len(paths)} checkpoint{'s' if len(paths) > 1 else ''} ({names}) averaged into {cfg.output}")
    return 0


main = hydra_command("average", AverageConfig, run_average)

if __name__ == "__main__":
    main()
