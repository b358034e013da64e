"""Translation and scoring with a trained model: loading a checkpoint, batched search
over token ids, translating raw lines, log p(target | source) of given pairs.

Used by nmt-translate, nmt-evaluate, nmt-score and by training's validation. Every
function keeps the line contract: N inputs in, N results out, in order; an empty
input gives an empty translation (or a ``nan`` score).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nmt.batching import ParallelIds, token_batches
from nmt.checkpoint import Checkpoint, read_checkpoint, resolve_checkpoint
from nmt.config import DecodeConfig
from nmt.data import normalize_text
from nmt.ensemble import Ensemble, check_ensemble_members
from nmt.errors import CheckpointError, SettingError
from nmt.progress import ProgressBar
from nmt.quantize import reduce_precision
from nmt.runtime import autocast, pick_device, resolve_precision
from nmt.search import Hypothesis, search
from nmt.tokenizer import Tokenizer
from nmt.tokens import PAD, UNK

log = logging.getLogger(__name__)


@dataclass
class Translator:
    model: torch.nn.Module  # any architecture of nmt.architectures, or an nmt.ensemble.Ensemble of them
    tokenizer: Tokenizer
    device: torch.device
    checkpoint: Checkpoint  # what the (first) checkpoint says about itself (settings, step), weights dropped
    path: Path  # the (first) checkpoint file
    members: list[Path] = field(default_factory=list)  # every checkpoint file: more than one for an ensemble
    precision: str = "float32"  # what the model computes in: float32, or bfloat16 (autocast); nmt.runtime

    @property
    def name(self) -> str:
        """The checkpoint, or the ensemble's checkpoints, for logs and reports."""
        return " + ".join(str(path) for path in self.members) if len(self.members) > 1 else str(self.path)


def load_translator(
    ckpt: str | Path | list, device: str | torch.device = "auto", setting: str = "ckpt", precision: str = "auto"
) -> Translator:
    """Rebuild model and tokenizer from a run folder, release or checkpoint file (on any device);
    from a list of them, an ensemble of their models (``nmt.ensemble``), which share one
    tokenizer. ``setting`` names the command-line key in errors; ``precision``: auto, float32,
    bfloat16 or int8 (``nmt.runtime.resolve_precision``; applied here, once: ``nmt.quantize``)."""
    paths = [resolve_checkpoint(c, setting) for c in (ckpt if isinstance(ckpt, (list, tuple)) else [ckpt])]
    if not paths:
        raise CheckpointError(f"{setting}=[]: give at least one run folder or checkpoint file")
    device = pick_device(device) if isinstance(device, str) else device
    precision = resolve_precision(precision, device)
    checkpoints, models = [], []
    for path in paths:  # one checkpoint's weights in memory at a time besides the models
        checkpoint = read_checkpoint(path)
        if checkpoints:
            check_ensemble_members([checkpoints[0], checkpoint])
        models.append(reduce_precision(checkpoint.build_model().to(device).eval(), precision, device))
        checkpoint.model_state, checkpoint.training = {}, None  # held by the model now / not needed
        checkpoints.append(checkpoint)
    model = models[0] if len(models) == 1 else Ensemble(models).eval()
    return Translator(model, checkpoints[0].tokenizer(), device, checkpoints[0], paths[0], paths, precision)


def decode_ids(
    model,
    src_ids: list[list[int]],
    decode: DecodeConfig,
    device: torch.device,
    progress: bool | ProgressBar = False,
    precision: str | None = None,
) -> list[list[Hypothesis]]:
    """Search for each source (ids without EOS); batched by tokens, sorted by length, order restored.
    ``progress``: a bar of its own (True), or the caller's ``ProgressBar``, updated per batch.
    ``precision``: float32 or bfloat16 (None: bf16 autocast on CUDA only, as in training)."""
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
    own = not isinstance(progress, ProgressBar)
    with (
        ProgressBar(len(nonempty), "translating", "sent", enabled=progress) if own else contextlib.nullcontext(progress) as bar
    ):
        for rows in batches:
            batch = data.collate(rows).to(device)
            with autocast(device, precision=precision):
                hyps = search(
                    model,
                    batch.src,
                    batch.src_lengths,
                    decode.beam_size,
                    decode.length_penalty,
                    decode.max_len_a,
                    decode.max_len_b,
                    decode.min_len,
                    decode.nbest,
                )
            for row, sentence_hyps in zip(rows.tolist(), hyps):
                results[nonempty[row]] = sentence_hyps
            bar.update(len(rows))
    return results


def clean_output(text: str) -> str:
    """A translation is one line: byte-fallback pieces could decode to "\\n" or U+2028."""
    return normalize_text(text)


