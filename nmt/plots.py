"""Figures: BLEU by source length (the evaluation report's), an attention model's alignments
(Bahdanau et al. 2015, Fig. 3), two systems' BLEU by source length in one plot (their
Fig. 2), and 2-D maps of phrase or word vectors (Cho et al. 2014, Figs. 4 and 5).
Matplotlib's object API on an Agg canvas: no window, no pyplot state, works on a headless
machine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _figure(width: float, height: float, dpi: int = 110):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Any:
    """The figure as a PNG: into ``path``, a file name (its folder is made) or a binary stream
    (``nmt.commands.files.OutputFiles``: written whole or not at all). Returns ``path``."""
    if hasattr(path, "write"):
        fig.savefig(path, format="png")
        return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_bleu_by_length(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str) -> Path:
    """Plot BLEU (and chrF) against the source-length bucket as a PNG.

    Each BLEU point is annotated with its sentence count, since a
    bucket of a dozen long sentences is far noisier than one of a thousand.

    Returns:
        The path written.
    """
    fig = _figure(6.4, 4.0, dpi=120)
    ax = fig.add_subplot()
    if rows:
        xs = list(range(len(rows)))
        bleu = [float(r["bleu"]) for r in rows]
        ax.plot(xs, bleu, marker="o", label="BLEU")
        if all("chrf" in r for r in rows):
            ax.plot(xs, [float(r["chrf"]) for r in rows], marker="s", linestyle="--", color="0.55", label="chrF")
            ax.legend(loc="best", frameon=False)
        for x, y, r in zip(xs, bleu, rows):
            ax.annotate(f"n={r['n_sentences']}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=8)
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
    return _save(fig, path)


def plot_alignment(
    source: Sequence[str], target: Sequence[str], weights: Sequence[Sequence[float]], path: str | Path, title: str = ""
) -> Path:
    """A heatmap of one sentence's attention weights: source pieces along the top, output
    pieces down the side, white = 0 and black = 1 (as the paper's Fig. 3)."""
    fig = _figure(max(3.0, 0.32 * len(source) + 1.5), max(2.5, 0.3 * len(target) + 1.5))
    ax = fig.add_subplot()
    ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(source)), source, rotation=90, fontsize=8)
    ax.set_yticks(range(len(target)), target, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9, pad=12)
    fig.tight_layout()
    return _save(fig, path)


def plot_bleu_by_length_systems(
    systems: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str = "BLEU by source sentence length"
) -> Path:
    """BLEU against the source-length bucket, one line per system (``nmt.metrics.bleu_by_length`` rows)."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    buckets = next((list(r["bucket"] for r in rows) for rows in systems.values() if rows), [])
    for name, rows in systems.items():
        ax.plot(range(len(rows)), [float(r["bleu"]) for r in rows], marker="o", label=name)
    ax.set_xticks(range(len(buckets)), [str(b) for b in buckets])
    ax.set_xlabel("source sentence length (words)")
    ax.set_ylabel("BLEU")
    ax.set_title(title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="best", frameon=False)
    fig.tight_layout()
    return _save(fig, path)


MIN_TSNE_POINTS = 30  # t-SNE needs several times more points than its perplexity; fewer get PCA


def map_2d(vectors, seed: int = 1):
    """2-D coordinates for rows of ``vectors`` (no NaN), neighbours by cosine staying near: the
    rows scaled to unit length, then t-SNE (scikit-learn, cosine metric, fixed seed) or, for
    fewer than ``MIN_TSNE_POINTS`` rows, PCA. Returns (coordinates (N, 2), method name)."""
    import numpy as np

    x = np.asarray(vectors, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if len(x) < 3:  # PCA of one or two points says nothing: put them on a line
        return np.stack([np.arange(len(x), dtype=np.float64), np.zeros(len(x))], 1), "none"
    if len(x) < MIN_TSNE_POINTS:
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x), "PCA"
    from sklearn.manifold import TSNE

    tsne = TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), metric="cosine", init="pca", random_state=seed)
    return tsne.fit_transform(x), "t-SNE"


def plot_phrase_map(points, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Each point with its label as text (Cho et al. 2014, Figs. 4 and 5); the figure grows
    with the number of points so that a few hundred labels stay legible."""
    side = min(30.0, max(5.0, 0.85 * len(labels) ** 0.5 + 2))
    fig = _figure(side, side)
    ax = fig.add_subplot()
    ax.scatter(points[:, 0], points[:, 1], s=4, color="tab:blue", alpha=0.6)
    for (x, y), label in zip(points, labels):
        ax.annotate(label, (x, y), xytext=(2, 2), textcoords="offset points", fontsize=6.5, alpha=0.85)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
