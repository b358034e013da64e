"""The RNN Encoder–Decoder of Cho et al. (2014), Appendix A.

    encoder    h_t = GRU(e(x_t), h_{t-1})                  over the source
    summary    c = tanh(V h_N)                             one vector per sentence
    decoder    h'_0 = tanh(V' c)
               h'_t = GRU([e(y_{t-1}); c], h'_{t-1})       c enters both gates and the candidate
    output     s_t = O_h h'_t + O_y e(y_{t-1}) + O_c c     (2 x maxout_size units)
               m_t = max over pools of 2 of s_t            (maxout, maxout_size units)
               p(y_t | y_<t, x) = softmax(G m_t)           G optionally of low rank (G_l G_r)

Training feeds the decoder the whole teacher-forced input ``[e(y_{t-1}); c]`` at
once, so with ``cell="cudnn"`` it is a single fused GRU call. Search calls
``decode_step`` one token at a time; a test checks that both give the same logits.
Since c is the same at every step, ``for_decoding`` computes its terms (in the GRU's
input projection and in the deep output) once per sentence, not once per token.

Registered as ``model.arch=cho2014``; ``nmt.architectures`` has the contract every
architecture meets (encode, init_state, decode_step, reorder hooks, loss).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from nmt.architectures import register_architecture
from nmt.config import ModelConfig
from nmt.errors import SettingError, check_choice
from nmt.tokens import PAD


def reverse_padded(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first ``length`` tokens, leaving its padding at the end."""
    positions = torch.arange(tokens.size(1), device=tokens.device).unsqueeze(0)
    lengths = lengths.to(tokens.device).unsqueeze(1)
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)
    return tokens.gather(1, index)


class EncoderOutput(NamedTuple):
    """What this model's decoder may look at: the summary c (Cho et al.'s decoder sees
    nothing else), and the encoder states with their mask, for inspection."""

    summary: torch.Tensor  # c: (batch, hidden)
    states: torch.Tensor  # h_1..h_N: (batch, src_len, hidden)
    mask: torch.Tensor  # (batch, src_len), True on real tokens
    # Filled by RNNEncoderDecoder.for_decoding: the parts of each decoder step that
    # depend on c alone, W_c c + b (batch, 3 * hidden) and O_c c + b (batch, 2 * maxout).
    gate_terms: torch.Tensor | None = None
    output_terms: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> "EncoderOutput":
        """Rows ``index`` of every field (beam expansion, dropping finished sentences)."""
        return EncoderOutput(*(None if field is None else field.index_select(0, index) for field in self))


