"""How greedy CE's commonest reply moves during the genre fine-tune: the quickstart's
fine-tune (vocabulary unlikelihood 10, lr 5e-4) for a fixed number of steps, a checkpoint and a
validation every `--every` steps, then each checkpoint's greedy top1 on seeded VALIDATION
inputs (never test), beside its validation loss.

    python experiments/finetune_top1_path.py \
        --init runs/experiment-comedy-v5-vul10-seed11/pretrain --out runs/top1-path-seed0 \
        --seed 0 --json docs/figures/finetune_top1_path_seed0.json

The question it answers: is the CE bot's top1 a property of the recipe, or of the step the
fine-tune's budget happens to end on?
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch

from rlchat.chatbot import Chatbot
from rlchat.checkpoint import atomic_write_text
from rlchat.config import DecodeConfig
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset


def fine_tune(args: argparse.Namespace) -> None:
    if (args.out / "checkpoints" / f"step-{args.steps:08d}").is_dir():
        return  # trained already: judge its checkpoints again
    subprocess.run(["rm", "-rf", str(args.out)], check=True)
    rlchat = str(Path(sys.executable).with_name("rlchat"))
    command = [
        rlchat, "train", "ce", "--corpus", str(args.corpus), "--init", str(args.init),
        "--out", str(args.out), "--genre", "comedy", "--lr", "5e-4",
        "--vocab-unlikelihood", "10", "--max-steps", str(args.steps), "--epochs", "100",
        "--checkpoint-every", str(args.every), "--eval-every", str(args.every),
        "--keep-checkpoints", "1000", "--seed", str(args.seed), "--no-progress",
    ]  # fmt: skip
    subprocess.run(command, check=True)


def validation_losses(out: Path) -> dict[int, float]:
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return {m["step"]: m["valid/loss"] for m in map(json.loads, lines) if "valid/loss" in m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init", type=Path, required=True, help="the pretraining run")
    parser.add_argument("--out", type=Path, required=True, help="the fine-tune's run")
    parser.add_argument("--corpus", type=Path, default=Path("../shared/data/cornell-excerpt"))
    parser.add_argument("--seed", type=int, default=0, help="the fine-tune's seed")
    parser.add_argument("--steps", type=int, default=330, help="what the quickstart reaches")
    parser.add_argument("--every", type=int, default=30, help="steps between checkpoints")
    parser.add_argument("--pairs", type=int, default=1000, help="validation inputs decoded")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the path here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fine_tune(args)
    first = Chatbot.load(args.out)
    dataset = prepare_dataset(
        load_corpus(args.corpus),
        first.data_config,
        first.tokenizer_config,
        tokenizer=first.tokenizer,
    )
    valid = dataset.pairs()["valid"]
    random.Random(0).shuffle(valid)
    valid = valid[: args.pairs]
    losses = validation_losses(args.out)
    rows = []
    for checkpoint in sorted((args.out / "checkpoints").iterdir()):
        bot = Chatbot.load(checkpoint)
        replies: list[str] = []
        for start in range(0, len(valid), 250):
            chunk = [p.source for p in valid[start : start + 250]]
            replies += bot.reply_batch(chunk, config=DecodeConfig())
        counts = Counter(replies)
        mode, count = counts.most_common(1)[0]
        step = int(checkpoint.name.split("-")[1])
        row = {
            "step": step,
            "valid_loss": losses.get(step),
            "top1": count / len(replies),
            "unique": len(counts) / len(replies),
            "mode": mode,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        summary = {"init": str(args.init), "seed": args.seed, "pairs": len(valid), "path": rows}
        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
