"""The issue's figures over several draws of one recipe (quickstart runs that differ only in
`--seed`): each figure met or missed per draw, and in how many draws it was met.

    python experiments/recipe_draws.py runs/experiment-comedy-v4/eval.json \
        runs/experiment-comedy-seed1/eval.json runs/experiment-comedy-seed2/eval.json

One run is one draw of the training: a figure that holds in one draw and not the next is a
rate, not a property of the recipe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlchat.report import is_significant

CE, RL, SERVED = "ce", "rl", "rl+mmi"
# Figures of the replies alone that no reward is trained on, higher better unless listed.
NO_REWARD = ("top1", "unique", "entropy", "distinct1", "distinct2", "dull_rate", "selfplay_turns")
LOWER_IS_BETTER = {
    "top1",
    "dull_rate",
    "stock_rate",
    "repetition_rate",
    "nonword_rate",
    "perplexity",
}
NO_DIRECTION = {"length"}


def comparison(result: dict, run: str, baseline: str, metric: str) -> dict | None:
    for row in result["comparisons"]:
        if (row["run"], row["baseline"], row["group"], row["metric"]) == (
            run,
            baseline,
            "all",
            metric,
        ):
            return row
    return None


def better_clear_of_zero(row: dict | None, metric: str) -> bool:
    """The run beats the baseline significantly: the interval excludes zero and the
    p-value (the larger of the randomisation's and the interval's) is under 0.05, as the
    evaluation calls a difference. The interval alone is not enough: an interval just clear
    of zero can stand beside a randomisation p of 0.13."""
    if row is None or not is_significant(row):
        return False
    return row["high"] < 0 if metric in LOWER_IS_BETTER else row["low"] > 0


def interval(row: dict | None) -> str:
    if row is None:
        return "—"
    mark = " *" if (row["low"] > 0 or row["high"] < 0) and is_significant(row) else ""
    return (
        f"{row['diff']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}]{mark} (p {row['p_value']:.3f})"
    )


def worse_than(result: dict, run: str, baseline: str) -> list[str]:
    """The figures on which `run` is worse than `baseline`, interval clear of zero."""
    return [
        row["metric"]
        for row in result["comparisons"]
        if (row["run"], row["baseline"], row["group"]) == (run, baseline, "all")
        and row["metric"] not in NO_DIRECTION
        and better_clear_of_zero(
            {**row, "diff": -row["diff"], "low": -row["high"], "high": -row["low"]}, row["metric"]
        )
    ]


def draw_figures(result: dict) -> dict[str, tuple[str, bool | None]]:
    """Each figure of one draw: (what to print, met?); None where there is no goal."""
    metrics = {run["name"]: run["metrics"] for run in result["runs"]}
    served, ce = metrics[SERVED], metrics[CE]
    over_retrieval = comparison(result, SERVED, "retrieval", "bleu2")
    over_random = comparison(result, SERVED, "random", "bleu2")
    rl_bleu = comparison(result, RL, CE, "bleu2")
    no_reward = [
        metric
        for metric in NO_REWARD
        if better_clear_of_zero(comparison(result, RL, CE, metric), metric)
    ]
    figures: dict[str, tuple[str, bool | None]] = {
        "served BLEU-2 − retrieval": (
            interval(over_retrieval),
            better_clear_of_zero(over_retrieval, "bleu2"),
        ),
        "served BLEU-2 − random": (
            interval(over_random),
            better_clear_of_zero(over_random, "bleu2"),
        ),
        "served top1 ≤ 0.02": (f"{served['top1']:.3f}", served["top1"] <= 0.02),
        "served unique ≥ 0.6": (f"{served['unique']:.3f}", served["unique"] >= 0.6),
        "served distinct-2 ≥ 0.15": (f"{served['distinct2']:.3f}", served["distinct2"] >= 0.15),
        "CE top1 ≤ 0.05": (f"{ce['top1']:.3f}", ce["top1"] <= 0.05),
        "RL − CE BLEU-2": (interval(rl_bleu), better_clear_of_zero(rl_bleu, "bleu2")),
        "RL better than CE, no reward on it": (", ".join(no_reward) or "none", bool(no_reward)),
        "RL worse than CE": (", ".join(worse_than(result, RL, CE)) or "none", None),
        "served worse than retrieval": (
            ", ".join(worse_than(result, SERVED, "retrieval")) or "none",
            None,
        ),
    }
    if "nonword_rate" in served:
        reference = metrics["reference"]["nonword_rate"]
        figures["served non-words (reference)"] = (
            f"{served['nonword_rate']:.3f} ({reference:.3f})",
            None,
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_json", type=Path, nargs="+")
    args = parser.parse_args()
    draws = [draw_figures(json.loads(path.read_text(encoding="utf-8"))) for path in args.eval_json]
    names = [path.parent.name for path in args.eval_json]
    print("| figure | " + " | ".join(names) + " | met in |")
    print("|---" * (len(names) + 2) + "|")
    for figure in draws[0]:
        cells = [draw.get(figure, ("—", None)) for draw in draws]
        goal = [met for _, met in cells if met is not None]
        count = f"{sum(goal)} of {len(goal)}" if goal else ""
        shown = [text + (" ✓" if met else "" if met is None else " ✗") for text, met in cells]
        print(f"| {figure} | " + " | ".join(shown) + f" | {count} |")


if __name__ == "__main__":
    main()
