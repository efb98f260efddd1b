from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from rlchat.checkpoint import load_bundle

HELPERS = Path(__file__).parent / "helpers"
sys.path.insert(0, str(HELPERS))
from ddp_common import BATCH, make_trainer  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """Run under torchrun on a free port; a port taken between choosing and binding (another
    test's server) is retried on a fresh one, any other failure fails the test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _ in range(3):
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        if result.returncode == 0 or "address already in use" not in result.stderr.lower():
            break
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_one_distributed_step_equals_one_step_on_the_union_of_batches(tmp_path):
    torchrun(str(HELPERS / "ddp_step.py"), str(tmp_path))
    distributed = load_file(tmp_path / "distributed.safetensors")
    single = make_trainer(tmp_path / "single")
    single.train_step(BATCH, total_steps=1)
    state = single.model.state_dict()
    assert distributed
    for name, value in distributed.items():
        torch.testing.assert_close(value, state[name], rtol=0, atol=1e-6)


def train_args(out: Path, corpus_dir: Path, *extra: str) -> list[str]:
    return [
        "-m", "rlchat", "train", "ce", "--genre", "comedy", "--corpus", str(corpus_dir),
        "--vocab-size", "300", "--max-tokens", "8", "--embedding-dim", "16",
        "--hidden-size", "32", "--dropout", "0", "--batch-size", "32", "--checkpoint-every", "3",
        "--eval-every", "3", "--max-eval-pairs", "64", "--no-progress", *extra,
    ]  # fmt: skip


def test_a_distributed_run_resumes_from_its_checkpoint(tmp_path, corpus_dir):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    torchrun(*train_args(straight, corpus_dir, "--out", str(straight), "--max-steps", "6"))
    torchrun(*train_args(resumed, corpus_dir, "--out", str(resumed), "--max-steps", "3"))
    # Extend the budget of the finished run, as a user continuing it would see it.
    config = json.loads((resumed / "run.json").read_text())
    config["train"]["max_steps"] = 6
    (resumed / "run.json").write_text(json.dumps(config))
    torchrun(*train_args(resumed, corpus_dir, "--resume", str(resumed)))
    a = load_bundle(straight / "checkpoints" / "step-00000006").weights
    b = load_bundle(resumed / "checkpoints" / "step-00000006").weights
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").open()]
    assert steps == sorted(steps) and max(steps) == 6
