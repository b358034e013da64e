"""Shared pieces of ``scripts/bench_train.py`` and ``scripts/bench_decode.py``.

* the model sizes benchmarked (``SIZES``),
* ``ReferenceSeq2Seq``: the same Cho et al. (2014) model written the way PyTorch
  tutorials write it (encoder ``nn.GRU``, decoder ``nn.GRUCell`` unrolled one
  step at a time, full logits), loadable with an ``nmt`` model's weights so that
  both implementations compute the same function,
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
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from nmt.config import ModelConfig
from nmt.tokenizer import PAD
from nmt.translate import pick_device

# Model sizes. "yardstick": a common reference configuration for this model
# (620-d embeddings, 1000 GRU units, 500 maxout units, a 15 000-word vocabulary,
# full-rank output matrix); "small": conf/model/small.yaml, what the project
# trains on the embedded Bible corpus.
SIZES = {
    "yardstick": {"embed_size": 620, "hidden_size": 1000, "maxout_size": 500, "vocab": 15_000, "dropout": 0.0},
    "small": {"embed_size": 256, "hidden_size": 512, "maxout_size": 256, "vocab": 8_000, "dropout": 0.1},
}


def model_config(size: str) -> tuple[ModelConfig, int]:
    """``(ModelConfig, vocabulary size)`` of a named size (fused cuDNN GRU, full-rank output)."""
    spec = dict(SIZES[size])
    vocab = spec.pop("vocab")
    return ModelConfig(name=size, output_rank=0, cell="cudnn", paper_init=False, **spec), vocab


def size_record(size: str) -> dict:
    return {"model": size, **SIZES[size]}


# --------------------------------------------------------------------------- the reference model


class ReferenceSeq2Seq(nn.Module):
    """Cho et al.'s RNN Encoder-Decoder in the usual tutorial style.

    The encoder is one ``nn.GRU`` over the packed source; the decoder is an
    ``nn.GRUCell`` fed ``[e(y_{t-1}); c]`` and unrolled in a Python loop, each step
    followed by the maxout deep output and the full softmax layer; training
    stacks the per-step logits of every position (padding included) and takes
    ``nn.CrossEntropyLoss(ignore_index=PAD)``. Same equations and parameter shapes
    as ``nmt.model.RNNEncoderDecoder`` with ``cell="cudnn"`` and ``output_rank=0``
    (``nn.GRUCell`` and ``nn.GRU`` share the gate layout), hence ``from_nmt``.
    """

    def __init__(self, src_vocab: int, tgt_vocab: int, embed: int, hidden: int, maxout: int, dropout: float = 0.0,
                 reverse_source: bool = False):
        super().__init__()
        self.maxout_size = maxout
        self.reverse_source = reverse_source  # read each source backwards (ModelConfig.reverse_source)
        self.src_embed = nn.Embedding(src_vocab, embed, padding_idx=PAD)
        self.encoder = nn.GRU(embed, hidden, batch_first=True)
        self.summary = nn.Linear(hidden, hidden)  # c = tanh(V h_N)
        self.tgt_embed = nn.Embedding(tgt_vocab, embed, padding_idx=PAD)
        self.decoder_init = nn.Linear(hidden, hidden)  # h'_0 = tanh(V' c)
        self.decoder_cell = nn.GRUCell(embed + hidden, hidden)
        self.deep_output = nn.Linear(hidden + embed + hidden, 2 * maxout)
        self.output = nn.Linear(maxout, tgt_vocab)
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def from_nmt(cls, model) -> "ReferenceSeq2Seq":
        """A reference model holding a copy of ``model``'s weights (same device and dtype)."""
        cfg = model.config
        if cfg.cell != "cudnn" or cfg.output_rank:
            raise ValueError("the reference mirrors model.cell=cudnn with a full-rank output layer (output_rank=0)")
        ref = cls(model.src_vocab_size, model.tgt_vocab_size, cfg.embed_size, cfg.hidden_size,
                  cfg.maxout_size, cfg.dropout, getattr(cfg, "reverse_source", False))
        ref.load_state_dict({name: model.state_dict()[src] for name, src in cls.nmt_names().items()})
        first = next(model.parameters())
        return ref.to(device=first.device, dtype=first.dtype)

    @staticmethod
    def nmt_names() -> dict[str, str]:
        """Reference parameter name -> the ``nmt.model`` parameter it copies."""
        names = {
            "src_embed.weight": "src_embed.weight",
            "tgt_embed.weight": "tgt_embed.weight",
            "summary.weight": "summary.weight", "summary.bias": "summary.bias",
            "decoder_init.weight": "decoder_init.weight", "decoder_init.bias": "decoder_init.bias",
            "deep_output.weight": "deep_output.weight", "deep_output.bias": "deep_output.bias",
            "output.weight": "output.weight", "output.bias": "output.bias",
        }
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            names[f"encoder.{kind}_l0"] = f"encoder.rnn.{kind}_l0"
            names[f"decoder_cell.{kind}"] = f"decoder.rnn.{kind}_l0"
        return names

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> torch.Tensor:
        """src (B, S), src_lengths (B,) -> c (B, hidden), from the state after each last real token."""
        if self.reverse_source:
            src = torch.stack([torch.cat([row[:n].flip(0), row[n:]]) for row, n in zip(src, src_lengths.tolist())])
        embedded = self.dropout(self.src_embed(src))
        packed = pack_padded_sequence(embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, last = self.encoder(packed)
        return torch.tanh(self.summary(last[0]))

    def init_hidden(self, summary: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder_init(summary))

    def step(self, prev_tokens: torch.Tensor, hidden: torch.Tensor, summary: torch.Tensor):
        """One decoder step: prev_tokens (B,), hidden (B, H), summary (B, H) -> logits (B, V), hidden."""
        embedded = self.dropout(self.tgt_embed(prev_tokens))
        hidden = self.decoder_cell(torch.cat([embedded, summary], dim=1), hidden)
        pre_maxout = self.deep_output(torch.cat([hidden, embedded, summary], dim=1))
        maxout = pre_maxout.view(-1, self.maxout_size, 2).max(dim=2).values
        return self.output(self.dropout(maxout)), hidden

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V), one decoder step per target position."""
        summary = self.encode(src, src_lengths)
        hidden = self.init_hidden(summary)
        outputs = []
        for t in range(tgt_in.size(1)):
            logits, hidden = self.step(tgt_in[:, t], hidden, summary)
            outputs.append(logits)
        return torch.stack(outputs, dim=1)


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
