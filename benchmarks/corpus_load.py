"""Corpus loading: parse time, pair extraction time and peak memory of `load_corpus`.

    python benchmarks/corpus_load.py --corpus ../shared/data/cornell-excerpt

Each repeat runs in a fresh spawned process, so its peak RSS (``ru_maxrss``) is the parse's
own and not inflated by an earlier repeat; times are the median over repeats. Goals from the
issue: parse under 3 s, peak memory under 1 GB.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "cornell-excerpt"
PARSE_GOAL_S = 3.0
RSS_GOAL_BYTES = 10**9


def peak_rss_bytes() -> int:
    """Peak resident set size of this process; Linux reports KiB, macOS bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def measure_once(corpus_dir: Path) -> dict[str, float]:
    """One parse and one pair extraction, in the calling (fresh) process."""
    from rlchat.corpus import load_corpus

    before = peak_rss_bytes()
    start = time.perf_counter()
    corpus = load_corpus(corpus_dir)
    parsed = time.perf_counter()
    pairs = corpus.pairs()
    extracted = time.perf_counter()
    return {
        "parse_s": parsed - start,
        "pairs_s": extracted - parsed,
        "rss_before_bytes": before,
        "peak_rss_bytes": peak_rss_bytes(),
        "movies": len(corpus.movies),
        "lines": len(corpus.lines),
        "conversations": len(corpus.conversations),
        "pairs": len(pairs),
    }


def measure(corpus_dir: Path, repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            runs.append(pool.submit(measure_once, corpus_dir).result())
    return {
        **{k: runs[0][k] for k in ("movies", "lines", "conversations", "pairs")},
        "repeats": repeats,
        "parse_s": statistics.median(r["parse_s"] for r in runs),
        "pairs_s": statistics.median(r["pairs_s"] for r in runs),
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
        "rss_growth_bytes": max(r["peak_rss_bytes"] - r["rss_before_bytes"] for r in runs),
    }


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def print_table(corpus_dir: Path, result: dict[str, float]) -> None:
    mib = 2**20
    rows = [
        (
            "parse (load_corpus), median",
            f"{result['parse_s']:.2f} s",
            f"< {PARSE_GOAL_S:.0f} s  {verdict(result['parse_s'] < PARSE_GOAL_S)}",
        ),
        ("pair extraction, median", f"{result['pairs_s']:.2f} s", ""),
        (
            "peak RSS of the process",
            f"{result['peak_rss_bytes'] / mib:.0f} MiB",
            f"< 1 GB  {verdict(result['peak_rss_bytes'] < RSS_GOAL_BYTES)}",
        ),
        ("RSS growth during the work", f"{result['rss_growth_bytes'] / mib:.0f} MiB", ""),
    ]
    print(
        f"corpus {corpus_dir}: {result['movies']} movies, {result['lines']} lines, "
        f"{result['conversations']} conversations, {result['pairs']} pairs"
    )
    print(f"{'measure':28s} {'value':>9s}   goal")
    for name, value, goal in rows:
        print(f"{name:28s} {value:>9s}   {goal}".rstrip())
    print(f"{result['repeats']} fresh processes; {platform.machine()} {platform.system()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="corpus directory (four Cornell files)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes to time")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    result = measure(args.corpus, args.repeats)
    if args.json:
        print(json.dumps({"corpus": str(args.corpus), **result}, indent=2))
    else:
        print_table(args.corpus, result)


if __name__ == "__main__":
    main()
