"""``nmt-embed``: the phrase representation of each input line, its nearest neighbours, a map.

    nmt-embed ckpt=outputs/RUN input=data/phrases/es.txt output=phrases.npy plot=phrases.png
    nmt-embed ckpt=outputs/RUN input=phrases.txt output=phrases.tsv neighbours=5
    nmt-embed ckpt=outputs/RUN words=true input=data/phrases/es.txt output=words.npy plot=words.png

One vector per input line, in order: the encoder's summary c for the Cho et al. model
(the representation the paper is named after), the mean of the annotations for an
attention model. ``output=`` ending in ``.npy`` gets an (N, D) float32 array, any other
name a TSV of N rows; an empty line gets a row of NaN (and no neighbours, and no place on
the map). Input is read and embedded in chunks and the vectors streamed to disk, as are an
``index=`` file's: memory holds the lines' text, not their vectors.

``neighbours=K`` writes ``line<TAB>rank<TAB>neighbour_line<TAB>cosine<TAB>neighbour`` rows
(lines and ranks from 0), K per non-empty line: its nearest other lines of the input, or
with ``index=FILE`` the nearest lines of that file.

``plot=FILE.png`` draws the first ``plot_points`` non-empty lines in 2-D (t-SNE, or PCA for
a few points; ``nmt.plots.map_2d``), each labelled with its text: the paper's Fig. 5.
``words=true`` embeds words instead of lines: the source embedding of every SentencePiece
piece that is a whole word (the paper's Fig. 4), one row per word of ``OUTPUT.words.txt``;
with ``input=`` only the words found in it, most frequent first (a tokenizer shared by both
languages holds target words too, which the source side never trained).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nmt.commands.app import hydra_command
from nmt.commands.files import check_input, check_not_overwritten, check_output, count_lines, input_chunks
from nmt.config import EmbedConfig
from nmt.errors import SettingError
from nmt.progress import ProgressBar

if TYPE_CHECKING:  # torch: imported when a model is loaded
    from nmt.inference import Translator
from nmt.output_files import OutputFiles
from nmt.plots import map_2d, plot_phrase_map

log = logging.getLogger(__name__)


def embed_stream(translator: Translator, cfg: EmbedConfig, path: str | None, raw_path: Path) -> tuple[list[str], int]:
    """Embed every line of ``path`` (stdin: None) chunk by chunk into the float32 file ``raw_path``;
    returns the lines (for the neighbour table and the map) and the vectors' width."""
    from nmt.inference import embed_ids, source_ids

    lines, width = [], embed_ids(translator, [[]]).shape[1]  # no input still has the model's width
    total = count_lines(path) if path is not None and Path(path).is_file() else None  # a pipe is read once only
    with (
        open(raw_path, "wb") as raw,
        ProgressBar(total, "embedding", "lines", enabled=path is not None or not sys.stdin.isatty()) as bar,
    ):
        for chunk in input_chunks(path, cfg.replace_invalid_utf8):
            before = bar.count
            vectors = embed_ids(translator, source_ids(translator, chunk, cfg.max_source_subwords), cfg.batch_tokens, bar)
            raw.write(vectors.astype(np.float32).tobytes())
            width = vectors.shape[1]
            lines += chunk
            bar.update(len(chunk) - (bar.count - before))  # the empty lines, which skip the model
    return lines, width


def raw_vectors(raw_path: Path, rows: int, width: int) -> np.ndarray:
    """The float32 rows of ``raw_path``, memory-mapped."""
    if not rows:
        return np.zeros((0, width), dtype=np.float32)
    return np.memmap(raw_path, dtype=np.float32, mode="r", shape=(rows, width))


def write_vectors(raw_path: Path, rows: int, width: int, output: str, outputs: OutputFiles) -> None:
    """The float32 rows of ``raw_path`` as ``output`` (.npy, or TSV), read and written block by
    block (read, not memory-mapped: the process's memory stays flat), through ``outputs``."""

    def blocks(size: int):
        with open(raw_path, "rb") as raw:
            for _ in range(0, rows, size):
                yield np.fromfile(raw, dtype="<f4", count=size * width).reshape(-1, width)

    if output.endswith(".npy"):
        with outputs.open(output, binary=True) as out:
            np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": (rows, width)})
            for block in blocks(8192):
                out.write(block.tobytes())
        return
    with outputs.open(output) as out:
        for block in blocks(1024):
            out.write("".join("\t".join(f"{v:.6g}" for v in row) + "\n" for row in block))


