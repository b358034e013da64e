"""More BLEU from the runs a user already has: checkpoint averaging and ensembles.

``average_checkpoints`` averages the weights of checkpoints of one model (same
architecture, sizes and tokenizer) into a normal checkpoint. ``Ensemble`` is several
trained models as one model of the ``nmt.architectures`` contract, so search, scoring
and the commands use it unchanged: at each step it predicts the log of the members'
mean probability, log((1/M) * sum_m p_m(y | ...)) -- the mixture of the members'
distributions, as fairseq's and Marian's ensembles do (Marian's default is the mean of
log-probabilities; a mixture never gives a token that one member rules out a score of
-inf). The members may be of different architectures; they must share the tokenizer,
and so the target vocabulary. An ensemble's alignments are the mean of its attention
members' weights (fairseq's ensembles average attention the same way).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from nmt.checkpoint import AVERAGE_ORIGIN, Checkpoint, pack_checkpoint, read_checkpoint, resolve_checkpoint, save_checkpoint
from nmt.errors import CheckpointError
from nmt.tokens import PAD


def same_tokenizer_problem(a: Checkpoint, b: Checkpoint) -> str | None:
    """How the tokenizers (and so the vocabularies) of two checkpoints differ, or None."""
    (a_src, a_tgt), (b_src, b_tgt) = a.tokenizer_identity(), b.tokenizer_identity()
    if a.tgt_vocab_size != b.tgt_vocab_size or a_tgt != b_tgt:
        sizes = (
            f"{a.tgt_vocab_size} and {b.tgt_vocab_size} subwords"
            if a.tgt_vocab_size != b.tgt_vocab_size
            else f"{a.tgt_vocab_size} subwords each, but other ones"
        )
        return f"target vocabularies differ ({sizes}); ensemble models trained with one tokenizer"
    if a_src != b_src:
        return "source tokenizers differ (trained on another corpus or with other data.tokenizer settings)"
    return None


def check_ensemble_members(checkpoints: list[Checkpoint]) -> None:
    """Refuse members that cannot decode together, naming the two files that differ."""
    first = checkpoints[0]
    for other in checkpoints[1:]:
        problem = same_tokenizer_problem(first, other)
        if problem:
            raise CheckpointError(f"{first.path} and {other.path} cannot be an ensemble: {problem}")


def average_checkpoints(paths: list[str | Path]) -> Checkpoint:
    """The checkpoint whose weights are the mean of these checkpoints' weights (summed in
    float64, cast back to each tensor's type); its settings, tokenizer and step are those
    of the last path. All must be of one architecture, size and tokenizer; one
    checkpoint is held at a time besides the sums."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    first, sums, last_state = None, {}, {}
    for path in paths:
        checkpoint = read_checkpoint(resolve_checkpoint(path))
        if first is None:
            first = checkpoint
        else:
            problem = _model_difference(first, checkpoint) or same_tokenizer_problem(first, checkpoint)
            if problem:
                raise CheckpointError(f"{first.path} and {checkpoint.path} cannot be averaged: {problem}")
        for name, tensor in checkpoint.model_state.items():
            if tensor.is_floating_point():
                sums[name] = sums[name] + tensor.double() if name in sums else tensor.double()
        last, last_state = checkpoint, checkpoint.model_state
        checkpoint.model_state, checkpoint.training = {}, None  # the sums hold what is needed
    last.model_state = {
        name: (sums[name] / len(paths)).to(tensor.dtype) if name in sums else tensor for name, tensor in last_state.items()
    }
    return last


def save_average(paths: list[str | Path], output: Path) -> Path:
    """Average ``paths`` into the checkpoint ``output``, written atomically like every checkpoint."""
    averaged = average_checkpoints(paths)
    state = pack_checkpoint(
        averaged.build_model(),
        averaged.src_proto,
        averaged.tgt_proto,
        averaged.data_config,
        averaged.step or 0,
        averaged.epoch or 0,
        None,
        origin=AVERAGE_ORIGIN,
    )
    save_checkpoint(state, Path(output))
    return Path(output)


# Model settings that shape training but not the trained network: checkpoints that differ
# only in these average fine (the output keeps the last one's).
TRAINING_ONLY_SETTINGS = ("name", "dropout", "paper_init")