def source_ids(translator: Translator, lines: list[str], max_source_subwords: int = 250) -> list[list[int]]:
    """The normalized lines' subword ids, each cut to ``max_source_subwords`` (counted in a
    warning); an empty line (once normalized) gives no ids."""
    texts = [normalize_text(line) for line in lines]
    filled = [i for i, text in enumerate(texts) if text]
    ids: list[list[int]] = [[] for _ in texts]
    for i, encoded in zip(filled, translator.tokenizer.encode_src([texts[i] for i in filled]) if filled else []):
        ids[i] = encoded
    too_long = sum(len(x) > max_source_subwords for x in ids)
    if too_long:
        log.warning(
            "%d line(s) longer than %d subwords were cut to that length (max_source_subwords)", too_long, max_source_subwords
        )
        ids = [x[:max_source_subwords] for x in ids]
    return ids


def translate_lines(
    translator: Translator,
    lines: list[str],
    decode: DecodeConfig,
    max_source_subwords: int = 250,
    progress: bool | ProgressBar = False,
) -> list[list[tuple[str, Hypothesis]]]:
    """Translate raw lines; returns, per line, its n-best (text, hypothesis) pairs. A line
    that is empty once normalized gets one empty translation without touching the model."""
    src_ids = source_ids(translator, lines, max_source_subwords)
    empty = [("", Hypothesis([], 0.0, 0.0))]
    out = [empty] * len(src_ids)
    filled = [i for i, ids in enumerate(src_ids) if ids]
    if not filled:
        return out
    hyps = decode_ids(translator.model, [src_ids[i] for i in filled], decode, translator.device, progress, translator.precision)
    for line, sentence_hyps in zip(filled, hyps):
        decoded = translator.tokenizer.decode_tgt([h.tokens for h in sentence_hyps])
        out[line] = [(clean_output(text), h) for text, h in zip(decoded, sentence_hyps)]
    return out


@torch.inference_mode()
def embed_ids(
    translator: Translator, src_ids: list[list[int]], batch_tokens: int = 8000, bar: ProgressBar | None = None
) -> np.ndarray:
    """The model's vector of each source (``phrase_vectors``), (N, D) float32, in input order;
    an empty source gives a row of NaN. The same source gives the same vector in any batch."""
    model, device = translator.model.eval(), translator.device
    if not callable(getattr(model, "phrase_vectors", None)):
        raise SettingError(f"{translator.name}: this model gives no phrase vectors (an ensemble does not)")
    rows = [i for i, ids in enumerate(src_ids) if ids]
    width = None
    out: np.ndarray | None = None
    data = ParallelIds.from_lists([src_ids[i] for i in rows]) if rows else None
    batches = (
        token_batches(data.src_lengths, data.src_lengths, max(batch_tokens, int(data.src_lengths.max())), shuffle=False)
        if rows
        else []
    )
    for batch_rows in batches:
        batch = data.collate(batch_rows).to(device)
        with autocast(device, precision=translator.precision):
            vectors = model.phrase_vectors(batch.src, batch.src_lengths).float().cpu().numpy()
        if out is None:
            width = vectors.shape[1]
            out = np.full((len(src_ids), width), np.nan, dtype=np.float32)
        out[[rows[r] for r in batch_rows.tolist()]] = vectors
        if bar is not None:  # the caller's, counting lines
            bar.update(len(batch_rows))
    if out is None:  # nothing but empty lines: the width from a one-token probe
        probe = ParallelIds.from_lists([[UNK]]).collate(np.array([0])).to(device)
        width = model.phrase_vectors(probe.src, probe.src_lengths).shape[1]
        out = np.full((len(src_ids), width), np.nan, dtype=np.float32)
    return out


def source_word_vectors(translator: Translator, texts: Iterable[list[str]] | None = None) -> tuple[list[str], np.ndarray]:
    """The source embeddings of the SentencePiece pieces that are whole words: a piece "▁word"
    of letters only, which the tokenizer also gives for "word" alone. All of them in vocabulary
    order (most frequent first for a unigram model), or with ``texts`` (chunks of lines) those
    that occur in them, most frequent first: the way to keep to one language's words when
    source and target share a tokenizer. Returns the words and their (N, embed_size) vectors."""
    embedding = getattr(translator.model, "src_embed", None)
    if not isinstance(embedding, torch.nn.Embedding):
        raise SettingError(f"{translator.name}: words=true needs one model's source embeddings (an ensemble has several)")
    sp = translator.tokenizer.src
    if texts is None:
        candidates = [sp.id_to_piece(piece_id)[1:] for piece_id in range(sp.get_piece_size())]
    else:
        counts = Counter(word for chunk in texts for line in chunk for word in normalize_text(line).split())
        candidates = sorted(counts, key=lambda word: (-counts[word], word))
    ids, words = [], []
    for word in candidates:
        encoded = sp.encode(word) if word.isalpha() else []
        if len(encoded) == 1 and sp.id_to_piece(encoded[0]) == "\u2581" + word and encoded[0] not in ids:
            ids.append(encoded[0])
            words.append(word)
    vectors = embedding.weight.detach()[ids].float().cpu().numpy() if ids else np.zeros((0, embedding.embedding_dim))
    return words, vectors


