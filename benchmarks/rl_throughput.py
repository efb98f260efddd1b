"""SCST (RL) throughput at K samples per input, and where the time of a step goes.

    python benchmarks/rl_throughput.py --corpus ../shared/data/cornell-excerpt

At the original project's configuration (word tokenizer, min count 10, comedy, 1-layer
unidirectional LSTM, hidden 512, embedding 50, general attention, batch 32). The model is
first trained briefly with cross-entropy so that its replies end like a real bot's (a random
model always runs to the length cap), then RL steps are timed with the default reward, split
into decoding (greedy + K samples), reward, and the teacher-forced forward + backward pass.
The CE throughput of the same model is measured in the same run for the ratio. On CUDA
(bf16 autocast) each timed part waits for its GPU work, so the shares stay true.
`--config default` times rlchat's own model (BPE, tied embeddings, bidirectional encoder)
instead; `--compare-padded` alternates steps whose teacher-forced pass skips the padding
(the code as it is) with steps that compute it, in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch
from train_throughput import DEFAULT, ORIGINAL, synchronize  # the script's folder is on sys.path

from rlchat.config import DEFAULT_REWARD, CrossEntropyConfig, DataConfig, RLConfig
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.model import Decoder, Seq2Seq
from rlchat.rewards import RewardFunction
from rlchat.runs import RunDir
from rlchat.text import stock_replies
from rlchat.tokenizer import ChatTokenizer
from rlchat.train import scst
from rlchat.train.cross_entropy import CrossEntropyTrainer

ORIGINAL_TOKENIZER = {"kind": "word", "min_count": 10, "max_tokens": 20}
GOAL_RATIO = 0.5  # RL pairs/s over CE pairs/s at K = 4


def timed(totals: dict[str, float], name: str, fn, device: torch.device):  # noqa: ANN001, ANN201
    """Wrap fn so its wall time (its GPU work included) adds up under ``name``."""

    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        synchronize(device)
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        synchronize(device)
        totals[name] += time.perf_counter() - start
        return result

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="corpus directory")
    parser.add_argument("--samples", type=int, default=4, help="K samples per input")
    parser.add_argument("--reward", default=DEFAULT_REWARD, help="reward spec")
    parser.add_argument(
        "--ce-weight",
        type=float,
        default=RLConfig.ce_weight,
        help="mixed objective: weight of the references' cross-entropy (0 = pure SCST)",
    )
    parser.add_argument("--ce-steps", type=int, default=300, help="CE warm-up steps")
    parser.add_argument("--seconds", type=float, default=30, help="timed seconds per stage")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train")
    parser.add_argument("--batch-size", type=int, default=0, help="inputs per step (0 = original)")
    parser.add_argument(
        "--config",
        default="original",
        choices=["original", "default"],
        help="the original project's model and word tokenizer, or rlchat's defaults (BPE)",
    )
    parser.add_argument(
        "--compare-padded",
        action="store_true",
        help="also time RL steps whose teacher-forced pass computes the padding, alternating",
    )
    args = parser.parse_args()
    device = torch.device(args.device)

    tokenizer_config, model_config, batch_size = ORIGINAL if args.config == "original" else DEFAULT
    batch_size = args.batch_size or batch_size
    corpus = load_corpus(args.corpus)
    dataset = prepare_dataset(corpus, DataConfig(genres=["comedy"]), tokenizer_config)
    model_config = replace(model_config, vocab_size=dataset.tokenizer.vocab_size)
    train = dataset.splits["train"].examples
    torch.manual_seed(0)
    scratch = Path(tempfile.mkdtemp(prefix="rlchat-bench-"))
    common = dict(
        run_config={},
        tokenizer_json="",
        train_examples=train,
        valid_examples=[],
        device=device,
        tensorboard=False,
    )
    ce = CrossEntropyTrainer(
        run=RunDir(scratch / "ce"),
        model=Seq2Seq(model_config).to(device),
        config=CrossEntropyConfig(batch_size=batch_size, lr=2e-3, warmup_steps=50),
        **common,
    )
    batches = ce.epoch_batches(0)[: args.ce_steps]  # large batches: one epoch at most
    start, pairs = None, 0
    for i, indices in enumerate(batches):
        if i == len(batches) // 2:
            synchronize(device)
            start, pairs = time.perf_counter(), 0
        ce.train_step([train[j] for j in indices], total_steps=len(batches))
        pairs += len(indices)
    synchronize(device)
    ce_pairs_per_s = pairs / (time.perf_counter() - start)

    tokenizer: ChatTokenizer = dataset.tokenizer
    judge = Seq2Seq(model_config).to(device)
    judge.load_state_dict(ce.model.state_dict())
    judge.eval().requires_grad_(False)
    reward = RewardFunction.from_spec(
        args.reward,
        judge=judge,
        tokenizer=tokenizer,
        stock=stock_replies(e.pair.reply for e in train),
    )
    totals: dict[str, float] = defaultdict(float)
    scst.decode = timed(totals, "decode", scst.decode, device)
    scst.sample_log_probs = timed(totals, "forward", scst.sample_log_probs, device)
    reward_call = timed(totals, "reward", reward.__call__, device)
    rl = scst.SCSTTrainer(
        reward=reward_call,
        run=RunDir(scratch / "rl"),
        model=ce.model,
        config=RLConfig(
            batch_size=batch_size,
            samples=args.samples,
            reward=args.reward,
            ce_weight=args.ce_weight,
        ),
        **common,
    )
    original_backward = torch.Tensor.backward
    torch.Tensor.backward = timed(totals, "backward", original_backward, device)
    batches = rl.epoch_batches(0)
    start, pairs, steps = None, 0, 0
    # With --compare-padded, steps alternate between the two teacher-forced passes, so both
    # see batches of the same lengths on a machine in the same state.
    by_mode = {True: [0.0, 0], False: [0.0, 0]}  # skip_padding -> [seconds, pairs]
    try:
        for i, indices in enumerate(batches):
            if i == 3:  # warm-up steps excluded
                synchronize(device)
                totals.clear()
                start, pairs, steps = time.perf_counter(), 0, 0
            Decoder.skip_padding = not (args.compare_padded and i % 2)
            step_start = time.perf_counter()
            rl.train_step([train[j] for j in indices], total_steps=len(batches))
            synchronize(device)
            if start is not None:
                by_mode[Decoder.skip_padding][0] += time.perf_counter() - step_start
                by_mode[Decoder.skip_padding][1] += len(indices)
            pairs += len(indices)
            steps += 1
            if start is not None and time.perf_counter() - start >= args.seconds:
                break
    finally:
        torch.Tensor.backward = original_backward
        Decoder.skip_padding = True
    synchronize(device)
    elapsed = time.perf_counter() - start
    rl_pairs_per_s = pairs / elapsed
    if args.compare_padded:
        packed_s, packed_pairs = by_mode[True]
        padded_s, padded_pairs = by_mode[False]
        rl_pairs_per_s = packed_pairs / packed_s
    breakdown = {name: seconds / elapsed for name, seconds in totals.items()}
    breakdown["other"] = 1 - sum(breakdown.values())
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} (bf16 autocast)"
    summary = {
        "machine": machine,
        "batch_size": batch_size,
        "torch": torch.__version__,
        "samples": args.samples,
        "reward": args.reward,
        "ce_weight": args.ce_weight,
        "ce_pairs_per_s": ce_pairs_per_s,
        "rl_pairs_per_s": rl_pairs_per_s,
        "ratio": rl_pairs_per_s / ce_pairs_per_s,
        "config": args.config,
        "goal_ratio": GOAL_RATIO,
        "share_of_step_time": breakdown,
    }
    if args.compare_padded:
        # The same CE figure divides both (CE batches are bucketed by length: little padding).
        summary["rl_pairs_per_s_padded"] = padded_pairs / padded_s
        summary["ratio_padded"] = summary["rl_pairs_per_s_padded"] / ce_pairs_per_s
        summary["packed_over_padded"] = rl_pairs_per_s / summary["rl_pairs_per_s_padded"]
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{machine}")
    print(f"CE  {ce_pairs_per_s:7.1f} pairs/s (original configuration, batch {batch_size})")
    print(
        f"RL  {rl_pairs_per_s:7.1f} pairs/s at K={args.samples}, reward {args.reward}, "
        f"ce weight {args.ce_weight}: "
        f"{summary['ratio']:.3f} of CE (goal >= {GOAL_RATIO})"
    )
    if args.compare_padded:
        print(
            f"    padding computed: {summary['rl_pairs_per_s_padded']:7.1f} pairs/s, "
            f"{summary['ratio_padded']:.3f} of CE; skipping it is "
            f"{summary['packed_over_padded']:.2f}x"
        )
    for name, share in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        print(f"    {name:9s} {share:6.1%} of step time")


if __name__ == "__main__":
    main()
