"""Greedy and beam search, batched over sentences x beams, on GPU or CPU.

Both encode the batch once, then call ``model.decode_step`` one token at a time;
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

import torch

from nmt.tokenizer import BOS, EOS, PAD


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # log p(tokens, EOS | source)
    normalized_score: float  # score / (len(tokens) + 1) ** length_penalty: what the beam ranks by


def max_output_lengths(src_lengths: torch.Tensor, max_len_a: float, max_len_b: int) -> torch.Tensor:
    """Per sentence, the most tokens (EOS included) search may produce; at least 1."""
    return (src_lengths.float() * max_len_a + max_len_b).floor().long().clamp(min=1)


def _mask_step(log_probs: torch.Tensor, step: int, max_lengths: torch.Tensor, min_len: int) -> torch.Tensor:
    """Forbid PAD/BOS, forbid EOS before ``min_len``, force EOS at each row's maximum length."""
    log_probs[:, PAD] = -math.inf
    log_probs[:, BOS] = -math.inf
    if step <= min_len:
        log_probs[:, EOS] = -math.inf
    at_limit = step >= max_lengths
    if at_limit.any():
        eos_scores = log_probs[at_limit, EOS].clone()
        log_probs[at_limit] = -math.inf
        log_probs[at_limit, EOS] = eos_scores
    return log_probs


