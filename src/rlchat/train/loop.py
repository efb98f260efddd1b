"""What every training stage shares: run directory, device, seeding, budget, metrics."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlchat.checkpoint import CheckpointError, atomic_write_text, verify_bundle

logger = logging.getLogger(__name__)

RUN_CONFIG = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
STEP_DIR = re.compile(r"^step-(\d{8})$")


class RunError(RuntimeError):
    """A run directory that cannot be used; the message says why and what to do."""


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when present and asked for (auto), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda was asked for, but no CUDA device is available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class RunDir:
    """The layout of ``runs/NAME``: config, tokenizer, metrics, TensorBoard, checkpoints."""

    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / RUN_CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def best_path(self) -> Path:
        return self.path / BEST_DIR

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def step_path(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:08d}"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def read_config(self) -> dict[str, Any]:
        if not self.exists():
            raise RunError(f"{self.path} is not an rlchat run (no {RUN_CONFIG})")
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.config_path, json.dumps(config, indent=2))

    def step_checkpoints(self) -> list[Path]:
        """Resumable checkpoints, newest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.iterdir() if STEP_DIR.match(p.name) and p.is_dir()]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def latest_good_checkpoint(self) -> Path | None:
        """The newest checkpoint that passes its checksums; corrupt ones are reported, skipped."""
        for path in self.step_checkpoints():
            try:
                verify_bundle(path)
            except CheckpointError as error:
                logger.warning("%s; falling back to an older checkpoint", error)
                continue
            return path
        return None

    def prune(self, keep: int) -> None:
        for old in self.step_checkpoints()[keep:]:
            shutil.rmtree(old, ignore_errors=True)

    def model_path(self) -> Path:
        """The bundle that represents this run's model: best validation, else latest."""
        if self.best_path.is_dir():
            return self.best_path
        latest = self.latest_good_checkpoint()
        if latest is None:
            raise RunError(f"{self.path} holds no trained model yet")
        return latest


def check_writable(path: Path, needed_bytes: int = 50 * 2**20) -> None:
    """Fail at start, not after an hour, when the run directory cannot take checkpoints."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise RunError(f"cannot write to run directory {path}: {error.strerror}") from None
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise RunError(
            f"only {free / 2**20:.0f} MiB free at {path}; checkpoints need about "
            f"{needed_bytes / 2**20:.0f} MiB"
        )


class MetricsLog:
    """Slash-namespaced scalars to ``metrics.jsonl`` and TensorBoard."""

    def __init__(self, run: RunDir, tensorboard: bool = True, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = run.metrics_path
        self.writer = None
        if not enabled:
            return
        run.path.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run.path / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def truncate_after(self, step: int) -> None:
        """On resume, forget records written after the checkpoint so curves do not double."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= step
        ]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@dataclass
class Budget:
    """When to stop: epochs, steps or wall-clock minutes, whichever comes first."""

    epochs: int
    max_steps: int = 0
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def out_of_time(self) -> bool:
        return bool(self.max_minutes) and time.monotonic() - self.started >= self.max_minutes * 60

    def done(self, step: int, epoch: int) -> bool:
        """Out of epochs or steps; time is asked separately (processes must agree on it)."""
        return epoch >= self.epochs or (self.max_steps > 0 and step >= self.max_steps)


@contextlib.contextmanager
def stop_on_interrupt(trainer: Any) -> Iterator[None]:
    """Turn the first Ctrl-C into a stop request honoured between steps; a second one kills."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: Any) -> None:
        trainer.stop_requested = True
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
