"""Does the recipe beat its baselines over draws, not in one? Several quickstart runs that
differ only in `--seed` answer the same held-out pairs; each comparison pools them
(`rlchat.significance.pooled_comparison`): per-pair values averaged over the draws, the
interval widened by the spread between draws, since the next draw is none of these.

    python experiments/pooled_draws.py runs/experiment-comedy-v5-seed5 \
        runs/experiment-comedy-v5-seed6 --json docs/figures/pooled_draws.json

Counting draws whose own interval clears zero ("2 of 5") mixes the pairs' noise with the
draws'; this separates them.

With `--against`, two recipes are compared instead, draw k of one against draw k of the
other (the same seed): each of CE, RL and the served bot of the recipe given first against
the same bot of the `--against` recipe. Choose between recipes with `--split valid`.

    python experiments/pooled_draws.py runs/new-seed9 runs/new-seed10 --against \
        runs/old-seed9 runs/old-seed10 --split valid

Only figures that are a mean over pairs are pooled (BLEU-2,
length, the rates); top1, unique and distinct-n are shown per draw.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from rlchat.baselines import make_baseline
from rlchat.chatbot import Chatbot
from rlchat.checkpoint import atomic_write_text
from rlchat.config import DecodeConfig
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.evaluation import (
    DecodedBot,
    EvalSet,
    Responder,
    figures_of,
    reply_all,
    split_eval_set,
    text_result,
)
from rlchat.quickstart import EVAL_BASELINES, SERVED, QuickstartPlan, served_decoding
from rlchat.report import is_significant
from rlchat.significance import pooled_comparison

POOLED = ("bleu2", "length", "dull_rate", "stock_rate", "repetition_rate", "nonword_rate")
PER_DRAW = ("bleu2", "top1", "unique", "distinct2", "nonword_rate")
# (baseline, system): B - A, pooled over draws.
COMPARED = (("ce", "rl"), ("ce", SERVED), ("retrieval", SERVED), ("random", SERVED))
AGAINST = "against "  # prefix of the --against recipe's bots


def draw_values(out: Path, corpus, split: str, max_pairs: int, seed: int) -> tuple:  # noqa: ANN001
    """One draw's CE, RL and served bot on the split: per-pair values and figures."""
    plan = QuickstartPlan(out=out, genres=[], minutes=0, progress=False)
    ce = Chatbot.load(plan.ce_dir, device="cpu")
    rl = Chatbot.load(plan.rl_dir, device="cpu", backward=plan.backward_dir)
    dataset = prepare_dataset(corpus, ce.data_config, ce.tokenizer_config, tokenizer=ce.tokenizer)
    splits = dataset.pairs()
    eval_set = split_eval_set(splits, split, max_pairs=max_pairs, seed=seed)
    systems: list[Responder] = [ce, rl, DecodedBot(rl, served_decoding(), SERVED)]
    names = ["ce", "rl", SERVED]
    return splits, eval_set, dict(zip(names, answer(systems, eval_set, seed), strict=True))


def answer(systems: list[Responder], eval_set: EvalSet, seed: int) -> list:
    messages = [p.source for p in eval_set.pairs]
    histories = [p.history for p in eval_set.pairs]
    return [
        text_result(s, reply_all(s, messages, histories, DecodeConfig(), False, seed), eval_set)
        for s in systems
    ]


def same_pairs(first: EvalSet, other: EvalSet, run: Path) -> None:
    key = [(p.source, p.reply) for p in first.pairs]
    if [(p.source, p.reply) for p in other.pairs] != key:
        raise SystemExit(f"{run} holds other held-out pairs: draws must share their split")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, nargs="+", help="quickstart --out of each draw")
    parser.add_argument(
        "--against", type=Path, nargs="+", help="another recipe's draws, in the same seed order"
    )
    parser.add_argument("--corpus", type=Path, default=Path("../shared/data/cornell-excerpt"))
    parser.add_argument("--split", choices=("valid", "test"), default="test")
    parser.add_argument("--max-pairs", type=int, default=0, help="seeded subset; 0: all")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.against and len(args.against) != len(args.out):
        parser.error(f"{len(args.out)} draws but {len(args.against)} --against draws")
    corpus = load_corpus(args.corpus)
    draws, eval_set, splits = [], None, None
    for k, out in enumerate(args.out):
        draw_splits, draw_set, results = draw_values(
            out, corpus, args.split, args.max_pairs, args.seed
        )
        if eval_set is None:
            eval_set, splits = draw_set, draw_splits
        else:
            same_pairs(eval_set, draw_set, out)
        if args.against:
            _, other_set, other = draw_values(
                args.against[k], corpus, args.split, args.max_pairs, args.seed
            )
            same_pairs(eval_set, other_set, args.against[k])
            results.update({AGAINST + name: r for name, r in other.items()})
        draws.append(results)
        print(f"{out}: answered {len(draw_set.pairs)} {args.split} pairs", flush=True)
    compared = (
        tuple((AGAINST + name, name) for name in ("ce", "rl", SERVED)) if args.against else COMPARED
    )
    baselines = [make_baseline(name, splits["train"], seed=args.seed) for name in EVAL_BASELINES]
    for name, result in zip(EVAL_BASELINES, answer(baselines, eval_set, args.seed), strict=True):
        for draw in draws:
            draw[name] = result  # a baseline answers the same whatever the draw
    groupings = (eval_set.conversations, eval_set.inputs)
    rows = []
    for baseline, system in compared:
        for metric in POOLED:
            pooled = pooled_comparison(
                [d[baseline].values[metric] for d in draws],
                [d[system].values[metric] for d in draws],
                eval_set.clusters,
                groupings=groupings,
                resamples=args.resamples,
                seed=args.seed,
            )
            rows.append({"baseline": baseline, "run": system, "metric": metric, **vars(pooled)})
    per_draw = [
        {
            "draw": str(out),
            **{
                name: {
                    k: round(v, 4)
                    for k, v in figures_of(r, eval_set, "all").items()
                    if k in PER_DRAW
                }
                for name, r in draw.items()
            },
        }
        for out, draw in zip(args.out, draws, strict=True)
    ]
    report = {
        "machine": f"{platform.machine()}, {platform.processor() or platform.platform()}",
        "split": args.split,
        "pairs": len(eval_set.pairs),
        "draws": [str(p) for p in args.out],
        "against": [str(p) for p in args.against or []],
        "served_decoding": vars(served_decoding()),
        "comparisons": rows,
        "per_draw": per_draw,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print("| B − A | figure | pooled | pairs alone | per draw |")
    print("|---|---|---|---|---|")
    for row in rows:
        mark = " *" if (row["low"] > 0 or row["high"] < 0) and is_significant(row) else ""
        draws_text = ", ".join(f"{d:+.4f}" for d in row["per_draw"])
        print(
            f"| {row['run']} − {row['baseline']} | {row['metric']} | {row['diff']:+.4f} "
            f"[{row['low']:+.4f}, {row['high']:+.4f}]{mark} | "
            f"[{row['pairs_low']:+.4f}, {row['pairs_high']:+.4f}] | {draws_text} |"
        )
    print("\n| draw | bot | " + " | ".join(PER_DRAW) + " |")
    print("|---|---|" + "---:|" * len(PER_DRAW))
    for draw in per_draw:
        for name, figures in draw.items():
            if name != "draw" and name not in EVAL_BASELINES:
                row = " | ".join(f"{figures[k]:.4f}" for k in PER_DRAW)
                print(f"| {draw['draw']} | {name} | {row} |")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
