"""Checkpoint averaging (nmt-average, train.average_last) and ensembles (ckpt='[A,B]')."""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nmt.architectures import build_model
from nmt.checkpoint import load_checkpoint, pack_checkpoint, read_checkpoint, save_checkpoint
from nmt.config import DecodeConfig
from nmt.ensemble import Ensemble, average_checkpoints
from nmt.errors import SettingError
from nmt.inference import alignment_records, has_alignments, load_translator, score_pairs, translate_lines
from nmt.lines import read_lines
from nmt.training import train
from tests.commands import run_command
from tests.conftest import TINY_MODEL, compose_config, word_corpus_overrides

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
DECODINGS = [DecodeConfig(), DecodeConfig(beam_size=4, nbest=3)]


def sources(word_corpus: Path) -> list[str]:
    return read_lines(word_corpus / "test.es")[:12] + ["", "  "]


def run(module: str, *args: str, stdin: str | None = None, fresh_interpreter=False) -> subprocess.CompletedProcess:
    return run_command(f"nmt.commands.{module}", *args, stdin=stdin, text=True, env=ENV, fresh_interpreter=fresh_interpreter)


def other_model(trained_run: Path, tmp_path: Path, hidden_size: int = 48, seed: int = 3, **changes) -> Path:
    """A model of other sizes (random weights) with the trained run's tokenizer."""
    checkpoint = read_checkpoint(trained_run / "best.pt")
    torch.manual_seed(seed)
    config = replace(checkpoint.model_config, hidden_size=hidden_size, **changes)
    model = build_model(config, checkpoint.src_vocab_size, checkpoint.tgt_vocab_size)
    path = tmp_path / f"other-{hidden_size}-{seed}.pt"
    save_checkpoint(
        pack_checkpoint(model, checkpoint.src_proto, checkpoint.tgt_proto, checkpoint.data_config, 0, 0, None), path
    )
    return path


# --------------------------------------------------------------------------- ensembles


def test_an_ensemble_of_one_model_is_that_model_exactly(trained_run, word_corpus):
    alone, ensemble = load_translator(trained_run, "cpu"), load_translator([str(trained_run)], "cpu")
    lines = sources(word_corpus)
    for decode in DECODINGS:
        expected = translate_lines(alone, lines, decode)
        assert translate_lines(ensemble, lines, decode) == expected
    pairs = [(line, "one two") for line in lines]
    assert score_pairs(ensemble, pairs)[:12] == score_pairs(alone, pairs)[:12]


def test_an_ensemble_of_a_model_with_itself_gives_the_same_outputs(trained_run, word_corpus):
    alone, twice = load_translator(trained_run, "cpu"), load_translator([trained_run, trained_run / "best.pt"], "cpu")
    assert isinstance(twice.model, Ensemble) and len(twice.members) == 2
    lines = sources(word_corpus)
    for decode in DECODINGS:
        expected, got = translate_lines(alone, lines, decode), translate_lines(twice, lines, decode)
        assert [[text for text, _ in hyps] for hyps in got] == [[text for text, _ in hyps] for hyps in expected]
        for hyps, expected_hyps in zip(got, expected):
            for (_, hyp), (_, expected_hyp) in zip(hyps, expected_hyps):
                assert hyp.score == pytest.approx(expected_hyp.score, abs=1e-4)


def test_an_ensemble_predicts_the_log_of_the_members_mean_probability(trained_run, tmp_path):
    first = read_checkpoint(trained_run / "best.pt").build_model().eval()
    second = read_checkpoint(other_model(trained_run, tmp_path)).build_model().eval()  # mixed sizes
    ensemble = Ensemble([first, second]).eval()
    src = torch.tensor([[5, 6, 7, 3], [8, 9, 3, 0]])
    lengths, tgt_in = torch.tensor([4, 3]), torch.tensor([[2, 5, 6], [2, 7, 0]])
    with torch.no_grad():
        mean = (first(src, lengths, tgt_in).softmax(-1) + second(src, lengths, tgt_in).softmax(-1)) / 2
        assert torch.allclose(ensemble(src, lengths, tgt_in), mean.log(), atol=1e-5)
        encoder_out = ensemble.for_decoding(ensemble.encode(src, lengths))
        logits, _ = ensemble.decode_step(torch.tensor([2, 2]), ensemble.init_state(encoder_out), encoder_out)
        assert torch.allclose(logits.exp().sum(-1), torch.ones(2), atol=1e-5)  # already a distribution
        assert torch.allclose(logits, mean[:, 0].log(), atol=1e-5)


def test_ensembles_keep_the_line_contract_through_the_commands(any_run, tmp_path, word_corpus):
    other = other_model(any_run, tmp_path)
    members = f"ckpt=[{any_run},{other}]"
    lines = sources(word_corpus)
    translated = run("translate", members, "nbest=2", stdin="\n".join(lines) + "\n")
    assert translated.returncode == 0, translated.stderr
    rows = [row.split("\t") for row in translated.stdout.splitlines()]
    per_line = Counter(int(row[0]) for row in rows)  # 2 hypotheses per line, one row for a blank line
    assert [per_line[i] for i in range(len(lines))] == [2 if line.strip() else 1 for line in lines]
    scored = run("score", members, stdin="uno dos\tone two\n\ngato\tcat\n")
    assert scored.returncode == 0, scored.stderr
    assert len(scored.stdout.splitlines()) == 3 and scored.stdout.splitlines()[1].startswith("nan")
    report_dir = tmp_path / "report"
    evaluated = run("evaluate", members, "decode=greedy", f"report_dir={report_dir}", "bootstrap_samples=10")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((report_dir / "report.json").read_text())
    assert str(any_run) in report["checkpoint"] and str(other) in report["checkpoint"]
    model = report["model"]  # the report's settings name every member and its sizes
    assert model["ensemble"].startswith("2 models") and "hidden 48" in model["member 2"]
    assert model["member 1"].startswith(f"{any_run}") and model["member 2"].startswith(f"{other}")
    assert "member 2" in (report_dir / "report.md").read_text()


def _with_other_subwords(checkpoint: Path, out: Path) -> Path:
    """The checkpoint with another tokenizer of the same size (one piece's score changed: another
    segmentation of some texts). tests/fixtures/tiny-cho2014.pt does not do: it was trained on
    the same corpus with the same settings, so its tokenizer is the same one in other bytes."""
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    state = load_checkpoint(checkpoint)
    for side in ("src", "tgt"):
        proto = model_pb2.ModelProto()
        proto.ParseFromString(bytes(state["tokenizer"][side].numpy()))
        proto.pieces[-1].score += 1.0
        state["tokenizer"][side] = torch.frombuffer(bytearray(proto.SerializeToString()), dtype=torch.uint8)
    state.pop("format")
    save_checkpoint(state, out)
    return out


def test_an_ensemble_of_different_vocabularies_is_one_line_and_writes_nothing(trained_run, tmp_path):
    fixture = _with_other_subwords(trained_run / "best.pt", tmp_path / "other-subwords.pt")
    output = tmp_path / "out.txt"
    result = run("translate", f"ckpt=[{trained_run},{fixture}]", f"output={output}", stdin="uno\n")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {trained_run / 'best.pt'} and {fixture} cannot be an ensemble: "
        "target vocabularies differ (300 subwords each, but other ones); ensemble models "
        "trained with one tokenizer"
    )
    assert not output.exists()


# --------------------------------------------------------------------------- averaging


