"""What every stage needs from the machine: the device, seeds and RNG state, mixed
precision, stop requests (SIGTERM / Ctrl-C) and copies of console lines in log files."""

from __future__ import annotations

import logging
import os
import random
import signal

import numpy as np
import torch

from nmt.errors import SettingError
from nmt.launch import PREEMPTED_EXIT_CODE, copy_to_log_files  # noqa: F401 (their home before nmt.launch)

log = logging.getLogger(__name__)


def pick_device(name: str = "auto", setting: str = "device") -> torch.device:
    """``auto``: CUDA where there is a GPU, else the CPU. ``setting`` names the key in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SettingError(f"{setting}={name}: CUDA is not available on this machine; use {setting}=cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SettingError(f"{setting}={name}: not a device; use auto, cpu, cuda or cuda:N") from None


def configure_device(name: str, tf32: bool = True, deterministic: bool = False, setting: str = "train.device") -> torch.device:
    """The training device, with TF32 matrix products and deterministic kernels as asked."""
    device = pick_device(name, setting=setting)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; cuDNN needs its flag.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device


def autocast(device: torch.device, enabled: bool = True, precision: str | None = None):
    """bf16 autocast on CUDA (when ``enabled``); on a CPU everything runs in float32. With
    ``precision`` (``resolve_precision``'s answer), bf16 autocast exactly where it says bfloat16."""
    if precision is not None:
        enabled, device_type = precision == "bfloat16", device.type
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=enabled)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


# precision= of the commands that use a trained model (translate, evaluate, score, embed)
PRECISIONS = ("auto", "float32", "bfloat16", "int8")


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX, which oneDNN uses);
    elsewhere bf16 is emulated, slower than float32."""
    try:
        flags = {flag for line in open("/proc/cpuinfo", encoding="utf-8") if line.startswith("flags") for flag in line.split()}
    except OSError:
        flags = set()
    return bool(flags & {"avx512_bf16", "amx_bf16"}) and torch.backends.mkldnn.is_available()


def resolve_precision(precision: str, device: torch.device, setting: str = "precision") -> str:
    """``precision`` made concrete for ``device``: ``auto`` is bfloat16 autocast on CUDA and float32
    on a CPU; ``bfloat16`` on a CPU without native support is float32, with one warning."""
    if precision not in PRECISIONS:
        raise SettingError(f"{setting}={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    if precision == "int8" and device.type != "cpu":
        raise SettingError(
            f"{setting}=int8 is for CPUs (it is slower than bfloat16 on a GPU); on {device} use {setting}=bfloat16 or auto"
        )
    if precision == "bfloat16" and device.type == "cpu" and not cpu_has_bf16():
        logging.getLogger(__name__).warning(
            "%s=bfloat16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX), where it would be slower than "
            "float32; decoding in float32",
            setting,
        )
        return "float32"
    return precision


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class StoppedDuringSetup(BaseException):
    """SIGTERM / SIGINT while a run was being set up (corpus, tokenizer): nothing to save.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on the
    way (a reader turning any failure into a one-line error) takes it for a bad file."""


class StopRequest:
    """SIGTERM / SIGINT set a flag; training checkpoints at the next step boundary.

    While ``setting_up`` is true (corpus loading, tokenizer training: minutes on a large
    corpus, and nothing to checkpoint yet) a signal raises ``StoppedDuringSetup`` at once
    instead, so that a scheduler's grace period is enough. A second SIGINT (Ctrl-C twice)
    aborts at once.
    """

    def __init__(self, setting_up: bool = False):
        self.signal_name: str | None = None
        self.setting_up = setting_up
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        if self.setting_up:
            log.warning("%s received during set-up: stopping (no step trained, nothing to save)", self.signal_name)
            raise StoppedDuringSetup(self.signal_name)
        again = " (Ctrl-C again to abort)" if signum == signal.SIGINT else ""
        log.warning("%s received: saving a checkpoint at the next step boundary%s", self.signal_name, again)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __bool__(self):
        return self.signal_name is not None
