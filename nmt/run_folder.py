"""The run folder of a training: everything ``nmt-train`` writes besides checkpoints.

    config.yaml     the settings, complete (a resume reads them back)
    metrics.jsonl   one JSON line per validation
    curves.png      loss and BLEU / chrF against steps
    summary.json    the closing summary
    tensorboard/    the same numbers for TensorBoard (when it is installed)
    spm*.model      the tokenizer (written by ``Tokenizer.save``)

    .nmt-train.lock the lock of the process training in the folder (``hold``)

Checkpoints (best.pt, last.pt, step-N.pt) are written by ``nmt.checkpoint``. Every
file here is written whole or not at all, and one process at a time writes them.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path

import yaml

from nmt.errors import RunFolderError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one run per folder is then up to the user
    fcntl = None

log = logging.getLogger(__name__)

LOCK_NAME = ".nmt-train.lock"
_held: dict[Path, int] = {}  # run folder -> the open, locked lock file of this process

# What may change when a run resumes: how long and how often, not what is optimized.
# (A new optimizer, learning rate or early-stopping metric would not match the
# restored optimizer state, schedule and best value.)
RESUMABLE_SETTINGS = {
    "max_epochs",
    "max_steps",
    "max_minutes",
    "patience",
    "val_every",
    "val_max_sentences",
    "val_batch_tokens",
    "save_every",
    "keep_last",
    "log_every",
    "max_nonfinite_steps",
    "device",
    "dist_timeout_minutes",
}


# config.yaml opens and closes with these lines: a file that has the first but not the
# last was cut short (a truncated copy, a full disk), even where what is left parses.
CONFIG_HEADER = "# nmt-train settings, complete: a resume reads them back (the last line closes them)\n"
CONFIG_FOOTER = "# end of the settings\n"

# The temporary files of this package's atomic writes in a run folder (.NAME.tmp, or
# .NAME.RANDOM.tmp for checkpoints): only these are removed as leftovers of a killed save.
OWN_TEMPORARY = re.compile(
    r"\.(config\.yaml|summary\.json|metrics\.jsonl|curves\.png|(best|last|averaged|step-[0-9]+)\.pt|spm(\.src|\.tgt)?\.model)"
    r"(\.[A-Za-z0-9_]+)?\.tmp"
)


def write_config(run_dir: Path, cfg) -> None:
    """config.yaml from the run's settings (a dataclass), written aside and renamed."""
    text = yaml.safe_dump(asdict(cfg), default_flow_style=False, allow_unicode=True, sort_keys=False)
    write_atomically(Path(run_dir) / "config.yaml", CONFIG_HEADER + text + CONFIG_FOOTER)


def write_atomically(path: Path, data: str | bytes) -> None:
    """Write ``path`` whole or not at all: aside as .NAME.tmp, then renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


def append_metrics(run_dir: Path, metrics: dict) -> None:
    with open(Path(run_dir) / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(metrics) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl's rows. A torn last line (a kill in mid-write) is left out with a
    warning; a damaged line before it is an error naming the file and line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number < len(lines):
                raise RunFolderError(f"{path}, line {number}: not a metrics row ({err}); remove or repair that line") from None
            log.warning("%s: the last line is incomplete (written when the run was killed?); leaving it out", path)
    return rows


def last_metrics(run_dir: Path) -> dict | None:
    metrics = read_metrics(run_dir)
    return metrics[-1] if metrics else None


def drop_metrics_after(run_dir: Path, step: int) -> None:
    """On resume from ``step``: forget the validations the run made after its checkpoint
    (a kill between a metrics row and its checkpoint), which it will make again, and a torn
    last line, so that metrics.jsonl holds each validation once."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    rows = read_metrics(run_dir)
    kept = [row for row in rows if row.get("step", 0) <= step]
    text = "".join(json.dumps(row) + "\n" for row in kept)
    if text != path.read_text(encoding="utf-8", errors="replace"):
        if len(kept) < len(rows):
            log.info("metrics.jsonl: dropping %d row(s) past step %d, the checkpoint resumed from", len(rows) - len(kept), step)
        write_atomically(path, text)


def write_summary(run_dir: Path, summary: dict) -> None:
    write_atomically(Path(run_dir) / "summary.json", json.dumps(summary, indent=2) + "\n")


