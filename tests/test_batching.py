"""Token-budget batches: every row once, within budget, reproducible per (seed, epoch); padded layout."""

import warnings

import numpy as np
import pytest

from nmt.batching import ParallelIds, token_batches
from nmt.tokens import BOS, EOS, PAD


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


def reference_token_batches(src_lengths, tgt_lengths, max_tokens, shuffle=True, seed=0, epoch=0):
    """``token_batches`` as it was with a Python loop over every sentence, kept verbatim
    as the reference: the loop over batches must give exactly the same batches, or an
    interrupted run would not resume where it stopped."""
    n = len(src_lengths)
    longest = np.maximum(src_lengths, tgt_lengths)
    if longest.max(initial=0) > max_tokens:
        raise ValueError(
            f"a sentence of {longest.max()} subwords does not fit a batch of {max_tokens} tokens; "
            "raise the token budget (train.max_tokens) or lower train.max_subwords"
        )
    if shuffle:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(n)
        chunk = max(1, 100 * max_tokens // max(1, int(longest.mean())))
        order = (
            np.concatenate(
                [part[np.argsort(longest[part], kind="stable")] for part in np.array_split(order, max(1, n // chunk))]
            )
            if n
            else order
        )
    else:
        order = np.argsort(longest, kind="stable")

    batches, start, batch_longest = [], 0, 0
    for i, row in enumerate(order):
        candidate = max(batch_longest, longest[row])
        if (i - start + 1) * candidate > max_tokens:
            batches.append(order[start:i])
            start, candidate = i, longest[row]
        batch_longest = candidate
    if start < n:
        batches.append(order[start:])
    if shuffle:
        rng.shuffle(batches)
    return batches


def _outcome(fn, *args, **kwargs):
    """The batches, or the type and message of the error raised."""
    try:
        return fn(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - compared, not swallowed
        return type(error), str(error)


def _assert_same_outcome(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of no sentences (n == 0)
        expected = _outcome(reference_token_batches, *args, **kwargs)
        got = _outcome(token_batches, *args, **kwargs)
    if isinstance(expected, tuple):
        if len(args[0]) == 0 and "NaN" in expected[1]:  # the old loop's bug on an empty shuffled split
            assert got == []
            return
        # the same message, from nmt's own subclass of the built-in error (nmt.errors)
        assert isinstance(got, tuple) and issubclass(got[0], expected[0]) and got[1] == expected[1], got
        return
    assert isinstance(got, list) and len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def _length_cases(rng, n, max_tokens):
    """(src, tgt) length pairs of several shapes, all within ``max_tokens``."""
    top = min(max_tokens, 50)
    heavy = rng.integers(1, 12, n)
    heavy[rng.random(n) < 0.02] = max_tokens  # a few as long as the budget allows
    long = rng.random(n) < 0.05
    heavy[long] = rng.integers(12, max_tokens + 1, n)[long]
    yield np.full(n, top), np.full(n, top)  # all equal
    yield rng.integers(1, top + 1, n), rng.integers(1, top + 1, n)  # uniform
    yield heavy, rng.integers(1, 12, n)  # heavy tail
    yield (rng.integers(1, top + 1, n).astype(np.int32), rng.integers(1, top + 1, n).astype(np.int32))


@pytest.mark.parametrize("n", [0, 1, 2, 17, 1000, 20000])
def test_token_batches_equal_the_per_sentence_loop(n):
    rng = np.random.default_rng(n)
    for max_tokens in (50, 60, 4096):  # 50: the longest sentence fills a batch alone
        for src, tgt in _length_cases(rng, n, max_tokens):
            for shuffle in (True, False):
                for seed, epoch in ((0, 0), (1, 3), (7, 11)):
                    _assert_same_outcome(src, tgt, max_tokens, shuffle=shuffle, seed=seed, epoch=epoch)


def test_token_batches_equal_the_per_sentence_loop_at_the_edges():
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 70_000, 3000)  # beyond uint16: the int64 sort
    _assert_same_outcome(lengths, lengths[::-1].copy(), 200_000, shuffle=True, seed=2, epoch=1)
    _assert_same_outcome(lengths, lengths, 200_000, shuffle=False)
    ones = np.ones(5000, dtype=np.int64)  # batches of thousands: the window doubles many times
    _assert_same_outcome(ones, ones, 4096, shuffle=True, seed=1)
    _assert_same_outcome(ones, ones, 4096, shuffle=False)
    _assert_same_outcome(ones, ones, 1, shuffle=True, seed=1)  # one sentence per batch
    _assert_same_outcome(lengths, lengths, 60_000)  # too long for the budget: the same error
    for n in range(1, 300):  # windows ending at every position, before a sentence that does not fit
        short = np.ones(n, dtype=np.int64)
        short[-1] = 100
        _assert_same_outcome(short, short, 100, shuffle=False)
        _assert_same_outcome(short, short, 150, shuffle=False)
    _assert_same_outcome(np.array([3.0, 2.5, 7.0]), np.array([1.0, 4.0, 2.0]), 8.0, shuffle=False)  # float lengths