def _model_difference(a: Checkpoint, b: Checkpoint) -> str | None:
    """How the models of two checkpoints differ (architecture, sizes, vocabularies), or None."""
    left = {**asdict(a.model_config), "src_vocab_size": a.src_vocab_size, "tgt_vocab_size": a.tgt_vocab_size}
    right = {**asdict(b.model_config), "src_vocab_size": b.src_vocab_size, "tgt_vocab_size": b.tgt_vocab_size}
    for key in TRAINING_ONLY_SETTINGS:  # how the weights were trained, not what they are
        left.pop(key, None), right.pop(key, None)
    differences = [f"{key} {left[key]} and {right[key]}" for key in left if left[key] != right.get(key)]
    return f"the models differ ({', '.join(differences)})" if differences else None


class Ensemble(nn.Module):
    """Trained models as one model: the contract of ``nmt.architectures.Seq2SeqModel``.

    ``decode_step`` and ``forward`` return the log of the members' mean probability
    (already normalized, so the search's log-softmax leaves it as it is); an ensemble of
    one model returns that model's own logits, so its outputs and scores are exactly the
    model's. Encoder outputs and decoder states are tuples, one entry per member.
    """

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        if not models:
            raise CheckpointError("an ensemble needs at least one model")
        sizes = {model.tgt_vocab_size for model in models}
        if len(sizes) > 1:
            raise CheckpointError(f"an ensemble's models must share the target vocabulary; sizes {sorted(sizes)}")
        self.members = nn.ModuleList(models)
        self.src_vocab_size, self.tgt_vocab_size = models[0].src_vocab_size, models[0].tgt_vocab_size

    def _combine(self, logits: list[torch.Tensor]) -> torch.Tensor:
        if len(logits) == 1:
            return logits[0]
        log_probs = torch.stack([torch.log_softmax(x.float(), dim=-1) for x in logits])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(logits))

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple:
        return tuple(model.encode(src, src_lengths) for model in self.members)

    def for_decoding(self, encoder_out: tuple) -> tuple:
        return tuple(
            model.for_decoding(out) if hasattr(model, "for_decoding") else out for model, out in zip(self.members, encoder_out)
        )

    def init_state(self, encoder_out: tuple) -> tuple:
        return tuple(model.init_state(out) for model, out in zip(self.members, encoder_out))

    def decode_step(self, prev_tokens: torch.Tensor, state: tuple, encoder_out: tuple):
        steps = [model.decode_step(prev_tokens, s, out) for model, s, out in zip(self.members, state, encoder_out)]
        return self._combine([logits for logits, _ in steps]), tuple(new for _, new in steps)

    def reorder_encoder_out(self, encoder_out: tuple, index: torch.Tensor) -> tuple:
        return tuple(model.reorder_encoder_out(out, index) for model, out in zip(self.members, encoder_out))

    def reorder_state(self, state: tuple, index: torch.Tensor) -> tuple:
        return tuple(model.reorder_state(s, index) for model, s in zip(self.members, state))

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self._combine([model(src, src_lengths, tgt_in) for model in self.members])

    def attending_members(self) -> list[nn.Module]:
        return [model for model in self.members if callable(getattr(model, "alignments", None))]

    def alignments(self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """The mean of the attention members' teacher-forced weights, (B, T, S); each row still sums to 1."""
        members = self.attending_members()
        if not members:
            raise CheckpointError("no model of this ensemble attends over the source, so it has no alignments")
        return torch.stack([model.alignments(src, src_lengths, tgt_in).float() for model in members]).mean(0)

    def loss(self, src, src_lengths, tgt_in, tgt_out, label_smoothing: float = 0.0, n_tokens: int | None = None):
        """Summed cross-entropy of the ensemble's distribution over the real positions (evaluation only)."""
        log_probs = torch.log_softmax(self(src, src_lengths, tgt_in).float(), dim=-1)
        real = tgt_out != PAD
        nll = -log_probs.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)
        return nll.masked_fill(~real, 0.0).sum(), real.sum()

    def model_config(self) -> dict:
        raise CheckpointError(
            "an ensemble is not saved as one checkpoint: give its members' checkpoints, "
            "or average checkpoints of one run with nmt-average"
        )
