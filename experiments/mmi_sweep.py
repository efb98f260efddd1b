"""Which MMI reranking settings (form, weight, length bonus, candidates, their source) to make
the defaults: measured on the VALIDATION split, never on test.

    python experiments/mmi_sweep.py --run runs/quickstart/rl --backward runs/quickstart/backward \
        --corpus ../shared/data/cornell-excerpt --json docs/figures/mmi_sweep.json

Candidates are decoded once per source (nucleus samples, beam search's N best) and scored
once by both models, as the chatbot does (`Chatbot.mmi_candidates`); each setting then only
recombines the scores (`rlchat.rerank.mmi_combine`), so the grid is cheap.
The chosen setting is the one with the best BLEU-2 among those that meet the diversity goals
(top1 <= 2%, unique >= 0.6, distinct-2 >= 0.15) and say no more words that no training line
holds than the held-out replies themselves (`--max-nonwords`: subword garble such as
"finisheding" is variety to BLEU and distinct-2); greedy decoding and the retrieval baseline
are measured on the same pairs beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from rlchat.baselines import RetrievalBot
from rlchat.chatbot import Chatbot
from rlchat.checkpoint import atomic_write_text
from rlchat.config import DecodeConfig
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.evaluation import figures_of, reference_result, split_eval_set, text_result
from rlchat.rerank import mmi_combine

SOURCES = {
    "sample p0.7 T1.0": DecodeConfig(strategy="sample", top_p=0.7),
    "sample p0.75 T1.0": DecodeConfig(strategy="sample", top_p=0.75),
    "sample p0.8 T1.0": DecodeConfig(strategy="sample", top_p=0.8),
    "sample p0.85 T1.0": DecodeConfig(strategy="sample", top_p=0.85),
    "sample p0.9 T0.8": DecodeConfig(strategy="sample", top_p=0.9, temperature=0.8),
    "sample p0.9 T1.0": DecodeConfig(strategy="sample", top_p=0.9),
    "sample p0.95 T0.8": DecodeConfig(strategy="sample", top_p=0.95, temperature=0.8),
    "sample p0.95 T1.0": DecodeConfig(strategy="sample", top_p=0.95),
    "sample p1.0 T1.0": DecodeConfig(strategy="sample"),
    "beam": DecodeConfig(strategy="beam", beam_size=10, length_penalty=0.0),
}
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
LENGTHS = (0.0, 0.05, 0.1, 0.15, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7)
CANDIDATES = (3, 5, 8, 10)
SHOWN = (
    "bleu2",
    "sacrebleu",
    "top1",
    "unique",
    "entropy",
    "distinct2",
    "length",
    "dull_rate",
    "nonword_rate",
)
GOALS = {"top1": (0.02, "max"), "unique": (0.6, "min"), "distinct2": (0.15, "min")}
SETTING = ("source", "candidates", "form", "weight", "length_bonus")


def meets_goals(
    figures: dict[str, float], max_top1: float = GOALS["top1"][0], max_nonwords: float = 1.0
) -> bool:
    bounds = {**GOALS, "top1": (max_top1, "max")}
    if max_nonwords < 1.0:
        bounds["nonword_rate"] = (max_nonwords, "max")
    return all(
        figures[name] <= bound if kind == "max" else figures[name] >= bound
        for name, (bound, kind) in bounds.items()
    )


def nonword_bound(report: dict, max_nonwords: str) -> float:
    """``reference``: no more replies with a word the training lines lack than the held-out
    replies themselves have (names, rare words); a number: that share; ``any``: no bound."""
    if max_nonwords == "any":
        return 1.0
    if max_nonwords == "reference":
        if "reference" not in report:
            raise SystemExit(
                f"the sweep of {report['run']} has no non-word figures: run it again, or "
                "pass --max-nonwords any"
            )
        return report["reference"]["nonword_rate"]
    return float(max_nonwords)


def join_runs(reports: list[dict]) -> list[dict]:
    """Sweeps of the same run joined into one report (a later sweep's row replaces an
    earlier one of the same setting): a grid can be extended without decoding it again."""
    joined: dict[str, dict] = {}
    for report in reports:
        if report["run"] not in joined:
            joined[report["run"]] = {**report, "rows": list(report["rows"])}
            continue
        base = joined[report["run"]]
        new = {tuple(r.get(k) for k in ("system", *SETTING)) for r in report["rows"]}
        kept = [r for r in base["rows"] if tuple(r.get(k) for k in ("system", *SETTING)) not in new]
        base["rows"] = kept + report["rows"]
    return list(joined.values())


def choose(reports: list[dict], max_top1: float, max_nonwords: str = "any") -> dict:
    """The setting with the best mean BLEU-2 among those meeting the goals, with top1 at most
    `max_top1` and non-words within `max_nonwords` (`nonword_bound`), in every report (each a
    run of the same recipe): one run is one draw of the training, and a default must hold
    for the next."""
    bounds = [nonword_bound(report, max_nonwords) for report in reports]
    by_setting: dict[tuple, list[dict]] = {}
    for report in reports:
        for row in report["rows"]:
            if row["system"] == "mmi":
                by_setting.setdefault(tuple(row[k] for k in SETTING), []).append(row)
    complete = {k: rows for k, rows in by_setting.items() if len(rows) == len(reports)}
    passing = {
        k: rows
        for k, rows in complete.items()
        if all(meets_goals(r, max_top1, b) for r, b in zip(rows, bounds, strict=True))
    }
    key = max(passing or complete, key=lambda k: sum(r["bleu2"] for r in complete[k]))
    rows = complete[key]
    return {
        **dict(zip(SETTING, key, strict=True)),
        "meets_goals_in_every_run": key in passing,
        "settings_meeting_goals": len(passing),
        "max_top1": max_top1,
        "max_nonwords": dict(zip((str(r["run"]) for r in reports), bounds, strict=True)),
        **{
            f"mean_{k}": round(sum(r[k] for r in rows) / len(rows), 4)
            for k in SHOWN
            if k in rows[0]
        },
        "per_run": [{k: r[k] for k in SHOWN if k in r} for r in rows],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--backward", type=Path)
    parser.add_argument("--sources", nargs="+", choices=list(SOURCES), default=list(SOURCES))
    parser.add_argument(
        "--choose-from", nargs="+", type=Path, help="pick one setting from these sweeps' JSON"
    )
    parser.add_argument("--lengths", type=float, nargs="+", default=list(LENGTHS))
    parser.add_argument("--max-top1", type=float, default=GOALS["top1"][0])
    parser.add_argument(
        "--max-nonwords",
        default="reference",
        help="bound on replies with a word no training line holds: reference (the held-out "
        "replies' own share), a number, or any",
    )
    parser.add_argument("--corpus", default="../shared/data/cornell-excerpt")
    parser.add_argument("--pairs", type=int, default=1000, help="validation pairs (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.choose_from:
        reports = join_runs([json.loads(p.read_text(encoding="utf-8")) for p in args.choose_from])
        chosen = choose(reports, args.max_top1, args.max_nonwords)
        print(json.dumps(chosen, indent=2))
        if args.json:
            atomic_write_text(
                args.json,
                json.dumps(
                    {"from": [str(p) for p in args.choose_from], "chosen": chosen}, indent=2
                ),
            )
        return
    if args.run is None or args.backward is None:
        parser.error("--run and --backward are required (or --choose-from)")

    started = time.perf_counter()
    bot = Chatbot.load(args.run, device="cpu", backward=args.backward)
    corpus = load_corpus(Path(args.corpus))
    dataset = prepare_dataset(
        corpus, bot.data_config, bot.tokenizer_config, tokenizer=bot.tokenizer
    )
    splits = dataset.pairs()
    eval_set = split_eval_set(splits, "valid", max_pairs=args.pairs, seed=args.seed)
    messages = [p.source for p in eval_set.pairs]
    sources = [bot.encode_input(p.source, p.history) for p in eval_set.pairs]

    def figures(name: str, replies: list[str]) -> dict[str, float]:
        result = figures_of(text_result(bot, replies, eval_set), eval_set, "all")
        return {k: round(result[k], 4) for k in SHOWN}

    held_out = figures_of(reference_result(eval_set), eval_set, "all")
    reference = {k: round(v, 4) for k, v in held_out.items() if k in SHOWN}
    rows = [{"system": "greedy", **figures("greedy", bot.reply_batch(messages))}]
    retrieval = RetrievalBot(splits["train"])
    rows.append({"system": "retrieval", **figures("retrieval", retrieval.reply_batch(messages))})
    n_max = max(CANDIDATES)
    for source_name in args.sources:
        source = SOURCES[source_name]
        decoding = replace(source, rerank="mmi", candidates=n_max)
        generator = torch.Generator().manual_seed(args.seed)
        # Decoded and scored once by both models; each setting only recombines the scores.
        candidates, forward, backward = bot.mmi_candidates(messages, sources, decoding, generator)
        lengths = torch.as_tensor([len(c) for c in candidates])
        texts = bot.tokenizer.decode_batch(candidates)
        grid = itertools.product(CANDIDATES, ("mean", "sum"), WEIGHTS, args.lengths)
        for n, form, weight, length in grid:
            setting = replace(decoding, mmi_form=form, mmi_weight=weight, mmi_length=length)
            score = mmi_combine(forward, backward, lengths, setting).view(-1, n_max)[:, :n]
            best = score.argmax(dim=1) + torch.arange(score.size(0)) * n_max
            replies = [" ".join(texts[i].split()) for i in best.tolist()]
            rows.append(
                {
                    "system": "mmi",
                    "source": source_name,
                    "candidates": n,
                    "form": form,
                    "weight": weight,
                    "length_bonus": length,
                    **figures("mmi", replies),
                }
            )
    mmi = [r for r in rows if r["system"] == "mmi"]
    bound = nonword_bound({"reference": reference}, args.max_nonwords)
    passing = [r for r in mmi if meets_goals(r, args.max_top1, bound)]
    chosen = max(passing or mmi, key=lambda r: r["bleu2"])
    report = {
        "machine": f"{platform.machine()}, {platform.processor() or platform.platform()}",
        "run": str(args.run),
        "backward": str(args.backward),
        "split": "valid",
        "pairs": len(eval_set.pairs),
        "goals": GOALS,
        "reference": reference,
        "settings_meeting_goals": len(passing),
        "chosen": chosen,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    header = ["source", "candidates", "form", "weight", "length_bonus", *SHOWN]
    print(" | ".join(header))
    for row in sorted(rows, key=lambda r: -r["bleu2"])[:40] + rows[:2]:
        print(" | ".join(str(row.get(k, row["system"] if k == "source" else "")) for k in header))
    print("chosen:", json.dumps(chosen))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
