"""Checkpoints: the one owner of their format, and files that survive crashes and cannot run code.

``pack_checkpoint`` builds the dict that is saved and ``unpack_checkpoint`` reads it
back into a ``Checkpoint``; no other module indexes that dict. Layout (format
``nmt-checkpoint-1``, unchanged since the first release):

    model         the state dict
    model_config  {"config": ModelConfig as a dict (ADDED_MODEL_SETTINGS only where not the default),
                   "src_vocab_size", "tgt_vocab_size"}
    tokenizer     {"src": uint8 tensor, "tgt": uint8 tensor}: the SentencePiece protos
    data_config   DataConfig as a dict
    step, epoch, best_value
    train_state   (resumable checkpoints only) {"optimizer", "schedule", "progress", "rng",
                  "train_config"}
    origin        (optional) what made it, where that is not nmt-train: "nmt-average" for an
                  average (nmt-average, train.average_last), which a later average may replace

Saving writes a temporary file beside the target, fsyncs it and ``os.replace``s it over
the old name: a crash leaves the previous checkpoint whole. Loading uses
``torch.load(weights_only=True)``: a file that carries any pickled object other than
tensors and plain data is refused without running it. A release folder (``nmt.release``)
is read wherever a checkpoint is.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nmt.config import DataConfig, ModelConfig, from_dict
from nmt.errors import CheckpointError, SettingError
from nmt.output_files import not_regular

FORMAT = "nmt-checkpoint-1"
AVERAGE_ORIGIN = "nmt-average"  # the ``origin`` of an averaged checkpoint
# ModelConfig fields newer than the format; saved only where they differ from the default.
ADDED_MODEL_SETTINGS = ("arch", "attention_size", "rnn")
_UMASK = os.umask(0)
os.umask(_UMASK)


@dataclass
class TrainingState:
    """What a resumable checkpoint holds besides the model: training continues exactly from it."""

    optimizer: dict
    schedule: dict
    progress: dict
    rng: dict
    train_config: dict  # OptimConfig as a dict


@dataclass
class Checkpoint:
    """A checkpoint as the rest of nmt sees it (``unpack_checkpoint``)."""

    model_config: ModelConfig
    src_vocab_size: int
    tgt_vocab_size: int
    model_state: dict
    src_proto: bytes  # the SentencePiece models
    tgt_proto: bytes
    data_config: DataConfig
    step: int | None = None
    epoch: int | None = None
    best_value: float | None = None
    training: TrainingState | None = None
    path: Path | None = None

    def tokenizer(self):
        from nmt.tokenizer import Tokenizer  # SentencePiece only where a tokenizer is wanted

        try:
            return Tokenizer(self.src_proto, self.tgt_proto)
        except Exception:  # noqa: BLE001 - SentencePiece reports a bad proto as RuntimeError/OSError
            raise CheckpointError(
                f"{self.path or 'checkpoint'}: its tokenizer (the SentencePiece model it carries) "
                "is damaged and cannot be read; use another checkpoint of the run"
            ) from None

    def tokenizer_identity(self) -> tuple[str, str]:
        """``nmt.tokenizer.model_identity`` of both SentencePiece models: one for two builds of one tokenizer."""
        from nmt.tokenizer import model_identity

        return model_identity(self.src_proto), model_identity(self.tgt_proto)

    def build_model(self) -> torch.nn.Module:
        """The model, with these weights, on the CPU. The saved weights are checked against
        the model they claim before any memory is spent on it (names and shapes, on a model
        built on the meta device), and refused where they are not finite."""
        from nmt.architectures import build_model

        problem = self.weights_problem()
        if problem:
            raise CheckpointError(f"{self.path or 'checkpoint'}: {problem}; use another checkpoint of the run")
        model = build_model(self.model_config, self.src_vocab_size, self.tgt_vocab_size)
        model.load_state_dict(self.model_state)
        return model

    def weights_problem(self, model: torch.nn.Module | None = None) -> str | None:
        """How the saved weights do not fit the model they say they are (names, shapes), or are
        not finite, or None. Without ``model``, one is built on the meta device: no memory."""
        if model is None:
            from nmt.architectures import build_model

            try:
                with torch.device("meta"):
                    model = build_model(self.model_config, self.src_vocab_size, self.tgt_vocab_size)
            except (SettingError, ValueError, RuntimeError, TypeError) as err:  # an unknown arch, sizes no model takes
                return f"its model settings cannot be built ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        saved = self.model_state if isinstance(self.model_state, dict) else {}
        found = {name: tuple(t.shape) for name, t in saved.items() if torch.is_tensor(t)}
        missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
        reshaped = sorted(name for name in expected.keys() & found.keys() if expected[name] != found[name])
        parts = [
            f"{label} {', '.join(names[:3])}{' …' if len(names) > 3 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped))
            if names
        ]
        if parts:
            return f"its weights do not fit its {self.model_config.arch} model ({'; '.join(parts)})"
        floating = ((name, t) for name, t in saved.items() if torch.is_tensor(t) and t.is_floating_point())
        bad = next((name for name, t in floating if not t.isfinite().all()), None)
        return None if bad is None else f"its weights are not finite (NaN or inf) in {bad}: it would translate to nothing"

    def training_problem(self) -> str | None:
        """What makes this checkpoint's training state unusable for a resume, or None."""
        progress = self.training.progress if self.training is not None else None
        if not isinstance(progress, dict) or any(key not in progress for key in RESUME_PROGRESS_KEYS):
            return f"its training progress is incomplete (needs {', '.join(RESUME_PROGRESS_KEYS)})"
        if self.step is not None and progress["step"] != self.step:
            return f"its training progress says step {progress['step']} but the checkpoint step {self.step}"
        return None


