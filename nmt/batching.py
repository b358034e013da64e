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

from nmt.tokenizer import BOS, EOS, PAD


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

    def collate(self, rows: np.ndarray) -> Batch:
        rows = np.asarray(rows)
        src_len = self.src_lengths[rows]
        tgt_len = self.tgt_lengths[rows]
        src = np.full((len(rows), src_len.max()), PAD, dtype=np.int64)
        tgt_in = np.full((len(rows), tgt_len.max()), PAD, dtype=np.int64)
        tgt_out = np.full_like(tgt_in, PAD)
        for i, row in enumerate(rows):
            s = self.src_values[self.src_offsets[row]: self.src_offsets[row + 1]]
            src[i, : len(s)] = s
            src[i, len(s)] = EOS
            if self.tgt_offsets is not None:
                t = self.tgt_values[self.tgt_offsets[row]: self.tgt_offsets[row + 1]]
                tgt_in[i, 0] = BOS
                tgt_in[i, 1: len(t) + 1] = t
                tgt_out[i, : len(t)] = t
                tgt_out[i, len(t)] = EOS
        return Batch(
            torch.from_numpy(src), torch.from_numpy(src_len.astype(np.int64)),
            torch.from_numpy(tgt_in), torch.from_numpy(tgt_out), torch.from_numpy(rows.astype(np.int64)),
        )


def token_batches(
    src_lengths: np.ndarray, tgt_lengths: np.ndarray, max_tokens: int,
    shuffle: bool = True, seed: int = 0, epoch: int = 0,
) -> list[np.ndarray]:
    """Group row indices into batches of at most ``max_tokens`` (with padding).

    Shuffled: random order, then sorted by length inside chunks of 100 batches'
    worth of sentences (similar lengths together, yet not the same batches every
    epoch), then the batches themselves shuffled. Not shuffled: sorted by length
    (for decoding: the caller restores the order with ``Batch.index``).
    """
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
        order = np.concatenate([
            part[np.argsort(longest[part], kind="stable")] for part in np.array_split(order, max(1, n // chunk))
        ]) if n else order
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