class PaperGRU(nn.Module):
    """A GRU layer with the paper's equations (Cho et al. 2014, Sec. 2.3):

        r = σ(W_r x + U_r h),  z = σ(W_z x + U_z h)
        h~ = tanh(W x + U (r ⊙ h))          <- reset applied *before* U
        h_new = z ⊙ h + (1 - z) ⊙ h~

    PyTorch's fused GRU computes ``tanh(W x + r ⊙ (U h + b))`` instead, with the
    reset gate after the product. This one is a Python loop over time: slower,
    but exactly the paper's model.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.input_proj = nn.Linear(input_size, 3 * hidden_size)  # W_r, W_z, W (+ biases)
        self.gate_proj = nn.Linear(hidden_size, 2 * hidden_size, bias=False)  # U_r, U_z
        self.candidate_proj = nn.Linear(hidden_size, hidden_size, bias=False)  # U

    def recurrent_matrices(self) -> list[torch.Tensor]:
        return [*self.gate_proj.weight.chunk(2, 0), self.candidate_proj.weight]

    def input_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) of the input's projection ``W x + b``, which ``cell`` takes precomputed."""
        return self.input_proj.weight, self.input_proj.bias

    def cell(self, projected_input: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """One step from the projected input ``W x + b``."""
        x_reset, x_update, x_candidate = projected_input.chunk(3, dim=-1)
        h_reset, h_update = self.gate_proj(hidden).chunk(2, dim=-1)
        reset = torch.sigmoid(x_reset + h_reset)
        update = torch.sigmoid(x_update + h_update)
        candidate = torch.tanh(x_candidate + self.candidate_proj(reset * hidden))
        return update * hidden + (1 - update) * candidate

    def forward(self, inputs, hidden, lengths=None):
        """inputs: (batch, time, input); hidden: (batch, hidden) -> (outputs, last real state)."""
        projected = self.input_proj(inputs)  # all time steps in one matrix product
        outputs = []
        for t in range(inputs.size(1)):
            new_hidden = self.cell(projected[:, t], hidden)
            if lengths is not None:  # past a sentence's end its state stays put
                alive = (t < lengths).unsqueeze(1).to(new_hidden.device)
                new_hidden = torch.where(alive, new_hidden, hidden)
            hidden = new_hidden
            outputs.append(hidden)
        return torch.stack(outputs, dim=1), hidden

    def step(self, inputs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return self.cell(self.input_proj(inputs), hidden)


def last_real_state(outputs: torch.Tensor, lengths: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Each sentence's output at its last real token, (B, hidden); ``start`` for an empty one.

    A forward RNN is causal: its output at a sentence's last real token is the state after
    that token, whatever padding follows. Gathering it needs no packing, whose sort indices
    would travel to the GPU with a blocking copy every batch."""
    lengths = lengths.to(outputs.device, non_blocking=True)
    last = outputs[torch.arange(outputs.size(0), device=outputs.device), (lengths - 1).clamp(min=0)]
    return torch.where((lengths > 0).unsqueeze(1), last, start)


class CudnnGRU(nn.Module):
    """PyTorch's fused GRU (cuDNN on a GPU) behind the same interface as PaperGRU."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.rnn = nn.GRU(input_size, hidden_size, batch_first=True)

    def recurrent_matrices(self) -> list[torch.Tensor]:
        return list(self.rnn.weight_hh_l0.chunk(3, 0))

    def input_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) of the input's projection ``W x + b``, which ``cell`` takes precomputed."""
        return self.rnn.weight_ih_l0, self.rnn.bias_ih_l0

    def cell(self, projected_input: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """One step from the projected input ``W x + b``, in nn.GRU's equations
        (reset gate applied to ``U h + b``) and with its weights."""
        x_reset, x_update, x_candidate = projected_input.chunk(3, dim=-1)
        h_reset, h_update, h_candidate = F.linear(hidden, self.rnn.weight_hh_l0, self.rnn.bias_hh_l0).chunk(3, dim=-1)
        reset = torch.sigmoid(x_reset + h_reset)
        update = torch.sigmoid(x_update + h_update)
        candidate = torch.tanh(x_candidate + reset * h_candidate)
        return candidate + update * (hidden - candidate)  # = z h + (1 - z) h~

    def forward(self, inputs, hidden, lengths=None):
        outputs, last = self.rnn(inputs, hidden.unsqueeze(0))
        if lengths is None:
            return outputs, last.squeeze(0)
        return outputs, last_real_state(outputs, lengths, hidden)

    def step(self, inputs: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        _, new_hidden = self.rnn(inputs.unsqueeze(1), hidden.unsqueeze(0))
        return new_hidden.squeeze(0)


class CudnnLSTM(nn.Module):
    """PyTorch's fused LSTM (cuDNN on a GPU) behind the GRUs' interface (``model.rnn=lstm``). Its
    state is the pair (h, c); ``forward`` takes a pair or h alone (c then starts at zero) and,
    as the GRUs do, returns the outputs h_1..h_T and h at each sentence's last real token."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.rnn = nn.LSTM(input_size, hidden_size, batch_first=True)

    def recurrent_matrices(self) -> list[torch.Tensor]:
        return list(self.rnn.weight_hh_l0.chunk(4, 0))

    def input_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rnn.weight_ih_l0, self.rnn.bias_ih_l0

    def cell(self, projected_input: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        """One step from the projected input ``W x + b``, in nn.LSTM's equations and weights."""
        hidden, memory = state
        gates = projected_input + F.linear(hidden, self.rnn.weight_hh_l0, self.rnn.bias_hh_l0)
        input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=-1)
        memory = torch.sigmoid(forget_gate) * memory + torch.sigmoid(input_gate) * torch.tanh(candidate)
        return torch.sigmoid(output_gate) * torch.tanh(memory), memory

    def forward(self, inputs, state, lengths=None):
        hidden, memory = state if isinstance(state, tuple) else (state, torch.zeros_like(state))
        outputs, _ = self.rnn(inputs, (hidden.unsqueeze(0), memory.unsqueeze(0)))
        if lengths is None:
            return outputs, outputs[:, -1]
        return outputs, last_real_state(outputs, lengths, hidden)

    def step(self, inputs: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        _, (hidden, memory) = self.rnn(inputs.unsqueeze(1), (state[0].unsqueeze(0), state[1].unsqueeze(0)))
        return hidden.squeeze(0), memory.squeeze(0)


CELLS = {"cudnn": CudnnGRU, "paper": PaperGRU}
RNNS = ("gru", "lstm")  # model.rnn


def recurrent_layer(config: ModelConfig):
    """The recurrent layer class of ``config``: a GRU of ``model.cell``'s equations, or an LSTM."""
    check_choice("model.rnn", config.rnn, RNNS)
    check_choice("model.cell", config.cell, CELLS)
    if config.rnn == "lstm":
        if config.cell != "cudnn":
            raise SettingError(
                f"model.cell={config.cell}: the paper's GRU equations; an LSTM (model.rnn=lstm) has its own: "
                "leave model.cell out (cudnn)"
            )
        return CudnnLSTM
    return CELLS[config.cell]


def hidden_of(state):
    """The hidden state h of a decoder state: the state itself (GRU), or h of (h, c) (LSTM)."""
    return state[0] if isinstance(state, tuple) else state


def reorder(state, index: torch.Tensor):
    """Rows ``index`` of a state, a tensor or an LSTM's (h, c)."""
    return tuple(part.index_select(0, index) for part in state) if isinstance(state, tuple) else state.index_select(0, index)


def start_state(projected: torch.Tensor, rnn: str):
    """A decoder's start from ``tanh(W x)``: the state (GRU), or (h, c) from its two halves (LSTM)."""
    started = torch.tanh(projected)
    return tuple(started.chunk(2, dim=-1)) if rnn == "lstm" else started


def output_layer(maxout_size: int, output_rank: int, vocab_size: int) -> nn.Module:
    """The softmax layer's matrix G over the maxout units; with ``output_rank``, G = G_l G_r."""
    if output_rank:
        return nn.Sequential(nn.Linear(maxout_size, output_rank, bias=False), nn.Linear(output_rank, vocab_size))
    return nn.Linear(maxout_size, vocab_size)


@torch.no_grad()
def init_as_in_paper(model: nn.Module, rnns: list[nn.Module], embeddings: list[nn.Embedding]) -> None:
    """Weights N(0, 0.01), the ``rnns``' recurrent matrices orthogonal, biases and PAD embeddings zero."""
    for name, param in model.named_parameters():
        if "bias" in name:
            param.zero_()
        else:
            param.normal_(0.0, 0.01)
    for rnn in rnns:
        for matrix in rnn.recurrent_matrices():
            nn.init.orthogonal_(matrix)
    for embed in embeddings:
        embed.weight[PAD].zero_()


@register_architecture("cho2014")
class RNNEncoderDecoder(nn.Module):
    """Cho et al. (2014)'s RNN Encoder–Decoder. Shapes: B batch, S source, T target length."""

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        recurrent_layer(config)

    def __init__(self, config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        self.check_config(config)
        self.config = config
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        emb, hidden, maxout = config.embed_size, config.hidden_size, config.maxout_size
        gru = recurrent_layer(config)  # a GRU, or with model.rnn=lstm an LSTM
        starts = 2 if config.rnn == "lstm" else 1  # an LSTM decoder starts from h'_0 and c'_0

        self.src_embed = nn.Embedding(src_vocab_size, emb, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, emb, padding_idx=PAD)
        self.encoder = gru(emb, hidden)
        self.summary = nn.Linear(hidden, hidden)  # V: c = tanh(V h_N)
        self.decoder_init = nn.Linear(hidden, starts * hidden)  # V': h'_0 = tanh(V' c) (LSTM: and c'_0)
        self.decoder = gru(emb + hidden, hidden)  # input [e(y_{t-1}); c]
        # Deep output O_h h' + O_y e(y) + O_c c, as one matrix over the concatenation.
        self.deep_output = nn.Linear(hidden + emb + hidden, 2 * maxout)
        self.output = output_layer(maxout, config.output_rank, tgt_vocab_size)  # the paper: rank 100
        self.dropout = nn.Dropout(config.dropout)
        # for_decoding: precompute the terms in c? None = on a CPU only (it pays there, not
        # on a GPU); scripts/bench_decode.py --summary-terms sets it to measure either way.
        self.precompute_summary_terms: bool | None = None
        # Layers whose weights for_decoding and decode_step slice: precision=int8 keeps them float32 (nmt.quantize).
        self.weights_read_directly = ("deep_output",)
        if config.paper_init:
            self.reset_parameters_as_in_paper()

    def reset_parameters_as_in_paper(self) -> None:
        """Weights N(0, 0.01), recurrent matrices orthogonal, biases zero (Appendix A)."""
        init_as_in_paper(self, [self.encoder, self.decoder], [self.src_embed, self.tgt_embed])

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> EncoderOutput:
        """src: (B, S) token ids, src_lengths: (B,) -> EncoderOutput.

        ``states`` past a sentence's end are not meaningful (``mask`` marks them).
        """
        src_lengths = src_lengths.to(src.device, non_blocking=True)
        if self.config.reverse_source:
            src = reverse_padded(src, src_lengths)
        embedded = self.dropout(self.src_embed(src))
        start = embedded.new_zeros(src.size(0), self.config.hidden_size)
        states, last = self.encoder(embedded, start, src_lengths)
        summary = torch.tanh(self.summary(last))
        mask = torch.arange(src.size(1), device=src.device).unsqueeze(0) < src_lengths.unsqueeze(1)
        return EncoderOutput(summary, states, mask)

    def phrase_vectors(self, src: torch.Tensor, src_lengths: torch.Tensor) -> torch.Tensor:
        """The summary c of each source phrase, (B, hidden): the representation the paper's
        title names, whose neighbourhoods its Fig. 5 draws."""
        return self.encode(src, src_lengths).summary

    def init_state(self, encoder_out: EncoderOutput):
        """h'_0 = tanh(V' c): (B, hidden); an LSTM's (h'_0, c'_0) from the two halves of tanh(V' c)."""
        return start_state(self.decoder_init(encoder_out.summary), self.config.rnn)

    def _logits(self, decoder_states, prev_embedded, summary) -> torch.Tensor:
        """Deep output and softmax layer: (..., hidden), (..., emb), (..., hidden) -> (..., vocab)."""
        return self._maxout_output(self.deep_output(torch.cat([decoder_states, prev_embedded, summary], dim=-1)))

    def _maxout_output(self, pre_maxout: torch.Tensor) -> torch.Tensor:
        maxout = pre_maxout.unflatten(-1, (-1, 2)).amax(dim=-1)  # pools of 2 neighbouring units
        return self.output(self.dropout(maxout))

    def for_decoding(self, encoder_out: EncoderOutput) -> EncoderOutput:
        """``encoder_out`` with the terms of every decoder step that depend on c alone
        computed once: the c columns of the GRU's input projection and of the deep output.
        On a 2-core CPU that made beam-5 decoding about 30 % faster (README: Speed). On
        CUDA ``encoder_out`` is returned as it is (unless ``precompute_summary_terms``
        says otherwise): on an H200 both ways decoded the test split equally fast
        (beam 5, 0.70-0.72 s, docs/results/2026-12-04-h200-compare), so the fused cuDNN
        step, one launch, stays.
        """
        precompute = self.precompute_summary_terms
        if precompute is None:
            precompute = not encoder_out.summary.is_cuda
        if not precompute:
            return encoder_out
        split = self.config.embed_size  # the GRU's input is [e(y); c], the deep output's [h'; e(y); c]
        weight, bias = self.decoder.input_projection()
        gate_terms = F.linear(encoder_out.summary, weight[:, split:], bias)
        split = self.config.hidden_size + self.config.embed_size
        output_terms = F.linear(encoder_out.summary, self.deep_output.weight[:, split:], self.deep_output.bias)
        return encoder_out._replace(gate_terms=gate_terms, output_terms=output_terms)

    def reorder_encoder_out(self, encoder_out: EncoderOutput, index: torch.Tensor) -> EncoderOutput:
        return encoder_out.select(index)

    def reorder_state(self, state, index: torch.Tensor):
        return reorder(state, index)

    def decode_step(self, prev_tokens: torch.Tensor, state, encoder_out: EncoderOutput):
        """One decoder step. prev_tokens: (B,), state: (B, hidden) (an LSTM's (h, c)) -> logits (B, V), new state."""
        prev_embedded = self.dropout(self.tgt_embed(prev_tokens))
        if encoder_out.gate_terms is None:  # as the equations read
            summary = encoder_out.summary
            state = self.decoder.step(torch.cat([prev_embedded, summary], dim=-1), state)
            return self._logits(hidden_of(state), prev_embedded, summary), state
        # The same, with the terms in c taken from for_decoding.
        weight, _ = self.decoder.input_projection()
        state = self.decoder.cell(
            torch.addmm(encoder_out.gate_terms, prev_embedded, weight[:, : self.config.embed_size].t()), state
        )
        split = self.config.hidden_size + self.config.embed_size
        pre_maxout = torch.addmm(
            encoder_out.output_terms,
            torch.cat([hidden_of(state), prev_embedded], dim=-1),
            self.deep_output.weight[:, :split].t(),
        )
        return self._maxout_output(pre_maxout), state

    def decoder_features(self, tgt_in: torch.Tensor, encoder_out: EncoderOutput):
        """Teacher-forced decoder over the whole target in one GRU call.

        tgt_in: (B, T), beginning with BOS -> (states (B, T, hidden), embedded (B, T, emb), c (B, T, hidden)).
        """
        prev_embedded = self.dropout(self.tgt_embed(tgt_in))
        summary = encoder_out.summary.unsqueeze(1).expand(-1, tgt_in.size(1), -1)
        states, _ = self.decoder(torch.cat([prev_embedded, summary], dim=-1), self.init_state(encoder_out))
        return states, prev_embedded, summary

    def forward(self, src, src_lengths, tgt_in) -> torch.Tensor:
        """Teacher-forced logits: (B, T, V)."""
        encoder_out = self.encode(src, src_lengths)
        return self._logits(*self.decoder_features(tgt_in, encoder_out))

    def loss(self, src, src_lengths, tgt_in, tgt_out, label_smoothing: float = 0.0, n_tokens: int | None = None):
        """Summed cross-entropy over the real (non-pad) target tokens, and their count.

        Only the real positions go through the output layer: with a 15 000-word
        vocabulary that layer dominates, and padding would pay for it for nothing.
        ``n_tokens``, the number of real target tokens counted on the host, lets a
        GPU pick those positions without stopping to tell the host how many there
        are (``nonzero_static`` instead of boolean indexing), and gives
        ``torch.compile`` a shape it can trace.
        """
        encoder_out = self.encode(src, src_lengths)
        states, prev_embedded, summary = self.decoder_features(tgt_in, encoder_out)
        real = (tgt_out != PAD).flatten()
        if n_tokens is None:
            positions = real.nonzero().squeeze(1)  # row-major: sentence by sentence
        else:
            positions = real.nonzero_static(size=n_tokens).squeeze(1)

        def pick(features):  # (B, T, ...) -> (n_tokens, ...)
            return features.flatten(0, 1).index_select(0, positions)

        # c is picked from its (B, T) expansion, not by sentence from (B, hidden): with no index
        # repeated, the backward pass adds no two gradients into one row, and CUDA's result
        # does not depend on the order of atomic additions.
        logits = self._logits(pick(states), pick(prev_embedded), pick(summary))
        if logits.dtype in (torch.float16, torch.bfloat16):  # the softmax in float32 under autocast
            logits = logits.float()
        targets = tgt_out.flatten().index_select(0, positions)
        loss = F.cross_entropy(logits, targets, reduction="sum", label_smoothing=label_smoothing)
        return loss, real.sum()

    def model_config(self) -> dict:
        """Everything needed to rebuild this model, as plain data (stored in checkpoints)."""
        return {
            "config": asdict(self.config),
            "src_vocab_size": self.src_vocab_size,
            "tgt_vocab_size": self.tgt_vocab_size,
        }
