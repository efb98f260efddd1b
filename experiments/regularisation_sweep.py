"""Regularisation at the quickstart's budget: dropout, label smoothing, batch size and
vocabulary size, one axis at a time around the defaults, each run the quickstart's
pretraining stage (CE on every genre, its model shape) for the same wall-clock minutes,
judged on the VALIDATION split (never test).

    python experiments/regularisation_sweep.py --corpus ../shared/data/cornell-excerpt \
        --out runs/regularisation-sweep --json docs/figures/regularisation_sweep.json

Without --minutes each run gets the minutes `rlchat quickstart --minutes 20` gives its
pretraining clock (`stage_budget` before the training speed is known, less the stage's
setup). Runs are sequential, on one thread each (OMP_NUM_THREADS=1), so that they compete
for the same CPU; the default runs first and last (with another seed) to measure the noise
of a run, and load drift shows in its pairs/s. Each run trains its own tokenizer.

Every run is then decoded greedily on the same seeded validation pairs (those the default's
tokenizer keeps). Perplexity is per token, and a token is a different unit under another
vocabulary, so the runs are also compared in bits per character of the references
(-log2 p(reply | input), <eos> included, over the reply's characters plus one).
Finished runs are kept (a summary.json in each): re-running the script only evaluates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from rlchat.chatbot import Chatbot
from rlchat.checkpoint import atomic_write_text
from rlchat.config import CrossEntropyConfig, ModelConfig, TokenizerConfig
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.evaluation import evaluate_runs, split_eval_set
from rlchat.quickstart import STAGE_SETUP_MINUTES, eval_plan, stage_budget
from rlchat.scoring import target_log_likelihood
from rlchat.text import normalize_text

QUICKSTART_MINUTES = 20.0
D = ModelConfig().dropout
S = CrossEntropyConfig().label_smoothing
B = CrossEntropyConfig().batch_size
V = TokenizerConfig().vocab_size
# name -> (axis, flags); the default first and last, every other setting between.
SETTINGS: dict[str, tuple[str, list[str]]] = {
    "default": ("default", []),
    "dropout-0": ("dropout", ["--dropout", "0"]),
    "dropout-0.3": ("dropout", ["--dropout", "0.3"]),
    "smoothing-0.1": ("label smoothing", ["--label-smoothing", "0.1"]),
    "smoothing-0.2": ("label smoothing", ["--label-smoothing", "0.2"]),
    f"batch-{B // 2}": ("batch size", ["--batch-size", str(B // 2)]),
    f"batch-{B * 2}": ("batch size", ["--batch-size", str(B * 2)]),
    f"vocab-{V // 2}": ("vocabulary", ["--vocab-size", str(V // 2)]),
    f"vocab-{V * 2}": ("vocabulary", ["--vocab-size", str(V * 2)]),
    "default-repeat": ("default", ["--seed", "1"]),
}
SHOWN = ("bleu2", "top1", "unique", "distinct2", "length", "perplexity")


def pretrain_minutes() -> float:
    """The minutes the quickstart's pretraining clock gets under --minutes 20 (its budget
    before the training speed is known, less the stage's data preparation)."""
    reserve = eval_plan(QUICKSTART_MINUTES, None, 0).minutes
    return stage_budget("pretrain", QUICKSTART_MINUTES, reserve, set()) - STAGE_SETUP_MINUTES


