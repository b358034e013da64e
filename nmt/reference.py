"""Reference implementations: the same Cho et al. (2014) and RNNsearch models, search and
training step written the way PyTorch tutorials write them, one sentence or one step at a time.

nmt itself never uses this module. The tests check that nmt's fast paths compute what
these compute (tests/test_fast_paths.py), and the benchmarks (scripts/bench_train.py,
scripts/bench_decode.py) time nmt against them; both import them from here.

* ``ReferenceSeq2Seq``: encoder ``nn.GRU`` over the packed source, decoder ``nn.GRUCell``
  unrolled in Python, full logits; ``from_nmt`` copies an nmt model's weights.
* ``ReferenceRNNSearch``: the same for the attention model, the whole alignment model
  computed again at every decoder step, as the tutorial's attention decoder does.
* ``reference_for``: the reference of a given nmt model.
* ``reference_decode``: greedy and beam search of one sentence at a time with the same
  rules as ``nmt.search``.
* ``reference_loss`` / ``reference_train_step`` / ``reference_optimizer``: the tutorial
  training step (mean cross-entropy with ``ignore_index=PAD``, ``loss.item()`` each step).
* ``synthetic_corpus``: random id pairs of given lengths, for benchmarks and tests.

The reference of corpus loading is in ``nmt.reference_corpus``, apart because it must not
import torch (scripts/bench_data.py measures the memory of a loading process).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.batching import Batch, ParallelIds
from nmt.config import DecodeConfig, OptimConfig
from nmt.search import Hypothesis
from nmt.tokens import BOS, EOS, PAD

# --------------------------------------------------------------------------- the models


def _mirrored_config(model):
    """The nmt model's settings, if a reference can mirror them."""
    if model.config.cell != "cudnn" or model.config.output_rank:
        raise ValueError("the reference mirrors model.cell=cudnn with a full-rank output layer (output_rank=0)")
    return model.config