def test_averaging_copies_of_a_checkpoint_gives_its_weights(any_run, tmp_path):
    best = any_run / "best.pt"
    averaged = average_checkpoints([best, best, best])
    for name, tensor in load_checkpoint(best)["model"].items():
        assert torch.equal(averaged.model_state[name], tensor), name
    output = tmp_path / "avg.pt"
    result = run("average", f"ckpts=[{best},{best}]", f"output={output}", fresh_interpreter=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"nmt-average: 2 checkpoints (best.pt ... best.pt) averaged into {output}"
    assert translate_lines(load_translator(output, "cpu"), ["uno dos"], DecodeConfig()) == translate_lines(
        load_translator(best, "cpu"), ["uno dos"], DecodeConfig()
    )
    assert not list(tmp_path.glob(".*.tmp"))


def test_averaging_two_checkpoints_is_their_mean(any_run, tmp_path):
    """Also when they were trained with other dropout or initialization: the same network."""
    a = any_run / "best.pt"
    hidden = read_checkpoint(a).model_config.hidden_size
    b = other_model(any_run, tmp_path, hidden_size=hidden, seed=5, dropout=0.5, paper_init=True)
    averaged = average_checkpoints([a, b]).model_state
    for name, tensor in load_checkpoint(a)["model"].items():
        expected = ((tensor.double() + load_checkpoint(b)["model"][name].double()) / 2).float()
        assert torch.equal(averaged[name], expected), name


def test_a_refused_average_is_one_line_and_writes_nothing(any_run, tmp_path):
    other = other_model(any_run, tmp_path, hidden_size=48)
    output = tmp_path / "avg.pt"
    result = run("average", f"ckpts=[{any_run / 'best.pt'},{other}]", f"output={output}")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: {any_run / 'best.pt'} and {other} cannot be averaged: the models differ "
        f"(hidden_size {read_checkpoint(any_run / 'best.pt').model_config.hidden_size} and 48)"
    )
    fixture = _with_other_subwords(any_run / "best.pt", tmp_path / "other-subwords.pt")
    result = run("average", f"ckpts=[{any_run / 'best.pt'},{fixture}]", f"output={output}")
    assert result.returncode == 1 and "cannot be averaged: target vocabularies differ" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    result = run("average", f"ckpt={any_run}", "last=50", f"output={output}")
    assert result.returncode == 1 and "fewer than last=50; lower last=, or train with more of them" in result.stderr
    result = run("average", f"ckpt={tmp_path / 'nope'}", f"output={output}")
    assert result.returncode == 1 and result.stderr.strip() == f"error: ckpt={tmp_path / 'nope'}: no such run folder"
    assert not output.exists() and not list(tmp_path.glob(".*.tmp"))


def test_an_average_never_replaces_a_run_s_own_checkpoints(trained_run, tmp_path):
    from nmt.commands.average import run_average
    from nmt.config import AverageConfig

    before = {path.name: path.read_bytes() for path in trained_run.glob("*.pt")}
    for name in ("best.pt", "last.pt", "step-7.pt"):  # a run's own file names, existing or not
        with pytest.raises(SettingError, match=rf"^output={trained_run / name}: {trained_run} is a run folder and nmt-train "):
            run_average(AverageConfig(ckpts=[str(trained_run / "best.pt")] * 2, output=str(trained_run / name)))
    copy = tmp_path / "copy.pt"
    copy.write_bytes(before["best.pt"])
    with pytest.raises(SettingError, match=rf"^ckpts\[1\]={copy} is {copy}, which writing would destroy"):
        run_average(AverageConfig(ckpts=[str(trained_run / "best.pt"), str(copy)], output=str(copy)))
    assert {path.name: path.read_bytes() for path in trained_run.glob("*.pt")} == before


def test_train_average_last_writes_averaged_pt_and_its_test_bleu(tmp_path, word_corpus, cache_dir):
    cfg = compose_config(
        "train",
        word_corpus_overrides(word_corpus, cache_dir)
        + TINY_MODEL
        + [
            "train=debug",
            "train.device=cpu",
            "train.max_tokens=512",
            "train.max_steps=12",
            "train.val_every=6",
            "train.save_every=2",
            "train.keep_last=3",
            "train.average_last=3",
            "train.log_every=2",
        ],
    )
    run_dir = tmp_path / "run"
    summary = train(cfg, run_dir)
    assert summary["averaged_steps"] == [8, 10, 12]
    assert math.isfinite(summary["averaged_test_bleu_greedy"]) and "test_bleu_greedy" in summary
    expected = average_checkpoints([run_dir / f"step-{n}.pt" for n in (8, 10, 12)]).model_state
    saved = read_checkpoint(run_dir / "averaged.pt")
    assert saved.training is None
    for name, tensor in expected.items():
        assert torch.equal(saved.model_state[name], tensor), name
    assert json.loads((run_dir / "summary.json").read_text())["averaged_steps"] == [8, 10, 12]


