"""Releases: a trained model as a folder anyone can translate with, and nothing else.

``export_release`` turns a checkpoint (best.pt, last.pt, an average) into a folder of

    model.safetensors   the weights only (no optimizer, no training state), in float16,
                        bfloat16 or float32, written by the ``safetensors`` library
    config.json         the format's version, the architecture and its sizes, the vocabulary
                        sizes, the corpus settings, the step, and the SHA-256 of the weights
                        and tokenizer files
    spm.model           the tokenizer (spm.src.model + spm.tgt.model when not joint)
    README.md           the model card (``nmt.model_card``)

and ``read_release`` reads one back as a ``Checkpoint``, so every command that takes
``ckpt=`` takes a release folder too. Why safetensors: a release is meant to be passed
around, and loading it must not run anything; a safetensors file is a JSON header and raw
tensor bytes, read without unpickling (a checkpoint is a pickle that ``weights_only``
only restricts), and any program that reads safetensors can use the weights.

A release is written into a temporary folder beside the output and renamed into place:
it appears whole or not at all. Every file but the card is checked against its SHA-256 when read, so a
damaged, truncated or missing file is one line naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from nmt.checkpoint import Checkpoint, read_checkpoint
from nmt.config import DataConfig, ModelConfig, from_dict
from nmt.errors import CheckpointError, SettingError

FORMAT = "nmt-release-1"
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_UMASK = os.umask(0)
os.umask(_UMASK)
# Corpus settings that describe one machine, not the model: left out of config.json.
MACHINE_SETTINGS = ("cache_dir", "num_proc")


def is_release(path: str | Path) -> bool:
    """Whether ``path`` is a release folder (it has config.json and model.safetensors)."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).exists()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def export_release(
    checkpoint: Checkpoint | str | Path, output: str | Path, dtype: str = "float16", overwrite: bool = False, card: str = ""
) -> Path:
    """Write the release of ``checkpoint`` (a ``Checkpoint``, or its file) into the folder ``output``
    (see the module's docstring); ``card`` is its README.md. ``output`` must not exist or be
    empty, unless ``overwrite``; a run folder is refused whatever ``overwrite`` says."""
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise SettingError(f"dtype={dtype}: expected one of {', '.join(DTYPES)}")
    output = Path(output)
    checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else read_checkpoint(checkpoint)
    problem = output_problem(output, overwrite, checkpoint.path)
    if problem:
        raise SettingError(problem)
    checkpoint.build_model()  # the weights fit their model and are finite: refused now, not by a user later
    tokenizer = checkpoint.tokenizer()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial"))
    try:
        weights = {
            name: (t.detach().to(DTYPES[dtype]) if t.is_floating_point() else t.detach()).contiguous()
            for name, t in checkpoint.model_state.items()
        }
        overflow = next((name for name, t in weights.items() if t.is_floating_point() and not t.isfinite().all()), None)
        if overflow is not None:
            raise SettingError(
                f"dtype={dtype}: {overflow} does not fit it (values beyond its range); use dtype=bfloat16 or float32"
            )
        save_file(weights, str(staging / WEIGHTS), metadata={"format": FORMAT})
        tokenizer.save(staging)
        data = {k: v for k, v in asdict(checkpoint.data_config).items() if k not in MACHINE_SETTINGS}
        if data["source"] == "embedded":  # this machine's checkout: the corpus ships with nmt
            data["path"] = f"data/{Path(data['path']).name}"
        (staging / CARD).write_text(card, encoding="utf-8")
        files = sorted(p.name for p in staging.iterdir() if p.name != CARD)  # the card is documentation: editable
        config = {
            "format": FORMAT,
            "model": asdict(checkpoint.model_config),
            "src_vocab_size": checkpoint.src_vocab_size,
            "tgt_vocab_size": checkpoint.tgt_vocab_size,
            "data": data,
            "dtype": dtype,
            "step": checkpoint.step,
            "epoch": checkpoint.epoch,
            "tokenizer": ["spm.model"] if tokenizer.joint else ["spm.src.model", "spm.tgt.model"],
            "sha256": {name: _sha256(staging / name) for name in files},
        }
        (staging / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        for path in [staging, *staging.iterdir()]:  # mkdtemp's folder and safetensors' file are private
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)
        _move_into_place(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def output_problem(output: Path, overwrite: bool, source: Path | None = None) -> str | None:
    """Why ``output=`` cannot take a release, or None: it may be a new or empty folder, or with
    ``overwrite`` an earlier release (and nothing else: never a folder of other files)."""
    if output.exists() and not output.is_dir():
        return f"output={output}: a file; give a folder name (it is created)"
    if source is not None and Path(source).resolve().is_relative_to(output.resolve()):
        return f"output={output} holds the checkpoint to export ({source}); give another folder"
    if not output.parent.exists():
        return f"output={output}: no folder {output.parent}; create it first"
    if not output.is_dir() or not any(output.iterdir()):
        return None
    if not _release_only(output):
        return f"output={output}: a folder of other files than a release; give a new folder (overwrite= replaces releases only)"
    if not overwrite:
        return f"output={output}: not empty; give a new folder, or overwrite=true to replace it"
    return None


def _release_only(folder: Path) -> bool:
    """Whether ``folder`` holds a release and nothing else (what ``overwrite=true`` may replace)."""
    try:
        config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
        own = {CONFIG, CARD, *config["sha256"]}
    except (OSError, ValueError, TypeError, KeyError):
        return False
    names = {path.name for path in folder.iterdir()}
    return (
        str(config.get("format", "")).startswith("nmt-release-")
        and names <= own
        and all((folder / name).is_file() and not (folder / name).is_symlink() for name in names)
    )


def _move_into_place(staging: Path, output: Path) -> None:
    """Rename the finished folder over ``output``: an empty folder is replaced at once; an earlier
    release (``overwrite``) is moved aside first and removed once the new one is in place."""
    if output.is_dir() and any(output.iterdir()):
        old = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".old"))
        try:
            os.rename(output, old / "release")
            try:
                os.rename(staging, output)
            except OSError:
                os.rename(old / "release", output)
                raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, output)  # a folder replaces an empty folder, or takes a new name