# What a resume cannot guess: where in training the checkpoint was written. (Every other
# progress field has a default, so checkpoints of older releases still resume.)
RESUME_PROGRESS_KEYS = ("step", "epoch", "batch_in_epoch")


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def pack_checkpoint(
    model: torch.nn.Module,
    src_proto: bytes,
    tgt_proto: bytes,
    data_config: DataConfig,
    step: int,
    epoch: int,
    best_value: float | None,
    training: TrainingState | None = None,
    origin: str | None = None,
) -> dict:
    """The dict ``save_checkpoint`` writes: a model (of any registered architecture), its
    tokenizer, the corpus settings and progress, and optionally the training state and what
    made it (``origin``, e.g. ``AVERAGE_ORIGIN``)."""
    spec = model.model_config()
    # Settings added since the first release are implied at their defaults when absent
    # (unpack_checkpoint); left out, so that older releases still read Cho checkpoints.
    implied = {key for key in ADDED_MODEL_SETTINGS if spec["config"].get(key) == getattr(ModelConfig, key)}
    spec = {**spec, "config": {k: v for k, v in spec["config"].items() if k not in implied}}
    state = {
        "model": model.state_dict(),
        "model_config": spec,
        "tokenizer": {"src": _bytes_tensor(src_proto), "tgt": _bytes_tensor(tgt_proto)},
        "data_config": asdict(data_config),
        "step": step,
        "epoch": epoch,
        "best_value": best_value,
    }
    if origin is not None:
        state["origin"] = origin
    if training is not None:
        state["train_state"] = {
            "optimizer": training.optimizer,
            "schedule": training.schedule,
            "progress": training.progress,
            "rng": training.rng,
            "train_config": training.train_config,
        }
    return state


