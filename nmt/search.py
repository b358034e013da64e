"""Greedy and beam search, batched over sentences x beams, on GPU or CPU.

Both encode the batch once, then call ``model.decode_step`` one token at a time
(any model of ``nmt.architectures``: the search never looks inside its states);
a sentence leaves the batch as soon as it is finished, so the work per step
shrinks instead of carrying dead rows to the longest sentence's end. The beam
search follows the shape of fairseq's sequence generator: expand to batch x beam,
take the top 2 x beam candidates of the flattened beam x vocabulary scores,
finalize those that end in EOS, continue with the best ``beam`` others.

The maximum output length of a sentence is ``a * source_length + b`` subwords
(EOS included); at that step EOS is the only choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nmt.architectures import Seq2SeqModel
from nmt.errors import SettingError
from nmt.tokens import BOS, EOS, PAD


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # log p(tokens, EOS | source)
    normalized_score: float  # score / (len(tokens) + 1) ** length_penalty: what the beam ranks by


# No output is longer than this many tokens, whatever decode.max_len_a / max_len_b say: a
# model that never emits EOS must not decode for hours (or run out of memory).
MAX_OUTPUT_LENGTH = 1024


def max_output_lengths(src_lengths: torch.Tensor, max_len_a: float, max_len_b: int) -> torch.Tensor:
    """Per sentence, the most tokens (EOS included) search may produce: between 1 and ``MAX_OUTPUT_LENGTH``."""
    return (src_lengths.float() * max_len_a + max_len_b).floor().long().clamp(min=1, max=MAX_OUTPUT_LENGTH)


def _encode(model, src: torch.Tensor, src_lengths: torch.Tensor):
    """The encoder's output, with the model's per-sentence precomputation if it has one."""
    encoder_out = model.encode(src, src_lengths)
    prepare = getattr(model, "for_decoding", None)
    return encoder_out if prepare is None else prepare(encoder_out)


def _mask_step(
    log_probs: torch.Tensor, step: int, max_lengths: torch.Tensor, min_len: int, earliest_limit: int
) -> torch.Tensor:
    """Forbid PAD/BOS, forbid EOS before ``min_len``, force EOS at each row's maximum length.

    No host sync: rows at their limit are chosen with ``torch.where``, and only from
    ``earliest_limit`` (the batch's smallest maximum length, known up front) on.
    """
    log_probs[:, PAD] = -math.inf
    log_probs[:, BOS] = -math.inf
    eos_scores = log_probs[:, EOS].clone() if step >= earliest_limit else None
    if step <= min_len:
        log_probs[:, EOS] = -math.inf
    if eos_scores is not None:  # the length limit wins over min_len: every row ends
        eos_only = torch.full_like(log_probs, -math.inf)
        eos_only[:, EOS] = eos_scores
        log_probs = torch.where((step >= max_lengths).unsqueeze(1), eos_only, log_probs)
    return log_probs


@torch.inference_mode()
def greedy_search(
    model: Seq2SeqModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    min_len: int = 0,
) -> list[Hypothesis]:
    """The most probable next token at every step. src: (B, S), src_lengths: (B,)."""
    batch, device = src.size(0), src.device
    encoder_out = _encode(model, src, src_lengths)
    state = model.init_state(encoder_out)
    max_lengths = max_output_lengths(src_lengths, max_len_a, max_len_b).to(device)
    earliest_limit = int(max_lengths.min())
    rows = list(range(batch))  # original index of each sentence still decoding
    prev = torch.full((batch,), BOS, dtype=torch.long, device=device)
    tokens: list[list[int]] = [[] for _ in range(batch)]
    step_scores = []  # (rows, scores) per step, summed at the end
    step = 0
    while rows:
        step += 1
        logits, state = model.decode_step(prev, state, encoder_out)
        log_probs = _mask_step(torch.log_softmax(logits.float(), dim=-1), step, max_lengths, min_len, earliest_limit)
        best_scores, prev = log_probs.max(dim=-1)
        step_scores.append((rows, best_scores))
        keep = []
        for i, (row, token) in enumerate(zip(rows, prev.tolist())):  # the step's one host sync
            if token != EOS:
                tokens[row].append(token)
                keep.append(i)
        if len(keep) < len(rows):  # finished sentences leave the batch
            index = torch.tensor(keep, dtype=torch.long, device=device)
            rows = [rows[i] for i in keep]
            prev, max_lengths = prev[index], max_lengths[index]
            state = model.reorder_state(state, index)
            encoder_out = model.reorder_encoder_out(encoder_out, index)
    totals = [0.0] * batch
    for step_rows, scores in step_scores:
        for row, score in zip(step_rows, scores.tolist()):
            totals[row] += score
    return [Hypothesis(toks, total, total / (len(toks) + 1)) for toks, total in zip(tokens, totals)]


def _keep_best(hyps: list[Hypothesis], new: Hypothesis, size: int) -> None:
    """Insert ``new`` into ``hyps`` (kept sorted, best first) and keep the best ``size``."""
    hyps.append(new)
    hyps.sort(key=lambda h: -h.normalized_score)
    del hyps[size:]


def top_candidates(scores: torch.Tensor, log_probs: torch.Tensor, beam_size: int):
    """Best ``2 * beam_size`` extensions of each sentence's beams.

    scores: (N, K) running log-probabilities of the live beams; log_probs: (N, K, V).
    Returns (candidate scores, beam index, token), each (N, 2K), best first.
    Twice the beam so that after setting aside those that end in EOS, ``beam_size``
    live candidates always remain.
    """
    vocab = log_probs.size(-1)
    flat = (scores.unsqueeze(-1) + log_probs).view(scores.size(0), -1)
    candidate_scores, flat_index = flat.topk(min(2 * beam_size, flat.size(1)), dim=-1)
    return candidate_scores, torch.div(flat_index, vocab, rounding_mode="floor"), flat_index % vocab


@torch.inference_mode()
def beam_search(
    model: Seq2SeqModel,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    min_len: int = 0,
    nbest: int = 1,
) -> list[list[Hypothesis]]:
    """Batched beam search; returns the ``nbest`` best hypotheses per sentence, best first.

    Hypotheses are ranked by ``score / length ** length_penalty`` (length counts
    EOS). A sentence stops at its maximum length (where EOS is forced), or once
    ``beam_size`` hypotheses have finished -- and, with ``length_penalty == 0``,
    no live beam scores higher than the worst of them.

    The device does the scoring and the choice of beams; the host keeps the
    token histories and the finished hypotheses, from one copy per step.
    """
    if beam_size < 1:
        raise SettingError(f"decode.beam_size={beam_size}: must be at least 1")
    if not 1 <= nbest <= beam_size:
        raise SettingError(
            f"decode.nbest={nbest} must be between 1 and decode.beam_size={beam_size}: a beam of K keeps at most K hypotheses"
        )
    batch, beam, device = src.size(0), beam_size, src.device
    encoder_out = _encode(model, src, src_lengths)
    encoder_out = model.reorder_encoder_out(encoder_out, torch.arange(batch, device=device).repeat_interleave(beam))
    state = model.init_state(encoder_out)  # (N*K, hidden)
    max_lengths = max_output_lengths(src_lengths, max_len_a, max_len_b)
    row_limits = max_lengths.repeat_interleave(beam).to(device)  # per decoder row
    earliest_limit = int(max_lengths.min())
    max_lengths = max_lengths.tolist()

    rows = list(range(batch))  # original index of each sentence still decoding
    scores = torch.full((batch, beam), -math.inf, device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    prev = torch.full((batch * beam,), BOS, dtype=torch.long, device=device)
    history = np.zeros((batch, beam, 0), dtype=np.int64)  # tokens of each live beam
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]

    step = 0
    while rows:
        step += 1
        n = len(rows)
        logits, state = model.decode_step(prev, state, encoder_out)
        log_probs = _mask_step(torch.log_softmax(logits.float(), dim=-1), step, row_limits, min_len, earliest_limit)
        cand_scores, cand_beams, cand_tokens = top_candidates(scores, log_probs.view(n, beam, -1), beam)

        # Continue with the best `beam` candidates that did not end in EOS.
        scores, pick = cand_scores.masked_fill(cand_tokens == EOS, -math.inf).topk(beam, dim=-1)
        beams, tokens = cand_beams.gather(1, pick), cand_tokens.gather(1, pick)
        state = model.reorder_state(state, (beams + torch.arange(n, device=device).unsqueeze(1) * beam).view(-1))
        prev = tokens.view(-1)

        # The step's one host sync. float64 holds the token ids exactly.
        host = torch.cat([cand_scores, cand_beams, cand_tokens, scores, beams, tokens], 1).double().cpu().numpy()
        c = cand_scores.size(1)
        cand_scores_h, cand_beams_h, cand_tokens_h = host[:, :c], host[:, c : 2 * c].astype(np.int64), host[:, 2 * c : 3 * c]
        live_scores_h = host[:, 3 * c : 3 * c + beam]
        beams_h, tokens_h = (
            host[:, 3 * c + beam : 3 * c + 2 * beam].astype(np.int64),
            host[:, 3 * c + 2 * beam :].astype(np.int64),
        )

        # Finalize EOS candidates ranked within the top `beam` (as fairseq does).
        ends = (cand_tokens_h[:, :beam] == EOS) & np.isfinite(cand_scores_h[:, :beam])
        for i, j in zip(*np.nonzero(ends)):
            toks = history[i, cand_beams_h[i, j]].tolist()
            total = float(cand_scores_h[i, j])
            _keep_best(finished[rows[i]], Hypothesis(toks, total, total / (len(toks) + 1) ** length_penalty), beam)
        history = np.concatenate([np.take_along_axis(history, beams_h[:, :, None], axis=1), tokens_h[:, :, None]], 2)

        # A sentence is done at its length limit, or once it has `beam` finished hypotheses
        # and -- without a length penalty, where a beam's score can only fall as it grows --
        # its best live beam scores no higher than the worst of them: then the search is
        # exact over the beams it kept. With a penalty a longer hypothesis may still rank
        # higher, and there is no such bound: stop at `beam` finished ones, as fairseq does.
        keep = []
        for i, row in enumerate(rows):
            hyps, best_live = finished[row], live_scores_h[i, 0]
            full = len(hyps) >= beam and (length_penalty != 0 or best_live <= hyps[-1].score)
            if not (step >= max_lengths[row] or not np.isfinite(best_live) or full):
                keep.append(i)
        if len(keep) < n:  # finished sentences leave the batch
            index = torch.tensor(keep, dtype=torch.long, device=device)
            decoder_rows = (index.unsqueeze(1) * beam + torch.arange(beam, device=device)).view(-1)
            rows, history = [rows[i] for i in keep], history[keep]
            scores = scores.index_select(0, index)
            state, prev = model.reorder_state(state, decoder_rows), prev.index_select(0, decoder_rows)
            row_limits = row_limits.index_select(0, decoder_rows)
            encoder_out = model.reorder_encoder_out(encoder_out, decoder_rows)

    return [hyps[:nbest] for hyps in finished]


def search(
    model: Seq2SeqModel,
    src,
    src_lengths,
    beam_size: int = 1,
    length_penalty: float = 1.0,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    min_len: int = 0,
    nbest: int = 1,
) -> list[list[Hypothesis]]:
    """Greedy when ``beam_size == 1`` (and one hypothesis is asked for), else beam search."""
    if beam_size == 1 and nbest == 1:
        hyps = greedy_search(model, src, src_lengths, max_len_a, max_len_b, min_len)
        return [[h] for h in hyps]
    return beam_search(model, src, src_lengths, beam_size, length_penalty, max_len_a, max_len_b, min_len, nbest)
