"""RNNsearch (model.arch=rnnsearch, issue 13): the equations of Bahdanau et al. (2015),
attention over real tokens only, batch independence, search, training and resume."""

from __future__ import annotations

import json

import pytest
import torch

from nmt.architectures import build_model
from nmt.checkpoint import load_checkpoint, read_checkpoint
from nmt.commands.train import resume_config
from nmt.config import DecodeConfig, ModelConfig
from nmt.errors import SettingError
from nmt.inference import load_translator, score_pairs, translate_lines
from nmt.rnnsearch import RNNSearch
from nmt.search import beam_search, greedy_search
from nmt.tokens import BOS, PAD
from nmt.training import train
from tests.commands import run_command
from tests.conftest import TINY_RNNSEARCH, compose_config, word_corpus_overrides


def tiny(cell="cudnn", seed=0, dropout=0.0) -> RNNSearch:
    torch.manual_seed(seed)
    config = ModelConfig(
        name="t", arch="rnnsearch", embed_size=8, hidden_size=12, attention_size=10, maxout_size=6, dropout=dropout, cell=cell
    )
    return build_model(config, src_vocab_size=20, tgt_vocab_size=17).eval()


def batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 20, (3, 7), generator=g)
    lengths = torch.tensor([7, 5, 3])
    for i, n in enumerate(lengths):
        src[i, n:] = PAD
    tgt_in = torch.randint(4, 17, (3, 5), generator=g)
    tgt_in[:, 0] = BOS
    return src, lengths, tgt_in


@pytest.mark.parametrize("cell", ["cudnn", "paper"])
def test_teacher_forced_logits_equal_step_by_step_decoding(cell):
    model = tiny(cell)
    src, lengths, tgt_in = batch()
    with torch.no_grad():
        forced = model(src, lengths, tgt_in)
        encoder_out = model.encode(src, lengths)
        state, steps = model.init_state(encoder_out), []
        for i in range(tgt_in.size(1)):
            logits, state = model.decode_step(tgt_in[:, i], state, encoder_out)
            steps.append(logits)
    assert torch.allclose(forced, torch.stack(steps, 1), atol=1e-5)


def test_attention_sums_to_one_over_real_tokens_and_is_zero_on_padding():
    model = tiny()
    src, lengths, tgt_in = batch()
    alignments = model.alignments(src, lengths, tgt_in)  # (B, T, S)
    assert alignments.shape == (3, 5, 7)
    assert torch.allclose(alignments.sum(-1), torch.ones(3, 5), atol=1e-6)
    for row, n in enumerate(lengths.tolist()):
        assert torch.equal(alignments[row, :, n:], torch.zeros(5, 7 - n))  # exactly zero
        assert (alignments[row, :, :n] > 0).all()


@pytest.mark.parametrize("cell", ["cudnn", "paper"])
def test_a_sentence_does_not_depend_on_its_batch_mates_or_padding(cell):
    model = tiny(cell)
    src, lengths, tgt_in = batch()
    with torch.no_grad():
        together, aligned = model(src, lengths, tgt_in), model.alignments(src, lengths, tgt_in)
        for row, n in enumerate(lengths.tolist()):
            alone_src = torch.cat([src[row : row + 1, :n], torch.full((1, 4), PAD)], 1)  # other padding
            alone = model(alone_src, lengths[row : row + 1], tgt_in[row : row + 1])
            assert torch.allclose(alone, together[row : row + 1], atol=1e-5)
            alone_aligned = model.alignments(alone_src, lengths[row : row + 1], tgt_in[row : row + 1])
            assert torch.allclose(alone_aligned[0, :, :n], aligned[row, :, :n], atol=1e-6)


def test_the_backward_encoder_starts_at_the_last_real_token():
    """←h_1, which starts the decoder, is the backward GRU run over x_n ... x_1 only."""
    model = tiny()
    src, lengths, _ = batch()
    encoder_out = model.encode(src, lengths)
    row, n = 1, int(lengths[1])
    embedded = model.src_embed(src[row : row + 1, :n].flip(1))
    states, _ = model.backward_encoder(embedded, torch.zeros(1, 12))
    assert torch.allclose(encoder_out.annotations[row, :n, 12:], states[0].flip(0), atol=1e-6)
    assert torch.allclose(encoder_out.start[row], torch.tanh(model.start(states[0, -1])), atol=1e-6)


