"""Serve trained bots over HTTP: a REST API, the original project's `/chat`, and a chat page.

``serve(...)`` is what `rlchat serve` calls; ``create_app(settings)`` builds the app itself
(for tests, or another ASGI server).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
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
    database: str | Path | None = None,
    batch_wait_ms: float | None = None,
    max_batch: int | None = None,
    device: str = "auto",
    backward: Path | None = None,
    decoding: dict | None = None,
    log_level: str = "info",
) -> None:
    """Run the server until interrupted. ``batch_wait_ms=0`` switches micro-batching off.

    ``database`` is a SQLite path or a ``postgresql://`` URL for ratings and conversations.
    Several workers are separate processes with their own copy of each model; they share
    conversations only through a database, so the default SQLite file is used if none is named.
    """
    import uvicorn

    from rlchat.runs import RunError
    from rlchat.server.storage import database_url

    if not runs:
        raise RunError("serve needs at least one run directory")
    for run in runs:
        if not Path(run).is_dir():
            raise RunError(f"{run} is not a run directory")
    values = {
        "runs": [Path(r).resolve() for r in runs],
        "device": device,
        "cors_origins": list(cors_origins),
        "database": None if database is None else str(database),
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
    try:
        database_url(settings.database_location)
    except ValueError as error:
        raise RunError(f"--database: {error}") from None
    if workers > 1 and settings.database is None:
        settings = settings.model_copy(update={"database": settings.database_location})
        logger.info("%d workers share conversations through %s", workers, settings.database)
    if workers == 1:
        _one_process_metrics()
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
        return
    # Worker processes build their own app from the environment (see ServerSettings).
    for name, value in settings.model_dump(mode="json", exclude_none=True).items():
        text = value if isinstance(value, str) else json.dumps(value)
        os.environ[ENV_PREFIX + name.upper()] = text
    with _worker_metrics():
        uvicorn.run(
            "rlchat.server.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
        )


# prometheus_client reads these when first imported (the lower-case one is deprecated).
MULTIPROC_ENV = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


def _one_process_metrics() -> None:
    """One worker keeps its metrics in memory. prometheus_client would keep them in files if
    imported with PROMETHEUS_MULTIPROC_DIR set, so an inherited one (from a parent's
    multi-process set-up, perhaps gone) is dropped before the app imports the library."""
    values = sys.modules.get("prometheus_client.values")
    if values is not None and values.ValueClass is not values.MutexValue:
        return  # an earlier import chose files already; the app's metrics follow that choice
    for name in MULTIPROC_ENV:
        if os.environ.pop(name, None) is not None:
            logger.info("ignoring %s: one worker keeps its metrics in memory", name)


@contextlib.contextmanager
def _worker_metrics() -> Iterator[None]:
    """Several workers keep their metrics in files of a fresh directory, which any worker's
    `/metrics` sums (prometheus_client's multi-process mode); removed when the server exits.
    uvicorn has no hook for a worker that dies: a worker marks itself dead at its shutdown."""
    inherited = {name: os.environ.pop(name) for name in MULTIPROC_ENV if name in os.environ}
    with tempfile.TemporaryDirectory(prefix="rlchat-metrics-") as directory:
        os.environ[MULTIPROC_ENV[0]] = directory
        logger.info("workers share their metrics through %s", directory)
        try:
            yield
        finally:
            del os.environ[MULTIPROC_ENV[0]]
            os.environ.update(inherited)
