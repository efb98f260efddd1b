"""Held-out evaluation of bots and baselines on the same pairs, compared with a test that
respects the dependence between pairs.

Systems: the runs given, the baselines (`rlchat.baselines`) and the held-out replies
themselves (``reference``, for the figures that need no reference). Figures: sentence BLEU-2
(the textbook's) and sacreBLEU against every reference of the input, perplexity of the
references, the run's own RL reward, and figures no reward is trained on: the share of the
commonest reply (``top1``), unique replies, entropy of whole replies, distinct-1/2, a dull-reply
rate and self-play length (Li et al. 2016, https://arxiv.org/abs/1606.01541, sec. 5.2) judged by
a list no reward prices (`rlchat.text.held_out_dull_replies`). ``stock_rate`` counts the set the
``stock`` reward prices: its fall under that reward is by construction.

Every figure is also computed on the ``unseen`` group: the pairs whose input never occurs in
the training split, where a bot cannot answer from memory.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from scipy import sparse
from tqdm.auto import tqdm

from rlchat.baselines import make_baseline
from rlchat.chatbot import Chatbot
from rlchat.config import DecodeConfig
from rlchat.corpus import Pair
from rlchat.dataset import seeded_sample
from rlchat.metrics import (
    bleu2,
    bleu_from_statistics,
    bleu_statistics,
    distinct_value,
    entropy_bits,
    has_unknown_word,
    is_repetitive,
    mean_statistics,
    mean_value,
    ngram_count_statistics,
    perplexities,
    reply_count_statistics,
    top1_value,
)
from rlchat.rewards import RewardFunction
from rlchat.scoring import target_log_likelihood
from rlchat.significance import Comparison, cluster_ids, compare, figure_of
from rlchat.text import canonical_reply, held_out_dull_replies, stock_replies, vocabulary
from rlchat.tokenizer import normalize_text

logger = logging.getLogger(__name__)

SELF_PLAY_TURNS = 8
SELF_PLAY_SEEDS = 100
DECODE_CHUNK = 256
GROUPS = ("all", "unseen")


class Responder(Protocol):
    """What evaluation needs of a system: a name, a stage and batched replies."""

    name: str
    stage: str

    def reply_batch(
        self,
        messages: Sequence[str],
        histories: Sequence[Sequence[str]] | None,
        config: Any,
        generator: torch.Generator | None = None,
    ) -> list[str]: ...


@dataclass
class DecodedBot:
    """A bot with decoding settings of its own, evaluated as a system of its own: the same
    run greedy and with MMI reranking, say. Everything else is the bot's."""

    bot: Chatbot
    decode: DecodeConfig
    name: str

    @property
    def stage(self) -> str:
        return self.bot.stage

    @property
    def device(self) -> torch.device:
        return self.bot.device

    def reply_batch(
        self,
        messages: Sequence[str],
        histories: Sequence[Sequence[str]] | None,
        config: Any = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        return self.bot.reply_batch(messages, histories, self.decode, generator)


def model_of(system: Any) -> Chatbot | None:
    """The trained model behind a system (None for a baseline)."""
    if isinstance(system, DecodedBot):
        return system.bot
    return system if isinstance(system, Chatbot) else None


@dataclass(frozen=True)
class Figure:
    """One evaluation figure: which per-example statistics it is computed from, and over what.
    A system has a figure when it has those statistics (`SystemResult.has`)."""

    name: str
    kind: str = "mean"  # mean | bleu | ppl | ngrams1 | ngrams2 | replies-*
    unit: str = "pairs"  # pairs | selfplay


FIGURES = (
    Figure("reward"),  # the RL run's own reward: what RL maximised
    Figure("bleu2"),  # sentence BLEU-2 against all references of the input, mean
    Figure("sacrebleu", kind="bleu"),  # corpus BLEU-4
    Figure("perplexity", kind="ppl"),  # of the references, under the model
    Figure("top1", kind="replies-top1"),  # share of the commonest reply
    Figure("unique", kind="replies-unique"),  # distinct replies / replies
    Figure("entropy", kind="replies-entropy"),  # of whole replies, bits
    Figure("distinct1", kind="ngrams1"),
    Figure("distinct2", kind="ngrams2"),
    Figure("length"),  # words per reply
    Figure("dull_rate"),  # held-out dull replies: a list no reward prices
    Figure("stock_rate"),  # what the stock reward prices
    Figure("repetition_rate"),  # a repeated word or bigram
    Figure("nonword_rate"),  # a word no training line holds: subwords spelling garble
    Figure("selfplay_turns", unit="selfplay"),  # turns before a dull or repeated turn
)


@dataclass
class EvalSet:
    """The held-out pairs every system answers, with what judging them needs."""

    pairs: list[Pair]
    references: list[list[str]]  # normalised reference replies per pair: all of its input's
    clusters: np.ndarray  # (n,) cluster of each pair: same conversation or same input
    conversations: np.ndarray  # (n,) conversation of each pair, numbered
    inputs: np.ndarray  # (n,) input text of each pair, numbered
    unseen: np.ndarray  # (n,) bool: the input never occurs in the training split
    dull_set: set[str]  # held-out dull replies: no reward prices them
    stock_set: set[str]  # what the stock reward prices
    known_words: frozenset[str]  # every word of the training split's lines
    selfplay_seeds: list[str]
    selfplay_clusters: np.ndarray  # (seeds,) cluster of each seed's first pair


@dataclass
class SystemResult:
    """One system's replies and per-example values; figures are computed from these."""

    name: str
    stage: str
    replies: list[str]
    values: dict[str, np.ndarray] = field(default_factory=dict)  # mean figures, per example
    bleu: np.ndarray | None = None  # (n, 10) sacreBLEU statistics
    nll: np.ndarray | None = None  # (n, 2) summed -log p and tokens of each reference
    selfplay: np.ndarray | None = None  # (seeds,) turns
    # Per-reply count vectors by kind ("ngrams1", "ngrams2", "replies") on a vocabulary shared
    # by every system of the evaluation (`attach_counts`), built once and sliced per group.
    counts: dict[str, Any] = field(default_factory=dict)

    def has(self, figure: Figure) -> bool:
        if figure.kind == "bleu":
            return self.bleu is not None
        if figure.kind == "ppl":
            return self.nll is not None
        if figure.kind == "mean":
            return (
                (self.selfplay is not None)
                if figure.unit == "selfplay"
                else (figure.name in self.values)
            )
        return True


def build_eval_set(
    pairs: list[Pair],
    *,
    train_pairs: Sequence[Pair],
    valid_pairs: Sequence[Pair],
    max_pairs: int = 0,
    selfplay_seeds: int = SELF_PLAY_SEEDS,
    seed: int = 0,
) -> EvalSet:
    """Group references by input (a line said several times has several good answers), draw
    the subsets with `seed`, and cluster the pairs."""
    by_source: dict[str, list[str]] = defaultdict(list)
    for pair in pairs:
        by_source[normalize_text(pair.source)].append(normalize_text(pair.reply))
    pairs = [pairs[i] for i in seeded_sample(len(pairs), max_pairs, seed)]
    sources = [normalize_text(p.source) for p in pairs]
    conversations = cluster_ids([p.conversation_id for p in pairs])
    inputs = cluster_ids(sources)
    clusters = cluster_ids(conversations, inputs)
    seen = {normalize_text(p.source) for p in train_pairs}
    first_pair = {}
    for i, source in enumerate(sources):
        first_pair.setdefault(source, i)
    distinct = list(first_pair)
    # Seeds drawn at random: the front of the list is one movie's first conversations.
    order = np.random.default_rng(seed + 1).permutation(len(distinct))[:selfplay_seeds]
    stock = stock_replies(p.reply for p in train_pairs)
    return EvalSet(
        pairs=pairs,
        references=[by_source[s] for s in sources],
        clusters=clusters,
        conversations=conversations,
        inputs=inputs,
        unseen=np.asarray([s not in seen for s in sources], dtype=bool),
        dull_set=held_out_dull_replies(((p.reply, p.movie_id) for p in valid_pairs), stock),
        stock_set=stock,
        known_words=vocabulary(t for p in train_pairs for t in (p.source, p.reply)),
        selfplay_seeds=[pairs[first_pair[distinct[i]]].source for i in order],
        selfplay_clusters=np.asarray([clusters[first_pair[distinct[i]]] for i in order], int),
    )


# --------------------------------------------------------------------------- answering


def reply_all(
    system: Responder,
    messages: Sequence[str],
    histories: Sequence[Sequence[str]],
    decode: DecodeConfig,
    progress: bool,
    seed: int = 0,
) -> list[str]:
    """Every reply, decoded in chunks of similar input length behind a progress bar; sampled
    replies (and MMI's candidates) are drawn from a generator seeded with `seed`."""
    generator = seeded_generator(system, seed)
    order = sorted(range(len(messages)), key=lambda i: len(messages[i]))
    replies: list[str] = [""] * len(messages)
    with tqdm(
        total=len(messages), desc=f"replies: {system.name}", unit="pair", disable=not progress
    ) as bar:
        for start in range(0, len(order), DECODE_CHUNK):
            rows = order[start : start + DECODE_CHUNK]
            chunk = system.reply_batch(
                [messages[i] for i in rows], [histories[i] for i in rows], decode, generator
            )
            for i, reply in zip(rows, chunk, strict=True):
                replies[i] = reply
            bar.update(len(rows))
    return replies


def seeded_generator(system: Responder, seed: int) -> torch.Generator:
    """A generator on the system's device (a model's draws are made there)."""
    return torch.Generator(device=getattr(system, "device", "cpu")).manual_seed(seed)


def self_play_turns(
    system: Responder, seeds: Sequence[str], dull_set: Collection[str], decode: DecodeConfig
) -> np.ndarray:
    """Turns two copies of the system keep talking from each seed before a dull, empty or
    repeated turn. All conversations advance together, one batched reply per turn."""
    generator = seeded_generator(system, 1)
    histories: list[list[str]] = [[seed] for seed in seeds]
    turns = np.zeros(len(seeds))
    alive = list(range(len(seeds)))
    for _ in range(SELF_PLAY_TURNS):
        if not alive:
            break
        messages = [histories[i][-1] for i in alive]
        past = [histories[i][:-1] for i in alive]
        replies = system.reply_batch(messages, past, decode, generator)
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


def reply_values(replies: Sequence[str], eval_set: EvalSet) -> dict[str, np.ndarray]:
    """The per-reply figures that need no reference."""
    canonical = [canonical_reply(r) for r in replies]
    return {
        "length": np.asarray([len(r.split()) for r in replies], dtype=float),
        "dull_rate": np.asarray([c in eval_set.dull_set for c in canonical], dtype=float),
        "stock_rate": np.asarray([c in eval_set.stock_set for c in canonical], dtype=float),
        "repetition_rate": np.asarray([is_repetitive(r) for r in replies], dtype=float),
        "nonword_rate": np.asarray(
            [has_unknown_word(r, eval_set.known_words) for r in replies], dtype=float
        ),
    }


def text_result(system: Responder, replies: list[str], eval_set: EvalSet) -> SystemResult:
    """A system's replies with the figures read off the text alone: BLEU (sentence and
    sacreBLEU statistics) against the references, and the reply figures."""
    words = [r.split() for r in replies]
    reference_words = [[ref.split() for ref in refs] for refs in eval_set.references]
    return SystemResult(
        name=system.name,
        stage=system.stage,
        replies=replies,
        values={"bleu2": np.asarray(bleu2(words, reference_words))}
        | reply_values(replies, eval_set),
        bleu=bleu_statistics(replies, eval_set.references),
    )


def reference_nll(bot: Chatbot, eval_set: EvalSet) -> np.ndarray:
    """Summed -log p(reference | input) and token count of each pair under the bot -> (n, 2)."""
    max_tokens = bot.tokenizer_config.max_tokens
    sources = [bot.encode_input(p.source, p.history) for p in eval_set.pairs]
    targets = [bot.tokenizer.encode(p.reply)[:max_tokens] for p in eval_set.pairs]
    sums, counts = target_log_likelihood(bot.model, sources, targets, bot.device)
    return np.column_stack([-sums.double().cpu().numpy(), counts.cpu().numpy()])


def reward_values(
    replies: Sequence[str], eval_set: EvalSet, reward: RewardFunction, tokenizer: Any
) -> np.ndarray:
    """The RL reward of each reply (judged by the reward's frozen model) -> (n,)."""
    reply_ids = tokenizer.encode_batch(list(replies))
    source_ids = tokenizer.encode_batch([p.source for p in eval_set.pairs])
    ref_ids = [tokenizer.encode_batch(refs) for refs in eval_set.references]
    with torch.inference_mode():
        total, _ = reward(reply_ids, source_ids, ref_ids)
    return total.cpu().numpy().astype(np.float64)


class PhaseTimer:
    """Seconds spent in each named phase, summed over systems (for `benchmarks/eval_speed.py`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - started


def evaluate_system(
    system: Responder,
    eval_set: EvalSet,
    decode: DecodeConfig,
    reward: RewardFunction | None,
    reward_tokenizer: Any = None,
    progress: bool = False,
    timer: PhaseTimer | None = None,
) -> SystemResult:
    """Replies and per-example values of one system on the evaluation set."""
    timer = timer or PhaseTimer()
    pairs = eval_set.pairs
    with timer("replies"):
        replies = reply_all(
            system, [p.source for p in pairs], [p.history for p in pairs], decode, progress
        )
    with timer("overlap figures"):
        result = text_result(system, replies, eval_set)
    if reward is not None:
        with timer("reward"):
            result.values["reward"] = reward_values(replies, eval_set, reward, reward_tokenizer)
    bot = model_of(system)
    if bot is not None:
        with timer("perplexity"):
            result.nll = reference_nll(bot, eval_set)
    with timer("self-play"):
        result.selfplay = self_play_turns(
            system, eval_set.selfplay_seeds, eval_set.dull_set, decode
        )
    return result


def reference_result(eval_set: EvalSet) -> SystemResult:
    """The held-out replies themselves, as a system (figures that need no reference)."""
    replies = [normalize_text(p.reply) for p in eval_set.pairs]
    return SystemResult(
        name="reference", stage="held-out", replies=replies, values=reply_values(replies, eval_set)
    )


# --------------------------------------------------------------------------- figures


def statistics(
    figure: Figure, systems: Sequence[SystemResult], rows: np.ndarray
) -> tuple[list[Any], Callable[[np.ndarray], np.ndarray]]:
    """Per-example statistics of each system on `rows`, on shared columns, and the figure's
    function of their sums (see `rlchat.significance`)."""
    if figure.kind == "mean":
        if figure.unit == "selfplay":
            return [mean_statistics(s.selfplay) for s in systems], mean_value
        return [mean_statistics(s.values[figure.name][rows]) for s in systems], mean_value
    if figure.kind == "bleu":
        return [s.bleu[rows] for s in systems], bleu_from_statistics
    if figure.kind == "ppl":
        return [s.nll[rows] for s in systems], perplexity_value
    if figure.kind.startswith("ngrams"):
        return count_statistics(figure.kind, systems, rows), distinct_value
    value = {
        "replies-top1": top1_value,
        "replies-unique": distinct_value,
        "replies-entropy": entropy_bits,
    }[figure.kind]
    return count_statistics("replies", systems, rows), value


COUNT_KINDS = ("ngrams1", "ngrams2", "replies")


def count_tables(kind: str, replies: Sequence[Sequence[str]]) -> list[Any]:
    """Per-reply count vectors of each system's replies, on one shared vocabulary."""
    if kind == "replies":
        return reply_count_statistics(replies)
    return ngram_count_statistics(replies, int(kind[-1]))


def attach_counts(systems: Sequence[SystemResult]) -> None:
    """Count every system's replies once, on vocabularies shared by all of them: each
    comparison and group then slices rows instead of re-counting text."""
    for kind in COUNT_KINDS:
        tables = count_tables(kind, [s.replies for s in systems])
        for system, table in zip(systems, tables, strict=True):
            system.counts[kind] = table


def count_statistics(kind: str, systems: Sequence[SystemResult], rows: np.ndarray) -> list[Any]:
    """The systems' count vectors on `rows`, keeping only the columns some of them use (the
    resampling's cost grows with the columns)."""
    if all(kind in s.counts for s in systems):
        tables = [sparse.csr_array(s.counts[kind][rows]) for s in systems]
        used = np.flatnonzero(sum(np.asarray(t.sum(axis=0)).ravel() for t in tables) > 0)
        return [t[:, used] if len(used) else sparse.csr_array((len(rows), 1)) for t in tables]
    return count_tables(kind, [[s.replies[i] for i in rows] for s in systems])


def perplexity_value(totals: np.ndarray) -> np.ndarray:
    """Figure of statistics ``[-log p summed, tokens]``: the perplexity."""
    return perplexities(totals[:, 0], totals[:, 1])


def group_rows(eval_set: EvalSet, group: str) -> np.ndarray:
    if group == "unseen":
        return np.flatnonzero(eval_set.unseen)
    return np.arange(len(eval_set.pairs))


def figure_value(figure: Figure, system: SystemResult, rows: np.ndarray) -> float:
    (stats,), value = statistics(figure, [system], rows)
    return figure_of(stats, value)


def figures_of(system: SystemResult, eval_set: EvalSet, group: str) -> dict[str, float]:
    rows = group_rows(eval_set, group)
    if not len(rows):
        return {}
    return {
        f.name: figure_value(f, system, rows)
        for f in FIGURES
        if system.has(f) and not (group != "all" and f.unit == "selfplay")
    }


def comparisons(
    pairs: Sequence[tuple[SystemResult, SystemResult]],
    eval_set: EvalSet,
    *,
    resamples: int,
    seed: int,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """B minus A of each (A, B) on every figure both have, in every group."""
    jobs = [
        (baseline, other, figure, group)
        for baseline, other in pairs
        for group in GROUPS
        for figure in FIGURES
        if baseline.has(figure)
        and other.has(figure)
        and not (group != "all" and figure.unit == "selfplay")
        and len(group_rows(eval_set, group))
    ]
    rows_out = []
    for baseline, other, figure, group in tqdm(
        jobs, desc="comparisons", unit="figure", disable=not progress
    ):
        rows = group_rows(eval_set, group)
        (stats_a, stats_b), value = statistics(figure, [baseline, other], rows)
        if figure.unit == "selfplay":
            clusters, groupings = eval_set.selfplay_clusters, None
        else:
            # The test swaps whole clusters; the interval sums conversation and input variances.
            clusters = eval_set.clusters[rows]
            groupings = (eval_set.conversations[rows], eval_set.inputs[rows])
        result: Comparison = compare(
            stats_a, stats_b, clusters, value, groupings=groupings, resamples=resamples, seed=seed
        )
        rows_out.append(
            {
                "baseline": baseline.name,
                "run": other.name,
                "group": group,
                "metric": figure.name,
                "diff": result.diff,
                "low": result.low,
                "high": result.high,
                "p_value": result.p_value,
                "randomisation_p": result.randomisation_p,
                "interval_p": result.interval_p,
            }
        )
    return rows_out


def reward_for(
    systems: Sequence[Chatbot | DecodedBot], spec: str | None, stock: Collection[str] = ()
) -> tuple[RewardFunction, Any]:
    """The RL run's own reward (judged by its frozen CE start), else the default reward."""
    from rlchat.config import DEFAULT_REWARD

    bots = [model_of(s) for s in systems]
    rl_bot = next((b for b in bots if b.stage == "rl"), None)
    if rl_bot is not None:
        spec = spec or rl_bot.config["rl"]["reward"]
        judge = Chatbot.load(rl_bot.config["init"], device=str(rl_bot.device))
    else:
        judge = bots[0]
    if rl_bot is not None and rl_bot.config["rl"].get("backward"):
        backward = Chatbot.load(rl_bot.config["rl"]["backward"], device=str(rl_bot.device)).model
    else:  # a backward model given for reranking serves a `mutual` reward spec too
        backward = next((b.backward.model for b in bots if b.backward is not None), None)
    reward = RewardFunction.from_spec(
        spec or DEFAULT_REWARD,
        judge=judge.model,
        tokenizer=judge.tokenizer,
        device=judge.device,
        stock=stock,
        backward=backward,
    )
    return reward, judge.tokenizer


def cluster_summary(eval_set: EvalSet) -> dict[str, Any]:
    sizes = np.bincount(eval_set.clusters) if len(eval_set.clusters) else np.zeros(1)
    return {
        "clusters": int(len(sizes)),
        "largest_cluster_share": float(sizes.max() / max(1, len(eval_set.clusters))),
        "unseen_pairs": int(eval_set.unseen.sum()),
    }


def split_eval_set(
    splits: dict[str, list[Pair]], split: str, *, max_pairs: int = 0, seed: int = 0
) -> EvalSet:
    """The evaluation set of one split, as `evaluate_runs` builds it: the training pairs say
    which inputs are unseen and which replies are stock, the validation pairs which dull
    replies are held out."""
    return build_eval_set(
        splits[split],
        train_pairs=splits["train"],
        valid_pairs=splits["valid"],
        max_pairs=max_pairs,
        seed=seed,
    )


def evaluate_runs(
    bots: Sequence[Chatbot | DecodedBot],
    splits: dict[str, list[Pair]],
    *,
    split: str = "test",
    decode: DecodeConfig | None = None,
    reward_spec: str | None = None,
    baselines: Sequence[str] = ("random", "retrieval"),
    max_pairs: int = 0,
    resamples: int = 1000,
    seed: int = 0,
    also_compare: Sequence[tuple[str, str]] = (),
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate bots and baselines on the same held-out pairs; the first bot is the one every
    other system is compared with, and ``also_compare`` names more (A, B) pairs of systems.
    A `DecodedBot` decodes with its own settings, the others with `decode`."""
    decode = decode or DecodeConfig()
    for bot in bots:
        if model_of(bot).direction != "forward":
            raise ValueError(f"{bot.name} is a backward model (reply -> input), not a bot")
    timer = PhaseTimer()
    with timer("setup"):
        eval_set = split_eval_set(splits, split, max_pairs=max_pairs, seed=seed)
        if not eval_set.pairs:
            raise ValueError(f"the {split} split holds no pairs to evaluate")
        reward, reward_tokenizer = reward_for(bots, reward_spec, eval_set.stock_set)
        systems: list[Responder] = [*bots]
        systems += [make_baseline(name, splits["train"], seed=seed) for name in baselines]
        names = [s.name for s in systems]
        unknown = sorted({n for pair in also_compare for n in pair} - set(names))
        if unknown:
            raise ValueError(f"cannot compare unknown systems {unknown}; systems: {names}")
    results = []
    for system in systems:
        logger.info("evaluating %s on %d %s pairs", system.name, len(eval_set.pairs), split)
        results.append(
            evaluate_system(system, eval_set, decode, reward, reward_tokenizer, progress, timer)
        )
    reference = reference_result(eval_set)
    with timer("comparisons"):
        attach_counts([*results, reference])
        by_name = {r.name: r for r in results}
        pairs = [(results[0], other) for other in results[1:]]
        pairs += [(by_name[a], by_name[b]) for a, b in also_compare]
        compared = comparisons(pairs, eval_set, resamples=resamples, seed=seed, progress=progress)
    return {
        "split": split,
        "genres": model_of(bots[0]).genres,
        "pairs": len(eval_set.pairs),
        **cluster_summary(eval_set),
        "decode": vars(decode),
        "system_decoding": {b.name: vars(b.decode) for b in bots if isinstance(b, DecodedBot)},
        "reward": reward.weights,
        "dull_replies": sorted(eval_set.dull_set),
        "test": {
            # p_value is the larger of the two: a difference is called only when both reject.
            "method": "paired approximate randomisation over clusters, and the interval",
            "resamples": resamples,
            "seed": seed,
        },
        "runs": [
            {
                "name": r.name,
                "stage": r.stage,
                "metrics": figures_of(r, eval_set, "all"),
                "unseen": figures_of(r, eval_set, "unseen"),
            }
            for r in [*results, reference]
        ],
        "comparisons": compared,
        "seconds": {phase: round(value, 2) for phase, value in timer.seconds.items()},
    }
