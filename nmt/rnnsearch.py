"""RNNsearch: the attention model of Bahdanau, Cho & Bengio (2015), Appendix A.

    encoder    →h_j = GRU(E x_j, →h_{j-1}),  ←h_j = GRU(E x_j, ←h_{j+1})   both directions
               h_j = [→h_j; ←h_j]                                         the annotations
    start      s_0 = tanh(W_s ←h_1)
    alignment  e_ij = v_aᵀ tanh(W_a s_{i-1} + U_a h_j)                    U_a h_j once per sentence
               α_ij = softmax_j(e_ij) over the real source tokens          (padding gets exactly 0)
               c_i = Σ_j α_ij h_j
    output     t̃_i = U_o s_{i-1} + V_o E y_{i-1} + C_o c_i                (2 x maxout_size units)
               t_i = max over pools of 2 of t̃_i;  p(y_i | y_<i, x) = softmax(W_o t_i)
    decoder    s_i = GRU([E y_{i-1}; c_i], s_{i-1})                        c_i in both gates and the candidate

As in the paper the output layer reads s_{i-1}, the state *before* y_i is predicted
(Luong et al. and most toolkits use s_i; this follows Appendix A). ``model.cell`` picks
the GRU equations as for the Cho model (``cudnn``: PyTorch's fused GRU, reset gate
after U h; ``paper``: before it); ``model.attention_size`` is the alignment model's
size (0: ``model.hidden_size``), ``model.hidden_size`` the units per direction.

Teacher forcing cannot run the decoder in one fused call (c_i depends on s_{i-1}), so
``decoder_features`` keeps the loop lean: the target embeddings' projections for all
steps in one matrix product before it, only the recurrence and the attention inside it
(no host synchronization), and the deep output, maxout and softmax over all real
positions at once after it (``loss``). Registered as ``model.arch=rnnsearch``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nmt.architectures import register_architecture
from nmt.config import ModelConfig
from nmt.errors import SettingError
from nmt.model import hidden_of, init_as_in_paper, output_layer, recurrent_layer, reorder
from nmt.tokens import PAD


class Annotations(NamedTuple):
    """What the decoder attends over, per sentence (B sentences, S source positions)."""

    annotations: torch.Tensor  # h_j = [→h_j; ←h_j]: (B, S, 2 * hidden)
    keys: torch.Tensor  # U_a h_j: (B, S, attention)
    mask: torch.Tensor  # (B, S), True on real tokens
    start: torch.Tensor  # s_0 = tanh(W_s ←h_1): (B, hidden); an LSTM decoder's s_0 and cell: (B, 2 * hidden)

    def select(self, index: torch.Tensor) -> "Annotations":
        return Annotations(*(field.index_select(0, index) for field in self))


def _reversed_positions(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """(B, S) index that reverses each row's first ``length`` positions and keeps its padding in place."""
    positions = torch.arange(length, device=lengths.device).unsqueeze(0)
    lengths = lengths.unsqueeze(1)
    return torch.where(positions < lengths, lengths - 1 - positions, positions)


