"""A run directory and where a run executes: what training writes and what every reader of
a run (evaluation, chat, the server, the report) needs, with nothing of training itself."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
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


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; full precision on CPU, where it is both exact and fastest here."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
