"""Reply latency: p50/p95 of one reply for greedy, beam 5 and nucleus sampling; batched replies/s;
with --backward, MMI reranking of 10 candidates against greedy, as a ratio in the same run.

    python benchmarks/decode_latency.py                  # random weights, default ModelConfig
    python benchmarks/decode_latency.py --run runs/comedy --corpus ../shared/data/cornell-excerpt

Every reply is timed end to end through `rlchat.decoding.generate` with a batch of one (what
the chat and the server do per message), after warm-up calls. Without `--run` the model has
random weights; such a model rarely emits <eos>, so its replies run to `max_tokens` and the
figures are close to the worst case. The mean reply length is printed beside each figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from rlchat.chatbot import Chatbot
from rlchat.config import MMI_DECODING, DecodeConfig, ModelConfig
from rlchat.corpus import load_corpus
from rlchat.decoding import generate
from rlchat.model import Seq2Seq, StepWeights
from rlchat.tokenizer import SPECIAL_TOKENS

STRATEGIES = {
    "greedy": DecodeConfig(strategy="greedy"),
    "beam 5": DecodeConfig(strategy="beam", beam_size=5),
    "sample top-p 0.9": DecodeConfig(strategy="sample", top_p=0.9),
}
GOALS_P50_MS = {"greedy": 10.0, "beam 5": 40.0}
SHORT_INPUT = 12  # tokens: a chat message, not a monologue


def random_inputs(count: int, vocab_size: int, rng: random.Random) -> list[list[int]]:
    """Short inputs of random non-special ids."""
    return [
        [rng.randrange(len(SPECIAL_TOKENS), vocab_size) for _ in range(rng.randint(2, 10))]
        for _ in range(count)
    ]


def corpus_inputs(
    bot: Chatbot, corpus_dir: Path, count: int, rng: random.Random
) -> list[list[int]]:
    """Short real messages of the run's genres, encoded the way the chatbot encodes them."""
    sources = [pair.source for pair in load_corpus(corpus_dir).pairs(bot.genres)]
    rng.shuffle(sources)
    inputs = []
    for source in sources:
        ids = bot.encode_input(source)
        if 0 < len(ids) <= SHORT_INPUT:
            inputs.append(ids)
        if len(inputs) == count:
            break
    return inputs


