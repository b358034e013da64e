"""Token-budget batches of similar-length sentences, reshuffled every epoch.

A batch holds as many pairs as fit ``max_tokens`` counted with padding
(batch size x longest side), so short sentences come in large batches and long
ones in small batches, and almost nothing is padding. The order of an epoch is a
pure function of (seed, epoch): resuming at batch k of epoch e replays nothing
and skips nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from nmt.errors import SettingError
from nmt.tokens import BOS, EOS, PAD


class Batch(NamedTuple):
    src: torch.Tensor  # (B, S) source ids + EOS, padded with PAD
    src_lengths: torch.Tensor  # (B,)
    tgt_in: torch.Tensor  # (B, T) BOS + target ids
    tgt_out: torch.Tensor  # (B, T) target ids + EOS
    index: torch.Tensor  # (B,) rows of the split, to restore order after decoding

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in self))

    def pin_memory(self) -> "Batch":
        return Batch(*(t.pin_memory() for t in self))

    @property
    def n_tgt_tokens(self) -> int:
        """Real target tokens. Count them while the batch is on the host: on a GPU batch
        reading the count would make the host wait for the device."""
        return int((self.tgt_out != PAD).sum())


class ParallelIds:
    """Token ids of one split, stored flat (values + offsets) with their lengths."""

    def __init__(self, src_values, src_offsets, tgt_values=None, tgt_offsets=None):
        self.src_values, self.src_offsets = src_values, src_offsets
        self.tgt_values, self.tgt_offsets = tgt_values, tgt_offsets
        self.src_lengths = np.diff(src_offsets) + 1  # + EOS
        self.tgt_lengths = np.diff(tgt_offsets) + 1 if tgt_offsets is not None else np.ones_like(self.src_lengths)

    @classmethod
    def from_lists(cls, src: list[list[int]], tgt: list[list[int]] | None = None) -> "ParallelIds":
        def flat(seqs):
            offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(s) for s in seqs])
            values = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
            return values, offsets

        return cls(*flat(src), *(flat(tgt) if tgt is not None else (None, None)))

    def __len__(self) -> int:
        return len(self.src_lengths)

    def select(self, rows: np.ndarray) -> "ParallelIds":
        """A new store holding only ``rows`` (vectorized: no Python loop per sentence)."""

        def take(values, offsets):
            starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
            new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
            np.cumsum(lengths, out=new_offsets[1:])
            within = np.arange(new_offsets[-1]) - np.repeat(new_offsets[:-1], lengths)
            return values[np.repeat(starts, lengths) + within], new_offsets

        rows = np.asarray(rows, dtype=np.int64)
        tgt = take(self.tgt_values, self.tgt_offsets) if self.tgt_offsets is not None else (None, None)
        return ParallelIds(*take(self.src_values, self.src_offsets), *tgt)

    def collate(self, rows: np.ndarray) -> Batch:
        """Padded tensors for ``rows``: source + EOS, BOS + target, target + EOS."""
        rows = np.asarray(rows, dtype=np.int64)
        src = _padded(self.src_values, self.src_offsets, rows, front=None, back=EOS)
        if self.tgt_offsets is not None:
            tgt_in = _padded(self.tgt_values, self.tgt_offsets, rows, front=BOS, back=None)
            tgt_out = _padded(self.tgt_values, self.tgt_offsets, rows, front=None, back=EOS)
        else:
            tgt_in = tgt_out = np.full((len(rows), 1), PAD, dtype=np.int64)
        return Batch(
            torch.from_numpy(src),
            torch.from_numpy(self.src_lengths[rows].astype(np.int64)),
            torch.from_numpy(tgt_in),
            torch.from_numpy(tgt_out),
            torch.from_numpy(rows),
        )


def _padded(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray, front: int | None, back: int | None) -> np.ndarray:
    """Rows of a flat (values, offsets) store as one PAD-padded matrix, with an optional
    token before and after each sequence. Vectorized: no Python loop per sentence."""
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
    shift = 0 if front is None else 1
    width = int(lengths.max(initial=0)) + shift + (back is not None)
    positions = np.arange(width)[None, :] - shift  # index into each sequence
    inside = (positions >= 0) & (positions < lengths[:, None])
    gathered = values[np.where(inside, starts[:, None] + positions, 0)] if len(values) else np.zeros(inside.shape)
    out = np.where(inside, gathered, PAD).astype(np.int64)
    if front is not None:
        out[:, 0] = front
    if back is not None:
        out[np.arange(len(rows)), lengths + shift] = back
    return out


def token_batches(
    src_lengths: np.ndarray,
    tgt_lengths: np.ndarray,
    max_tokens: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
) -> list[np.ndarray]:
    """Group row indices into batches of at most ``max_tokens`` (with padding).

    Shuffled: random order, then sorted by length inside chunks of 100 batches'
    worth of sentences (similar lengths together, yet not the same batches every
    epoch), then the batches themselves shuffled. Not shuffled: sorted by length
    (for decoding: the caller restores the order with ``Batch.index``). Either
    way a batch is the longest run of the next sentences in that order that fits.
    """
    n = len(src_lengths)
    longest = np.maximum(src_lengths, tgt_lengths)
    if longest.max(initial=0) > max_tokens:
        raise SettingError(
            f"a sentence of {longest.max()} subwords does not fit a batch of {max_tokens} tokens; "
            "raise the token budget (train.max_tokens) or lower train.max_subwords"
        )
    # Lengths as uint16 where they fit: numpy's stable argsort is then a radix
    # sort, several times faster than the merge sort of int64, and gives the
    # same order (a stable sort has only one result).
    small = np.issubdtype(longest.dtype, np.integer) and longest.min(initial=0) >= 0 and longest.max(initial=0) < 2**16
    keys = longest.astype(np.uint16) if small else longest
    if shuffle:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(n)
        chunk = max(1, 100 * max_tokens // max(1, int(longest.mean()) if n else 1))
        order = (
            np.concatenate([part[np.argsort(keys[part], kind="stable")] for part in np.array_split(order, max(1, n // chunk))])
            if n
            else order
        )
    else:
        order = np.argsort(keys, kind="stable")

    # Greedy packing in ``order``: a batch grows until one more sentence would
    # take it over the budget. The loop is over batches, not sentences (tens of
    # millions of them would take tens of seconds every epoch): numpy finds each
    # batch's end in a window of the next sentences, the window starting at about
    # twice the previous batch's size and doubling while the whole window fits.
    batches, start, window = [], 0, 64
    while start < n:
        while True:
            stop = min(start + window, n)
            cost = np.arange(1, stop - start + 1) * np.maximum.accumulate(longest[order[start:stop]])
            over = cost > max_tokens  # cost[0] never is: every sentence fits alone
            first_over = int(over.argmax())
            if over[first_over] or stop == n:
                break
            window *= 2
        end = start + first_over if over[first_over] else n
        batches.append(order[start:end])
        window = max(64, 2 * (end - start))
        start = end
    if shuffle:
        rng.shuffle(batches)
    return batches
