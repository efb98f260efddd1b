"""The headline table of an evaluation (`rlchat eval --out`, a quickstart's eval.json) as
Markdown: one row per system, the figures people compare, then the differences.

    python experiments/headline_table.py runs/experiment-comedy/eval.json [--group unseen]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlchat.report import is_significant, p_value_of

FIGURES = (
    ("bleu2", "BLEU-2", 4),
    ("sacrebleu", "sacreBLEU", 2),
    ("perplexity", "perplexity", 1),
    ("top1", "top1", 3),
    ("unique", "unique", 3),
    ("entropy", "entropy (bits)", 2),
    ("distinct2", "distinct-2", 3),
    ("length", "length", 2),
    ("dull_rate", "dull (held-out)", 3),
    ("stock_rate", "stock rate", 3),
    ("nonword_rate", "non-words", 3),
    ("selfplay_turns", "self-play", 2),
)


def cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_json", type=Path)
    parser.add_argument("--group", default="all", choices=["all", "unseen"])
    args = parser.parse_args()
    result = json.loads(args.eval_json.read_text(encoding="utf-8"))
    key = "metrics" if args.group == "all" else "unseen"
    print("| system | " + " | ".join(title for _, title, _ in FIGURES) + " |")
    print("|---" + "|---:" * len(FIGURES) + "|")
    for run in result["runs"]:
        figures = run[key]
        cells = [cell(figures.get(name), digits) for name, _, digits in FIGURES]
        print(f"| {run['name']} | " + " | ".join(cells) + " |")
    print()
    digits = dict((name, d) for name, _, d in FIGURES)
    for row in result["comparisons"]:
        if row["group"] != args.group or row["metric"] not in digits:
            continue
        d = digits[row["metric"]]
        mark = " *" if is_significant(row) else ""
        print(
            f"- {row['run']} − {row['baseline']}, {row['metric']}: {row['diff']:+.{d}f} "
            f"[{row['low']:+.{d}f}, {row['high']:+.{d}f}]{mark} (p = {p_value_of(row):.3f})"
        )


if __name__ == "__main__":
    main()
