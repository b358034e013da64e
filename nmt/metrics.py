"""Corpus scores and their statistics: BLEU / chrF / TER through sacreBLEU, seeded
bootstrap confidence intervals, Koehn's paired bootstrap test, BLEU by sentence length.

Everything metric-related goes through sacreBLEU so that the numbers are the ones
anybody else gets from ``sacrebleu refs.txt < hyps.txt`` and come with a
reproducibility signature. Around it this module adds what a paper-style evaluation
needs and sacreBLEU's Python API does not give cleanly:

* a hard error on non-parallel input (sacreBLEU's Python API silently
  ``zip``-truncates to the shorter side),
* seeded 95% bootstrap confidence intervals as ``[low, high]``,
* Koehn's (2004) paired bootstrap test between two systems,
* BLEU by source-sentence length (Bahdanau et al., 2015, Fig. 2).

Bootstrap resampling works on sacreBLEU's per-sentence sufficient statistics
(``Metric._extract_corpus_statistics`` / ``_compute_score_from_stats``), the
same private hooks ``sacrebleu.significance`` itself uses; extracting them once
and resampling sums is orders of magnitude faster than re-scoring strings. Those
hooks are private, so pyproject.toml bounds sacreBLEU's version and
tests/test_report.py checks them. The resample indices are drawn exactly as
``sacrebleu --confidence`` draws them (``numpy.random.default_rng(seed).choice(n,
(samples, n))``), so for the same seed the bootstrap distribution is the one
sacreBLEU's CLI would produce. Rendering lives in ``nmt.report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric

from nmt.errors import ReportError

# Bound the bootstrap's resample-weight matrix to ~4M cells per chunk (~32 MB
# of float64) so that a 100k-sentence test set does not need gigabytes.
_BOOTSTRAP_CHUNK_CELLS = 4_000_000

# Metrics of a report, in report order; TER is an error rate.
METRIC_LABELS = {"bleu": "BLEU", "chrf": "chrF", "ter": "TER"}


def bleu_and_chrf(hyps: Sequence[str], refs: Sequence[str]) -> tuple[float, float]:
    """Corpus BLEU and chrF with sacreBLEU's defaults, no interval (training's validation)."""
    check_parallel(hyps, refs, "hypotheses", "references")
    return sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score, sacrebleu.corpus_chrf(list(hyps), [list(refs)]).score


def check_parallel(hyps: Sequence[str], refs: Sequence[str], hyps_name: str, refs_name: str) -> None:
    """Fail unless ``hyps`` and ``refs`` have the same number of segments.

    sacreBLEU's Python API ``zip``s hypotheses with references, so a missing
    or extra line silently drops segments (and usually misaligns the rest)
    instead of failing.

    Raises:
        ReportError: naming both files and both line counts.
    """
    if len(hyps) != len(refs):
        raise ReportError(
            f"{hyps_name} has {len(hyps)} lines but {refs_name} has {len(refs)} lines; "
            "the files must be line-parallel (line i of each: the same sentence)"
        )


def _check_nonempty(hyps: Sequence[str]) -> None:
    # sacreBLEU indexes hyps[0] before anything else: an empty corpus would
    # surface as a bare IndexError.
    if len(hyps) == 0:
        raise ReportError("no sentences to score (the hypotheses are empty)")


def _new_metrics(names: Sequence[str] = ("bleu", "chrf", "ter")) -> dict[str, Metric]:
    # Fresh objects per call: sacreBLEU metrics are stateful (reference
    # cache, n_bootstrap/seed that leak into later signatures).
    factories = {"bleu": BLEU, "chrf": CHRF, "ter": TER}
    return {name: factories[name]() for name in names}


def _sufficient_stats(metric: Metric, hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    # One row of metric statistics per sentence; a corpus score is a function
    # of the column sums, which is what makes resampling cheap. float64 keeps
    # integer counts exact (sacreBLEU itself uses float32).
    stats = metric._extract_corpus_statistics(list(hyps), [list(refs)])
    return np.asarray(stats, dtype=np.float64)


def _score_from_sums(metric: Metric, sums: np.ndarray) -> float:
    return float(metric._compute_score_from_stats(sums).score)


def _bootstrap_sums(stats: Sequence[np.ndarray], samples: int, seed: int) -> list[np.ndarray]:
    """Column sums of every statistics matrix over the same bootstrap resamples.

    Returns one ``(samples, k_i)`` array per input. All inputs share the same
    resampled sentence indices, which is what makes a test *paired*.
    """
    n = stats[0].shape[0]
    rng = np.random.default_rng(seed)
    out = [np.empty((samples, s.shape[1]), dtype=np.float64) for s in stats]
    chunk = max(1, min(samples, _BOOTSTRAP_CHUNK_CELLS // max(n, 1)))
    for start in range(0, samples, chunk):
        m = min(chunk, samples - start)
        # Same call as sacrebleu.significance._bootstrap_resample; consecutive
        # chunks draw the same stream as one big call, so chunking does not
        # change the resamples.
        idx = rng.choice(n, size=(m, n), replace=True)
        # Resample = multiplicity of each sentence; sums = weights @ stats.
        flat = (idx + (np.arange(m) * n)[:, None]).ravel()
        weights = np.bincount(flat, minlength=m * n).reshape(m, n).astype(np.float64)
        for o, s in zip(out, stats):
            o[start : start + m] = weights @ s
    return out


def _ci95(samples: np.ndarray) -> list[float]:
    # The same order statistics as sacreBLEU's estimate_ci (index n//40 from
    # each end), so high - low == 2 * sacreBLEU's "± ci" for the same resamples.
    s = np.sort(samples)
    k = len(s) // 40
    return [float(s[k]), float(s[len(s) - k - 1])]


def corpus_scores(
    hyps: Sequence[str],
    refs: Sequence[str],
    bootstrap_samples: int = 1000,
    seed: int = 12345,
) -> dict[str, Any]:
    """Corpus BLEU, chrF and TER with seeded 95% bootstrap confidence intervals.

    The point scores are exactly ``sacrebleu.corpus_bleu / corpus_chrf /
    corpus_ter`` with default settings (BLEU 13a, chrF2, TER). The interval is
    the 2.5th-97.5th percentile of the metric over ``bootstrap_samples``
    resamples of the test sentences (with replacement), drawn with
    ``numpy.random.default_rng(seed)``: deterministic for a given seed, and
    the same resamples ``sacrebleu --confidence`` uses for that seed.
    ``corpus_score(n_bootstrap=...)`` is not used because its seed can only be
    set through the ``SACREBLEU_SEED`` environment variable and it only exposes
    a symmetric ``mean ± half-width`` around the *bootstrap mean* (private
    ``Score._mean`` / ``Score._ci``), not an interval.

    Args:
        hyps: system outputs, one detokenized sentence each.
        refs: one reference per hypothesis.
        bootstrap_samples: resamples for the CI; 0 or 1 disables it
            (``ci95`` is then ``None``).
        seed: RNG seed for the resampling.

    Returns:
        ``{"bleu"|"chrf"|"ter": {"score", "ci95": [low, high] | None,
        "signature"}, "bleu_details": {...}, "n_sentences": int,
        "bootstrap": {"samples", "seed"}}``. Signatures gain ``bs``/``seed``
        fields when a CI is computed, as with ``sacrebleu --confidence``.

    Raises:
        ReportError: empty or non-parallel input.
    """
    check_parallel(hyps, refs, "hypotheses", "references")
    _check_nonempty(hyps)
    if bootstrap_samples < 0:
        raise ReportError(f"bootstrap_samples must be >= 0, got {bootstrap_samples}")
    do_bootstrap = bootstrap_samples > 1

    metrics = _new_metrics()
    stats = {name: _sufficient_stats(metric, hyps, refs) for name, metric in metrics.items()}
    sums = dict(zip(stats, _bootstrap_sums(list(stats.values()), bootstrap_samples, seed))) if do_bootstrap else {}

    result: dict[str, Any] = {}
    for name, metric in metrics.items():
        score = metric._compute_score_from_stats(stats[name].sum(axis=0))
        signature = metric.get_signature()
        ci = None
        if do_bootstrap:
            boot = np.array([_score_from_sums(metric, row) for row in sums[name]])
            ci = _ci95(boot)
            signature.update("bs", bootstrap_samples)
            signature.update("seed", seed)
        result[name] = {"score": float(score.score), "ci95": ci, "signature": str(signature)}
        if name == "bleu":
            result["bleu_details"] = {
                "precisions": [float(p) for p in score.precisions],
                "bp": float(score.bp),
                "sys_len": int(score.sys_len),
                "ref_len": int(score.ref_len),
                "ratio": float(score.sys_len / score.ref_len) if score.ref_len else 0.0,
                "counts": [int(c) for c in score.counts],
                "totals": [int(t) for t in score.totals],
            }
    result["n_sentences"] = len(hyps)
    result["bootstrap"] = {"samples": bootstrap_samples if do_bootstrap else 0, "seed": seed}
    return result


def paired_bootstrap(
    hyps: Sequence[str],
    other_hyps: Sequence[str],
    refs: Sequence[str],
    samples: int = 1000,
    seed: int = 12345,
    *,
    system_name: str = "system",
    other_name: str = "other",
) -> dict[str, Any]:
    """Koehn's (2004) paired bootstrap test of ``hyps`` against ``other_hyps``.

    Both systems are scored on the *same* ``samples`` resamples of the test
    sentences (seeded, drawn as in :func:`corpus_scores`). For the observed
    winner the p-value is the (add-one smoothed) fraction of resamples in which
    it does *not* beat the loser, ``(1 + #{d_i <= 0}) / (samples + 1)`` with
    ``d_i`` oriented toward the winner; identical systems get ``p = 1``. It is
    significant when ``p < 0.05``, i.e. the winner wins in more than ~95% of
    the resamples.

    ``sacrebleu.significance.PairedTest(test_type="bs")`` is not used: its
    seed can only come from the ``SACREBLEU_SEED`` environment variable (and
    a seed of 0 silently means "unseeded"), and its p-value is the Moses
    variant (two-sided, on centred absolute differences) rather than Koehn's.

    Returns:
        ``{"method", "samples", "seed", "system_name", "other_name",
        "bleu"|"chrf": {"system", "other", "difference", "difference_ci95",
        "p_value", "significant", "better", "win_fraction", "signature"}}``
        where ``difference = system - other`` and ``better`` is the name of the
        better-scoring system (or ``"tie"``).

    Raises:
        ReportError: empty or non-parallel inputs, or ``samples < 1``.
    """
    check_parallel(hyps, refs, f"{system_name} hypotheses", "references")
    check_parallel(other_hyps, refs, f"{other_name} hypotheses", "references")
    _check_nonempty(hyps)
    if samples < 1:
        raise ReportError(f"the paired bootstrap needs at least 1 sample, got {samples}")

    metrics = _new_metrics(("bleu", "chrf"))
    matrices: list[np.ndarray] = []
    for metric in metrics.values():
        matrices.append(_sufficient_stats(metric, hyps, refs))
        matrices.append(_sufficient_stats(metric, other_hyps, refs))
    boot = _bootstrap_sums(matrices, samples, seed)

    result: dict[str, Any] = {
        "method": "paired bootstrap resampling (Koehn, 2004)",
        "samples": samples,
        "seed": seed,
        "system_name": system_name,
        "other_name": other_name,
    }
    for i, (name, metric) in enumerate(metrics.items()):
        sys_stats, oth_stats = matrices[2 * i], matrices[2 * i + 1]
        sys_score = _score_from_sums(metric, sys_stats.sum(axis=0))
        oth_score = _score_from_sums(metric, oth_stats.sum(axis=0))
        sys_boot = np.array([_score_from_sums(metric, row) for row in boot[2 * i]])
        oth_boot = np.array([_score_from_sums(metric, row) for row in boot[2 * i + 1]])
        deltas = sys_boot - oth_boot
        diff = sys_score - oth_score
        if diff > 0:
            losses, better = int(np.sum(deltas <= 0)), system_name
        elif diff < 0:
            losses, better = int(np.sum(deltas >= 0)), other_name
        else:
            losses, better = samples, "tie"
        p_value = min(1.0, (losses + 1) / (samples + 1))
        signature = metric.get_signature()
        signature.update("bs", samples)
        signature.update("seed", seed)
        result[name] = {
            "system": sys_score,
            "other": oth_score,
            "difference": float(diff),
            "difference_ci95": _ci95(deltas),
            "p_value": float(p_value),
            "significant": bool(p_value < 0.05),
            "better": better,
            "win_fraction": float(np.mean(deltas > 0)),
            "signature": str(signature),
        }
    return result


# --------------------------------------------------------------------------- #
# BLEU by sentence length                                                      #
# --------------------------------------------------------------------------- #


def _bucket_labels(edges: Sequence[int]) -> list[str]:
    lows = [0, *edges]
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(lows, edges)]
    labels.append(f"{lows[-1]}+")
    return labels


def bleu_by_length(
    source_lengths: Sequence[int],
    hyps: Sequence[str],
    refs: Sequence[str],
    bucket_edges: Sequence[int] = (10, 20, 30, 40, 50),
) -> list[dict[str, Any]]:
    """Corpus BLEU and chrF per source-length bucket (Bahdanau et al., 2015, Fig. 2).

    With the default edges the buckets are ``0-9, 10-19, 20-29, 30-39, 40-49,
    50+`` source words. Each bucket is scored as its own corpus (corpus-level
    BLEU, not an average of sentence BLEU). Empty buckets are omitted, so the
    ``n_sentences`` of the rows sum to ``len(hyps)``.

    Returns:
        Rows ``{"bucket": "10-19", "n_sentences": int, "bleu": float,
        "chrf": float}`` in increasing length order.

    Raises:
        ReportError: non-parallel inputs, negative lengths or bad edges.
    """
    check_parallel(hyps, refs, "hypotheses", "references")
    check_parallel(source_lengths, refs, "source lengths", "references")
    edges = [int(e) for e in bucket_edges]
    if any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ReportError(f"bucket edges must be positive and increasing, got {list(bucket_edges)}")
    if any(int(n) < 0 for n in source_lengths):
        raise ReportError("source lengths must be >= 0")

    labels = _bucket_labels(edges)
    members: list[list[int]] = [[] for _ in labels]
    for i, length in enumerate(source_lengths):
        # Index of the first edge above the length = the bucket it falls in.
        members[int(np.searchsorted(edges, int(length), side="right"))].append(i)

    rows = []
    for label, idx in zip(labels, members):
        if not idx:
            continue
        bucket_hyps = [hyps[i] for i in idx]
        bucket_refs = [[refs[i] for i in idx]]
        rows.append(
            {
                "bucket": label,
                "n_sentences": len(idx),
                "bleu": float(BLEU().corpus_score(bucket_hyps, bucket_refs).score),
                "chrf": float(CHRF().corpus_score(bucket_hyps, bucket_refs).score),
            }
        )
    return rows
