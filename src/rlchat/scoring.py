"""Teacher-forced likelihood of given replies under a frozen model: perplexity for training's
validation and for evaluation, and the model-based rewards. Written once, so every figure
that says "perplexity" or "log p(reply | input)" is the same computation.

Shapes: R rows scored, N real target tokens, V vocabulary size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from rlchat.batching import encode_inputs, make_batch
from rlchat.metrics import perplexity
from rlchat.model import DecoderState, Seq2Seq
from rlchat.runs import autocast


@contextlib.contextmanager
def frozen(model: Seq2Seq) -> Iterator[None]:
    """Eval mode (no dropout) and no gradient; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def target_log_probs(
    model: Seq2Seq, state: DecoderState, targets: Sequence[Sequence[int]], device: torch.device
) -> tuple[Tensor, Tensor]:
    """Summed log p(target + <eos>) (R,) and its token count (R,) for each row of a state."""
    batch = make_batch([[]] * len(targets), targets).to(device)
    with autocast(device):
        logits = model.target_logits(state, batch.tgt_in, batch.tgt_mask)  # (N, V)
    gold = batch.tgt_out[batch.tgt_mask]  # (N,)
    token_log_probs = torch.log_softmax(logits.float(), dim=-1).gather(1, gold.unsqueeze(1))
    # Row of every real target token, in the same row-major order as the logits.
    row_of_token = batch.tgt_mask.nonzero()[:, 0]  # (N,)
    sums = torch.zeros(len(targets), device=device).index_add_(
        0, row_of_token, token_log_probs.squeeze(1)
    )  # (R,)
    return sums, batch.tgt_mask.sum(dim=1)  # reply length + 1 for <eos>


def mean_target_log_prob(
    model: Seq2Seq, state: DecoderState, targets: Sequence[Sequence[int]], device: torch.device
) -> Tensor:
    """Mean per-token log p(target + <eos>) for each row of an encoded state -> (R,)."""
    sums, counts = target_log_probs(model, state, targets, device)
    return sums / counts


# Pairs scored at once. On a CPU the (tokens, V) log-softmax of 512 pairs outgrows the cache:
# 128 scored comedy's 1,811 validation pairs 1.6x faster (1.08 s against 1.70 s, 2 threads).
CPU_SCORING_BATCH = 128
DEVICE_SCORING_BATCH = 512


def target_log_likelihood(
    model: Seq2Seq,
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    device: torch.device | str,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Summed log p(target | source), <eos> included, and the token count, per pair: (B,) each.

    Teacher-forced and without gradient, in eval mode. Pairs are sorted by length before
    batching, so each batch holds little padding; the result is in the order of the inputs.
    """
    if len(sources) != len(targets):
        raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
    device = torch.device(device)
    if batch_size is None:
        batch_size = CPU_SCORING_BATCH if device.type == "cpu" else DEVICE_SCORING_BATCH
    order = sorted(range(len(targets)), key=lambda i: (len(targets[i]), len(sources[i])))
    sums = torch.empty(len(targets), device=device)
    counts = torch.empty(len(targets), device=device, dtype=torch.long)
    with frozen(model):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            src, src_lengths = encode_inputs([sources[i] for i in rows])
            state = model.start(src.to(device), src_lengths)
            chunk_sums, chunk_counts = target_log_probs(
                model, state, [targets[i] for i in rows], device
            )
            index = torch.as_tensor(rows, device=device)
            sums[index], counts[index] = chunk_sums, chunk_counts
    return sums, counts


def sequence_log_likelihood(
    model: Seq2Seq,
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    device: torch.device | str,
    batch_size: int | None = None,
) -> Tensor:
    """Mean per-token log p(target | source), <eos> included, for each pair -> (B,) float32."""
    sums, counts = target_log_likelihood(model, sources, targets, device, batch_size)
    return sums / counts


def reference_loss(
    model: Seq2Seq,
    sources: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    device: torch.device | str,
) -> dict[str, float]:
    """Mean cross-entropy per reference token (nats) and its perplexity."""
    sums, counts = target_log_likelihood(model, sources, targets, device)
    total_nll, tokens = -float(sums.double().sum()), int(counts.sum())
    return {"loss": total_nll / max(1, tokens), "perplexity": perplexity(total_nll, tokens)}
