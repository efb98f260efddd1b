"""Server fixtures: two tiny trained runs (comedy, drama) made once, and an app per test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rlchat.config import CrossEntropyConfig, DataConfig, ModelConfig, TokenizerConfig
from rlchat.corpus import load_corpus
from rlchat.server import ServerSettings, create_app
from rlchat.train.cross_entropy import train_cross_entropy

GENRES = ("comedy", "drama")


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, corpus_dir) -> dict[str, Path]:
    """A barely trained model per genre: enough to load, route by genre and decode."""
    corpus = load_corpus(corpus_dir)
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for genre in GENRES:
        train_cross_entropy(
            out=root / genre,
            corpus=corpus,
            data_config=DataConfig(genres=[genre]),
            tokenizer_config=TokenizerConfig(vocab_size=400, max_tokens=8),
            model_config=ModelConfig(embedding_dim=16, hidden_size=32),
            train_config=CrossEntropyConfig(max_steps=3, batch_size=16),
            device="cpu",
            progress=False,
            tensorboard=False,
        )
        runs[genre] = root / genre
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
        feedback_db=tmp_path / "feedback.sqlite3",
        batch_wait_ms=2,
    )


@pytest.fixture
def client(settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client
