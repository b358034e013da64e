"""Token-budget batches: every row once, within budget, reproducible per (seed, epoch); padded layout."""

import numpy as np

from nmt.batching import ParallelIds, token_batches
from nmt.tokenizer import BOS, EOS, PAD


def test_batches_cover_every_row_once_within_budget():
    rng = np.random.default_rng(0)
    src, tgt = rng.integers(1, 60, 500), rng.integers(1, 60, 500)
    for shuffle in (True, False):
        batches = token_batches(src, tgt, 512, shuffle=shuffle, seed=3, epoch=1)
        rows = np.concatenate(batches)
        assert sorted(rows.tolist()) == list(range(500))
        for batch in batches:
            assert len(batch) * np.maximum(src, tgt)[batch].max() <= 512
    # similar lengths together: little padding
    longest = np.maximum(src, tgt)
    padded = sum(len(b) * longest[b].max() for b in batches)
    assert longest.sum() / padded > 0.9


def test_epoch_order_is_a_function_of_seed_and_epoch():
    lengths = np.arange(1, 301) % 37 + 1
    first = token_batches(lengths, lengths, 256, seed=1, epoch=0)
    again = token_batches(lengths, lengths, 256, seed=1, epoch=0)
    other = token_batches(lengths, lengths, 256, seed=1, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(first, other))


def test_collate_layout():
    data = ParallelIds.from_lists([[5, 6, 7], [8]], [[9], [10, 11, 12]])
    batch = data.collate(np.array([1, 0]))
    assert batch.src.tolist() == [[8, EOS, PAD, PAD], [5, 6, 7, EOS]]
    assert batch.src_lengths.tolist() == [2, 4]
    assert batch.tgt_in.tolist() == [[BOS, 10, 11, 12], [BOS, 9, PAD, PAD]]
    assert batch.tgt_out.tolist() == [[10, 11, 12, EOS], [9, EOS, PAD, PAD]]
    assert batch.index.tolist() == [1, 0]
    assert batch.n_tgt_tokens == 6


def test_select_keeps_the_chosen_rows():
    src = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14]]
    tgt = [[1], [2, 3], [4, 5, 6], [7]]
    picked = ParallelIds.from_lists(src, tgt).select(np.array([3, 0, 2]))
    expected = ParallelIds.from_lists([src[3], src[0], src[2]], [tgt[3], tgt[0], tgt[2]])
    for name in ("src_values", "src_offsets", "tgt_values", "tgt_offsets", "src_lengths", "tgt_lengths"):
        assert np.array_equal(getattr(picked, name), getattr(expected, name)), name
