"""Search properties on a tiny trained model: beam 1 == greedy, batch independence,
beam never below greedy under the model (alpha = 0), sorted distinct n-best lists."""

import math

import pytest
import torch

from nmt.batching import ParallelIds
from nmt.inference import load_translator
from nmt.lines import read_lines
from nmt.search import beam_search, greedy_search, max_output_lengths, top_candidates


@pytest.fixture(scope="module")
def translator(trained_run):
    return load_translator(trained_run, "cpu")


@pytest.fixture(scope="module")
def sources(translator, word_corpus):
    lines = read_lines(word_corpus / "test.es") + read_lines(word_corpus / "validation.es")
    return translator.tokenizer.encode_src(lines)


def batch_of(ids):
    return ParallelIds.from_lists(ids).collate(list(range(len(ids))))


def model_score(model, src_ids, tokens):
    """log p(tokens + EOS | source) recomputed by teacher forcing."""
    batch = ParallelIds.from_lists([src_ids], [tokens]).collate([0])
    with torch.no_grad():
        logits = model(batch.src, batch.src_lengths, batch.tgt_in)
    return torch.log_softmax(logits, -1).gather(-1, batch.tgt_out.unsqueeze(-1)).sum().item()


def test_greedy_reproduces_training_targets(translator, word_corpus):
    """The tiny model has overfit its training corpus: greedy output equals the targets."""
    src = read_lines(word_corpus / "train.es")[:60]
    tgt = read_lines(word_corpus / "train.en")[:60]
    batch = batch_of(translator.tokenizer.encode_src(src))
    hyps = greedy_search(translator.model, batch.src, batch.src_lengths)
    outputs = translator.tokenizer.decode_tgt([h.tokens for h in hyps])
    assert sum(o == t for o, t in zip(outputs, tgt)) >= 0.9 * len(tgt)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_size_one_is_greedy(translator, sources, length_penalty):
    batch = batch_of(sources)
    greedy = greedy_search(translator.model, batch.src, batch.src_lengths)
    beam = beam_search(translator.model, batch.src, batch.src_lengths, beam_size=1, length_penalty=length_penalty)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam]
    for g, b in zip(greedy, beam):
        assert math.isclose(g.score, b[0].score, abs_tol=1e-4)


@pytest.mark.parametrize("beam_size", [1, 4])
def test_output_independent_of_batch(translator, sources, beam_size):
    """A sentence's translation does not depend on its batch-mates or the batch size."""
    model = translator.model
    full = batch_of(sources)
    together = beam_search(model, full.src, full.src_lengths, beam_size=beam_size)
    for size in (1, 3, 7):
        for start in range(0, len(sources), size):
            part = batch_of(sources[start : start + size])
            alone = beam_search(model, part.src, part.src_lengths, beam_size=beam_size)
            assert [h[0].tokens for h in alone] == [h[0].tokens for h in together[start : start + size]]
    reversed_batch = batch_of(sources[::-1])
    reversed_out = beam_search(model, reversed_batch.src, reversed_batch.src_lengths, beam_size=beam_size)
    assert [h[0].tokens for h in reversed_out[::-1]] == [h[0].tokens for h in together]


def test_beam_never_scores_below_greedy(translator, sources):
    model = translator.model
    batch = batch_of(sources)
    greedy = greedy_search(model, batch.src, batch.src_lengths)
    for beam_size in (2, 5):
        beam = beam_search(model, batch.src, batch.src_lengths, beam_size=beam_size, length_penalty=0.0)
        for src_ids, g, b in zip(sources, greedy, beam):
            assert b[0].score >= g.score - 1e-4
            # the reported score is the model's probability of the output
            assert math.isclose(b[0].score, model_score(model, src_ids, b[0].tokens), abs_tol=1e-3)


def test_impossible_beam_settings_name_the_setting(translator, sources):
    batch = batch_of(sources[:2])
    with pytest.raises(ValueError, match=r"decode.beam_size=0: must be at least 1"):
        beam_search(translator.model, batch.src, batch.src_lengths, beam_size=0)
    with pytest.raises(ValueError, match=r"decode.nbest=3 must be between 1 and decode.beam_size=2"):
        beam_search(translator.model, batch.src, batch.src_lengths, beam_size=2, nbest=3)


def test_nbest_sorted_and_distinct(translator, sources):
    batch = batch_of(sources[:10])
    results = beam_search(translator.model, batch.src, batch.src_lengths, beam_size=5, nbest=5)
    for hyps in results:
        assert len(hyps) == 5
        keys = [h.normalized_score for h in hyps]
        assert keys == sorted(keys, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 5


def test_length_limits(translator, sources):
    batch = batch_of(sources[:8])
    limits = max_output_lengths(batch.src_lengths, 0.0, 3)
    for search in (greedy_search, lambda *a, **k: [h[0] for h in beam_search(*a, beam_size=3, **k)]):
        hyps = search(translator.model, batch.src, batch.src_lengths, max_len_a=0.0, max_len_b=3)
        assert all(len(h.tokens) + 1 <= limit for h, limit in zip(hyps, limits.tolist()))
        long = search(translator.model, batch.src, batch.src_lengths, min_len=12, max_len_b=40)
        assert all(len(h.tokens) + 1 > 12 for h in long)


def test_top_candidates_picks_best_across_beams():
    scores = torch.tensor([[0.0, -1.0]])
    log_probs = torch.log(torch.tensor([[[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]]]))
    cand_scores, beams, tokens = top_candidates(scores, log_probs, beam_size=2)
    # beam 0: -0.51 (token 1), -1.20 (2), -2.30 (0); beam 1: -1.69 (0), -2.39 (1)
    assert beams.tolist() == [[0, 0, 1, 0]]
    assert tokens.tolist() == [[1, 2, 0, 0]]
    assert torch.all(cand_scores[:, :-1] >= cand_scores[:, 1:])


def test_length_limit_wins_over_min_len(translator, sources):
    """min_len beyond the length limit must not leave a sentence without a hypothesis."""
    batch = batch_of(sources[:6])
    greedy = greedy_search(translator.model, batch.src, batch.src_lengths, max_len_a=0.0, max_len_b=3, min_len=5)
    beam = beam_search(
        translator.model, batch.src, batch.src_lengths, beam_size=3, nbest=3, max_len_a=0.0, max_len_b=3, min_len=5
    )
    assert all(len(h.tokens) == 2 and math.isfinite(h.score) for h in greedy)
    assert all(hyps and all(len(h.tokens) == 2 and math.isfinite(h.score) for h in hyps) for hyps in beam)
