"""The interface every decoding strategy implements, and the constraints they all share.

Design after OpenNMT-py's ``DecodeStrategy``: the driving loop (``loop.py``) steps the model and
hands each step's log-probabilities to ``advance``; the strategy picks the next tokens and, for
beams, the rows of the decoder state to continue from.

Shapes: B inputs, R decoded rows (B, B * samples or B * beam), A rows the model is still
stepped on (R for beams; fewer for the other strategies once some replies have ended),
V vocabulary size, L longest reply including its <eos> (``max_tokens + 1``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from rlchat.config import DecodeConfig
from rlchat.tokenizer import BOS_ID, EOS_ID, PAD_ID

# The decoder is never trained to emit these; a <pad> inside a reply would also read as its end.
NEVER_GENERATED = (PAD_ID, BOS_ID)


@dataclass
class DecodeResult:
    """Decoded replies, one row each, without <bos>."""

    tokens: Tensor  # (R, L) long, padded with <pad>, ending with <eos> where finished
    lengths: Tensor  # (R,) long, real tokens including the <eos>
    scores: Tensor  # (R,) float: summed log-probs, or the length-penalised score for beams

    def select(self, index: Tensor) -> DecodeResult:
        """Rows ``index`` (R',) only, trimmed to their longest."""
        lengths = self.lengths.index_select(0, index)
        longest = int(lengths.max()) if lengths.numel() else 0
        return DecodeResult(
            tokens=self.tokens.index_select(0, index)[:, :longest],
            lengths=lengths,
            scores=self.scores.index_select(0, index),
        )

    def to_lists(self) -> list[list[int]]:
        """The reply ids of every row, without <eos> and padding."""
        return [
            [token for token in row[:length] if token != EOS_ID]
            for row, length in zip(self.tokens.tolist(), self.lengths.tolist(), strict=True)
        ]


def repeated_ngram_mask(history: Tensor, n: int, vocab_size: int) -> Tensor:
    """Tokens that would complete an n-gram already present in the same row.

    history (R, t) tokens generated so far -> (R, V) bool, true on the tokens to block.
    Compares the last n - 1 tokens with the first n - 1 of every earlier n-gram at once;
    replies are short, so the (R, t - n + 1, n) windows stay small.
    """
    R, t = history.shape
    if n <= 0 or t < n:
        return torch.zeros(R, vocab_size, dtype=torch.bool, device=history.device)
    windows = history.unfold(1, n, 1)  # (R, W, n), W = t - n + 1
    prefix = history[:, t - n + 1 :]  # (R, n - 1)
    matches = (windows[:, :, :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (R, W)
    # Adding counts, not writing flags: several windows may end in the same token.
    hits = torch.zeros(R, vocab_size, device=history.device)
    hits.scatter_add_(1, windows[:, :, -1], matches.float())
    return hits > 0


def length_mask(step: int, config: DecodeConfig, vocab_size: int, device: torch.device) -> Tensor:
    """Tokens no strategy may choose at reply position ``step`` -> (V,) bool.

    Never <pad> or <bos>; no <eos> before ``min_tokens``; only <eos> at ``max_tokens``.
    RL scores its samples under the same rules (``train/scst.py``).
    """
    blocked = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    blocked[list(NEVER_GENERATED)] = True
    if step < config.min_tokens:
        blocked[EOS_ID] = True
    if step == config.max_tokens:
        blocked[:] = True
        blocked[EOS_ID] = False
    return blocked


class DecodeStrategy(ABC):
    """Chooses the next token of every row; holds what was generated so far.

    Usage, once per batch: ``index = initialize(B, device)`` gives the batch row each decoded
    row starts from; then ``advance(log_probs)`` once per step until ``done``; then
    ``finalize()``. The length and repetition constraints are applied in ``advance`` before
    the strategy sees the log-probabilities, so every strategy obeys them the same way.
    The model is stepped only on the rows in ``alive``; ``advance`` says when that set changes.
    """

    def __init__(self, config: DecodeConfig, rows_per_input: int = 1) -> None:
        if not 0 <= config.min_tokens <= config.max_tokens:
            raise ValueError("need 0 <= min_tokens <= max_tokens")
        if rows_per_input < 1:
            raise ValueError("need at least one row per input")
        self.config = config
        self.rows_per_input = rows_per_input
        self.max_length = config.max_tokens + 1  # the last step only has room for <eos>
        self.step = 0
        self.history = torch.empty(0, self.max_length, dtype=torch.long)  # (R, L)
        self.alive = torch.empty(0, dtype=torch.long)  # (A,) row of each decoder state row

    def initialize(self, batch_size: int, device: torch.device | str) -> Tensor:
        """Reset for a batch of B inputs -> (R,) batch row of each decoded row, input-major."""
        index = torch.arange(batch_size, device=device).repeat_interleave(self.rows_per_input)
        R = index.numel()
        self.step = 0
        self.history = torch.full((R, self.max_length), PAD_ID, dtype=torch.long, device=device)
        self.alive = torch.arange(R, device=device)
        return index

    def constrain(self, log_probs: Tensor) -> Tensor:
        """Block what no strategy may choose at this step: (A, V) -> (A, V).

        Out of place, so log-probabilities that carry gradients stay intact.
        """
        V = log_probs.size(-1)
        blocked = length_mask(self.step, self.config, V, log_probs.device)  # (V,)
        if self.config.no_repeat_ngram > 0:
            history = self.history[self.alive, : self.step]  # (A, t)
            blocked = blocked | repeated_ngram_mask(history, self.config.no_repeat_ngram, V)
        return log_probs.masked_fill(blocked, float("-inf"))  # (V,) or (A, V) mask

    def advance(self, log_probs: Tensor) -> tuple[Tensor, Tensor | None]:
        """One step: log_probs (A, V) of the alive rows -> next tokens (A',), reorder (A',) or None.

        The reorder index says which row of the decoder state each next row continues from:
        beams reorder, strategies that stop stepping ended rows drop them. None means every
        row continues from itself.
        """
        if self.step >= self.max_length:
            raise RuntimeError("advance called after the longest reply")
        tokens, reorder = self.select(self.constrain(log_probs))
        if reorder is not None:
            self.history = self.history.index_select(0, reorder)
        self.history[self.alive, self.step] = tokens
        self.step += 1
        return tokens, reorder

    @abstractmethod
    def select(self, log_probs: Tensor) -> tuple[Tensor, Tensor | None]:
        """The strategy's choice from constrained log_probs (A, V): tokens (A,), reorder or None.

        Called before ``history`` gets this step's tokens; a reorder (R,) permutes every row
        of ``history`` (beams).
        """

    @property
    @abstractmethod
    def done(self) -> bool:
        """True once no further step can change the result."""

    @abstractmethod
    def finalize(self) -> DecodeResult:
        """The decoded replies."""
