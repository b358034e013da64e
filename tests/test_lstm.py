"""model.rnn=lstm (issue 33): the same wiring with an LSTM, for the Cho et al. model and
RNNsearch; every property the GRU models have, checked for both units."""

from __future__ import annotations

import pytest
import torch

from nmt.architectures import build_model
from nmt.checkpoint import read_checkpoint
from nmt.config import ModelConfig
from nmt.errors import SettingError
from nmt.search import beam_search, greedy_search
from nmt.training import train
from tests.commands import run_command
from tests.conftest import TINY_MODEL, TINY_RNNSEARCH, word_corpus_overrides
from tests.test_model import random_batch
from tests.test_reliability import run_config

UNITS = ["gru", "lstm"]
ARCHS = ["cho2014", "rnnsearch"]


def tiny(arch: str, rnn: str, seed: int = 0):
    torch.manual_seed(seed)
    config = ModelConfig(arch=arch, rnn=rnn, embed_size=8, hidden_size=12, maxout_size=6, dropout=0.0, output_rank=0)
    if arch == "rnnsearch":
        config.attention_size = 10
    return build_model(config, src_vocab_size=20, tgt_vocab_size=17).eval()


@pytest.mark.parametrize("rnn", UNITS)
@pytest.mark.parametrize("arch", ARCHS)
def test_teacher_forced_logits_equal_step_by_step_logits(arch, rnn):
    model = tiny(arch, rnn)
    src, src_lengths, tgt_in = random_batch()
    with torch.no_grad():
        forced = model(src, src_lengths, tgt_in)
        encoder_out = model.encode(src, src_lengths)
        prepared = model.for_decoding(encoder_out) if hasattr(model, "for_decoding") else encoder_out
        state, steps = model.init_state(prepared), []
        for t in range(tgt_in.size(1)):
            logits, state = model.decode_step(tgt_in[:, t], state, prepared)
            steps.append(logits)
    assert torch.allclose(forced, torch.stack(steps, 1), atol=1e-5)
    if rnn == "lstm":
        assert isinstance(state, tuple) and len(state) == 2  # (h, c), carried and reordered as a pair
        assert any(isinstance(m, torch.nn.LSTM) for m in model.modules())


@pytest.mark.parametrize("rnn", UNITS)
@pytest.mark.parametrize("arch", ARCHS)
def test_a_sentence_s_output_does_not_depend_on_its_batch_mates_and_beam_1_is_greedy(arch, rnn):
    model = tiny(arch, rnn, seed=3)
    src, src_lengths, _ = random_batch()
    with torch.no_grad():
        together = beam_search(model, src, src_lengths, beam_size=3, max_len_a=1.0, max_len_b=4)
        for i in range(src.size(0)):
            alone = beam_search(
                model, src[i : i + 1, : src_lengths[i]], src_lengths[i : i + 1], beam_size=3, max_len_a=1.0, max_len_b=4
            )
            assert [h.tokens for h in alone[0]] == [h.tokens for h in together[i]]
        greedy = greedy_search(model, src, src_lengths, max_len_a=1.0, max_len_b=4)
        beam_1 = beam_search(model, src, src_lengths, beam_size=1, max_len_a=1.0, max_len_b=4)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam_1]


def test_an_lstm_takes_no_paper_cell_and_old_checkpoints_are_grus(trained_run):
    with pytest.raises(SettingError, match="^model.cell=paper: the paper's GRU equations; an LSTM"):
        build_model(ModelConfig(rnn="lstm", cell="paper"), 20, 17)
    with pytest.raises(SettingError, match="model.rnn='rnn'"):
        build_model(ModelConfig(rnn="rnn"), 20, 17)
    assert read_checkpoint(trained_run / "best.pt").model_config.rnn == "gru"  # saved without the setting


@pytest.mark.parametrize("arch", ARCHS)
def test_an_lstm_run_resumes_exactly(arch, tmp_path, word_corpus, cache_dir):
    model = (["model=rnnsearch_small", *TINY_RNNSEARCH[1:]] if arch == "rnnsearch" else []) + ["model.rnn=lstm"]
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    train(run_config(word_corpus, cache_dir, "train.max_steps=12", *model), straight)
    train(run_config(word_corpus, cache_dir, "train.max_steps=6", *model), halves)
    train(run_config(word_corpus, cache_dir, "train.max_steps=12", *model), halves, resume=True)
    a, b = read_checkpoint(straight / "last.pt"), read_checkpoint(halves / "last.pt")
    assert a.model_config.rnn == "lstm" and a.step == b.step == 12
    for name, weight in a.model_state.items():
        assert torch.equal(weight, b.model_state[name]), name


@pytest.mark.parametrize("arch", ARCHS)
def test_train_translate_and_evaluate_an_lstm_from_the_command_line(arch, tmp_path, word_corpus, cache_dir):
    model = TINY_RNNSEARCH if arch == "rnnsearch" else TINY_MODEL
    run_dir = tmp_path / "run"
    args = [*word_corpus_overrides(word_corpus, cache_dir), *model, "model.rnn=lstm", "train=debug", "train.max_steps=6"]
    trained = run_command("nmt.commands.train", *args, "train.val_every=3", f"hydra.run.dir={run_dir}", text=True)
    assert trained.returncode == 0, trained.stderr[-2000:]
    lines = (word_corpus / "test.es").read_text(encoding="utf-8").splitlines()[:4]
    translated = run_command(
        "nmt.commands.translate", f"ckpt={run_dir}", "decode=beam", stdin="\n".join(lines) + "\n", text=True
    )
    assert translated.returncode == 0 and len(translated.stdout.splitlines()) == 4, translated.stderr
    evaluated = run_command("nmt.commands.evaluate", f"ckpt={run_dir}", f"report_dir={tmp_path / 'r'}", "max_sentences=4")
    assert evaluated.returncode == 0, evaluated.stderr