def test_the_paper_cell_and_attention_match_the_equations_by_hand():
    model = tiny("paper", seed=3)
    src, lengths, tgt_in = batch(seed=2)
    with torch.no_grad():
        encoder_out = model.encode(src, lengths)
        s = encoder_out.start
        h, mask = encoder_out.annotations, encoder_out.mask
        # e_ij = v_aᵀ tanh(W_a s_{i-1} + U_a h_j), softmax over the real tokens, c_i = Σ α_ij h_j
        energies = torch.tanh(s.unsqueeze(1) @ model.query.weight.t() + h @ model.keys.weight.t() + model.keys.bias)
        energies = (energies @ model.energy.weight.t()).squeeze(-1).masked_fill(~mask, float("-inf"))
        alpha = energies.softmax(-1)
        c = (alpha.unsqueeze(-1) * h).sum(1)
        y = model.tgt_embed(tgt_in[:, 0])
        # t̃ = U_o s_{i-1} + V_o E y_{i-1} + C_o c_i; maxout over pools of 2; softmax(W_o t)
        pre = torch.cat([s, y, c], -1) @ model.deep_output.weight.t() + model.deep_output.bias
        expected_logits = model.output(pre.view(3, -1, 2).max(-1).values)
        # s_i: r = σ(W_r x + U_r s), z = σ(W_z x + U_z s), s~ = tanh(W x + U (r ⊙ s)), s_i = z s + (1 - z) s~
        x = torch.cat([y, c], -1)
        gru = model.decoder
        w_r, w_z, w = gru.input_proj.weight.chunk(3, 0)
        b_r, b_z, b = gru.input_proj.bias.chunk(3, 0)
        u_r, u_z = gru.gate_proj.weight.chunk(2, 0)
        r = torch.sigmoid(x @ w_r.t() + b_r + s @ u_r.t())
        z = torch.sigmoid(x @ w_z.t() + b_z + s @ u_z.t())
        candidate = torch.tanh(x @ w.t() + b + (r * s) @ gru.candidate_proj.weight.t())
        expected_state = z * s + (1 - z) * candidate
        logits, state = model.decode_step(tgt_in[:, 0], s, encoder_out)
    assert torch.allclose(logits, expected_logits, atol=1e-5)
    assert torch.allclose(state, expected_state, atol=1e-6)


def test_beam_1_equals_greedy():
    model = tiny(seed=4)
    src, lengths, _ = batch(seed=5)
    greedy = greedy_search(model, src, lengths, max_len_b=6)
    beam = beam_search(model, src, lengths, beam_size=1, max_len_b=6)
    assert [h.tokens for h in greedy] == [hyps[0].tokens for hyps in beam]
    for g, hyps in zip(greedy, beam):
        assert g.score == pytest.approx(hyps[0].score, abs=1e-4)


def test_the_keys_u_a_h_j_are_computed_once_per_sentence_not_once_per_step():
    """U_a h_j: one product per encoded batch, in beam search and in teacher-forced training;
    only W_a s_{i-1} is computed at every step."""
    model = tiny(seed=6)
    src, lengths, tgt_in = batch(seed=7)
    calls = {"keys": 0, "query": 0}
    for name in calls:
        getattr(model, name).register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    hyps = beam_search(model, src, lengths, beam_size=3, max_len_b=6)
    steps = max(len(h.tokens) for sentence in hyps for h in sentence)
    assert calls["keys"] == 1 and calls["query"] >= steps > 1
    calls.update(keys=0, query=0)
    model.loss(src, lengths, tgt_in, tgt_in.roll(-1, dims=1))
    assert calls == {"keys": 1, "query": tgt_in.size(1)}


