"""Cross-entropy (teacher-forced maximum likelihood) training, resumable step for step."""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rlchat import __version__
from rlchat.batching import Batch, encode_inputs, make_batch
from rlchat.checkpoint import load_bundle, load_weights
from rlchat.config import (
    CrossEntropyConfig,
    DataConfig,
    DecodeConfig,
    ModelConfig,
    TokenizerConfig,
    from_dict,
    to_dict,
)
from rlchat.corpus import Corpus
from rlchat.dataset import Example, prepare_dataset
from rlchat.decoding import decode
from rlchat.metrics import commonest_share
from rlchat.model import Seq2Seq, count_parameters
from rlchat.runs import RunDir, RunError, autocast, pick_device
from rlchat.scoring import reference_loss
from rlchat.tokenizer import BOS_ID, EOS_ID, PAD_ID, SEP_ID, UNK_ID, ChatTokenizer
from rlchat.train.distillation import distilled_examples, teacher_replies
from rlchat.train.distributed import SINGLE, World, device_for, init_world
from rlchat.train.loop import check_writable, seed_everything
from rlchat.train.trainer import Trainer

logger = logging.getLogger(__name__)


# A reply never holds these, so label smoothing gives them no mass: spread over them it would
# teach the decoder to expect <pad> or <bos> mid-reply.
NEVER_TARGETS = (PAD_ID, BOS_ID, SEP_ID)


def smoothed_cross_entropy(
    logits: torch.Tensor,
    gold: torch.Tensor,
    smoothing: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Summed cross-entropy (N, V), (N,) -> (); with `smoothing` e, the target is 1 - e on the
    gold token and e spread evenly over the tokens a reply can hold (not the specials). With
    `weights` (V,), each position's loss is scaled by the weight of its gold token."""
    if not smoothing:
        return F.cross_entropy(logits, gold, weight=weights, reduction="sum")
    log_probs = torch.log_softmax(logits, dim=-1)
    nll = -log_probs.gather(1, gold.unsqueeze(1)).squeeze(1)
    allowed = torch.ones(logits.size(-1), dtype=torch.bool, device=logits.device)
    allowed[list(NEVER_TARGETS)] = False
    uniform = -log_probs[:, allowed].mean(dim=-1)
    loss = (1.0 - smoothing) * nll + smoothing * uniform
    return (loss if weights is None else loss * weights[gold]).sum()


def reply_token_counts(replies: Iterable[Sequence[int]], vocab_size: int) -> np.ndarray:
    """How often each token is a target (V,): the replies' tokens and one <eos> each."""
    replies = list(replies)
    ids = np.asarray([t for reply in replies for t in reply], dtype=np.int64)
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64)
    counts[EOS_ID] += len(replies)
    return counts


def frequency_weights(examples: list[Example], vocab_size: int, power: float) -> torch.Tensor:
    """Weight of each target token, count ** -power over the training replies (their <eos>
    counted), scaled so that the weights average 1 over those targets."""
    counts = reply_token_counts((e.reply for e in examples), vocab_size)
    weights = np.maximum(counts, 1.0) ** -power
    weights /= (counts * weights).sum() / counts.sum()
    return torch.tensor(weights, dtype=torch.float32)


def drop_common_replies(examples: list[Example], max_count: int) -> list[Example]:
    """The examples whose reply occurs at most `max_count` times among them (0: all)."""
    if not max_count:
        return examples
    counts = Counter(tuple(e.reply) for e in examples)
    return [e for e in examples if counts[tuple(e.reply)] <= max_count]


