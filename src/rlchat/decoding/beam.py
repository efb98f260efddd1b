"""Beam search with the GNMT length penalty, batched over inputs and beams.

Wu et al., "Google's Neural Machine Translation System", 2016, https://arxiv.org/abs/1609.08144,
eq. 14. Rows are laid out input-major: row b * K + k is beam k of input b (and, in the
result, row b * N + n is input b's n-th best reply).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlchat.config import DecodeConfig
from rlchat.decoding.base import DecodeResult, DecodeStrategy
from rlchat.tokenizer import EOS_ID, PAD_ID


def length_penalty(length: int, alpha: float) -> float:
    """GNMT lp(Y) = ((5 + |Y|) / 6) ** alpha; a hypothesis scores log P(Y|X) / lp(Y)."""
    return ((5 + length) / 6) ** alpha


class BeamSearch(DecodeStrategy):
    """Keeps the K best unfinished hypotheses per input and the N best finished ones.

    Each step keeps the K best extensions of an input's beams; those ending in <eos> are
    scored as finished hypotheses. An input is done when its N-th best finished hypothesis
    cannot be beaten by any continuation of its beams, or at the longest reply. ``n_best``
    N <= K rows per input come out, best first (an N-best list for reranking); rows an input
    never finished score -inf and are empty.
    """

    def __init__(self, config: DecodeConfig, n_best: int = 1) -> None:
        if config.beam_size < 1:
            raise ValueError("beam_size must be >= 1")
        if not 1 <= n_best <= config.beam_size:
            raise ValueError(f"n_best must be in [1, beam_size = {config.beam_size}], not {n_best}")
        super().__init__(config, rows_per_input=config.beam_size)
        self.beam_size = config.beam_size
        self.n_best = n_best
        self.alpha = config.length_penalty
        self.scores = torch.empty(0)  # (R,) summed log-probs of the unfinished hypotheses
        self.input_done = torch.empty(0, dtype=torch.bool)  # (B,)
        self.best_scores = torch.empty(0)  # (B, N) length-penalised, of the best finished
        self.best_tokens = torch.empty(0, n_best, self.max_length, dtype=torch.long)  # (B, N, L)
        self.best_lengths = torch.empty(0, n_best, dtype=torch.long)  # (B, N)

    def initialize(self, batch_size: int, device: torch.device | str) -> Tensor:
        index = super().initialize(batch_size, device)
        K, N = self.beam_size, self.n_best
        # Only beam 0 starts alive: K identical beams would fill the beam with duplicates.
        scores = torch.full((batch_size, K), float("-inf"), device=device)
        scores[:, 0] = 0.0
        self.scores = scores.view(-1)
        self.input_done = torch.zeros(batch_size, dtype=torch.bool, device=device)
        self.best_scores = torch.full((batch_size, N), float("-inf"), device=device)
        self.best_tokens = torch.full(
            (batch_size, N, self.max_length), PAD_ID, dtype=torch.long, device=device
        )
        self.best_lengths = torch.zeros(batch_size, N, dtype=torch.long, device=device)
        return index

    def constrain(self, log_probs: Tensor) -> Tensor:
        # A done input's beams are still stepped (beams are not dropped from ``alive``); they
        # continue with <pad> at no cost, so their scores stay as they were.
        log_probs = super().constrain(log_probs)
        pad_only = torch.full((log_probs.size(-1),), float("-inf"), device=log_probs.device)
        pad_only[PAD_ID] = 0.0
        finished = self.input_done.repeat_interleave(self.beam_size)  # (R,)
        return torch.where(finished.unsqueeze(1), pad_only, log_probs)

    def select(self, log_probs: Tensor) -> tuple[Tensor, Tensor]:
        K, V, N = self.beam_size, log_probs.size(-1), self.n_best
        B = self.input_done.numel()
        length = self.step + 1  # of a hypothesis ending at this step, <eos> included
        candidates = (self.scores.unsqueeze(1) + log_probs).view(B, K * V)
        top_scores, top_index = candidates.topk(K, dim=1)  # (B, K), best first
        origins = top_index // V  # (B, K) beam each candidate extends
        tokens = top_index % V  # (B, K)
        reorder = (torch.arange(B, device=log_probs.device).unsqueeze(1) * K + origins).view(-1)

        ends = tokens == EOS_ID  # (B, K)
        ended_scores = (top_scores / length_penalty(length, self.alpha)).masked_fill(
            ~ends | self.input_done.unsqueeze(1), float("-inf")
        )
        if bool(torch.isfinite(ended_scores).any()):
            self._keep_finished(ended_scores, reorder, length)
        # A hypothesis that ended keeps its slot this step but is never extended, as in
        # OpenNMT-py; so a beam of one is exactly greedy search.
        alive_scores = top_scores.masked_fill(ends, float("-inf"))  # (B, K)
        self.scores = alive_scores.view(-1)

        # Log-probs are <= 0, so a continuation's summed score only falls; its penalised score
        # is at most the current sum over the largest penalty of any length it could end at.
        largest_penalty = max(
            length_penalty(length + 1, self.alpha), length_penalty(self.max_length, self.alpha)
        )
        worst_kept = self.best_scores[:, N - 1]  # (B,) the N-th best finished
        unbeatable = worst_kept >= alive_scores.max(dim=1).values / largest_penalty
        self.input_done = self.input_done | unbeatable | (length >= self.max_length)
        return tokens.view(-1), reorder

    def _keep_finished(self, ended_scores: Tensor, reorder: Tensor, length: int) -> None:
        """Merge this step's finished hypotheses (B, K) into the N best kept per input."""
        B, K, N = ended_scores.size(0), self.beam_size, self.n_best
        hypotheses = self.history.index_select(0, reorder).view(B, K, -1)  # (B, K, L)
        hypotheses[:, :, self.step] = EOS_ID
        # Kept ones first: on a tie the earlier hypothesis stays.
        scores = torch.cat([self.best_scores, ended_scores], dim=1)  # (B, N + K)
        tokens = torch.cat([self.best_tokens, hypotheses], dim=1)  # (B, N + K, L)
        lengths = torch.cat(
            [self.best_lengths, torch.full_like(ended_scores, length, dtype=torch.long)], dim=1
        )
        order = scores.argsort(dim=1, descending=True, stable=True)[:, :N]  # (B, N)
        self.best_scores = scores.gather(1, order)
        self.best_tokens = tokens.gather(1, order.unsqueeze(2).expand(-1, -1, tokens.size(2)))
        self.best_lengths = lengths.gather(1, order)

    @property
    def done(self) -> bool:
        return bool(self.input_done.all())

    def finalize(self) -> DecodeResult:
        lengths = self.best_lengths.reshape(-1)  # (B * N,) input-major
        longest = int(lengths.max()) if lengths.numel() else 0
        return DecodeResult(
            tokens=self.best_tokens.reshape(lengths.numel(), -1)[:, :longest],
            lengths=lengths,
            scores=self.best_scores.reshape(-1),
        )
