"""A quickstart run's evaluation again, on the whole test split, with the served decoding as it
is now: for a run trained before the served decoding was chosen again.

    python experiments/reevaluate.py runs/experiment-comedy-v4 \
        --json runs/experiment-comedy-v4/eval-2.json
    python experiments/reevaluate.py runs/experiment-comedy-v5 --split valid \
        --json runs/experiment-comedy-v5/eval-valid.json   # to compare recipes

The training stages are read, never run; the run's own eval.json is left as it is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlchat.checkpoint import atomic_write_text
from rlchat.corpus import load_corpus
from rlchat.quickstart import QuickstartPlan, evaluate_quickstart_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the quickstart's --out")
    parser.add_argument("--corpus", type=Path, default=Path("../shared/data/cornell-excerpt"))
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--split", choices=("valid", "test"), default="test")
    args = parser.parse_args()
    corpus = load_corpus(args.corpus)
    # The evaluation reads the genres and the split from the CE run itself.
    plan = QuickstartPlan(out=args.out, genres=[], minutes=0, progress=False)
    atomic_write_text(
        args.json, json.dumps(evaluate_quickstart_runs(plan, corpus, split=args.split), indent=2)
    )


if __name__ == "__main__":
    main()
