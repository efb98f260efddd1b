"""Cross-entropy training throughput: pairs/s, target tokens/s, peak RSS, model FLOP utilisation.

    python benchmarks/train_throughput.py --corpus ../shared/data/cornell-excerpt

Runs real training steps on comedy pairs at the original project's configuration (word
tokenizer, min count 10, max 20 tokens, 1-layer unidirectional LSTM, hidden 512, embedding 50,
general attention, batch 32) and at rlchat's default configuration, at teacher-forcing ratios
1.0 and 0.5. Utilisation = analytic training FLOP/s / FLOP/s of a large matmul measured here
(fp32 on CPU; bf16 on CUDA, where training runs under bf16 autocast).

    python benchmarks/train_throughput.py --corpus DIR --device cuda --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from rlchat.batching import bucketed_batches
from rlchat.config import CrossEntropyConfig, DataConfig, ModelConfig, TokenizerConfig
from rlchat.corpus import load_corpus
from rlchat.dataset import prepare_dataset
from rlchat.model import Seq2Seq
from rlchat.runs import RunDir
from rlchat.train.cross_entropy import CrossEntropyTrainer
from rlchat.train.distributed import device_for, init_world

ORIGINAL = (
    TokenizerConfig(kind="word", min_count=10, max_tokens=20),
    ModelConfig(
        embedding_dim=50,
        hidden_size=512,
        layers=1,
        bidirectional=False,
        attention="general",
        tie_embeddings=False,
        dropout=0.0,
    ),
    32,
)
DEFAULT = (TokenizerConfig(), ModelConfig(), CrossEntropyConfig().batch_size)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large matmul (fp32 on CPU, bf16 on CUDA): the practical peak for this work."""
    if device.type == "cuda":
        size, repeats, dtype = 8192, 50, torch.bfloat16
    else:
        dtype = torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def forward_flops(config: ModelConfig, src_len: int, tgt_len: int) -> float:
    """Analytic forward FLOPs of one pair (multiply-add = 2 FLOPs); backward is twice this."""
    H, E, V = config.hidden_size, config.embedding_dim, config.vocab_size
    directions = 2 if config.bidirectional else 1
    h_enc = H // directions
    encoder = 0
    for layer in range(config.layers):
        inp = E if layer == 0 else H
        encoder += directions * 2 * 4 * h_enc * (inp + h_enc) * src_len
    decoder = 0
    for layer in range(config.layers):
        inp = (E + (H if config.input_feeding else 0)) if layer == 0 else H
        decoder += 2 * 4 * H * (inp + H)
    if config.attention == "general":
        attention = 2 * H * H + 4 * src_len * H
    elif config.attention == "concat":
        attention = src_len * (2 * 2 * H * H + 2 * H) + 2 * src_len * H
    else:
        attention = 4 * src_len * H
    combine = 2 * 2 * H * H
    output = (2 * H * E + 2 * E * V) if config.tie_embeddings else 2 * H * V
    return encoder + (decoder + attention + combine + output) * tgt_len


def measure(
    corpus,
    tokenizer_config,
    model_config,
    batch_size,
    teacher_forcing,
    seconds,
    run_dir,
    world,
    device,
):
    dataset = prepare_dataset(corpus, DataConfig(genres=["comedy"]), tokenizer_config)
    model_config = replace(model_config, vocab_size=dataset.tokenizer.vocab_size)
    examples = dataset.splits["train"].examples
    torch.manual_seed(0)
    train_config = CrossEntropyConfig(batch_size=batch_size, teacher_forcing=teacher_forcing)
    trainer = CrossEntropyTrainer(
        run=RunDir(run_dir),
        run_config={},
        tokenizer_json="",
        model=Seq2Seq(model_config).to(device),
        train_examples=examples,
        valid_examples=[],
        config=train_config,
        device=device,
        tensorboard=False,
        world=world,
    )
    batches = bucketed_batches(trainer.lengths, batch_size, seed=0)
    trainer.model.train()
    pairs = tokens = 0
    flops = 0.0
    start = None
    for i, indices in enumerate(batches):
        chunk = [examples[j] for j in indices]
        if i == 5:  # warm-up steps excluded
            synchronize(device)
            start = time.perf_counter()
        trainer.train_step(chunk[world.rank :: world.size], total_steps=len(batches))
        if start is not None:
            pairs += len(chunk)
            tokens += sum(len(e.reply) + 1 for e in chunk)
            flops += 3 * sum(
                forward_flops(model_config, len(e.source), len(e.reply) + 1) for e in chunk
            )
            if world.any(time.perf_counter() - start >= seconds):
                break
    synchronize(device)
    elapsed = time.perf_counter() - start
    return {
        "vocab_size": model_config.vocab_size,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "batch_size": batch_size,
        "teacher_forcing": teacher_forcing,
        "pairs_per_s": pairs / elapsed,
        "target_tokens_per_s": tokens / elapsed,
        "model_flops_per_s": flops / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="corpus directory")
    parser.add_argument("--seconds", type=float, default=20, help="timed seconds per setting")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rlchat-bench"), help="scratch dir")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument(
        "--nproc", type=int, default=1, help="data-parallel processes (original config only)"
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to train")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="pairs per step for every setting (0 = its own)"
    )
    args = parser.parse_args()
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        # Relaunch under torchrun; each process then joins the group below.
        rest = [
            a for i, a in enumerate(sys.argv[1:]) if a != "--nproc" and sys.argv[i] != "--nproc"
        ]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                   str(args.nproc), sys.argv[0], *rest]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        raise SystemExit(subprocess.call(command, env=env))
    world = init_world(torch.device(args.device))
    device = device_for(world, torch.device(args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = load_corpus(args.corpus)
    peak = matmul_flops(device)
    results = []
    settings = {"original": ORIGINAL, "default": DEFAULT}
    ratios = (1.0, 0.5)
    if world.distributed:
        settings, ratios = {"original": ORIGINAL}, (1.0,)
    for name, (tok, model, batch) in settings.items():
        batch = args.batch_size or batch
        for ratio in ratios:
            result = measure(
                corpus, tok, model, batch, ratio, args.seconds, args.out, world, device
            )
            result["processes"] = world.size
            result["config"] = name
            result["mfu"] = result["model_flops_per_s"] / peak
            results.append(result)
            if not args.json and world.is_main:
                print(
                    f"{name:8s} tf={ratio:.1f}  {result['pairs_per_s']:7.1f} pairs/s  "
                    f"{result['target_tokens_per_s']:8.0f} tokens/s  "
                    f"MFU {result['mfu']:.1%}  (V={result['vocab_size']}, batch {batch})"
                )
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} (bf16 autocast)"
    summary = {
        "machine": machine,
        "torch": torch.__version__,
        "matmul_gflops": peak / 1e9,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "results": results,
    }
    if not world.is_main:
        return
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{machine}: matmul peak {peak / 1e9:.0f} GFLOP/s; "
            f"peak RSS {summary['peak_rss_mib']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
