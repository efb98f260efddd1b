"""The FastAPI application: models and stores made once at start-up, closed at shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from rlchat import __version__
from rlchat.server import routes
from rlchat.server.errors import install_error_handlers
from rlchat.server.metrics import Metrics, MetricsMiddleware
from rlchat.server.registry import load_models
from rlchat.server.settings import ServerSettings
from rlchat.server.storage import (
    Database,
    DatabaseConversations,
    FeedbackStore,
    MemoryConversations,
)

logger = logging.getLogger(__name__)

DESCRIPTION = """Chat with bots trained on movie dialogues (LSTM seq2seq, cross-entropy then RL).

`POST /api/v1/chat` answers a message; `POST /api/v1/feedback` rates a reply; `POST /chat` is
the original project's contract. The page at `/` is a chat client for all of it."""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ServerSettings = app.state.settings
    threads = torch.get_num_threads()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    models = load_models(settings, app.state.metrics)
    database = Database(settings.database_location)
    if settings.history_in_database:
        conversations = DatabaseConversations(database, turns_kept=settings.turns_kept)
    else:
        conversations = MemoryConversations(
            max_conversations=settings.max_conversations, turns_kept=settings.turns_kept
        )
    feedback = FeedbackStore(database)
    where = "ratings and conversations" if settings.history_in_database else "ratings"
    logger.info("%s are stored in %s", where, database.name)
    await models.start()
    app.state.models, app.state.conversations, app.state.feedback = models, conversations, feedback
    app.state.database = database
    try:
        yield
    finally:
        app.state.models = app.state.conversations = app.state.feedback = None
        app.state.database = None
        await models.stop()
        database.close()
        app.state.metrics.close()  # a worker's exit, in multi-process metrics
        torch.set_num_threads(threads)


class CORSByPath:
    """The original `/chat` answers pages of any origin, as the original server did: it
    carries no credentials and keeps no state, so a foreign page learns nothing by calling it
    that it could not learn by calling it from anywhere else. The API, which keeps
    conversations and ratings, answers only the origins listed (``--cors-origin``)."""

    OPEN_PATHS = frozenset({"/chat"})

    def __init__(self, app: ASGIApp, listed_origins: list[str]) -> None:
        self.app = app
        options = {"allow_methods": ["GET", "POST"], "allow_headers": ["Content-Type"]}
        self.open = CORSMiddleware(app, allow_origins=["*"], **options)
        # Without listed origins the API sends no CORS headers at all.
        self.listed = (
            CORSMiddleware(app, allow_origins=listed_origins, **options) if listed_origins else app
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.OPEN_PATHS:
            await self.open(scope, receive, send)
        else:
            await self.listed(scope, receive, send)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The app for ``settings``; without them (uvicorn's worker processes) from the environment."""
    settings = settings or ServerSettings()
    app = FastAPI(
        title="rlchat",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(CORSByPath, listed_origins=settings.cors_origins)
    for router in (routes.api, routes.legacy, routes.operations, routes.page):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=routes.STATIC_DIR), name="static")
    return app