def has_alignments(model) -> bool:
    """Whether the model attends over the source (RNNsearch), and so has alignments; an
    ensemble has them when one of its members attends."""
    attending = getattr(model, "attending_members", None)
    if attending is not None:
        return bool(attending())
    return callable(getattr(model, "alignments", None))


@torch.inference_mode()
def align_ids(
    translator: Translator, src_ids: list[list[int]], tgt_ids: list[list[int]], batch_tokens: int = 8000
) -> list[np.ndarray]:
    """Per pair, the attention weights (one row per target token and the final EOS, one column
    per source token and its EOS) of the teacher-forced decoder: for a hypothesis found by
    search, the weights the search saw. An empty source gives a 0 x 0 matrix."""
    model, device = translator.model.eval(), translator.device
    results = [np.zeros((0, 0), dtype=np.float32)] * len(src_ids)
    rows = [i for i, ids in enumerate(src_ids) if ids]
    if not rows:
        return results
    data = ParallelIds.from_lists([src_ids[i] for i in rows], [tgt_ids[i] for i in rows])
    budget = max(batch_tokens, int(max(data.src_lengths.max(), data.tgt_lengths.max())))
    for batch_rows in token_batches(data.src_lengths, data.tgt_lengths, budget, shuffle=False):
        batch = data.collate(batch_rows).to(device)
        with autocast(device, precision=translator.precision):
            weights = model.alignments(batch.src, batch.src_lengths, batch.tgt_in).float().cpu().numpy()
        for row, matrix in zip(batch_rows.tolist(), weights):
            results[rows[row]] = matrix[: data.tgt_lengths[row], : data.src_lengths[row]]
    return results


def alignment_records(
    translator: Translator, lines: list[str], results: list[list[tuple[str, Hypothesis]]], max_source_subwords: int = 250
) -> list[dict]:
    """Per line, its best translation's alignment: source and target pieces (each ending in
    ``</s>``) and the weights, one row per target piece; an empty line gives empty lists."""
    src_ids = source_ids(translator, lines, max_source_subwords)
    tgt_ids = [hyps[0][1].tokens for hyps in results]
    matrices = align_ids(translator, src_ids, tgt_ids)
    src_sp, tgt_sp = translator.tokenizer.src, translator.tokenizer.tgt
    records = []
    for source, target, matrix in zip(src_ids, tgt_ids, matrices):
        if not source:
            records.append({"source": [], "target": [], "weights": []})
            continue
        records.append(
            {
                "source": [src_sp.id_to_piece(i) for i in source] + ["</s>"],
                "target": [tgt_sp.id_to_piece(i) for i in target] + ["</s>"],
                "weights": [[round(float(w), 4) for w in row] for row in matrix],
            }
        )
    return records


@torch.inference_mode()
def score_pairs(
    translator: Translator, pairs: list[tuple[str, str]], batch_tokens: int = 8000, progress: bool = False
) -> list[tuple[float, int]]:
    """(log p(target | source), number of target tokens incl. EOS) per normalized pair,
    batched by tokens; a pair with an empty side scores ``(nan, 0)``."""
    model, device = translator.model.eval(), translator.device
    results: list[tuple[float, int]] = [(float("nan"), 0)] * len(pairs)
    rows = [i for i, (src, tgt) in enumerate(pairs) if src and tgt]
    if len(rows) < len(pairs):
        log.warning("%d pair(s) with an empty side: scored nan (their lines stay in place)", len(pairs) - len(rows))
    if not rows:
        return results
    data = ParallelIds.from_lists(
        translator.tokenizer.encode_src([pairs[i][0] for i in rows]),
        translator.tokenizer.encode_tgt([pairs[i][1] for i in rows]),
    )
    budget = max(batch_tokens, int(max(data.src_lengths.max(), data.tgt_lengths.max())))
    batches = token_batches(data.src_lengths, data.tgt_lengths, budget, shuffle=False)
    with ProgressBar(len(rows), "scoring", "pairs", enabled=progress) as bar:
        for batch_rows in batches:
            batch = data.collate(batch_rows).to(device)
            with autocast(device, precision=translator.precision):
                logits = model(batch.src, batch.src_lengths, batch.tgt_in)
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            token_scores = log_probs.gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1)
            real = batch.tgt_out != PAD
            totals = token_scores.masked_fill(~real, 0.0).sum(1).tolist()
            for row, total, n in zip(batch_rows.tolist(), totals, real.sum(1).tolist()):
                results[rows[row]] = (total, n)
            bar.update(len(batch_rows))
    return results
