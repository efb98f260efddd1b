"""Padding, masks and length-bucketed batches.

Bucketing puts examples of similar length in one batch, so little compute goes to padding;
shuffling the buckets keeps the order random from epoch to epoch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rlchat.tokenizer import BOS_ID, EOS_ID, PAD_ID


@dataclass
class Batch:
    src: Tensor  # (B, S) input ids, padded
    src_lengths: Tensor  # (B,)
    tgt_in: Tensor  # (B, T) <bos> + reply, padded
    tgt_out: Tensor  # (B, T) reply + <eos>, padded
    tgt_mask: Tensor  # (B, T) true on real target positions

    @property
    def size(self) -> int:
        return self.src.size(0)

    @property
    def target_tokens(self) -> int:
        return int(self.tgt_mask.sum())

    def to(self, device: torch.device | str) -> Batch:
        non_blocking = torch.device(device).type == "cuda"
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in vars(self).values()))


def pad(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> tuple[Tensor, Tensor]:
    """Right-pad to the longest: -> ids (B, L), lengths (B,)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    ids = torch.full((len(sequences), max((len(s) for s in sequences), default=0)), pad_id)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return ids, lengths


def encode_inputs(sources: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Padded model inputs; an empty input becomes a lone <eos> so the encoder sees one token."""
    return pad([list(s) if len(s) else [EOS_ID] for s in sources])


def make_batch(sources: Sequence[Sequence[int]], replies: Sequence[Sequence[int]]) -> Batch:
    """Teacher-forcing batch: decoder input <bos> y, decoder target y <eos>."""
    src, src_lengths = encode_inputs(sources)
    tgt_in, _ = pad([[BOS_ID, *r] for r in replies])
    tgt_out, tgt_lengths = pad([[*r, EOS_ID] for r in replies])
    tgt_mask = torch.arange(tgt_out.size(1)).unsqueeze(0) < tgt_lengths.unsqueeze(1)
    return Batch(src, src_lengths, tgt_in, tgt_out, tgt_mask)


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int, bucket_factor: int = 50
) -> list[list[int]]:
    """Indices grouped into batches of similar length, in a seeded random order.

    Shuffle, cut into chunks of ``bucket_factor`` batches, sort each chunk by length,
    cut it into batches, then shuffle the batches: near-minimal padding, random order.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * bucket_factor
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches
