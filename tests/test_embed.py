"""nmt-embed (issue 16): one vector per input line, nearest neighbours, bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from nmt.inference import embed_ids, load_translator, source_ids

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
PHRASES = ["uno dos", "gato perro rojo", "", "uno dos", "casa azul", "  ", "siete ocho nueve diez"]


@pytest.fixture(params=["cho2014", "rnnsearch"])
def any_run(request):
    return request.getfixturevalue("trained_run" if request.param == "cho2014" else "trained_rnnsearch_run")


def embed(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nmt.commands.embed", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, env=ENV)


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


def test_neighbours_among_an_index_of_candidates(tmp_path, trained_run):
    index = tmp_path / "index.txt"
    index.write_text("casa azul\nuno dos\nnueve\n")
    result = embed(f"ckpt={trained_run}", f"output={tmp_path / 'v.npy'}", "neighbours=1", f"index={index}",
                   stdin="uno dos\ncasa azul\n")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in (tmp_path / "v.neighbours.tsv").read_text().splitlines()]
    assert [(r[0], r[2], r[4]) for r in rows] == [("0", "1", "uno dos"), ("1", "0", "casa azul")]
    assert float(rows[0][3]) == pytest.approx(1.0, abs=1e-4)


def test_bad_input_gets_the_same_one_line_errors_as_nmt_translate(tmp_path, trained_run):
    missing = embed(f"ckpt={trained_run}", f"input={tmp_path / 'nope.txt'}", f"output={tmp_path / 'v.npy'}")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (f"error: input={tmp_path / 'nope.txt'}: no such file; give a text file, one "
                                      "sentence per line (or leave input= out and pipe it to stdin)")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"uno dos\n\xff\n")
    invalid = embed(f"ckpt={trained_run}", f"input={bad}", f"output={tmp_path / 'v.npy'}")
    assert invalid.returncode == 1
    assert invalid.stderr.strip().splitlines()[-1] == (f"error: {bad}:2: invalid UTF-8 (invalid start byte at byte 1 "
                                                       "of the line); re-encode the input as UTF-8")
    assert sorted(os.listdir(tmp_path)) == ["bad.txt"]  # no output, no temporary files
