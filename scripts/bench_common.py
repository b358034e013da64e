"""Shared pieces of ``scripts/bench_train.py`` and ``scripts/bench_decode.py``.

* the model sizes benchmarked (``SIZES``),
* device set-up, timing and JSON-line output.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch

from nmt.config import ModelConfig
from nmt.runtime import pick_device

# Model sizes. "yardstick": a common reference configuration for this model
# (620-d embeddings, 1000 GRU units, 500 maxout units, a 15 000-word vocabulary,
# full-rank output matrix); "small": conf/model/small.yaml, what the project
# trains on the embedded Bible corpus.
SIZES = {
    "yardstick": {"embed_size": 620, "hidden_size": 1000, "maxout_size": 500, "vocab": 15_000, "dropout": 0.0},
    "small": {"embed_size": 256, "hidden_size": 512, "maxout_size": 256, "vocab": 8_000, "dropout": 0.1},
}


def model_config(size: str, arch: str = "cho2014") -> tuple[ModelConfig, int]:
    """``(ModelConfig, vocabulary size)`` of a named size (fused cuDNN GRU, full-rank output);
    for ``arch="rnnsearch"`` the same sizes, the alignment model as large as the hidden state."""
    spec = dict(SIZES[size])
    vocab = spec.pop("vocab")
    return ModelConfig(name=size, arch=arch, output_rank=0, cell="cudnn", paper_init=False, **spec), vocab


def size_record(size: str, arch: str = "cho2014") -> dict:
    return {"model": size, "arch": arch, **SIZES[size]}


# --------------------------------------------------------------------------- device, timing, output


def setup_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu (as nmt-train does)."""
    return pick_device(name)


def set_matmul_tf32(device: torch.device, tf32: bool) -> None:
    """TF32 for float32 matrix products on or off (CUDA only).

    nmt-train turns it on (``train.tf32=true``); PyTorch's default, which a
    tutorial script runs with, is off. cuDNN's TF32 flag is on in both cases.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = True


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Wall time of a block, with the device synchronized at both ends."""

    def __init__(self, device: torch.device):
        self.device, self.seconds = device, 0.0

    def __enter__(self):
        synchronize(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._start


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def is_h100(device: torch.device) -> bool:
    return device.type == "cuda" and "H100" in torch.cuda.get_device_name(device)


def common_fields(bench: str, device: torch.device) -> dict:
    """Fields every JSON line carries."""
    return {
        "bench": bench,
        "device": device_name(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
    }


class JsonLines:
    """Print each record as one JSON line; also append it to ``--out`` when given."""

    def __init__(self, out: str | None):
        self.path = Path(out) if out else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=False)
        print(line, flush=True)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")


def check_targets(measured: dict, target: dict) -> tuple[dict, bool | None]:
    """Compare measured values with targets named ``min_<key>`` / ``max_<key>``.

    Returns ``({key: met}, all met)``; ``(…, None)`` when there is no target.
    """
    met = {}
    for name, bound in target.items():
        kind, key = name.split("_", 1)
        value = measured.get(key)
        if value is None:
            met[name] = None
            continue
        met[name] = value >= bound if kind == "min" else value <= bound
    known = [v for v in met.values() if v is not None]
    return met, (all(known) if known else None)


def rounded(value: float, digits: int = 4) -> float:
    """Round to ``digits`` significant digits, for readable JSON."""
    return float(f"{value:.{digits}g}")