def test_average_last_beyond_keep_last_is_refused_up_front(tmp_path):
    with pytest.raises(SettingError, match=r"train.average_last=5 averages step checkpoints, of which only train.keep_last=2"):
        train(compose_config("train", ["train=debug", "train.average_last=5", "train.keep_last=2"]), tmp_path / "r")


def test_an_ensemble_may_mix_architectures(trained_run, trained_rnnsearch_run, word_corpus):
    mixed = load_translator([trained_run, trained_rnnsearch_run], "cpu")
    assert [type(m).__name__ for m in mixed.model.members] == ["RNNEncoderDecoder", "RNNSearch"]
    lines = sources(word_corpus)
    for decode in DECODINGS:
        results = translate_lines(mixed, lines, decode)
        assert len(results) == len(lines) and all(len(hyps) == decode.nbest for hyps in results[:12])
    assert [n for _, n in score_pairs(mixed, [("uno dos", "one two"), ("", "")])] == [3, 0]


def test_an_ensemble_s_alignments_are_its_attention_members_mean(trained_run, trained_rnnsearch_run, word_corpus, tmp_path):
    lines = sources(word_corpus)[:6]
    alone = load_translator(trained_rnnsearch_run, "cpu")
    mixed = load_translator([trained_run, trained_rnnsearch_run], "cpu")
    assert has_alignments(mixed.model) and not has_alignments(load_translator([trained_run, trained_run], "cpu").model)
    results = translate_lines(mixed, lines, DecodeConfig())
    # A Cho member has no attention: the mixture's alignments are the RNNsearch member's own.
    assert alignment_records(mixed, lines, results) == alignment_records(alone, lines, results)
    # Two attention members: the mean of their weights, whose rows still sum to one.
    other = tmp_path / "other.pt"
    checkpoint = read_checkpoint(trained_rnnsearch_run / "best.pt")
    torch.manual_seed(5)
    model = build_model(checkpoint.model_config, checkpoint.src_vocab_size, checkpoint.tgt_vocab_size)
    save_checkpoint(
        pack_checkpoint(model, checkpoint.src_proto, checkpoint.tgt_proto, checkpoint.data_config, 0, 0, None), other
    )
    pair = load_translator([trained_rnnsearch_run, other], "cpu")
    src, lengths = torch.tensor([[5, 6, 7, 3], [8, 9, 3, 0]]), torch.tensor([4, 3])
    tgt_in = torch.tensor([[2, 10, 11], [2, 12, 0]])
    first, second = (member.alignments(src, lengths, tgt_in) for member in pair.model.members)
    mean = pair.model.alignments(src, lengths, tgt_in)
    assert torch.allclose(mean, (first + second) / 2) and not torch.allclose(first, second)
    assert torch.allclose(mean.sum(-1), torch.ones(2, 3)) and (mean[1, :, 3] == 0).all()


def test_alignments_of_an_ensemble_through_the_command_line(trained_run, trained_rnnsearch_run, tmp_path):
    aligned = tmp_path / "alignments.jsonl"
    result = run("translate", f"ckpt=[{trained_run},{trained_rnnsearch_run}]", f"alignments={aligned}", stdin="uno dos\n\n")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in aligned.read_text().splitlines()]
    assert len(records) == 2 and records[1]["weights"] == [] and records[0]["source"][-1] == "</s>"
    refused = run("translate", f"ckpt=[{trained_run},{trained_run}]", f"alignments={tmp_path / 'none.jsonl'}", stdin="uno\n")
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    best = trained_run / "best.pt"
    assert f"no member of the ensemble {best} + {best} has attention, so no alignments" in refused.stderr
    assert not (tmp_path / "none.jsonl").exists()
