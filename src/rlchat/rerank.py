"""MMI-bidi reranking: of several candidate replies, keep the one that best fits this input
and no other (Li et al., "A Diversity-Promoting Objective Function for Neural Conversation
Models", 2016, https://arxiv.org/abs/1510.03055, sec. 4.3).

A forward model alone prefers replies that fit any input ("i don't know."): log p(r|s) is
high for them everywhere. A backward model p_b(s|r), trained on the swapped pairs, scores how
well the reply points back to its input, and that term is low for a catch-all reply. Each
candidate r of input s scores::

    mean form: log p(r|s) / |r+1| + weight * log p_b(s|r) / |s+1| + length * |r|
    sum form:  log p(r|s)        + weight * log p_b(s|r)        + length * |r|   (the paper)

The forward term is read off the decode itself; the backward one is one teacher-forced pass
over every candidate of every input at once, so reranking N candidates costs one batched
decode of N rows per input plus one scoring pass.

Shapes: B inputs, N candidates per input, R = B * N rows (input-major).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from rlchat.config import DecodeConfig
from rlchat.decoding import DecodeResult
from rlchat.model import Seq2Seq
from rlchat.scoring import target_log_likelihood
from rlchat.tokenizer import EOS_ID

LogLikelihoods = tuple[Tensor, Tensor]  # summed log-probs (R,) and token counts (R,)


class NoBackwardModel(ValueError):
    """MMI was asked of a bot that has no backward model loaded."""


def check_rerank(config: DecodeConfig, *, has_backward: bool = True) -> None:
    """A clear error for reranking settings a bot cannot decode with, before any work;
    `NoBackwardModel` when MMI is asked and ``has_backward`` is false."""
    if config.rerank not in ("none", "mmi"):
        raise ValueError(f"rerank must be none or mmi, not {config.rerank!r}")
    if config.rerank == "none":
        return
    if not has_backward:
        raise NoBackwardModel("rerank mmi needs a backward model (--backward RUN)")
    if config.candidates < 1:
        raise ValueError(f"candidates must be at least 1, not {config.candidates}")
    if config.mmi_form not in ("mean", "sum"):
        raise ValueError(f"mmi_form must be mean or sum, not {config.mmi_form!r}")


GREEDY_MMI_HINT = (
    "rerank mmi with greedy decoding has one candidate, the greedy reply: decode several with "
    "strategy sample (e.g. top_p 0.95) or beam"
)


def candidates_per_input(config: DecodeConfig) -> int:
    """Greedy search decodes one reply per input, so MMI has that one to keep."""
    return 1 if config.strategy == "greedy" else config.candidates


def candidate_config(config: DecodeConfig) -> DecodeConfig:
    """Beam search keeps at least as many hypotheses as candidates are asked of it."""
    if config.strategy == "beam" and config.beam_size < config.candidates:
        return replace(config, beam_size=config.candidates)
    return config


def forward_log_likelihood(result: DecodeResult, config: DecodeConfig) -> LogLikelihoods:
    """Summed log p(r + <eos> | s) (R,) and token counts (R,) of decoded candidates, read off
    the decode itself: no second forward pass. Beam scores are undone of their penalty."""
    sums, counts = result.scores.float(), result.lengths
    if config.strategy == "beam":
        penalty = ((5.0 + counts.float()) / 6.0) ** config.length_penalty  # `length_penalty`
        sums = sums * penalty
    return sums, counts


def backward_log_likelihood(
    backward: Seq2Seq,
    backward_sources: Sequence[Sequence[int]],
    backward_targets: Sequence[Sequence[int]],
) -> LogLikelihoods:
    """Summed log p_b(s + <eos> | r) (R,) and token counts (R,): each candidate r read by the
    backward model, its input s written. An empty r is read as <eos> (`mmi_combine` excludes
    it)."""
    readable = [list(r) if len(r) else [EOS_ID] for r in backward_sources]
    device = next(backward.parameters()).device
    return target_log_likelihood(backward, readable, backward_targets, device)


def mmi_combine(
    forward: LogLikelihoods,
    backward: LogLikelihoods,
    lengths: Tensor,
    config: DecodeConfig,
) -> Tensor:
    """The MMI score of each row (R,) from (sums, counts) of both models and the candidates'
    lengths in tokens; an empty or unfinished candidate scores -inf: never chosen."""
    device = forward[0].device
    forward_sums, forward_counts = forward[0], forward[1].to(device)
    backward_sums, backward_counts = (t.to(device) for t in backward)
    lengths = lengths.to(device=device, dtype=torch.float32)
    if config.mmi_form == "mean":
        fit = forward_sums / forward_counts.clamp(min=1)
        points_back = backward_sums / backward_counts
    else:
        fit, points_back = forward_sums, backward_sums
    scores = fit + config.mmi_weight * points_back + config.mmi_length * lengths
    return scores.masked_fill((lengths == 0) | ~torch.isfinite(fit), float("-inf"))


def best_of_each_input(scores: Tensor, candidates_per_input: int) -> list[int]:
    """Row of the best-scoring candidate of each input (the first on a tie) -> (B,) rows."""
    grouped = scores.view(-1, candidates_per_input)  # (B, N)
    best = grouped.argmax(dim=1)
    offsets = torch.arange(grouped.size(0), device=scores.device) * candidates_per_input
    return (offsets + best).tolist()
