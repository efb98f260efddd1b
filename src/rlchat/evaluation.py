"""Held-out evaluation of one or more bots on the same pairs, with paired bootstrap intervals.

Figures: corpus BLEU (sacreBLEU), sentence BLEU-2 (the textbook's, for published numbers),
perplexity, distinct-1/2, mean length, dull-reply rate, repetition rate, the RL reward, and
self-play length (Li et al. 2016, https://arxiv.org/abs/1606.01541, sec. 5.2).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rlchat.chatbot import Chatbot
from rlchat.config import DecodeConfig
from rlchat.corpus import Pair
from rlchat.dataset import Example
from rlchat.metrics import (
    canonical_reply,
    corpus_bleu,
    distinct_n,
    is_repetitive,
    mean_length,
    paired_bootstrap,
    paired_bootstrap_metric,
)
from rlchat.tokenizer import normalize_text
from rlchat.train.cross_entropy import evaluate_loss
from rlchat.train.rewards import RewardFunction, bleu2, stock_replies

logger = logging.getLogger(__name__)

SELF_PLAY_TURNS = 8
# Figures where a larger value is better; the others (perplexity, dull, repetition) are worse.
HIGHER_IS_BETTER = {
    "reward": True,
    "bleu2": True,
    "sacrebleu": True,
    "perplexity": False,
    "distinct1": True,
    "distinct2": True,
    "length": True,
    "dull_rate": False,
    "repetition_rate": False,
    "selfplay_turns": True,
}


@dataclass
class EvalSet:
    """The held-out pairs every bot answers: inputs, histories and all references per input."""

    pairs: list[Pair]
    references: list[list[str]]  # normalised reference replies per pair
    dull_set: set[str]  # canonical dull replies: the paper's list + frequent training replies
    selfplay_seeds: list[str]


@dataclass
class RunEvaluation:
    name: str
    stage: str
    replies: list[str]
    per_example: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def build_eval_set(
    pairs: list[Pair], dull_set: set[str], max_pairs: int = 0, selfplay_seeds: int = 100
) -> EvalSet:
    """Group references by input text: a line said several times has several good answers."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for pair in pairs:
        by_source[normalize_text(pair.source)].append(normalize_text(pair.reply))
    pairs = pairs[:max_pairs] if max_pairs else pairs
    references = [by_source[normalize_text(p.source)] for p in pairs]
    seeds = list(dict.fromkeys(p.source for p in pairs))[:selfplay_seeds]
    return EvalSet(pairs=pairs, references=references, dull_set=dull_set, selfplay_seeds=seeds)


def self_play_turns(
    bot: Chatbot, seeds: Sequence[str], dull_set: set[str], decode: DecodeConfig
) -> np.ndarray:
    """Turns two copies of the bot keep talking from each seed before a dull or repeated turn.

    All conversations advance together, one batched decode per turn.
    """
    histories: list[list[str]] = [[seed] for seed in seeds]
    turns = np.zeros(len(seeds))
    alive = list(range(len(seeds)))
    for _ in range(SELF_PLAY_TURNS):
        if not alive:
            break
        messages = [histories[i][-1] for i in alive]
        past = [histories[i][:-1] for i in alive]
        replies = bot.reply_batch(messages, past, decode)
        still = []
        for i, reply in zip(alive, replies, strict=True):
            canonical = canonical_reply(reply)
            seen = {canonical_reply(turn) for turn in histories[i]}
            if not canonical or canonical in dull_set or canonical in seen:
                continue
            histories[i].append(reply)
            turns[i] += 1
            still.append(i)
        alive = still
    return turns


def encode_examples(bot: Chatbot, eval_set: EvalSet) -> list[Example]:
    """The references as teacher-forcing examples in this bot's own tokenizer (perplexity)."""
    max_tokens = bot.tokenizer_config.max_tokens
    examples = []
    for pair in eval_set.pairs:
        reply = bot.tokenizer.encode(pair.reply)[:max_tokens]
        examples.append(
            Example(source=bot.encode_input(pair.source, pair.history), reply=reply, pair=pair)
        )
    return examples


