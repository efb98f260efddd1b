from __future__ import annotations

import json
import shutil

import pytest

from helpers.tiny_run import train_tiny_run
from rlchat.corpus import load_corpus
from rlchat.report import (
    CE_PLOT,
    EVERYDAY_PROMPTS,
    REWARDS_PLOT,
    RL_PLOT,
    SAMPLES_FILE,
    evaluation_markdown,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CE_RECORDS = [
    {"step": 1, "time": 1.0, "ce/loss": 8.1, "ce/lr": 1e-3, "ce/pairs_per_s": 500.0},
    {"step": 2, "time": 2.0, "ce/loss": 7.4, "ce/lr": 1e-3, "ce/pairs_per_s": 510.0},
    {"step": 2, "time": 2.5, "valid/loss": 7.0, "valid/perplexity": 1096.6},
    {"step": 3, "time": 3.0, "ce/loss": 6.9, "ce/lr": 1e-3},
    {"step": 3, "time": 3.5, "valid/loss": 6.5, "valid/perplexity": 665.1},
]
RL_RECORDS = [
    {
        "step": step,
        "time": float(step),
        "rl/loss": 0.1,
        "rl/reward_sample": 0.2 + 0.01 * step,
        "rl/reward_greedy": 0.25 + 0.01 * step,
        "rl/advantage_abs": 0.05,
        "rl/entropy": 3.0,
        "rl/sample_length": 7.0,
        "reward/bleu": 0.1 * step,
        "reward/dull": -0.2,
        "reward/repeat": -0.1,
    }
    for step in (1, 2, 3)
] + [
    {
        "step": 3,
        "time": 3.5,
        "valid/reward": 0.3,
        "valid/bleu2": 0.04,
        "valid/reward_bleu": 0.3,
        "valid/reward_dull": -0.1,
        "valid/reward_repeat": 0.0,
    }
]


def write_metrics(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus_dir):
    """A tiny trained CE run, and a copy of it posing as an RL run, with hand-written metrics."""
    root = tmp_path_factory.mktemp("runs")
    ce = train_tiny_run(root / "tiny-ce", load_corpus(corpus_dir))
    rl = root / "tiny-rl"
    shutil.copytree(ce, rl)
    config = json.loads((rl / "run.json").read_text())
    (rl / "run.json").write_text(json.dumps({**config, "stage": "rl"}))
    write_metrics(ce / "metrics.jsonl", CE_RECORDS)
    write_metrics(rl / "metrics.jsonl", RL_RECORDS)
    return ce, rl


def evaluation(comparisons=()) -> dict:
    metrics = {"reward": 0.31, "bleu2": 0.041, "perplexity": 55.2, "top1": 0.27, "dull_rate": 0.12}
    reply_only = {"top1": 0.012, "unique": 0.93, "dull_rate": 0.02}
    return {
        "split": "test",
        "genres": ["comedy"],
        "pairs": 512,
        "clusters": 300,
        "largest_cluster_share": 0.2,
        "unseen_pairs": 450,
        "runs": [
            {"name": "tiny-ce", "stage": "ce", "metrics": metrics, "unseen": metrics},
            {"name": "tiny-rl", "stage": "rl", "metrics": {**metrics, "reward": 0.37}},
            {"name": "retrieval", "stage": "baseline", "metrics": {**metrics, "top1": 0.015}},
            {"name": "reference", "stage": "held-out", "metrics": reply_only},
        ],
        "comparisons": list(comparisons),
    }


def comparison(metric: str, low: float, high: float, p_value: float, group="all") -> dict:
    diff = (low + high) / 2
    return {
        "baseline": "tiny-ce",
        "run": "tiny-rl",
        "group": group,
        "metric": metric,
        "diff": diff,
        "low": low,
        "high": high,
        "p_value": p_value,
    }


def row_of(markdown: str, first_cell: str) -> list[str]:
    """The cells of the first table row that starts with `first_cell`."""
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {first_cell} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    path = write_report(list(runs), out, evaluation=evaluation())
    return out, path.read_text(encoding="utf-8")


def test_report_draws_every_plot_as_a_valid_png(report):
    out, text = report
    for name in (CE_PLOT, RL_PLOT, REWARDS_PLOT):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 5000
        assert f"]({name})" in text


def test_report_mentions_every_run_and_every_prompt(report):
    _, text = report
    for name in ("tiny-ce", "tiny-rl"):
        assert name in text
    for prompt in EVERYDAY_PROMPTS:
        assert f"| {prompt} |" in text


def test_samples_have_one_reply_per_prompt_and_run(report):
    out, _ = report
    samples = (out / SAMPLES_FILE).read_text(encoding="utf-8")
    header = next(line for line in samples.splitlines() if line.startswith("| prompt"))
    assert "tiny-ce (ce)" in header and "tiny-rl (rl)" in header
    rows = [line for line in samples.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(EVERYDAY_PROMPTS)
    assert all(line.count(" | ") == 2 for line in rows)
    assert all(char.isprintable() for char in samples.replace("\n", ""))


def test_report_includes_the_evaluation_table(report):
    _, text = report
    assert "## Evaluation" in text
    assert "| tiny-rl (rl) | 0.370 |" in text


def test_report_leaves_no_temporary_files(report):
    out, _ = report
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_plots_without_data_are_not_drawn(runs, tmp_path):
    ce, _ = runs
    text = write_report([ce], tmp_path).read_text(encoding="utf-8")
    assert (tmp_path / CE_PLOT).is_file()
    assert not (tmp_path / RL_PLOT).exists() and not (tmp_path / REWARDS_PLOT).exists()
    assert RL_PLOT not in text and "## Evaluation" not in text


def test_evaluation_puts_systems_in_rows_and_figures_in_columns():
    text = evaluation_markdown(evaluation())
    assert "| system | reward | bleu2 | perplexity |" in text
    assert "| tiny-ce (ce) | 0.310 | 0.0410 | 55.2 |" in text
    assert "| retrieval (baseline) | 0.310 | 0.0410 | 55.2 |" in text
    # The held-out replies only appear where no reference is needed.
    assert row_of(text, "reference (held-out)") == [
        "reference (held-out)",
        "0.012",
        "0.930",
        "0.020",
    ]
    assert "300 clusters" in text and "450 of them with an input never seen" in text
    assert "Inputs never seen in training" in text


def test_evaluation_marks_the_differences_the_test_finds():
    text = evaluation_markdown(
        evaluation(
            [
                comparison("reward", 0.02, 0.10, p_value=0.001),
                comparison("bleu2", -0.01, 0.02, p_value=0.4),
                # An evaluation from before both tests were asked: the randomisation's p alone.
                comparison("top1", -0.06, 0.004, p_value=0.001),
            ]
        )
    )
    assert row_of(text, "figure") == ["figure", "tiny-rl − tiny-ce"]
    assert row_of(text, "reward") == ["reward", "+0.0600 [+0.0200, +0.1000] *"]
    assert row_of(text, "bleu2") == ["bleu2", "+0.0050 [-0.0100, +0.0200]"]
    assert row_of(text, "top1") == ["top1", "-0.0280 [-0.0600, +0.0040]"]  # no star
    assert "approximate randomisation over clusters" in text
