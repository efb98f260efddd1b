"""Against the greedy CE bot's one reply to everything: frequency-weighted cross-entropy
(FACE-like, `--frequency-weighting`), entropy-based filtering of common replies
(`--max-reply-count`) and negative training of frequent greedy replies
(`--negative-threshold`), a margin between a reply's fit to its own input and to another's
(`--contrastive-weight`), word dropout (`--word-dropout`) and vocabulary unlikelihood
(`--vocab-unlikelihood`), each tried in the quickstart's fine-tune stage (`train ce --init`
the all-genre pretraining, on the genre, for the minutes the quickstart gives it, or
`--steps`), judged on the VALIDATION split (never test), greedy with the default 3-gram
blocking.

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

from rlchat.checkpoint import atomic_write_text

sys.path.insert(0, str(Path(__file__).parent))
from regularisation_sweep import COLUMNS as REGULARISATION_COLUMNS  # noqa: E402
from regularisation_sweep import judge_on_validation, markdown_table, train  # noqa: E402

# The quickstart's fine-tune clock under --minutes 20 (runs/experiment-comedy-final/ce).
FINETUNE_MINUTES = 1.72
SETTINGS: dict[str, list[str]] = {
    "default": [],
    "weighting-0.25": ["--frequency-weighting", "0.25"],
    "weighting-0.5": ["--frequency-weighting", "0.5"],
    "weighting-0.75": ["--frequency-weighting", "0.75"],
    "filter-10": ["--max-reply-count", "10"],
    "filter-10+weighting-0.5": ["--max-reply-count", "10", "--frequency-weighting", "0.5"],
    "negative-0.01": ["--negative-threshold", "0.01"],
    "negative-0.02": ["--negative-threshold", "0.02"],
    "negative-0.05": ["--negative-threshold", "0.05"],
    "negative-0.01-weight-3": ["--negative-threshold", "0.01", "--negative-weight", "3"],
    "lr-1e-3": ["--lr", "1e-3"],
    "lr-5e-4": ["--lr", "5e-4"],
    "lr-2.5e-4": ["--lr", "2.5e-4"],
    "lr-5e-4-repeat": ["--lr", "5e-4", "--seed", "1"],
    "negative-0.05-lr-5e-4": ["--negative-threshold", "0.05", "--lr", "5e-4"],
    "default-repeat": ["--seed", "1"],
    # The mismatched-input margin, at the quickstart's fine-tune rate (compare with lr-5e-4).
    "mismatch-0.5-m1-lr-5e-4": ["--lr", "5e-4", "--contrastive-weight", "0.5"],
    "mismatch-1-m1-lr-5e-4": ["--lr", "5e-4", "--contrastive-weight", "1"],
    "mismatch-2-m1-lr-5e-4": ["--lr", "5e-4", "--contrastive-weight", "2"],
    "mismatch-1-m0.5-lr-5e-4": [
        *["--lr", "5e-4", "--contrastive-weight", "1", "--contrastive-margin", "0.5"]
    ],
    "mismatch-1-m2-lr-5e-4": [
        *["--lr", "5e-4", "--contrastive-weight", "1", "--contrastive-margin", "2"]
    ],
    # Word dropout at the quickstart's fine-tune rate, two seeds each (greedy CE's top1 swings
    # with the moment a run stops: one run per setting cannot tell settings apart).
    **{
        f"word-dropout-{rate}-lr-5e-4{suffix}": [*["--lr", "5e-4", "--word-dropout", rate, *seed]]
        for rate in ("0.25", "0.5")
        for suffix, seed in (("", []), ("-repeat", ["--seed", "1"]))
    },
    # Vocabulary unlikelihood at the quickstart's fine-tune rate, two seeds each (Li et al.
    # 2020 tried weights 1 to 1,000).
    **{
        f"vocab-ul-{weight}-lr-5e-4{suffix}": [
            *["--lr", "5e-4", "--vocab-unlikelihood", weight, *seed]
        ]
        for weight in ("3", "10", "30", "100", "1000")
        for suffix, seed in (("", []), ("-repeat", ["--seed", "1"]))
    },
    # Weight 10 (the quickstart's) with the word-continuing pieces spared, with negative
    # training of frequent greedy replies on the same greedy rows, and with both.
    **{
        f"vocab-ul-10{variant}-lr-5e-4{suffix}": [
            *["--lr", "5e-4", "--vocab-unlikelihood", "10", *extra, *seed]
        ]
        for variant, extra in (
            ("-spare", ["--vocab-unlikelihood-spare-pieces"]),
            ("-negative-0.05", ["--negative-threshold", "0.05"]),
            (
                "-spare-negative-0.05",
                ["--vocab-unlikelihood-spare-pieces", "--negative-threshold", "0.05"],
            ),
        )
        for suffix, seed in (("", []), ("-repeat", ["--seed", "1"]))
    },
    # Weights 10 and 30 decoding a share of each batch only, to win back fine-tune steps.
    **{
        f"vocab-ul-{weight}-share-{share}-lr-5e-4{suffix}": [
            *["--lr", "5e-4", "--vocab-unlikelihood", weight],
            *["--vocab-unlikelihood-share", share, *seed],
        ]
        for weight in ("10", "30")
        for share in ("0.25", "0.5")
        for suffix, seed in (("", []), ("-repeat", ["--seed", "1"]))
    },
    # Prefix unlikelihood (how replies begin), alone and on top of vocabulary unlikelihood 10.
    **{
        f"prefix-ul-{weight}{variant}-lr-5e-4{suffix}": [
            *["--lr", "5e-4", "--prefix-unlikelihood", weight, *extra, *seed]
        ]
        for weight in ("3", "10", "30")
        for variant, extra in (("", []), ("-vocab-ul-10", ["--vocab-unlikelihood", "10"]))
        for suffix, seed in (("", []), ("-repeat", ["--seed", "1"]))
    },
    # A moving average of the weights over the swing that vocabulary unlikelihood 10 causes.
    **{
        f"vocab-ul-10-ema-{decay}-lr-5e-4{suffix}": [
            *["--lr", "5e-4", "--vocab-unlikelihood", "10", "--ema-decay", decay, *seed]
        ]
        for decay in ("0.99", "0.995")
        for suffix, seed in (("", []), ("-repeat", ["--seed", "1"]))
    },
    # A shorter window of greedy replies: the penalty then follows the model with less delay.
    **{
        f"vocab-ul-{weight}-window-{window}-lr-5e-4{suffix}": [
            *["--lr", "5e-4", "--vocab-unlikelihood", weight],
            *["--negative-window", window, *seed],
        ]
        for weight in ("10", "30")
        for window in ("250",)
        for suffix, seed in (("", []), ("-repeat", ["--seed", "1"]))
    },
    # Distilling the MMI-reranked bot (the --teacher run with --teacher-backward) into the
    # fine-tune: a share of comedy's replies become the teacher's, with and without
    # vocabulary unlikelihood 10 on top.
    **{
        f"distil-{share}{variant}-lr-5e-4{suffix}": [
            *["--lr", "5e-4", "--distil-teacher", "TEACHER", "--distil-backward", "BACKWARD"],
            *["--distil-share", share, *extra, *seed],
        ]
        for share in ("0.1", "0.25")
        for variant, extra in (("", []), ("-vocab-ul-10", ["--vocab-unlikelihood", "10"]))
        for suffix, seed in (("", []), ("-repeat", ["--seed", "1"]))
    },
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
    parser.add_argument(
        "--steps", type=int, default=0, help="stop each run at this step, not on its minutes"
    )
    parser.add_argument("--only", nargs="*", help="train only these settings")
    parser.add_argument("--pairs", type=int, default=1000, help="validation pairs (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--teacher", type=Path, help="the distil- settings' teacher run")
    parser.add_argument("--teacher-backward", type=Path, help="the teacher's backward run")
    args = parser.parse_args()
    names = args.only or list(SETTINGS)
    runs = {}
    for name in names:
        placeholders = {"TEACHER": str(args.teacher), "BACKWARD": str(args.teacher_backward)}
        setting = [placeholders.get(flag, flag) for flag in SETTINGS[name]]
        flags = ["--init", str(args.init), "--genre", args.genre, *setting]
        # Steps instead of minutes: a run beside other work then does the same training.
        minutes = args.minutes
        if args.steps:
            flags, minutes = [*flags, "--max-steps", str(args.steps)], 10 * args.minutes
        runs[name] = train(args.out / name, flags, args.corpus, minutes, args.threads)
        print(name, runs[name], flush=True)

    figures, comparisons, pairs = judge_on_validation(
        [args.out / name for name in names], args.corpus, SHOWN, args.pairs, args.seed
    )
    rows = [{"name": name, **runs[name], **figures[name]} for name in names]
    report = {
        "what": f"fine-tune stage on {args.genre} from {args.init}, one setting per run",
        "minutes_per_run": None if args.steps else args.minutes,
        "steps_per_run": args.steps or None,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__,
        "valid_pairs": pairs,
        "seed": args.seed,
        "runs": rows,
        "comparisons_with_first": comparisons,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(report, indent=2))
    print(markdown_table(rows, COLUMNS))


# The regularisation sweep's columns, with the perplexity alone in place of the loss, and the
# held-out dull rate (a weighting that only moves the mode lands on a dull line).
COLUMNS = [
    *REGULARISATION_COLUMNS[:3],
    ("valid ppl", lambda r: f"{r['valid_perplexity']:.1f}"),
    *REGULARISATION_COLUMNS[4:],
    ("dull (held-out)", lambda r: f"{r['dull_rate']:.3f}"),
]


if __name__ == "__main__":
    main()