def evaluate_bot(
    bot: Chatbot,
    eval_set: EvalSet,
    decode: DecodeConfig,
    reward: RewardFunction | None,
    reward_tokenizer: Any = None,
) -> RunEvaluation:
    """Every figure for one bot; per-example values kept for the paired bootstrap."""
    pairs = eval_set.pairs
    replies = bot.reply_batch([p.source for p in pairs], [p.history for p in pairs], decode)
    words = [r.split() for r in replies]
    reference_words = [[ref.split() for ref in refs] for refs in eval_set.references]
    per_example = {
        "bleu2": np.asarray(bleu2(words, reference_words)),
        "length": np.asarray([len(w) for w in words], dtype=float),
        "dull_rate": np.asarray([canonical_reply(r) in eval_set.dull_set for r in replies], float),
        "repetition_rate": np.asarray([is_repetitive(r) for r in replies], dtype=float),
    }
    if reward is not None:
        tok = reward_tokenizer or bot.tokenizer
        reply_ids = tok.encode_batch(replies)
        source_ids = tok.encode_batch([p.source for p in pairs])
        ref_ids = [tok.encode_batch(refs) for refs in eval_set.references]
        with torch.inference_mode():
            total, _ = reward(reply_ids, source_ids, ref_ids)
        per_example["reward"] = total.cpu().numpy()
    loss = evaluate_loss(bot.model, encode_examples(bot, eval_set), bot.device)
    turns = self_play_turns(bot, eval_set.selfplay_seeds, eval_set.dull_set, decode)
    per_example["selfplay_turns"] = turns
    metrics = {name: float(values.mean()) for name, values in per_example.items()}
    metrics |= {
        "sacrebleu": corpus_bleu(replies, eval_set.references),
        "perplexity": loss["perplexity"],
        "distinct1": distinct_n(replies, 1),
        "distinct2": distinct_n(replies, 2),
        "length": mean_length(replies),
    }
    return RunEvaluation(
        name=bot.name, stage=bot.stage, replies=replies, per_example=per_example, metrics=metrics
    )


def compare(
    baseline: RunEvaluation,
    other: RunEvaluation,
    eval_set: EvalSet,
    resamples: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Paired bootstrap of each difference (other - baseline) over the same held-out pairs."""
    rows = []
    for metric in ("reward", "bleu2", "length", "dull_rate", "repetition_rate", "selfplay_turns"):
        if metric in baseline.per_example and metric in other.per_example:
            diff, low, high = paired_bootstrap(
                baseline.per_example[metric],
                other.per_example[metric],
                resamples=resamples,
                seed=seed,
            )
            rows.append({"metric": metric, "diff": diff, "low": low, "high": high})

    def corpus_metric(run: RunEvaluation, fn: Any) -> Any:
        replies = np.asarray(run.replies, dtype=object)
        references = np.asarray(eval_set.references, dtype=object)
        return lambda idx: fn(list(replies[idx]), list(references[idx]))

    for metric, fn, recentre in (
        ("sacrebleu", corpus_bleu, False),
        ("distinct2", lambda replies, _refs: distinct_n(replies, 2), True),
    ):
        diff, low, high = paired_bootstrap_metric(
            corpus_metric(baseline, fn),
            corpus_metric(other, fn),
            len(eval_set.pairs),
            resamples=resamples,
            seed=seed,
            recentre=recentre,
        )
        rows.append({"metric": metric, "diff": diff, "low": low, "high": high})
    return [{"baseline": baseline.name, "run": other.name, **row} for row in rows]


def reward_for(
    bots: list[Chatbot], spec: str | None, stock: Collection[str] = ()
) -> tuple[RewardFunction, Any]:
    """The RL run's own reward (judged by its frozen CE start), else the default reward."""
    from rlchat.config import DEFAULT_REWARD

    rl_bot = next((b for b in bots if b.stage == "rl"), None)
    if rl_bot is not None:
        spec = spec or rl_bot.config["rl"]["reward"]
        judge = Chatbot.load(rl_bot.config["init"], device=str(rl_bot.device))
    else:
        judge = bots[0]
    reward = RewardFunction.from_spec(
        spec or DEFAULT_REWARD,
        judge=judge.model,
        tokenizer=judge.tokenizer,
        device=judge.device,
        stock=stock,
    )
    return reward, judge.tokenizer


def evaluate_runs(
    bots: list[Chatbot],
    splits: dict[str, list[Pair]],
    *,
    split: str = "test",
    decode: DecodeConfig | None = None,
    reward_spec: str | None = None,
    max_pairs: int = 0,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate bots on the same held-out pairs; the first bot is the baseline of comparisons."""
    decode = decode or DecodeConfig()
    train_replies = [p.reply for p in splits["train"]]
    dull = stock_replies(train_replies)  # what the stock reward prices, too
    eval_set = build_eval_set(splits[split], dull, max_pairs=max_pairs)
    reward, reward_tokenizer = reward_for(bots, reward_spec, dull)
    results = []
    for bot in bots:
        logger.info("evaluating %s on %d %s pairs", bot.name, len(eval_set.pairs), split)
        results.append(evaluate_bot(bot, eval_set, decode, reward, reward_tokenizer))
    comparisons = [
        row
        for other in results[1:]
        for row in compare(results[0], other, eval_set, resamples=resamples, seed=seed)
    ]
    return {
        "split": split,
        "genres": bots[0].genres,
        "pairs": len(eval_set.pairs),
        "decode": vars(decode),
        "reward": reward.weights,
        "runs": [{"name": r.name, "stage": r.stage, "metrics": r.metrics} for r in results],
        "comparisons": comparisons,
    }
