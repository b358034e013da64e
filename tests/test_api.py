"""The Python API (nmt.load, nmt/api.py): plain arguments, the commands' line contract."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import nmt
from nmt.config import DecodeConfig
from nmt.errors import CheckpointError, SettingError
from nmt.inference import load_translator, score_pairs, translate_lines


@pytest.fixture(scope="module")
def lines(word_corpus) -> list[str]:
    return (word_corpus / "test.es").read_text(encoding="utf-8").splitlines()[:8]


def test_translate_is_n_lines_in_n_strings_out_as_the_command_translates(any_run, lines):
    model = nmt.load(any_run, device="cpu")
    given = [lines[0], "", "   ", *lines[1:]]
    out = model.translate(given)
    assert isinstance(out, list) and len(out) == len(given) and out[1] == out[2] == ""
    expected = translate_lines(load_translator(any_run, "cpu"), given, DecodeConfig(beam_size=5))
    assert out == [row[0][0] for row in expected]
    assert model.translate(lines[0]) == out[0]  # a string in, a string out
    assert model.translate(lines, beam_size=1) == [r[0][0] for r in translate_lines(model.translator, lines, DecodeConfig())]


def test_nbest_gives_translations_with_their_scores(trained_run, lines):
    model = nmt.load(trained_run, device="cpu")
    rows = model.translate([lines[0], ""], nbest=3, beam_size=2)  # the beam widens to 3
    assert len(rows) == 2 and len(rows[0]) == 3 and [t.text for t in rows[1]] == [""]
    best = rows[0][0]
    assert isinstance(best, nmt.Translation) and best.text == model.translate(lines[0], beam_size=3)
    assert best.normalized_score >= rows[0][1].normalized_score and best.score < 0


def test_score_and_embed(trained_run, lines):
    model = nmt.load(trained_run, device="cpu")
    pairs = [(lines[0], "one two"), ("", "one"), (lines[1], "")]
    scores = model.score(pairs)
    assert len(scores) == 3 and math.isnan(scores[1]) and math.isnan(scores[2])
    assert scores[0] == score_pairs(model.translator, pairs[:1])[0][0]
    vectors = model.embed([lines[0], "", lines[1]])
    assert vectors.shape[0] == 3 and vectors.dtype == np.float32 and np.isnan(vectors[1]).all()
    assert np.allclose(model.embed(lines[0])[0], vectors[0], atol=1e-5)  # another batch: float rounding only


def test_a_list_of_paths_is_an_ensemble_and_mistakes_are_one_line_errors(trained_run, tmp_path, lines):
    ensemble = nmt.load([trained_run, trained_run / "last.pt"], device="cpu")
    assert len(ensemble.translate(lines)) == len(lines) and "best.pt + " in repr(ensemble)
    model = nmt.load(trained_run, device="cpu")
    with pytest.raises(SettingError, match="beam_size=0: must be"):
        model.translate(lines, beam_size=0)
    with pytest.raises(SettingError, match="nbest=0"):
        model.translate(lines, nbest=0)
    with pytest.raises(CheckpointError, match="no such run folder or checkpoint file"):
        nmt.load(tmp_path / "nothing")


def test_importing_nmt_imports_no_torch_until_load_is_used():
    code = "import sys, nmt; assert 'torch' not in sys.modules; nmt.load; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120).returncode == 0


def test_pairs_are_normalized_as_nmt_score_normalizes_them_and_arguments_are_checked(trained_run, lines):
    model = nmt.load(trained_run, device="cpu")
    assert math.isnan(model.score([(" ", "one")])[0]) and math.isnan(model.score([("uno", "\u2028")])[0])
    for bad in ({"beam_size": 2.5}, {"max_source_subwords": 0}, {"batch_tokens": True}):
        with pytest.raises(SettingError):
            model.translate(lines, **bad)
    with pytest.raises(SettingError, match=r"lines\[1\] is a int"):
        model.translate(["uno", 3])
    with pytest.raises(SettingError, match=r"pairs\[0\]"):
        model.score(["uno"])