def time_single(
    model: Seq2Seq, inputs: Sequence[list[int]], config: DecodeConfig, warmup: int
) -> dict[str, float]:
    """Latency of one reply at a time, in milliseconds, and the mean reply length in tokens."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(0)
    for source in inputs[:warmup]:
        generate(model, [source], config, generator=generator)
    latencies, lengths = [], []
    for source in inputs:
        start = time.perf_counter()
        reply = generate(model, [source], config, generator=generator)[0]
        latencies.append((time.perf_counter() - start) * 1e3)
        lengths.append(len(reply))
    return {
        "p50_ms": statistics.median(latencies),
        "p95_ms": statistics.quantiles(latencies, n=20)[18],
        "reply_tokens": statistics.fmean(lengths),
    }


def time_batched(model: Seq2Seq, inputs: Sequence[list[int]], repeats: int) -> dict[str, float]:
    """Greedy replies per second when ``len(inputs)`` messages are decoded in one batch."""
    config = STRATEGIES["greedy"]
    generate(model, inputs, config)  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(model, inputs, config)
        seconds.append(time.perf_counter() - start)
    return {"batch": len(inputs), "replies_per_s": len(inputs) / statistics.median(seconds)}


def load_model(
    args: argparse.Namespace, rng: random.Random
) -> tuple[Seq2Seq, list[list[int]], str]:
    """The model to time, the inputs to time it on and a description of both."""
    if args.run is None:
        torch.manual_seed(0)
        model = Seq2Seq(ModelConfig(vocab_size=args.vocab_size)).to(args.device).eval()
        inputs = random_inputs(args.inputs, args.vocab_size, rng)
        return model, inputs, f"random weights, default ModelConfig, vocab {args.vocab_size}"
    bot = Chatbot.load(args.run, device=args.device)
    if args.corpus is None:
        inputs = random_inputs(args.inputs, bot.tokenizer.vocab_size, rng)
        return bot.model, inputs, f"run {bot.name}, random input ids"
    inputs = corpus_inputs(bot, args.corpus, args.inputs, rng)
    return bot.model, inputs, f"run {bot.name}, corpus messages of {', '.join(bot.genres) or 'all'}"


def time_mmi(
    bot: Chatbot, messages: Sequence[str], warmup: int, compare_row_major: bool = False
) -> dict[str, float]:
    """One reply at a time through the chatbot, greedy, with MMI reranking of 10 sampled
    candidates (the issue's figure) and with the served decoding when it differs, in the same
    run: their ratios to greedy are the figures. ``compare_row_major`` times each once more
    with the parameters themselves (`StepWeights` off), interleaved with the rest."""
    served = replace(DecodeConfig(), **MMI_DECODING)
    configs = {"greedy": DecodeConfig(), "mmi 10": replace(served, candidates=10)}
    served_name = f"served (mmi {served.candidates})" if served.candidates != 10 else None
    if served_name:
        configs[served_name] = served
    layouts = {"": StepWeights.enabled} | ({" row-major": False} if compare_row_major else {})
    runs = {
        name + suffix: (config, column_major)
        for suffix, column_major in layouts.items()
        for name, config in configs.items()
    }
    generator = torch.Generator(device=bot.device).manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in runs}
    try:
        for i, message in enumerate(messages[:warmup] + list(messages)):
            # Interleaved, so that drift in the machine's speed hits all alike.
            for name, (config, column_major) in runs.items():
                StepWeights.enabled = column_major
                start = time.perf_counter()
                bot.reply_batch([message], config=config, generator=generator)
                if i >= warmup:
                    times[name].append((time.perf_counter() - start) * 1e3)
    finally:
        StepWeights.enabled = layouts[""]
    p50 = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "greedy_p50_ms": p50["greedy"],
        "mmi_p50_ms": p50["mmi 10"],
        "mmi_p95_ms": statistics.quantiles(times["mmi 10"], n=20)[18],
        "ratio_p50": p50["mmi 10"] / p50["greedy"],
        "goal_ratio": 4.0,
    }
    if served_name:
        result |= {
            "served": served_name,
            "served_p50_ms": p50[served_name],
            "served_ratio_p50": p50[served_name] / p50["greedy"],
        }
    if compare_row_major:  # what the column-major copies buy: row-major time over theirs
        result["row_major_over_column_major_p50"] = {
            name: p50[f"{name} row-major"] / p50[name] for name in configs
        }
        result["row_major_ratio_p50"] = p50["mmi 10 row-major"] / p50["greedy row-major"]
    return result


def goal_text(name: str, p50: float) -> str:
    goal = GOALS_P50_MS.get(name)
    if goal is None:
        return ""
    return f"p50 < {goal:.0f} ms  {'ok' if p50 < goal else 'MISSED'}"


def print_table(summary: dict) -> None:
    print(f"{summary['model']}; {summary['parameters'] / 1e6:.1f} M parameters")
    print(
        f"{summary['inputs']} inputs; {summary['device']}, {summary['threads']} threads, "
        f"oneDNN {'on' if summary['mkldnn'] else 'off'}"
    )
    print(f"{'strategy':18s} {'p50 ms':>8s} {'p95 ms':>8s} {'tokens':>7s}   goal")
    for name, result in summary["single"].items():
        print(
            f"{name:18s} {result['p50_ms']:8.2f} {result['p95_ms']:8.2f} "
            f"{result['reply_tokens']:7.1f}   {goal_text(name, result['p50_ms'])}".rstrip()
        )
    batched = summary["batched"]
    print(f"greedy, batch of {batched['batch']}: {batched['replies_per_s']:.0f} replies/s")
    mmi = summary.get("mmi")
    if mmi:
        verdict = "ok" if mmi["ratio_p50"] <= mmi["goal_ratio"] else "MISSED"
        print(
            f"chatbot greedy p50 {mmi['greedy_p50_ms']:.1f} ms, MMI over 10 candidates p50 "
            f"{mmi['mmi_p50_ms']:.1f} ms (p95 {mmi['mmi_p95_ms']:.1f}): "
            f"{mmi['ratio_p50']:.2f}x greedy (goal <= {mmi['goal_ratio']:.0f}x) {verdict}"
        )
        if "served" in mmi:
            print(
                f"served decoding, {mmi['served']}: p50 {mmi['served_p50_ms']:.1f} ms, "
                f"{mmi['served_ratio_p50']:.2f}x greedy"
            )
        if "row_major_over_column_major_p50" in mmi:
            gains = ", ".join(
                f"{name} {value:.2f}x"
                for name, value in mmi["row_major_over_column_major_p50"].items()
            )
            print(
                f"row-major parameters over column-major copies (p50): {gains}; MMI 10 over "
                f"greedy with the parameters: {mmi['row_major_ratio_p50']:.2f}x"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run directory (default: random weights)")
    parser.add_argument(
        "--corpus", type=Path, help="corpus directory for real inputs (needs --run)"
    )
    parser.add_argument("--inputs", type=int, default=200, help="single replies timed per strategy")
    parser.add_argument("--warmup", type=int, default=10, help="untimed replies first")
    parser.add_argument("--batch", type=int, default=64, help="inputs of the batched measure")
    parser.add_argument("--repeats", type=int, default=5, help="timed batched decodes")
    parser.add_argument("--vocab-size", type=int, default=8000, help="random model: vocabulary")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument(
        "--no-mkldnn",
        action="store_true",
        help="disable oneDNN kernels (on CPU their LSTM costs much more per one-step call)",
    )
    parser.add_argument(
        "--row-major-steps",
        action="store_true",
        help="decode with the parameters, not their column-major copies (rlchat.model.StepWeights)",
    )
    parser.add_argument(
        "--backward", type=Path, help="backward run: also time MMI reranking (needs --corpus)"
    )
    parser.add_argument(
        "--compare-row-major",
        action="store_true",
        help="with --backward: time greedy and MMI with the parameters too, interleaved",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the inputs and weights")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    if args.corpus is not None and args.run is None:
        parser.error("--corpus needs --run: the run's tokenizer encodes the messages")
    if args.backward is not None and args.corpus is None:
        parser.error("--backward needs --run and --corpus: MMI reranks replies to real messages")
    if args.compare_row_major and args.backward is None:
        parser.error("--compare-row-major needs --backward: it compares MMI's replies")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.mkldnn.enabled = not args.no_mkldnn
    StepWeights.enabled = not args.row_major_steps
    rng = random.Random(args.seed)
    model, inputs, description = load_model(args, rng)
    summary = {
        "model": description,
        "parameters": sum(p.numel() for p in model.parameters()),
        "inputs": len(inputs),
        "device": f"{args.device} ({platform.machine()})",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mkldnn": torch.backends.mkldnn.enabled,
        "column_major_steps": StepWeights.enabled,
        "single": {
            name: time_single(model, inputs, config, args.warmup)
            for name, config in STRATEGIES.items()
        },
        "batched": time_batched(model, inputs[: args.batch], args.repeats),
        "goals_p50_ms": GOALS_P50_MS,
    }
    if args.backward is not None:
        bot = Chatbot.load(args.run, device=args.device, backward=args.backward)
        sources = [p.source for p in load_corpus(args.corpus).pairs(bot.genres)]
        random.Random(args.seed).shuffle(sources)
        messages = [m for m in sources if 0 < len(bot.encode_input(m)) <= SHORT_INPUT]
        summary["mmi"] = time_mmi(
            bot, messages[: args.inputs], args.warmup, compare_row_major=args.compare_row_major
        )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_table(summary)


if __name__ == "__main__":
    main()