def _with_weights_of(model, reference: nn.Module) -> nn.Module:
    """``reference`` holding a copy of ``model``'s weights, on its device and in its dtype."""
    reference.load_state_dict({name: model.state_dict()[src] for name, src in reference.nmt_names().items()})
    first = next(model.parameters())
    return reference.to(device=first.device, dtype=first.dtype)


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

    def __init__(
        self,
        src_vocab: int,
        tgt_vocab: int,
        embed: int,
        hidden: int,
        maxout: int,
        dropout: float = 0.0,
        reverse_source: bool = False,
    ):
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
        cfg = _mirrored_config(model)
        return _with_weights_of(
            model,
            cls(
                model.src_vocab_size,
                model.tgt_vocab_size,
                cfg.embed_size,
                cfg.hidden_size,
                cfg.maxout_size,
                cfg.dropout,
                getattr(cfg, "reverse_source", False),
            ),
        )

    @staticmethod
    def nmt_names() -> dict[str, str]:
        """Reference parameter name -> the ``nmt.model`` parameter it copies."""
        names = {
            "src_embed.weight": "src_embed.weight",
            "tgt_embed.weight": "tgt_embed.weight",
            "summary.weight": "summary.weight",
            "summary.bias": "summary.bias",
            "decoder_init.weight": "decoder_init.weight",
            "decoder_init.bias": "decoder_init.bias",
            "deep_output.weight": "deep_output.weight",
            "deep_output.bias": "deep_output.bias",
            "output.weight": "output.weight",
            "output.bias": "output.bias",
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

    def expand_memory(self, summary: torch.Tensor, n: int) -> torch.Tensor:
        """One sentence's encoding for ``n`` beams."""
        return summary.expand(n, -1)


class ReferenceRNNSearch(nn.Module):
    """Bahdanau et al.'s RNNsearch as the PyTorch seq2seq tutorial's attention decoder writes it.

    The encoder is one bidirectional ``nn.GRU`` over the packed source (so the backward
    direction starts at each sentence's last token); the decoder is an ``nn.GRUCell``
    unrolled in Python, and every step computes the whole alignment model again,
    ``v_aᵀ tanh(W_a s + U_a h_j)`` with ``U_a h_j`` included, over the padded annotations,
    then the deep output and the full softmax layer; training stacks every position's
    logits (padding included). Same equations and parameter shapes as
    ``nmt.rnnsearch.RNNSearch`` with ``cell="cudnn"`` and ``output_rank=0``, hence ``from_nmt``.
    """

    def __init__(
        self, src_vocab: int, tgt_vocab: int, embed: int, hidden: int, maxout: int, attention: int, dropout: float = 0.0
    ):
        super().__init__()
        self.maxout_size = maxout
        self.src_embed = nn.Embedding(src_vocab, embed, padding_idx=PAD)
        self.encoder = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
        self.start = nn.Linear(hidden, hidden)  # s_0 = tanh(W_s ←h_1)
        self.Wa = nn.Linear(hidden, attention, bias=False)
        self.Ua = nn.Linear(2 * hidden, attention)
        self.va = nn.Linear(attention, 1, bias=False)
        self.tgt_embed = nn.Embedding(tgt_vocab, embed, padding_idx=PAD)
        self.decoder_cell = nn.GRUCell(embed + 2 * hidden, hidden)
        self.deep_output = nn.Linear(hidden + embed + 2 * hidden, 2 * maxout)
        self.output = nn.Linear(maxout, tgt_vocab)
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def from_nmt(cls, model) -> "ReferenceRNNSearch":
        """A reference model holding a copy of ``model``'s weights (same device and dtype)."""
        cfg = _mirrored_config(model)
        return _with_weights_of(
            model,
            cls(
                model.src_vocab_size,
                model.tgt_vocab_size,
                cfg.embed_size,
                cfg.hidden_size,
                cfg.maxout_size,
                cfg.attention_size or cfg.hidden_size,
                cfg.dropout,
            ),
        )

    @staticmethod
    def nmt_names() -> dict[str, str]:
        """Reference parameter name -> the ``nmt.rnnsearch`` parameter it copies."""
        names = {"Wa.weight": "query.weight", "Ua.weight": "keys.weight", "Ua.bias": "keys.bias", "va.weight": "energy.weight"}
        for layer in ("src_embed", "tgt_embed"):
            names[f"{layer}.weight"] = f"{layer}.weight"
        for layer in ("start", "deep_output", "output"):
            names[f"{layer}.weight"], names[f"{layer}.bias"] = f"{layer}.weight", f"{layer}.bias"
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            names[f"encoder.{kind}_l0"] = f"forward_encoder.rnn.{kind}_l0"
            names[f"encoder.{kind}_l0_reverse"] = f"backward_encoder.rnn.{kind}_l0"
            names[f"decoder_cell.{kind}"] = f"decoder.rnn.{kind}_l0"
        return names

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor):
        """src (B, S) -> (annotations (B, S, 2H), mask (B, S), s_0 (B, H))."""
        embedded = self.dropout(self.src_embed(src))
        packed = pack_padded_sequence(embedded, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        annotations, _ = pad_packed_sequence(self.encoder(packed)[0], batch_first=True, total_length=src.size(1))
        mask = torch.arange(src.size(1), device=src.device).unsqueeze(0) < src_lengths.to(src.device).unsqueeze(1)
        hidden = self.encoder.hidden_size
        return annotations, mask, torch.tanh(self.start(annotations[:, 0, hidden:]))

    def init_hidden(self, memory) -> torch.Tensor:
        return memory[2]

    def expand_memory(self, memory, n: int):
        return tuple(x.expand(n, *x.shape[1:]) for x in memory)

    def step(self, prev_tokens: torch.Tensor, hidden: torch.Tensor, memory):
        """One decoder step, attention included: prev_tokens (B,), s_{i-1} (B, H) -> logits (B, V), s_i."""
        annotations, mask = memory[0], memory[1]
        embedded = self.dropout(self.tgt_embed(prev_tokens))
        energies = self.va(torch.tanh(self.Wa(hidden).unsqueeze(1) + self.Ua(annotations))).squeeze(2)
        weights = torch.softmax(energies.masked_fill(~mask, float("-inf")), dim=1)
        context = torch.bmm(weights.unsqueeze(1), annotations).squeeze(1)
        pre_maxout = self.deep_output(torch.cat([hidden, embedded, context], dim=1))
        maxout = pre_maxout.view(-1, self.maxout_size, 2).max(dim=2).values
        hidden = self.decoder_cell(torch.cat([embedded, context], dim=1), hidden)  # after the output: s_{i-1} there
        return self.output(self.dropout(maxout)), hidden

    forward = ReferenceSeq2Seq.forward


def reference_for(model) -> nn.Module:
    """The tutorial-style reference of an nmt model (Cho et al. or RNNsearch), with its weights."""
    return (ReferenceRNNSearch if model.config.arch == "rnnsearch" else ReferenceSeq2Seq).from_nmt(model)


# --------------------------------------------------------------------------- search


def max_length(src_len_with_eos: int, decode: DecodeConfig) -> int:
    """Most output tokens (EOS included), as ``nmt.search.max_output_lengths``."""
    return max(1, math.floor(src_len_with_eos * decode.max_len_a + decode.max_len_b))


def mask_scores(log_probs: torch.Tensor, step: int, limit: int, min_len: int) -> torch.Tensor:
    """No PAD or BOS; no EOS up to ``min_len``; only EOS at the length limit."""
    log_probs[..., PAD] = -math.inf
    log_probs[..., BOS] = -math.inf
    if step <= min_len:
        log_probs[..., EOS] = -math.inf
    if step >= limit:
        eos = log_probs[..., EOS].clone()
        log_probs.fill_(-math.inf)
        log_probs[..., EOS] = eos
    return log_probs


def encode_one(model: ReferenceSeq2Seq, src_ids: list[int], device: torch.device) -> torch.Tensor:
    src = torch.tensor([src_ids + [EOS]], device=device)
    return model.encode(src, torch.tensor([src.size(1)]))


@torch.no_grad()
def reference_greedy(model: ReferenceSeq2Seq, src_ids: list[int], decode: DecodeConfig, device: torch.device) -> Hypothesis:
    """Greedy search of one sentence, one decoder call per output token."""
    limit = max_length(len(src_ids) + 1, decode)
    summary = encode_one(model, src_ids, device)
    hidden = model.init_hidden(summary)
    prev, tokens, score = BOS, [], 0.0
    for step in range(1, limit + 1):
        logits, hidden = model.step(torch.tensor([prev], device=device), hidden, summary)
        log_probs = mask_scores(torch.log_softmax(logits[0].float(), dim=-1), step, limit, decode.min_len)
        best, token = log_probs.max(dim=-1)
        score += best.item()
        prev = token.item()
        if prev == EOS:
            break
        tokens.append(prev)
    return Hypothesis(tokens, score, score / (len(tokens) + 1))


@torch.no_grad()
def reference_beam_search(
    model: ReferenceSeq2Seq, src_ids: list[int], decode: DecodeConfig, device: torch.device
) -> list[Hypothesis]:
    """Beam search of one sentence; beams are a Python list of (score, tokens, state)."""
    beam, alpha = decode.beam_size, decode.length_penalty
    limit = max_length(len(src_ids) + 1, decode)
    summary = encode_one(model, src_ids, device)
    beams = [(0.0, [], model.init_hidden(summary))]
    finished: list[Hypothesis] = []
    for step in range(1, limit + 1):
        prev = torch.tensor([tokens[-1] if tokens else BOS for _, tokens, _ in beams], device=device)
        hidden = torch.cat([state for _, _, state in beams])
        logits, hidden = model.step(prev, hidden, model.expand_memory(summary, len(beams)))
        log_probs = mask_scores(torch.log_softmax(logits.float(), dim=-1), step, limit, decode.min_len)

        # (total score, beam, token): each beam's best 2 x beam extensions, then the best of all.
        scores = torch.tensor([score for score, _, _ in beams], device=device)
        values, indices = (scores.unsqueeze(1) + log_probs).topk(min(2 * beam, log_probs.size(1)), dim=1)
        candidates = [
            (v, i, t)
            for i, (row_values, row_tokens) in enumerate(zip(values.tolist(), indices.tolist()))
            for v, t in zip(row_values, row_tokens)
        ]
        candidates.sort(key=lambda c: -c[0])

        new_beams = []
        for rank, (total, i, token) in enumerate(candidates[: 2 * beam]):
            if total == -math.inf:
                break
            tokens = beams[i][1]
            if token == EOS:
                if rank < beam:  # EOS counts only among the best `beam` candidates
                    finished.append(Hypothesis(tokens, total, total / (len(tokens) + 1) ** alpha))
            elif len(new_beams) < beam:
                new_beams.append((total, tokens + [token], hidden[i : i + 1]))
        finished.sort(key=lambda h: -h.normalized_score)
        del finished[beam:]
        beams = new_beams
        if not beams or step >= limit:
            break
        # nmt.search's rule: `beam` finished hypotheses, and without a length penalty
        # no live beam above the worst of them.
        if len(finished) >= beam and (alpha != 0 or beams[0][0] <= finished[-1].score):
            break
    return finished[: decode.nbest]


def reference_decode(
    model: ReferenceSeq2Seq, src_ids: list[list[int]], decode: DecodeConfig, device: torch.device
) -> list[list[Hypothesis]]:
    """Sentence after sentence; the same return shape as ``decode_ids``."""
    model.eval()
    results = []
    for ids in src_ids:
        if not ids:
            results.append([Hypothesis([], 0.0, 0.0)] * decode.nbest)
        elif decode.beam_size == 1 and decode.nbest == 1:
            results.append([reference_greedy(model, ids, decode, device)])
        else:
            results.append(reference_beam_search(model, ids, decode, device))
    return results


# --------------------------------------------------------------------------- training


def reference_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """Adam with the same settings as nmt's default ``OptimConfig``."""
    opt = OptimConfig()
    return torch.optim.Adam(model.parameters(), lr=opt.lr, betas=tuple(opt.betas), eps=opt.eps)


def reference_loss(model: ReferenceSeq2Seq, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy over the non-pad targets, from the full (B, T, V) logits."""
    criterion = nn.CrossEntropyLoss(ignore_index=PAD)
    logits = model(batch.src, batch.src_lengths, batch.tgt_in)
    return criterion(logits.view(-1, logits.size(-1)), batch.tgt_out.view(-1))


def reference_train_step(
    model: ReferenceSeq2Seq, optimizer: torch.optim.Optimizer, batch: Batch, device: torch.device, clip: float = 1.0
) -> float:
    """The tutorial training step; returns the batch's mean loss (``loss.item()``)."""
    model.train()
    batch = batch.to(device)
    optimizer.zero_grad()
    loss = reference_loss(model, batch)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    return loss.item()


def synthetic_corpus(n: int, lengths: tuple[int, int], vocab: int, seed: int = 0) -> ParallelIds:
    """``n`` sentence pairs of random ids in [4, vocab); lengths count EOS.

    Fixed lengths: every source and target has exactly that many tokens. A range:
    target lengths uniform in it, source lengths the target's times U(0.8, 1.25),
    clipped to the range.
    """
    rng = np.random.default_rng(seed)
    low, high = lengths
    tgt_len = rng.integers(low, high + 1, n)
    if low == high:
        src_len = tgt_len.copy()
    else:
        src_len = np.clip(np.rint(tgt_len * rng.uniform(0.8, 1.25, n)), low, high).astype(np.int64)

    def flat(lens):  # ids without EOS: length - 1 each
        offsets = np.zeros(n + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(lens - 1)
        return rng.integers(4, vocab, int(offsets[-1])).astype(np.int32), offsets

    return ParallelIds(*flat(src_len), *flat(tgt_len))