def unpack_checkpoint(state: dict, path: Path | None = None) -> Checkpoint:
    """A loaded checkpoint dict as a ``Checkpoint``. Settings added since a checkpoint was
    written take their defaults: a checkpoint without ``model.arch`` is ``cho2014``."""
    try:
        spec, tokenizer = state["model_config"], state["tokenizer"]
        training = state.get("train_state")
        for side in ("src_vocab_size", "tgt_vocab_size"):
            size = spec[side]
            if not isinstance(size, int) or isinstance(size, bool) or size < 5:
                raise SettingError(f"{side}={size!r}: must be a whole number of subwords of at least 5")
        return Checkpoint(
            model_config=from_dict(ModelConfig, spec["config"]),
            src_vocab_size=spec["src_vocab_size"],
            tgt_vocab_size=spec["tgt_vocab_size"],
            model_state=state["model"],
            src_proto=bytes(tokenizer["src"].numpy()),
            tgt_proto=bytes(tokenizer["tgt"].numpy()),
            data_config=from_dict(DataConfig, state["data_config"]),
            step=state.get("step"),
            epoch=state.get("epoch"),
            best_value=state.get("best_value"),
            training=None if training is None else TrainingState(**training),
            path=None if path is None else Path(path),
        )
    except (KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path or 'checkpoint'}: incomplete nmt checkpoint ({type(err).__name__}: {err})") from None
    except SettingError as err:  # a saved setting of the wrong type or out of range
        raise CheckpointError(f"{path or 'checkpoint'}: its saved settings do not fit this version's ({err})") from None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """``load_checkpoint`` + ``unpack_checkpoint``; a release folder: ``nmt.release.read_release``."""
    if Path(path).is_dir():
        from nmt.release import read_release

        return read_release(path)
    return unpack_checkpoint(load_checkpoint(Path(path)), Path(path))


def save_checkpoint(state: dict, path: Path) -> None:
    """Atomically write ``state`` to ``path``; weights that are not finite are never saved
    (they would only translate to garbage, and as best.pt or last.pt hide the good ones)."""
    path = Path(path)
    weights = [t for t in state.get("model", {}).values() if torch.is_tensor(t) and t.is_floating_point()]
    if weights and not bool(torch.stack([t.isfinite().all() for t in weights]).all()):
        raise CheckpointError(
            f"{path} not written: the model's weights are not finite (NaN or inf) at step {state.get('step')}; "
            "the checkpoints saved before are intact. Lower train.lr, or enable train.clip_norm."
        )
    kind = not_regular(path)
    if kind:
        raise CheckpointError(f"{path} not written: it is {kind}, which a checkpoint would replace; give a file name")
    state = {"format": FORMAT, **state}
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
            tmp_name = f.name
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o666 & ~_UMASK)  # temp files are private (0600); checkpoints need not be
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as err:
        # torch.save reports a failed write (disk full, quota) as a RuntimeError
        # ("unexpected pos ...") raised while handling the OSError: report that one.
        cause = err if isinstance(err, OSError) else err.__context__
        if isinstance(cause, KeyboardInterrupt):  # Ctrl-C twice, the second during the write: abort as asked
            raise cause from None
        if not isinstance(cause, OSError):
            raise
        raise CheckpointError(
            f"could not write checkpoint {path}: {cause.strerror or cause}. "
            "The previous checkpoint is intact; free disk space or fix the folder's permissions."
        ) from cause
    finally:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass


def checkpoint_origin(path: Path) -> str | None:
    """What made the checkpoint ``path`` (its ``origin``, e.g. ``AVERAGE_ORIGIN``), or None: one of
    nmt-train, or no intact nmt checkpoint. Memory-mapped: the weights are not read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - anything unreadable is no checkpoint of any origin
        return None
    ok = isinstance(state, dict) and state.get("format") == FORMAT and isinstance(state.get("origin"), str)
    return state["origin"] if ok else None


def link_checkpoint(source: Path, target: Path) -> None:
    """Make ``target`` the same checkpoint as ``source`` without writing it twice.

    A hard link under a temporary name, then ``os.replace``: atomic like a save.
    Where links are not supported, falls back to a copy written the same way.
    """
    source, target = Path(source), Path(target)
    tmp = target.with_name(f".{target.name}.link.tmp")
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError:
        tmp.unlink(missing_ok=True)
        save_checkpoint(load_checkpoint(source), target)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint``; never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if len(magic) < 4:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({len(magic)} bytes)")
    # torch.save writes a zip archive (older PyTorch: a raw pickle, which starts with the
    # PROTO opcode and goes on to torch.load's safety check); anything else, a text file
    # say, is plainly not a checkpoint.
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":
        raise CheckpointError(
            f"{path}: not an nmt checkpoint; nmt-train writes best.pt, last.pt "
            "and step-N.pt in its run folder (ckpt= takes the folder too)"
        )
    if magic == b"PK\x03\x04":
        _check_crcs(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message goes on for lines and suggests weights_only=False: never that.
        lines = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        detail = next((line for line in lines if not line.startswith(("Check the documentation", "Please file"))), "unreadable")
        if "global" in detail.lower():
            raise CheckpointError(
                f"{path}: refused: it holds pickled objects other than tensors and plain data, which could run "
                f"code when loaded ({detail}). Only load checkpoints written by nmt."
            ) from None
        raise CheckpointError(
            f"{path}: refused: its pickle is corrupt or not one nmt writes ({detail}); nothing in it was run"
        ) from None
    except Exception as err:  # a damaged file fails in many ways (KeyError, EOFError, ...)
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(err).__name__}: {first_line})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an nmt checkpoint (expected format {FORMAT!r})")
    return state


def _check_crcs(path: Path) -> None:
    """Refuse a zip checkpoint whose data no longer matches its CRC-32s (a bit flip on disk or
    in a copy): torch.load would read the flipped tensors without noticing."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({type(err).__name__}: {err})") from None
    if damaged is not None:
        raise CheckpointError(
            f"{path}: damaged: {damaged} does not match its checksum (a bit flip on disk or in "
            "a copy); use another checkpoint of the run"
        )