def _unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled to length 1 (NaN or zero rows to 0), and which rows are valid."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    valid = (np.isfinite(norms) & (norms > 0))[:, 0]
    return np.where(valid[:, None], x / np.where(valid[:, None], norms, 1), 0).astype(np.float32), valid


def nearest(queries: np.ndarray, keys: np.ndarray, k: int, exclude_self: bool, query_block: int = 1024, key_block: int = 16384):
    """For each valid query row, the ``k`` key rows of highest cosine similarity, best first
    (invalid rows never match; equal similarities in row order), over blocks of both so that memory stays bounded
    (a query block's running best and one block of similarities): yields (row, [(key, cosine), ...])."""
    for start in range(0, len(queries), query_block):
        block, valid_queries = _unit_rows(queries[start : start + query_block])
        best_sims = np.full((len(block), 0), -np.inf, dtype=np.float32)
        best_keys = np.zeros((len(block), 0), dtype=np.int64)
        for key_start in range(0, len(keys), key_block):
            key_rows, valid_keys = _unit_rows(keys[key_start : key_start + key_block])
            sims = block @ key_rows.T
            sims[:, ~valid_keys] = -np.inf
            ids = np.broadcast_to(np.arange(key_start, key_start + len(key_rows)), sims.shape)
            if exclude_self:
                sims[ids == np.arange(start, start + len(block))[:, None]] = -np.inf
            best_sims, best_keys = np.concatenate([best_sims, sims], 1), np.concatenate([best_keys, ids], 1)
            if best_sims.shape[1] > k:  # keep the k best: a partition, linear in the block's width
                keep = np.argpartition(-best_sims, k - 1, axis=1)[:, :k]
                # A partition breaks ties at the k-th similarity arbitrarily: where there are
                # such ties (identical lines), sort that row in full, which keeps the lower rows.
                kth = np.take_along_axis(best_sims, keep, 1).min(1, keepdims=True)
                for row in np.flatnonzero((best_sims >= kth).sum(1) > k):
                    keep[row] = np.lexsort((best_keys[row], -best_sims[row]))[:k]
                best_sims, best_keys = np.take_along_axis(best_sims, keep, 1), np.take_along_axis(best_keys, keep, 1)
        order = np.lexsort((best_keys, -best_sims), axis=1)
        best_sims, best_keys = np.take_along_axis(best_sims, order, 1), np.take_along_axis(best_keys, order, 1)
        for offset in np.flatnonzero(valid_queries):  # an empty line has no neighbours
            found = [(int(j), float(s)) for j, s in zip(best_keys[offset], best_sims[offset]) if np.isfinite(s)]
            yield start + int(offset), found


def plotted_rows(vectors: np.ndarray, cfg: EmbedConfig) -> np.ndarray:
    """The rows with a vector (an error where there is none)."""
    rows = np.flatnonzero(np.isfinite(np.asarray(vectors, dtype=np.float32)).all(1) & (np.abs(vectors).sum(1) > 0))
    if not len(rows):
        raise SettingError(f"plot={cfg.plot}: no non-empty line to draw")
    return rows


def draw_map(vectors: np.ndarray, labels: list[str], cfg: EmbedConfig, title: str, outputs: OutputFiles) -> None:
    """The first ``plot_points`` valid rows as a labelled 2-D map in ``cfg.plot``."""
    rows = plotted_rows(vectors, cfg)
    if len(rows) > cfg.plot_points:
        log.info("plot=%s: the first %d of %d rows (plot_points=)", cfg.plot, cfg.plot_points, len(rows))
        rows = rows[: cfg.plot_points]
    points, method = map_2d(np.asarray(vectors[rows]), cfg.seed)
    with outputs.open(cfg.plot, binary=True) as out:
        plot_phrase_map(points, [labels[i] for i in rows], out, f"{title} ({method}, {len(rows)} points)")