def read_summary(run_dir: Path) -> dict | None:
    """summary.json as written by ``write_summary``, or None if it is missing or damaged."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


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


# --------------------------------------------------------------------------- whose folder it is


def hold(run_dir: Path) -> bool:
    """Hold ``run_dir`` for this process until it exits, or fail at once with
    ``RunFolderError`` naming the folder and the holder's PID.

    An exclusive ``flock`` on ``run_dir/.nmt-train.lock``: the operating system releases
    it when the process ends, however it ends (kill -9 too), so a lock is never stale.
    The file itself stays (removing it would let two processes lock two different files).
    Returns whether this call took it (False: this process held it already).
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _held or fcntl is None:
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        by = f" (PID {holder})" if holder.isdigit() else ""
        raise RunFolderError(
            f"{run_dir} is in use by another nmt process{by}: one run folder takes one "
            "process at a time; wait for it to end, or stop it"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[run_dir] = fd
    return True


def release(run_dir: Path) -> None:
    """Let go of a folder ``hold`` took (exiting does that too)."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)


def claim_new_folder(path: str | Path) -> Path:
    """Create and return the folder ``path``, or ``path-2``, ``path-3``, ... if it exists:
    ``mkdir`` is atomic, so two runs started in the same second never share a folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        candidate = path if n == 1 else path.with_name(f"{path.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def has_trained(run_dir: Path) -> bool:
    """Whether the folder holds anything training made (a checkpoint, a validation)."""
    run_dir = Path(run_dir)
    return any(run_dir.glob("*.pt")) or (run_dir / "metrics.jsonl").exists()


def new_run_problem(run_dir: Path, named_as: str = "") -> str | None:
    """Why a new run cannot start in ``run_dir`` (spelled ``named_as`` on the command line), or None."""
    run_dir = Path(run_dir)
    where = named_as or str(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        return f"{where}: {run_dir} is a file, not a folder: choose a folder for the run"
    if not has_trained(run_dir):
        # A run that never trained (it failed or was killed during set-up or its first epoch)
        # has nothing to lose: a new run may take its folder, or resume= start it again.
        # One that did is refused even without its config.yaml (resume_settings=checkpoint
        # recovers that).
        return None
    settings = "" if (run_dir / "config.yaml").exists() else " resume_settings=checkpoint (its config.yaml is gone)"
    return f"{where} already holds an nmt-train run: continue it with resume={run_dir}{settings}, or choose another folder"


def remove_leftovers(run_dir: Path) -> None:
    """Delete the temporary files a killed save left (``OWN_TEMPORARY``: a user's own .tmp
    files are left alone); only while holding the folder."""
    leftovers = [path for path in Path(run_dir).glob(".*.tmp") if path.is_file() and OWN_TEMPORARY.fullmatch(path.name)]
    for path in leftovers:
        path.unlink(missing_ok=True)
    if leftovers:
        log.info("removed %d temporary file(s) of an interrupted save in %s", len(leftovers), run_dir)


def read_config(run_dir: Path) -> dict:
    """config.yaml as a mapping with the data, model and train sections, or ``RunFolderError``."""
    path = Path(run_dir) / "config.yaml"
    try:
        text = path.read_text(encoding="utf-8")
        values = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        problem = f"cannot be read ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    else:
        missing = [
            key for key in ("data", "model", "train") if not isinstance(values, dict) or not isinstance(values.get(key), dict)
        ]
        # Older runs have neither line; a hand edit may add lines or drop the last newline.
        cut_short = text.startswith(CONFIG_HEADER) and CONFIG_FOOTER.strip() not in text.splitlines()
        if not missing and not cut_short:
            return values
        if cut_short:
            problem = f"was cut short (its closing line '{CONFIG_FOOTER.strip()}' is missing)"
        else:
            problem = "is empty" if not values else f"lacks its {', '.join(missing)} section(s)"
    raise damaged_config(run_dir, problem)


def damaged_config(run_dir: Path, problem: str) -> RunFolderError:
    """The error for a config.yaml that cannot be resumed from, with the way out."""
    return RunFolderError(
        f"{Path(run_dir) / 'config.yaml'} {problem}: nothing was changed. Its newest checkpoint holds the settings "
        f"too: nmt-train resume={run_dir} resume_settings=checkpoint rewrites config.yaml from it"
    )


def resume_folder_problem(run_dir: str | Path, from_checkpoint: bool = False) -> str | None:
    """Why ``resume=run_dir`` cannot work, or None (``from_checkpoint``: config.yaml may be missing)."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        parent = run_dir.parent
        hint = f"; to continue that run: resume={parent}" if (parent / "config.yaml").exists() else ""
        return (
            f"resume={run_dir} is a file: resume takes an nmt-train run folder and continues from its "
            f"newest intact checkpoint{hint}"
        )
    if not run_dir.is_dir():
        return f"resume={run_dir}: no such folder; pass the folder of an nmt-train run"
    if from_checkpoint:
        return None
    if not (run_dir / "config.yaml").exists():
        if any(run_dir.glob("*.pt")):
            return (
                f"resume={run_dir}: no config.yaml there; its newest checkpoint holds the settings too: "
                f"add resume_settings=checkpoint"
            )
        return f"resume={run_dir}: no config.yaml there; is it an nmt-train run folder?"
    try:
        read_config(run_dir)
    except RunFolderError as err:
        return str(err)
    return None


def refused_resume_changes(overrides: list[str]) -> str | None:
    """Why these ``key=value`` overrides cannot come with ``resume=``, or None (see ``RESUMABLE_SETTINGS``)."""
    bad = [
        o
        for o in overrides
        if o.split("=", 1)[0].removeprefix("train.") not in RESUMABLE_SETTINGS or not o.startswith("train.")
    ]
    if not bad:
        return None
    allowed = ", ".join(f"train.{name}" for name in sorted(RESUMABLE_SETTINGS))
    return f"resume: {' '.join(bad)} cannot change when resuming; these can: {allowed}"
