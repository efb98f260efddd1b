"""The FastAPI application: models and stores made once at start-up, closed at shutdown."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from rlchat import __version__
from rlchat.server import routes
from rlchat.server.errors import install_error_handlers
from rlchat.server.metrics import Metrics, MetricsMiddleware
from rlchat.server.registry import load_models
from rlchat.server.settings import ServerSettings
from rlchat.server.storage import FeedbackStore, MemoryConversations, SQLiteConversations

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
    if settings.history_db is not None:
        conversations = SQLiteConversations(settings.history_db, turns_kept=settings.turns_kept)
    else:
        conversations = MemoryConversations(
            max_conversations=settings.max_conversations, turns_kept=settings.turns_kept
        )
    feedback = FeedbackStore(settings.feedback_path)
    logger.info("feedback is stored in %s", settings.feedback_path)
    await models.start()
    app.state.models, app.state.conversations, app.state.feedback = models, conversations, feedback
    try:
        yield
    finally:
        app.state.models = app.state.conversations = app.state.feedback = None
        await models.stop()
        conversations.close()
        feedback.close()
        torch.set_num_threads(threads)


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
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
        )
    for router in (routes.api, routes.legacy, routes.operations, routes.page):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=routes.STATIC_DIR), name="static")
    return app
