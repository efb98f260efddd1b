"""Faults survived at process level: SIGKILL mid-training, a corrupt checkpoint, a full disk."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from rlchat.checkpoint import load_bundle
from rlchat.runs import RunDir, RunError
from rlchat.train.loop import check_writable


def train_command(out: Path, corpus_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "rlchat", "train", "ce", "--genre", "comedy",
        "--corpus", str(corpus_dir), "--vocab-size", "300", "--max-tokens", "8",
        "--embedding-dim", "16", "--hidden-size", "32", "--batch-size", "32",
        "--checkpoint-every", "2", "--keep-checkpoints", "3", "--eval-every", "4",
        "--max-eval-pairs", "64", "--max-steps", "16", "--no-progress", "--out", str(out), *extra,
    ]  # fmt: skip


def run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_bundle(out / "checkpoints" / "step-00000016").weights


@pytest.fixture(scope="module")
def uninterrupted(corpus_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    run(train_command(out, corpus_dir))
    return out


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_sigkill_at_a_random_step_then_resume_gives_the_uninterrupted_weights(
    tmp_path, corpus_dir, uninterrupted
):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        train_command(out, corpus_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    kill_after = random.Random().choice([2, 4, 6, 8])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        steps = RunDir(out).step_checkpoints()
        if steps and int(steps[0].name.split("-")[1]) >= kill_after:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "training ended before it could be killed"
    run(train_command(out, corpus_dir, "--resume", str(out)))
    assert_same_weights(final_weights(uninterrupted), final_weights(out))


def test_corrupt_latest_checkpoint_is_reported_and_the_previous_one_used(
    tmp_path, corpus_dir, uninterrupted
):
    out = tmp_path / "run"
    run(train_command(out, corpus_dir, "--max-steps", "6"))
    latest = RunDir(out).step_checkpoints()[0]
    assert latest.name == "step-00000006"
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    # The run continues to its original 16 steps from step 4, the last good checkpoint.
    run_json = out / "run.json"
    run_json.write_text(run_json.read_text().replace('"max_steps": 6', '"max_steps": 16'))
    result = run(train_command(out, corpus_dir, "--resume", str(out)))
    assert "step-00000006 is corrupt: model.safetensors fails its checksum" in result.stderr
    assert "resumed from" in result.stderr and "step 4" in result.stderr
    assert_same_weights(final_weights(uninterrupted), final_weights(out))


def test_a_full_disk_fails_at_start(tmp_path, monkeypatch):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda path: Usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(RunError, match="only 1 MiB free"):
        check_writable(tmp_path / "run")


def test_an_unwritable_run_directory_fails_at_start(tmp_path, corpus_dir):
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        train_command(blocker / "run", corpus_dir), capture_output=True, text=True, env=env
    )
    assert result.returncode == 1
    assert "cannot write to run directory" in result.stderr
    assert "Traceback" not in result.stderr
