"""``nmt-embed``: the phrase representation of each input line, and its nearest neighbours.

    nmt-embed ckpt=outputs/RUN input=phrases.txt output=phrases.npy
    nmt-embed ckpt=outputs/RUN input=phrases.txt output=phrases.tsv neighbours=5

One vector per input line, in order: the encoder's summary c for the Cho et al. model
(the representation the paper is named after), the mean of the annotations for an
attention model. ``output=`` ending in ``.npy`` gets an (N, D) float32 array, any other
name a TSV of N rows; an empty line gets a row of NaN (and no neighbours). Input is
read and embedded in chunks, the vectors streamed to disk: memory stays flat.

``neighbours=K`` writes ``line<TAB>rank<TAB>neighbour_line<TAB>cosine<TAB>neighbour`` rows
(lines and ranks from 0), K per non-empty line: its nearest other lines of the input, or
with ``index=FILE`` the nearest lines of that file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from nmt.commands.app import hydra_command
from nmt.commands.files import check_input, check_not_overwritten, check_output, input_chunks, output_stream
from nmt.config import EmbedConfig
from nmt.errors import SettingError
from nmt.inference import Translator, embed_ids, load_translator, source_ids
from nmt.lines import read_lines

log = logging.getLogger(__name__)


def embed_stream(translator: Translator, cfg: EmbedConfig, path: str | None, raw) -> tuple[list[str], int]:
    """Embed every line of ``path`` (stdin: None) chunk by chunk into the binary file ``raw``;
    returns the lines (for the neighbour table) and the vectors' width."""
    lines, width = [], 0
    with tqdm(desc="embedding", unit="line", leave=False, disable=path is None) as bar:
        for chunk in input_chunks(path, cfg.replace_invalid_utf8):
            vectors = embed_ids(translator, source_ids(translator, chunk, cfg.max_source_subwords), cfg.batch_tokens)
            raw.write(vectors.astype(np.float32).tobytes())
            width = vectors.shape[1]
            lines += chunk
            bar.update(len(chunk))
    return lines, width


def write_vectors(raw_path: Path, rows: int, width: int, output: str) -> np.ndarray:
    """The raw float32 rows as ``output`` (.npy, or TSV), written whole or not at all; returns
    them memory-mapped, for the neighbours."""
    vectors = np.memmap(raw_path, dtype=np.float32, mode="r", shape=(rows, width)) if rows else np.zeros((0, width))
    if output.endswith(".npy"):
        with output_stream(output, binary=True) as out:
            np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False,
                                                       "shape": (rows, width)})
            for start in range(0, rows, 65536):
                out.write(np.ascontiguousarray(vectors[start:start + 65536], dtype="<f4").tobytes())
        return vectors
    with output_stream(output) as out:
        for start in range(0, rows, 4096):
            out.write("".join("\t".join(f"{v:.6g}" for v in row) + "\n" for row in vectors[start:start + 4096]))
    return vectors


def nearest(queries: np.ndarray, keys: np.ndarray, k: int, exclude_self: bool):
    """For each query row, the ``k`` key rows of highest cosine similarity (NaN rows never
    match), block by block so that memory stays bounded: yields (row, [(key, cosine), ...])."""
    def unit(x):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return np.where(np.isfinite(norms) & (norms > 0), x / np.where(norms > 0, norms, 1), np.nan)

    keys_unit = np.nan_to_num(unit(np.asarray(keys, dtype=np.float32)), nan=0.0)
    valid_keys = np.isfinite(np.asarray(keys, dtype=np.float32)).all(1)
    for start in range(0, len(queries), 1024):
        block = unit(np.asarray(queries[start:start + 1024], dtype=np.float32))
        sims = np.nan_to_num(block, nan=0.0) @ keys_unit.T
        sims[:, ~valid_keys] = -np.inf
        if exclude_self:
            sims[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        for offset, row in enumerate(sims):
            if not np.isfinite(block[offset]).all():
                continue  # an empty line has no neighbours
            top = np.argsort(-row, kind="stable")[:k]
            yield start + offset, [(int(j), float(row[j])) for j in top if np.isfinite(row[j])]


def run_embed(cfg: EmbedConfig) -> int:
    check_input(cfg.input)
    if cfg.index is not None:
        check_input(cfg.index, "a file of candidate phrases, one per line")
    check_output(cfg.output, cfg.input)
    neighbours_output = cfg.neighbours_output or str(Path(cfg.output).with_suffix(".neighbours.tsv"))
    if cfg.neighbours:
        check_output(neighbours_output, cfg.input)
        if Path(neighbours_output).resolve() == Path(cfg.output).resolve():
            raise SettingError(f"neighbours_output={neighbours_output} is also output=: give it a file of its own")
    check_not_overwritten([Path(cfg.output)], {"index": cfg.index}, "choose another output=")
    translator = load_translator(cfg.ckpt, cfg.device)
    with tempfile.TemporaryDirectory(dir=Path(os.path.realpath(cfg.output)).parent, prefix=".nmt-embed.") as tmp:
        raw_path = Path(tmp) / "vectors.f32"
        with open(raw_path, "wb") as raw:
            lines, width = embed_stream(translator, cfg, cfg.input, raw)
        vectors = write_vectors(raw_path, len(lines), width, cfg.output)
        if cfg.neighbours:
            if cfg.index is not None:
                candidates = read_lines(Path(cfg.index), cfg.replace_invalid_utf8)
                keys = embed_ids(translator, source_ids(translator, candidates, cfg.max_source_subwords),
                                 cfg.batch_tokens)
            else:
                candidates, keys = lines, vectors
            with output_stream(neighbours_output) as out:
                for row, found in nearest(vectors, keys, cfg.neighbours, exclude_self=cfg.index is None):
                    out.write("".join(f"{row}\t{rank}\t{j}\t{cosine:.4f}\t{candidates[j]}\n"
                                      for rank, (j, cosine) in enumerate(found)))
        del vectors
    log.info("embedded %d lines (%d dimensions) with %s into %s", len(lines), width, translator.name, cfg.output)
    return 0


main = hydra_command("embed", EmbedConfig, run_embed)

if __name__ == "__main__":
    main()
