"""The model registry, and the contract that search and training rely on.

A model is chosen by ``model.arch``. Each architecture is one ``nn.Module`` class that
satisfies ``Seq2SeqModel`` below and is registered under its name; search, training
and the commands only ever call these methods, so a second architecture joins by
adding its class, its module to ``BUILTIN_MODULES`` (so that the commands import it),
and a ``conf/model`` file with ``arch: <name>``.

    @register_architecture("my_model")
    class MyModel(nn.Module):
        def __init__(self, config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int): ...
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

import torch

from nmt.config import ModelConfig, from_dict
from nmt.errors import check_choice

# Modules whose import registers the architectures that ship with nmt.
BUILTIN_MODULES = ("nmt.model", "nmt.rnnsearch")

ARCHITECTURES: dict[str, type] = {}

# The methods of Seq2SeqModel a class must have to be registered.
REQUIRED_METHODS = (
    "encode",
    "init_state",
    "decode_step",
    "reorder_encoder_out",
    "reorder_state",
    "forward",
    "loss",
    "model_config",
)


@runtime_checkable
class Seq2SeqModel(Protocol):
    """What an architecture provides. Shapes: B sentences (or sentences x beams), S source
    length, T target length, V target vocabulary. ``EncoderOut`` and ``State`` are the
    model's own types: search passes them back without looking inside.

    Optional: ``for_decoding(encoder_out) -> encoder_out``, work done once per sentence
    before the search's first step (search calls it when the model has it); and
    ``check_config(config)`` (a classmethod), which refuses settings the class cannot build;
    ``phrase_vectors(src, src_lengths) -> (B, D)``, one vector per source (nmt-embed); and
    ``alignments(src, src_lengths, tgt_in) -> (B, T, S)`` for a model that attends.
    """

    src_vocab_size: int
    tgt_vocab_size: int

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Any:
        """src (B, S) ids ending in EOS, src_lengths (B,) -> the encoder's output."""

    def init_state(self, encoder_out: Any) -> Any:
        """The decoder's state before the first target token."""

    def decode_step(self, prev_tokens: torch.Tensor, state: Any, encoder_out: Any) -> tuple[torch.Tensor, Any]:
        """prev_tokens (B,) -> next-token logits (B, V) and the new state."""

    def reorder_encoder_out(self, encoder_out: Any, index: torch.Tensor) -> Any:
        """Rows ``index`` of the encoder's output (beam expansion, finished sentences leaving)."""

    def reorder_state(self, state: Any, index: torch.Tensor) -> Any:
        """Rows ``index`` of the decoder state (the beams kept, finished sentences leaving)."""

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for ``tgt_in`` (BOS + target)."""

    def loss(
        self,
        src: torch.Tensor,
        src_lengths: torch.Tensor,
        tgt_in: torch.Tensor,
        tgt_out: torch.Tensor,
        label_smoothing: float = 0.0,
        n_tokens: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy over the real (non-PAD) positions of ``tgt_out``, and their count."""

    def model_config(self) -> dict:
        """Everything needed to rebuild the model, as plain data: ``{"config": asdict(ModelConfig),
        "src_vocab_size": ..., "tgt_vocab_size": ...}`` (stored in checkpoints)."""


def register_architecture(name: str):
    """Class decorator: make ``model.arch=name`` build this class."""

    def register(cls: type) -> type:
        missing = [method for method in REQUIRED_METHODS if not callable(getattr(cls, method, None))]
        if missing:
            raise TypeError(
                f"{cls.__name__} cannot be model.arch={name}: it lacks {', '.join(missing)} "
                "(see nmt.architectures.Seq2SeqModel)"
            )
        ARCHITECTURES[name] = cls
        return cls

    return register


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def architecture(config: ModelConfig) -> type:
    """The class of ``config.arch``, after checking that it can build ``config``."""
    _load_builtins()
    check_choice("model.arch", config.arch, ARCHITECTURES)
    cls = ARCHITECTURES[config.arch]
    if hasattr(cls, "check_config"):
        cls.check_config(config)
    return cls


def build_model(config: ModelConfig | dict, src_vocab_size: int, tgt_vocab_size: int) -> torch.nn.Module:
    """A freshly initialized model of ``config.arch`` (a dict: a checkpoint's saved config)."""
    if isinstance(config, dict):
        config = from_dict(ModelConfig, config)
    return architecture(config)(config, src_vocab_size, tgt_vocab_size)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
