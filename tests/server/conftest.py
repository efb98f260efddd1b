"""Server fixtures: two tiny trained runs (comedy, drama) made once, and an app per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpers.tiny_run import train_tiny_run
from rlchat.corpus import load_corpus
from rlchat.server import ServerSettings, create_app

GENRES = ("comedy", "drama")


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, corpus_dir) -> dict[str, Path]:
    """A barely trained model per genre: enough to load, route by genre and decode."""
    corpus = load_corpus(corpus_dir)
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for genre in GENRES:
        runs[genre] = train_tiny_run(root / genre, corpus, genre)
    # As `rlchat eval --out` writes it, beside the runs: figures for the comedy run only.
    evaluation = {
        "runs": [{"name": "comedy", "stage": "ce", "metrics": {"bleu2": 0.12, "distinct1": 0.03}}]
    }
    (root / "eval.json").write_text(json.dumps(evaluation), encoding="utf-8")
    return runs


@pytest.fixture
def settings(tiny_runs, tmp_path) -> ServerSettings:
    return ServerSettings(
        runs=[tiny_runs["comedy"], tiny_runs["drama"]],
        device="cpu",
        database=str(tmp_path / "feedback.sqlite3"),
        batch_wait_ms=2,
    )


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client
