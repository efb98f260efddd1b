"""Serve trained bots over HTTP: a REST API, the original project's `/chat`, and a chat page.

``serve(...)`` is what `rlchat serve` calls; ``create_app(settings)`` builds the app itself
(for tests, or another ASGI server).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from rlchat.server.settings import ENV_PREFIX, ServerSettings

__all__ = ["ServerSettings", "create_app", "serve"]

logger = logging.getLogger(__name__)


def create_app(settings: ServerSettings | None = None):  # noqa: ANN201
    """The FastAPI app (imported lazily: ``import rlchat.server`` stays cheap for the CLI)."""
    from rlchat.server.app import create_app as build

    return build(settings)


def serve(
    runs: Sequence[Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    cors_origins: Sequence[str] = (),
    history_db: Path | None = None,
    feedback_db: Path | None = None,
    batch_wait_ms: float | None = None,
    max_batch: int | None = None,
    device: str = "auto",
    backward: Path | None = None,
    decoding: dict | None = None,
    log_level: str = "info",
) -> None:
    """Run the server until interrupted. ``batch_wait_ms=0`` switches micro-batching off.

    Several workers are separate processes with their own copy of each model; they share
    conversations only through ``history_db``, so one is made in the user data dir if absent.
    """
    import uvicorn

    from rlchat.runs import RunError

    if not runs:
        raise RunError("serve needs at least one run directory")
    for run in runs:
        if not Path(run).is_dir():
            raise RunError(f"{run} is not a run directory")
    values = {
        "runs": [Path(r).resolve() for r in runs],
        "device": device,
        "cors_origins": list(cors_origins),
        "history_db": history_db,
        "feedback_db": feedback_db,
        "batch_wait_ms": batch_wait_ms,
        "max_batch": max_batch,
        "backward": Path(backward).resolve() if backward is not None else None,
        "decoding": decoding,
    }
    settings = ServerSettings(**{k: v for k, v in values.items() if v is not None})
    try:
        settings.default_decoding  # noqa: B018 - a bad default fails here, not in a worker
    except ValueError as error:
        raise RunError(str(error)) from None
    if workers > 1 and settings.history_db is None:
        settings = settings.model_copy(
            update={"history_db": settings.feedback_path.with_name("history.sqlite3")}
        )
        logger.info("%d workers share conversations through %s", workers, settings.history_db)
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
        return
    # Worker processes build their own app from the environment (see ServerSettings).
    for name, value in settings.model_dump(mode="json", exclude_none=True).items():
        text = value if isinstance(value, str) else json.dumps(value)
        os.environ[ENV_PREFIX + name.upper()] = text
    uvicorn.run(
        "rlchat.server.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )
