"""BLEU / chrF / TER evaluation reports (the layer under ``nmt-evaluate``).

Everything metric-related goes through sacreBLEU so that the numbers are the
ones anybody else gets from ``sacrebleu refs.txt < hyps.txt`` and come with a
reproducibility signature. Around it this module adds what a paper-style
evaluation needs and sacreBLEU's Python API does not give cleanly:

* strict line reading (one segment per ``\\n``, never ``str.splitlines``),
* a hard error on non-parallel files (sacreBLEU's Python API silently
  ``zip``-truncates to the shorter side),
* seeded 95% bootstrap confidence intervals as ``[low, high]``,
* Koehn's (2004) paired bootstrap test between two systems,
* BLEU by source-sentence length (Bahdanau et al., 2015, Fig. 2) with a plot,
* ``report.json`` / ``report.md`` / ``hypotheses.txt`` / ``bleu_by_length.png``.

Bootstrap resampling works on sacreBLEU's per-sentence sufficient statistics
(``Metric._extract_corpus_statistics`` / ``_compute_score_from_stats``), the
same private hooks ``sacrebleu.significance`` itself uses; extracting them once
and resampling sums is orders of magnitude faster than re-scoring strings.
The resample indices are drawn exactly as ``sacrebleu --confidence`` draws them
(``numpy.random.default_rng(seed).choice(n, (samples, n))``), so for the same
seed the bootstrap distribution is the one sacreBLEU's CLI would produce.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sacrebleu
from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric

from nmt import data

log = logging.getLogger(__name__)

__all__ = [
    "REQUIRED_REPORT_KEYS",
    "ReportError",
    "bleu_by_length",
    "build_report",
    "check_parallel",
    "corpus_scores",
    "make_examples",
    "paired_bootstrap",
    "plot_bleu_by_length",
    "read_lines",
    "render_markdown",
    "write_report",
]

# Keys ``write_report`` insists on: the markdown report cannot be rendered
# without them, and downstream tooling reads them from report.json.
REQUIRED_REPORT_KEYS = ("bleu", "chrf", "ter", "signatures", "n_sentences", "bleu_by_length")

# Human-readable metric names, in report order. TER is an error rate.
_METRIC_LABELS = {"bleu": "BLEU", "chrf": "chrF", "ter": "TER"}

# Bound the bootstrap's resample-weight matrix to ~4M cells per chunk (~32 MB
# of float64) so that a 100k-sentence test set does not need gigabytes.
_BOOTSTRAP_CHUNK_CELLS = 4_000_000


class ReportError(ValueError):
    """A problem with the user's input files or arguments (shown without a traceback)."""


# --------------------------------------------------------------------------- #
# Input                                                                        #
# --------------------------------------------------------------------------- #


def read_lines(path: str | Path, setting: str | None = None) -> list[str]:
    """One segment per ``\\n``-terminated line (``nmt.data.read_lines``: never
    ``str.splitlines``, which would shift hypotheses against references).
    ``setting`` (e.g. ``"refs"``) names the command-line setting in errors.

    Raises:
        ReportError: the file cannot be read, or is not valid UTF-8 (the
            message names the file and the 1-based line number).
    """
    try:
        return data.read_lines(Path(path))
    except OSError as exc:
        where = f"{setting}={path}" if setting else str(path)
        raise ReportError(f"cannot read {where}: {exc.strerror or exc}") from exc
    except data.CorpusError as exc:
        raise ReportError(str(exc)) from None


def check_parallel(
    hyps: Sequence[str], refs: Sequence[str], hyps_name: str, refs_name: str
) -> None:
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


# --------------------------------------------------------------------------- #
# Scores                                                                       #
# --------------------------------------------------------------------------- #


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


def plot_bleu_by_length(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str) -> Path:
    """Plot BLEU (and chrF) against the source-length bucket as a PNG.

    Uses ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot), so it
    works on headless machines, never opens a window and leaves pyplot's global
    state alone. Each BLEU point is annotated with its sentence count, since a
    bucket of a dozen long sentences is far noisier than one of a thousand.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if rows:
        xs = list(range(len(rows)))
        bleu = [float(r["bleu"]) for r in rows]
        ax.plot(xs, bleu, marker="o", label="BLEU")
        if all("chrf" in r for r in rows):
            ax.plot(xs, [float(r["chrf"]) for r in rows], marker="s", linestyle="--",
                    color="0.55", label="chrF")
            ax.legend(loc="best", frameon=False)
        for x, y, r in zip(xs, bleu, rows):
            ax.annotate(f"n={r['n_sentences']}", (x, y), textcoords="offset points",
                        xytext=(0, 7), ha="center", fontsize=8)
        ax.set_xticks(xs, [str(r["bucket"]) for r in rows])
        top = max([*bleu, *(float(r.get("chrf", 0.0)) for r in rows)])
        ax.set_ylim(0, min(100.0, top + 10.0) if top > 0 else 1.0)
    else:
        ax.text(0.5, 0.5, "no sentences", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("source sentence length (words)")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# --------------------------------------------------------------------------- #
# Report assembly                                                              #
# --------------------------------------------------------------------------- #


def _jsonable(value: Any) -> Any:
    # Settings arrive as dataclasses, Paths, numpy scalars, tuples...; make
    # them plain JSON so report.json never fails at the very end of a run.
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def make_examples(
    sources: Sequence[str] | None,
    refs: Sequence[str],
    hyps: Sequence[str],
    n: int = 5,
    seed: int = 12345,
) -> list[dict[str, Any]]:
    """Pick ``n`` example sentences (seeded, in corpus order) for the report.

    Returns:
        ``[{"line": 1-based line number, "source": str | None,
        "reference": str, "hypothesis": str}, ...]``.
    """
    check_parallel(hyps, refs, "hypotheses", "references")
    if sources is not None:
        check_parallel(sources, refs, "sources", "references")
    # A random sample rather than the first n lines: test sets are often
    # ordered by document, and the first lines are headlines.
    chosen = sorted(random.Random(seed).sample(range(len(hyps)), min(n, len(hyps))))
    return [
        {
            "line": i + 1,
            "source": sources[i] if sources is not None else None,
            "reference": refs[i],
            "hypothesis": hyps[i],
        }
        for i in chosen
    ]


def build_report(
    scores: Mapping[str, Any],
    by_length: Sequence[Mapping[str, Any]] | None = None,
    *,
    speed: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    decoding: Mapping[str, Any] | None = None,
    compare: Mapping[str, Any] | None = None,
    examples: Sequence[Mapping[str, Any]] | None = None,
    corpus: Mapping[str, Any] | str | None = None,
    checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Assemble the ``report.json`` dict from the pieces of an evaluation.

    Args:
        scores: the output of :func:`corpus_scores`.
        by_length: rows from :func:`bleu_by_length` (``None``/empty when no
            sources were available).
        speed: ``{"sentences_per_s", "tgt_tokens_per_s", "seconds"}``.
        model: model settings (dict or dataclass).
        decoding: decoding settings (beam size, length penalty, ...).
        compare: the output of :func:`paired_bootstrap`, or ``None``.
        examples: e.g. from :func:`make_examples`.
        corpus: a name/split dict or file names.
        checkpoint: the evaluated checkpoint, if any.
    """
    return _jsonable(
        {
            "bleu": scores["bleu"]["score"],
            "chrf": scores["chrf"]["score"],
            "ter": scores["ter"]["score"],
            "ci95": {name: scores[name]["ci95"] for name in _METRIC_LABELS},
            "signatures": {name: scores[name]["signature"] for name in _METRIC_LABELS},
            "bleu_details": scores.get("bleu_details"),
            "bootstrap": scores.get("bootstrap"),
            "n_sentences": scores["n_sentences"],
            "bleu_by_length": list(by_length or []),
            "speed": speed,
            "model": model,
            "decoding": decoding,
            "compare": compare,
            "examples": list(examples or []),
            "corpus": corpus,
            "checkpoint": checkpoint,
            "sacrebleu_version": sacrebleu.__version__,
        }
    )


# --------------------------------------------------------------------------- #
# Markdown                                                                     #
# --------------------------------------------------------------------------- #


def _md(text: Any) -> str:
    """Escape text for a markdown table cell or list item.

    ``|`` would end a table cell; ``<unk>``-style tokens would be swallowed as
    HTML tags; ``*``, ``_``, backticks and brackets would turn MT output into
    emphasis, code or links.
    """
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = s.replace("\\", "\\\\")
    for ch in "|*_`[]#":
        s = s.replace(ch, "\\" + ch)
    # One segment never spans lines in a table or list item.
    return s.replace("\r", " ").replace("\n", " ")


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{float(value):.{digits}f}"


def _ci_text(ci: Sequence[float] | None) -> str:
    return f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "–"


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    # Nested settings (e.g. model.encoder.hidden_size) read better as dotted
    # keys in a two-column table than as a JSON blob.
    items: list[tuple[str, Any]] = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, name + "."))
        else:
            items.append((name, value))
    return items


def _settings_table(settings: Mapping[str, Any]) -> list[str]:
    lines = ["| Setting | Value |", "|---|---|"]
    for key, value in _flatten(settings):
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value
        lines.append(f"| {_md(key)} | {_md('null' if shown is None else shown)} |")
    return lines


def _corpus_text(corpus: Any) -> str:
    # {"name": "wmt14", "split": "test"} reads best as "wmt14 (test)"; other
    # shapes (e.g. {"hyps": ..., "refs": ...} file names) as key: value pairs.
    if isinstance(corpus, Mapping):
        if corpus.get("name") and set(corpus) <= {"name", "split"}:
            split = corpus.get("split")
            return f"{corpus['name']} ({split})" if split else str(corpus["name"])
        return ", ".join(f"{k}: {v}" for k, v in corpus.items() if v is not None)
    return str(corpus)


def render_markdown(report: Mapping[str, Any], plot_name: str | None = "bleu_by_length.png") -> str:
    """Render a ``build_report`` dict as a human-readable markdown report."""
    out: list[str] = []
    title = "Evaluation report"
    if report.get("corpus"):
        title += f": {_md(_corpus_text(report['corpus']))}"
    out += [f"# {title}", ""]
    if report.get("checkpoint"):
        out.append(f"- Checkpoint: `{report['checkpoint']}`")
    out.append(f"- Sentences: {report['n_sentences']}")
    out.append("")

    # Scores with CIs.
    ci = report.get("ci95") or {}
    boot = report.get("bootstrap") or {}
    out += ["## Scores", "", "| Metric | Score | 95% CI |", "|---|---:|---|"]
    for name, label in _METRIC_LABELS.items():
        suffix = " (lower is better)" if name == "ter" else ""
        out.append(f"| {label}{suffix} | {_num(report[name])} | {_ci_text(ci.get(name))} |")
    out.append("")
    if boot.get("samples"):
        out += [f"95% CIs: percentile bootstrap, {boot['samples']} resamples of the scored "
                f"sentences, seed {boot.get('seed')}.", ""]
    details = report.get("bleu_details")
    if details:
        precisions = "/".join(f"{p:.1f}" for p in details["precisions"])
        out += [f"BLEU n-gram precisions {precisions}, brevity penalty {details['bp']:.3f}, "
                f"hypothesis/reference length {details['sys_len']}/{details['ref_len']} "
                f"(ratio {details.get('ratio', 0.0):.3f}).", ""]

    out += ["### sacreBLEU signatures", "", "```"]
    for name, label in _METRIC_LABELS.items():
        out.append(f"{label}: {report['signatures'][name]}")
    out += ["```", ""]

    compare = report.get("compare")
    if compare:
        sys_name = compare.get("system_name", "system")
        oth_name = compare.get("other_name", "other")
        out += ["## Paired significance test", "",
                f"{_md(sys_name)} vs. {_md(oth_name)}: {compare.get('method', 'paired bootstrap')}, "
                f"{compare.get('samples')} resamples, seed {compare.get('seed')}; "
                "significant when p < 0.05.", "",
                f"| Metric | {_md(sys_name)} | {_md(oth_name)} | Δ | 95% CI of Δ | p | Significant |",
                "|---|---:|---:|---:|---|---:|---|"]
        for name, label in _METRIC_LABELS.items():
            r = compare.get(name)
            if not r:
                continue
            verdict = f"yes ({_md(r['better'])} better)" if r["significant"] else "no"
            out.append(f"| {label} | {_num(r['system'])} | {_num(r['other'])} | "
                       f"{float(r['difference']):+.2f} | {_ci_text(r.get('difference_ci95'))} | "
                       f"{_num(r['p_value'], 4)} | {verdict} |")
        out.append("")

    out += ["## BLEU by source sentence length", ""]
    rows = report.get("bleu_by_length") or []
    if rows:
        out += ["| Source length (words) | Sentences | BLEU | chrF |", "|---|---:|---:|---:|"]
        for r in rows:
            out.append(f"| {_md(r['bucket'])} | {r['n_sentences']} | {_num(r['bleu'])} | "
                       f"{_num(r.get('chrf'))} |")
        out.append("")
        if plot_name:
            out += [f"![BLEU by source sentence length]({plot_name})", ""]
    else:
        out += ["Not available (no source sentences were given).", ""]

    speed = report.get("speed")
    if speed:
        out += ["## Decoding speed", "",
                "| Sentences/s | Target tokens/s | Seconds |", "|---:|---:|---:|",
                f"| {_num(speed.get('sentences_per_s'), 1)} | {_num(speed.get('tgt_tokens_per_s'), 1)} | "
                f"{_num(speed.get('seconds'), 2)} |", ""]

    for key, heading in (("model", "Model settings"), ("decoding", "Decoding settings")):
        settings = report.get(key)
        if settings:
            out += [f"## {heading}", "", *_settings_table(settings), ""]

    examples = report.get("examples") or []
    if examples:
        out += ["## Examples", ""]
        for k, ex in enumerate(examples, 1):
            where = f" (line {ex['line']})" if ex.get("line") is not None else ""
            out.append(f"- **Example {k}**{where}")
            if ex.get("source") is not None:
                out.append(f"  - Source: {_md(ex['source'])}")
            out.append(f"  - Reference: {_md(ex.get('reference', ''))}")
            out.append(f"  - Hypothesis: {_md(ex.get('hypothesis', ''))}")
        out.append("")

    return "\n".join(out).rstrip("\n") + "\n"