def _gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (B, S, D) reordered along S by index (B, S)."""
    return values.gather(1, index.unsqueeze(-1).expand_as(values))


@register_architecture("rnnsearch")
class RNNSearch(nn.Module):
    """Bahdanau et al. (2015)'s RNNsearch. Shapes: B batch, S source, T target length."""

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        recurrent_layer(config)
        if config.reverse_source:
            raise SettingError(
                "model.reverse_source=true: the attention model reads the source in both directions already; leave it out"
            )

    def __init__(self, config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        self.check_config(config)
        self.config = config
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        emb, hidden, maxout = config.embed_size, config.hidden_size, config.maxout_size
        attention = config.attention_size or hidden
        gru = recurrent_layer(config)  # a GRU, or with model.rnn=lstm an LSTM
        starts = 2 if config.rnn == "lstm" else 1  # an LSTM decoder starts from s_0 and its cell

        self.src_embed = nn.Embedding(src_vocab_size, emb, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, emb, padding_idx=PAD)
        self.forward_encoder, self.backward_encoder = gru(emb, hidden), gru(emb, hidden)
        self.start = nn.Linear(hidden, starts * hidden)  # W_s
        self.keys = nn.Linear(2 * hidden, attention)  # U_a (and the alignment model's bias)
        self.query = nn.Linear(hidden, attention, bias=False)  # W_a
        self.energy = nn.Linear(attention, 1, bias=False)  # v_a
        self.decoder = gru(emb + 2 * hidden, hidden)  # input [E y_{i-1}; c_i]
        self.deep_output = nn.Linear(hidden + emb + 2 * hidden, 2 * maxout)  # [U_o V_o C_o] over [s; E y; c]
        self.output = output_layer(maxout, config.output_rank, tgt_vocab_size)
        self.dropout = nn.Dropout(config.dropout)
        if config.paper_init:
            self.reset_parameters_as_in_paper()

    @torch.no_grad()
    def reset_parameters_as_in_paper(self) -> None:
        """Appendix B.1: recurrent matrices orthogonal, W_a and U_a N(0, 0.001²), v_a and the
        biases zero, every other weight N(0, 0.01²)."""
        init_as_in_paper(self, [self.forward_encoder, self.backward_encoder, self.decoder], [self.src_embed, self.tgt_embed])
        self.query.weight.normal_(0.0, 0.001)
        self.keys.weight.normal_(0.0, 0.001)
        self.energy.weight.zero_()

    # ----------------------------------------------------------------- encoder

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Annotations:
        """src: (B, S) ids, src_lengths: (B,) -> the annotations, their keys, mask and s_0.

        The backward GRU reads each sentence reversed from its last real token (the
        padding stays behind it), so it never starts on padding; its states are put
        back in source order. Annotations past a sentence's end are masked out."""
        src_lengths = src_lengths.to(src.device, non_blocking=True)
        embedded = self.dropout(self.src_embed(src))
        start = embedded.new_zeros(src.size(0), self.config.hidden_size)
        forward_states, _ = self.forward_encoder(embedded, start, src_lengths)
        reverse = _reversed_positions(src_lengths, src.size(1))
        backward_states, _ = self.backward_encoder(_gather_rows(embedded, reverse), start, src_lengths)
        backward_states = _gather_rows(backward_states, reverse)  # the same index undoes the reversal
        annotations = torch.cat([forward_states, backward_states], dim=-1)
        mask = torch.arange(src.size(1), device=src.device).unsqueeze(0) < src_lengths.unsqueeze(1)
        s0 = torch.tanh(self.start(backward_states[:, 0]))  # ←h_1: the backward state at the first token
        return Annotations(annotations, self.keys(annotations), mask, s0)

    def init_state(self, encoder_out: Annotations):
        """s_0 = tanh(W_s ←h_1) (B, hidden); an LSTM's (s_0, its cell) are the two halves of it."""
        start = encoder_out.start
        return tuple(start.chunk(2, dim=-1)) if self.config.rnn == "lstm" else start

    def phrase_vectors(self, src: torch.Tensor, src_lengths: torch.Tensor) -> torch.Tensor:
        """A phrase's representation, (B, 2 * hidden): the mean of its annotations over its real
        tokens (EOS included). RNNsearch has no single summary vector; this is the usual stand-in."""
        encoder_out = self.encode(src, src_lengths)
        mask = encoder_out.mask.unsqueeze(-1).to(encoder_out.annotations.dtype)
        return (encoder_out.annotations * mask).sum(1) / mask.sum(1)

    def reorder_encoder_out(self, encoder_out: Annotations, index: torch.Tensor) -> Annotations:
        return encoder_out.select(index)

    def reorder_state(self, state, index: torch.Tensor):
        return reorder(state, index)

    # ----------------------------------------------------------------- attention and one step

    def attend(self, state: torch.Tensor, encoder_out: Annotations) -> tuple[torch.Tensor, torch.Tensor]:
        """s_{i-1} (B, hidden) -> context c_i (B, 2 * hidden) and weights α_i (B, S), 0 on padding."""
        energies = self.energy(torch.tanh(encoder_out.keys + self.query(state).unsqueeze(1))).squeeze(-1)
        weights = torch.softmax(energies.float().masked_fill(~encoder_out.mask, float("-inf")), dim=-1)
        weights = weights.to(encoder_out.annotations.dtype)
        return torch.bmm(weights.unsqueeze(1), encoder_out.annotations).squeeze(1), weights

    def _logits(self, states, prev_embedded, contexts) -> torch.Tensor:
        """Deep output, maxout and the output layer over [s_{i-1}; E y_{i-1}; c_i] -> (..., vocab)."""
        pre_maxout = self.deep_output(torch.cat([states, prev_embedded, contexts], dim=-1))
        maxout = pre_maxout.unflatten(-1, (-1, 2)).amax(dim=-1)  # pools of 2 neighbouring units
        return self.output(self.dropout(maxout))

    def decode_step(self, prev_tokens: torch.Tensor, state, encoder_out: Annotations):
        """prev_tokens y_{i-1} (B,), state s_{i-1} (B, hidden) (an LSTM's pair) -> logits of y_i (B, V) and s_i."""
        prev_embedded = self.dropout(self.tgt_embed(prev_tokens))
        context, _ = self.attend(hidden_of(state), encoder_out)
        logits = self._logits(hidden_of(state), prev_embedded, context)
        return logits, self.decoder.step(torch.cat([prev_embedded, context], dim=-1), state)

    # ----------------------------------------------------------------- teacher forcing

    def decoder_features(self, tgt_in: torch.Tensor, encoder_out: Annotations):
        """The teacher-forced decoder: tgt_in (B, T) from BOS -> the output layer's inputs
        (s_{i-1} (B, T, hidden), E y_{i-1} (B, T, emb), c_i (B, T, 2 * hidden)) and α (B, T, S)."""
        prev_embedded = self.dropout(self.tgt_embed(tgt_in))
        weight, bias = self.decoder.input_projection()
        split = self.config.embed_size
        # Every step's embedding terms at once; unbound, not indexed in the loop: the backward
        # of each x[:, i] would write a zero tensor of all the steps.
        embedded_terms = F.linear(prev_embedded, weight[:, :split], bias).unbind(1)
        context_weight = weight[:, split:]
        state, states, contexts, alignments = self.init_state(encoder_out), [], [], []
        for embedded_term in embedded_terms:
            context, alpha = self.attend(hidden_of(state), encoder_out)
            states.append(hidden_of(state))
            contexts.append(context)
            alignments.append(alpha)
            state = self.decoder.cell(embedded_term + context @ context_weight.t(), state)
        return (torch.stack(states, 1), prev_embedded, torch.stack(contexts, 1)), torch.stack(alignments, 1)

    def forward(self, src, src_lengths, tgt_in) -> torch.Tensor:
        """Teacher-forced logits: (B, T, V)."""
        features, _ = self.decoder_features(tgt_in, self.encode(src, src_lengths))
        return self._logits(*features)

    @torch.no_grad()
    def alignments(self, src, src_lengths, tgt_in) -> torch.Tensor:
        """α (B, T, S): the weights each target position i (predicting tgt_in's next token) gives each source token."""
        return self.decoder_features(tgt_in, self.encode(src, src_lengths))[1]

    def loss(self, src, src_lengths, tgt_in, tgt_out, label_smoothing: float = 0.0, n_tokens: int | None = None):
        """Summed cross-entropy over the real target tokens and their count; the output
        layer runs over those positions only (see the Cho model's ``loss``)."""
        features, _ = self.decoder_features(tgt_in, self.encode(src, src_lengths))
        real = (tgt_out != PAD).flatten()
        positions = real.nonzero().squeeze(1) if n_tokens is None else real.nonzero_static(size=n_tokens).squeeze(1)
        logits = self._logits(*(f.flatten(0, 1).index_select(0, positions) for f in features))
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        targets = tgt_out.flatten().index_select(0, positions)
        return F.cross_entropy(logits, targets, reduction="sum", label_smoothing=label_smoothing), real.sum()

    def model_config(self) -> dict:
        return {"config": asdict(self.config), "src_vocab_size": self.src_vocab_size, "tgt_vocab_size": self.tgt_vocab_size}
