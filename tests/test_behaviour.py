"""Behaviour against a committed fixture, made with the code before the architecture
change (tests/fixtures/behaviour.json, tiny-cho2014.pt; see tests/fixtures/README.md):
a short train=debug run gives the same metrics and weights, and a checkpoint written
then still loads and translates and scores identically."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nmt.checkpoint import load_checkpoint
from nmt.commands.translate import format_output
from nmt.config import DecodeConfig
from nmt.inference import load_translator, score_pairs, translate_lines
from nmt.run_folder import read_metrics
from nmt.training import train
from tests.conftest import compose_config, word_corpus_overrides

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RECORD = json.loads((FIXTURES / "behaviour.json").read_text(encoding="utf-8"))
DECODES = {"greedy": DecodeConfig(), "beam5": DecodeConfig(beam_size=5), "beam4_nbest3": DecodeConfig(beam_size=4, nbest=3)}
# Exact on the machine that made the fixture; other CPUs (another SIMD width, e.g. AVX-512)
# round float32 sums differently in the last bits, which these tolerances allow and no real
# change would pass. Adam (lr 0.01) carries those bits into the weights: on an AVX-512 CPU
# they differed by up to 1.2e-5 after 60 steps, while one step of a real change moves them ~1e-2.
REL = 1e-5
WEIGHT_ATOL = 1e-4


def outputs(translator) -> dict:
    return {
        name: format_output(translate_lines(translator, RECORD["lines"], decode), decode.nbest)
        for name, decode in DECODES.items()
    }


def test_a_checkpoint_of_the_old_layout_translates_and_scores_identically():
    raw = load_checkpoint(FIXTURES / "tiny-cho2014.pt")
    assert "arch" not in raw["model_config"]["config"]  # written before model.arch existed
    translator = load_translator(FIXTURES / "tiny-cho2014.pt", "cpu")
    assert translator.checkpoint.model_config.arch == "cho2014"
    assert outputs(translator) == RECORD["translations"]
    scores = score_pairs(translator, [tuple(pair) for pair in RECORD["score_pairs"]])
    for (total, n), (want_total, want_n) in zip(scores, RECORD["scores"]):
        assert n == want_n and (math.isnan(total) and math.isnan(want_total) or round(total, 4) == want_total)


def test_a_debug_run_gives_the_fixture_metrics_weights_and_translations(tmp_path, word_corpus, cache_dir):
    cfg = compose_config("train", word_corpus_overrides(word_corpus, cache_dir) + RECORD["overrides"])
    summary = train(cfg, tmp_path)
    for key, value in RECORD["summary"].items():
        assert summary[key] == pytest.approx(value, rel=REL), key
    metrics = read_metrics(tmp_path)
    assert len(metrics) == len(RECORD["metrics"])
    for got, want in zip(metrics, RECORD["metrics"]):
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=REL, abs=1e-9), (want["step"], key)

    ours, theirs = load_checkpoint(tmp_path / "best.pt"), load_checkpoint(FIXTURES / "tiny-cho2014.pt")
    assert set(ours) == set(theirs)  # the same checkpoint layout
    assert ours["model_config"] == theirs["model_config"]  # arch: cho2014 is implied, as before it existed
    assert ours["step"] == theirs["step"] and ours["model"].keys() == theirs["model"].keys()
    for name, tensor in theirs["model"].items():
        torch.testing.assert_close(ours["model"][name], tensor, rtol=REL, atol=WEIGHT_ATOL, msg=name)
    assert_same_outputs(outputs(load_translator(tmp_path / "best.pt", "cpu")), RECORD["translations"])


def assert_same_outputs(got: dict, want: dict) -> None:
    """The same hypotheses in the same order; n-best scores (4 decimals) may differ in the
    last digit, since the weights may differ in their last bits (see WEIGHT_ATOL)."""
    assert got.keys() == want.keys()
    for name in want:
        assert len(got[name]) == len(want[name]), name
        for ours, theirs in zip(got[name], want[name]):
            ours, theirs = ours.split("\t"), theirs.split("\t")
            if len(theirs) == 1:
                assert ours == theirs, name
                continue
            assert ours[:2] + ours[4:] == theirs[:2] + theirs[4:], name  # line, rank, text
            assert [float(x) for x in ours[2:4]] == pytest.approx([float(x) for x in theirs[2:4]], abs=5e-4), name
