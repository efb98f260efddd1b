"""MMI-bidi reranking: of several candidate replies, keep the one that best fits this input
and no other (Li et al., "A Diversity-Promoting Objective Function for Neural Conversation
Models", 2016, https://arxiv.org/abs/1510.03055, sec. 4.3).

A forward model alone prefers replies that fit any input ("i don't know."): log p(r|s) is
high for them everywhere. A backward model p_b(s|r), trained on the swapped pairs, scores how
well the reply points back to its input, and that term is low for a catch-all reply. Each
candidate r of input s scores::

    mean form: log p(r|s) / |r+1| + weight * log p_b(s|r) / |s+1| + length * |r|
    sum form:  log p(r|s)        + weight * log p_b(s|r)        + length * |r|   (the paper)

Candidates and inputs are scored together, teacher-forced in large batches, so reranking N
candidates costs N decodes plus two scoring passes, not N conversations with the models.

Shapes: B inputs, N candidates per input, R = B * N rows (input-major).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from rlchat.config import DecodeConfig
from rlchat.model import Seq2Seq
from rlchat.scoring import target_log_likelihood
from rlchat.tokenizer import EOS_ID


def check_rerank(config: DecodeConfig) -> None:
    """A clear error for settings reranking cannot use (they would decode one candidate)."""
    if config.rerank not in ("none", "mmi"):
        raise ValueError(f"rerank must be none or mmi, not {config.rerank!r}")
    if config.rerank == "none":
        return
    if config.strategy == "greedy":
        raise ValueError(
            "rerank mmi chooses among several candidates: decode them with strategy sample "
            "(e.g. top_p 0.9, temperature 0.8) or beam"
        )
    if config.candidates < 1:
        raise ValueError(f"candidates must be at least 1, not {config.candidates}")
    if config.mmi_form not in ("mean", "sum"):
        raise ValueError(f"mmi_form must be mean or sum, not {config.mmi_form!r}")


def candidate_config(config: DecodeConfig) -> DecodeConfig:
    """Beam search keeps at least as many hypotheses as candidates are asked of it."""
    if config.strategy == "beam" and config.beam_size < config.candidates:
        return replace(config, beam_size=config.candidates)
    return config


def mmi_scores(
    forward: Seq2Seq,
    backward: Seq2Seq,
    sources: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[int]],
    backward_sources: Sequence[Sequence[int]],
    backward_targets: Sequence[Sequence[int]],
    config: DecodeConfig,
) -> Tensor:
    """The MMI score of each row (R,): candidate r = candidates[i] for input sources[i].

    ``backward_sources[i]`` is r and ``backward_targets[i]`` the input s, in the backward
    model's ids. An empty candidate scores -inf: it is never chosen over a real reply.
    """
    device = next(forward.parameters()).device
    forward_sums, forward_tokens = target_log_likelihood(forward, sources, candidates, device)
    # An empty reply has nothing for the backward model to read; it is excluded below.
    readable = [list(r) if len(r) else [EOS_ID] for r in backward_sources]
    backward_device = next(backward.parameters()).device
    backward_sums, backward_tokens = target_log_likelihood(
        backward, readable, backward_targets, backward_device
    )
    backward_sums, backward_tokens = backward_sums.to(device), backward_tokens.to(device)
    if config.mmi_form == "mean":
        fit = forward_sums / forward_tokens
        points_back = backward_sums / backward_tokens
    else:
        fit, points_back = forward_sums, backward_sums
    lengths = torch.as_tensor([len(c) for c in candidates], device=device, dtype=torch.float32)
    scores = fit + config.mmi_weight * points_back + config.mmi_length * lengths
    return scores.masked_fill(lengths == 0, float("-inf"))


def best_of_each_input(scores: Tensor, candidates_per_input: int) -> list[int]:
    """Row of the best-scoring candidate of each input (the first on a tie) -> (B,) rows."""
    grouped = scores.view(-1, candidates_per_input)  # (B, N)
    best = grouped.argmax(dim=1)
    offsets = torch.arange(grouped.size(0), device=scores.device) * candidates_per_input
    return (offsets + best).tolist()
