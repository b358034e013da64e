"""The run folder of a training: everything ``nmt-train`` writes besides checkpoints.

    config.yaml     the settings, complete (a resume reads them back)
    metrics.jsonl   one JSON line per validation
    curves.png      loss and BLEU / chrF against steps
    summary.json    the closing summary
    tensorboard/    the same numbers for TensorBoard (when it is installed)
    spm*.model      the tokenizer (written by ``Tokenizer.save``)

Checkpoints (best.pt, last.pt, step-N.pt) are written by ``nmt.checkpoint``. Every
file here is written whole or not at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import yaml

# What may change when a run resumes: how long and how often, not what is optimized.
# (A new optimizer, learning rate or early-stopping metric would not match the
# restored optimizer state, schedule and best value.)
RESUMABLE_SETTINGS = {
    "max_epochs", "max_steps", "max_minutes", "patience", "val_every", "val_max_sentences",
    "val_batch_tokens", "save_every", "keep_last", "log_every", "max_nonfinite_steps", "device",
}


def write_config(run_dir: Path, cfg) -> None:
    """config.yaml from the run's settings (a dataclass), written aside and renamed."""
    text = yaml.safe_dump(asdict(cfg), default_flow_style=False, allow_unicode=True, sort_keys=False)
    _write_atomically(Path(run_dir) / "config.yaml", text)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def append_metrics(run_dir: Path, metrics: dict) -> None:
    with open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(metrics) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def last_metrics(run_dir: Path) -> dict | None:
    metrics = read_metrics(run_dir)
    return metrics[-1] if metrics else None


def write_summary(run_dir: Path, summary: dict) -> None:
    _write_atomically(Path(run_dir) / "summary.json", json.dumps(summary, indent=2) + "\n")


def plot_curves(run_dir: Path) -> Path | None:
    """curves.png: training and validation loss, and validation BLEU / chrF, against steps."""
    metrics = read_metrics(run_dir)
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


def tensorboard_writer(run_dir: Path):
    """A TensorBoard ``SummaryWriter`` on ``run_dir/tensorboard``, or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))


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


def refused_resume_changes(overrides: list[str]) -> str | None:
    """Why these ``key=value`` overrides cannot come with ``resume=``, or None (see ``RESUMABLE_SETTINGS``)."""
    bad = [o for o in overrides if o.split("=", 1)[0].removeprefix("train.") not in RESUMABLE_SETTINGS
           or not o.startswith("train.")]
    if not bad:
        return None
    allowed = ", ".join(f"train.{name}" for name in sorted(RESUMABLE_SETTINGS))
    return f"resume: {' '.join(bad)} cannot change when resuming; these can: {allowed}"
