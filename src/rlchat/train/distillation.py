"""Sequence-level distillation of MMI reranking into the cross-entropy bot.

Greedy decoding of a maximum-likelihood model says its mode, one reply that fits every input;
MMI reranking by the backward model says replies that fit this input and no other (top1
under 1% in the quickstart's draws). Training on the reranked replies (Kim & Rush 2016,
arXiv:1606.07947: a student trained on its teacher's decoded outputs answers greedily what
the teacher answered by search) puts that choice into the weights, so greedy decoding alone
gets it. A share of the training pairs keeps its human reply, so the bot still learns how
people answer.

The teacher's replies are decoded once, seeded, and saved in the run directory, so a resumed
run trains on the same targets.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rlchat.checkpoint import atomic_write_text
from rlchat.config import CrossEntropyConfig, served_decoding
from rlchat.dataset import Example, seeded_sample
from rlchat.runs import RunError

logger = logging.getLogger(__name__)

TEACHER_FILE = "teacher_replies.json"
TEACHER_BATCH = 256  # inputs per decode; times the candidates, the rows of one batch


@dataclass(frozen=True)
class TeacherReplies:
    rows: list[int]  # indices into the training examples whose reply the teacher's replaces
    replies: list[list[int]]
    seconds: float  # what decoding them took, part of the stage's budget


def load_teacher(config: CrossEntropyConfig, tokenizer_json: str, device: torch.device) -> Any:
    """The teacher run with its backward model; it must speak the student's vocabulary."""
    from rlchat.chatbot import Chatbot

    for name in ("distil_teacher", "distil_backward"):
        if not (Path(getattr(config, name)) / "run.json").is_file():
            raise RunError(f"--{name.replace('_', '-')}: {getattr(config, name)} is not a run")
    teacher = Chatbot.load(
        config.distil_teacher, device=str(device), backward=config.distil_backward
    )
    if teacher.direction != "forward" or teacher.backward.direction != "backward":
        raise RunError(
            "--distil-teacher must be a forward run and --distil-backward a backward run"
        )
    if teacher.tokenizer.to_json() != tokenizer_json:
        raise RunError(
            f"--distil-teacher {config.distil_teacher} has another tokenizer than this run; "
            "distil from a run fine-tuned from the same pretraining"
        )
    return teacher


def decode_teacher_replies(
    teacher: Any, examples: list[Example], rows: list[int], seed: int, progress: bool
) -> list[list[int]]:
    """The teacher's MMI reply to each chosen example's input, in batches, seeded."""
    generator = torch.Generator(device=teacher.device).manual_seed(seed)
    config = served_decoding()  # the teacher answers as the served bot does
    replies: list[list[int]] = []
    with tqdm(total=len(rows), disable=not progress, unit="pair", desc="teacher replies") as bar:
        for start in range(0, len(rows), TEACHER_BATCH):
            chosen = [examples[row] for row in rows[start : start + TEACHER_BATCH]]
            with torch.no_grad():
                replies += teacher.mmi_reply_ids(
                    [e.pair.source for e in chosen], [e.source for e in chosen], config, generator
                )
            bar.update(len(chosen))
    return replies


def teacher_replies(
    run_path: Path,
    examples: list[Example],
    config: CrossEntropyConfig,
    tokenizer_json: str,
    device: torch.device,
    progress: bool = True,
) -> TeacherReplies:
    """The saved teacher replies of this run, or decode and save them (atomically)."""
    path = run_path / TEACHER_FILE
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        logger.info("read %d teacher replies from %s", len(saved["rows"]), path)
        return TeacherReplies(saved["rows"], saved["replies"], 0.0)
    # At least one row: seeded_sample reads a size of 0 as "all of them".
    size = max(1, round(config.distil_share * len(examples)))
    rows = seeded_sample(len(examples), size, config.seed)
    rows = [int(row) for row in rows]
    started = time.monotonic()
    teacher = load_teacher(config, tokenizer_json, device)
    replies = decode_teacher_replies(teacher, examples, rows, config.seed, progress)
    seconds = time.monotonic() - started
    logger.info(
        "decoded %d teacher replies (MMI, %s) in %.1f s", len(rows), config.distil_teacher, seconds
    )
    atomic_write_text(path, json.dumps({"rows": rows, "replies": replies, "seconds": seconds}))
    return TeacherReplies(rows, replies, seconds)


def distilled_examples(examples: list[Example], teacher: TeacherReplies) -> list[Example]:
    """The examples with the teacher's reply in the chosen rows (an empty one is not used)."""
    out = list(examples)
    for row, reply in zip(teacher.rows, teacher.replies, strict=True):
        if reply:
            out[row] = replace(out[row], reply=list(reply))
    return out