def resolve_checkpoint(path_or_run: str | Path, setting: str = "ckpt") -> Path:
    """A run folder means its best checkpoint (else its last); a release folder and a file
    mean themselves. ``setting`` names the command-line key in errors."""
    if not str(path_or_run).strip():
        raise CheckpointError(f"{setting}= is empty: give a run folder or a checkpoint file")
    path = Path(path_or_run).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():  # a release (nmt.release): read_release checks it whole
            return path
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{setting}={path_or_run}: run folder without best.pt or last.pt; has it trained yet?")
    if not path.exists():
        raise CheckpointError(f"{setting}={path_or_run}: no such run folder or checkpoint file")
    return path


# The step checkpoints the trainer writes; any other file (a user's step-80-backup.pt)
# is never pruned and never resumed from.
STEP_CHECKPOINT = re.compile(r"step-([0-9]+)\.pt")  # ASCII digits only: "\d" would take step-٩٩.pt


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The run's step-N.pt files, oldest (lowest N) first."""
    numbered = [
        (int(match[1]), path)
        for path in Path(run_dir).glob("step-*.pt")
        if (match := STEP_CHECKPOINT.fullmatch(path.name)) and path.is_file()
    ]
    return [path for _, path in sorted(numbered)]


def resume_candidates(run_dir: Path) -> list[Path]:
    """Checkpoints to resume from, newest first: last.pt, then step checkpoints."""
    run_dir = Path(run_dir)
    last = [run_dir / "last.pt"] if (run_dir / "last.pt").exists() else []
    return last + step_checkpoints(run_dir)[::-1]


def has_step_checkpoints(run_dir: Path) -> bool:
    """Whether the run folder holds any checkpoint to resume from (intact or not)."""
    return bool(resume_candidates(run_dir))


def load_for_resume(run_dir: Path, log=None) -> Checkpoint:
    """The newest loadable training checkpoint in ``run_dir``, skipping corrupt ones."""
    errors = []
    for candidate in resume_candidates(run_dir):
        try:
            checkpoint = read_checkpoint(candidate)
            if checkpoint.training is None:
                continue  # best.pt-like: weights only
            checkpoint.tokenizer()  # raises on damaged tokenizer bytes
            problem = checkpoint.weights_problem() or checkpoint.training_problem()
            if problem:
                raise CheckpointError(f"{candidate}: {problem}")
        except CheckpointError as err:
            errors.append(str(err))
            if log:
                log.warning("%s; trying an older checkpoint", err)
            continue
        return checkpoint
    detail = ("; ".join(errors)) if errors else "no last.pt or step-*.pt found"
    raise CheckpointError(f"resume={run_dir}: no loadable training checkpoint ({detail})")


def prune_step_checkpoints(run_dir: Path, keep: int) -> None:
    """Keep only the newest ``keep`` step-N.pt files (best.pt, last.pt and others are never pruned)."""
    steps = resume_candidates(run_dir)
    steps = [p for p in steps if p.name.startswith("step-")]
    for old in steps[keep:]:
        old.unlink(missing_ok=True)
