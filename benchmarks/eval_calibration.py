"""Does `rlchat eval`'s significance test mean what it says? Calibration on real held-out pairs.

The pairs, references and clusters are the real test split of a genre (the shared excerpt by
default). The systems are bots without a model, so that thousands of them can be scored:

* A/A: two random-reply bots (`rlchat.baselines.RandomReplyBot`) with different seeds. Each
  is a function of its input, as a deterministic bot is (a line said twice gets the same
  reply twice), and the two differ only by chance. A test at the 95% level should call them
  different about 5% of the time; the benchmark reports how often it does, per figure, for
  the clustered test and interval (and both together, `rlchat eval`'s star) and for the same
  on single pairs.
* Known difference: bot B answers a share of its inputs with a stock reply ("i don't know.")
  and the rest at random. The true difference of each figure at this sample size is the mean
  over many draws; the benchmark reports how often the 95% interval covers it.
* Equal figure (`--equal-figure`): two stock bots, each saying its own line to the same share
  of inputs. They differ, but their top1, unique and entropy are equal in expectation; the
  randomisation's null (exchangeable outputs) is false, "no difference in the figure" true.

Each replication takes fresh bots (two for A/A, one stock bot for the known difference) and
half the test conversations at random (the test split is itself a random set of
conversations), so replications are independent. The test swaps whole clusters (same
conversation or same input, joined); the interval's variance sums the half-sample variances
along conversation and along input. "pairs" is the same test and interval with every pair
taken as independent.

    python benchmarks/eval_calibration.py --corpus ../shared/data/cornell-excerpt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np

from rlchat.baselines import RandomReplyBot
from rlchat.checkpoint import atomic_write_text
from rlchat.config import DataConfig, TokenizerConfig
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.evaluation import (
    FIGURES,
    EvalSet,
    SystemResult,
    attach_counts,
    split_eval_set,
    statistics,
    text_result,
)
from rlchat.significance import (
    Comparison,
    cluster_ids,
    compare,
    half_sample_variance,
    observed_difference,
    randomised_differences,
    swap_masks,
)
from rlchat.tokenizer import normalize_text

# Figures a bot without a model has (no perplexity, no reward, self-play is its own unit).
CHECKED = [f for f in FIGURES if f.name not in ("reward", "perplexity", "selfplay_turns")]
STOCK = "i don't know."


class StockBot(RandomReplyBot):
    """A random-reply bot that says "i don't know." to a share of its inputs (by hash)."""

    def __init__(self, train_pairs, seed: int, share: float, stock: str = STOCK) -> None:
        super().__init__(train_pairs, seed=seed, name=f"stock-{seed}")
        self.share = share
        self.stock = stock

    def answer(self, messages):
        replies = super().answer(messages)
        out = []
        for message, reply in zip(messages, replies, strict=True):
            key = f"stock:{self.seed}:{normalize_text(message)}".encode()
            u = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64
            out.append(self.stock if u < self.share else reply)
        return out


def score(bot: RandomReplyBot, eval_set: EvalSet) -> SystemResult:
    return text_result(bot, bot.reply_batch([p.source for p in eval_set.pairs]), eval_set)


VARIANTS = ("one-way joined", "CGM: V1 + V2 - V12", "floor at randomisation")


def interval_variants(stats_a, stats_b, clusters, groupings, value, args, seed) -> dict:
    """Variances of other interval constructions than `compare`'s (V1 + V2): half-samples of
    the joined clusters; Cameron, Gelbach & Miller's V1 + V2 - V12 (never below max(V1,
    V2)); that floored at the variance of the randomisation distribution."""
    conversations, inputs = groupings
    both = cluster_ids(list(zip(conversations.tolist(), inputs.tolist(), strict=True)))
    v1, v2, v12 = (
        half_sample_variance(
            stats_a, stats_b, [g], value, resamples=args.resamples, seed=seed + offset
        )
        for offset, g in ((1, conversations), (2, inputs), (3, both))
    )
    masks = swap_masks(int(clusters.max()) + 1, args.resamples, seed)
    _, swapped = randomised_differences(stats_a, stats_b, clusters, value, masks)
    joined = half_sample_variance(
        stats_a, stats_b, [clusters], value, resamples=args.resamples, seed=seed + 4
    )
    cgm = max(v1 + v2 - v12, v1, v2)
    return {
        "one-way joined": joined,
        "CGM: V1 + V2 - V12": cgm,
        "floor at randomisation": max(cgm, float(np.var(swapped[np.isfinite(swapped)]))),
    }


def half_of_the_conversations(eval_set: EvalSet, rng: np.random.Generator) -> np.ndarray:
    """Pairs of a random half of the conversations: the test split is such a draw."""
    kept = rng.random(int(eval_set.conversations.max()) + 1) < 0.5
    return np.flatnonzero(kept[eval_set.conversations])


def clustered_comparison(stats_a, stats_b, value, eval_set, rows, args, seed) -> Comparison:
    """`rlchat eval`'s comparison on these rows: the test swaps their clusters, the interval
    sums the conversation and input variances."""
    groupings = (eval_set.conversations[rows], eval_set.inputs[rows])
    return compare(
        stats_a,
        stats_b,
        eval_set.clusters[rows],
        value,
        groupings=groupings,
        resamples=args.resamples,
        seed=seed,
    )


def test_split(args: argparse.Namespace) -> tuple[dict, EvalSet]:
    """The genre's splits and its test set, as the default run's data: the same split,
    tokenizer and length filter as `rlchat eval`'s."""
    corpus = load_corpus(Path(args.corpus))
    dataset = prepare_dataset(corpus, DataConfig(genres=[args.genre]), TokenizerConfig())
    splits = dataset.pairs()
    return splits, split_eval_set(splits, "test")


def run(args: argparse.Namespace) -> dict:
    splits, eval_set = test_split(args)
    started = time.perf_counter()
    # Fresh bots for every replication (two for A/A, one stock bot for the known difference):
    # bots drawn again from a small pool would make the replications correlated, and the
    # rates noisier than their binomial error says.
    n = args.replications
    plain = [score(RandomReplyBot(splits["train"], seed=s), eval_set) for s in range(2 * n)]
    stocky = [
        score(StockBot(splits["train"], seed=10_000 + s, share=args.stock_share), eval_set)
        for s in range(n)
    ]
    attach_counts([*plain, *stocky])  # one vocabulary for the pools; draws slice rows
    scoring_s = time.perf_counter() - started
    rng = np.random.default_rng(args.seed)

    def draw(pool_b):
        """A random plain bot, a bot of pool_b, and half the conversations (for the truth)."""
        return (
            plain[int(rng.integers(len(plain)))],
            pool_b[int(rng.integers(len(pool_b)))],
            half_of_the_conversations(eval_set, rng),
        )

    # The truth for the known difference: the mean difference over many draws of the same size.
    truth = {f.name: [] for f in CHECKED}
    for _ in range(args.truth_draws):
        a, b, rows = draw(stocky)
        for figure in CHECKED:
            (stats_a, stats_b), value = statistics(figure, [a, b], rows)
            truth[figure.name].append(observed_difference(stats_a, stats_b, value))
    true_difference = {name: float(np.mean(values)) for name, values in truth.items()}

    rejections = {f.name: {"clusters": 0, "pairs": 0} for f in CHECKED}
    excluded = {f.name: {"clusters": 0, "pairs": 0} for f in CHECKED}  # interval misses 0
    called = {f.name: {"clusters": 0, "pairs": 0} for f in CHECKED}  # both: the star
    covered = {f.name: 0 for f in CHECKED}
    variant_covered = {v: {f.name: 0 for f in CHECKED} for v in VARIANTS}
    for replication in range(n):
        a, b = plain[2 * replication], plain[2 * replication + 1]
        a2, b2 = plain[2 * replication], stocky[replication]
        rows = half_of_the_conversations(eval_set, rng)
        rows2 = half_of_the_conversations(eval_set, rng)
        for figure in CHECKED:
            (stats_a, stats_b), value = statistics(figure, [a, b], rows)
            single = np.arange(len(rows))  # the same test with every pair its own cluster
            groupings = (eval_set.conversations[rows], eval_set.inputs[rows])
            for name, clusters, groups in (
                ("clusters", eval_set.clusters[rows], groupings),
                ("pairs", single, None),
            ):
                result = compare(
                    stats_a,
                    stats_b,
                    clusters,
                    value,
                    groupings=groups,
                    resamples=args.resamples,
                    seed=replication,
                )
                rejections[figure.name][name] += result.randomisation_p < 0.05
                called[figure.name][name] += result.significant()
                excluded[figure.name][name] += not result.low <= 0.0 <= result.high
            (stats_a, stats_b), value = statistics(figure, [a2, b2], rows2)
            groupings = (eval_set.conversations[rows2], eval_set.inputs[rows2])
            result = clustered_comparison(
                stats_a, stats_b, value, eval_set, rows2, args, replication
            )
            covered[figure.name] += result.low <= true_difference[figure.name] <= result.high
            # Other interval variances on the same draw, to compare constructions.
            variants = (
                interval_variants(
                    stats_a, stats_b, eval_set.clusters[rows2], groupings, value, args, replication
                )
                if args.variants
                else {}
            )
            for variant, variance in variants.items():
                half = 1.959964 * np.sqrt(variance)
                inside = abs(result.diff - true_difference[figure.name]) <= half
                variant_covered[variant][figure.name] += inside
    return {
        "machine": f"{platform.machine()}, {platform.processor() or platform.platform()}",
        "genre": args.genre,
        "test_pairs": len(eval_set.pairs),
        "clusters": int(eval_set.clusters.max()) + 1,
        "replications": n,
        "resamples": args.resamples,
        "stock_share": args.stock_share,
        "seconds": round(time.perf_counter() - started, 1),
        "scoring_seconds": round(scoring_s, 1),
        "false_positive_rate": {
            name: {kind: count / n for kind, count in kinds.items()}
            for name, kinds in rejections.items()
        },
        "aa_both_reject": {
            name: {kind: count / n for kind, count in kinds.items()}
            for name, kinds in called.items()
        },
        "aa_interval_excludes_zero": {
            name: {kind: count / n for kind, count in kinds.items()}
            for name, kinds in excluded.items()
        },
        "true_difference": true_difference,
        "coverage": {name: count / n for name, count in covered.items()},
        "coverage_of_other_intervals": {
            variant: {name: count / n for name, count in counts.items()}
            for variant, counts in variant_covered.items()
        }
        if args.variants
        else {},
    }


