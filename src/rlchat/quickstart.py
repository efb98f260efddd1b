"""From nothing to a chatting bot in one command, within ``--minutes`` of wall time:

1. cross-entropy on every genre (the language: 172k pairs of the excerpt, not one genre's 30k),
2. a short cross-entropy fine-tune on the chosen genre (``train ce --init``),
3. the backward model p(input | reply), fine-tuned from 1 on the genre's swapped pairs,
4. SCST from 2,
5. evaluation on the genre's test split: CE, RL, and the served bot (RL with MMI reranking
   by the backward model) beside the baselines, then the report.

The budget is a deadline. Each training stage gets its share of the time left before it,
less what evaluation will take at the speed measured so far, so a stage that ends early or
runs over hands the difference on. Each stage leaves a verified marker with its minutes; a
re-run skips complete stages, resumes an interrupted one, and counts the minutes spent.
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
    FINETUNE_EVAL_EVERY,
    FINETUNE_VOCAB_UNLIKELIHOOD,
    CrossEntropyConfig,
    DataConfig,
    DecodeConfig,
    ModelConfig,
    RLConfig,
    TokenizerConfig,
    served_decoding,
)
from rlchat.corpus import Corpus
from rlchat.runs import RunDir, RunError

logger = logging.getLogger(__name__)

DONE_FILE = "done.json"
# Shares of the training time. Pretraining learns the language from every genre; the genre
# fine-tune and the backward model need little; RL sharpens what the fine-tune says.
SHARES = {"pretrain": 0.45, "finetune": 0.12, "backward": 0.13, "rl": 0.30}
# Evaluation decodes each test pair three times: greedily for CE and for RL, and by the
# served MMI. The rest (perplexity, self-play, baselines, the tests) cost a steady multiple of
# that, measured on the slowest machine seen (a 2-core EPYC): evaluation took 42.3 ms a test
# pair where `measure_eval_cost`'s probe timed those three decodes at 20.5 ms (2.06x; seed
# 15's draw). 2.5 leaves a margin, and time for the report and the command's table of
# everyday prompts, which also come before the server answers. The cost is measured on this
# machine, not derived from its training speed: the two are in no one ratio across machines
# (evaluation cost 8.3 training pairs' worth a test pair on that EPYC, 15.5-19.3 on others).
EVAL_COST_PER_DECODE = 2.5
DECODE_PROBE_INPUTS = 128  # validation inputs the decoding cost is timed on
EVAL_RESERVE_FLOOR = 0.05  # share of the budget kept for evaluation, at least
# At most this share goes to evaluation: on a slower machine it evaluates a seeded subset of
# the test pairs sized to fit, rather than eat the training time or overrun the deadline.
EVAL_RESERVE_CAP = 0.25
STAGE_SETUP_MINUTES = 0.25  # a stage's data preparation, before its trainer's clock starts
# The fine-tunes (genre and backward) start from a trained model: at pretraining's 2e-3 they
# ended with comedy validation perplexity 65-69, at 5e-4 at 56 in two seeds, at 2.5e-4 at 56
# too (experiments/dull_ce_sweep.py, docs/experiments.md).
FINETUNE_LR = 5e-4


@dataclass
class QuickstartPlan:
    out: Path
    genres: list[str]
    minutes: float
    device: str = "auto"
    progress: bool = True
    split_by: str = "conversation"  # or "movie": no test movie is seen in any training stage
    seed: int = 0  # of every stage's weights, batches, dropout and samples; never of the split
    # Vocabulary unlikelihood in the genre fine-tune only (0 = off), with the word-continuing
    # pieces spared or not, and negative training on its greedy rows (0 = off).
    finetune_vocab_unlikelihood: float = FINETUNE_VOCAB_UNLIKELIHOOD
    finetune_spare_pieces: bool = False
    # The share of each fine-tune batch that vocabulary unlikelihood decodes greedily, and
    # prefix unlikelihood on the same rows (0 = off).
    finetune_vocab_unlikelihood_share: float = 1.0
    finetune_prefix_unlikelihood: float = 0.0
    finetune_negative_threshold: float = 0.0
    # best/ of the genre fine-tune chosen by validation loss + this x greedy top1, validating
    # every FINETUNE_EVAL_EVERY steps (0 = by the loss of its last step alone).
    finetune_select_top1_weight: float = 0.0

    @property
    def pretrain_dir(self) -> Path:
        return self.out / "pretrain"

    @property
    def ce_dir(self) -> Path:
        return self.out / "ce"

    @property
    def backward_dir(self) -> Path:
        return self.out / "backward"

    @property
    def rl_dir(self) -> Path:
        return self.out / "rl"

    @property
    def eval_path(self) -> Path:
        return self.out / "eval.json"

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    @property
    def stage_dirs(self) -> dict[str, Path]:
        return {
            "pretrain": self.pretrain_dir,
            "finetune": self.ce_dir,
            "backward": self.backward_dir,
            "rl": self.rl_dir,
        }


# --------------------------------------------------------------------------- budget


def stage_budget(stage: str, left_minutes: float, reserve_minutes: float, done: set[str]) -> float:
    """Minutes for `stage`: its share of the training time left (the time left before the
    deadline less the evaluation reserve), among the stages not yet done."""
    pending = [s for s in SHARES if s not in done]
    if stage not in pending:
        raise ValueError(f"stage {stage!r} is done or unknown")
    share = SHARES[stage] / sum(SHARES[s] for s in pending)
    return max(0.0, left_minutes - reserve_minutes) * share


@dataclass(frozen=True)
class EvalPlan:
    minutes: float  # kept free for evaluation and the report
    max_pairs: int  # test pairs evaluated (0 = all)


def eval_plan(minutes: float, seconds_per_pair: float | None, test_pairs: int) -> EvalPlan:
    """How much of the budget evaluation gets, and on how many test pairs: all of them when
    their estimated cost (`seconds_per_pair`, measured on this machine) fits under the cap,
    else the share of them that does. Before the cost is known, the cap is kept."""
    cap = EVAL_RESERVE_CAP * minutes
    if not seconds_per_pair or seconds_per_pair <= 0:
        return EvalPlan(cap, 0)
    needed = seconds_per_pair * test_pairs / 60
    if needed <= cap:
        return EvalPlan(max(EVAL_RESERVE_FLOOR * minutes, needed), 0)
    return EvalPlan(cap, max(1, int(test_pairs * cap / needed)))


def decode_seconds_per_pair(bot: Any, messages: list[str]) -> float:
    """Seconds the evaluation's decoding of one test pair takes on this machine: the greedy
    reply twice (CE and RL) and the served MMI reply, timed on `messages` after a warm-up.
    `bot` must have a backward model; the pretrained model can stand in for it."""
    import torch

    generator = torch.Generator(device=bot.device).manual_seed(0)
    greedy, served = DecodeConfig(), served_decoding()
    bot.reply_batch(messages[:16], config=served, generator=generator)  # warm-up
    started = time.perf_counter()
    bot.reply_batch(messages, config=greedy)
    greedy_seconds = time.perf_counter() - started
    started = time.perf_counter()
    bot.reply_batch(messages, config=served, generator=generator)
    served_seconds = time.perf_counter() - started
    return (2 * greedy_seconds + served_seconds) / max(1, len(messages))


# --------------------------------------------------------------------------- stages


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


def read_done(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def mark_done(path: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(path / DONE_FILE, json.dumps(summary, indent=2, default=str))


# Systems in the quickstart's evaluation: CE, RL, RL with MMI, the baselines, the references.
EVAL_BASELINES = ("random", "retrieval")
SERVED = "rl+mmi"
EVAL_SYSTEMS = 3 + len(EVAL_BASELINES) + 1


def json_is_complete(path: Path, runs: int) -> bool:
    try:
        return len(json.loads(path.read_text(encoding="utf-8"))["runs"]) == runs
    except (OSError, ValueError, KeyError):
        return False


def train_stage(plan: QuickstartPlan, stage: str, corpus: Corpus, minutes: float) -> dict:
    """Train one stage within `minutes` (resuming it if interrupted); its done marker."""
    from rlchat.train.cross_entropy import train_cross_entropy
    from rlchat.train.scst import train_rl

    path = plan.stage_dirs[stage]
    started = time.monotonic()
    resume = RunDir(path).exists()
    # The trainer's clock starts after the data is ready: keep that time out of its budget.
    fit_minutes = max(0.1, minutes - STAGE_SETUP_MINUTES)
    common = {"out": path, "corpus": corpus, "resume": resume, "device": plan.device}
    if stage == "rl":
        summary = train_rl(
            init=plan.ce_dir,
            rl_config=RLConfig(epochs=100, max_minutes=fit_minutes, seed=plan.seed),
            progress=plan.progress,
            **common,
        )
    else:
        split = {"split_by": plan.split_by}
        data = {
            "pretrain": DataConfig(genres=[], **split),
            "finetune": DataConfig(genres=plan.genres, **split),
            "backward": DataConfig(genres=plan.genres, direction="backward", **split),
        }[stage]
        init = None if stage == "pretrain" else plan.pretrain_dir
        summary = train_cross_entropy(
            data_config=data,
            tokenizer_config=TokenizerConfig(),
            model_config=ModelConfig(),
            # The time budget, not the epoch count, ends this stage.
            train_config=CrossEntropyConfig(
                epochs=100,
                max_minutes=fit_minutes,
                seed=plan.seed,
                lr=CrossEntropyConfig.lr if init is None else FINETUNE_LR,
                **(finetune_options(plan) if stage == "finetune" else {}),
            ),
            init=init,
            progress=plan.progress,
            **common,
        )
    summary["minutes"] = (time.monotonic() - started) / 60
    summary["budget_minutes"] = minutes
    mark_done(path, summary)
    return summary


def finetune_options(plan: QuickstartPlan) -> dict[str, Any]:
    """The genre fine-tune's remedies against greedy CE's one reply (off in the other stages)."""
    options: dict[str, Any] = {
        "vocab_unlikelihood": plan.finetune_vocab_unlikelihood,
        "vocab_unlikelihood_spare_pieces": plan.finetune_spare_pieces,
        "prefix_unlikelihood": plan.finetune_prefix_unlikelihood,
        "vocab_unlikelihood_share": (
            plan.finetune_vocab_unlikelihood_share
            if plan.finetune_vocab_unlikelihood or plan.finetune_prefix_unlikelihood
            else 1.0
        ),
        "negative_threshold": plan.finetune_negative_threshold,
    }
    if plan.finetune_select_top1_weight:
        # The rate stays constant and nothing stops early, as when the fine-tune validated
        # only at its end: the validations choose best/ and change nothing else.
        options |= {
            "select_top1_weight": plan.finetune_select_top1_weight,
            "eval_every": FINETUNE_EVAL_EVERY,
            "schedule": "constant",
            "patience": 0,
        }
    return options


def evaluate_stage(plan: QuickstartPlan, corpus: Corpus, max_pairs: int = 0) -> dict[str, Any]:
    if json_is_complete(plan.eval_path, runs=EVAL_SYSTEMS):
        logger.info("evaluation %s is complete; skipping", plan.eval_path)
        return json.loads(plan.eval_path.read_text(encoding="utf-8"))
    result = evaluate_quickstart_runs(plan, corpus, max_pairs)
    atomic_write_text(plan.eval_path, json.dumps(result, indent=2))
    return result


def evaluate_quickstart_runs(
    plan: QuickstartPlan, corpus: Corpus, max_pairs: int = 0, split: str = "test"
) -> dict[str, Any]:
    """CE, RL and the served bot (`served_decoding`) beside the baselines on the test split
    of the plan's runs, as the CE run's data settings split it; `split="valid"` compares
    recipes without reading test."""
    from rlchat.chatbot import Chatbot
    from rlchat.dataset import prepare_dataset
    from rlchat.evaluation import DecodedBot, evaluate_runs

    ce = Chatbot.load(plan.ce_dir, device=plan.device)
    rl = Chatbot.load(plan.rl_dir, device=plan.device, backward=plan.backward_dir)
    dataset = prepare_dataset(corpus, ce.data_config, ce.tokenizer_config, tokenizer=ce.tokenizer)
    return evaluate_runs(
        [ce, rl, DecodedBot(rl, served_decoding(), SERVED)],
        dataset.pairs(),
        split=split,
        baselines=EVAL_BASELINES,
        max_pairs=max_pairs,
        # The served bot against the baselines too: does it beat a bot without a model?
        also_compare=[(baseline, SERVED) for baseline in EVAL_BASELINES],
        progress=plan.progress,
    )


def report_stage(plan: QuickstartPlan, evaluation: dict[str, Any]) -> Path:
    from rlchat.chatbot import Chatbot
    from rlchat.report import EVERYDAY_PROMPTS, write_report

    served = Chatbot.load(plan.rl_dir, device=plan.device, backward=plan.backward_dir)
    replies = served.reply_batch(list(EVERYDAY_PROMPTS), config=served_decoding())
    return write_report(
        [plan.ce_dir, plan.rl_dir],
        plan.report_dir,
        evaluation=evaluation,
        extra_samples=[(f"{SERVED} (served)", replies)],
    )


def log_stage(name: str, index: int, total: int, minutes: float | None, work: Callable) -> Any:
    budget = f" (budget {minutes:.1f} min)" if minutes is not None else ""
    logger.info("stage %d/%d: %s%s", index, total, name, budget)
    started = time.monotonic()
    result = work()
    logger.info(
        "stage %d/%d: %s done in %.1f min", index, total, name, (time.monotonic() - started) / 60
    )
    return result


STAGE_TITLES = {
    "pretrain": "cross-entropy on all genres",
    "finetune": "cross-entropy fine-tune on the genre",
    "backward": "backward model (reply -> input) for MMI",
    "rl": "reinforcement learning (SCST)",
}


def genre_splits(plan: QuickstartPlan, corpus: Corpus) -> Any:
    """The genre's pairs as evaluation will see them: encoded by the pretraining's tokenizer
    and filtered (a third fewer test pairs than the raw ones on comedy)."""
    from rlchat.dataset import prepare_dataset
    from rlchat.tokenizer import ChatTokenizer

    tokenizer = ChatTokenizer.load(RunDir(plan.pretrain_dir).tokenizer_path)
    data = DataConfig(genres=plan.genres, split_by=plan.split_by)
    return prepare_dataset(corpus, data, TokenizerConfig(), tokenizer=tokenizer).splits


def measure_eval_cost(plan: QuickstartPlan, corpus: Corpus) -> tuple[float, int]:
    """(seconds evaluation will take per test pair on this machine, test pairs), timed with
    the pretrained model: the fine-tunes and the backward model have its shape, so it
    decodes at their speed, and it stands in for the backward model too."""
    from rlchat.chatbot import Chatbot
    from rlchat.dataset import seeded_sample

    splits = genre_splits(plan, corpus)
    valid = splits["valid"].examples
    rows = seeded_sample(len(valid), DECODE_PROBE_INPUTS, plan.seed)
    bot = Chatbot.load(plan.pretrain_dir, device=plan.device)
    bot.backward, bot.backward_shares_vocabulary = bot, True  # the same shape and vocabulary
    seconds = decode_seconds_per_pair(bot, [valid[row].pair.source for row in rows])
    return EVAL_COST_PER_DECODE * seconds, len(splits["test"].examples)


def run_quickstart(
    plan: QuickstartPlan, corpus: Corpus, started: float | None = None
) -> dict[str, Any]:
    """Every stage within the budget; returns the evaluation. `started` (a `time.monotonic()`
    reading) is when the command began: loading the corpus counts against the budget too."""
    spent = sum(float(read_done(p).get("minutes", 0.0)) for p in plan.stage_dirs.values())
    started = time.monotonic() if started is None else started
    deadline = started + max(0.0, plan.minutes - spent) * 60
    total = len(SHARES) + 2
    done: set[str] = set()
    # Until pretraining has measured the speed, the reserve is the cap.
    evaluation = eval_plan(plan.minutes, None, 0)
    for index, stage in enumerate(SHARES, start=1):
        path = plan.stage_dirs[stage]
        if run_is_complete(path):
            logger.info("stage %d/%d: %s is complete; skipping", index, total, stage)
        else:
            left = (deadline - time.monotonic()) / 60
            minutes = stage_budget(stage, left, evaluation.minutes, done)
            log_stage(
                STAGE_TITLES[stage],
                index,
                total,
                minutes,
                lambda stage=stage, minutes=minutes: train_stage(plan, stage, corpus, minutes),
            )
        if stage == "pretrain":
            # This machine's decoding speed and the test pairs as evaluation will see them
            # size the evaluation that must still fit.
            seconds_per_pair, test_pairs = measure_eval_cost(plan, corpus)
            evaluation = eval_plan(plan.minutes, seconds_per_pair, test_pairs)
            logger.info(
                "evaluation: about %.0f ms a test pair on this machine; %.1f min kept for it",
                1000 * seconds_per_pair,
                evaluation.minutes,
            )
            if evaluation.max_pairs:
                logger.warning(
                    "at %.0f ms a test pair this machine can evaluate %d of the %d test pairs "
                    "within the budget; pass more --minutes to evaluate all",
                    1000 * seconds_per_pair,
                    evaluation.max_pairs,
                    test_pairs,
                )
        done.add(stage)
    result = log_stage(
        "evaluation on the test split",
        total - 1,
        total,
        evaluation.minutes,
        lambda: evaluate_stage(plan, corpus, evaluation.max_pairs),
    )
    log_stage("report", total, total, None, lambda: report_stage(plan, result))
    return result