@pytest.mark.parametrize("cell", ["cudnn", "paper"])
def test_the_paper_initialization_of_appendix_b(cell):
    torch.manual_seed(0)
    config = ModelConfig(
        arch="rnnsearch", embed_size=40, hidden_size=32, attention_size=48, maxout_size=24, cell=cell, paper_init=True
    )
    model = build_model(config, src_vocab_size=60, tgt_vocab_size=50)
    for rnn in (model.forward_encoder, model.backward_encoder, model.decoder):
        for matrix in rnn.recurrent_matrices():
            torch.testing.assert_close(matrix @ matrix.T, torch.eye(32), atol=1e-5, rtol=0)
    for layer in (model.query, model.keys):  # W_a, U_a: N(0, 0.001^2)
        assert abs(layer.weight.std().item() - 0.001) < 0.0002
    assert model.energy.weight.abs().max() == 0  # v_a: zero, so the first alignments are uniform
    for name, param in model.named_parameters():
        if "bias" in name:
            assert param.abs().max() == 0, name
    assert abs(model.deep_output.weight.std().item() - 0.01) < 0.001
    assert abs(model.start.weight.std().item() - 0.01) < 0.002
    assert model.src_embed.weight[PAD].abs().max() == 0 and model.tgt_embed.weight[PAD].abs().max() == 0


def test_an_attention_size_for_the_cho_model_is_refused_before_set_up():
    from nmt.training import check_settings

    cfg = compose_config("train", ["model=small", "model.attention_size=64"])
    with pytest.raises(SettingError, match=r"model.attention_size=64: the cho2014 model has no attention, so it would"):
        check_settings(cfg)
    check_settings(cfg, resumed=True)  # a run of an older release that held one still resumes


def test_a_cho_checkpoint_that_holds_an_attention_size_still_loads(tmp_path, trained_run):
    """Older releases accepted model.attention_size for the Cho model and saved it."""
    from dataclasses import replace

    from nmt.checkpoint import pack_checkpoint, save_checkpoint

    checkpoint = read_checkpoint(trained_run / "best.pt")
    config = replace(checkpoint.model_config, attention_size=64)
    model = build_model(config, checkpoint.src_vocab_size, checkpoint.tgt_vocab_size)
    model.load_state_dict(checkpoint.model_state)
    state = pack_checkpoint(model, checkpoint.src_proto, checkpoint.tgt_proto, checkpoint.data_config, 5, 0, None)
    save_checkpoint(state, tmp_path / "old.pt")
    loaded = read_checkpoint(tmp_path / "old.pt")
    assert loaded.model_config.attention_size == 64 and loaded.weights_problem() is None
    translator = load_translator(tmp_path / "old.pt", "cpu")
    assert translate_lines(translator, ["uno dos"], DecodeConfig()) == translate_lines(
        load_translator(trained_run, "cpu"), ["uno dos"], DecodeConfig()
    )


def test_reverse_source_is_refused():
    with pytest.raises(SettingError, match="model.reverse_source=true: the attention model reads the source"):
        build_model(ModelConfig(arch="rnnsearch", reverse_source=True), 10, 10)


def _config(word_corpus, cache_dir, *extra):
    return compose_config(
        "train",
        word_corpus_overrides(word_corpus, cache_dir)
        + TINY_RNNSEARCH
        + [
            "train=debug",
            "train.device=cpu",
            "train.max_tokens=512",
            "train.val_every=4",
            "train.val_max_sentences=4",
            "train.log_every=1",
            "evaluate_test=false",
            "model.dropout=0.2",
            *extra,
        ],
    )


