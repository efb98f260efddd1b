"""Against the greedy CE bot's one reply to everything: frequency-weighted cross-entropy
(FACE-like, `--frequency-weighting`) and entropy-based filtering of common replies
(`--max-reply-count`), each tried in the quickstart's fine-tune stage (`train ce --init` the
all-genre pretraining, on the genre, for the minutes the quickstart gives it), judged on the
VALIDATION split (never test), greedy with the default 3-gram blocking.

    python experiments/dull_ce_sweep.py --init runs/experiment-comedy-final/pretrain \
        --out runs/dull-ce-sweep --json docs/figures/dull_ce_sweep.json

Runs are sequential, each on the same threads, the default first and last (with another
seed) to measure the noise of a run. Finished runs are kept: re-running only evaluates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from rlchat.chatbot import Chatbot
from rlchat.checkpoint import atomic_write_text
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.evaluation import build_eval_set, evaluate_runs

sys.path.insert(0, str(Path(__file__).parent))
from regularisation_sweep import bits_per_char, train  # noqa: E402

# The quickstart's fine-tune clock under --minutes 20 (runs/experiment-comedy-final/ce).
FINETUNE_MINUTES = 1.72
SETTINGS: dict[str, list[str]] = {
    "default": [],
    "weighting-0.25": ["--frequency-weighting", "0.25"],
    "weighting-0.5": ["--frequency-weighting", "0.5"],
    "weighting-0.75": ["--frequency-weighting", "0.75"],
    "filter-10": ["--max-reply-count", "10"],
    "filter-10+weighting-0.5": ["--max-reply-count", "10", "--frequency-weighting", "0.5"],
    "default-repeat": ["--seed", "1"],
}
SHOWN = ("bleu2", "top1", "unique", "distinct2", "length", "perplexity", "dull_rate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="../shared/data/cornell-excerpt")
    parser.add_argument("--init", type=Path, required=True, help="the all-genre CE run")
    parser.add_argument("--genre", default="comedy")
    parser.add_argument("--out", type=Path, default=Path("runs/dull-ce-sweep"))
    parser.add_argument("--minutes", type=float, default=FINETUNE_MINUTES, help="per run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="train only these settings")
    parser.add_argument("--pairs", type=int, default=1000, help="validation pairs (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    names = args.only or list(SETTINGS)
    runs = {}
    for name in names:
        flags = ["--init", str(args.init), "--genre", args.genre, *SETTINGS[name]]
        runs[name] = train(args.out / name, flags, args.corpus, args.minutes, args.threads)
        print(name, runs[name], flush=True)

    bots = [Chatbot.load(args.out / name, device="cpu") for name in names]
    first = bots[0]
    dataset = prepare_dataset(
        load_corpus(Path(args.corpus)),
        first.data_config,
        first.tokenizer_config,
        tokenizer=first.tokenizer,
    )
    splits = dataset.pairs()
    result = evaluate_runs(
        bots, splits, split="valid", baselines=(), max_pairs=args.pairs, seed=args.seed
    )
    eval_set = build_eval_set(
        splits["valid"],
        train_pairs=splits["train"],
        valid_pairs=splits["valid"],
        max_pairs=args.pairs,
        seed=args.seed,
    )
    figures_of_run = {r["name"]: r for r in result["runs"]}
    rows = [
        {
            "name": bot.name,
            **runs[bot.name],
            "bits_per_char": bits_per_char(bot, eval_set),
            **{k: figures_of_run[bot.name]["metrics"][k] for k in SHOWN},
        }
        for bot in bots
    ]
    report = {
        "what": f"fine-tune stage on {args.genre} from {args.init}, one setting per run",
        "minutes_per_run": args.minutes,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "valid_pairs": result["pairs"],
        "seed": args.seed,
        "runs": rows,
        "comparisons_with_first": [
            {k: c[k] for k in ("run", "metric", "diff", "low", "high", "p_value")}
            for c in result["comparisons"]
            if c["group"] == "all" and c["metric"] in SHOWN
        ],
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(report, indent=2))
    print(table(rows))


def table(rows: list[dict]) -> str:
    head = (
        "| run | steps | pairs/s | valid ppl | bits/char | BLEU-2 | top1 | unique | distinct-2 "
        "| length | dull (held-out) |"
    )
    lines = [head, "|---" + "|---:" * 10 + "|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['steps']:,} | {r['pairs_per_s']:.0f} "
            f"| {r['valid_perplexity']:.1f} | {r['bits_per_char']:.4f} | {r['bleu2']:.4f} "
            f"| {r['top1']:.3f} | {r['unique']:.3f} | {r['distinct2']:.3f} "
            f"| {r['length']:.2f} | {r['dull_rate']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