def check_settings(cfg: EmbedConfig) -> str:
    """Every file setting checked before the model is loaded; returns the neighbours' file."""
    if cfg.index is not None and not cfg.neighbours:
        raise SettingError(f"index={cfg.index} is the candidates of neighbours=K: give neighbours= too")
    check_input(cfg.input)
    if cfg.index is not None:
        check_input(cfg.index, "a file of candidate phrases, one per line", "index")
    if cfg.plot is not None and not cfg.plot.endswith(".png"):
        raise SettingError(f"plot={cfg.plot}: give a file name ending in .png")
    neighbours_output = cfg.neighbours_output or str(Path(cfg.output).with_suffix(".neighbours.tsv"))
    outputs = {"output": cfg.output, "plot": cfg.plot, "neighbours_output": neighbours_output if cfg.neighbours else None}
    if cfg.words:
        outputs["words output"] = str(Path(cfg.output).with_suffix(".words.txt"))
    for setting, path in outputs.items():
        check_output(path, cfg.input, setting)
    named = [(s, Path(p).resolve()) for s, p in outputs.items() if p is not None]
    for i, (setting, path) in enumerate(named):
        if any(path == other for _, other in named[:i]):
            raise SettingError(f"{setting}={path} is also another output's file: give it a file of its own")
    check_not_overwritten([p for _, p in named], {"index": cfg.index}, "choose other outputs")
    return neighbours_output


def run_embed(cfg: EmbedConfig) -> int:
    from nmt.inference import load_translator, source_word_vectors

    neighbours_output = check_settings(cfg)
    translator = load_translator(cfg.ckpt, cfg.device, precision=cfg.precision)
    with tempfile.TemporaryDirectory(dir=Path(os.path.realpath(cfg.output)).parent, prefix=".nmt-embed.") as tmp:
        # Everything that can fail (reading, embedding, an empty map) comes before the first output is written.
        if cfg.words:
            texts = input_chunks(cfg.input, cfg.replace_invalid_utf8) if cfg.input is not None else None
            labels, word_vectors = source_word_vectors(translator, texts)
            width = word_vectors.shape[1]
            word_vectors.astype(np.float32).tofile(Path(tmp) / "input.f32")
            what = "source words"
        else:
            labels, width = embed_stream(translator, cfg, cfg.input, Path(tmp) / "input.f32")
            what = "lines"
        vectors = raw_vectors(Path(tmp) / "input.f32", len(labels), width)
        candidates, keys = labels, vectors
        if cfg.neighbours and cfg.index is not None:
            candidates, _ = embed_stream(translator, cfg, cfg.index, Path(tmp) / "index.f32")
            keys = raw_vectors(Path(tmp) / "index.f32", len(candidates), width)
        if cfg.plot is not None:
            plotted_rows(vectors, cfg)
        with OutputFiles() as outputs:  # every output appears at the end, or none does
            if cfg.words:
                with outputs.open(str(Path(cfg.output).with_suffix(".words.txt"))) as out:
                    out.write("".join(word + "\n" for word in labels))
            write_vectors(Path(tmp) / "input.f32", len(labels), width, cfg.output, outputs)
            if cfg.neighbours:
                with outputs.open(neighbours_output) as out:
                    for row, found in nearest(vectors, keys, cfg.neighbours, exclude_self=cfg.index is None):
                        out.write(
                            "".join(
                                f"{row}\t{rank}\t{j}\t{cosine:.4f}\t{candidates[j]}\n" for rank, (j, cosine) in enumerate(found)
                            )
                        )
            del keys
            if cfg.plot is not None:
                draw_map(vectors, labels, cfg, f"{what} of {Path(translator.name).parent.name or translator.name}", outputs)
        del vectors  # the memory map, before its file goes
    log.info("embedded %d %s (%d dimensions) with %s into %s", len(labels), what, width, translator.name, cfg.output)
    return 0


main = hydra_command("embed", EmbedConfig, run_embed)

if __name__ == "__main__":
    main()
