"""Reduced precision for decoding on a CPU, applied once when a model is loaded
(``precision=`` of nmt-translate, nmt-evaluate, nmt-score, nmt-embed, nmt-serve and ``nmt.load``).

- ``bfloat16``: the weights are cast to bfloat16 and the search runs under bf16 autocast, so
  matrix products use the CPU's AMX / AVX-512 BF16 units (``nmt.runtime.resolve_precision``
  falls back to float32 on CPUs without them); log-probabilities and attention weights are
  still computed in float32. On CUDA, bfloat16 is autocast over float32 weights, as in training.
- ``int8``: the model's linear layers (the output layer, the deep output, the attention
  model's projections) are quantized with torchao (int8 weights, activations quantized per
  row on the fly); the recurrent units keep float32 (their weights are read directly, not
  through a layer). CPU only. docs/translating.md has the measurements behind the choice.
"""

from __future__ import annotations

import logging

import torch
from torch import nn


def reduce_precision(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """``model`` (one architecture's, in eval mode) in ``precision`` for decoding on ``device``."""
    if precision == "bfloat16" and device.type == "cpu":
        return model.to(torch.bfloat16)
    if precision == "int8":
        # torchao reports the CUDA kernels a CPU build cannot load, one line each: nothing to act on here.
        logging.getLogger("torchao").setLevel(logging.ERROR)
        # ... and torch warns torchao about a deprecated registration of its own enums: not the user's concern.
        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        skip = set(getattr(model, "weights_read_directly", ()))
        quantize_(model, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda m, name: _quantizable(m, name, skip))
    return model


def _quantizable(module: nn.Module, name: str, skip: set[str]) -> bool:
    """A linear layer the model only calls (one whose weight it slices keeps float32)."""
    recurrent = name.endswith(("input_proj", "gate_proj", "candidate_proj"))  # model.cell=paper's GRU layers
    return isinstance(module, nn.Linear) and name not in skip and not recurrent
