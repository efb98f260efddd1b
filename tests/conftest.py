"""Shared fixtures: the real corpus excerpt, found in one place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_EXCERPT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cornell-excerpt"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared Cornell excerpt; `RLCHAT_TEST_CORPUS` points elsewhere."""
    path = Path(os.environ.get("RLCHAT_TEST_CORPUS", DEFAULT_EXCERPT))
    if not (path / "movie_lines.txt").is_file():
        pytest.fail(f"corpus excerpt not found at {path}; set RLCHAT_TEST_CORPUS")
    return path
