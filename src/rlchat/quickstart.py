"""From nothing to a chatting bot in one command: corpus, CE, RL, evaluation, report.

Each stage leaves a verified marker when complete; a re-run skips complete stages and
resumes an interrupted one from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlchat.checkpoint import CheckpointError, atomic_write_text, verify_bundle
from rlchat.config import (
    CrossEntropyConfig,
    DataConfig,
    ModelConfig,
    RLConfig,
    TokenizerConfig,
)
from rlchat.corpus import Corpus
from rlchat.runs import RunDir, RunError

logger = logging.getLogger(__name__)

DONE_FILE = "done.json"
# Shares of the training budget: CE learns the language, RL then sharpens it. RL also gets
# whatever CE leaves unused when early stopping ends it sooner.
CE_SHARE, RL_SHARE = 0.6, 0.3


@dataclass
class QuickstartPlan:
    out: Path
    genres: list[str]
    minutes: float
    device: str = "auto"
    progress: bool = True

    @property
    def ce_dir(self) -> Path:
        return self.out / "ce"

    @property
    def rl_dir(self) -> Path:
        return self.out / "rl"

    @property
    def eval_path(self) -> Path:
        return self.out / "eval.json"

    @property
    def report_dir(self) -> Path:
        return self.out / "report"


def run_is_complete(path: Path) -> bool:
    """A training stage is complete when its marker exists and its model passes checksums."""
    if not (path / DONE_FILE).is_file():
        return False
    try:
        verify_bundle(RunDir(path).model_path())
    except (CheckpointError, RunError) as error:
        logger.warning("%s is marked done but its model fails verification: %s", path, error)
        return False
    return True


def mark_done(path: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(path / DONE_FILE, json.dumps(summary, indent=2, default=str))


# Systems in the quickstart's evaluation: CE, RL, the baselines and the held-out replies.
EVAL_BASELINES = ("random", "retrieval")
EVAL_SYSTEMS = 2 + len(EVAL_BASELINES) + 1


def json_is_complete(path: Path, runs: int) -> bool:
    try:
        return len(json.loads(path.read_text(encoding="utf-8"))["runs"]) == runs
    except (OSError, ValueError, KeyError):
        return False


def run_stage(name: str, index: int, total: int, minutes: float | None, work: Callable) -> Any:
    budget = f" (about {minutes:.0f} min)" if minutes else ""
    logger.info("stage %d/%d: %s%s", index, total, name, budget)
    started = time.monotonic()
    result = work()
    logger.info(
        "stage %d/%d: %s done in %.1f min", index, total, name, (time.monotonic() - started) / 60
    )
    return result


def train_ce_stage(plan: QuickstartPlan, corpus: Corpus) -> None:
    from rlchat.train.cross_entropy import train_cross_entropy

    if run_is_complete(plan.ce_dir):
        logger.info("cross-entropy run %s is complete; skipping", plan.ce_dir)
        return
    start = time.monotonic()
    summary = train_cross_entropy(
        out=plan.ce_dir,
        corpus=corpus,
        data_config=DataConfig(genres=plan.genres),
        tokenizer_config=TokenizerConfig(),
        model_config=ModelConfig(),
        # The time budget, not the epoch count, ends this stage.
        train_config=CrossEntropyConfig(epochs=100, max_minutes=plan.minutes * CE_SHARE),
        resume=RunDir(plan.ce_dir).exists(),
        device=plan.device,
        progress=plan.progress,
    )
    summary["minutes"] = (time.monotonic() - start) / 60
    mark_done(plan.ce_dir, summary)


def rl_minutes(plan: QuickstartPlan) -> float:
    """RL's share of the budget plus what CE left unused (CE's share if its time is unknown)."""
    try:
        done = json.loads((plan.ce_dir / DONE_FILE).read_text(encoding="utf-8"))
        ce_minutes = float(done["minutes"])
    except (OSError, ValueError, KeyError, TypeError):
        ce_minutes = plan.minutes * CE_SHARE
    unused = max(0.0, plan.minutes * CE_SHARE - ce_minutes)
    return plan.minutes * RL_SHARE + unused


def train_rl_stage(plan: QuickstartPlan, corpus: Corpus, minutes: float) -> None:
    from rlchat.train.scst import train_rl

    if run_is_complete(plan.rl_dir):
        logger.info("RL run %s is complete; skipping", plan.rl_dir)
        return
    summary = train_rl(
        init=plan.ce_dir,
        out=plan.rl_dir,
        corpus=corpus,
        rl_config=RLConfig(epochs=100, max_minutes=minutes),
        resume=RunDir(plan.rl_dir).exists(),
        device=plan.device,
        progress=plan.progress,
    )
    mark_done(plan.rl_dir, summary)


def evaluate_stage(plan: QuickstartPlan, corpus: Corpus) -> dict[str, Any]:
    from rlchat.chatbot import Chatbot
    from rlchat.dataset import prepare_dataset
    from rlchat.evaluation import evaluate_runs

    if json_is_complete(plan.eval_path, runs=EVAL_SYSTEMS):
        logger.info("evaluation %s is complete; skipping", plan.eval_path)
        return json.loads(plan.eval_path.read_text(encoding="utf-8"))
    bots = [Chatbot.load(path, device=plan.device) for path in (plan.ce_dir, plan.rl_dir)]
    dataset = prepare_dataset(
        corpus, bots[0].data_config, bots[0].tokenizer_config, tokenizer=bots[0].tokenizer
    )
    splits = {name: [e.pair for e in data.examples] for name, data in dataset.splits.items()}
    result = evaluate_runs(
        bots, splits, split="test", baselines=EVAL_BASELINES, progress=plan.progress
    )
    atomic_write_text(plan.eval_path, json.dumps(result, indent=2))
    return result


def report_stage(plan: QuickstartPlan, evaluation: dict[str, Any]) -> Path:
    from rlchat.report import write_report

    return write_report([plan.ce_dir, plan.rl_dir], plan.report_dir, evaluation=evaluation)


def run_quickstart(plan: QuickstartPlan, corpus: Corpus) -> dict[str, Any]:
    """Train CE, then RL, evaluate both and write the report; returns the evaluation."""
    stages = 4
    run_stage(
        "cross-entropy training",
        1,
        stages,
        plan.minutes * CE_SHARE,
        lambda: train_ce_stage(plan, corpus),
    )
    rl_budget = rl_minutes(plan)  # known once CE is done
    run_stage(
        "reinforcement learning (SCST)",
        2,
        stages,
        rl_budget,
        lambda: train_rl_stage(plan, corpus, rl_budget),
    )
    evaluation = run_stage(
        "evaluation on the test split", 3, stages, None, lambda: evaluate_stage(plan, corpus)
    )
    run_stage("report", 4, stages, None, lambda: report_stage(plan, evaluation))
    return evaluation