def test_training_resumes_exactly_and_the_checkpoint_records_the_architecture(tmp_path, word_corpus, cache_dir):
    straight = tmp_path / "straight"
    train(_config(word_corpus, cache_dir, "train.max_steps=8"), straight)
    half = tmp_path / "half"
    train(_config(word_corpus, cache_dir, "train.max_steps=4"), half)
    train(resume_config(half, ["train.max_steps=8"]), half, resume=True)
    a, b = load_checkpoint(straight / "last.pt")["model"], load_checkpoint(half / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    saved = read_checkpoint(straight / "last.pt")
    assert saved.model_config.arch == "rnnsearch" and saved.model_config.attention_size == 20
    translator = load_translator(straight, "cpu")
    assert isinstance(translator.model, RNNSearch)
    lines = ["uno dos", "", "gato perro"]
    for decode in (DecodeConfig(), DecodeConfig(beam_size=3, nbest=2)):
        results = translate_lines(translator, lines, decode)
        assert len(results) == 3 and results[1] == [("", results[1][0][1])]
    scores = score_pairs(translator, [("uno", "one"), ("", "")])
    assert scores[0][1] == 2 and scores[1][1] == 0


@pytest.mark.parametrize("recipe", ["train=default", "train=paper"])
def test_both_recipes_train(tmp_path, word_corpus, cache_dir, recipe):
    cfg = compose_config(
        "train",
        word_corpus_overrides(word_corpus, cache_dir)
        + TINY_RNNSEARCH
        + [
            recipe,
            "train.device=cpu",
            "train.max_tokens=512",
            "train.max_steps=3",
            "train.val_every=3",
            "train.val_max_sentences=2",
            "train.log_every=1",
            "evaluate_test=false",
            "train.max_minutes=0",
        ],
    )
    summary = train(cfg, tmp_path / "run")
    assert summary["steps"] == 3 and summary["skipped_steps"] == 0


def test_translate_writes_one_alignment_per_input_line(tmp_path, trained_rnnsearch_run):
    source = tmp_path / "source.txt"
    source.write_text("uno dos tres\n\ngato\n  \ncinco seis siete ocho\n")
    output, aligned = tmp_path / "hyps.txt", tmp_path / "alignments.jsonl"
    result = run_command(
        "nmt.commands.translate",
        f"ckpt={trained_rnnsearch_run}",
        f"input={source}",
        f"output={output}",
        f"alignments={aligned}",
        "decode=beam",
        text=True,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in aligned.read_text().splitlines()]
    hyps = output.read_text().splitlines()
    assert len(records) == len(hyps) == 5
    for i in (1, 3):
        assert records[i] == {"source": [], "target": [], "weights": []} and hyps[i] == ""
    translator = load_translator(trained_rnnsearch_run, "cpu")
    for record, hyp in zip(records, hyps):
        if not record["source"]:
            continue
        weights = torch.tensor(record["weights"])
        assert record["source"][-1] == record["target"][-1] == "</s>"
        assert weights.shape == (len(record["target"]), len(record["source"]))
        assert torch.allclose(weights.sum(1), torch.ones(len(weights)), atol=1e-3)
        assert translator.tokenizer.tgt.decode_pieces(record["target"][:-1]) == hyp
    # The weights are those of the sentence alone (batch-mates and padding change nothing).
    alone = tmp_path / "alone.txt"
    alone.write_text("gato\n")
    again = run_command(
        "nmt.commands.translate",
        f"ckpt={trained_rnnsearch_run}",
        f"input={alone}",
        f"output={tmp_path / 'alone.out'}",
        f"alignments={tmp_path / 'alone.jsonl'}",
        "decode=beam",
        text=True,
    )
    assert again.returncode == 0, again.stderr
    single = json.loads((tmp_path / "alone.jsonl").read_text())
    assert single["target"] == records[2]["target"]
    assert torch.allclose(torch.tensor(single["weights"]), torch.tensor(records[2]["weights"]), atol=2e-4)


def test_alignments_of_a_model_without_attention_are_a_one_line_error(tmp_path, trained_run):
    aligned = tmp_path / "alignments.jsonl"
    result = run_command("nmt.commands.translate", f"ckpt={trained_run}", f"alignments={aligned}", stdin="uno\n", text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: alignments={aligned}: {trained_run / 'best.pt'} has no attention, so no "
        "alignments (the Cho et al. model reads one summary vector); use an attention "
        "model (model=rnnsearch)"
    )
    assert not aligned.exists()


def test_evaluate_draws_alignments_and_both_systems_by_length(tmp_path, trained_rnnsearch_run, trained_run):
    report_dir = tmp_path / "report"
    result = run_command(
        "nmt.commands.evaluate",
        f"ckpt={trained_rnnsearch_run}",
        f"compare_ckpt={trained_run}",
        "decode=greedy",
        "bootstrap_samples=20",
        "n_alignments=2",
        f"report_dir={report_dir}",
        text=True,
        fresh_interpreter=True,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((report_dir / "report.json").read_text())
    files = [figure["file"] for figure in report["figures"]]
    assert files[0] == "bleu_by_length_compared.png" and len(files) == 3
    assert all(name.startswith("alignment-") for name in files[1:])
    for name in files:
        assert (report_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in (report_dir / "report.md").read_text()
    assert report["compare"]["other_name"] == str(trained_run / "best.pt")
    assert [example["line"] for example in report["examples"][:2]] == [int(f[10:-4]) for f in files[1:]]
