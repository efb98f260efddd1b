"""What every training stage shares: run directory, device, seeding, budget, metrics."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlchat.checkpoint import atomic_write_text
from rlchat.runs import RunDir, RunError

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


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


@dataclass
class Budget:
    """When to stop: epochs, steps or wall-clock minutes, whichever comes first."""

    epochs: int
    max_steps: int = 0
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def seconds_left(self) -> float:
        """Seconds of the time budget left (infinite without one)."""
        if not self.max_minutes:
            return math.inf
        return self.max_minutes * 60 - (time.monotonic() - self.started)

    def out_of_time(self, reserve_s: float = 0.0) -> bool:
        """Out of time, keeping `reserve_s` for work that must still fit (a last validation)."""
        return self.seconds_left() <= reserve_s

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
