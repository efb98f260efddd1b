"""Random sampling with temperature, top-k and nucleus (top-p) filtering.

Nucleus sampling: Holtzman et al., "The Curious Case of Neural Text Degeneration", 2019,
https://arxiv.org/abs/1904.09751.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlchat.config import DecodeConfig
from rlchat.decoding.greedy import GreedySearch


def filter_logits(log_probs: Tensor, *, temperature: float, top_k: int, top_p: float) -> Tensor:
    """Logits to sample from: log_probs (R, V) -> (R, V), -inf on the tokens filtered out.

    Temperature first, then top-k, then top-p, so the nucleus is measured on the
    distribution that is actually sampled.
    """
    logits = log_probs / temperature
    if 0 < top_k < logits.size(-1):
        kth_best = logits.topk(top_k, dim=-1).values[:, -1:]  # (R, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (R, V) each
        probs = sorted_logits.softmax(dim=-1)
        # Holtzman et al. sec. 3.1: the smallest set whose mass reaches p. A token is dropped
        # when the tokens before it already reach p, so the best token always stays.
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop_sorted[:, 0] = False  # even a p below float precision keeps the best token
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class Sampling(GreedySearch):
    """Greedy search's bookkeeping, with a sampled token instead of the argmax.

    ``num_samples`` K rows per input, input-major (row i * K + k), each an independent draw.
    Scores are the model's log-probs of the drawn tokens, before temperature and filtering.
    """

    def __init__(
        self,
        config: DecodeConfig,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        if config.temperature <= 0:
            raise ValueError("temperature must be positive; use strategy 'greedy' for argmax")
        if not 0.0 < config.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if config.top_k < 0:
            raise ValueError("top_k must be >= 0")
        super().__init__(config, rows_per_input=num_samples)
        self.generator = generator

    def choose(self, log_probs: Tensor) -> Tensor:
        logits = filter_logits(
            log_probs,
            temperature=self.config.temperature,
            top_k=self.config.top_k,
            top_p=self.config.top_p,
        )
        return gumbel_argmax(logits, self.generator)


class SelfCriticalSampling(Sampling):
    """K samples plus the greedy reply of every input, in one decoding pass.

    Rows are input-major with K + 1 rows per input: row i * (K + 1) is input i's greedy
    reply, the K after it its samples. SCST needs both; one pass encodes and steps once.
    """

    def __init__(
        self, config: DecodeConfig, num_samples: int, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(config, num_samples=num_samples + 1, generator=generator)
        self.num_samples = num_samples

    def choose(self, log_probs: Tensor) -> Tensor:
        sampled = super().choose(log_probs)  # (R,)
        greedy_row = (
            torch.arange(log_probs.size(0), device=log_probs.device) % (self.num_samples + 1) == 0
        )
        return torch.where(greedy_row, log_probs.argmax(dim=-1), sampled)


def gumbel_argmax(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row from softmax(logits) (R, V) -> (R,), by the Gumbel-max trick.

    argmax(logits + Gumbel noise) is an exact sample and much faster on a CPU than
    torch.multinomial over a large vocabulary; -inf logits are never drawn.
    """
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
    # Clamp away from 0 so -log(-log(u)) stays finite.
    uniform = uniform.clamp_(min=torch.finfo(uniform.dtype).tiny)
    return (logits - torch.log(-torch.log(uniform))).argmax(dim=-1)
