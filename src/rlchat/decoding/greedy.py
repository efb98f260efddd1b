"""Greedy search: every row takes its most probable next token."""

from __future__ import annotations

import torch
from torch import Tensor

from rlchat.config import DecodeConfig
from rlchat.decoding.base import DecodeResult, DecodeStrategy
from rlchat.tokenizer import EOS_ID


class GreedySearch(DecodeStrategy):
    """One independent reply per row; a row is finished at its <eos>.

    Subclasses change only ``choose``: how a token is picked from a row's log-probs.
    """

    def __init__(self, config: DecodeConfig, rows_per_input: int = 1) -> None:
        super().__init__(config, rows_per_input)
        self.lengths = torch.empty(0, dtype=torch.long)  # (R,)
        self.scores = torch.empty(0)  # (R,)

    def initialize(self, batch_size: int, device: torch.device | str) -> Tensor:
        index = super().initialize(batch_size, device)
        self.lengths = torch.zeros(index.numel(), dtype=torch.long, device=device)
        self.scores = torch.zeros(index.numel(), device=device)
        return index

    def choose(self, log_probs: Tensor) -> Tensor:
        """log_probs (R, V) -> tokens (R,)."""
        return log_probs.argmax(dim=-1)

    def select(self, log_probs: Tensor) -> tuple[Tensor, None]:
        tokens = self.choose(log_probs)  # (R,)
        # Finished rows add the 0 of their forced <pad>.
        self.scores = self.scores + log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1)
        self.lengths = self.lengths + (~self.finished).long()
        self.finished = self.finished | (tokens == EOS_ID)
        return tokens, None

    @property
    def done(self) -> bool:
        return bool(self.finished.all())

    def finalize(self) -> DecodeResult:
        longest = int(self.lengths.max()) if self.lengths.numel() else 0
        return DecodeResult(
            tokens=self.history[:, :longest], lengths=self.lengths, scores=self.scores
        )
