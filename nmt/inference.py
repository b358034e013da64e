"""Translation and scoring with a trained model: loading a checkpoint, batched search
over token ids, translating raw lines, log p(target | source) of given pairs.

Used by nmt-translate, nmt-evaluate, nmt-score and by training's validation. Every
function keeps the line contract: N inputs in, N results out, in order; an empty
input gives an empty translation (or a ``nan`` score).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from nmt.batching import ParallelIds, token_batches
from nmt.checkpoint import Checkpoint, read_checkpoint, resolve_checkpoint
from nmt.config import DecodeConfig
from nmt.data import normalize_text
from nmt.ensemble import Ensemble, check_ensemble_members
from nmt.errors import CheckpointError
from nmt.runtime import autocast, pick_device
from nmt.search import Hypothesis, search
from nmt.tokenizer import Tokenizer
from nmt.tokens import PAD

log = logging.getLogger(__name__)


@dataclass
class Translator:
    model: torch.nn.Module  # any architecture of nmt.architectures, or an nmt.ensemble.Ensemble of them
    tokenizer: Tokenizer
    device: torch.device
    checkpoint: Checkpoint  # what the (first) checkpoint says about itself (settings, step), weights dropped
    path: Path  # the (first) checkpoint file
    members: list[Path] = field(default_factory=list)  # every checkpoint file: more than one for an ensemble

    @property
    def name(self) -> str:
        """The checkpoint, or the ensemble's checkpoints, for logs and reports."""
        return " + ".join(str(path) for path in self.members) if len(self.members) > 1 else str(self.path)


def load_translator(ckpt: str | Path | list, device: str | torch.device = "auto") -> Translator:
    """Rebuild model and tokenizer from a run folder or checkpoint file (on any device); from a
    list of them, an ensemble of their models (``nmt.ensemble``), which share one tokenizer."""
    paths = [resolve_checkpoint(c) for c in (ckpt if isinstance(ckpt, (list, tuple)) else [ckpt])]
    if not paths:
        raise CheckpointError("ckpt=[]: give at least one run folder or checkpoint file")
    device = pick_device(device) if isinstance(device, str) else device
    checkpoints, models = [], []
    for path in paths:  # one checkpoint's weights in memory at a time besides the models
        checkpoint = read_checkpoint(path)
        if checkpoints:
            check_ensemble_members([checkpoints[0], checkpoint])
        models.append(checkpoint.build_model().to(device).eval())
        checkpoint.model_state, checkpoint.training = {}, None  # held by the model now / not needed
        checkpoints.append(checkpoint)
    model = models[0] if len(models) == 1 else Ensemble(models).eval()
    return Translator(model, checkpoints[0].tokenizer(), device, checkpoints[0], paths[0], paths)


def decode_ids(
    model, src_ids: list[list[int]], decode: DecodeConfig, device: torch.device, progress: bool = False
) -> list[list[Hypothesis]]:
    """Search for each source (ids without EOS); batched by tokens, sorted by length, order restored."""
    results: list[list[Hypothesis] | None] = [None] * len(src_ids)
    nonempty = [i for i, ids in enumerate(src_ids) if ids]
    for i in range(len(src_ids)):
        if not src_ids[i]:
            results[i] = [Hypothesis([], 0.0, 0.0)]  # the one hypothesis there is: K copies would be noise
    if not nonempty:
        return results
    data = ParallelIds.from_lists([src_ids[i] for i in nonempty])
    # The beam multiplies the rows the decoder carries. On a CPU the cost grows with them,
    # so keep the work per batch constant; on a GPU a step costs about the same for 30 or
    # 150 sentences, and bigger batches mean fewer steps.
    divisor = 1 if device.type == "cuda" else max(1, decode.beam_size)
    budget = max(int(data.src_lengths.max()), decode.batch_tokens // divisor)
    batches = token_batches(data.src_lengths, data.src_lengths, budget, shuffle=False)
    model.eval()
    with tqdm(total=len(nonempty), desc="translating", unit="sent", disable=not progress, leave=False) as bar:
        for rows in batches:
            batch = data.collate(rows).to(device)
            with autocast(device):
                hyps = search(
                    model, batch.src, batch.src_lengths, decode.beam_size, decode.length_penalty,
                    decode.max_len_a, decode.max_len_b, decode.min_len, decode.nbest,
                )
            for row, sentence_hyps in zip(rows.tolist(), hyps):
                results[nonempty[row]] = sentence_hyps
            bar.update(len(rows))
    return results


def clean_output(text: str) -> str:
    """A translation is one line: byte-fallback pieces could decode to "\\n" or U+2028."""
    return normalize_text(text)


def translate_lines(
    translator: Translator, lines: list[str], decode: DecodeConfig,
    max_source_subwords: int = 250, progress: bool = False,
) -> list[list[tuple[str, Hypothesis]]]:
    """Translate raw lines; returns, per line, its n-best (text, hypothesis) pairs. A line
    that is empty once normalized gets one empty translation without touching the model."""
    texts = [normalize_text(line) for line in lines]
    empty = [("", Hypothesis([], 0.0, 0.0))]
    out = [empty] * len(texts)
    filled = [i for i, text in enumerate(texts) if text]
    if not filled:
        return out
    src_ids = translator.tokenizer.encode_src([texts[i] for i in filled])
    too_long = sum(len(ids) > max_source_subwords for ids in src_ids)
    if too_long:
        log.warning("%d line(s) longer than %d subwords were cut to that length (max_source_subwords)",
                    too_long, max_source_subwords)
        src_ids = [ids[:max_source_subwords] for ids in src_ids]
    hyps = decode_ids(translator.model, src_ids, decode, translator.device, progress)
    for line, sentence_hyps in zip(filled, hyps):
        decoded = translator.tokenizer.decode_tgt([h.tokens for h in sentence_hyps])
        out[line] = [(clean_output(text), h) for text, h in zip(decoded, sentence_hyps)]
    return out


@torch.inference_mode()
def score_pairs(translator: Translator, pairs: list[tuple[str, str]], batch_tokens: int = 8000,
                progress: bool = False) -> list[tuple[float, int]]:
    """(log p(target | source), number of target tokens incl. EOS) per normalized pair,
    batched by tokens; a pair with an empty side scores ``(nan, 0)``."""
    model, device = translator.model.eval(), translator.device
    results: list[tuple[float, int]] = [(float("nan"), 0)] * len(pairs)
    rows = [i for i, (src, tgt) in enumerate(pairs) if src and tgt]
    if len(rows) < len(pairs):
        log.warning("%d pair(s) with an empty side: scored nan (their lines stay in place)", len(pairs) - len(rows))
    if not rows:
        return results
    data = ParallelIds.from_lists(translator.tokenizer.encode_src([pairs[i][0] for i in rows]),
                                  translator.tokenizer.encode_tgt([pairs[i][1] for i in rows]))
    budget = max(batch_tokens, int(max(data.src_lengths.max(), data.tgt_lengths.max())))
    batches = token_batches(data.src_lengths, data.tgt_lengths, budget, shuffle=False)
    for batch_rows in tqdm(batches, desc="scoring", disable=not progress, leave=False):
        batch = data.collate(batch_rows).to(device)
        with autocast(device):
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        token_scores = log_probs.gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1)
        real = batch.tgt_out != PAD
        totals = token_scores.masked_fill(~real, 0.0).sum(1).tolist()
        for row, total, n in zip(batch_rows.tolist(), totals, real.sum(1).tolist()):
            results[rows[row]] = (total, n)
    return results