class RecentReplies:
    """The last `window` greedy replies and how often each occurs among them: what negative
    training trains down. Saved with each checkpoint, so a resumed run counts on unchanged."""

    def __init__(self, window: int, replies: Iterable[Sequence[int]] = ()) -> None:
        self.replies: deque[tuple[int, ...]] = deque(maxlen=window)
        self.counts: Counter[tuple[int, ...]] = Counter()
        self.add(replies)

    def add(self, replies: Iterable[Sequence[int]]) -> None:
        for reply in map(tuple, replies):
            if len(self.replies) == self.replies.maxlen:
                oldest = self.replies[0]
                self.counts[oldest] -= 1
                if not self.counts[oldest]:
                    # Kept, every reply ever decoded would stay a key: memory and top_share's
                    # scan would grow with the run instead of the window.
                    del self.counts[oldest]
            self.replies.append(reply)
            self.counts[reply] += 1

    def is_frequent(self, reply: Sequence[int], threshold: float) -> bool:
        """More than `threshold` of a full window: early on, before the window fills, a reply
        needs as many repeats as it would later, so the first batches are not all trained down."""
        return self.counts[tuple(reply)] > threshold * (self.replies.maxlen or 1)

    def top_share(self) -> float:
        """The commonest reply's share of the window so far: greedy top1 as training sees it."""
        return max(self.counts.values(), default=0) / max(1, len(self.replies))

    def to_json(self) -> list[list[int]]:
        return [list(reply) for reply in self.replies]

    def is_full(self) -> bool:
        return len(self.replies) == self.replies.maxlen


def overuse_weights(
    generated: np.ndarray,
    human: np.ndarray,
    generated_total: float | None = None,
    human_total: float | None = None,
) -> np.ndarray:
    """Each token's term of KL(generated || human), p_g log(p_g / p_h), where greedy replies
    say it more often than people do, else 0 (V,) from two count vectors (V,), each p its
    count over the total (by default the counts' sum). A token people never say (specials,
    <unk>) is priced as if said once."""
    p_g = generated / max(generated.sum() if generated_total is None else generated_total, 1.0)
    p_h = np.maximum(human, 1.0) / max(human.sum() if human_total is None else human_total, 1.0)
    overused = p_g > p_h
    weights = np.zeros_like(p_g)
    weights[overused] = p_g[overused] * np.log(p_g[overused] / p_h[overused])
    return weights


def prefix_counts(replies: Iterable[Sequence[int]], longest: int) -> Counter[tuple[int, ...]]:
    """How many replies begin with each prefix of 1..`longest` target tokens, <eos> included."""
    counts: Counter[tuple[int, ...]] = Counter()
    for reply in replies:
        target = (*reply, EOS_ID)
        counts.update(target[:k] for k in range(1, min(longest, len(target)) + 1))
    return counts


def overused_prefixes(
    generated: Counter[tuple[int, ...]],
    generated_replies: int,
    human: Counter[tuple[int, ...]],
    human_replies: int,
) -> dict[tuple[int, ...], float]:
    """`overuse_weights` of each prefix that greedy replies begin with more often than
    people's do, each p the share of replies beginning so."""
    prefixes = list(generated)
    weights = overuse_weights(
        np.array([generated[p] for p in prefixes], dtype=np.float64),
        np.array([human[p] for p in prefixes], dtype=np.float64),
        generated_replies,
        human_replies,
    )
    return {p: float(w) for p, w in zip(prefixes, weights, strict=True) if w > 0}


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(values * weights) over the positions of positive weight, per such position; 0 when
    none is."""
    priced = weights > 0
    if not priced.any():
        return values.new_zeros((), dtype=torch.float32)
    return (values[priced] * weights[priced]).sum() / priced.sum()


def drop_words(batch: Batch, rate: float) -> Batch:
    """The batch with each reply token of the decoder's input (never <bos>) replaced by <unk>
    with probability `rate`, drawn from torch's global generator (saved with checkpoints, so
    a resumed run drops the same tokens); the targets stay as they are."""
    if not rate:
        return batch
    drop = (torch.rand(batch.tgt_in.shape) < rate) & batch.tgt_mask
    drop[:, 0] = False
    return replace(batch, tgt_in=batch.tgt_in.masked_fill(drop, UNK_ID))


def unlikelihood_per_token(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """-log(1 - p(token)) at each position (N, V), (N,) -> (N,): zero when the model never says
    the token, large as it becomes sure of it (Welleck et al. 2019)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    p = log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1).exp()
    return -torch.log1p(-p.clamp(max=1.0 - 1e-6))