def write_report(
    report_dir: str | Path,
    report: Mapping[str, Any],
    hypotheses: Sequence[str],
    examples: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``hypotheses.txt`` and ``bleu_by_length.png``.

    Args:
        report_dir: created if missing; an earlier report there is replaced (with a warning).
        report: the dict from :func:`build_report`; written to JSON as given
            (it must contain at least :data:`REQUIRED_REPORT_KEYS`).
        hypotheses: the scored system outputs, one per line.
        examples: example sentences for the markdown; when given and the
            report has none, they are also stored in ``report.json``.

    Returns:
        ``{"json", "markdown", "hypotheses", "plot"}`` -> paths (no ``"plot"``
        when the report has no by-length rows).

    Raises:
        ReportError: the report lacks a required key.
    """
    missing = [key for key in REQUIRED_REPORT_KEYS if key not in report]
    if missing:
        raise ReportError(f"report is missing required keys: {', '.join(missing)}")
    report = dict(report)
    if examples is not None and not report.get("examples"):
        report["examples"] = _jsonable(list(examples))

    out_dir = Path(report_dir)
    if (out_dir / "report.json").exists():
        log.warning("%s: replacing the report there (report_dir=... keeps reports apart)", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    # A newline inside a hypothesis would shift every later line of
    # hypotheses.txt against the references; keep the file line-parallel.
    clean = []
    for i, hyp in enumerate(hypotheses):
        if "\n" in hyp or "\r" in hyp:
            log.warning("hypothesis %d contains a line break; written with spaces instead", i + 1)
            hyp = hyp.replace("\r", " ").replace("\n", " ")
        clean.append(hyp)
    paths["hypotheses"] = out_dir / "hypotheses.txt"
    paths["hypotheses"].write_text("".join(h + "\n" for h in clean), encoding="utf-8", newline="\n")

    rows = report.get("bleu_by_length") or []
    plot_name = None
    if rows:
        title = "BLEU by source sentence length"
        if report.get("corpus"):
            title += f" ({_corpus_text(report['corpus'])})"
        paths["plot"] = plot_bleu_by_length(rows, out_dir / "bleu_by_length.png", title)
        plot_name = paths["plot"].name
    else:  # never leave an earlier report's plot beside this report
        (out_dir / "bleu_by_length.png").unlink(missing_ok=True)

    paths["json"] = out_dir / "report.json"
    paths["json"].write_text(
        json.dumps(_jsonable(report), indent=2, ensure_ascii=False) + "\n",
        encoding="utf-8", newline="\n",
    )
    paths["markdown"] = out_dir / "report.md"
    paths["markdown"].write_text(render_markdown(report, plot_name), encoding="utf-8", newline="\n")
    return paths
