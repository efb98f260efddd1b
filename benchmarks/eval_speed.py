"""How long `rlchat eval` takes, phase by phase: runs plus both baselines on a test split.

    python benchmarks/eval_speed.py --runs runs/quickstart/ce runs/quickstart/rl \
        --corpus ../shared/data/cornell-excerpt

Reports seconds per phase (decoding, overlap figures, reward, perplexity, self-play, the
randomisation test) and each phase's share, so the figure carries over between machines:
decoding the replies is the floor, the test should be a small share of the whole.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from rlchat.chatbot import Chatbot
from rlchat.config import MMI_DECODING, DecodeConfig
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.evaluation import DecodedBot, evaluate_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True)
    parser.add_argument("--corpus", default="../shared/data/cornell-excerpt")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--split", default="test")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--backward",
        type=Path,
        help="backward run: also the last run with the served MMI decoding, as the quickstart",
    )
    args = parser.parse_args()

    corpus = load_corpus(Path(args.corpus))
    bots = [Chatbot.load(path, device=args.device) for path in args.runs]
    if args.backward is not None:
        served = Chatbot.load(args.runs[-1], device=args.device, backward=args.backward)
        bots.append(DecodedBot(served, replace(DecodeConfig(), **MMI_DECODING), "served"))
    started = time.perf_counter()
    dataset = prepare_dataset(
        corpus, bots[0].data_config, bots[0].tokenizer_config, tokenizer=bots[0].tokenizer
    )
    splits = dataset.pairs()
    prepare_s = time.perf_counter() - started
    started = time.perf_counter()
    result = evaluate_runs(bots, splits, split=args.split, resamples=args.resamples)
    total = time.perf_counter() - started
    phases = {"prepare pairs": prepare_s, **result["seconds"]}
    whole = prepare_s + total
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.platform()}",
        "pairs": result["pairs"],
        "systems": [run["name"] for run in result["runs"]],
        "resamples": args.resamples,
        "comparisons": len(result["comparisons"]),
        "seconds_total": round(whole, 1),
        "seconds": {phase: round(value, 2) for phase, value in phases.items()},
        "share": {phase: round(value / whole, 3) for phase, value in phases.items()},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