@torch.inference_mode()
def greedy_search(
    model, src: torch.Tensor, src_lengths: torch.Tensor,
    max_len_a: float = 1.5, max_len_b: int = 10, min_len: int = 0,
) -> list[Hypothesis]:
    """The most probable next token at every step. src: (B, S), src_lengths: (B,)."""
    batch = src.size(0)
    encoder_out = model.encode(src, src_lengths)
    state = model.init_state(encoder_out)
    max_lengths = max_output_lengths(src_lengths, max_len_a, max_len_b).to(src.device)
    active = torch.arange(batch, device=src.device)  # original rows still decoding
    prev = torch.full((batch,), BOS, dtype=torch.long, device=src.device)
    tokens = [[] for _ in range(batch)]
    scores = torch.zeros(batch, device=src.device)
    step = 0
    while active.numel():
        step += 1
        logits, state = model.decode_step(prev, state, encoder_out)
        log_probs = _mask_step(torch.log_softmax(logits.float(), dim=-1), step, max_lengths[active], min_len)
        best_scores, prev = log_probs.max(dim=-1)
        scores[active] += best_scores
        for row, token in zip(active.tolist(), prev.tolist()):
            if token != EOS:
                tokens[row].append(token)
        alive = prev != EOS
        if not alive.all():
            keep = alive.nonzero().squeeze(1)
            active, prev, state = active[keep], prev[keep], state[keep]
            encoder_out = encoder_out.select(keep)
    totals = scores.tolist()
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
    model, src: torch.Tensor, src_lengths: torch.Tensor, beam_size: int = 5,
    length_penalty: float = 1.0, max_len_a: float = 1.5, max_len_b: int = 10,
    min_len: int = 0, nbest: int = 1,
) -> list[list[Hypothesis]]:
    """Batched beam search; returns the ``nbest`` best hypotheses per sentence, best first.

    Hypotheses are ranked by ``score / length ** length_penalty`` (length counts
    EOS). A sentence stops at its maximum length (where EOS is forced), or once
    ``beam_size`` hypotheses have finished -- and, with ``length_penalty == 0``,
    no live beam scores higher than the worst of them.
    """
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest={nbest} must be between 1 and the beam size ({beam_size})")
    batch, beam, device = src.size(0), beam_size, src.device
    encoder_out = model.encode(src, src_lengths)
    expand = torch.arange(batch, device=device).repeat_interleave(beam)
    encoder_out = encoder_out.select(expand)
    state = model.init_state(encoder_out)  # (N*K, hidden)
    max_lengths = max_output_lengths(src_lengths, max_len_a, max_len_b).to(device)

    active = torch.arange(batch, device=device)  # original index of each live sentence
    scores = torch.full((batch, beam), -math.inf, device=device)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    history = torch.full((batch, beam, 0), BOS, dtype=torch.long, device=device)
    prev = torch.full((batch * beam,), BOS, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]

    step = 0
    while active.numel():
        step += 1
        n = active.numel()
        logits, state = model.decode_step(prev, state, encoder_out)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        log_probs = _mask_step(log_probs, step, max_lengths[active].repeat_interleave(beam), min_len)
        cand_scores, cand_beams, cand_tokens = top_candidates(scores, log_probs.view(n, beam, -1), beam)

        # Finalize EOS candidates ranked within the top `beam` (as fairseq does).
        rank = torch.arange(cand_scores.size(1), device=device).unsqueeze(0)
        ends = (cand_tokens == EOS) & (rank < beam) & torch.isfinite(cand_scores)
        if ends.any():
            rows, cols = ends.nonzero(as_tuple=True)
            ended_history = history[rows, cand_beams[rows, cols]]
            sentence_ids = active[rows].tolist()
            for sentence, total, toks in zip(sentence_ids, cand_scores[rows, cols].tolist(), ended_history.tolist()):
                _keep_best(finished[sentence], Hypothesis(toks, total, total / (len(toks) + 1) ** length_penalty), beam)

        # Continue with the best `beam` candidates that did not end.
        live_scores = cand_scores.masked_fill(cand_tokens == EOS, -math.inf)
        scores, pick = live_scores.topk(beam, dim=-1)
        beams = cand_beams.gather(1, pick)
        tokens = cand_tokens.gather(1, pick)
        history = torch.cat([history.gather(1, beams.unsqueeze(-1).expand_as(history)), tokens.unsqueeze(-1)], -1)
        reorder = (beams + torch.arange(n, device=device).unsqueeze(1) * beam).view(-1)
        state = state.index_select(0, reorder)
        prev = tokens.view(-1)

        # A sentence is done at its length limit, or once it has `beam` finished hypotheses
        # and -- without a length penalty, where a beam's score can only fall as it grows --
        # its best live beam scores no higher than the worst of them: then the search is
        # exact over the beams it kept. With a penalty a longer hypothesis may still rank
        # higher, and there is no such bound: stop at `beam` finished ones, as fairseq does.
        full = torch.tensor([len(finished[i]) >= beam for i in active.tolist()], device=device)
        if length_penalty == 0:
            worst_finished = torch.tensor(
                [finished[i][-1].score if len(finished[i]) >= beam else -math.inf for i in active.tolist()],
                device=device)
            full &= scores[:, 0] <= worst_finished
        done = (step >= max_lengths[active]) | ~torch.isfinite(scores[:, 0]) | full
        if done.any():
            keep = (~done).nonzero().squeeze(1)
            active, scores, history = active[keep], scores[keep], history[keep]
            rows = (keep.unsqueeze(1) * beam + torch.arange(beam, device=device)).view(-1)
            state, prev = state.index_select(0, rows), prev.index_select(0, rows)
            encoder_out = encoder_out.select(rows)

    return [hyps[:nbest] for hyps in finished]


def search(model, src, src_lengths, beam_size: int = 1, length_penalty: float = 1.0,
           max_len_a: float = 1.5, max_len_b: int = 10, min_len: int = 0, nbest: int = 1) -> list[list[Hypothesis]]:
    """Greedy when ``beam_size == 1`` (and one hypothesis is asked for), else beam search."""
    if beam_size == 1 and nbest == 1:
        hyps = greedy_search(model, src, src_lengths, max_len_a, max_len_b, min_len)
        return [[h] for h in hyps]
    return beam_search(model, src, src_lengths, beam_size, length_penalty, max_len_a, max_len_b, min_len, nbest)
