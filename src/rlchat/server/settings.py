"""Every setting of the server, in one place; `rlchat serve` maps its flags onto these fields.

Values may also come from the environment (``RLCHAT_SERVE_RUNS='["runs/a"]'``): that is how
uvicorn's worker processes, which import the app afresh, receive the settings of the command.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rlchat.config import DecodeConfig
from rlchat.rerank import check_rerank

ENV_PREFIX = "RLCHAT_SERVE_"


def default_data_dir() -> Path:
    """Where the server keeps its databases unless told otherwise (not the run directories,
    which may be read-only or shared between servers)."""
    return Path(platformdirs.user_data_dir("rlchat"))


class ServerSettings(BaseSettings):
    """How the server loads its models, batches their work and stores what users say."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    runs: list[Path] = Field(
        default_factory=list, description="run directories; the first is the default model"
    )
    device: str = Field(default="auto", description="auto (CUDA when present), cpu or cuda")
    backward: Path | None = Field(
        default=None, description="backward run for MMI reranking, loaded once for all models"
    )
    # Fields of DecodeConfig; what a request leaves out of its `decoding` comes from here.
    decoding: dict[str, Any] = Field(
        default_factory=dict, description="default decoding settings, e.g. {'rerank': 'mmi'}"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="origins allowed to call the API from a browser"
    )
    # One database for every replica behind a proxy: a rating may reach another replica than
    # the reply it rates, so conversations are kept there too once a database is named.
    database: str | None = Field(
        default=None,
        description="SQLite path or URL (sqlite:///..., postgresql://user:pw@host/db) for "
        "ratings and conversations (default: ratings in SQLite in the user data dir, "
        "conversations in memory)",
    )
    # A few milliseconds buys batches of many requests under load at a small cost when idle.
    batch_wait_ms: float = Field(
        default=5.0, ge=0, le=1000, description="gather requests this long per batch (0 = off)"
    )
    max_batch: int = Field(default=64, ge=1, le=1024, description="most requests per batch")
    max_queue: int = Field(
        default=1024, ge=1, description="waiting requests per model before answering 503"
    )
    # Small batches of an LSTM decode fastest on one thread; more threads mostly contend.
    torch_threads: int = Field(default=1, ge=0, description="torch threads (0 = torch default)")
    max_conversations: int = Field(
        default=10_000, ge=1, description="conversations kept in memory (least recent dropped)"
    )
    turns_kept: int = Field(
        default=32, ge=1, description="turns kept per conversation, for context and feedback"
    )

    @property
    def database_location(self) -> str:
        return self.database or str(default_data_dir() / "feedback.sqlite3")

    @property
    def history_in_database(self) -> bool:
        """Conversations go to the database when one is named, else stay in this process."""
        return self.database is not None

    @property
    def batch_limit(self) -> int:
        """Requests per decode: a zero wait switches micro-batching off (one per decode)."""
        return self.max_batch if self.batch_wait_ms > 0 else 1

    @property
    def default_decoding(self) -> DecodeConfig:
        """The decoding every request starts from; a bad setting fails the server's start."""
        known = {f.name for f in fields(DecodeConfig)}
        unknown = sorted(set(self.decoding) - known)
        if unknown:
            raise ValueError(f"unknown decoding settings {unknown}; known: {sorted(known)}")
        config = replace(DecodeConfig(), **self.decoding)
        check_rerank(config)
        if config.rerank == "mmi" and self.backward is None:
            raise ValueError("decoding with rerank mmi needs a backward run (--backward RUN)")
        return config