# Figures on which two stock bots of the same share but different stock lines are equal in
# expectation: the commonest reply's share, unique replies, and the replies' entropy.
EQUAL_FIGURES = ("top1", "unique", "entropy")
# Lines no training reply is, so that no random reply adds to either bot's stock line.
EQUAL_STOCK_LINES = ("purple elephants dance at noon.", "orange giraffes sing at dawn.")


def run_equal_figure(args: argparse.Namespace) -> dict:
    """Two different systems whose figure is the same in expectation: two stock bots, each
    saying its own line (one no training reply is) to the same share of inputs. The
    randomisation test's null is that the two systems' outputs are exchangeable, which is
    false here; the figure's difference is zero all the same. How often does each of the
    test and the interval call them different?"""
    splits, eval_set = test_split(args)
    started = time.perf_counter()
    n = args.replications
    share = args.stock_share
    line_a, line_b = EQUAL_STOCK_LINES
    a_bots = [StockBot(splits["train"], 20_000 + s, share, stock=line_a) for s in range(n)]
    b_bots = [StockBot(splits["train"], 30_000 + s, share, stock=line_b) for s in range(n)]
    results = [score(bot, eval_set) for bot in (*a_bots, *b_bots)]
    attach_counts(results)
    rng = np.random.default_rng(args.seed)
    figures = [f for f in CHECKED if f.name in EQUAL_FIGURES]
    rejected = {f.name: 0 for f in figures}
    excluded = {f.name: 0 for f in figures}
    called = {f.name: 0 for f in figures}  # both reject: `rlchat eval`'s star
    differences = {f.name: [] for f in figures}
    for replication in range(n):
        a, b = results[replication], results[n + replication]
        rows = half_of_the_conversations(eval_set, rng)
        for figure in figures:
            (stats_a, stats_b), value = statistics(figure, [a, b], rows)
            result = clustered_comparison(
                stats_a, stats_b, value, eval_set, rows, args, replication
            )
            rejected[figure.name] += result.randomisation_p < 0.05
            excluded[figure.name] += not result.low <= 0.0 <= result.high
            called[figure.name] += result.significant()
            differences[figure.name].append(result.diff)
    return {
        "what": "different systems, equal figure in expectation (see run_equal_figure)",
        "machine": f"{platform.machine()}, {platform.processor() or platform.platform()}",
        "genre": args.genre,
        "test_pairs": len(eval_set.pairs),
        "replications": n,
        "resamples": args.resamples,
        "stock_share": share,
        "stock_lines": list(EQUAL_STOCK_LINES),
        "seconds": round(time.perf_counter() - started, 1),
        "mean_difference": {k: float(np.mean(v)) for k, v in differences.items()},
        "randomisation_rejects": {k: v / n for k, v in rejected.items()},
        "interval_excludes_zero": {k: v / n for k, v in excluded.items()},
        "both_reject": {k: v / n for k, v in called.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="../shared/data/cornell-excerpt")
    parser.add_argument("--genre", default="comedy")
    parser.add_argument("--replications", type=int, default=400)
    parser.add_argument("--resamples", type=int, default=500, help="random swaps per test")
    parser.add_argument("--truth-draws", type=int, default=1000)
    parser.add_argument("--stock-share", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--variants", action="store_true", help="also the coverage of other interval variances"
    )
    parser.add_argument(
        "--equal-figure",
        action="store_true",
        help="instead: two different systems whose figure is equal in expectation",
    )
    args = parser.parse_args()
    if args.equal_figure:
        result = run_equal_figure(args)
        print(json.dumps(result, indent=2))
        if args.json:
            atomic_write_text(args.json, json.dumps(result, indent=2))
        return
    result = run(args)
    print(json.dumps(result, indent=2))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))
    worst_fp = max(v["clusters"] for v in result["false_positive_rate"].values())
    best_fp = min(v["clusters"] for v in result["false_positive_rate"].values())
    worst_cover = min(result["coverage"].values())
    worst_star = max(v["clusters"] for v in result["aa_both_reject"].values())
    print(
        f"A/A false-positive rate at 95%: {best_fp:.3f} to {worst_fp:.3f} over figures "
        f"(clustered test), {worst_star:.3f} at worst with the interval too; interval coverage "
        f"of a known difference: {worst_cover:.3f} at worst"
    )


if __name__ == "__main__":
    main()
