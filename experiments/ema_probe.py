"""Does an exponential moving average of the weights (Polyak averaging) answer fewer inputs
with one reply than the last weights do? The quickstart's fine-tune stage (comedy, from the
all-genre pretraining, lr 5e-4, the minutes it gets), one run per seed; after every step the
averages at each decay are updated from the weights (`torch.optim.swa_utils`), and at the end
the last weights and each average are judged greedily on the same VALIDATION pairs (never
test). Last weights and averages come from the same run: their difference is paired.

    python experiments/ema_probe.py --init runs/experiment-comedy-v5-seed3/pretrain \
        --minutes 1.656 --out runs/ema-probe --json docs/figures/ema_probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from unittest import mock

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from rlchat.checkpoint import TOKENIZER_FILE, atomic_write_text, save_bundle
from rlchat.config import CrossEntropyConfig, DataConfig, ModelConfig, TokenizerConfig
from rlchat.corpus import load_corpus
from rlchat.train.cross_entropy import train_cross_entropy
from rlchat.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from regularisation_sweep import judge_on_validation  # noqa: E402

SHOWN = ("bleu2", "top1", "unique", "distinct2", "length", "perplexity", "dull_rate")


def train_with_averages(
    out: Path, init: Path, corpus, minutes: float, steps: int, seed: int, decays: list[float]
) -> dict[float, AveragedModel]:
    averages: dict[float, AveragedModel] = {}
    step = Trainer.train_step

    def step_and_average(self: Trainer, examples, total_steps):
        figures = step(self, examples, total_steps)
        for decay in decays:
            if decay not in averages:
                averages[decay] = AveragedModel(
                    self.model, multi_avg_fn=get_ema_multi_avg_fn(decay)
                )
            averages[decay].update_parameters(self.model)
        return figures

    with mock.patch.object(Trainer, "train_step", step_and_average):
        train_cross_entropy(
            out=out,
            corpus=corpus,
            data_config=DataConfig(genres=["comedy"]),
            tokenizer_config=TokenizerConfig(),
            model_config=ModelConfig(),
            train_config=CrossEntropyConfig(
                epochs=100, max_minutes=minutes, max_steps=steps, seed=seed, lr=5e-4
            ),
            init=init,
            progress=False,
            tensorboard=False,
        )
    return averages


def save_average(raw: Path, target: Path, average: AveragedModel) -> None:
    """A run directory like `raw`, its best weights replaced by the average."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(raw, target)
    best = target / "best"
    config = json.loads((best / "config.json").read_text(encoding="utf-8"))
    tokenizer = (best / TOKENIZER_FILE).read_text(encoding="utf-8")
    shutil.rmtree(best)
    save_bundle(best, model=average.module, config=config, tokenizer_json=tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="../shared/data/cornell-excerpt")
    parser.add_argument("--init", type=Path, required=True, help="the all-genre CE run")
    parser.add_argument("--out", type=Path, default=Path("runs/ema-probe"))
    parser.add_argument("--minutes", type=float, default=0.0, help="per run (0 = no cap)")
    parser.add_argument(
        "--steps", type=int, default=0, help="per run (0 = no cap): stop where another run did"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--decays", type=float, nargs="+", default=[0.98, 0.99, 0.995])
    parser.add_argument("--pairs", type=int, default=1000, help="validation pairs (seeded)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (args.minutes or args.steps):
        parser.error("give --minutes or --steps")
    corpus = load_corpus(Path(args.corpus))
    runs: list[Path] = []
    for seed in args.seeds:
        raw = args.out / f"seed{seed}-last"
        if raw.exists():
            shutil.rmtree(raw)
        averages = train_with_averages(
            raw, args.init, corpus, args.minutes, args.steps, seed, args.decays
        )
        runs.append(raw)
        for decay, average in averages.items():
            runs.append(args.out / f"seed{seed}-ema{decay}")
            save_average(raw, runs[-1], average)
    figures, comparisons, pairs = judge_on_validation(runs, args.corpus, SHOWN, args.pairs, 0)
    rows = [{"name": run.name, **figures[run.name]} for run in runs]
    for row in rows:
        print(" | ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    if args.json:
        report = {
            "what": __doc__.split("\n\n")[0],
            "init": str(args.init),
            "minutes_per_run": args.minutes,
            "steps_per_run": args.steps,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__,
            "valid_pairs": pairs,
            "rows": rows,
        }
        atomic_write_text(args.json, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
