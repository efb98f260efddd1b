"""The one loop that steps the model, for every strategy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rlchat.batching import encode_inputs
from rlchat.config import DecodeConfig
from rlchat.decoding.base import DecodeResult, DecodeStrategy
from rlchat.decoding.beam import BeamSearch
from rlchat.decoding.greedy import GreedySearch
from rlchat.decoding.sampling import Sampling
from rlchat.model import Seq2Seq
from rlchat.tokenizer import BOS_ID


def make_strategy(
    config: DecodeConfig,
    *,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> DecodeStrategy:
    """The strategy ``config.strategy`` names. ``num_samples`` replies per input: K draws
    when sampling, the N best when beam searching (N <= beam size); ``generator`` samples."""
    if config.strategy == "sample":
        return Sampling(config, num_samples=num_samples, generator=generator)
    if config.strategy == "beam":
        return BeamSearch(config, n_best=num_samples)
    if num_samples != 1:
        raise ValueError("num_samples > 1 needs strategy 'sample' or 'beam'")
    if config.strategy == "greedy":
        return GreedySearch(config)
    raise ValueError(f"unknown decoding strategy {config.strategy!r}; use greedy, beam or sample")


def decode(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    config: DecodeConfig,
    *,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
    strategy: DecodeStrategy | None = None,
) -> DecodeResult:
    """Replies to a padded batch: src (B, S), src_lengths (B,) -> R rows.

    R is B, except with ``num_samples`` K > 1 (sampling or beam): B * K rows, row i * K + k
    being sample k (beam: the k-th best reply) of input i. A ready ``strategy`` overrides
    config and num_samples. Runs as the caller set the model up: put it in eval mode, and
    under ``torch.inference_mode()`` unless gradients are wanted.
    """
    strategy = strategy or make_strategy(config, num_samples=num_samples, generator=generator)
    index = strategy.initialize(src.size(0), src.device)  # (R,)
    state = model.start(src, src_lengths).index_select(index)
    tokens = torch.full_like(index, BOS_ID)  # (R,)
    while not strategy.done:
        log_probs, state = model.step_log_probs(tokens, state)  # (A, V), the alive rows
        tokens, reorder = strategy.advance(log_probs)
        if reorder is not None:  # beams reorder; the other strategies drop rows that ended
            state = state.index_select(reorder)
    return strategy.finalize()


def generate(
    model: Seq2Seq,
    sources: Sequence[Sequence[int]],
    config: DecodeConfig,
    *,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
) -> list[list[int]]:
    """Reply ids (without specials) to unpadded inputs, in eval mode and without gradients.

    Returns ``len(sources) * num_samples`` replies, grouped per input as in ``decode``.
    """
    return generate_scored(
        model, sources, config, generator=generator, num_samples=num_samples
    ).to_lists()


def generate_scored(
    model: Seq2Seq,
    sources: Sequence[Sequence[int]],
    config: DecodeConfig,
    *,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
) -> DecodeResult:
    """`generate`, keeping each reply's score and length (<eos> included) from the decode.

    Greedy and sampled scores are the model's own summed log p(reply + <eos> | input): the
    constraints only block tokens, they never renormalise, so a teacher-forced pass would
    give the same sums. Beam scores are length-penalised (`BeamSearch`).
    """
    if not sources:
        return DecodeResult(
            tokens=torch.zeros(0, 0, dtype=torch.long),
            lengths=torch.zeros(0, dtype=torch.long),
            scores=torch.zeros(0),
        )
    device = next(model.parameters()).device
    src, src_lengths = encode_inputs(sources)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            result = decode(
                model,
                src.to(device),
                src_lengths,
                config,
                generator=generator,
                num_samples=num_samples,
            )
    finally:
        model.train(was_training)
    return result