def train(run: Path, flags: list[str], corpus: str, minutes: float, threads: int = 1) -> dict:
    """One training run on `threads` threads; its steps, speed and best validation loss."""
    summary_path = run / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text(encoding="utf-8"))
    if run.exists():
        subprocess.run(["rm", "-rf", str(run)], check=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [
        str(Path(sys.executable).with_name("rlchat")), "train", "ce", "--corpus", corpus,
        "--out", str(run), "--epochs", "100", "--max-minutes", f"{minutes:.3f}",
        "--no-progress", *flags,
    ]  # fmt: skip
    print(" ".join(command), flush=True)
    started = time.time()
    subprocess.run(command, check=True, env=env)
    wall = time.time() - started
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [m for m in lines if "valid/loss" in m]
    speed = [m["ce/pairs_per_s"] for m in lines if "ce/pairs_per_s" in m]
    config = json.loads((run / "run.json").read_text(encoding="utf-8"))
    best = min(valid, key=lambda m: m["valid/loss"])
    summary = {
        "flags": flags,
        "steps": max(m["step"] for m in lines),
        "pairs_seen": max(m["step"] for m in lines) * config["train"]["batch_size"],
        "pairs_per_s": speed[-1] if speed else None,
        "validations": len(valid),
        "best_step": best["step"],
        "valid_loss": best["valid/loss"],
        "valid_perplexity": best["valid/perplexity"],
        "wall_s": wall,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_text(summary_path, json.dumps(summary, indent=2))
    return summary


def bits_per_char(bot: Chatbot, eval_set) -> float:
    """-log2 p(reference | input) per character of the references (+1 each for the end), the
    whole reply scored whatever its length in this bot's tokens."""
    sources = [bot.encode_input(p.source, p.history) for p in eval_set.pairs]
    targets = [bot.tokenizer.encode(p.reply) for p in eval_set.pairs]
    sums, _ = target_log_likelihood(bot.model, sources, targets, bot.device)
    chars = sum(len(normalize_text(p.reply)) + 1 for p in eval_set.pairs)
    return -float(sums.double().sum()) / math.log(2) / chars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="../shared/data/cornell-excerpt")
    parser.add_argument("--out", type=Path, default=Path("runs/regularisation-sweep"))
    parser.add_argument("--minutes", type=float, default=0.0, help="per run (0 = quickstart's)")
    parser.add_argument("--pairs", type=int, default=1000, help="validation pairs (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    minutes = args.minutes or pretrain_minutes()
    print(f"{len(SETTINGS)} runs of {minutes:.2f} min (quickstart's: {pretrain_minutes():.2f})")
    runs = {}
    for name, (_, flags) in SETTINGS.items():
        runs[name] = train(args.out / name, flags, args.corpus, minutes)
        print(name, runs[name], flush=True)

    figures, comparisons, pairs = judge_on_validation(
        [args.out / name for name in SETTINGS], args.corpus, SHOWN, args.pairs, args.seed
    )
    rows = [
        {"name": name, "axis": SETTINGS[name][0], **runs[name], **figures[name]}
        for name in SETTINGS
    ]
    report = {
        "what": "quickstart pretraining stage (CE, all genres), one setting changed per run",
        "minutes_per_run": minutes,
        "quickstart_pretrain_minutes": pretrain_minutes(),
        "threads": 1,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "valid_pairs": pairs,
        "seed": args.seed,
        "defaults": {"dropout": D, "label_smoothing": S, "batch_size": B, "vocab_size": V},
        "runs": rows,
        "comparisons_with_default": comparisons,
    }
    a, b = rows[0], rows[-1]
    report["noise"] = {
        k: abs(a[k] - b[k]) for k in ("valid_loss", "bits_per_char", "pairs_per_s", *SHOWN)
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(report, indent=2))
    print(markdown_table(rows, COLUMNS))


COLUMNS: list[tuple[str, Callable[[dict], str]]] = [
    ("run", lambda r: r["name"]),
    ("steps", lambda r: f"{r['steps']:,}"),
    ("pairs/s", lambda r: f"{r['pairs_per_s']:.0f}"),
    ("valid loss (ppl)", lambda r: f"{r['valid_loss']:.3f} ({r['valid_perplexity']:.1f})"),
    ("bits/char", lambda r: f"{r['bits_per_char']:.4f}"),
    ("BLEU-2", lambda r: f"{r['bleu2']:.4f}"),
    ("top1", lambda r: f"{r['top1']:.3f}"),
    ("unique", lambda r: f"{r['unique']:.3f}"),
    ("distinct-2", lambda r: f"{r['distinct2']:.3f}"),
    ("length", lambda r: f"{r['length']:.2f}"),
]


def judge_on_validation(
    runs: list[Path], corpus: str, shown: Sequence[str], pairs: int, seed: int
) -> tuple[dict[str, dict], list[dict], int]:
    """Each run decoded greedily on the same seeded validation pairs (those the first run's
    tokenizer keeps): its `shown` figures and bits per character by run name, the
    comparisons of every run with the first, and the number of pairs."""
    bots = [Chatbot.load(run, device="cpu") for run in runs]
    first = bots[0]
    dataset = prepare_dataset(
        load_corpus(Path(corpus)),
        first.data_config,
        first.tokenizer_config,
        tokenizer=first.tokenizer,
    )
    splits = dataset.pairs()
    result = evaluate_runs(bots, splits, split="valid", baselines=(), max_pairs=pairs, seed=seed)
    eval_set = split_eval_set(splits, "valid", max_pairs=pairs, seed=seed)
    metrics = {r["name"]: r["metrics"] for r in result["runs"]}  # also holds the references
    figures = {
        bot.name: {
            "bits_per_char": bits_per_char(bot, eval_set),
            **{k: metrics[bot.name][k] for k in shown},
        }
        for bot in bots
    }
    comparisons = [
        {k: c[k] for k in ("run", "metric", "diff", "low", "high", "p_value")}
        for c in result["comparisons"]
        if c["group"] == "all" and c["metric"] in shown
    ]
    return figures, comparisons, result["pairs"]


def markdown_table(rows: list[dict], columns: list[tuple[str, Callable[[dict], str]]]) -> str:
    lines = [
        "| " + " | ".join(head for head, _ in columns) + " |",
        "|---" + "|---:" * (len(columns) - 1) + "|",
    ]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
