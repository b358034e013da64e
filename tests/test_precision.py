"""precision= (issue 29): bfloat16 decoding on a CPU that has it, float32 where it has not,
the same line contract, and greedy outputs that mostly agree with float32."""

from __future__ import annotations

import logging

import pytest
import torch

import nmt.runtime
from nmt.config import DecodeConfig
from nmt.errors import SettingError
from nmt.inference import load_translator, score_pairs, translate_lines
from tests.commands import run_command

# The share of the word corpus's test sentences whose greedy translation in bfloat16 must equal
# float32's: bf16 keeps 8 bits of mantissa, so near-ties between two subwords may flip.
SAME_GREEDY_BF16 = 0.8
SAME_GREEDY = {"bfloat16": SAME_GREEDY_BF16, "int8": 0.8}  # int8: weights of 8 bits, activations per row
# The largest difference from float32 in log p(target | source) per target token (nats).
SCORE_TOLERANCE = {"bfloat16": 0.1, "int8": 0.25}


def sentences(word_corpus) -> list[str]:
    return (word_corpus / "test.es").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("precision", ["bfloat16", "int8"])
@pytest.mark.parametrize("arch", ["cho2014", "rnnsearch"])
def test_reduced_precision_keeps_the_line_contract_and_mostly_agrees_with_float32(
    arch, precision, trained_run, trained_rnnsearch_run, word_corpus
):
    if precision == "bfloat16" and not nmt.runtime.cpu_has_bf16():
        pytest.skip("no native bfloat16 on this CPU")
    run = trained_run if arch == "cho2014" else trained_rnnsearch_run
    half, full = load_translator(run, "cpu", precision=precision), load_translator(run, "cpu", precision="float32")
    assert (half.precision, full.precision) == (precision, "float32")
    if precision == "bfloat16":  # cast once at load
        assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    else:  # the output layer quantized, the recurrent units kept
        quantized = {
            name
            for name, module in half.model.named_modules()
            if type(getattr(module, "weight", None)).__name__ == "Int8Tensor"
        }
        assert any(name.startswith("output") for name in quantized), quantized
        assert "deep_output" not in quantized or arch == "rnnsearch"  # the Cho model slices it: kept float32
        recurrent = [p for name, p in half.model.named_parameters() if "weight_ih" in name or "weight_hh" in name]
        assert recurrent and all(type(p).__name__ != "Int8Tensor" for p in recurrent)
    lines = [*sentences(word_corpus), "", "   "]
    for decode in (DecodeConfig(), DecodeConfig(beam_size=5, nbest=2)):
        a, b = translate_lines(half, lines, decode), translate_lines(full, lines, decode)
        assert len(a) == len(b) == len(lines) and a[-1][0][0] == a[-2][0][0] == ""
    greedy = [
        x[0][0] == y[0][0]
        for x, y in zip(translate_lines(half, lines, DecodeConfig()), translate_lines(full, lines, DecodeConfig()))
    ]
    assert sum(greedy) >= SAME_GREEDY[precision] * len(greedy)
    pairs = [(line, "one two") for line in lines[:5]]
    for (x, n), (y, m) in zip(score_pairs(half, pairs), score_pairs(full, pairs)):
        assert n == m and abs(x - y) / n < SCORE_TOLERANCE[precision]


def test_int8_on_cuda_is_refused_in_one_line():
    with pytest.raises(SettingError, match="precision=int8 is for CPUs"):
        nmt.runtime.resolve_precision("int8", torch.device("cuda"))


def test_auto_is_float32_on_a_cpu_and_bfloat16_without_native_support_falls_back(trained_run, monkeypatch, caplog):
    assert load_translator(trained_run, "cpu").precision == "float32"
    monkeypatch.setattr(nmt.runtime, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="nmt.runtime"):
        assert load_translator(trained_run, "cpu", precision="bfloat16").precision == "float32"
    assert "precision=bfloat16: this CPU has no native bfloat16" in caplog.text
    with pytest.raises(SettingError, match="precision='int4': expected one of auto, float32, bfloat16, int8"):
        load_translator(trained_run, "cpu", precision="int4")
    assert nmt.runtime.resolve_precision("auto", torch.device("cuda")) == "bfloat16"  # today's GPU behaviour


def test_every_command_takes_precision(trained_rnnsearch_run, tmp_path, word_corpus):
    ckpt, line = f"ckpt={trained_rnnsearch_run}", sentences(word_corpus)[0]
    for precision in ("float32", "bfloat16", "int8"):
        translated = run_command("nmt.commands.translate", ckpt, f"precision={precision}", stdin=line + "\n", text=True)
        assert translated.returncode == 0 and len(translated.stdout.splitlines()) == 1, translated.stderr
        scored = run_command("nmt.commands.score", ckpt, f"precision={precision}", stdin=f"{line}\tone\n", text=True)
        assert scored.returncode == 0, scored.stderr
        embedded = run_command(
            "nmt.commands.embed", ckpt, f"precision={precision}", f"output={tmp_path / 'v.tsv'}", stdin=line + "\n"
        )
        assert embedded.returncode == 0, embedded.stderr
        report = f"report_dir={tmp_path / precision}"
        evaluated = run_command("nmt.commands.evaluate", ckpt, f"precision={precision}", report, "max_sentences=3")
        assert evaluated.returncode == 0, evaluated.stderr
    refused = run_command("nmt.commands.translate", ckpt, "precision=int4", stdin="uno\n", text=True)
    assert refused.returncode == 1 and "precision='int4': expected one of" in refused.stderr