def unlikelihood(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """`unlikelihood_per_token` summed over positions -> ()."""
    return unlikelihood_per_token(logits, tokens).sum()


def rolled(replies: list[list[int]]) -> list[list[int]]:
    """Each row's reply moved to the next row (the last to the first)."""
    return replies[-1:] + replies[:-1]


def interleave(first: list[list[int]], second: list[list[int]]) -> list[list[int]]:
    return [row for pair in zip(first, second, strict=True) for row in pair]


def distinct_from_next(replies: list[list[int]], device: torch.device) -> torch.Tensor:
    """(B,) true where reply i differs from reply i + 1: scoring reply i after input i + 1 is
    a mismatch only then (a stock reply may be the next row's gold too)."""
    following = replies[1:] + replies[:1]
    return torch.tensor([a != b for a, b in zip(replies, following, strict=True)], device=device)


def row_mean_log_probs(
    logits: torch.Tensor, gold: torch.Tensor, row_of_token: torch.Tensor, tgt_mask: torch.Tensor
) -> torch.Tensor:
    """Mean per-token log p of each row's target (N, V), (N,), (N,), (R, T) -> (R,)."""
    token = torch.log_softmax(logits.float(), dim=-1).gather(1, gold.unsqueeze(1)).squeeze(1)
    sums = token.new_zeros(tgt_mask.size(0)).index_add(0, row_of_token, token)
    return sums / tgt_mask.sum(dim=1)


def mismatch_margin(
    mean_log_p: torch.Tensor, margin: float, valid: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Hinge max(0, m - (l(r_i | s_i) - l(r_i | s_{i+1}))) averaged over the valid rows, from
    the interleaved mean log-probs (2B,): l(r_i | s_i) at 2i, l(r_{i-1} | s_i) at 2i + 1. Also the
    mean gap l(r_i | s_i) - l(r_i | s_{i+1}), which training should widen."""
    own = mean_log_p[0::2]
    after_next = mean_log_p[1::2].roll(-1)  # l(r_i | s_{i+1})
    gap = (own - after_next)[valid]
    if not gap.numel():
        zero = mean_log_p.sum() * 0.0
        return {"loss": zero, "gap": zero.detach()}
    return {"loss": torch.relu(margin - gap).mean(), "gap": gap.detach().mean()}


def token_loss(
    model: torch.nn.Module,
    batch: Batch,
    *,
    teacher_forcing: float = 1.0,
    label_smoothing: float = 0.0,
    weights: torch.Tensor | None = None,
    world: World = SINGLE,
) -> torch.Tensor:
    """Mean cross-entropy over the real target tokens (padding never scored), each token's
    scaled by its entry of `weights` when given.

    Data-parallel: the mean is over the tokens of every process's batch, so that the
    gradients DDP averages equal those of one step on the union of the batches.
    """
    logits = model(
        batch.src,
        batch.src_lengths,
        batch.tgt_in,
        batch.tgt_mask,
        teacher_forcing=teacher_forcing,
    )  # (N, V)
    return logits_loss(logits, batch, label_smoothing=label_smoothing, weights=weights, world=world)


def logits_loss(
    logits: torch.Tensor,
    batch: Batch,
    *,
    label_smoothing: float = 0.0,
    weights: torch.Tensor | None = None,
    world: World = SINGLE,
) -> torch.Tensor:
    """`token_loss` of logits already computed (N, V) for the batch's real target tokens."""
    gold = batch.tgt_out[batch.tgt_mask]
    total = smoothed_cross_entropy(logits.float(), gold, label_smoothing, weights)
    tokens = world.sum(float(batch.target_tokens))
    return total * world.size / tokens


def evaluate_loss(
    model: Seq2Seq, examples: list[Example], device: torch.device
) -> dict[str, float]:
    """Token-level loss and perplexity of the examples' replies (validation)."""
    return reference_loss(model, [e.source for e in examples], [e.reply for e in examples], device)


# What decides which conversations are held out: a fine-tune must keep its start's split, or
# pairs it was pretrained on would turn up in its validation and test splits.
SPLIT_FIELDS = ("split_seed", "split_by", "valid_fraction", "test_fraction")


def check_same_split(data: DataConfig, start: DataConfig, init: Path) -> None:
    for name in SPLIT_FIELDS:
        if getattr(data, name) != getattr(start, name):
            raise RunError(
                f"--{name.replace('_', '-')} {getattr(data, name)} differs from the "
                f"{getattr(start, name)} of --init {init}: the split must stay the same, or "
                "pretraining pairs would be held out"
            )


# Options that add rows to a batch (whole replies scored after an input) exclude each other
# (but for the pair in SHARE_ROWS), and word dropout, which changes the decoder's input of the
# gold rows only.
ROW_OPTIONS = {
    "negative_threshold": "--negative-threshold",
    "contrastive_weight": "--contrastive-weight",
    "vocab_unlikelihood": "--vocab-unlikelihood",
    "prefix_unlikelihood": "--prefix-unlikelihood",
}


# Both decode the batch greedily and score those rows: one pass serves them together.
SHARE_ROWS = frozenset({"--negative-threshold", "--vocab-unlikelihood", "--prefix-unlikelihood"})


def uses_greedy_rows(config: CrossEntropyConfig) -> bool:
    """Whether each step decodes (a share of) its batch greedily and prices what it says."""
    return bool(config.vocab_unlikelihood or config.prefix_unlikelihood)


def check_compatible(config: CrossEntropyConfig) -> None:
    chosen = [flag for name, flag in ROW_OPTIONS.items() if getattr(config, name)]
    if config.vocab_unlikelihood_spare_pieces and not config.vocab_unlikelihood:
        raise RunError("--vocab-unlikelihood-spare-pieces needs --vocab-unlikelihood")
    if config.vocab_unlikelihood_share < 1 and not uses_greedy_rows(config):
        raise RunError(
            "--vocab-unlikelihood-share needs --vocab-unlikelihood or --prefix-unlikelihood"
        )
    if len(chosen) > 1 and not set(chosen) <= SHARE_ROWS:
        raise RunError(f"{' and '.join(chosen)} cannot be combined")
    if bool(config.distil_teacher) != bool(config.distil_backward):
        raise RunError("--distil-teacher and --distil-backward go together")
    if config.word_dropout and chosen:
        raise RunError(
            f"--word-dropout cannot be combined with {chosen[0]}: its extra rows score whole "
            "replies"
        )


class CrossEntropyTrainer(Trainer):
    """Teacher-forced maximum likelihood on (source, reply) examples."""

    stage = "ce"
    config: CrossEntropyConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token_weights: torch.Tensor | None = None  # frequency weighting, on the device
        if power := self.config.frequency_weighting:
            vocab_size = self.model.config.vocab_size
            weights = frequency_weights(self.train_examples, vocab_size, power)
            self.token_weights = weights.to(self.device)
        # Negative training decodes as `rlchat eval` judges a CE bot: greedy, 3-gram blocking.
        self.greedy = DecodeConfig()
        self.recent = RecentReplies(self.config.negative_window)
        self.human_counts: np.ndarray | None = None  # vocabulary unlikelihood's reference
        self.spared: np.ndarray | None = None  # the pieces vocabulary unlikelihood leaves be
        self.human_prefixes: Counter[tuple[int, ...]] = Counter()  # prefix unlikelihood's
        if uses_greedy_rows(self.config):
            replies = [e.reply for e in self.train_examples]
            self.human_counts = reply_token_counts(replies, self.model.config.vocab_size)
            if self.config.prefix_unlikelihood:
                self.human_prefixes = prefix_counts(replies, self.config.prefix_tokens)
        if self.config.vocab_unlikelihood_spare_pieces:
            pieces = ChatTokenizer.from_json(self.tokenizer_json).continues_word()
            self.spared = np.asarray(pieces, dtype=bool)
        check_compatible(self.config)

    def loss(self, examples: list[Example]) -> tuple[torch.Tensor, dict[str, float]]:
        sources, replies = [e.source for e in examples], [e.reply for e in examples]
        if self.config.contrastive_weight:
            return self.loss_with_mismatched(sources, replies)
        if uses_greedy_rows(self.config):
            return self.loss_with_overused_tokens(sources, replies)
        if not self.config.negative_threshold:
            batch = drop_words(make_batch(sources, replies), self.config.word_dropout)
            with autocast(self.device):
                loss = token_loss(
                    self.net,
                    batch.to(self.device),
                    teacher_forcing=self.config.teacher_forcing,
                    label_smoothing=self.config.label_smoothing,
                    weights=self.token_weights,
                    world=self.world,
                )
            return loss, {"ce/loss": loss.item()}
        return self.loss_with_negatives(sources, replies)

    def teacher_forced_logits(self, batch: Batch, repeat: int = 1) -> torch.Tensor:
        """Logits (N, V) at the batch's real target positions, with gradient."""
        with autocast(self.device):
            return self.net(
                batch.src,
                batch.src_lengths,
                batch.tgt_in,
                batch.tgt_mask,
                teacher_forcing=self.config.teacher_forcing,
                repeat=repeat,
            )

    def gold_cross_entropy(
        self, logits: torch.Tensor, gold: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        """Summed (smoothed, weighted) cross-entropy of the kept positions."""
        return smoothed_cross_entropy(
            logits[keep].float(), gold[keep], self.config.label_smoothing, self.token_weights
        )

    def per_reference_token(self, keep: torch.Tensor) -> float:
        """1 / reference tokens over every process's batch (times the world, as DDP averages)."""
        return self.world.size / self.world.sum(float(keep.sum()))

    def decode_greedily(self, sources: list[list[int]]) -> list[list[int]]:
        """Greedy replies, as `rlchat eval` decodes a CE bot; the model's mode is kept."""
        was_training = self.model.training
        self.model.eval()
        src, src_lengths = (t.to(self.device) for t in encode_inputs(sources))
        with torch.no_grad(), autocast(self.device):
            replies = decode(self.model, src, src_lengths, self.greedy).to_lists()
        self.model.train(was_training)
        return replies

    def greedy_replies(self, sources: list[list[int]]) -> list[list[int]]:
        """The batch's greedy replies, added to the window of recent ones."""
        greedy = self.decode_greedily(sources)
        self.recent.add(greedy)
        return greedy

    def frequent_greedy_replies(
        self, sources: list[list[int]]
    ) -> tuple[list[int], list[list[int]]]:
        """The batch's greedy replies that are too frequent: (their rows, the replies)."""
        greedy = self.greedy_replies(sources)
        threshold = self.config.negative_threshold
        rows = [i for i, reply in enumerate(greedy) if self.recent.is_frequent(reply, threshold)]
        return rows, [greedy[i] for i in rows]

    def loss_with_negatives(
        self, sources: list[list[int]], replies: list[list[int]]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy on the batch plus the unlikelihood of its too-frequent greedy replies,
        both from one forward pass (appended rows), per reference token."""
        rows, negatives = self.frequent_greedy_replies(sources)
        batch = make_batch(sources + [sources[i] for i in rows], replies + negatives)
        batch = batch.to(self.device)
        logits = self.teacher_forced_logits(batch)  # (N, V), row-major over tgt_mask
        gold = batch.tgt_out[batch.tgt_mask]
        negative = batch.tgt_mask.nonzero()[:, 0] >= len(sources)  # (N,) appended rows
        scale = self.per_reference_token(~negative)
        ce = self.gold_cross_entropy(logits, gold, ~negative) * scale
        ul = unlikelihood(logits[negative], gold[negative]) * scale
        loss = ce + self.config.negative_weight * ul
        return loss, {
            "ce/loss": loss.item(),
            "ce/nll": ce.item(),
            "ce/unlikelihood": ul.item(),
            "ce/negative_share": len(rows) / max(1, len(sources)),
            "ce/greedy_top1": self.recent.top_share(),
        }

    def loss_with_overused_tokens(
        self, sources: list[list[int]], replies: list[list[int]]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy on the batch plus the weighted unlikelihood of the tokens its greedy
        replies overuse, both from one forward pass (appended rows). Penalised only once the
        window of greedy replies is full, so the first batches are not judged on a handful.
        Only the first `vocab_unlikelihood_share` of the (shuffled) batch is decoded."""
        decoded = sources[: self.greedy_rows(len(sources))]
        greedy = self.greedy_replies(decoded)
        weights = torch.tensor(self.overuse_weights(), dtype=torch.float32)
        batch = make_batch(sources + decoded, replies + greedy).to(self.device)
        logits = self.teacher_forced_logits(batch)  # (N, V), row-major over tgt_mask
        gold = batch.tgt_out[batch.tgt_mask]
        row_of_token, position = batch.tgt_mask.nonzero().unbind(1)
        said = row_of_token >= len(sources)  # (N,) the greedy rows
        scale = self.per_reference_token(~said)
        ce = self.gold_cross_entropy(logits, gold, ~said) * scale
        per_token = unlikelihood_per_token(logits[said], gold[said])  # (M,)
        ul = weighted_mean(per_token, weights.to(self.device)[gold[said]])
        loss = ce + self.config.vocab_unlikelihood * ul
        figures = {
            "ce/nll": ce.item(),
            "ce/unlikelihood": ul.item(),
            "ce/overuse_kl": float(weights.sum()),
            "ce/greedy_top1": self.recent.top_share(),
        }
        if self.config.prefix_unlikelihood:
            rows = (row_of_token[said] - len(sources)).tolist()
            prefix_weight = self.prefix_weights(greedy, rows, position[said].tolist())
            prefix_ul = weighted_mean(per_token, prefix_weight.to(self.device))
            loss = loss + self.config.prefix_unlikelihood * prefix_ul
            figures["ce/prefix_unlikelihood"] = prefix_ul.item()
            figures["ce/prefix_share"] = float((prefix_weight > 0).float().mean())
        if self.config.negative_threshold:  # the same greedy rows, whole replies trained down
            frequent = [self.recent.is_frequent(r, self.config.negative_threshold) for r in greedy]
            rows = torch.tensor([False] * len(sources) + frequent, device=self.device)
            negative = rows[row_of_token]
            negative_ul = unlikelihood(logits[negative], gold[negative]) * scale
            loss = loss + self.config.negative_weight * negative_ul
            figures["ce/negative_unlikelihood"] = negative_ul.item()
            figures["ce/negative_share"] = sum(frequent) / max(1, len(greedy))
        return loss, {"ce/loss": loss.item(), **figures}

    def prefix_weights(
        self, greedy: list[list[int]], rows: list[int], positions: list[int]
    ) -> torch.Tensor:
        """Prefix unlikelihood's weight at each greedy target position (M,): that of the
        beginning its token completes, 0 past `prefix_tokens` and until the window is full."""
        if not self.recent.is_full():
            return torch.zeros(len(rows))
        longest = self.config.prefix_tokens
        overused = overused_prefixes(
            prefix_counts(self.recent.replies, longest),
            len(self.recent.replies),
            self.human_prefixes,
            len(self.train_examples),
        )
        targets = [(*reply, EOS_ID) for reply in greedy]
        return torch.tensor(
            [
                overused.get(targets[row][: t + 1], 0.0) if t < longest else 0.0
                for row, t in zip(rows, positions, strict=True)
            ],
            dtype=torch.float32,
        )

    def greedy_rows(self, batch_size: int) -> int:
        """How many rows of a batch vocabulary unlikelihood decodes: at least one."""
        return max(1, round(self.config.vocab_unlikelihood_share * batch_size))

    def overuse_weights(self) -> np.ndarray:
        """Each token's weight in vocabulary unlikelihood over the window of greedy replies
        (V,): zero until the window is full, and for the spared pieces."""
        generated = reply_token_counts(self.recent.replies, len(self.human_counts))
        weights = overuse_weights(generated, self.human_counts)
        if not self.recent.is_full():
            weights[:] = 0.0
        if self.spared is not None:
            weights[self.spared] = 0.0
        return weights

    def loss_with_mismatched(
        self, sources: list[list[int]], replies: list[list[int]]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy plus the mismatched-input margin, from one encoder pass: each input is
        decoded twice, once with its own reply and once with the previous row's."""
        batch = make_batch(sources, interleave(replies, rolled(replies)))
        batch = batch.to(self.device)
        # (N, V); rows: input i's own reply at 2i, reply i - 1 at 2i + 1
        logits = self.teacher_forced_logits(batch, repeat=2)
        row_of_token = batch.tgt_mask.nonzero()[:, 0]
        own = row_of_token % 2 == 0
        gold = batch.tgt_out[batch.tgt_mask]
        ce = self.gold_cross_entropy(logits, gold, own) * self.per_reference_token(own)
        mean_log_p = row_mean_log_probs(logits, gold, row_of_token, batch.tgt_mask)
        margin = mismatch_margin(
            mean_log_p, self.config.contrastive_margin, distinct_from_next(replies, self.device)
        )
        loss = ce + self.config.contrastive_weight * margin["loss"]
        return loss, {
            "ce/loss": loss.item(),
            "ce/nll": ce.item(),
            "ce/mismatch_loss": margin["loss"].item(),
            "ce/mismatch_gap": margin["gap"].item(),
        }

    def stage_state(self) -> dict[str, Any]:
        counted = self.config.negative_threshold or uses_greedy_rows(self.config)
        return {"recent_replies": self.recent.to_json()} if counted else {}

    def load_stage_state(self, state: dict[str, Any]) -> None:
        self.recent = RecentReplies(self.config.negative_window, state.get("recent_replies", []))

    def evaluate(self) -> tuple[float, dict[str, float]]:
        """Validation loss; with `select_top1_weight` w, best/ is chosen by loss + w * top1."""
        result = evaluate_loss(self.model, self.valid_examples, self.device)
        score = result["loss"]
        figures = {"valid/loss": result["loss"], "valid/perplexity": result["perplexity"]}
        if weight := self.config.select_top1_weight:
            figures["valid/top1"] = self.validation_top1()
            figures["valid/selection_score"] = score = score + weight * figures["valid/top1"]
        return score, figures

    def progress_score(self, score: float, figures: dict[str, float]) -> float:
        """The schedule and early stopping follow the loss, whatever best/ is chosen by."""
        return figures["valid/loss"]

    def validation_top1(self) -> float:
        """Share of the commonest greedy reply to the validation inputs, decoded as
        `rlchat eval` decodes a CE bot."""
        replies = []
        for start in range(0, len(self.valid_examples), 256):
            sources = [e.source for e in self.valid_examples[start : start + 256]]
            replies += self.decode_greedily(sources)
        return commonest_share(replies)


def with_teacher_replies(
    run: RunDir,
    train: list[Example],
    data_config: DataConfig,
    config: CrossEntropyConfig,
    tokenizer_json: str,
    device: torch.device,
    world: World,
    progress: bool,
) -> tuple[list[Example], CrossEntropyConfig]:
    """The training examples with the distillation teacher's replies, and the config with
    the minutes decoding them took taken off the budget."""
    if data_config.direction != "forward":
        raise RunError("--distil-teacher trains a forward model; drop --direction backward")
    if world.size > 1:
        raise RunError("--distil-teacher runs in one process; launch it without torchrun")
    check_compatible(config)
    teacher = teacher_replies(run.path, train, config, tokenizer_json, device, progress)
    if teacher.seconds and config.max_minutes:
        config = replace(config, max_minutes=max(0.1, config.max_minutes - teacher.seconds / 60))
    return distilled_examples(train, teacher), config


def train_cross_entropy(
    *,
    out: Path,
    corpus: Corpus | None,
    data_config: DataConfig,
    tokenizer_config: TokenizerConfig,
    model_config: ModelConfig,
    train_config: CrossEntropyConfig,
    init: Path | None = None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    tensorboard: bool = True,
) -> dict[str, Any]:
    """Set up (or reopen) a run directory and train; the one entry point the CLI calls.

    With ``resume`` the saved configs win over the arguments, so the run continues as it began.
    With ``init`` (a CE run) training starts from that run's best weights, tokenizer and model
    shape, on this run's data filter, rate and budget: pretrain on all genres, fine-tune on one.
    """
    run = RunDir(Path(out))
    start_weights = None
    if resume:
        saved = run.read_config()
        data_config = from_dict(DataConfig, saved["data"])
        tokenizer_config = from_dict(TokenizerConfig, saved["tokenizer"])
        model_config = from_dict(ModelConfig, saved["model"])
        train_config = from_dict(CrossEntropyConfig, saved["train"])
        init = Path(saved["init"]) if saved.get("init") else None
    elif run.exists():
        raise RunError(
            f"{run.path} already holds a run; pass --resume to continue it or pick another --out"
        )
    if corpus is None:
        raise RunError("no corpus given")
    if init is not None:
        start = load_bundle(RunDir(init).model_path())
        check_same_split(data_config, from_dict(DataConfig, start.config["data"]), init)
        tokenizer_config = from_dict(TokenizerConfig, start.config["tokenizer"])
        model_config = from_dict(ModelConfig, start.config["model"])
        start_weights = start.weights
    torch_device = pick_device(device)
    world = init_world(torch_device)
    torch_device = device_for(world, torch_device)
    if world.is_main:
        check_writable(run.path)
    world.barrier()  # every process has seen the directory before rank 0 writes to it
    tokenizer = None
    if init is not None and not resume:
        tokenizer = ChatTokenizer.from_json(start.tokenizer_json)
        if world.is_main:
            tokenizer.save(run.tokenizer_path)
    elif resume or not world.is_main:
        # One tokenizer for all processes: rank 0 trains it, the others wait and read it.
        if not resume:
            world.barrier()
        tokenizer = ChatTokenizer.load(run.tokenizer_path)
    dataset = prepare_dataset(corpus, data_config, tokenizer_config, tokenizer=tokenizer)
    if not resume and init is None and world.is_main:
        dataset.tokenizer.save(run.tokenizer_path)
        world.barrier()
    model_config.vocab_size = dataset.tokenizer.vocab_size
    run_config = {
        "stage": "ce",
        "rlchat_version": __version__,
        **({"init": str(init)} if init is not None else {}),
        "data": to_dict(data_config),
        "tokenizer": to_dict(tokenizer_config),
        "model": to_dict(model_config),
        "train": to_dict(train_config),
    }
    if not resume and world.is_main:
        run.write_config(run_config)
    train = drop_common_replies(dataset.splits["train"].examples, train_config.max_reply_count)
    if not train:
        raise RunError("no training pairs left after filtering; check --genre and --max-tokens")
    if train_config.max_reply_count:
        logger.info(
            "kept %d of %d training pairs (replies seen at most %d times)",
            len(train),
            len(dataset.splits["train"].examples),
            train_config.max_reply_count,
        )
    if train_config.distil_teacher:
        train, train_config = with_teacher_replies(
            run, train, data_config, train_config, dataset.tokenizer.to_json(), torch_device,
            world, progress,
        )  # fmt: skip
    seed_everything(train_config.seed)
    model = Seq2Seq(model_config)
    if start_weights is not None:
        load_weights(model, start_weights)  # a resumed run's checkpoint overrides these
    trainer = CrossEntropyTrainer(
        run=run,
        run_config=run_config,
        tokenizer_json=dataset.tokenizer.to_json(),
        model=model,
        train_examples=train,
        valid_examples=dataset.splits["valid"].examples,
        config=train_config,
        device=torch_device,
        tensorboard=tensorboard,
        world=world,
    )
    if resume and not trainer.resume():
        logger.info("no checkpoint in %s yet; starting from the first step", run.path)
    logger.info(
        "training on %d pairs (%d validation), %d parameters, device %s",
        len(train),
        len(trainer.valid_examples),
        count_parameters(trainer.model),
        torch_device,
    )
    return trainer.fit(progress=progress)