def read_release(folder: str | Path) -> Checkpoint:
    """A release folder as a ``Checkpoint`` (weights in float32, the working type of every
    device: CUDA computes in bfloat16 under autocast). Unpickles nothing; a missing,
    truncated or damaged file, or a config.json of another format, is a ``CheckpointError``
    naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config_path = folder / CONFIG
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{config_path}: not a release's config.json ({type(err).__name__}: {err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else None
        raise CheckpointError(
            f"{config_path}: a release of format {found!r}, which this version of nmt does not read "
            f"(it reads {FORMAT!r}); upgrade nmt, or export the checkpoint again"
        )
    hashes, tokenizer_files = config.get("sha256"), config.get("tokenizer")
    if not isinstance(hashes, dict) or not isinstance(tokenizer_files, list) or not 1 <= len(tokenizer_files) <= 2:
        raise CheckpointError(f"{config_path}: incomplete release config (sha256 and tokenizer files)")
    for name in [WEIGHTS, *tokenizer_files]:
        if name not in hashes or not isinstance(name, str) or Path(name).name != name:
            raise CheckpointError(f"{config_path}: names a file it holds no SHA-256 of, or outside its folder: {name!r}")
    for name, expected in sorted(hashes.items()):
        path = folder / Path(str(name)).name
        if not path.is_file() or path.is_symlink():
            raise CheckpointError(f"{path}: missing from the release (or not a file of its own); export it again")
        if _sha256(path) != expected:
            raise CheckpointError(f"{path}: damaged or truncated (its SHA-256 differs from config.json's); export it again")
    try:
        weights = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{folder / WEIGHTS}: not readable as safetensors ({err})") from None
    protos = [(folder / name).read_bytes() for name in tokenizer_files]
    try:
        for side in ("src_vocab_size", "tgt_vocab_size"):
            if not isinstance(config[side], int) or isinstance(config[side], bool) or config[side] < 5:
                raise SettingError(f"{side}={config[side]!r}: must be a whole number of subwords of at least 5")
        checkpoint = Checkpoint(
            model_config=from_dict(ModelConfig, config["model"]),
            src_vocab_size=config["src_vocab_size"],
            tgt_vocab_size=config["tgt_vocab_size"],
            model_state={name: t.float() if t.is_floating_point() else t for name, t in weights.items()},
            src_proto=protos[0],
            tgt_proto=protos[-1],
            data_config=from_dict(DataConfig, config["data"]),
            step=config.get("step"),
            epoch=config.get("epoch"),
            path=folder,
        )
    except (KeyError, TypeError, IndexError, SettingError) as err:
        raise CheckpointError(f"{config_path}: incomplete or invalid release config ({type(err).__name__}: {err})") from None
    checkpoint.tokenizer()  # a tokenizer that cannot be read: one line naming the release
    return checkpoint
