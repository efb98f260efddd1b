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
    """Logits to sample from: log_probs (A, V) -> (A, V), -inf on the tokens filtered out.

    Temperature first, then top-k, then top-p, so the nucleus is measured on the
    distribution that is actually sampled.
    """
    # Dividing by 1 changes nothing but costs a pass over (A, V) per step.
    logits = log_probs / temperature if temperature != 1.0 else log_probs
    if 0 < top_k < logits.size(-1):
        kth_best = logits.topk(top_k, dim=-1).values[:, -1:]  # (A, 1)
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p < 1.0:
        logits = nucleus(logits, top_p)
    return logits


# The nucleus is looked for among the 256 best tokens, then 1,024, 4,096, then all: a full
# sort of the vocabulary each step was a third of an MMI reply's time (topk is several times
# cheaper). Rows whose best tokens hold less than p move on to the next size, so the result
# is the full sort's.
NUCLEUS_SEARCH = (256, 1024, 4096)


def nucleus(logits: Tensor, top_p: float) -> Tensor:
    """-inf outside the smallest set of best tokens whose mass reaches `top_p` (A, V).

    Holtzman et al. sec. 3.1. A token is dropped when the tokens before it already reach p,
    so the best token always stays. Every token past the k searched has at least the mass of
    the k before it, so when those reach p it is dropped.
    """
    A, V = logits.shape
    log_total = logits.logsumexp(dim=-1, keepdim=True)  # (A, 1)
    keep = torch.zeros_like(logits, dtype=torch.bool)
    rows = torch.arange(A, device=logits.device)  # rows whose nucleus is not found yet
    for k in (*(k for k in NUCLEUS_SEARCH if k < V), V):
        top, order = logits[rows].topk(k, dim=-1)  # (r, k), best first
        probs = (top - log_total[rows]).exp()
        before = probs.cumsum(dim=-1) - probs  # mass of the better tokens
        found = (before[:, -1] + probs[:, -1] >= top_p) | (k == V)
        drop = before >= top_p
        drop[:, 0] = False  # even a p below float precision keeps the best token
        kept = torch.zeros(len(rows), V, dtype=torch.bool, device=logits.device)
        kept.scatter_(1, order, ~drop)
        keep[rows[found]] = kept[found]
        rows = rows[~found]
        if not len(rows):
            break
    return logits.masked_fill(~keep, float("-inf"))


def nucleus_sample(
    logits: Tensor, top_p: float, generator: torch.Generator | None = None, tries: int = 2
) -> Tensor:
    """One draw per row from the nucleus of softmax(logits) (A, V) -> (A,), mostly without
    finding the nucleus.

    Rejection sampling: draw from the whole distribution and keep the draw when the tokens
    more probable than it hold less than ``top_p``, the test by which `nucleus` keeps a token.
    A kept draw is distributed as the renormalised nucleus, and is kept with probability the
    nucleus's mass (at least p), so almost every row is done after one draw and one pass over
    its probabilities; the rows that miss ``tries`` times take the exact filter. Finding the
    nucleus (top-k searches) every step was a fifth of an MMI reply's time.
    """
    probs = logits.softmax(dim=-1)  # (A, V)
    tokens = torch.empty(logits.size(0), dtype=torch.long, device=logits.device)
    rows = torch.arange(logits.size(0), device=logits.device)
    for _ in range(tries):
        row_probs = probs[rows]
        draws = sample_probs(row_probs, generator)  # (r,)
        chosen = row_probs.gather(1, draws[:, None])  # (r, 1)
        better = (row_probs * (row_probs > chosen)).sum(dim=-1)  # mass before the draw
        kept = better < top_p
        tokens[rows[kept]] = draws[kept]
        rows = rows[~kept]
        if not len(rows):
            return tokens
    tokens[rows] = inverse_cdf_sample(nucleus(logits[rows], top_p), generator)
    return tokens


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
            log_probs, temperature=self.config.temperature, top_k=self.config.top_k, top_p=1.0
        )
        if self.config.top_p < 1.0:
            return nucleus_sample(logits, self.config.top_p, self.generator)
        return inverse_cdf_sample(logits, self.generator)


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
        greedy_row = self.alive % (self.num_samples + 1) == 0  # (A,)
        # Each row pays only for its own choice: the argmax or a draw, not both.
        tokens = torch.empty_like(self.alive)  # (A,)
        tokens[greedy_row] = GreedySearch.choose(self, log_probs[greedy_row])
        tokens[~greedy_row] = super().choose(log_probs[~greedy_row])
        return tokens


def inverse_cdf_sample(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row from softmax(logits) (A, V) -> (A,), by inverting the row's CDF.

    One uniform per row and a binary search: on a CPU about four times faster than Gumbel-max,
    which needs a uniform and two logs per token. The cumulative sum runs in double precision,
    so each token's share of [0, total] is its probability to far below float32 rounding.
    """
    return sample_probs(logits.softmax(dim=-1), generator)


def sample_probs(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """`inverse_cdf_sample` from probabilities already computed (A, V) -> (A,)."""
    cdf = probs.cumsum(dim=-1, dtype=torch.float64)  # (A, V)
    uniform = torch.rand(
        probs.size(0), 1, generator=generator, dtype=torch.float64, device=probs.device
    )
    # 1 - u lies in (0, 1], so the target lies in (0, total] and the first token whose
    # cumulative mass reaches it exists. A token of probability 0 (a -inf logit) is never that
    # first one: its cumulative mass equals its predecessor's, or is 0 < target for token 0.
    # Scaling by the row's own total absorbs the softmax's rounding.
    target = (1.0 - uniform) * cdf[:, -1:]  # (A, 1)
    return torch.searchsorted(cdf, target).squeeze(1)
