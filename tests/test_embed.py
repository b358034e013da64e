"""nmt-embed (issue 16): one vector per input line, nearest neighbours, bounded memory."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from nmt.errors import SettingError
from nmt.inference import embed_ids, load_translator, source_ids
from tests.commands import run_command

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
PHRASES = ["uno dos", "gato perro rojo", "", "uno dos", "casa azul", "  ", "siete ocho nueve diez"]


def embed(*args: str, stdin: str | None = None, fresh_interpreter=False) -> subprocess.CompletedProcess:
    return run_command("nmt.commands.embed", *args, stdin=stdin, text=True, env=ENV, fresh_interpreter=fresh_interpreter)


def test_a_phrase_gets_the_same_vector_wherever_it_stands(any_run):
    translator = load_translator(any_run, "cpu")
    alone = embed_ids(translator, source_ids(translator, ["gato perro rojo"]))
    for batch in (PHRASES, ["siete ocho nueve diez uno dos tres"] * 5 + ["gato perro rojo"]):
        vectors = embed_ids(translator, source_ids(translator, batch), batch_tokens=16)
        assert np.allclose(vectors[batch.index("gato perro rojo")], alone[0], atol=1e-5)
    vectors = embed_ids(translator, source_ids(translator, PHRASES))
    assert vectors.shape[0] == len(PHRASES) and np.isnan(vectors[[2, 5]]).all()
    assert np.isfinite(vectors[[0, 1, 3, 4, 6]]).all()


def test_vectors_and_neighbours_through_the_command_line(tmp_path, any_run):
    source = tmp_path / "phrases.txt"
    source.write_text("\n".join(PHRASES) + "\n")
    result = embed(f"ckpt={any_run}", f"input={source}", f"output={tmp_path / 'v.npy'}", "neighbours=2")
    assert result.returncode == 0, result.stderr
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.shape[0] == len(PHRASES) and vectors.dtype == np.float32
    rows = [line.split("\t") for line in (tmp_path / "v.neighbours.tsv").read_text().splitlines()]
    assert {int(r[0]) for r in rows} == {0, 1, 3, 4, 6}  # no neighbours for the empty lines
    best = {int(r[0]): int(r[2]) for r in rows if r[1] == "0"}
    assert best[0] == 3 and best[3] == 0  # identical lines are each other's nearest
    assert all(int(r[2]) not in (2, 5) for r in rows)
    assert embed(f"ckpt={any_run}", f"input={source}", f"output={tmp_path / 'v.tsv'}").returncode == 0
    table = [line.split("\t") for line in (tmp_path / "v.tsv").read_text().splitlines()]
    assert len(table) == len(PHRASES)
    assert np.allclose(np.array(table, dtype=np.float32), vectors, atol=1e-5, equal_nan=True)
    # No input at all is zero rows of the model's width.
    assert embed(f"ckpt={any_run}", f"output={tmp_path / 'none.npy'}", stdin="").returncode == 0
    assert np.load(tmp_path / "none.npy").shape == (0, vectors.shape[1])


def test_neighbours_among_an_index_of_candidates(tmp_path, any_run):
    index = tmp_path / "index.txt"
    index.write_text("casa azul\nuno dos\nnueve\n")
    result = embed(
        f"ckpt={any_run}", f"output={tmp_path / 'v.npy'}", "neighbours=1", f"index={index}", stdin="uno dos\ncasa azul\n"
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in (tmp_path / "v.neighbours.tsv").read_text().splitlines()]
    assert [(r[0], r[2], r[4]) for r in rows] == [("0", "1", "uno dos"), ("1", "0", "casa azul")]
    assert float(rows[0][3]) == pytest.approx(1.0, abs=1e-4)


def test_bad_input_gets_the_same_one_line_errors_as_nmt_translate(tmp_path, any_run):
    missing = embed(f"ckpt={any_run}", f"input={tmp_path / 'nope.txt'}", f"output={tmp_path / 'v.npy'}")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"error: input={tmp_path / 'nope.txt'}: no such file; give a text file, one "
        "sentence per line (or leave input= out and pipe it to stdin)"
    )
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"uno dos\n\xff\n")
    invalid = embed(f"ckpt={any_run}", f"input={bad}", f"output={tmp_path / 'v.npy'}")
    assert invalid.returncode == 1
    assert invalid.stderr.strip().splitlines()[-1] == (
        f"error: {bad}:2: invalid UTF-8 (invalid start byte at byte 1 of the line); re-encode the input as UTF-8"
    )
    assert sorted(os.listdir(tmp_path)) == ["bad.txt"]  # no output, no temporary files
    # A failure after the lines are embedded (a bad index, nothing to draw) writes no output either.
    bad_index = embed(f"ckpt={any_run}", f"output={tmp_path / 'v.npy'}", "neighbours=1", f"index={bad}", stdin="uno dos\n")
    assert bad_index.returncode == 1 and f"error: {bad}:2: invalid UTF-8" in bad_index.stderr
    empty = embed(f"ckpt={any_run}", f"output={tmp_path / 'v.npy'}", "neighbours=1", f"plot={tmp_path / 'm.png'}", stdin="\n\n")
    assert empty.returncode == 1 and empty.stderr.strip().endswith(
        f"error: plot={tmp_path / 'm.png'}: no non-empty line to draw"
    )
    assert sorted(os.listdir(tmp_path)) == ["bad.txt"]


def test_an_index_without_neighbours_is_refused():
    from nmt.commands.embed import check_settings
    from nmt.config import EmbedConfig

    with pytest.raises(SettingError, match=r"^index=c.txt is the candidates of neighbours=K: give neighbours= too"):
        check_settings(EmbedConfig(ckpt="run", output="v.npy", index="c.txt"))


def is_png(path) -> bool:
    from matplotlib.image import imread

    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and imread(path).ndim == 3


def test_the_map_is_a_png_of_the_non_empty_lines(tmp_path, any_run):
    source = tmp_path / "phrases.txt"
    source.write_text("\n".join(PHRASES) + "\n")
    result = embed(
        f"ckpt={any_run}",
        f"input={source}",
        f"output={tmp_path / 'v.npy'}",
        f"plot={tmp_path / 'map.png'}",
        fresh_interpreter=True,
    )
    assert result.returncode == 0, result.stderr
    assert is_png(tmp_path / "map.png")
    refused = embed(f"ckpt={any_run}", f"input={source}", f"output={tmp_path / 'w.npy'}", f"plot={tmp_path / 'map.jpg'}")
    assert (
        refused.returncode == 1
        and refused.stderr.strip() == f"error: plot={tmp_path / 'map.jpg'}: give a file name ending in .png"
    )
    assert not (tmp_path / "w.npy").exists()


def test_map_2d_is_seeded_t_sne_and_pca_for_few_points():
    from nmt.plots import MIN_TSNE_POINTS, map_2d

    vectors = np.random.default_rng(0).normal(size=(MIN_TSNE_POINTS + 10, 8))
    points, method = map_2d(vectors, seed=3)
    assert method == "t-SNE" and points.shape == (len(vectors), 2)
    assert np.array_equal(points, map_2d(vectors, seed=3)[0])
    few, method = map_2d(vectors[:5], seed=3)
    assert method == "PCA" and few.shape == (5, 2)
    unit = vectors[:5] / np.linalg.norm(vectors[:5], axis=1, keepdims=True)  # PCA of the rows at unit length
    u, s, _ = np.linalg.svd(unit - unit.mean(0), full_matrices=False)
    assert np.allclose(np.abs(few), np.abs(u[:, :2] * s[:2]), atol=1e-6)
    assert map_2d(vectors[:1])[0].shape == (1, 2)


def test_words_are_whole_word_pieces_with_their_source_embeddings(tmp_path, any_run):
    from nmt.inference import source_word_vectors

    translator = load_translator(any_run, "cpu")
    words, vectors = source_word_vectors(translator)
    sp = translator.tokenizer.src
    assert words and len(words) == len(vectors)
    for word, vector in zip(words, vectors):
        (piece,) = sp.encode(word)
        assert sp.id_to_piece(piece) == "\u2581" + word
        assert np.array_equal(vector, translator.model.src_embed.weight[piece].detach().numpy())
    text = tmp_path / "text.txt"
    text.write_text(f"{words[1]} {words[0]} zzzqqq\n{words[1]}\n")
    result = embed(
        f"ckpt={any_run}",
        "words=true",
        f"input={text}",
        f"output={tmp_path / 'w.npy'}",
        "neighbours=1",
        f"plot={tmp_path / 'words.png'}",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "w.words.txt").read_text().splitlines() == [words[1], words[0]]  # most frequent first
    assert np.array_equal(np.load(tmp_path / "w.npy"), vectors[[1, 0]])
    rows = [line.split("\t") for line in (tmp_path / "w.neighbours.tsv").read_text().splitlines()]
    assert [(r[0], r[2], r[4]) for r in rows] == [("0", "1", words[0]), ("1", "0", words[1])]
    assert is_png(tmp_path / "words.png")


def test_blockwise_neighbours_equal_the_full_similarity_matrix():
    from nmt.commands.embed import nearest

    rng = np.random.default_rng(1)
    queries = rng.normal(size=(23, 6)).astype(np.float32)
    queries[[4, 9]] = np.nan
    queries[7] = queries[2]
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = np.nan_to_num(unit @ unit.T, nan=-np.inf)
    np.fill_diagonal(sims, -np.inf)
    blocked = dict(nearest(queries, queries, 3, exclude_self=True, query_block=5, key_block=4))
    assert sorted(blocked) == [i for i in range(23) if i not in (4, 9)]
    for row, found in blocked.items():
        expected = np.argsort(-sims[row], kind="stable")[:3]
        assert [j for j, _ in found] == expected.tolist()
        assert np.allclose([c for _, c in found], sims[row, expected], atol=1e-5)
    assert blocked[2][0][0] == 7 and blocked[7][0][0] == 2


def test_neighbours_that_tie_come_in_row_order_whatever_the_blocks():
    # Identical lines tie exactly (one-hot vectors: every product but one is zero); a partition
    # alone kept arbitrary ones among them, which changed with the block size.
    from nmt.commands.embed import nearest

    rng = np.random.default_rng(0)
    keys = rng.normal(size=(410, 8)).astype(np.float32) * 0.1
    keys[3:403] = np.eye(8, dtype=np.float32)[0]
    query = np.array([[1.0, 0.5, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    for key_block in (16384, 7, 64):
        for k in (1, 5):
            found = dict(nearest(query, keys, k, exclude_self=False, key_block=key_block))[0]
            assert [j for j, _ in found] == list(range(3, 3 + k)), (key_block, k)
